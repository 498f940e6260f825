"""AMASS / SMPL motion files (``.npz`` with ``poses``, ``trans``, ``mocap_framerate``): the same
canonical form as retargeted CMU clips, so users holding AMASS train the same priors.

AMASS stores SMPL(-H/-X) parameters in a Z-up world, which is exactly the canonical
convention; the first 22 joint rotations are the canonical ones. ``trans`` is SMPL's
translation parameter, applied after the root rotation about the pelvis, so the pelvis sits at
``trans + J0`` with J0 the pelvis of the (shaped) template; we add the neutral template's J0
when reading and subtract it when writing (:func:`write_amass_npz`), so files round-trip.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from avatar.body.skeleton import NUM_JOINTS
from avatar.mocap.retarget import CanonicalMotion, motion_arrays, resample
from avatar.mocap.types import MocapFormatError
from avatar.utils.files import InputFileError, load_npz
from avatar.utils.io import atomic_path

# Pelvis of SMPL's neutral template (metres, to about a centimetre; SMPL rotates about it).
# Only the absolute height of the root depends on it; priors use its velocities.
SMPL_NEUTRAL_PELVIS = np.array([0.0, -0.22, 0.03])
# SMPL's 24 joints: the 22 canonical ones, then the two hands (not part of the canonical skeleton).
SMPL_NUM_JOINTS = 24
AMASS_NUM_BETAS = 16
GENDERS = ("neutral", "male", "female")


def read_amass_npz(path: str | Path, fps: float | None = 30.0, key: str = "stage.mocap_root") -> CanonicalMotion:
    """An AMASS/SMPL ``.npz`` as a canonical motion (resampled to ``fps``; None keeps its rate).
    Errors are :class:`MocapFormatError` naming the file and ``key``, the config key that led to it."""
    path = Path(path)
    what = "an AMASS/SMPL motion (.npz with 'poses', 'trans' and 'mocap_framerate')"
    try:
        data = load_npz(path, key, what, only=("poses", "trans", "mocap_framerate", "mocap_frame_rate"))
    except (InputFileError, FileNotFoundError) as err:
        raise MocapFormatError(str(err)) from err.__cause__
    keys = set(data)
    missing = {"poses", "trans"} - keys
    if missing:
        raise MocapFormatError(
            f"{path} (`{key}`) is not an AMASS motion: an AMASS file needs 'poses' and 'trans'; "
            f"missing {sorted(missing)}"
        )
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


def write_amass_npz(path: str | Path, motion: CanonicalMotion, gender: str = "neutral") -> Path:
    """Write ``motion`` as an AMASS-style SMPL ``.npz`` (for tools that read AMASS/SMPL motion).

    Keys: ``poses`` (T, 72) axis-angle of SMPL's 24 joints (the 22 canonical ones, then the two
    hands at zero), ``trans`` (T, 3) SMPL's translation parameter (the pelvis minus
    `SMPL_NEUTRAL_PELVIS`, the inverse of :func:`read_amass_npz`'s convention, so the pelvis is
    where ``motion.transl`` says for a neutral body), ``mocap_framerate``, ``gender`` and
    ``betas`` (16 zeros: the canonical skeleton has no shape). Stored as float64, so
    ``read_amass_npz(path, fps=None)`` gives the motion back exactly (to float32).
    """
    rotations, transl, fps = motion_arrays(motion)
    if gender not in GENDERS:
        raise ValueError(f"gender must be one of {GENDERS}, got {gender!r}")
    poses = np.zeros((len(rotations), SMPL_NUM_JOINTS * 3))
    poses[:, : NUM_JOINTS * 3] = rotations.reshape(len(rotations), NUM_JOINTS * 3)
    arrays = {
        "poses": poses,
        "trans": transl - SMPL_NEUTRAL_PELVIS,
        "mocap_framerate": np.array(fps),
        "gender": np.array(gender),
        "betas": np.zeros(AMASS_NUM_BETAS),
    }
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a file object: numpy adds no suffix
        np.savez(f, **arrays)
    return path
