"""Retarget mocap clips to the canonical skeleton and render them on Anny, to look at them.

    .venv/bin/python experiments/mocap/render_mocap.py CLIP.bvh [CLIP.amc ...] [--out outputs/mocap_check]

Each clip becomes <out>/<name>.mp4 (30 fps; the camera follows the body; the grey line is the
floor at z = 0 under the body).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from avatar.body.anny_body import AnnyBody, AnnyBodyConfig
from avatar.export.animation import render_motion_video
from avatar.mocap.amass import read_amass_npz
from avatar.mocap.asf_amc import read_amc
from avatar.mocap.bvh import read_bvh
from avatar.mocap.retarget import retarget
from avatar.render import MeshRenderConfig, MeshRenderer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clips", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("outputs/mocap_check"))
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--seconds", type=float, default=8.0, help="render at most this much of each clip")
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--topology", default="anny", help="Anny topology (notoes_collapse5pc: low poly)")
    args = parser.parse_args()
    body = AnnyBody(AnnyBodyConfig(topology=args.topology))
    renderer = MeshRenderer(MeshRenderConfig(height=args.size, width=args.size))
    for path in args.clips:
        if path.suffix == ".npz":
            motion = read_amass_npz(path, args.fps)
        else:
            motion = retarget(read_amc(path) if path.suffix == ".amc" else read_bvh(path), args.fps)
        poses = motion.poses()[: int(args.seconds * args.fps)]
        out = render_motion_video(body, poses, args.out / f"{path.stem}.mp4", args.fps, renderer)
        print(f"{path} -> {out} ({poses.batch_size} frames)")


if __name__ == "__main__":
    main()
