"""``avatar-eval``: one command, a subcommand per evaluation (avatar/evaluation/__init__.py)."""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module of avatar.evaluation, one-line help)
COMMANDS = {
    "pose": ("pose_search", "the pose stage's codebook search vs the poses' geometry, and its speed"),
    "motion": ("motion", "text -> pose search -> motion stage, judged by the motion's geometry"),
    "guidance": ("guidance", "a guidance model: retrieval, binding and pose words on synthetic renders, colour check"),
    "paraphrase": ("paraphrase", "held-out paraphrases vs the tuned prompts: pose, shape and colour checks"),
    "priors": ("priors", "the shipped pose/motion priors and codebook on held-out mocap subjects"),
    "appearance": (
        "appearance",
        "finished appearance runs: surface distance and roughness vs the body, colours per region",
    ),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s module is imported (``avatar-eval --help`` stays fast),
    every command's when ``command`` is None."""
    parser = argparse.ArgumentParser(
        prog="avatar-eval",
        description="Evaluations of the pipeline's parts and of the shipped weights.",
        epilog="avatar-eval <command> --help: what the command measures, and its options",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")
    for name, (module_name, summary) in COMMANDS.items():
        sub = commands.add_parser(name, help=summary, formatter_class=argparse.RawDescriptionHelpFormatter)
        if command in (None, name):
            module = importlib.import_module(f"avatar.evaluation.{module_name}")
            sub.description = module.__doc__
            module.add_arguments(sub)
            sub.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    chosen = next((a for a in argv if not a.startswith("-")), "")
    parser = build_parser(chosen if chosen in COMMANDS else "")
    args, extra = parser.parse_known_args(argv)
    # Config overrides may come after an option (avatar-eval motion a=1 --keep out b=2).
    if extra and hasattr(args, "overrides") and not any(e.startswith("-") for e in extra):
        args.overrides += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.run(args)


if __name__ == "__main__":
    main()
