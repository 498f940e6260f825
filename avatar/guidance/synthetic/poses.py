"""Pose words read from joint positions (canonical joints, Z-up world, any body size).

Every measurement is made in the body's own horizontal frame (left = hip-to-hip direction,
forward = left x up, so a body facing -Y has forward -Y) and lengths are divided by the leg length
(hip->knee + knee->ankle, averaged over both sides), so the thresholds hold for children and
adults and for any heading. Two words per pose at most: one for the arms and one for the body.

Arms (first that applies):

* ``arms raised``: both arms raised (a raised arm: wrist above the head joint, the base of the
  skull, and shoulder->wrist more than ``RAISED_MIN_DEG`` above horizontal);
* ``one arm raised``: exactly one arm raised;
* ``arms spread``: both shoulder->wrist directions within ``SPREAD_MAX_DEG`` of horizontal and
  pointing sideways (outward component >= ``SPREAD_MIN_OUT`` of the arm's length): a T-pose;
* ``arms forward``: both arms within ``SPREAD_MAX_DEG`` of horizontal and pointing forward
  (forward component >= ``SPREAD_MIN_OUT``);
* ``arms down``: both shoulder->wrist directions more than ``DOWN_MIN_DEG`` below horizontal;
* otherwise none (e.g. the A-pose, 45 degrees, says nothing about its arms).

Body (first that applies):

* ``squatting``: both knees bent by >= ``SQUAT_KNEE_DEG`` and the pelvis at most
  ``SQUAT_PELVIS`` leg lengths above the lower ankle;
* ``sitting``: both thighs within ``SIT_THIGH_DEG`` of horizontal and both knees bent by
  ``SIT_KNEE_DEG`` (thighs forward, shins down, as on a chair);
* ``kicking``: one ankle at least ``KICK_RAISE`` leg lengths above the other and
  ``KICK_FORWARD`` leg lengths in front of its hip;
* ``walking``: the ankles ``STRIDE_MIN`` leg lengths apart front to back, both near the ground
  (height difference below ``KICK_RAISE``);
* ``bending forward``: the pelvis->neck direction tilted forward by more than ``BEND_DEG``;
* ``standing``: both knees bent by less than ``STAND_KNEE_DEG`` and the torso tilted by less
  than ``BEND_DEG``;
* otherwise none.
"""

from __future__ import annotations

import torch

from avatar.body.skeleton import JOINT_INDEX

ARM_WORDS: tuple[str, ...] = ("arms raised", "one arm raised", "arms spread", "arms forward", "arms down")
BODY_WORDS: tuple[str, ...] = ("squatting", "sitting", "kicking", "walking", "bending forward", "standing")

RAISED_MIN_DEG = 40.0
SPREAD_MAX_DEG = 25.0
SPREAD_MIN_OUT = 0.8
DOWN_MIN_DEG = 60.0
SQUAT_KNEE_DEG = 90.0
SQUAT_PELVIS = 0.65
SIT_THIGH_DEG = 30.0
SIT_KNEE_DEG = (55.0, 110.0)
KICK_RAISE = 0.35
KICK_FORWARD = 0.35
STRIDE_MIN = 0.45
BEND_DEG = 30.0
STAND_KNEE_DEG = 30.0

_J = JOINT_INDEX


