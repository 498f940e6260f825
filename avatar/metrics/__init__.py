"""Metrics of generated results, as pure functions (no stage state): ``avatar.metrics.motion``
for motion clips (smoothness, foot skating, pose plausibility, text agreement, liveliness)."""

from avatar.metrics.motion import (
    FOOT_JOINTS,
    delta,
    diversity,
    foot_skating,
    frame_indices,
    grounded_motion,
    jerk,
    motion_joints,
    motion_metrics,
    pose_prior_nll,
    render_frames,
    scorer_scores,
    static_motion,
)

__all__ = [
    "FOOT_JOINTS",
    "delta",
    "diversity",
    "foot_skating",
    "frame_indices",
    "grounded_motion",
    "jerk",
    "motion_joints",
    "motion_metrics",
    "pose_prior_nll",
    "render_frames",
    "scorer_scores",
    "static_motion",
]
