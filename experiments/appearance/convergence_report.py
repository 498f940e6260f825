"""Table of the appearance convergence study (experiments/appearance/convergence.sh): per run,
the steps, the optimisation time, the independent scorer's loss on the final avatar (lower is
better; the sweep objective), and the exported colours: the torso's and legs' mean RGB, whether
they read as the prompt's two colours (``color_pair_right``), and the share of torso and leg
vertices whose nearest everyday colour word is the named one.

    python experiments/appearance/convergence_report.py outputs/appearance_convergence
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import torch
import trimesh
from omegaconf import OmegaConf

from avatar.body.regions import REGIONS, vertex_regions
from avatar.body.skinning import Rig
from avatar.guidance.evaluation import color_pair_right
from avatar.guidance.synthetic import BASIC_COLORS, COLORS


def named_share(colors: np.ndarray, wanted: str) -> float:
    """Share of vertex colours whose nearest everyday colour word (RGB distance) is ``wanted``."""
    palette = np.array([COLORS[c] for c in BASIC_COLORS])
    nearest = np.linalg.norm(colors[:, None] - palette[None], axis=-1).argmin(1)
    return float((nearest == BASIC_COLORS.index(wanted)).mean())


def row(run: Path) -> dict:
    result = json.loads((run / "result.json").read_text())
    prompt = OmegaConf.load(run / "config_resolved.yaml").prompt.appearance
    top, bottom = re.match(r"a person in an? (\w+) shirt and (\w+) trousers", prompt).groups()
    rig = Rig.load(run / "avatar_rig.npz")
    colors = trimesh.load(run / "avatar.ply", process=False).visual.vertex_colors[:, :3] / 255.0
    regions = vertex_regions(torch.as_tensor(rig.weights)).numpy()
    torso, legs = regions == REGIONS.index("torso"), regions == REGIONS.index("legs")
    return {
        "run": run.name, "prompt": prompt, "steps": result["steps"], "train_s": result.get("train_seconds"),
        "scorer": round(result["scorer_loss_final"], 4), "guidance": round(result["guidance_loss_final"], 4),
        "torso_rgb": [round(x, 2) for x in result["region_rgb"]["torso"]],
        "legs_rgb": [round(x, 2) for x in result["region_rgb"]["legs"]],
        "pair_right": color_pair_right(result["region_rgb"], top, bottom),
        "torso_named": round(named_share(colors[torso], top), 2),
        "legs_named": round(named_share(colors[legs], bottom), 2),
    }  # fmt: skip


def main(root: str) -> list[dict]:
    rows = [row(run) for run in sorted(Path(root).iterdir()) if (run / "result.json").is_file()]
    rows.sort(key=lambda r: (r["prompt"], r["steps"]))
    keys = [
        "prompt",
        "steps",
        "train_s",
        "scorer",
        "guidance",
        "torso_rgb",
        "legs_rgb",
        "pair_right",
        "torso_named",
        "legs_named",
    ]
    print("| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(str(r[k]) for k in keys) + " |")
    (Path(root) / "convergence.json").write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main(sys.argv[1])
