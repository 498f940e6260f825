"""The files the animation stages hand to each other (each stage reads the previous one's run
directory): candidate poses from the pose stage, a motion clip from the motion stage.

``poses.npz`` (pose stage -> motion stage):
    rotations (K, 22, 3) float32  canonical poses, root upright (``skeleton.UPRIGHT``), best first
    scores (K,) float32            the guidance score that ranked them
    source (K,) str                where each came from ("codebook 123", "direct", "latent")
    prompt, prompt_text            the motion sentence and the templated text that was scored

``motion.npz`` (motion stage -> animate / export):
    rotations (T, 22, 3) float32, transl (T, 3) float32 (pelvis, metres, Z-up), fps, prompt,
    generator (how it was made: latent | reconstruction | interpolation)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from avatar.body.skeleton import NUM_JOINTS, CanonicalPose
from avatar.mocap.retarget import CanonicalMotion
from avatar.utils.files import load_npz
from avatar.utils.io import atomic_path

POSES_FILE = "poses.npz"
MOTION_FILE = "motion.npz"


@dataclass
class CandidatePoses:
    rotations: torch.Tensor  # (K, 22, 3)
    scores: torch.Tensor  # (K,)
    source: list[str]
    prompt: str
    prompt_text: str

    def __len__(self) -> int:
        return self.rotations.shape[0]

    def poses(self) -> CanonicalPose:
        return CanonicalPose(self.rotations, torch.zeros(len(self), 3, dtype=self.rotations.dtype))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(
                fh, rotations=self.rotations.detach().cpu().float().numpy(),
                scores=self.scores.detach().cpu().float().numpy(), source=np.array(self.source),
                prompt=np.array(self.prompt), prompt_text=np.array(self.prompt_text),
            )  # fmt: skip
        return path


def _require(path: Path, what: str, stage: str, key: str) -> Path:
    if path.is_dir():
        path = path / what
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: `{key}` must be a {stage} run directory (or its {what}). "
            f"Make one with `python train.py stage={stage} ...`, or leave `{key}` empty."
        )
    return path


def load_candidates(path: str | Path, key: str = "stage.pose_dir") -> CandidatePoses:
    """Candidate poses from a pose-stage run directory or its ``poses.npz``."""
    path = _require(Path(path).expanduser(), POSES_FILE, "pose", key)
    what = f"a pose stage's {POSES_FILE}"
    hint = f"Rerun `python train.py stage=pose ...`, or point `{key}` at another pose run."
    data = load_npz(path, key, what, hint, keys=("rotations", "scores", "source", "prompt", "prompt_text"))
    rotations = torch.from_numpy(data["rotations"]).float()
    if rotations.ndim != 3 or rotations.shape[1:] != (NUM_JOINTS, 3) or len(rotations) == 0:
        raise ValueError(f"`{key}={path}`: rotations must be (K >= 1, {NUM_JOINTS}, 3), got {tuple(rotations.shape)}")
    return CandidatePoses(
        rotations=rotations, scores=torch.from_numpy(data["scores"]).float(),
        source=[str(s) for s in data["source"]], prompt=str(data["prompt"]), prompt_text=str(data["prompt_text"]),
    )  # fmt: skip


def save_motion(path: str | Path, motion: CanonicalMotion, prompt: str = "", generator: str = "") -> Path:
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(
            fh, rotations=motion.rotations.detach().cpu().float().numpy(),
            transl=motion.transl.detach().cpu().float().numpy(), fps=np.array(float(motion.fps)),
            prompt=np.array(prompt), generator=np.array(generator),
        )  # fmt: skip
    return path


def load_motion(path: str | Path, key: str = "stage.motion_dir") -> tuple[CanonicalMotion, dict]:
    """A motion clip from a motion-stage run directory or its ``motion.npz``; also returns
    ``{"prompt", "generator"}``."""
    path = _require(Path(path).expanduser(), MOTION_FILE, "motion", key)
    what = f"a motion stage's {MOTION_FILE}"
    hint = f"Rerun `python train.py stage=motion ...`, or point `{key}` at another motion run."
    data = load_npz(path, key, what, hint, keys=("rotations", "transl", "fps", "prompt", "generator"))
    rotations = torch.from_numpy(data["rotations"]).float()
    transl = torch.from_numpy(data["transl"]).float()
    if rotations.ndim != 3 or rotations.shape[1:] != (NUM_JOINTS, 3) or transl.shape != (len(rotations), 3):
        raise ValueError(f"`{key}={path}`: expected rotations (T, {NUM_JOINTS}, 3) and transl (T, 3)")
    motion = CanonicalMotion(rotations, transl, float(data["fps"]), source=str(path))
    return motion, {"prompt": str(data["prompt"]), "generator": str(data["generator"])}
