"""Jerk and foot skating of captured motion, the reference issue #26 judges generated clips by
("no worse than the captured clips'"): every 2-s window of the mocap corpus (stride 1 s), and
optionally generated clips (``motion.npz`` of motion runs) placed among them. All on the
canonical template skeleton, so the numbers compare with each other, not with the stage's own
metrics.json (measured on the body mesh's joints).

    .venv/bin/python experiments/motion/captured_reference.py [--motion <run>/motion.npz ...]
"""

from __future__ import annotations

import argparse

import torch

from avatar.metrics.motion import foot_skating, jerk, motion_joints
from avatar.mocap.retarget import CanonicalMotion
from avatar.priors.data import MotionWindows, load_corpus
from avatar.stages.motion_files import load_motion


def measures(motion: CanonicalMotion) -> tuple[float, float]:
    joints = motion_joints(motion)
    return jerk(joints, motion.fps), foot_skating(joints, motion.fps)["skate_speed"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--motion", nargs="*", default=[], help="motion.npz files to place among the captured windows")
    args = p.parse_args()
    corpus = load_corpus()
    windows = MotionWindows(corpus, 60, stride=30, mirror_prob=0.0)
    captured = torch.tensor([measures(CanonicalMotion(*windows[i], corpus.fps)) for i in range(len(windows))])
    quantiles = torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9])
    for column, name in enumerate(("jerk (m/s^3)", "foot skating (m/s)")):
        q = torch.quantile(captured[:, column], quantiles).tolist()
        print(f"captured {name}, {len(windows)} windows: p10/p25/median/p75/p90 " + " / ".join(f"{v:.2f}" for v in q))
    for path in args.motion:
        motion, _ = load_motion(path)
        j, s = measures(motion)
        pj, ps = (float((captured[:, c] <= v).float().mean()) for c, v in ((0, j), (1, s)))
        print(
            f"{path}: jerk {j:.0f} (percentile {100 * pj:.0f} of captured), skating {s:.2f} (percentile {100 * ps:.0f})"
        )


if __name__ == "__main__":
    main()
