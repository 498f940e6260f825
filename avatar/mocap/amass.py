"""AMASS / SMPL motion files (``.npz`` with ``poses``, ``trans``, ``mocap_framerate``): the same
canonical form as retargeted CMU clips, so users holding AMASS train the same priors.

AMASS stores SMPL(-H/-X) parameters in a Z-up world, which is exactly the canonical
convention; the first 22 joint rotations are the canonical ones. ``trans`` is SMPL's
translation parameter, applied after the root rotation about the pelvis, so the pelvis sits at
``trans + J0`` with J0 the pelvis of the (shaped) template; we add the neutral template's J0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from avatar.body.skeleton import NUM_JOINTS
from avatar.mocap.retarget import CanonicalMotion, resample
from avatar.mocap.types import MocapFormatError

# Pelvis of SMPL's neutral template (metres, to about a centimetre; SMPL rotates about it).
# Only the absolute height of the root depends on it; priors use its velocities.
SMPL_NEUTRAL_PELVIS = np.array([0.0, -0.22, 0.03])


def read_amass_npz(path: str | Path, fps: float | None = 30.0) -> CanonicalMotion:
    path = Path(path)
    try:
        data = np.load(path, allow_pickle=False)
        keys = set(data.files)
    except (OSError, ValueError) as err:
        raise MocapFormatError(f"{path}: not a readable .npz file ({err})") from err
    missing = {"poses", "trans"} - keys
    if missing:
        raise MocapFormatError(f"{path}: an AMASS file needs 'poses' and 'trans'; missing {sorted(missing)}")
    poses, trans = np.asarray(data["poses"], dtype=np.float64), np.asarray(data["trans"], dtype=np.float64)
    if poses.ndim != 2 or poses.shape[1] < NUM_JOINTS * 3 or poses.shape[1] % 3:
        raise MocapFormatError(f"{path}: 'poses' must be (T, 3*J) axis-angle with J >= 22, got {poses.shape}")
    if trans.shape != (poses.shape[0], 3):
        raise MocapFormatError(f"{path}: 'trans' must be ({poses.shape[0]}, 3), got {trans.shape}")
    rate_key = "mocap_framerate" if "mocap_framerate" in keys else "mocap_frame_rate"
    if rate_key not in keys:
        raise MocapFormatError(f"{path}: no 'mocap_framerate' (or 'mocap_frame_rate') entry")
    rotations = torch.from_numpy(poses[:, : NUM_JOINTS * 3].reshape(-1, NUM_JOINTS, 3)).float()
    transl = torch.from_numpy(trans + SMPL_NEUTRAL_PELVIS).float()
    motion = CanonicalMotion(rotations, transl, float(data[rate_key]), source=str(path))
    return resample(motion, fps) if fps else motion
