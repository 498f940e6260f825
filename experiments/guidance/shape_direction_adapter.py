"""Ground the shape words for the shape stage alone (issue #28; docs/experiments/guidance-model.md,
2026-12-05 late): can a small map on the text embedding, used only where the shape stage scores
its codebook, turn the shape directions right without moving what any other stage reads?

Every fine-tune of the shared text tower that fixed "muscular" also moved the colour and pose
words (the motion stage and the suite's colour check got worse). Here the mini model stays as
shipped: a residual linear map t -> normalise(t + W t) (W starts at zero, an L2 penalty keeps it
small) is fitted on the frozen model's text embeddings of the grammar's shape prompts, with the
grounding loss of shape_text_grounding.py (each prompt's direction score over bodies correlating
with the phenotype it names), on 1,024 bodies drawn with another seed than the stage's codebook.
It is then judged exactly as ``avatar-eval paraphrase --kinds shape`` judges the model (the stage's
own 512-body codebook, top-5 mean phenotype), on the tuned prompts and the held-out paraphrases,
read as the stages read them (snapped). Nothing here is trained on the held-out set; ``DEV`` is the
set to choose options on.

    OMP_NUM_THREADS=2 .venv/bin/python experiments/guidance/shape_direction_adapter.py [key=value ...] [--l2 3e-3] [--out map.pt]

The shipped map (docs/models/mini_shape_map.md; ~90 s on a 2-core CPU, ~35 s with warm caches):

    .venv/bin/python experiments/guidance/shape_direction_adapter.py --out avatar/guidance/weights/mini_shape_map.pt

For another mini checkpoint, write the map beside it, where ``stage.text_map=auto`` looks:

    .venv/bin/python experiments/guidance/shape_direction_adapter.py guidance.checkpoint=<dir>/<name>.pt --out <dir>/<name>_shape_map.pt
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import torch

from avatar.config import register_configs
from avatar.engine.run_info import git_revision
from avatar.evaluation.paraphrase import SHAPE_PROMPTS, load_paraphrases, shape_codebook, shape_moves
from avatar.guidance.text_map import TextDirectionMap, apply_direction_map, fit_direction_map
from avatar.stages.shape import direction_scores

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shape_text_grounding import TARGETS, grounding_targets  # noqa: E402

# Dev sentences for choosing --l2, written for this script on 2026-12-05 (after the held-out set had
# been read, so they avoid its words): each with the phenotype moves it should make.
DEV = {
    "a brawny man": {"muscle": "up", "gender": "down"},
    "a very muscular woman": {"muscle": "up", "gender": "up"},
    "a muscle-bound athlete": {"muscle": "up"},
    "a frail old man": {"age": "up", "gender": "down"},
    "a grandmother": {"age": "up", "gender": "up"},
    "an aged person": {"age": "up"},
    "a toddler": {"age": "down"},
    "a stocky person": {"weight": "up"},
    "a portly gentleman": {"weight": "up", "gender": "down"},
    "a gaunt woman": {"weight": "down", "gender": "up"},
    "a very tall woman": {"height": "up", "gender": "up"},
    "a tiny man": {"height": "down", "gender": "down"},
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*", help="config overrides (key=value), e.g. guidance.checkpoint=<mini.pt>")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--l2", type=float, default=3e-3, help="penalty on the map's weights (0: free); chosen on DEV")
    p.add_argument("--subject-gender", type=float, default=1.0, help="as in shape_text_grounding.py")
    p.add_argument("--margin", type=float, default=0.1, help="avatar-eval paraphrase's --shape-margin")
    p.add_argument("--out", type=Path, default=None, help="write the map here ({'weight': (E, E), 'meta': ...})")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    start = time.perf_counter()
    register_configs()
    # Training bodies: another seed than the stage's codebook (the neutral body first).
    cfg, stage, guidance, shapes, images = shape_codebook(args.overrides)
    train = [*args.overrides, "stage.codebook_seed=1001", "stage.codebook_size=1025"]
    _, _, _, train_shapes, train_images = shape_codebook(train, guidance)
    print(f"bodies embedded in {time.perf_counter() - start:.0f} s", flush=True)
    names = list(stage.body.shape_names)
    template, neutral_text = cfg.stage.template, cfg.stage.neutral_text

    def encode(texts: list[str]) -> torch.Tensor:
        with torch.no_grad():
            return guidance.encode_text(texts).float().cpu()

    prompts = [template.format(t) for t in TARGETS]
    text = encode(prompts)
    neutral = encode([neutral_text])[0]
    targets = grounding_targets(train_shapes[1:], names, TARGETS, args.subject_gender)
    weight, _ = fit_direction_map(
        text, neutral, train_images[1:], train_images[0], targets, args.steps, args.lr, args.l2, log_every=50
    )

    def adapt(t: torch.Tensor) -> torch.Tensor:
        return apply_direction_map(t, weight)

    k = min(int(cfg.stage.top_k), len(shapes))
    entries = [(e["prompt"], e["moves"], "paraphrase") for e in load_paraphrases()["shape"]]
    rows = [(p_, m, "tuned") for p_, m in SHAPE_PROMPTS.items()] + [(p_, m, "dev") for p_, m in DEV.items()] + entries
    with torch.no_grad():
        n_adapted = adapt(neutral[None])[0]
        result = {"tuned": [0, 0], "dev": [0, 0], "paraphrase": [0, 0]}
        for prompt, moves, kind in rows:
            t = encode([template.format(prompt)])
            before = direction_scores(images, images[0], t[0], neutral)
            after = direction_scores(images, images[0], adapt(t)[0], n_adapted)
            cells = []
            for scores in (before, after):
                checks = shape_moves(shapes, names, scores, moves, k, args.margin)
                cells.append(
                    ", ".join(f"{c['phenotype']} {c['delta']:+.2f}{'' if c['right'] else ' WRONG'}" for c in checks)
                )
            result[kind][0] += sum(c["right"] for c in checks)  # the adapted scores'
            result[kind][1] += len(checks)
            print(f"| {prompt} | {kind} | {cells[0]} | {cells[1]} |")
    for kind, (right, total) in result.items():
        print(f"adapted, {kind}: {right}/{total} directions right")
    if args.out is not None:
        weights = guidance.loaded_weights
        meta = {**{k: v for k, v in vars(args).items() if k not in ("out", "overrides")}, "overrides": list(args.overrides), "made_by": "experiments/guidance/shape_direction_adapter.py",
                "guidance_file": Path(weights["file"]).name, "guidance_sha256_12": weights["sha256_12"],
                "text_reading": str(cfg.guidance.get("text_reading", "")), "git": git_revision()["commit"],
                "right": {kind: f"{r}/{n}" for kind, (r, n) in result.items()}}  # fmt: skip
        TextDirectionMap(weight, meta).save(args.out)
        print(f"wrote {args.out}")
    print(f"{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
