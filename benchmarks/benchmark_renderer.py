"""Time the mesh renderer on the full Anny body and save check images.

    .venv/bin/python -m benchmarks.benchmark_renderer [--repeats 20] [--device cpu]

Reports the median milliseconds (warm-up excluded) of: BVH build / refit (rest <-> posed),
a ray cast after each, one 224x224 view forward (full body, and a close-up), forward + backward
w.r.t. vertex colours, 8 views of one mesh in one batch, and 8 views of 8 meshes that change
every call (each BVH refitted); then writes a colour-by-height and a textureless render of the body at
azimuth 0 (front) and 90 (the body's left side) to ``--out`` (default /tmp/render_check).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from avatar.body.anny_body import AnnyBody, AnnyBodyConfig
from avatar.body.skeleton import CanonicalPose
from avatar.export.media import save_image
from avatar.render import MeshRenderConfig, MeshRenderer, orbit_cameras


def median_ms(fn, repeats: int, warmup: int = 3, sync=lambda: None) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def load_body(device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, AnnyBody]:
    """Anny at rest, Anny in a random canonical pose (vertices (V, 3) each), the faces (F, 3) and
    the body model."""
    body = AnnyBody(AnnyBodyConfig(device=str(device)))
    with torch.no_grad():
        rest = body().vertices[0]
        pose = CanonicalPose.rest(1, device=device)
        gen = torch.Generator().manual_seed(0)
        pose.rotations[:, 1:] += 0.3 * torch.randn(pose.rotations[:, 1:].shape, generator=gen).to(device)
        posed = body(pose=pose).vertices[0]
    return rest, posed, body.faces, body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("/tmp/render_check"))
    args = parser.parse_args()
    device = torch.device(args.device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)

    rest, posed, faces, body = load_body(device)
    height = rest[:, 2]
    colors = torch.stack(  # a colour ramp by height: feet blue, head red
        [
            (height - height.min()) / (height.max() - height.min()),
            0.4 * torch.ones_like(height),
            1 - (height - height.min()) / (height.max() - height.min()),
        ],
        dim=-1,
    )
    renderer = MeshRenderer(MeshRenderConfig(height=224, width=224))
    one = orbit_cameras(1, 2.2, 0.0, (0.0, 0.0, -0.05), 60.0).to(device)
    eight = orbit_cameras(8, 2.2, 10.0, (0.0, 0.0, -0.05), 60.0).to(device)

    rows: list[tuple[str, float]] = []
    print(
        f"Anny: {len(rest)} vertices, {len(faces)} triangles; device {device}; torch threads {torch.get_num_threads()}"
    )

    # Anny posing two frames (the motion stage's guidance renders): the default shape's rest model
    # and calibration kept between calls, or recomputed (a shape that carries a gradient).
    two = CanonicalPose.rest(2, device=device)
    with torch.no_grad():
        rows.append(
            (
                "Anny forward, 2 poses, default shape (rest model kept)",
                median_ms(lambda: body(None, two), args.repeats, sync=sync),
            )
        )
        graded = body.default_shape(2).requires_grad_(True)
        rows.append(
            (
                "Anny forward, 2 poses, shape with gradient (recomputed)",
                median_ms(lambda: body(graded, two), args.repeats, sync=sync),
            )
        )

    # BVH maintenance: rebuild vs refit when the pose changes, and ray-cast cost afterwards.
    points = {"rest": rest.contiguous(), "posed": posed.contiguous()}
    origins, directions = one.generate_rays(224, 224)
    for policy in ("rebuild", "refit"):
        bench = MeshRenderer(MeshRenderConfig(bvh_update=policy))
        state = {"toggle": False}

        def update(bench=bench, state=state):
            state["toggle"] = not state["toggle"]
            bench._bvh(0, points["posed" if state["toggle"] else "rest"], faces)

        rows.append((f"BVH {policy} (rest <-> posed)", median_ms(update, args.repeats, sync=sync)))
        bench._bvh(0, points["rest"], faces)
        bench._bvh(0, points["posed"], faces)  # leaves a refitted or rebuilt BVH of the pose
        mesh = bench._bvhs[0].mesh
        rows.append(
            (
                f"  ray cast 224^2, posed, after {policy}",
                median_ms(lambda: bench._cast([mesh], origins, directions), args.repeats, sync=sync),
            )
        )

    rows.append(
        (
            "forward, 1 view",
            median_ms(lambda: renderer.render(rest, faces, one, colors=colors), args.repeats, sync=sync),
        )
    )
    close = orbit_cameras(1, 1.0, 0.0, (0.0, 0.0, 0.2), 60.0).to(device)  # torso fills the view
    rows.append(
        (
            "forward, 1 view, close-up (1 m)",
            median_ms(lambda: renderer.render(rest, faces, close, colors=colors), args.repeats, sync=sync),
        )
    )
    with torch.no_grad():
        rows.append(
            (
                "forward, 1 view, no_grad",
                median_ms(lambda: renderer.render(rest, faces, one, colors=colors), args.repeats, sync=sync),
            )
        )

    def forward_backward():
        leaf = colors.detach().requires_grad_()
        renderer.render(rest, faces, one, colors=leaf).rgb.mean().backward()

    rows.append(("forward+backward (colours), 1 view", median_ms(forward_backward, args.repeats, sync=sync)))
    batch_ms = median_ms(lambda: renderer.render(rest, faces, eight, colors=colors), args.repeats, sync=sync)
    rows.append(("forward, 8 views batched (total)", batch_ms))
    rows.append(("  per view", batch_ms / 8))
    meshes = torch.stack([rest, posed] * 4)  # one mesh per view, alternating: every call refits
    flip = {"order": False}

    def per_view_meshes():
        flip["order"] = not flip["order"]
        renderer.render(meshes.flip(0) if flip["order"] else meshes, faces, eight, colors=colors)

    meshes_ms = median_ms(per_view_meshes, args.repeats, sync=sync)
    rows.append(("forward, 8 views, 8 changing meshes", meshes_ms))
    rows.append(("  per view", meshes_ms / 8))

    print(f"\n{'what':<42}{'ms (median)':>12}")
    for name, ms in rows:
        print(f"{name:<42}{ms:>12.2f}")

    args.out.mkdir(parents=True, exist_ok=True)
    views = orbit_cameras(4, 2.2, 0.0, (0.0, 0.0, -0.05), 60.0).to(device)[0:2]  # azimuth 0, 90
    light = torch.tensor([0.4, -1.0, 0.6], device=device)  # front-left-above: shows relief
    textured = renderer.render(rest, faces, views, colors=colors, light_dir=light)
    grey = renderer.render(rest, faces, views, light_dir=light)
    for i, azimuth in enumerate((0, 90)):
        save_image(args.out / f"anny_height_color_az{azimuth}.png", textured.rgb[i])
        save_image(args.out / f"anny_grey_az{azimuth}.png", grey.rgb[i])
    print(f"\nsaved check images to {args.out}")


if __name__ == "__main__":
    main()
