"""VPoser v2 (the SMPL body-pose VAE of SMPL-X/human_body_prior), loadable from its release.

Mirrors ``class VPoser`` of nghorbani/human_body_prior, ``src/human_body_prior/models/
vposer_model.py`` (v2.0, "2020.12.12"; read at the forks gngdb/human_body_prior@6867cd7 and
nitin-ppnp/human_body_prior@2d38f8c, identical to upstream), the model AvatarCLIP loads in
``AvatarAnimate/models/pose_generation.py`` through ``human_body_prior.tools.model_loader.
load_model(..., remove_words_in_model_weights='vp_model.')``. Module indices, and so the
state-dict keys, are the original's::

    encoder_net: 0 flatten | 1 BatchNorm1d(63) | 2 Linear(63, 512) | 3 LeakyReLU |
                 4 BatchNorm1d(512) | 5 Dropout(0.1) | 6 Linear(512, 512) | 7 Linear(512, 512) |
                 8 NormalDistDecoder: .mu Linear(512, 32), .logvar Linear(512, 32)
    decoder_net: 0 Linear(32, 512) | 1 LeakyReLU | 2 Dropout(0.1) | 3 Linear(512, 512) |
                 4 LeakyReLU | 5 Linear(512, 126) | 6 ContinousRotReprDecoder

Quirks kept on purpose: the encoder's last two Linears have no activation between them, and
the ``logvar`` head is not a log-variance: the posterior's *scale* is ``softplus(logvar(h))``.

The input is SMPL's 21 body joints (1..21: hips to wrists, no root, no hands) as axis-angle,
63 numbers. Released weights (V02_05, trained on AMASS) ship as a PyTorch Lightning checkpoint
``V02_05/snapshots/V02_05_epoch=NN_val_loss=X.ckpt`` whose ``state_dict`` holds the model under
``vp_model.`` beside the trainer's body model (``bm_train.``); the loader keeps the former.
"""

from __future__ import annotations

import logging
import pickle
import re
import types
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import roma
import torch
import torch.nn.functional as F
from torch import nn

from avatar.body.skeleton import NUM_JOINTS, UPRIGHT
from avatar.utils.files import (
    InputFileError,
    check_file,
    file_identity,
    load_torch_file,
    starts_like_pickle,
    weights_record,
)

log = logging.getLogger(__name__)

NUM_BODY_JOINTS = 21  # SMPL joints 1..21: VPoser models the body without root and hands

VPOSER_CONFIG_KEY = "prior.vposer_path"
VPOSER_HELP = (
    "VPoser is licensed and not shipped: register at https://smpl-x.is.tue.mpg.de, download "
    "'VPoser v2.0' from its Download page, unpack it and point `prior.vposer_path` at the "
    "V02_05 folder (holding snapshots/*.ckpt; the highest epoch is used), at one of its .ckpt "
    "files, or at a VPoser state dict saved with torch.save. "
    "Example: `python train.py prior.vposer_path=/data/V02_05`. The .ckpt names hold '=', which "
    "Hydra's command line reads as an assignment: give the folder, or quote the file name for "
    "Hydra inside quotes for the shell: "
    "`python train.py 'prior.vposer_path=\"/data/V02_05/snapshots/V02_05_epoch=13_val_loss=0.03.ckpt\"'`"
)
VPOSER_WHAT = "a VPoser v2 checkpoint (a V02_05 snapshots/*.ckpt or a VPoser state dict)"


class PriorWeightsError(RuntimeError):
    """A prior's weights file is unreadable or does not match the architecture.

    The message names the file, the config key that points at it, and the offending keys.
    """


class PriorFileError(PriorWeightsError, InputFileError):
    """A prior's file is empty, truncated, random bytes or of another format (both a
    :class:`PriorWeightsError` and the project-wide :class:`InputFileError`)."""


# ---- Reading released checkpoints (shared with the other priors) ---------------------------


