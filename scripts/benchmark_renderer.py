"""Time the mesh renderer on the full Anny body and save check images.

    PYTHONPATH=. .venv/bin/python scripts/benchmark_renderer.py [--repeats 20] [--device cpu]

Reports the median milliseconds (warm-up excluded) of: BVH build / refit (rest -> posed),
a ray cast after each, one 224x224 view forward, forward + backward w.r.t. vertex colours, and
8 views in one batch; then writes a colour-by-height and a textureless render of the body at
azimuth 0 (front) and 90 (the body's left side) to ``--out`` (default /tmp/render_check).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from avatar.render import MeshRenderConfig, MeshRenderer, init_warp, orbit_cameras
from avatar.utils.paths import cache_dir


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


def load_body(device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Anny at rest, Anny in a random pose (vertices (V, 3) each) and the faces (F, 3)."""
    os.environ.setdefault("ANNY_CACHE_DIR", str(cache_dir("anny")))
    import anny  # after ANNY_CACHE_DIR is set: the model cache is read at import/construction
    import roma

    model = anny.Anny().to(torch.float32).to(device)
    with torch.no_grad():
        rest = model()["vertices"][0]
        n_bones = len(model.bone_labels)
        pose = torch.eye(4, device=device).repeat(1, n_bones, 1, 1)
        gen = torch.Generator().manual_seed(0)
        pose[0, :, :3, :3] = roma.rotvec_to_rotmat(0.3 * torch.randn(n_bones, 3, generator=gen)).to(device)
        posed = model(pose_parameters=pose)["vertices"][0]
    return rest, posed, model.faces.to(device)


def save_png(image: torch.Tensor, path: Path) -> None:
    array = (image.detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
    Image.fromarray(array).save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("/tmp/render_check"))
    args = parser.parse_args()
    device = torch.device(args.device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)

    init_warp()  # before Anny, which also uses Warp: our quiet settings and kernel cache win
    rest, posed, faces = load_body(device)
    height = rest[:, 2]
    colors = torch.stack(  # a colour ramp by height: feet blue, head red
        [(height - height.min()) / (height.max() - height.min()), 0.4 * torch.ones_like(height),
         1 - (height - height.min()) / (height.max() - height.min())], dim=-1)
    renderer = MeshRenderer(MeshRenderConfig(height=224, width=224))
    one = orbit_cameras(1, 2.2, 0.0, (0.0, 0.0, -0.05), 60.0).to(device)
    eight = orbit_cameras(8, 2.2, 10.0, (0.0, 0.0, -0.05), 60.0).to(device)

    rows: list[tuple[str, float]] = []
    print(f"Anny: {len(rest)} vertices, {len(faces)} triangles; device {device}; "
          f"torch threads {torch.get_num_threads()}")

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
        rows.append((f"  ray cast 224^2, posed, after {policy}",
                     median_ms(lambda: bench._cast([mesh], origins, directions), args.repeats, sync=sync)))

    rows.append(("forward, 1 view", median_ms(lambda: renderer.render(rest, faces, one, colors=colors),
                                             args.repeats, sync=sync)))
    with torch.no_grad():
        rows.append(("forward, 1 view, no_grad",
                     median_ms(lambda: renderer.render(rest, faces, one, colors=colors), args.repeats, sync=sync)))

    def forward_backward():
        leaf = colors.detach().requires_grad_()
        renderer.render(rest, faces, one, colors=leaf).rgb.mean().backward()

    rows.append(("forward+backward (colours), 1 view", median_ms(forward_backward, args.repeats, sync=sync)))
    batch_ms = median_ms(lambda: renderer.render(rest, faces, eight, colors=colors), args.repeats, sync=sync)
    rows.append(("forward, 8 views batched (total)", batch_ms))
    rows.append(("  per view", batch_ms / 8))

    print(f"\n{'what':<42}{'ms (median)':>12}")
    for name, ms in rows:
        print(f"{name:<42}{ms:>12.2f}")

    args.out.mkdir(parents=True, exist_ok=True)
    views = orbit_cameras(4, 2.2, 0.0, (0.0, 0.0, -0.05), 60.0).to(device)[0:2]  # azimuth 0, 90
    light = torch.tensor([0.4, -1.0, 0.6], device=device)  # front-left-above: shows relief
    textured = renderer.render(rest, faces, views, colors=colors, light_dir=light)
    grey = renderer.render(rest, faces, views, light_dir=light)
    for i, azimuth in enumerate((0, 90)):
        save_png(textured.rgb[i], args.out / f"anny_height_colour_az{azimuth}.png")
        save_png(grey.rgb[i], args.out / f"anny_grey_az{azimuth}.png")
    print(f"\nsaved check images to {args.out}")


if __name__ == "__main__":
    main()
