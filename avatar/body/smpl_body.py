"""SMPL through `smplx`, from model files the user supplies (SMPL is licensed; never shipped).

The canonical skeleton *is* SMPL's body skeleton, so a canonical pose feeds SMPL directly:
joint 0 is ``global_orient``, joints 1-21 are ``body_pose`` (SMPL's two hand joints stay at
rest), and the pelvis is moved to ``pose.transl``.
"""

from __future__ import annotations

import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from avatar.body.base import BODY_MODELS, BodyModel, BodyOutput
from avatar.body.skeleton import NUM_JOINTS, CanonicalPose

SMPL_HELP = (
    "SMPL is licensed and not shipped: register at https://smpl.is.tue.mpg.de, download "
    "'SMPL for Python', and point `body.model_path` at either the .pkl file or a folder laid "
    "out as smplx expects (<folder>/smpl/SMPL_NEUTRAL.pkl, SMPL_MALE.pkl, SMPL_FEMALE.pkl) or "
    "holding the release's files (basicmodel_neutral_lbs_10_207_0_v1.1.0.pkl, basicmodel_m_..., "
    "basicModel_f_lbs_10_207_0_v1.0.0.pkl, ...; also in a models/ subfolder). "
    "Example: python train.py body=smpl body.model_path=/data/body_models"
)
CONVERT_COMMAND = "python -m avatar.body.convert_smpl"
# The release's names: v1.1.0 basicmodel_{neutral,m,f}_lbs_10_207_0_v1.1.0.pkl, v1.0.0 basicModel_...
_RELEASE_GENDER = {"neutral": "neutral", "m": "male", "f": "female"}
_RELEASE_NAME = re.compile(r"^basicmodel_(neutral|m|f)_lbs_10_207_0_v(\d+)\.(\d+)\.(\d+)\.pkl$", re.IGNORECASE)


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
        release = release_file(path, gender)
        if release is not None:
            return release
        raise BodyModelFileError(
            f"No SMPL_{gender.upper()}.pkl under body.model_path={model_path} "
            f"(looked for {', '.join(str(c) for c in candidates)}, and for the release's "
            f"basicmodel_{_release_code(gender)}_lbs_10_207_0_v1.*.pkl there and in smpl/, models/, "
            f"smpl/models/). {SMPL_HELP}"
        )
    if not path.is_file():
        raise BodyModelFileError(f"body.model_path={model_path} does not exist. {SMPL_HELP}")
    return path


def _release_code(gender: str) -> str:
    return {"male": "m", "female": "f"}.get(gender, gender)


def release_file(folder: Path, gender: str) -> Path | None:
    """The SMPL release's own file for ``gender`` under ``folder`` (itself, ``smpl/``, ``models/``
    or ``smpl/models/``, as the release zips unpack), the newest version first; None if none."""
    found = []
    for sub in (folder, folder / "smpl", folder / "models", folder / "smpl" / "models"):
        if not sub.is_dir():
            continue
        for candidate in sub.iterdir():
            match = _RELEASE_NAME.match(candidate.name)
            if match and candidate.is_file() and _RELEASE_GENDER[match.group(1).lower()] == gender:
                found.append((tuple(int(v) for v in match.groups()[1:]), candidate))
    return max(found, key=lambda item: item[0])[1] if found else None


def _chumpy_failure(err: BaseException) -> bool:
    """Whether unpickling failed for want of a working chumpy (absent, or failing to import on
    current numpy: chumpy 0.70 imports ``numpy.bool``)."""
    if "chumpy" in str(err):
        return True
    tb = err.__traceback__
    while tb is not None:
        if "chumpy" in tb.tb_frame.f_code.co_filename:
            return True
        tb = tb.tb_next
    return False


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
        except (ImportError, AttributeError) as err:
            if not _chumpy_failure(err):
                raise BodyModelFileError(f"{smpl_file} is not a valid SMPL model file: {err!r}") from err
            # The SMPL releases pickle chumpy arrays; chumpy does not import on current numpy.
            raise BodyModelFileError(
                f"Could not unpickle {smpl_file} (body.model_path): {err}. The SMPL release stores chumpy "
                "objects, and chumpy does not work with current numpy (`pip install chumpy` does not help). "
                f"Convert the file once, without chumpy: `{CONVERT_COMMAND} {smpl_file} "
                f"<folder>/smpl/SMPL_{cfg.gender.upper()}.pkl`, then set body.model_path=<folder>."
            ) from err
        except (pickle.UnpicklingError, EOFError, KeyError) as err:
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
