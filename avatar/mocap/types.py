"""What every mocap reader returns: a source skeleton and its motion, in the file's own joints,
axes and units, with the rest pose at identity rotations (BVH's convention). Retargeting
(`avatar.mocap.retarget`) turns it into canonical poses."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class MocapFormatError(ValueError):
    """A motion file is truncated or malformed; the message names the file and the problem."""


@dataclass
class MocapSkeleton:
    names: list[str]  # joint names in file order (root first)
    parents: list[int]  # parent index of each joint, -1 for the root
    offsets: np.ndarray  # (J, 3) rest offset of each joint from its parent (file units and axes)
    # Optional end sites (BVH "End Site"): joint index -> offset, for bone directions of leaves.
    end_offsets: dict[int, np.ndarray] = field(default_factory=dict)

    def index(self, name: str) -> int:
        return self.names.index(name)

    def rest_positions(self) -> np.ndarray:
        """(J, 3) joint positions of the rest pose (all rotations identity), root at the origin."""
        positions = np.zeros((len(self.names), 3))
        for j, parent in enumerate(self.parents):
            if parent >= 0:
                positions[j] = positions[parent] + self.offsets[j]
        return positions


@dataclass
class MocapClip:
    path: str
    skeleton: MocapSkeleton
    local_rotations: np.ndarray  # (T, J, 3, 3) each joint's rotation in its parent's frame
    root_positions: np.ndarray  # (T, 3) root joint position (file units and axes)
    fps: float  # true capture rate (re-timed where a header is known to be wrong)
    units_to_metres: float  # multiply file lengths by this to get metres
    up_axis: str = "y"  # "y" or "z": the file's vertical axis
    notes: list[str] = field(default_factory=list)  # e.g. "re-timed 120 -> 60 fps", "dropped T-pose frame 0"

    @property
    def num_frames(self) -> int:
        return self.local_rotations.shape[0]

    def global_transforms(self) -> tuple[np.ndarray, np.ndarray]:
        """World rotations (T, J, 3, 3) and positions (T, J, 3) by forward kinematics."""
        T, J = self.local_rotations.shape[:2]
        rot = np.zeros((T, J, 3, 3))
        pos = np.zeros((T, J, 3))
        for j, parent in enumerate(self.skeleton.parents):
            if parent < 0:
                rot[:, j] = self.local_rotations[:, j]
                pos[:, j] = self.root_positions
            else:
                rot[:, j] = rot[:, parent] @ self.local_rotations[:, j]
                pos[:, j] = pos[:, parent] + np.einsum("tij,j->ti", rot[:, parent], self.skeleton.offsets[j])
        return rot, pos


def finish_clip(clip, drop_tpose=True):  # TEMP
    return clip
