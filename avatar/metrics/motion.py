"""Motion metrics: pure functions of a clip (``CanonicalMotion``) or of its joint positions.

Units and definitions (joints are world positions, metres, Z up; ``fps`` frames per second):

* :func:`jerk`: mean magnitude of the third finite difference of joint positions, in m/s^3
  (``|x[t+3] - 3 x[t+2] + 3 x[t+1] - x[t]| * fps^3``, mean over joints and frames). A clip at
  constant velocity (or acceleration) has zero jerk; jittery motion has a lot.
* :func:`foot_skating`: mean horizontal speed (m/s) of the foot joints while in contact with
  the floor, and the fraction of (frame, foot) pairs in contact. Contact: the joint's height is
  within ``threshold`` of the lowest foot-joint height over the clip. A foot-joint step between
  frames t and t+1 counts when the joint is in contact at both. Default joints: SMPL's
  ``left_foot``/``right_foot`` (the toe bases, the lowest joints of a standing body; the ankles
  stand ~6 cm above them, so a flat standing foot would not count its ankle in contact).
* :func:`pose_prior_nll`: the pose prior's (VPoser architecture) negative log-likelihood of each
  frame's body pose, approximated by the Gaussian NLL of the posterior *mean* code under the
  prior N(0, I): ``0.5 * |mu(pose)|^2 + 0.5 * d * log(2 pi)`` (nats, d = 32 latent dims), mean
  over frames. Not an ELBO (no decoder term): it measures how far into the tails of the latent
  prior the encoder puts a pose. Contorted poses land far out; mocap poses near the centre.
* :func:`scorer_scores`: per-frame cosine similarity between the prompt and renders of frames
  (textureless, front view, each frame framed to fill the view) by the *scorer* model
  (``avatar.guidance.base.build_scorer``), never the model that guided the optimisation.
* :func:`delta`: mean absolute change per frame of the body joints' (1..21) local rotation
  matrices, ``mean |R[t+1] - R[t]|`` over entries, joints and frames: the quantity the motion
  stage's delta term rewards (AvatarCLIP's "delta" for livelier motion). 0 for a still clip.
* :func:`diversity`: mean distance (metres, mean over joints) between the pelvis-relative joint
  positions of every pair of frames: how many different poses the clip visits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import roma
import torch

from avatar.body.skeleton import JOINT_INDEX, CanonicalPose, forward_kinematics
from avatar.mocap.retarget import CanonicalMotion

FOOT_JOINTS: tuple[str, ...] = ("left_foot", "right_foot")


# ---- joints --------------------------------------------------------------------------------
@torch.no_grad()
def motion_joints(
    motion: CanonicalMotion, body=None, shape: torch.Tensor | None = None, chunk: int = 64
) -> torch.Tensor:
    """World joint positions (T, 22, 3) of a clip: on ``body`` (a BodyModel, default shape
    unless ``shape``) or, without a body, on the canonical template skeleton."""
    poses = motion.poses()
    if body is None:
        return forward_kinematics(poses)
    out = [
        body(shape, poses[i : i + chunk].to(body.device, body.dtype)).joints for i in range(0, poses.batch_size, chunk)
    ]
    return torch.cat(out).float().cpu()


@torch.no_grad()
def grounded_motion(
    motion: CanonicalMotion, body=None, shape: torch.Tensor | None = None, chunk: int = 64
) -> CanonicalMotion:
    """The clip shifted vertically (one offset for the whole clip) so its lowest point touches
    z = 0: the lowest mesh vertex on ``body``, or the lowest template joint without one."""
    poses = motion.poses()
    if body is None:
        lowest = forward_kinematics(poses)[..., 2].min()
    else:
        lowest = min(
            float(body(shape, poses[i : i + chunk].to(body.device, body.dtype)).vertices[..., 2].min())
            for i in range(0, poses.batch_size, chunk)
        )
    transl = motion.transl.clone()
    transl[:, 2] -= float(lowest)
    return CanonicalMotion(motion.rotations, transl, motion.fps, motion.source)


# ---- kinematic metrics ---------------------------------------------------------------------
def _check_joints(joints: torch.Tensor, min_frames: int, what: str) -> torch.Tensor:
    joints = torch.as_tensor(joints)
    if not joints.is_floating_point():
        joints = joints.float()
    if joints.ndim != 3 or joints.shape[-1] != 3:
        raise ValueError(f"{what}: joints must be (T, J, 3), got {tuple(joints.shape)}")
    if joints.shape[0] < min_frames:
        raise ValueError(f"{what} needs at least {min_frames} frames, got {joints.shape[0]}")
    return joints


def jerk(joints: torch.Tensor, fps: float) -> float:
    """Mean jerk magnitude (m/s^3) of joint positions (T >= 4, J, 3) sampled at ``fps``."""
    joints = _check_joints(joints, 4, "jerk")
    third = joints[3:] - 3 * joints[2:-1] + 3 * joints[1:-2] - joints[:-3]
    return float(third.norm(dim=-1).mean() * fps**3)


def foot_skating(
    joints: torch.Tensor, fps: float, threshold: float = 0.05, foot_joints: Sequence[str | int] = FOOT_JOINTS
) -> dict[str, float]:
    """``{"skate_speed": m/s, "contact_fraction": 0..1}`` of joints (T >= 2, 22, 3) (see the
    module docstring). ``skate_speed`` is 0 when no foot joint is in contact in two
    consecutive frames."""
    joints = _check_joints(joints, 2, "foot_skating")
    index = [JOINT_INDEX[j] if isinstance(j, str) else int(j) for j in foot_joints]
    feet = joints[:, index]  # (T, F, 3)
    height = feet[..., 2]
    contact = height <= height.min() + threshold  # (T, F)
    planted = contact[1:] & contact[:-1]
    speed = (feet[1:, :, :2] - feet[:-1, :, :2]).norm(dim=-1) * fps  # (T-1, F)
    skate = float(speed[planted].mean()) if planted.any() else 0.0
    return {"skate_speed": skate, "contact_fraction": float(contact.float().mean())}


def delta(rotations: torch.Tensor) -> float:
    """Mean absolute per-frame change of the body joints' rotation matrices (T >= 2, 22, 3)."""
    rotations = torch.as_tensor(rotations).float()
    if rotations.ndim != 3 or rotations.shape[1:] != (22, 3) or rotations.shape[0] < 2:
        raise ValueError(f"delta: rotations must be (T >= 2, 22, 3) axis-angle, got {tuple(rotations.shape)}")
    rotmats = roma.rotvec_to_rotmat(rotations[:, 1:])
    return float((rotmats[1:] - rotmats[:-1]).abs().mean())