class _Unavailable:
    """Stands in for a pickled class whose module is not installed (see :func:`read_torch_file`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.__dict__["_state"] = state


class _TolerantUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            # One stub class per missing name, so objects used as dict keys stay distinct.
            return type(name, (_Unavailable,), {"__module__": module})


_tolerant_pickle = types.ModuleType("avatar_tolerant_pickle")
_tolerant_pickle.Unpickler = _TolerantUnpickler  # type: ignore[attr-defined]
_tolerant_pickle.load = pickle.load  # type: ignore[attr-defined]


def read_torch_file(path: Path, config_key: str, what: str = "", hint: str = "") -> Any:
    """``torch.load`` a released checkpoint onto the CPU.

    Tensors-only files load with ``weights_only=True``. Training checkpoints also pickle
    objects of their training stack (Lightning callbacks keyed by class, configs); for those the
    file is unpickled in full, with classes from uninstalled packages replaced by inert stubs,
    so a user holding the file needs neither Lightning nor the original repository. Only point
    the config at files from the sources named in the error messages: full unpickling runs
    code from the file. A file that is empty, truncated, random bytes or of another format
    never reaches full unpickling: it fails naming the file, ``config_key`` and the likely cause.
    """
    what = what or "a PyTorch checkpoint"
    file = Path(path).expanduser()
    try:
        check_file(file, config_key, what, hint)
        return load_torch_file(file, config_key, what, hint)
    except InputFileError as err:
        cause = err.__cause__
        # Only a real pickle (legacy format) or a torch zip archive goes on to full unpickling.
        if not (isinstance(cause, pickle.UnpicklingError) and (starts_like_pickle(file) or zipfile.is_zipfile(file))):
            raise PriorFileError(str(err)) from (cause or err)
    try:  # a real pickle that is not tensors-only: a training checkpoint, unpickled in full
        return torch.load(file, map_location="cpu", weights_only=False, pickle_module=_tolerant_pickle)
    except Exception as err:
        raise PriorFileError(
            f"`{config_key}={path}` could not be read as {what} ({type(err).__name__}: "
            f"{_first_line(err)}): it is truncated (an interrupted download or copy) or not a "
            f"checkpoint of the expected kind. {hint}".strip()
        ) from err


def _first_line(err: BaseException) -> str:
    lines = [line for line in str(err).strip().splitlines() if "weights_only" not in line]
    return lines[0][:200] if lines else type(err).__name__


def extract_state_dict(obj: Any, path: Path, config_key: str) -> dict[str, torch.Tensor]:
    """The tensors of a loaded checkpoint: a ``{'state_dict': ...}`` wrapper (Lightning, mmcv,
    AvatarCLIP), a plain state dict, or a pickled module. A DataParallel ``module.`` prefix is
    removed."""
    if isinstance(obj, nn.Module):
        state = obj.state_dict()
    elif isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        state = obj["state_dict"]
    elif isinstance(obj, Mapping) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state = obj
    else:
        found = sorted(map(str, obj)) if isinstance(obj, Mapping) else type(obj).__name__
        raise PriorWeightsError(
            f"{str(path)!r} (config key `{config_key}`) holds no state dict: expected a dict of "
            f"tensors, a dict with a 'state_dict' entry, or a module; found {found}"
        )
    state = dict(state)
    if state and all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def load_state_dict_strict(model: nn.Module, state: Mapping[str, torch.Tensor], path: Path, config_key: str) -> None:
    """``model.load_state_dict(state, strict=True)`` with an error that names every mismatch."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or wrong_shape:
        name = type(model).__name__
        lines = [f"{str(path)!r} (config key `{config_key}`) does not match {name}:"]
        for label, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                            ("shape mismatches", wrong_shape)):  # fmt: skip
            if keys:
                lines.append(f"  {label} ({len(keys)}): {', '.join(keys)}")
        raise PriorWeightsError("\n".join(lines))
    model.load_state_dict(state, strict=True)


# ---- The model --------------------------------------------------------------------------------


@dataclass
class VPoserConfig:
    latent_dim: int = 32  # human_body_prior's model_params.latentD
    num_neurons: int = 512  # model_params.num_neurons


class _NormalHead(nn.Module):
    """The original's ``NormalDistDecoder``: a diagonal Normal with scale ``softplus(logvar)``."""

    def __init__(self, num_in: int, latent_dim: int) -> None:
        super().__init__()
        self.mu = nn.Linear(num_in, latent_dim)
        self.logvar = nn.Linear(num_in, latent_dim)

    def forward(self, h: torch.Tensor) -> torch.distributions.Normal:
        return torch.distributions.Normal(self.mu(h), F.softplus(self.logvar(h)))


