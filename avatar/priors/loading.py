"""Which prior the stages use: the project's own (trained on CMU mocap, shipped in
``avatar/priors/weights/``) unless the config points at a licensed original."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from avatar.priors.codebook import (
    AVATARCLIP_CODEBOOK_KEY,
    DEFAULT_CODEBOOK,
    WEIGHTS_DIR,
    PoseCodebook,
    load_avatarclip_codebook,
    load_pose_codebook,
)
from avatar.priors.motion_codebook import MotionCodebook, read_motion_codebook
from avatar.priors.motion_vae import MotionVAE, MotionVAEConfig, load_avatarclip_motion_vae
from avatar.priors.vposer import (
    VPOSER_CONFIG_KEY,
    VPOSER_HELP,
    VPoser,
    VPoserConfig,
    load_vposer_checkpoint,
    resolve_vposer_checkpoint,
)
from avatar.utils.files import InputFileError, file_identity, load_torch_file, weights_record

log = logging.getLogger(__name__)


@dataclass
class PriorConfig:
    pose_prior: str = ""  # project pose VAE weights; empty: avatar/priors/weights/pose_prior.pt
    vposer_path: str = ""  # a VPoser v2 release (V02_05 folder or .ckpt); replaces pose_prior
    motion_prior: str = ""  # project motion VAE weights; empty: avatar/priors/weights/motion_vae.pt
    motion_vae_path: str = ""  # AvatarCLIP's motion_vae.pth; replaces motion_prior
    codebook: str = ""  # pose codebook; empty: avatar/priors/weights/pose_codebook.npz
    # AvatarCLIP's data/codebook.pth (VPoser latents + CLIP embeddings); replaces codebook and
    # needs vposer_path (the latents decode with VPoser v2)
    avatarclip_codebook_path: str = ""
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


def _read_project_weights(path: Path, what: str, stage: str, key: str, original: str) -> dict:
    """A project weights file: ``{'config': ..., 'state_dict': ...}`` of tensors."""
    how = (
        f"Train them with `python train.py stage={stage} stage.publish=true` (from ../shared/mocap, "
        f"or stage.mocap_root=<your CMU/AMASS folder>), or leave `{key}` empty for the shipped weights."
    )
    if not path.is_file():
        raise FileNotFoundError(f"{what} weights `{key}={path}` not found. {how}")
    kind = f"a project {what} file (the output of stage={stage}: 'config' and 'state_dict')"
    hint = f"{original} {how}"
    payload = load_torch_file(path, key, kind, hint)
    if not isinstance(payload, Mapping) or not {"config", "state_dict"} <= set(payload):
        found = sorted(map(str, payload)) if isinstance(payload, Mapping) else type(payload).__name__
        raise InputFileError(f"`{key}={path}` holds {found}, not {kind}. {hint}")
    return payload


def _build_project_prior(cls, config_cls, payload: dict, path: Path, key: str, what: str):
    try:
        model = cls(config_cls(**payload["config"]))
        unpack_into(model, payload["state_dict"])
    except (TypeError, ValueError, RuntimeError) as err:
        raise InputFileError(
            f"`{key}={path}` does not hold {what} weights this code can build ({type(err).__name__}: "
            f"{str(err)[:300]}): retrain them with this version of the project."
        ) from err
    architecture = f"project {cls.__name__} (" + ", ".join(f"{k}={v}" for k, v in payload["config"].items()) + ")"
    log.info("%s: %s loaded from %s (%s)", what.capitalize(), architecture, file_identity(path), key)
    model.loaded_weights = weights_record(path, architecture, key)
    return model.eval().requires_grad_(False)


def load_pose_prior(cfg: PriorConfig | None = None) -> VPoser:
    """The pose VAE, frozen, in eval mode."""
    cfg = cfg or PriorConfig()
    if cfg.vposer_path:
        return load_vposer_checkpoint(cfg.vposer_path)
    path = Path(cfg.pose_prior or WEIGHTS_DIR / "pose_prior.pt").expanduser()
    payload = _read_project_weights(path, "pose prior", "train_pose_prior", "prior.pose_prior",
                                    "A VPoser v2 release goes to `prior.vposer_path`.")  # fmt: skip
    return _build_project_prior(VPoser, VPoserConfig, payload, path, "prior.pose_prior", "pose prior")


def load_motion_prior(cfg: PriorConfig | None = None) -> MotionVAE:
    """The motion VAE, frozen, in eval mode (its config says how many joints its features hold)."""
    cfg = cfg or PriorConfig()
    if cfg.motion_vae_path:
        return load_avatarclip_motion_vae(cfg.motion_vae_path)
    path = Path(cfg.motion_prior or WEIGHTS_DIR / "motion_vae.pt").expanduser()
    payload = _read_project_weights(path, "motion prior", "train_motion_vae", "prior.motion_prior",
                                    "AvatarCLIP's motion_vae.pth goes to `prior.motion_vae_path`.")  # fmt: skip
    return _build_project_prior(MotionVAE, MotionVAEConfig, payload, path, "prior.motion_prior", "motion prior")


def load_codebook(cfg: PriorConfig | None = None) -> PoseCodebook:
    """The pose codebook: AvatarCLIP's ``codebook.pth`` (VPoser latents decoded with
    ``prior.vposer_path``, with its CLIP embeddings) when ``prior.avatarclip_codebook_path`` is
    set, else the project's (``prior.codebook``, empty: the shipped one)."""
    cfg = cfg or PriorConfig()
    avatarclip = getattr(cfg, "avatarclip_codebook_path", "")
    if avatarclip:
        if not cfg.vposer_path:
            raise ValueError(
                f"`{AVATARCLIP_CODEBOOK_KEY}={avatarclip}` holds VPoser latents, which only the VPoser "
                f"release decodes: set `{VPOSER_CONFIG_KEY}` too. {VPOSER_HELP}"
            )
        return load_avatarclip_codebook(avatarclip, load_vposer_checkpoint(cfg.vposer_path))
    return load_pose_codebook(cfg.codebook or None)


def codebook_files(cfg: PriorConfig | None = None) -> list[Path]:
    """The files :func:`load_codebook` builds the pose codebook from (for cache keys)."""
    cfg = cfg or PriorConfig()
    avatarclip = getattr(cfg, "avatarclip_codebook_path", "")
    if avatarclip:
        files = [Path(avatarclip).expanduser()]
        if cfg.vposer_path:  # the VPoser that decodes its latents
            vposer = Path(cfg.vposer_path).expanduser()
            files.append(resolve_vposer_checkpoint(vposer) if vposer.is_dir() else vposer)
        return files
    return [Path(cfg.codebook).expanduser() if cfg.codebook else DEFAULT_CODEBOOK]


def load_motion_codebook(cfg: PriorConfig | None = None) -> MotionCodebook:
    """The motion codebook (the motion stage's ``retrieval`` generator)."""
    cfg = cfg or PriorConfig()
    return read_motion_codebook(cfg.motion_codebook or None)