def diversity(joints: torch.Tensor) -> float:
    """Mean over frame pairs of the mean per-joint distance (metres) of pelvis-relative joints."""
    joints = _check_joints(joints, 2, "diversity")
    rel = joints - joints[:, :1]
    t = rel.shape[0]
    dist = (rel[:, None] - rel[None]).norm(dim=-1).mean(-1)  # (T, T)
    return float(dist.sum() / (t * (t - 1)))


@torch.no_grad()
def pose_prior_nll(prior, rotations: torch.Tensor, reduce: bool = True) -> float | torch.Tensor:
    """Mean (or per-frame, ``reduce=False``) NLL in nats of the body poses of ``rotations``
    (N, 22, 3) under the pose prior: ``0.5 |mu|^2 + 0.5 d log(2 pi)`` of the posterior mean
    code ``mu`` of the VPoser-architecture ``prior`` (eval mode: its BatchNorm uses running
    statistics)."""
    rotations = torch.as_tensor(rotations).float()
    if rotations.ndim != 3 or rotations.shape[1:] != (22, 3):
        raise ValueError(f"pose_prior_nll: rotations must be (N, 22, 3) axis-angle, got {tuple(rotations.shape)}")
    if prior.training:
        raise ValueError("pose_prior_nll: put the pose prior in eval mode (BatchNorm statistics)")
    weight = next(prior.parameters())
    body_pose = rotations[:, 1:].reshape(len(rotations), -1).to(weight.device, weight.dtype)
    mu = prior.encode(body_pose).mean.float().cpu()
    nll = 0.5 * (mu**2).sum(-1) + 0.5 * mu.shape[-1] * math.log(2 * math.pi)
    return float(nll.mean()) if reduce else nll


