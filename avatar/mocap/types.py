"""What every mocap reader returns: a source skeleton and its motion, in the file's own joints,
axes and units, with the rest pose at identity rotations (BVH's convention). Retargeting
(`avatar.mocap.retarget`) turns it into canonical poses."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

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

    def rest_points(self) -> np.ndarray:
        """Rest positions of the joints followed by those of the End Sites, (J + E, 3)."""
        rest = self.rest_positions()
        ends = [rest[j] + offset for j, offset in self.end_offsets.items()]
        return np.concatenate([rest, np.reshape(ends, (-1, 3))])


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

    @property
    def trial_id(self) -> str | None:
        """CMU trial id ("SS_TT") from the file name, or None (see `cmu_trial_id`)."""
        return cmu_trial_id(self.path)

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


# --- CMU facts shared by the readers -------------------------------------------------------

# Nominal CMU capture rate: what BVH conversions declare, and the rate of every AMC file.
CMU_NOMINAL_FPS = 120.0
# Captured at 60 fps although the files say 120: per the "framerate" column of "CMU data.csv"
# (DragonForgedTheArtist/IClone-CMU-Mocap @79529f9; the corpus's cmu-trials.csv), every trial of
# these subjects, and of subject 136 only trial 19.
CMU_60FPS_SUBJECTS = frozenset({33, 34, 42, 60, 61, 62, 74, 75, 77, 79, 80, 87, 88, 89})
CMU_60FPS_TRIALS = frozenset({"136_19"})

# The last "SS_TT" in a file name: "05_01.bvh", "acrnn_salsa_01__60_01.bvh" (-> 60_01).
_TRIAL = re.compile(r"(?<![0-9])([0-9]{1,3})_([0-9]{1,3})(?![0-9])")


def cmu_trial_id(path: str | Path) -> str | None:
    """CMU trial id "SS_TT" (zero-padded to two digits) from a file name, or None."""
    matches = _TRIAL.findall(Path(path).stem)
    if not matches:
        return None
    subject, trial = matches[-1]
    return f"{int(subject):02d}_{int(trial):02d}"


def true_fps(declared_fps: float, path: str | Path) -> tuple[float, str | None]:
    """The capture rate of a clip whose file declares ``declared_fps``, and a note if changed.

    Rates within 0.1% of a whole number are rounded (BVH frame times are truncated decimals:
    0.0083333 s). CMU trials captured at 60 fps but declared 120 are re-timed to 60.
    """
    whole = round(declared_fps)
    fps = float(whole) if abs(declared_fps - whole) < 1e-3 * declared_fps else declared_fps
    trial = cmu_trial_id(path)
    if trial is None or fps != CMU_NOMINAL_FPS:
        return fps, None
    if int(trial.split("_")[0]) in CMU_60FPS_SUBJECTS or trial in CMU_60FPS_TRIALS:
        return 60.0, f"re-timed 120 -> 60 fps: CMU lists trial {trial} as captured at 60 fps"
    return fps, None


def sampled_positions(clip: MocapClip, max_frames: int = 200) -> np.ndarray:
    """Joint positions (n, J, 3) of up to ``max_frames`` evenly spaced frames (for heuristics)."""
    idx = np.unique(np.linspace(0, clip.num_frames - 1, min(max_frames, clip.num_frames)).astype(int))
    sample = MocapClip(clip.path, clip.skeleton, clip.local_rotations[idx], clip.root_positions[idx], clip.fps, 1.0)
    return sample.global_transforms()[1]


def detect_up_axis(skeleton: MocapSkeleton, positions: np.ndarray) -> tuple[str, str | None]:
    """The vertical axis ("y" or "z") of a skeleton and its joint positions (n, J, 3) in some
    frames, with a note when it had to be assumed.

    Rigs are built standing, so the taller of the rest pose's y and z extents is up (a T-pose is
    as wide as tall but thin front to back). If they are within 25% of each other, the body's
    median extent over the frames decides the same way; failing that, BVH's usual "y".
    """
    rest = skeleton.rest_points()
    rest_extent = rest.max(axis=0) - rest.min(axis=0)
    motion_extent = np.median(positions.max(axis=1) - positions.min(axis=1), axis=0)
    for extent in (rest_extent, motion_extent):
        y, z = extent[1], extent[2]
        if max(y, z) >= 1.25 * min(y, z):
            return ("y" if y > z else "z"), None
    return "y", "up axis unclear from the rest pose and the motion; assumed y"
