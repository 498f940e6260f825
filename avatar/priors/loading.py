"""Which prior the stages use: the project's own (trained on CMU mocap, shipped in
``avatar/priors/weights/``) unless the config points at a licensed original."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from avatar.priors.codebook import WEIGHTS_DIR, PoseCodebook, load_pose_codebook
from avatar.priors.motion_codebook import MotionCodebook, read_motion_codebook
from avatar.priors.motion_vae import MotionVAE, MotionVAEConfig, load_avatarclip_motion_vae
from avatar.priors.vposer import VPoser, VPoserConfig, load_vposer_checkpoint


@dataclass
class PriorConfig:
    pose_prior: str = ""  # project pose VAE weights; empty: avatar/priors/weights/pose_prior.pt
    vposer_path: str = ""  # a VPoser v2 release (V02_05 folder or .ckpt); replaces pose_prior
    motion_prior: str = ""  # project motion VAE weights; empty: avatar/priors/weights/motion_vae.pt
    motion_vae_path: str = ""  # AvatarCLIP's motion_vae.pth; replaces motion_prior
    codebook: str = ""  # pose codebook; empty: avatar/priors/weights/pose_codebook.npz
    motion_codebook: str = ""  # real mocap clips; empty: avatar/priors/weights/motion_codebook.npz


# Buffers that are constants of the architecture (sinusoidal tables): rebuilt, never shipped.
_CONSTANT_BUFFERS = ("pos_encoder.pe",)


def pack_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What a shipped weights file stores: float16 parameters, no constant tables (it halves the
    motion VAE to ~15 MB; the report script measures the shipped, packed weights)."""
    return {
        k: (v.detach().cpu().half() if v.is_floating_point() else v.detach().cpu())
        for k, v in state.items()
        if not k.endswith(_CONSTANT_BUFFERS)
    }


def unpack_into(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a packed state dict strictly, constant tables taken from the freshly built model."""
    full = model.state_dict()
    missing = [k for k in full if k not in state and not k.endswith(_CONSTANT_BUFFERS)]
    unexpected = [k for k in state if k not in full]
    if missing or unexpected:
        raise ValueError(f"weights do not match {type(model).__name__}: missing {missing}, unexpected {unexpected}")
    model.load_state_dict({k: state[k].to(v.dtype) if k in state else v for k, v in full.items()})


def _read_project_weights(path: Path, what: str, stage: str) -> dict:
    if not path.is_file():
        raise FileNotFoundError(
            f"{what} weights {path} not found. Train them with `python train.py stage={stage} "
            "stage.publish=true` (from ../shared/mocap, or stage.mocap_root=<your CMU/AMASS folder>)."
        )
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not {"config", "state_dict"} <= set(payload):
        raise ValueError(f"{path} is not a project {what} file (needs 'config' and 'state_dict')")
    return payload


def load_pose_prior(cfg: PriorConfig | None = None) -> VPoser:
    """The pose VAE, frozen, in eval mode."""
    cfg = cfg or PriorConfig()
    if cfg.vposer_path:
        return load_vposer_checkpoint(cfg.vposer_path)
    payload = _read_project_weights(Path(cfg.pose_prior or WEIGHTS_DIR / "pose_prior.pt"), "pose prior", "train_pose_prior")
    model = VPoser(VPoserConfig(**payload["config"]))
    unpack_into(model, payload["state_dict"])
    return model.eval().requires_grad_(False)


def load_motion_prior(cfg: PriorConfig | None = None) -> MotionVAE:
    """The motion VAE, frozen, in eval mode (its config says how many joints its features hold)."""
    cfg = cfg or PriorConfig()
    if cfg.motion_vae_path:
        return load_avatarclip_motion_vae(cfg.motion_vae_path)
    payload = _read_project_weights(Path(cfg.motion_prior or WEIGHTS_DIR / "motion_vae.pt"), "motion prior", "train_motion_vae")
    model = MotionVAE(MotionVAEConfig(**payload["config"]))
    unpack_into(model, payload["state_dict"])
    return model.eval().requires_grad_(False)


def load_codebook(cfg: PriorConfig | None = None) -> PoseCodebook:
    cfg = cfg or PriorConfig()
    return load_pose_codebook(cfg.codebook or None)


def load_motion_codebook(cfg: PriorConfig | None = None) -> MotionCodebook:
    """The motion codebook (the motion stage's ``retrieval`` generator)."""
    cfg = cfg or PriorConfig()
    return read_motion_codebook(cfg.motion_codebook or None)