# ---- rendering and text agreement ----------------------------------------------------------
def render_frames(
    body,
    vertices: torch.Tensor,
    renderer,
    azimuth_deg: float = 0.0,
    elevation_deg: float = 0.0,
    fov_deg: float = 60.0,
    margin: float = 1.15,
    silhouette: bool = False,
) -> torch.Tensor:
    """Textureless renders (N, 3, H, W) in [0, 1] of posed bodies (N, V, 3), one view each,
    every body framed to fill the view (camera distance from its bounding sphere x ``margin``).

    ``silhouette``: add a soft silhouette's gradient straight-through (the values are the
    ray-cast render's), so gradients also move the outline, not only the shading (as
    ``avatar.render.silhouette``)."""
    from avatar.render import framing_cameras

    cameras = framing_cameras(vertices, [azimuth_deg], elevation_deg, fov_deg, margin)
    out = renderer.render(vertices, body.faces, cameras)
    rgb = out.rgb.clamp(0.0, 1.0)
    if silhouette and vertices.requires_grad:
        from avatar.render.silhouette import with_silhouette_gradient

        rgb = with_silhouette_gradient(rgb, out.alpha, vertices, cameras)
    return rgb


def frame_indices(num_frames: int, frames: int | Sequence[int] | None) -> list[int]:
    """All frames (None), ``frames`` evenly spaced ones (an int), or the given indices."""
    if frames is None:
        return list(range(num_frames))
    if isinstance(frames, int):
        if frames < 1:
            raise ValueError(f"frames must be >= 1, got {frames}")
        return sorted({round(i * (num_frames - 1) / max(1, frames - 1)) for i in range(min(frames, num_frames))})
    return [int(i) for i in frames]


@torch.no_grad()
def scorer_scores(
    scorer,
    body,
    motion: CanonicalMotion,
    prompt_text: str,
    frames: int | Sequence[int] | None = 8,
    renderer=None,
    shape: torch.Tensor | None = None,
    azimuth_deg: float = 0.0,
) -> torch.Tensor:
    """Cosine similarity (F,) of the prompt with renders of the chosen frames (see
    :func:`frame_indices`) by ``scorer`` (a Guidance: use ``build_scorer(cfg)``)."""
    from avatar.render import MeshRenderConfig, MeshRenderer

    if not isinstance(prompt_text, str) or not prompt_text.strip():
        raise ValueError(f"scorer_scores: the prompt is empty ({prompt_text!r})")
    renderer = renderer or MeshRenderer(MeshRenderConfig(height=scorer.input_size[0], width=scorer.input_size[1]))
    index = frame_indices(motion.num_frames, frames)
    poses = motion.poses()[index]
    vertices = body(shape, poses.to(body.device, body.dtype)).vertices
    images = render_frames(body, vertices, renderer, azimuth_deg=azimuth_deg)
    text = scorer.encode_text([prompt_text])
    return (scorer.encode_image(images) @ text[0]).float().cpu()


def motion_metrics(
    motion: CanonicalMotion,
    body=None,
    shape: torch.Tensor | None = None,
    pose_prior=None,
    scorer=None,
    prompt_text: str = "",
    score_frames: int | Sequence[int] | None = 8,
    renderer=None,
    contact_threshold: float = 0.05,
) -> dict[str, float]:
    """Every metric of the module for one clip (the scorer's and prior's when given)."""
    joints = motion_joints(motion, body, shape)
    out = {
        "jerk": jerk(joints, motion.fps) if motion.num_frames >= 4 else 0.0,
        "delta": delta(motion.rotations) if motion.num_frames >= 2 else 0.0,
        "diversity_m": diversity(joints) if motion.num_frames >= 2 else 0.0,
    }
    if motion.num_frames >= 2:
        skate = foot_skating(joints, motion.fps, contact_threshold)
        out.update(foot_skating=skate["skate_speed"], foot_contact_fraction=skate["contact_fraction"])
    if pose_prior is not None:
        out["pose_prior_nll"] = pose_prior_nll(pose_prior, motion.rotations)
    if scorer is not None and body is not None:
        scores = scorer_scores(scorer, body, motion, prompt_text, score_frames, renderer, shape)
        out.update(scorer_score=float(scores.mean()), scorer_score_max=float(scores.max()))
    return out


def static_motion(pose: CanonicalPose, num_frames: int, fps: float = 30.0) -> CanonicalMotion:
    """A clip holding one pose for ``num_frames`` frames (reference values of the metrics)."""
    return CanonicalMotion(
        pose.rotations[:1].expand(num_frames, -1, -1).clone(), pose.transl[:1].expand(num_frames, -1).clone(), fps
    )
