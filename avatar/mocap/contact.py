"""Root travel from foot contacts: a motion without translation (AvatarCLIP's motion VAE decodes
joint rotations only) walks in place; moving the pelvis so that the lower foot stays where it
is planted makes a walk travel, and removes the foot skating of the in-place clip.

Per frame the lower of the two feet (by its lowest joint, ankle or toe base) is the stance foot;
the pelvis moves horizontally by minus that foot's horizontal displacement to the next frame
(as if the body pushed itself over the planted foot). Vertical placement is left to grounding.
"""

from __future__ import annotations

import torch

from avatar.body.skeleton import JOINT_INDEX, UPRIGHT, CanonicalPose, forward_kinematics

FEET = ((JOINT_INDEX["left_ankle"], JOINT_INDEX["left_foot"]), (JOINT_INDEX["right_ankle"], JOINT_INDEX["right_foot"]))


def travel_from_foot_contacts(
    rotations: torch.Tensor, transl: torch.Tensor, rest_joints: torch.Tensor | None = None, smooth: int = 3
) -> torch.Tensor:
    """New root translations (T, 3) for rotations (T, 22, 3) and translations (T, 3): the
    horizontal path that keeps the stance foot planted, and a height that keeps the lower foot
    at its first-frame height (a squat in place would otherwise lift the feet off the floor:
    in-place clips carry no vertical root motion); ``transl``'s own z is replaced, so a clip
    already treated is unchanged. Airborne phases (jumps) stay on the floor.

    ``rest_joints`` (22, 3): the skeleton the motion is shown on (body frame; default the
    template). ``smooth``: width (frames) of a moving average of the per-frame steps, which
    hides the jolt where the stance switches feet.
    """
    if rotations.ndim != 3 or rotations.shape[1:] != (22, 3) or transl.shape != (len(rotations), 3):
        raise ValueError(
            f"expected rotations (T, 22, 3) and transl (T, 3), got {tuple(rotations.shape)}, {tuple(transl.shape)}"
        )
    t = len(rotations)
    if t < 2:
        return transl.clone()
    joints = forward_kinematics(CanonicalPose(rotations, torch.zeros_like(transl)), rest_joints)  # (T, 22, 3)
    feet = torch.stack([joints[:, list(f)] for f in FEET], dim=1)  # (T, 2 feet, 2 joints, 3)
    height = feet[..., 2].amin(-1)  # (T, 2): each foot's lowest joint
    stance = height.argmin(-1)  # (T,)
    anchor = feet.mean(2)[torch.arange(t), stance]  # (T, 3): the stance foot's centre...
    following = feet.mean(2)[torch.arange(1, t), stance[:-1]]  # ...and the same foot one frame later
    steps = torch.zeros(t, 3, dtype=transl.dtype)
    steps[1:, :2] = -(following - anchor[:-1])[:, :2]
    if smooth > 1:
        kernel = torch.ones(1, 1, smooth, dtype=steps.dtype) / smooth
        padded = torch.nn.functional.pad(steps[1:, :2].T[:, None], (smooth // 2, (smooth - 1) // 2), mode="replicate")
        steps[1:, :2] = torch.nn.functional.conv1d(padded, kernel)[:, 0].T
    out = transl.clone()
    out[:, :2] = transl[:1, :2] + steps[:, :2].cumsum(0)
    lowest = height.amin(-1)  # (T,) the lower foot's lowest joint, root at the origin
    out[:, 2] = transl[0, 2] + lowest[0] - lowest
    return out


def contact_travel_distance(
    rotations: torch.Tensor, rest_joints: torch.Tensor | None = None, upright: bool = True
) -> float:
    """How far (m, start to end, horizontal) the feet of rotations (T, 22, 3) carry the body
    (:func:`travel_from_foot_contacts` from the origin): a walk travels, swaying in place does
    not. ``upright``: the root replaced by the upright one first (as the motion stage shows a
    clip), so turning on the spot or a tumbling root does not count as travel."""
    if upright:
        rotations = rotations.clone()
        rotations[:, 0] = torch.tensor(UPRIGHT, dtype=rotations.dtype)
    path = travel_from_foot_contacts(rotations, torch.zeros(len(rotations), 3, dtype=rotations.dtype), rest_joints)
    return float((path[-1, :2] - path[0, :2]).norm())
