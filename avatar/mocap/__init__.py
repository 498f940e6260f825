"""Motion capture input: readers for BVH and CMU ASF/AMC files (any skeleton, in the file's
own units and axes, rest pose = identity rotations), folder loading, and retargeting to the
canonical skeleton (`avatar.mocap.retarget`)."""

from avatar.mocap.asf_amc import AsfBone, AsfSkeleton, find_asf, read_amc, read_asf
from avatar.mocap.bvh import read_bvh
from avatar.mocap.dataset import extract_archives, find_motion_files, iter_folder, load_folder
from avatar.mocap.types import (
    CMU_60FPS_SUBJECTS,
    CMU_60FPS_TRIALS,
    MocapClip,
    MocapFormatError,
    MocapSkeleton,
    cmu_trial_id,
    true_fps,
)

__all__ = [
    "AsfBone",
    "AsfSkeleton",
    "CMU_60FPS_SUBJECTS",
    "CMU_60FPS_TRIALS",
    "MocapClip",
    "MocapFormatError",
    "MocapSkeleton",
    "cmu_trial_id",
    "extract_archives",
    "find_asf",
    "find_motion_files",
    "iter_folder",
    "load_folder",
    "read_amc",
    "read_asf",
    "read_bvh",
    "true_fps",
]
