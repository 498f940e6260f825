"""Does the motion do what the prompt says? Text -> pose search -> motion stage, judged by
geometry, not by the guidance model: per prompt, the share of frames whose pose words
(avatar.guidance.synthetic.poses) are the expected one, and how far the feet carry the body
(avatar.mocap.contact, root upright: a walk travels, swaying in place does not).

    avatar-eval motion                                 # the default preset (tiny: retrieval)
    avatar-eval motion stage.generator=latent          # the paper's optimisation
    avatar-eval motion body.topology=notoes_collapse5pc trainer.max_steps=300

Overrides apply to the motion stage (the pose stage gets the body/guidance/render ones too);
one prefixed "pose:" goes to the pose stage only:

    avatar-eval motion body.topology=notoes_collapse5pc pose:stage.prior_weight=0.01

``--keep <dir>`` keeps each prompt's motion run there (``motion_<i>/images``, ``motion.mp4``) to look at.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from avatar.config import register_configs
from avatar.engine.runner import run as run_stage
from avatar.guidance import build_guidance
from avatar.guidance.synthetic.poses import pose_words
from avatar.metrics.motion import motion_joints
from avatar.mocap.contact import contact_travel_distance
from avatar.stages.motion_files import load_motion
from avatar.stages.pose import PoseStage
from avatar.utils.paths import PROJECT_ROOT

# prompt -> (pose word group, expected word)
PROMPTS = {
    "a person raising both arms": ("arms", "arms raised"),
    "a person squatting": ("body", "squatting"),
    "a person kicking": ("body", "kicking"),
    "a person walking": ("body", "walking"),
}
POSE_KEYS = ("body.", "guidance", "render.", "seed")  # overrides the pose stage shares
POSE_ONLY = "pose:"  # "pose:stage.prior_weight=0.01": an override for the pose stage alone


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "overrides",
        nargs="*",
        help='config overrides of the motion stage (key=value; "pose:key=value": the pose stage)',
    )
    parser.add_argument("--keep", default="", metavar="DIR", help="keep each prompt's runs in this folder")
    parser.add_argument(
        "--prompt", action="append", choices=list(PROMPTS), metavar="PROMPT",
        help=f"run only this prompt (repeatable; default all: {', '.join(PROMPTS)})",
    )  # fmt: skip


def run(args: argparse.Namespace) -> list[dict]:
    """``avatar-eval motion``."""
    return evaluate(args.overrides, args.keep, args.prompt)


def evaluate(overrides: list[str], keep: str = "", prompts: list[str] | None = None) -> list[dict]:
    """Run and read each of ``prompts`` (default: every prompt of PROMPTS)."""
    register_configs()
    rows = []
    folder = contextlib.nullcontext(keep) if keep else tempfile.TemporaryDirectory()
    conf = str(PROJECT_ROOT / "conf")
    with folder as tmp, initialize_config_dir(config_dir=conf, version_base="1.3"):
        pose_only = [o.removeprefix(POSE_ONLY) for o in overrides if o.startswith(POSE_ONLY)]
        overrides = [o for o in overrides if not o.startswith(POSE_ONLY)]
        pose_overrides = [o for o in overrides if o.startswith(POSE_KEYS)] + pose_only
        pose_cfg = compose("config", overrides=["stage=pose", *pose_overrides, f"run_dir={tmp}/pose"])
        stage = PoseStage(pose_cfg)
        guidance = build_guidance(pose_cfg.guidance)
        for i, (prompt, (group, word)) in enumerate(PROMPTS.items()):
            if prompts and prompt not in prompts:
                continue
            stage.prompt, stage.prompt_text = prompt, pose_cfg.stage.template.format(prompt)
            candidates, _ = stage.search(guidance)
            pose_file = candidates.save(Path(tmp) / f"poses_{i}.npz")
            run_dir = Path(tmp) / f"motion_{i}"
            cfg = compose("config", overrides=["stage=motion", f"stage.pose_dir={pose_file}", "logger=none",
                                               "trainer.enable_progress_bar=false", *overrides, f"run_dir={run_dir}"])  # fmt: skip
            result = run_stage(cfg)
            motion, _ = load_motion(run_dir)
            with torch.no_grad():
                joints = motion_joints(motion)
                candidate_joints = stage.body(pose=candidates.poses().to(stage.body.dtype)).joints
            frames = [w[group] == word for w in pose_words(joints)]
            row = {
                "prompt": prompt,
                "expected": word,
                "candidates_hit": sum(w[group] == word for w in pose_words(candidate_joints)) / len(candidates),
                "frames_hit": sum(frames) / len(frames),
                "travel_m": round(contact_travel_distance(motion.rotations), 2),
                "scorer_score": round(float(result.get("scorer_score", float("nan"))), 3),
                "jerk": round(float(result["jerk"]), 1),
                "source": result.get("retrieval_source", result["generator"]),
                "description": result.get("retrieval_description", ""),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n| prompt | candidates reading it | frames reading it | travel in 2 s (m) | scorer | jerk (m/s^3) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['prompt']} | {r['candidates_hit']:.1f} | {r['frames_hit']:.2f} | {r['travel_m']:.2f} | "
              f"{r['scorer_score']:.3f} | {r['jerk']:.0f} |")  # fmt: skip
    return rows
