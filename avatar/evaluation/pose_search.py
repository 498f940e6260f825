"""How well the pose stage's codebook search follows motion prompts, and how fast it is.

For prompts whose pose has a geometric reading (avatar.guidance.synthetic.poses.pose_words:
"arms raised", "squatting", ...), the share of the kept candidates whose joints read as the
expected word; the ROC-AUC of the prompt's score over the whole codebook for the entries that
read as that word (less noisy than five candidates; for "walking" also for the strides from
clips the mocap manifest files under walk, the poses a walk is made of); plus the search time
per prompt once the codebook embeddings are cached. The guidance model's own score is not used
to judge it: the reading is pure geometry.

    avatar-eval pose                                     # full Anny, mini guidance
    avatar-eval pose body.topology=notoes_collapse5pc    # any config override of the pose stage

Prints a table and, last, one JSON line with the mean hit rate and mean AUC.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch
from hydra import compose, initialize_config_dir

from avatar.body.skeleton import CanonicalPose
from avatar.config import register_configs
from avatar.guidance import build_guidance
from avatar.guidance.synthetic.generator import clips_in_category
from avatar.guidance.synthetic.poses import pose_words
from avatar.mocap.manifest import MANIFEST_NAME
from avatar.priors.data import DEFAULT_MOCAP_ROOT
from avatar.stages.pose import PoseStage
from avatar.utils.paths import PROJECT_ROOT

MANIFEST = DEFAULT_MOCAP_ROOT / MANIFEST_NAME  # the mocap corpus's clip categories

# prompt -> (pose word group, expected word)
PROMPTS = {
    "a person raising both arms": ("arms", "arms raised"),
    "a person raising one arm": ("arms", "one arm raised"),
    "a person with arms spread": ("arms", "arms spread"),
    "a person squatting": ("body", "squatting"),
    "a person sitting": ("body", "sitting"),
    "a person kicking": ("body", "kicking"),
    "a person walking": ("body", "walking"),
    "a person bending forward": ("body", "bending forward"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("overrides", nargs="*", help="config overrides of the pose stage (key=value)")


def run(args: argparse.Namespace) -> dict:
    """``avatar-eval pose``: the evaluation, then one JSON line with the means."""
    result = evaluate(args.overrides)
    print(json.dumps({"mean_hit_rate": result["mean_hit_rate"], "mean_auc": result["mean_auc"]}))
    return result


def evaluate(overrides: list[str], prompts: dict[str, tuple[str, str]] | None = None, table: bool = True) -> dict:
    """Judge the search for ``prompts`` (prompt -> (pose word group, expected word); default
    PROMPTS, ``avatar-eval paraphrase`` passes its held-out paraphrases too); ``table``: print it."""
    prompts = PROMPTS if prompts is None else prompts
    register_configs()
    conf = str(PROJECT_ROOT / "conf")
    with tempfile.TemporaryDirectory() as tmp, initialize_config_dir(config_dir=conf, version_base="1.3"):
        cfg = compose("config", overrides=["stage=pose", *overrides, f"run_dir={tmp}"])
        stage = PoseStage(cfg)
        guidance = build_guidance(cfg.guidance)
        codebook = stage.codebook(guidance)  # build (or load) the cache once, outside the timings
        with torch.no_grad():
            rest = torch.zeros(len(codebook.rotations), 3)
            readings = pose_words(stage.body(pose=CanonicalPose(codebook.rotations.to(stage.body.dtype), rest)).joints)
        from_walks = clips_in_category(codebook.sources, MANIFEST, "walk") if MANIFEST.is_file() else None
        rows = {}
        for prompt, (group, word) in prompts.items():
            stage.prompt = prompt
            stage.prompt_text = cfg.stage.template.format(prompt)
            start = time.perf_counter()
            candidates, info = stage.search(guidance)
            seconds = time.perf_counter() - start
            with torch.no_grad():
                joints = stage.body(pose=candidates.poses().to(stage.body.dtype)).joints
            words = [w[group] for w in pose_words(joints)]
            scores = stage.scores(guidance, codebook)
            reads = torch.tensor([r[group] == word for r in readings])
            rows[prompt] = {"expected": word, "hit_rate": sum(w == word for w in words) / len(words),
                            "auc": roc_auc(scores, reads), "read_as": words, "search_seconds": round(seconds, 3)}  # fmt: skip
            if word == "walking" and from_walks is not None:
                rows[prompt]["auc_walk_clips"] = roc_auc(scores, reads & from_walks)
    mean = sum(r["hit_rate"] for r in rows.values()) / len(rows)
    mean_auc = sum(r["auc"] for r in rows.values()) / len(rows)
    if not table:
        return {"prompts": rows, "mean_hit_rate": mean, "mean_auc": mean_auc}
    print(f"{'prompt':32s} {'expected':16s} hits  AUC    search(s)  candidates read as")
    for prompt, r in rows.items():
        print(
            f"{prompt:32s} {r['expected']:16s} {r['hit_rate']:.1f}   {r['auc']:.3f}  {r['search_seconds']:.3f}      {r['read_as']}"
        )
    walk = rows.get("a person walking", {}).get("auc_walk_clips")
    print(
        f"mean hit rate {mean:.2f}, mean AUC {mean_auc:.3f}"
        + (f"; walking AUC for strides from walk clips {walk:.3f}" if walk else "")
    )
    return {"prompts": rows, "mean_hit_rate": mean, "mean_auc": mean_auc}


def roc_auc(scores: torch.Tensor, positives: torch.Tensor) -> float:
    """Chance that a random positive outscores a random negative (ties count half)."""
    pos, neg = scores[positives], scores[~positives]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    return float((pos[:, None] > neg[None]).float().mean() + 0.5 * (pos[:, None] == neg[None]).float().mean())
