"""Time the appearance export's mesh extraction on a trained avatar: the whole fine grid against
the coarse-to-fine sampling (`extract_mesh(coarse_resolution=...)`), and check both meshes match.

    .venv/bin/python -m benchmarks.benchmark_extract <appearance run dir> [--resolution 192] [--coarse 48]

The run dir is an appearance stage's (its ``config_resolved.yaml`` and
``checkpoints/last.ckpt``), e.g. ``outputs/.../2_appearance`` of ``make demo``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from avatar.neus.extract import extract_mesh, surface_region
from avatar.stages.appearance import AppearanceStage


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path)
    p.add_argument("--resolution", type=int, default=192)
    p.add_argument("--coarse", type=int, default=48)
    args = p.parse_args()
    cfg = OmegaConf.load(args.run_dir / "config_resolved.yaml")
    cfg.run_dir = str(Path("/tmp") / "benchmark_extract_run")  # the stage writes nothing here
    stage = AppearanceStage(cfg)
    checkpoint = torch.load(args.run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    stage.load_state_dict(checkpoint["state_dict"], strict=False)
    sdf = stage.fields.sdf
    meshes = {}
    with torch.no_grad():
        region = surface_region(sdf, args.resolution, 1.0, args.coarse)
        share = np.prod([b - a for a, b in region]) / args.resolution**3 if region else 1.0
        print(f"surface box on the {args.coarse}^3 grid: {region} ({100 * share:.0f} % of the cube)")
        for name, coarse in (("whole grid", None), (f"coarse {args.coarse}^3 first", args.coarse)):
            start = time.perf_counter()
            meshes[name] = extract_mesh(sdf, resolution=args.resolution, coarse_resolution=coarse)
            print(f"{name}: {time.perf_counter() - start:.1f} s, {len(meshes[name].vertices)} vertices")
    a, b = meshes.values()
    same = np.array_equal(a.vertices, b.vertices) and np.array_equal(a.faces, b.faces)
    print("meshes identical" if same else "MESHES DIFFER")


if __name__ == "__main__":
    main()
