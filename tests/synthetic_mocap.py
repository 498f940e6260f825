"""Small synthetic mocap folders for the prior tests: SMPL-named BVH files (Y-up, centimetres)
of simple periodic motions around the named canonical poses, one subject per file name."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import roma
import torch
from scipy.spatial.transform import Rotation

from avatar.body.skeleton import JOINT_NAMES, PARENTS, TEMPLATE_JOINTS_BODY_FRAME, CanonicalPose, named_pose
from avatar.mocap.retarget import SKELETON_FAMILIES

# A typical BVH's axes (Y up, the body facing +Z) to the canonical world: Rx(90).
FILE_TO_CANONICAL = roma.rotvec_to_rotmat(torch.tensor([math.pi / 2, 0.0, 0.0], dtype=torch.float64))


def oscillating_motion(base: str, frames: int, fps: float, seed: int) -> CanonicalPose:
    """A named pose with every joint swinging sinusoidally (amplitude ~15 degrees)."""
    gen = torch.Generator().manual_seed(seed)
    pose = named_pose(base, dtype=torch.float64)
    t = torch.arange(frames, dtype=torch.float64) / fps
    freq = 0.5 + torch.rand(22, 1, generator=gen, dtype=torch.float64)
    phase = 6.28 * torch.rand(22, 3, generator=gen, dtype=torch.float64)
    swing = 0.25 * torch.sin(2 * math.pi * freq[None] * t[:, None, None] + phase[None])
    swing[:, 0] = 0.0
    rotations = pose.rotations.expand(frames, -1, -1) + swing
    transl = torch.stack([0.5 * t, 0 * t, 0.9 + 0 * t], -1)
    return CanonicalPose(rotations, transl)


def write_bvh(path: Path, motion: CanonicalPose, fps: float) -> Path:
    names = [SKELETON_FAMILIES["smpl"][n] for n in JOINT_NAMES]
    joints = np.array(TEMPLATE_JOINTS_BODY_FRAME) * 100.0
    children = {j: [c for c, p in enumerate(PARENTS) if p == j] for j in range(22)}
    lines = ["HIERARCHY"]

    def emit(j: int, depth: int) -> None:
        pad = "  " * depth
        offset = joints[j] - joints[PARENTS[j]] if PARENTS[j] >= 0 else np.zeros(3)
        lines.append(f"{pad}{'ROOT' if j == 0 else 'JOINT'} {names[j]}")
        lines.append(f"{pad}{{")
        lines.append(f"{pad}  OFFSET {offset[0]:.4f} {offset[1]:.4f} {offset[2]:.4f}")
        channels = "6 Xposition Yposition Zposition" if j == 0 else "3"
        lines.append(f"{pad}  CHANNELS {channels} Zrotation Yrotation Xrotation")
        for c in children[j]:
            emit(c, depth + 1)
        if not children[j]:
            lines.extend([f"{pad}  End Site", f"{pad}  {{", f"{pad}    OFFSET 0 5 0", f"{pad}  }}"])
        lines.append(f"{pad}}}")

    emit(0, 0)
    local = motion.rotmats().double().clone()
    local[:, 0] = FILE_TO_CANONICAL.T @ local[:, 0]
    root = motion.transl.double() @ FILE_TO_CANONICAL * 100.0
    order = []  # BVH lists channels depth-first, the order emit() wrote the joints in

    def walk(j: int) -> None:
        order.append(j)
        for c in children[j]:
            walk(c)

    walk(0)
    euler = (
        Rotation.from_matrix(local.reshape(-1, 3, 3).numpy()).as_euler("ZYX", degrees=True).reshape(len(local), 22, 3)
    )
    lines += ["MOTION", f"Frames: {len(local)}", f"Frame Time: {1 / fps:.6f}"]
    for f in range(len(local)):
        values = list(root[f].numpy()) + [a for j in order for a in euler[f, j]]
        lines.append(" ".join(f"{v:.5f}" for v in values))
    path.write_text("\n".join(lines) + "\n")
    return path


def write_corpus(
    folder: Path, subjects: int = 4, clips_per_subject: int = 2, seconds: float = 4.0, fps: float = 60.0
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    bases = ["walk_stride", "arms_raised", "squat", "kick", "a_pose", "bend_forward"]
    for s in range(1, subjects + 1):
        for c in range(1, clips_per_subject + 1):
            motion = oscillating_motion(bases[(s + c) % len(bases)], int(seconds * fps), fps, seed=s * 10 + c)
            write_bvh(folder / f"{s:02d}_{c:02d}.bvh", motion, fps)
    return folder
