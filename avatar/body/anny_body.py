"""Anny (NAVER, Apache-2.0 code, CC0 data): the default, free body model.

Anny's rest is an A-pose with its own bone frames. To follow a canonical pose we drive every
Anny bone with a *world* orientation (Anny's ``world-orient`` parameterisation): the bone takes
the world rotation of the canonical joint that owns it, applied after a fixed per-joint
calibration that turns Anny's A-pose segment into the canonical T-pose direction. A canonical
pose therefore produces the same bone directions on Anny as on SMPL (tested).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from avatar.body.base import BODY_MODELS, BodyModel, BodyOutput
from avatar.body.skeleton import (
    BONE_CHILD,
    JOINT_INDEX,
    JOINT_NAMES,
    NUM_JOINTS,
    CanonicalPose,
    align_vectors,
    template_joints_world,
    world_deltas,
)
from avatar.utils.paths import cache_dir
from avatar.utils.warp_setup import init_warp

log = logging.getLogger(__name__)

PHENOTYPES = ("gender", "age", "muscle", "weight", "height", "proportions")


@dataclass
class AnnyBodyConfig:
    name: str = "anny"
    # "anny" (13,718 vertices) or a low-poly topology for tests: "notoes_collapse5pc" (615).
    topology: str = "anny"
    dtype: str = "float32"
    device: str = "cpu"
    # Anny's model cache (~50 MB after a one-time ~1 minute build); empty = <project cache>/anny.
    cache_dir: str = ""
    # Neutral phenotype (each in [0, 1]); gender 0 male .. 1 female, age 2/3 = young adult.
    gender: float = 0.5
    age: float = 0.6667
    muscle: float = 0.5
    weight: float = 0.5
    height: float = 0.5
    proportions: float = 0.5


# Canonical joint -> the Anny bones it drives (first bone's head = the joint's position).
# ".S" stands for both sides (left -> ".L").
_JOINT_BONES: dict[str, tuple[str, ...]] = {
    "pelvis": ("root", "pelvis.L", "pelvis.R", "spine05"),
    "hip": ("upperleg01.S", "upperleg02.S"),
    "knee": ("lowerleg01.S", "lowerleg02.S"),
    "ankle": ("foot.S",),
    "foot": ("toe1-1.S", "toe1-2.S", *(f"toe{i}-{j}.S" for i in range(2, 6) for j in (1, 2, 3))),
    "spine1": ("spine04", "spine03"),
    "spine2": ("spine02",),
    "spine3": ("spine01",),
    "neck": ("neck01", "neck02", "neck03"),
    "head": ("head", "eye.L", "eye.R"),
    "collar": ("clavicle.S", "shoulder01.S"),
    "shoulder": ("upperarm01.S", "upperarm02.S"),
    "elbow": ("lowerarm01.S", "lowerarm02.S"),
    "wrist": (
        "wrist.S",
        *(f"finger{i}-{j}.S" for i in range(1, 6) for j in (1, 2, 3)),
        *(f"metacarpal{i}.S" for i in range(1, 5)),
    ),
}
# Where the canonical foot joint sits on Anny: the ball of the foot (middle toe's first joint).
_FOOT_POSITION_BONE = "toe3-1.S"


def _joint_bone_names(joint: str) -> tuple[str, ...]:
    for prefix, suffix in (("left_", ".L"), ("right_", ".R")):
        if joint.startswith(prefix):
            return tuple(b.replace(".S", suffix) for b in _JOINT_BONES[joint[len(prefix) :]])
    return _JOINT_BONES[joint]


def _load_anny(cfg: AnnyBodyConfig):
    """Import anny with the project cache and build the model, telling the user about the
    one-time cache build (about a minute) instead of sitting silent."""
    init_warp()  # before anny initialises Warp with its own (verbose) settings
    cache = cfg.cache_dir or str(cache_dir("anny"))
    os.environ.setdefault("ANNY_CACHE_DIR", cache)
    import anny
    import anny.paths

    anny.paths.set_anny_cache_path(cache)
    first_use = not any(Path(cache).rglob("*.safetensors"))
    if first_use:
        log.warning(
            "Building Anny's model cache in %s (one time, about a minute; set "
            "body.cache_dir or $AVATAR_CACHE_DIR to move it)...",
            cache,
        )
    start = time.perf_counter()
    model = anny.Anny(rig="anny", topology=cfg.topology)
    if first_use:
        log.warning("Anny's model cache built in %.0f s", time.perf_counter() - start)
    return model


@BODY_MODELS.register("anny")
class AnnyBody(BodyModel):
    name = "anny"
    shape_names = PHENOTYPES

    def __init__(self, cfg: AnnyBodyConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or AnnyBodyConfig()
        self.cfg = cfg
        dtype = getattr(torch, cfg.dtype)
        model = _load_anny(cfg).to(device=cfg.device, dtype=dtype)
        if tuple(model.phenotype_labels) != PHENOTYPES:
            raise RuntimeError(f"Unexpected Anny phenotypes {model.phenotype_labels}")
        self.anny = model
        labels = list(model.bone_labels)
        bone_index = {name: i for i, name in enumerate(labels)}

        # Every Anny bone belongs to the canonical joint that drives it.
        owner = torch.full((len(labels),), -1, dtype=torch.long)
        for j, joint in enumerate(JOINT_NAMES):
            for bone in _joint_bone_names(joint):
                owner[bone_index[bone]] = j
        missing = [labels[i] for i in range(len(labels)) if owner[i] < 0]
        if missing:
            raise RuntimeError(f"Anny bones without a canonical joint: {missing}")
        self.register_buffer("bone_owner", owner, persistent=False)
        # Position of each canonical joint: the head of the first bone it owns (foot: ball).
        position_bones = []
        for joint in JOINT_NAMES:
            if joint.endswith("_foot"):
                side = ".L" if joint.startswith("left") else ".R"
                position_bones.append(bone_index[_FOOT_POSITION_BONE.replace(".S", side)])
            else:
                position_bones.append(bone_index[_joint_bone_names(joint)[0]])
        self.register_buffer("joint_bone", torch.tensor(position_bones), persistent=False)

        self.register_buffer("faces", model.get_triangular_faces().to(cfg.device).long(), persistent=False)
        # Skinning weights folded from Anny's bones onto the canonical joints.
        weights = model.vertex_bone_weights.to(dtype)
        joint_of_bone = owner.to(cfg.device)[model.vertex_bone_indices.long()]
        folded = torch.zeros(weights.shape[0], NUM_JOINTS, dtype=dtype, device=cfg.device)
        folded.scatter_add_(1, joint_of_bone, weights)
        self.register_buffer("skinning_weights", folded / folded.sum(1, keepdim=True), persistent=False)
        self._fixed_shape_cache: dict = {}
        self.register_buffer(
            "neutral_shape",
            torch.tensor([[getattr(cfg, p) for p in PHENOTYPES]], dtype=dtype, device=cfg.device),
            persistent=False,
        )

    def default_shape(self, batch_size: int = 1) -> torch.Tensor:
        return self.neutral_shape.expand(batch_size, -1).clone()

    def _rest(self, shape: torch.Tensor) -> dict[str, torch.Tensor]:
        phenotypes = {name: shape[:, i] for i, name in enumerate(PHENOTYPES)}
        coeffs = self.anny._get_phenotype_blendshape_coefficients(
            *self.anny.get_tensor_inputs(None, phenotypes, None, None)[1:]
        )
        return self.anny.get_rest_model(coeffs)

    def _calibration(self, rest_joints: torch.Tensor) -> torch.Tensor:
        """Per canonical joint, the world rotation (B, 22, 3, 3) turning Anny's rest segment
        direction into the canonical T-pose direction (minimal rotation: no added twist)."""
        batch = rest_joints.shape[0]
        calib = torch.eye(3, dtype=rest_joints.dtype, device=rest_joints.device).repeat(batch, NUM_JOINTS, 1, 1)
        template = template_joints_world(rest_joints.dtype, rest_joints.device)
        for joint, child in BONE_CHILD.items():
            j, c = JOINT_INDEX[joint], JOINT_INDEX[child]
            src = torch.nn.functional.normalize(rest_joints[:, c] - rest_joints[:, j], dim=-1)
            dst = torch.nn.functional.normalize(template[c] - template[j], dim=-1).expand_as(src)
            calib[:, j] = align_vectors(src, dst)
        return calib

    def _shape_terms(self, shape: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        """What a forward pass needs of the shape alone: Anny's rest model, the rest joints
        (root at the origin) and the calibration, for a batch of shapes (B, P)."""
        rest = self._rest(shape)
        root_head = rest["rest_bone_poses"][:, 0, :3, 3]
        rest_joints = rest["rest_bone_heads"][:, self.joint_bone] - root_head[:, None]
        return rest, rest_joints, self._calibration(rest_joints)

    def _shape_terms_of_one_fixed_shape(self, shape: torch.Tensor):
        """:meth:`_shape_terms` for a batch of one repeated shape that needs no gradient (the
        motion and pose stages pose one body every step): computed once per shape and kept, as the
        rest model and calibration are ~1/6 of a posed forward pass."""
        key = (shape.dtype, shape.device, shape[0].detach().cpu().numpy().tobytes())
        cached = self._fixed_shape_cache.get(key)
        if cached is None:
            with torch.no_grad():
                cached = self._shape_terms(shape[:1])
            self._fixed_shape_cache = {key: cached}  # the last shape only: callers alternate rarely
        rest, rest_joints, calibration = cached
        batch = shape.shape[0]
        rest = {k: v.expand(batch, *v.shape[1:]) for k, v in rest.items()}
        return rest, rest_joints.expand(batch, -1, -1), calibration.expand(batch, -1, -1, -1)

    def forward(self, shape: torch.Tensor | None = None, pose: CanonicalPose | None = None) -> BodyOutput:
        shape, pose = self._batch_inputs(shape, pose)
        if not shape.requires_grad and bool((shape == shape[:1]).all()):
            rest, rest_joints, calibration = self._shape_terms_of_one_fixed_shape(shape)
        else:
            rest, rest_joints, calibration = self._shape_terms(shape)
        rest_poses = rest["rest_bone_poses"]  # (B, bones, 4, 4)
        root_head = rest_poses[:, 0, :3, 3]

        # World rotation of each bone = canonical delta of its joint x calibration x rest frame.
        joint_rot = world_deltas(pose) @ calibration
        bone_rot = joint_rot[:, self.bone_owner] @ rest_poses[..., :3, :3]
        deltas = torch.zeros_like(rest_poses)
        deltas[..., :3, :3] = bone_rot
        deltas[..., 3, 3] = 1.0
        deltas[:, 0, :3, 3] = pose.transl  # the root bone's head (pelvis) lands at transl
        bone_transforms, bone_poses = self.anny.get_bone_transforms(
            deltas, rest_poses, pose_parameterization="world-orient"
        )
        vertices = self.anny.get_skinned_vertices(
            bone_transforms=bone_transforms,
            rest_vertices=rest["rest_vertices"].expand(bone_transforms.shape[0], -1, -1),
        )
        joints = bone_poses[:, self.joint_bone, :3, 3]
        return BodyOutput(
            vertices=vertices,
            joints=joints,
            rest_vertices=rest["rest_vertices"] - root_head[:, None],
            rest_joints=rest_joints,
        )
