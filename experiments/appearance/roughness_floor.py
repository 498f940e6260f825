"""The roughness the export adds by itself: the coarse body's exact signed distance (no NeuS, no
guidance) through the stage's marching cubes at its export resolution, measured against the body
with the same ``surface_metrics`` a run reports. A run whose roughness ratio is at this floor has
the export's facets, not lumps.

    python experiments/appearance/roughness_floor.py outputs/<appearance run> [--resolution N]

The run gives the configuration (body, shape, export resolution); nothing of it is trained here.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from omegaconf import OmegaConf

from avatar.body.regions import REGIONS, vertex_regions
from avatar.metrics.appearance import surface_metrics
from avatar.neus.extract import extract_mesh
from avatar.neus.mesh_sdf import MeshQuery
from avatar.stages import build_stage


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a finished appearance run (its config_resolved.yaml)")
    parser.add_argument("--resolution", type=int, default=None, help="marching-cubes grid (default: the run's)")
    args = parser.parse_args(argv)
    cfg = OmegaConf.load(args.run / "config_resolved.yaml")
    stage = build_stage(cfg)
    if stage.bind_pose_name != "t_pose":
        raise SystemExit(f"{args.run}: made in {stage.bind_pose_name}; this probe compares T-pose meshes only")
    resolution = args.resolution or int(cfg.stage.export_resolution)
    vertices, faces = stage.body_cpu  # object space
    body = MeshQuery(vertices, faces)
    mesh = extract_mesh(lambda x: body.query(x.float().cpu())[0].to(x), resolution=resolution, bound=1.0)
    regions = vertex_regions(stage.body.skinning_weights.float())
    closest_face = body.query(torch.as_tensor(mesh.vertices, dtype=torch.float32))[2]
    export_regions = regions[faces[closest_face, 0]]

    def world(v):
        return stage.world_from_object(torch.as_tensor(v, dtype=torch.float32))

    metrics = surface_metrics(world(mesh.vertices), mesh.faces, export_regions, world(vertices), faces, regions)
    report = {"resolution": resolution, "roughness_ratio": metrics["roughness_deg"]["ratio"]}
    report["distance_mm_mean"] = {r: metrics["surface_distance_mm"][r]["mean"] for r in [*REGIONS, "all"]}
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
