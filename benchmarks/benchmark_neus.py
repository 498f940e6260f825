"""Benchmark the NeuS volume renderer: paper sampler vs surface sampler, equal rays and fields.

A training-like step = render N rays (both colour heads, normals, eikonal) and backpropagate a
loss using all of them. Measured per field size:

* ``paper``: fields 256x4 (AvatarCLIP), 12,544 rays (a 112x112 render);
* ``small``: fields 128x3, 7,000 rays;

on the Anny body (full topology) scaled into the unit sphere (bounding-box centre at the
origin, farthest vertex at radius 0.9: about 0.9 object units per metre). The fields are fitted
to the body with :func:`fit_fields_to_mesh` (``--fit-steps``; 0 keeps the analytic sphere init)
and ``inv_s`` is then set to ``--inv-s`` (a value NeuS reaches early in training; the
initial 20 is far blurrier than a fitted SDF). Rays come from AvatarCLIP's random body views
(:func:`sample_views`, no face close-ups), N random pixels of 112x112 renders, the same rays
for both samplers. The surface sampler's proposal is the fitted SDF's marching-cubes mesh
(``--proposal mc``, what the stage refreshes it with) or the body mesh (``--proposal body``:
then fit errors beyond the 3 cm dilation show up as differences). Quality = mean/max absolute difference of colour (both heads) and opacity
between the samplers on the same rays, without sampling jitter.

    python -m benchmarks.benchmark_neus --out neus_benchmark.json            # CPU
    python -m benchmarks.benchmark_neus --device cuda --out neus_cuda.json
    python -m benchmarks.benchmark_neus --save-mesh body.npz   # then --mesh body.npz where Anny is absent

On a CPU the paper sampler at the paper size needs tens of GB for one backward pass (800k
samples through a 256-wide MLP with second-order autograd), so ``--ray-fraction`` (default
0.25 on CPU, 1.0 on CUDA) renders a fraction of the rays; the steps/s ratio is what matters and
both samplers always get the same rays. Peak memory: ``torch.cuda.max_memory_allocated`` on
CUDA; on CPU the peak of the resident set during the step (sampled by a thread) above the
resident set before it.
"""

from __future__ import annotations

import argparse
import json
import math
import threading
import time
from pathlib import Path

import numpy as np
import torch

from avatar.neus import (
    NeusFieldConfig,
    NeusFields,
    NeusVolumeRenderer,
    VolumeRenderConfig,
    fit_fields_to_mesh,
)
from avatar.render.cameras import ViewSamplingConfig, sample_views

SIZES = {
    "paper": (NeusFieldConfig(), 12544),
    "small": (NeusFieldConfig(sdf_hidden=128, sdf_layers=3, color_hidden=128), 7000),
}


def anny_mesh() -> tuple[torch.Tensor, torch.Tensor]:
    """The default Anny body's vertices (metres) and faces."""
    from avatar.body.anny_body import AnnyBody, AnnyBodyConfig

    body = AnnyBody(AnnyBodyConfig())
    with torch.no_grad():
        return body().vertices[0].float(), body.faces


