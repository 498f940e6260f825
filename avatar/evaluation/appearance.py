"""What a person sees in finished appearance runs, per body region (head, torso, arms, hands, hips,
legs, feet): how far the exported surface (avatar_rig.npz, T-pose) left the coarse body the run
started from and how much lumpier it is than that body, and whether the regions the prompt does
not name (a face, hands, arms when only a shirt is named) kept their colour or took the
prompt's (avatar/metrics/appearance.py; the stage reports the same in result.json, ``surface``
and ``colors``).

    avatar-eval appearance outputs/<run> [outputs/<run> ...] [--json appearance.json]

The coarse body is rebuilt from each run's config_resolved.yaml (``body``, ``stage.shape_dir``,
``stage.bind_pose``) and moved to the T-pose as the export is; a region's colour before
guidance is the coarse body's grey, or the region palette with ``stage.coarse_color=regions``.

Columns: distance from the export's vertices to the body's surface (mean, 95th percentile,
signed mean: positive outside), roughness (the mean angle between a vertex normal and the mean
normal of the surface within ``--radius``, degrees) of the export, of the body and their ratio
(1: as smooth as the body), mean vertex colour, what the prompt says of the region (named /
partly / unnamed), its colour drift from before guidance, whether it took a prompt colour
(nearer one of the prompt's colours than its own colour before guidance) and, for regions not
named, whether it took a named region's colour (nearer a garment's mean colour than its own:
it follows the garment even where the garment missed the prompt's colour).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from avatar.metrics.appearance import appearance_report, markdown_table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dirs", nargs="+", metavar="run_dir", help="appearance run directories")
    parser.add_argument("--json", default="", metavar="FILE", help="write every run's measures to this JSON file")
    parser.add_argument("--radius", type=float, default=0.02, help="roughness neighbourhood radius (metres)")


def run(args: argparse.Namespace) -> list[dict]:
    """``avatar-eval appearance``."""
    results = []
    for run_dir in args.run_dirs:
        result = evaluate_run(run_dir, radius=args.radius)
        print(f"\n### {run_dir}: {result['prompt']!r} ({result['export_vertices']} vertices)\n")
        print(markdown_table(result))
        results.append(result)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        print(f"\nwritten: {args.json}")
    return results


def _shape_dir(shape_dir: str, run_dir: Path) -> str:
    """``stage.shape_dir`` as the run saw it; a relative one that does not exist from here is
    read next to the run (pipelines put the shape run beside it)."""
    if not shape_dir or Path(shape_dir).is_absolute() or Path(shape_dir).exists():
        return shape_dir
    beside = run_dir.parent / shape_dir
    return str(beside) if beside.exists() else shape_dir


def evaluate_run(run_dir: str | Path, radius: float = 0.02) -> dict:
    """The measures of one finished appearance run (see the module's docstring), with
    ``run_dir``, ``prompt`` and ``export_vertices``."""
    import trimesh

    from avatar.body.base import build_body
    from avatar.body.regions import vertex_regions
    from avatar.body.skinning import Rig
    from avatar.stages.appearance import coarse_body_rig, coarse_region_rgb, load_coarse_shape

    run_dir = Path(run_dir)
    config, rig_file, mesh_file = (run_dir / n for n in ("config_resolved.yaml", "avatar_rig.npz", "avatar.ply"))
    missing = [p.name for p in (config, rig_file, mesh_file) if not p.is_file()]
    if missing:
        raise SystemExit(f"{run_dir} is not a finished appearance run: no {', '.join(missing)}")
    cfg = OmegaConf.load(config)
    if cfg.stage.name != "appearance":
        raise SystemExit(f"{run_dir} is a {cfg.stage.name} run, not an appearance run")
    body_cfg = OmegaConf.merge(cfg.body, {"device": "cpu"})  # measured here, wherever it ran
    body = build_body(body_cfg)
    shape, pose_name, _ = load_coarse_shape(body, _shape_dir(str(cfg.stage.shape_dir), run_dir), cfg.stage.bind_pose)
    coarse = coarse_body_rig(body, shape, pose_name)
    rig = Rig.load(rig_file)
    mesh = trimesh.load(mesh_file, process=False)
    colors = np.asarray(mesh.visual.vertex_colors)[:, :3]
    if len(colors) != rig.num_vertices:
        raise SystemExit(f"{mesh_file} has {len(colors)} vertices but {rig_file} {rig.num_vertices}")
    prompt = str(cfg.prompt.appearance)
    report = appearance_report(
        rig.vertices, rig.faces, vertex_regions(rig.weights), colors, coarse.vertices, coarse.faces,
        vertex_regions(coarse.weights), prompt, coarse_region_rgb(str(cfg.stage.coarse_color)), radius=radius,
    )  # fmt: skip
    return {"run_dir": str(run_dir), "prompt": prompt, "export_vertices": rig.num_vertices, **report}
