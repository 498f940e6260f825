"""How the pose search's clip-description term moves the eight tuned prompts (how
``stage.description_weight`` and ``stage.description_min_share`` were chosen; docs/experiments/
pose-search.md, 2026-12-05 evening). Per prompt: how many codebook poses the descriptions name,
then hit rate / AUC with the term added at several weights (``w``) and, as ``rr<k>``, with it only
reordering the cosine top k. Uses the cached codebook embeddings of the pose stage.

    OMP_NUM_THREADS=1 .venv/bin/python experiments/guidance/description_weight.py --min-share 0.9
    OMP_NUM_THREADS=1 .venv/bin/python experiments/guidance/description_weight.py --min-share 0.5 body.topology=...
"""

from __future__ import annotations

import argparse
import tempfile

import torch
from hydra import compose, initialize_config_dir

from avatar.body.skeleton import CanonicalPose
from avatar.config import register_configs
from avatar.evaluation.pose_search import PROMPTS, roc_auc
from avatar.generators.pose.codebook import select_diverse
from avatar.guidance import build_guidance
from avatar.guidance.synthetic.poses import pose_words
from avatar.priors.motion_descriptions import description_distances
from avatar.stages.pose import PoseStage
from avatar.utils.paths import PROJECT_ROOT


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--min-share", type=float, default=0.9)
    p.add_argument("overrides", nargs="*", help="pose stage overrides")
    args = p.parse_args()
    register_configs()
    conf = str(PROJECT_ROOT / "conf")
    with tempfile.TemporaryDirectory() as tmp, initialize_config_dir(config_dir=conf, version_base="1.3"):
        cfg = compose(
            "config", overrides=["stage=pose", "stage.description_weight=0", *args.overrides, f"run_dir={tmp}"]
        )
        stage = PoseStage(cfg)
        guidance = build_guidance(cfg.guidance)
        book = stage.codebook(guidance)
        if not book.descriptions:
            raise SystemExit(
                "the pose codebook has no descriptions: python -m avatar.priors.motion_descriptions <file>"
            )
        with torch.no_grad():
            rest = torch.zeros(len(book.rotations), 3)
            readings = pose_words(stage.body(pose=CanonicalPose(book.rotations.to(stage.body.dtype), rest)).joints)
        threshold = float(cfg.stage.dedupe_threshold)
        for prompt, (group, word) in PROMPTS.items():
            stage.prompt, stage.prompt_text = prompt, cfg.stage.template.format(prompt)
            cosine = stage.scores(guidance, book)
            share = 1.0 - description_distances(prompt, book.descriptions, min_share=args.min_share)
            reads = torch.tensor([r[group] == word for r in readings])
            named = share > 0
            line = f"{prompt:28s} named {int(named.sum()):4d} (reading it {float(reads[named].float().mean()) if named.any() else float('nan'):.2f}) |"
            for w in (0.0, 0.05, 0.1, 1.0):
                scores = cosine + w * share
                kept = select_diverse(book.rotations, scores, 40, threshold, 5)
                line += f" w{w}: {float(reads[kept].float().mean()):.1f}/{roc_auc(scores, reads):.3f}"
            for k in (40, 100, 200):
                kept = select_diverse(book.rotations, cosine, k, threshold, 5, rerank=share)
                line += f" rr{k}: {float(reads[kept].float().mean()):.1f}"
            print(line, flush=True)


if __name__ == "__main__":
    main()
