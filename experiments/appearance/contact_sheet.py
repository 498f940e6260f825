"""Contact sheet of appearance runs: each run's exported avatar (``avatar.ply``) from the front,
the side and the back, one row per run, captioned with its prompt and what
``avatar-eval appearance`` measures (named regions' colours, unnamed regions' drift from the
coarse body, surface distance to the body).

    python experiments/appearance/contact_sheet.py RUN [RUN ...] --out docs/appearance_prompts.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import trimesh
from omegaconf import OmegaConf

from avatar.export.media import caption_tile, image_grid, save_image, to_uint8
from avatar.render import orbit_cameras, sized_renderer

# Azimuth 0 faces the body's front (avatar.render.cameras.orbit_cameras); 90 is its left side.
VIEWS = {"front": 0.0, "side": 90.0, "back": 180.0}


def views(mesh_path: Path, size: int) -> list[np.ndarray]:
    mesh = trimesh.load(mesh_path, process=False)
    vertices = torch.as_tensor(mesh.vertices, dtype=torch.float32)
    faces = torch.as_tensor(mesh.faces, dtype=torch.long)
    colors = torch.as_tensor(mesh.visual.vertex_colors[:, :3] / 255.0, dtype=torch.float32)
    centre = 0.5 * (vertices.amax(0) + vertices.amin(0))
    renderer = sized_renderer(size, background="white")
    tiles = []
    for azimuth in VIEWS.values():
        cams = orbit_cameras(1, 3.0, 5.0, centre, 45.0, start_azimuth_deg=azimuth)
        tiles.append(to_uint8(renderer.render(vertices, faces, cams, colors=colors).rgb[0]))
    return tiles


def caption(run: Path) -> str:
    prompt = OmegaConf.load(run / "config_resolved.yaml").prompt.appearance
    result = json.loads((run / "result.json").read_text())
    colors, surface = result.get("colors", {}), result.get("surface", {})
    named = [
        f"{name} {'/'.join(f'{c:.2f}' for c in region['rgb'])}"
        for name, region in colors.get("regions", {}).items()
        if region["prompt"] == "named"
    ]
    took = colors.get("unnamed_took_prompt_color")
    facts = [
        f"{result['steps']} steps",
        f"unnamed drift {colors.get('unnamed_drift', float('nan')):.2f} (took a prompt colour: {', '.join(took) if took else 'none'})",
    ]
    distance = surface.get("surface_distance_mm", {}).get("all")
    if distance is not None:
        facts.append(f"surface {distance['mean']:.1f} mm from the body (p95 {distance['p95']:.0f})")
    return f'"{prompt}" ({facts.pop(0)})\n' + "; ".join(facts) + "\n" + "; ".join(named)


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="appearance run folders (with avatar.ply)")
    parser.add_argument("--out", type=Path, required=True, help="the contact sheet (.png)")
    parser.add_argument("--size", type=int, default=256, help="pixels per view")
    args = parser.parse_args(argv)
    rows = []
    for run in args.runs:
        if not (run / "avatar.ply").is_file():
            raise SystemExit(f"{run}: no avatar.ply (not a finished appearance run)")
        row = image_grid(views(run / "avatar.ply", args.size), ncols=len(VIEWS), pad=0)
        rows.append(caption_tile(row, caption(run)))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    sheet = image_grid(rows, ncols=1) if len({r.shape for r in rows}) == 1 else np.concatenate(rows, axis=0)
    return save_image(args.out, sheet)


if __name__ == "__main__":
    print(main())
