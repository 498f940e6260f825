"""Interpolate a mini guidance fine-tune with its start in weight space (WiSE-FT):

    avatar-guidance-interpolate --base BASE.pt --finetuned FT.pt \\
        --alpha-text 0.5 --alpha-image 1.0 --out MIXED.pt

(or ``python -m avatar.guidance.interpolate ...``).

Each trained parameter becomes ``(1 - alpha) * base + alpha * fine-tuned``, ``--alpha-image``
for the image tower and ``--alpha-text`` for the text side (``mini_model.interpolate_checkpoints``).
The result is an ordinary mini checkpoint (``guidance.checkpoint=MIXED.pt``); its meta names both
source files with their SHA-1, and keeps the fine-tune's ``combinations`` (what the
evaluation's held-out row has seen). Judge it like any new weights: the colour check, then the
stages (docs/models/mini.md, docs/experiments/guidance-model.md).
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import torch

from avatar.engine.run_info import git_revision
from avatar.guidance.mini_model import interpolate_checkpoints, read_checkpoint
from avatar.utils.io import atomic_path


def main(argv: list[str] | None = None) -> None:
    """The ``avatar-guidance-interpolate`` command (a console script's return value is its exit status)."""
    interpolate(argv)


def interpolate(argv: list[str] | None = None) -> Path:
    """Parse the command line, write the interpolated checkpoint, return its path."""
    parser = argparse.ArgumentParser(
        prog="avatar-guidance-interpolate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", required=True, help="the starting checkpoint of the fine-tune")
    parser.add_argument("--finetuned", required=True, help="the fine-tuned checkpoint")
    parser.add_argument("--alpha-text", type=float, required=True, help="0: the base's text side, 1: the fine-tune's")
    parser.add_argument(
        "--alpha-image", type=float, required=True, help="0: the base's image tower, 1: the fine-tune's"
    )
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    try:
        base, finetuned = read_checkpoint(args.base, "--base"), read_checkpoint(args.finetuned, "--finetuned")
        sha1 = {
            name: hashlib.sha1(Path(path).read_bytes()).hexdigest()
            for name, path in (("base", args.base), ("finetuned", args.finetuned))
        }
        meta = {
            "interpolated": {"base": args.base, "base_sha1": sha1["base"], "finetuned": args.finetuned, "finetuned_sha1": sha1["finetuned"]},
            "combinations": finetuned.get("meta", {}).get("combinations", "all"), "seed": base.get("meta", {}).get("seed"),
            "git": git_revision()["commit"],
        }  # fmt: skip
        mixed = interpolate_checkpoints(base, finetuned, args.alpha_text, args.alpha_image, meta)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(str(err)) from None
    out = Path(args.out)
    with atomic_path(out) as tmp:
        torch.save(mixed, tmp)
    print(f"wrote {out}: alpha_text={args.alpha_text}, alpha_image={args.alpha_image}")
    return out


if __name__ == "__main__":
    main()