class _SixDToRotmat(nn.Module):
    """The original's ``ContinousRotReprDecoder``: (N, 6k) -> (N*k, 3, 3) by Gram-Schmidt.

    VPoser's 6 numbers per joint are a 3x2 matrix in row-major order (so the two vectors are
    the *interleaved* entries 0,2,4 and 1,3,5), and the orthonormal vectors become the
    rotation's *columns*. (AvatarCLIP's motion VAE uses a different 6D layout.)
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.reshape(-1, 3, 2)
        b1 = F.normalize(m[..., 0], dim=-1)
        a2 = m[..., 1]
        b2 = F.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
        return torch.stack([b1, b2, torch.cross(b1, b2, dim=-1)], dim=-1)


class VPoser(nn.Module):
    """VPoser v2: 63-d SMPL body pose (axis-angle) <-> 32-d latent with a N(0, I) prior."""

    def __init__(self, config: VPoserConfig | None = None) -> None:
        super().__init__()
        self.config = config or VPoserConfig()
        n, latent = self.config.num_neurons, self.config.latent_dim
        n_in = NUM_BODY_JOINTS * 3
        self.encoder_net = nn.Sequential(
            nn.Flatten(1), nn.BatchNorm1d(n_in), nn.Linear(n_in, n), nn.LeakyReLU(),
            nn.BatchNorm1d(n), nn.Dropout(0.1), nn.Linear(n, n), nn.Linear(n, n),
            _NormalHead(n, latent),
        )  # fmt: skip
        self.decoder_net = nn.Sequential(
            nn.Linear(latent, n), nn.LeakyReLU(), nn.Dropout(0.1), nn.Linear(n, n),
            nn.LeakyReLU(), nn.Linear(n, NUM_BODY_JOINTS * 6), _SixDToRotmat(),
        )  # fmt: skip

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    def encode(self, body_pose: torch.Tensor) -> torch.distributions.Normal:
        """Posterior q(z | pose) for body poses (B, 63) or (B, 21, 3), axis-angle."""
        return self.encoder_net(body_pose)

    def decode(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """Body poses for latents (B, latent_dim): ``pose_body`` (B, 21, 3) axis-angle and
        ``pose_body_matrot`` (B, 21, 3, 3) (the original returns the matrices as (B, 21, 9))."""
        matrot = self.decoder_net(z).reshape(z.shape[0], NUM_BODY_JOINTS, 3, 3)
        return {"pose_body": roma.rotmat_to_rotvec(matrot), "pose_body_matrot": matrot}

    def forward(self, body_pose: torch.Tensor) -> dict[str, Any]:
        """Encode, draw z with the reparameterisation trick, decode (as the original's forward):
        the decoded poses plus ``q_z``, ``q_z_sample``, ``poZ_body_mean`` and ``poZ_body_std``."""
        q_z = self.encode(body_pose)
        z = q_z.rsample()
        out: dict[str, Any] = self.decode(z)
        out.update(q_z=q_z, q_z_sample=z, poZ_body_mean=q_z.mean, poZ_body_std=q_z.scale)
        return out

    def sample(self, num_poses: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Decode ``num_poses`` latents drawn from the prior N(0, I).

        Unlike the original's ``sample_poses`` this leaves the train/eval mode alone; call
        ``eval()`` first for deterministic decoding (the decoder has dropout).
        """
        weight = self.decoder_net[0].weight
        z = torch.randn(num_poses, self.latent_dim, generator=generator, dtype=weight.dtype,
                        device=weight.device)  # fmt: skip
        return self.decode(z)


# ---- Canonical poses <-> VPoser's body pose ----------------------------------------------------


def canonical_to_vposer(rotations: torch.Tensor) -> torch.Tensor:
    """Canonical rotations (..., 22, 3) -> VPoser's body pose (..., 63): joints 1..21."""
    if rotations.shape[-2:] != (NUM_JOINTS, 3):
        raise ValueError(f"expected canonical rotations (..., {NUM_JOINTS}, 3), got {tuple(rotations.shape)}")
    return rotations[..., 1:, :].reshape(*rotations.shape[:-2], NUM_BODY_JOINTS * 3)


def vposer_to_canonical(body_pose: torch.Tensor, root: torch.Tensor | None = None) -> torch.Tensor:
    """VPoser's body pose (..., 63) or (..., 21, 3) -> canonical rotations (..., 22, 3).

    ``root`` (..., 3) is joint 0's axis-angle; VPoser has none, so it defaults to ``UPRIGHT``
    (an upright body in the Z-up world, the orientation AvatarCLIP renders VPoser poses with).
    """
    if body_pose.shape[-1] == NUM_BODY_JOINTS * 3:
        body_pose = body_pose.reshape(*body_pose.shape[:-1], NUM_BODY_JOINTS, 3)
    if body_pose.shape[-2:] != (NUM_BODY_JOINTS, 3):
        raise ValueError(f"expected a VPoser body pose (..., 63) or (..., 21, 3), got {tuple(body_pose.shape)}")
    if root is None:
        root = body_pose.new_tensor(UPRIGHT)
    root = root.expand(*body_pose.shape[:-2], 3)
    return torch.cat([root[..., None, :], body_pose], dim=-2)


# ---- Loading the released weights -------------------------------------------------------------


def _epoch(ckpt: Path) -> int:
    match = re.search(r"epoch=(\d+)", ckpt.name)
    return int(match.group(1)) if match else -1


def resolve_vposer_checkpoint(path: str | Path) -> Path:
    """The weights file for ``prior.vposer_path``: the file itself, or for a released folder
    (``V02_05/``) the ``snapshots/*.ckpt`` of the highest epoch.

    human_body_prior picks the snapshot with the newest modification time, which after a
    download is arbitrary; V02_05 ships epochs 08 and 13, and the highest epoch is the final one.
    """
    if not str(path):
        raise FileNotFoundError(f"The VPoser prior needs `{VPOSER_CONFIG_KEY}`. {VPOSER_HELP}")
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(
            f"VPoser weights {str(p)!r} (config key `{VPOSER_CONFIG_KEY}`) do not exist. {VPOSER_HELP}"
        )
    if p.is_file():
        return p
    snapshots = sorted((p / "snapshots").glob("*.ckpt"), key=lambda c: (_epoch(c), c.name))
    if not snapshots:
        raise FileNotFoundError(
            f"No snapshots/*.ckpt under {str(p)!r} (config key `{VPOSER_CONFIG_KEY}`). {VPOSER_HELP}"
        )
    return snapshots[-1]


def load_vposer_checkpoint(path: str | Path) -> VPoser:
    """A frozen VPoser in eval mode from released (or project-trained) weights.

    ``path``: the V02_05 folder, a Lightning ``.ckpt`` (keys under ``vp_model.``; the trainer's
    other entries are ignored), or a plain VPoser state dict. Sizes are read from the weights.
    """
    file = resolve_vposer_checkpoint(path)
    state = extract_state_dict(
        read_torch_file(file, VPOSER_CONFIG_KEY, VPOSER_WHAT, VPOSER_HELP), file, VPOSER_CONFIG_KEY
    )
    prefix = "vp_model."
    if any(k.startswith(prefix) for k in state):
        state = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
    config = VPoserConfig()
    if "encoder_net.8.mu.weight" in state and "encoder_net.2.weight" in state:
        config = VPoserConfig(
            latent_dim=state["encoder_net.8.mu.weight"].shape[0],
            num_neurons=state["encoder_net.2.weight"].shape[0],
        )
    model = VPoser(config)
    load_state_dict_strict(model, state, file, VPOSER_CONFIG_KEY)
    architecture = f"VPoser v2 (latent {config.latent_dim}, {config.num_neurons} neurons)"
    log.info("Pose prior: %s loaded from %s (%s)", architecture, file_identity(file), VPOSER_CONFIG_KEY)
    model.loaded_weights = weights_record(file, architecture, VPOSER_CONFIG_KEY)
    return model.eval().requires_grad_(False)