def _angle_deg(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    cos = torch.nn.functional.cosine_similarity(a, b, dim=-1).clamp(-1.0, 1.0)
    return torch.rad2deg(torch.acos(cos))


def pose_features(joints: torch.Tensor) -> dict[str, torch.Tensor]:
    """Measurements (each (B,) or (B, 2) for left/right) the words are read from."""
    joints = joints.detach().float()
    up = torch.tensor([0.0, 0.0, 1.0])
    left = joints[:, _J["left_hip"]] - joints[:, _J["right_hip"]]
    left = torch.nn.functional.normalize(left - (left @ up)[:, None] * up, dim=-1)
    forward = torch.linalg.cross(left, up.expand_as(left))

    def side(name: str) -> torch.Tensor:  # (B, 2, 3): left, right
        return joints[:, [_J["left_" + name], _J["right_" + name]]]

    hip, knee, ankle = side("hip"), side("knee"), side("ankle")
    shoulder, wrist = side("shoulder"), side("wrist")
    thigh, shin = knee - hip, ankle - knee
    leg = (thigh.norm(dim=-1) + shin.norm(dim=-1)).mean(1)  # (B,)
    arm = wrist - shoulder
    outward_sign = torch.tensor([1.0, -1.0])  # the right arm points outward along -left
    arm_out = (arm * left[:, None]).sum(-1) * outward_sign / arm.norm(dim=-1)
    arm_forward = (arm * forward[:, None]).sum(-1) / arm.norm(dim=-1)
    arm_elevation = torch.rad2deg(torch.asin((arm[..., 2] / arm.norm(dim=-1)).clamp(-1, 1)))
    thigh_elevation = torch.rad2deg(torch.asin((thigh[..., 2] / thigh.norm(dim=-1)).clamp(-1, 1)))
    torso = joints[:, _J["neck"]] - joints[:, _J["pelvis"]]
    ankle_z = ankle[..., 2]
    return {
        "wrist_above_head": wrist[..., 2] > joints[:, _J["head"], None, 2],
        "arm_elevation_deg": arm_elevation,
        "arm_outward": arm_out,
        "arm_forward": arm_forward,
        "knee_bend_deg": _angle_deg(thigh, shin),
        "thigh_elevation_deg": thigh_elevation,
        "pelvis_height": (joints[:, _J["pelvis"], 2] - ankle_z.min(1).values) / leg,
        "ankle_raise": (ankle_z[:, 0] - ankle_z[:, 1]) / leg,  # left minus right
        "ankle_forward": ((ankle - hip) * forward[:, None]).sum(-1) / leg[:, None],
        "stride": ((ankle[:, 0] - ankle[:, 1]) * forward).sum(-1).abs() / leg,
        "torso_tilt_deg": _angle_deg(torso, up.expand_as(torso)),
        "torso_forward": (torso * forward).sum(-1),
    }


def pose_words(joints: torch.Tensor) -> list[dict[str, str | None]]:
    """For joints (B, 22, 3): per pose ``{"arms": word or None, "body": word or None}``."""
    f = pose_features(joints)
    out = []
    for i in range(joints.shape[0]):
        elev, outward = f["arm_elevation_deg"][i], f["arm_outward"][i]
        up = f["wrist_above_head"][i] & (elev > RAISED_MIN_DEG)
        if up.all():
            arms = "arms raised"
        elif up.any():
            arms = "one arm raised"
        elif (elev.abs() < SPREAD_MAX_DEG).all() and (outward >= SPREAD_MIN_OUT).all():
            arms = "arms spread"
        elif (elev.abs() < SPREAD_MAX_DEG).all() and (f["arm_forward"][i] >= SPREAD_MIN_OUT).all():
            arms = "arms forward"
        elif (elev < -DOWN_MIN_DEG).all():
            arms = "arms down"
        else:
            arms = None

        knee, thigh = f["knee_bend_deg"][i], f["thigh_elevation_deg"][i]
        raise_ = f["ankle_raise"][i]
        raised_side = 0 if raise_ > 0 else 1
        tilt = f["torso_tilt_deg"][i]
        bent_forward = tilt > BEND_DEG and f["torso_forward"][i] > 0
        if (knee >= SQUAT_KNEE_DEG).all() and f["pelvis_height"][i] <= SQUAT_PELVIS:
            body = "squatting"
        elif (thigh.abs() < SIT_THIGH_DEG).all() and ((knee >= SIT_KNEE_DEG[0]) & (knee <= SIT_KNEE_DEG[1])).all():
            body = "sitting"
        elif raise_.abs() >= KICK_RAISE and f["ankle_forward"][i, raised_side] >= KICK_FORWARD:
            body = "kicking"
        elif f["stride"][i] >= STRIDE_MIN and raise_.abs() < KICK_RAISE:
            body = "walking"
        elif bent_forward:
            body = "bending forward"
        elif (knee < STAND_KNEE_DEG).all() and tilt < BEND_DEG:
            body = "standing"
        else:
            body = None
        out.append({"arms": arms, "body": body})
    return out
