"""SMPL through `smplx`, from model files the user supplies (SMPL is licensed; never shipped).

The canonical skeleton *is* SMPL's body skeleton, so a canonical pose feeds SMPL directly:
joint 0 is ``global_orient``, joints 1-21 are ``body_pose`` (SMPL's two hand joints stay at
rest), and the pelvis is moved to ``pose.transl``.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import torch

from avatar.body.base import BODY_MODELS, BodyModel, BodyOutput
from avatar.body.skeleton import NUM_JOINTS, CanonicalPose

SMPL_HELP = (
    "SMPL is licensed and not shipped: register at https://smpl.is.tue.mpg.de, download "
    "'SMPL for Python', and point `body.model_path` at either the .pkl file or a folder laid "
    "out as smplx expects (<folder>/smpl/SMPL_NEUTRAL.pkl, SMPL_MALE.pkl, SMPL_FEMALE.pkl). "
    "Example: python train.py body=smpl body.model_path=/data/body_models"
)


class BodyModelFileError(FileNotFoundError):
    """A user-supplied body model file is missing or unreadable."""


@dataclass
class SmplBodyConfig:
    name: str = "smpl"
    model_path: str = ""  # folder (smplx layout) or a SMPL .pkl file; required
    gender: str = "neutral"  # neutral | male | female
    num_betas: int = 10
    dtype: str = "float32"
    device: str = "cpu"


def resolve_smpl_file(model_path: str, gender: str) -> Path:
    """The SMPL .pkl that smplx will read for ``model_path``/``gender``, or a clear error."""
    if not model_path:
        raise BodyModelFileError(f"body=smpl needs `body.model_path`. {SMPL_HELP}")
    path = Path(model_path).expanduser()
    if path.is_dir():
        # smplx.create looks in <folder>/smpl/; accept the folder that holds the .pkl too.
        candidates = [path / "smpl" / f"SMPL_{gender.upper()}.pkl", path / f"SMPL_{gender.upper()}.pkl"]
        for candidate in candidates:
            if candidate.is_file():
                return candidate
        raise BodyModelFileError(
            f"No SMPL_{gender.upper()}.pkl under body.model_path={model_path} "
            f"(looked for {', '.join(str(c) for c in candidates)}). {SMPL_HELP}"
        )
    if not path.is_file():
        raise BodyModelFileError(f"body.model_path={model_path} does not exist. {SMPL_HELP}")
    return path


@BODY_MODELS.register("smpl")
class SmplBody(BodyModel):
    name = "smpl"

    def __init__(self, cfg: SmplBodyConfig) -> None:
        super().__init__()
        import smplx

        self.cfg = cfg
        dtype = getattr(torch, cfg.dtype)
        smpl_file = resolve_smpl_file(cfg.model_path, cfg.gender)
        try:
            # smplx's own loader: a file path is read as is, whatever its name.
            model = smplx.SMPL(str(smpl_file), gender=cfg.gender, num_betas=cfg.num_betas, dtype=dtype)
        except ModuleNotFoundError as err:  # the original release pickles chumpy arrays
            raise BodyModelFileError(
                f"Could not unpickle {smpl_file}: {err}. The original SMPL release stores chumpy "
                "objects; `pip install chumpy`, or re-save the file with plain numpy arrays."
            ) from err
        except (pickle.UnpicklingError, EOFError, KeyError, AttributeError) as err:
            raise BodyModelFileError(f"{smpl_file} is not a valid SMPL model file: {err!r}") from err
        self.smpl = model.to(cfg.device)
        self.shape_names = tuple(f"beta{i}" for i in range(model.num_betas))
        self.register_buffer("faces", torch.as_tensor(model.faces.astype("int64"), device=cfg.device), persistent=False)
        # SMPL has 24 joints: its hand joints (22, 23) fold into the wrists (20, 21).
        weights = model.lbs_weights.to(cfg.device, dtype)
        folded = weights[:, :NUM_JOINTS].clone()
        folded[:, 20] += weights[:, 22]
        folded[:, 21] += weights[:, 23]
        self.register_buffer("skinning_weights", folded, persistent=False)

    def default_shape(self, batch_size: int = 1) -> torch.Tensor:
        return torch.zeros(batch_size, self.shape_dim, dtype=self.dtype, device=self.device)

    def forward(self, shape: torch.Tensor | None = None, pose: CanonicalPose | None = None) -> BodyOutput:
        shape, pose = self._batch_inputs(shape, pose)
        batch = shape.shape[0]
        hands = torch.zeros(batch, 6, dtype=self.dtype, device=self.device)
        out = self.smpl(
            betas=shape,
            global_orient=pose.rotations[:, 0],
            body_pose=torch.cat([pose.rotations[:, 1:].reshape(batch, -1), hands], dim=1),
            transl=torch.zeros(batch, 3, dtype=self.dtype, device=self.device),
        )
        joints = out.joints[:, :NUM_JOINTS]
        offset = pose.transl - joints[:, 0]
        rest = self.smpl(
            betas=shape,
            global_orient=CanonicalPose.rest(batch, self.dtype, self.device).rotations[:, 0],
            body_pose=torch.zeros(batch, 69, dtype=self.dtype, device=self.device),  # smplx's default is batch 1
            transl=torch.zeros(batch, 3, dtype=self.dtype, device=self.device),
        )
        rest_joints = rest.joints[:, :NUM_JOINTS]
        return BodyOutput(
            vertices=out.vertices + offset[:, None],
            joints=joints + offset[:, None],
            rest_vertices=rest.vertices - rest_joints[:, :1],
            rest_joints=rest_joints - rest_joints[:, :1],
        )