def body_mesh(mesh_file: str | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The body mesh scaled into the unit sphere, with a smooth colour ramp: Anny's, or the
    ``vertices``/``faces`` of an npz written by ``--save-mesh`` (runs where Anny is not installed)."""
    if mesh_file:
        data = np.load(mesh_file)
        v, faces = torch.from_numpy(data["vertices"]).float(), torch.from_numpy(data["faces"]).long()
    else:
        v, faces = anny_mesh()
    v = v - (v.min(0).values + v.max(0).values) / 2
    v = v * (0.9 / v.norm(dim=-1).max())
    colors = (v - v.min(0).values) / (v.max(0).values - v.min(0).values)  # a smooth colour ramp
    return v, faces, colors


@torch.no_grad()
def sdf_mesh(fields: NeusFields, res: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Marching-cubes mesh of the fields' zero level set in [-1, 1]^3 (what the appearance
    stage refreshes the proposal with), outward-wound."""
    from skimage.measure import marching_cubes

    axis = torch.linspace(-1.0, 1.0, res, device=device)
    grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    sdf = torch.cat([fields.sdf(p) for p in grid.split(65536)]).reshape(res, res, res).cpu().numpy()
    verts, faces, _, _ = marching_cubes(sdf, 0.0, spacing=(2.0 / (res - 1),) * 3)
    verts = torch.tensor(verts - 1.0, dtype=torch.float32, device=device)
    faces = torch.tensor(faces.copy(), dtype=torch.int64, device=device)
    tri = verts[faces]
    volume = (tri[:, 0] * torch.linalg.cross(tri[:, 1], tri[:, 2])).sum() / 6
    if volume < 0:  # the renderer needs outward winding
        faces = faces.flip(1)
    return verts, faces


def random_rays(n: int, generator: torch.Generator, res: int = 112) -> tuple[torch.Tensor, torch.Tensor]:
    n_views = max(1, math.ceil(n / (res * res)) * 2)
    cams, _ = sample_views(n_views, ViewSamplingConfig(), generator, target=(0.0, 0.0, 0.0))
    o, d = cams.generate_rays(res, res)
    o, d = o.reshape(-1, 3), d.reshape(-1, 3)
    pick = torch.randperm(len(o), generator=generator)[:n]
    return o[pick].contiguous(), d[pick].contiguous()


class PeakRss:
    """Peak resident set size (bytes) while active, sampled every 5 ms from /proc."""

    def __enter__(self):
        self.start = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _watch(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._rss())

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096


def train_step(renderer: NeusVolumeRenderer, rays_o, rays_d, background) -> int:
    out = renderer.render(
        rays_o, rays_d, cos_anneal_ratio=1.0, training=True, generator=torch.Generator(rays_o.device).manual_seed(0)
    )
    rgb_a = out["color_a"] + (1 - out["opacity"])[:, None] * background
    rgb_b = out["color_b"] + (1 - out["opacity"])[:, None] * background
    loss = rgb_a.mean() + rgb_b.mean() + 0.1 * out["eikonal"] + 1e-3 * out["normal"].sum()
    loss.backward()
    return out["n_points"]


def time_sampler(renderer, rays_o, rays_d, warmup: int, steps: int, device) -> dict:
    background = torch.ones(3, device=device)
    params = list(renderer.fields.parameters())
    for _ in range(warmup):
        train_step(renderer, rays_o, rays_d, background)
        for p in params:
            p.grad = None
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    times, points = [], 0
    with PeakRss() as rss:
        for _ in range(steps):
            t0 = time.perf_counter()
            points = train_step(renderer, rays_o, rays_d, background)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
            for p in params:
                p.grad = None
    peak = (torch.cuda.max_memory_allocated() - base) if device.type == "cuda" else (rss.peak - rss.start)
    sec = sorted(times)[len(times) // 2]
    return {
        "steps_per_s": 1.0 / sec,
        "step_s": sec,
        "peak_mem_mb": peak / 2**20,
        "points_per_step": points,
        "stats": dict(renderer.last_stats),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sizes", default="small,paper")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--fit-steps", type=int, default=150)
    ap.add_argument("--inv-s", type=float, default=200.0)
    ap.add_argument("--ray-fraction", type=float, default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--proposal",
        default="mc",
        choices=["mc", "body"],
        help="surface sampler's proposal: the fitted SDF's marching-cubes mesh or the body mesh",
    )
    ap.add_argument("--mc-res", type=int, default=96)
    ap.add_argument("--out", default=None)
    ap.add_argument("--mesh", default=None, help="npz of the body mesh (from --save-mesh) instead of building Anny")
    ap.add_argument("--save-mesh", default=None, help="write Anny's mesh to this npz and exit")
    args = ap.parse_args()
    if args.save_mesh:
        v, faces = anny_mesh()
        np.savez_compressed(args.save_mesh, vertices=v.numpy(), faces=faces.numpy())
        return
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    fraction = args.ray_fraction if args.ray_fraction is not None else (1.0 if device.type == "cuda" else 0.25)

    verts, faces, colors = body_mesh(args.mesh)
    verts, faces, colors = verts.to(device), faces.to(device), colors.to(device)
    rows = []
    for size in args.sizes.split(","):
        field_cfg, n_rays_nominal = SIZES[size]
        torch.manual_seed(args.seed)
        fields = NeusFields(field_cfg).to(device)
        fit = {}
        if args.fit_steps > 0:
            fit = fit_fields_to_mesh(
                fields,
                verts,
                faces,
                colors,
                steps=args.fit_steps,
                batch_points=8192,
                lr=2e-3,
                generator=torch.Generator().manual_seed(args.seed),
            )
        with torch.no_grad():
            fields.variance.variance.fill_(math.log(args.inv_s) / 10.0)
        n_rays = max(1, int(round(n_rays_nominal * fraction)))
        gen = torch.Generator().manual_seed(args.seed + 1)
        rays_o, rays_d = (t.to(device) for t in random_rays(n_rays, gen))

        proposal = (verts, faces) if args.proposal == "body" else sdf_mesh(fields, args.mc_res, device)
        results, renders = {}, {}
        for sampler in ("surface", "paper"):  # smaller first: the CPU peak-RSS probe can't see reuse
            renderer = NeusVolumeRenderer(fields, VolumeRenderConfig(sampler=sampler))
            renderer.set_proposal(*proposal)
            with torch.no_grad():
                renders[sampler] = renderer.render(rays_o, rays_d, training=False)
            results[sampler] = time_sampler(renderer, rays_o, rays_d, args.warmup, args.steps, device)
        quality = {}
        for key in ("color_a", "color_b", "opacity"):
            diff = (renders["surface"][key] - renders["paper"][key]).abs()
            quality[f"{key}_mad"] = diff.mean().item()
            quality[f"{key}_max"] = diff.max().item()
        row = {
            "size": size,
            "rays": n_rays,
            "rays_nominal": n_rays_nominal,
            "device": str(device),
            "fields": f"{field_cfg.sdf_hidden}x{field_cfg.sdf_layers}",
            "paper": results["paper"],
            "surface": results["surface"],
            "speedup": results["surface"]["steps_per_s"] / results["paper"]["steps_per_s"],
            "quality": quality,
            "inv_s": args.inv_s,
            "proposal": args.proposal,
            "fit": {k: fit[k] for k in ("sdf_error_surface", "sdf_error_near", "color_error_a", "seconds")}
            if fit
            else None,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)

    lines = [
        "| size | fields | rays | sampler | steps/s | step s | points/step | peak MB | speedup | colour MAD (a/b) | opacity MAD |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        q = r["quality"]
        for sampler in ("paper", "surface"):
            m = r[sampler]
            extra = (
                f"{r['speedup']:.1f}x | {q['color_a_mad']:.4f}/{q['color_b_mad']:.4f} | {q['opacity_mad']:.4f}"
                if sampler == "surface"
                else "1.0x | - | -"
            )
            lines.append(
                f"| {r['size']} | {r['fields']} | {r['rays']} | {sampler} | {m['steps_per_s']:.3f} | "
                f"{m['step_s']:.2f} | {m['points_per_step']} | {m['peak_mem_mb']:.0f} | {extra} |"
            )
    table = "\n".join(lines)
    print(table)
    if args.out:
        Path(args.out).write_text(json.dumps({"rows": rows, "table": table, "args": vars(args)}, indent=2))


if __name__ == "__main__":
    main()
