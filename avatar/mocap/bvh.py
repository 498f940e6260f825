"""BVH reader (Biovision hierarchy): any joint names, any channel orders, End Sites, root and
non-root joints with 3 or 6 channels.

Own vectorised numpy parser rather than a PyPI package: ``pybvh`` 0.9 rejects position
channels on non-root joints (the CMU-ASF-named looping cuts have them on every joint), ``bvh``
0.3 only tokenises, and ``bvhio`` 1.5 builds one Python object per joint and frame (plus two
extra dependencies) and fails on truncated files with bare IndexErrors. Here a 2 MB file reads
in about 0.1 s and every malformed file raises `MocapFormatError` naming the file and problem.

Conventions (Meredith & Maddock, "Motion capture file formats explained", 2001):
* a joint's rotation channels compose in channel order as intrinsic rotations:
  ``CHANNELS 3 Zrotation Yrotation Xrotation`` gives ``R = Rz @ Ry @ Rx`` (degrees);
* the root's position is its OFFSET plus its position channels;
* a non-root joint's position channels give its translation from the parent, replacing its
  OFFSET (what MotionBuilder writes: the channels repeat the offsets).

:func:`write_bvh` writes canonical motions with the same conventions (see there).
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import roma
import torch
from scipy.spatial.transform import Rotation

from avatar.body.skeleton import (
    JOINT_NAMES,
    NUM_JOINTS,
    PARENTS,
    TEMPLATE_JOINTS_BODY_FRAME,
    upright_rotation,
)
from avatar.mocap.retarget import CanonicalMotion, motion_arrays
from avatar.mocap.types import (
    MocapClip,
    MocapFormatError,
    MocapSkeleton,
    detect_up_axis,
    sampled_positions,
    true_fps,
)
from avatar.utils.io import atomic_path

_ROTATION = {"xrotation": "X", "yrotation": "Y", "zrotation": "Z"}
_POSITION = {"xposition": 0, "yposition": 1, "zposition": 2}
# Length units a BVH file may be in (metres per unit). cgspeed's CMU conversions keep CMU's ASF
# units: ASF "length 0.45" means 1 unit = 1/0.45 inch (a 7.2-unit thigh is 0.41 m).
UNITS = {
    "metres": 1.0,
    "centimetres": 0.01,
    "millimetres": 0.001,
    "inches": 0.0254,
    "CMU units (1/0.45 inch)": 0.0254 / 0.45,
}
# The skeleton size (see `guess_units`) of a typical adult, in metres.
_TYPICAL_SIZE_M = 1.6
# An added T-pose (see `added_tpose_frames`), in degrees of mean joint rotation.
_REST_LIKE_DEG = 5.0
_MIN_JUMP_DEG = 1.0
_JUMP_FACTOR = 3.0  # vs the clip's median per-frame change
_MAX_BLEND_FRAMES = 10
# A non-root joint whose translation channels move further than this (file units) is "stretchy":
# the skeleton keeps their mean and the clip says so in its notes.
_STRETCH_TOLERANCE = 1e-3


class _Joint:
    """One joint while the hierarchy is read: its channels and where they sit in a frame."""

    def __init__(self, name: str, parent: int) -> None:
        self.name = name
        self.parent = parent
        self.offset: np.ndarray | None = None
        self.rotation_axes = ""  # e.g. "ZYX", in channel order
        self.rotation_columns: list[int] = []
        self.position_axes: list[int] = []  # 0/1/2 for x/y/z, in channel order
        self.position_columns: list[int] = []


def read_bvh(path: str | Path, drop_tpose: bool = True) -> MocapClip:
    """Read a BVH file into a `MocapClip` (file units and axes; rest pose = identity rotations).

    ``drop_tpose``: drop an added T-pose frame 0 (cgspeed MotionBuilder-friendly files), found
    by its jump to frame 1 (see `added_tpose_frames`).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as err:
        raise MocapFormatError(f"{path}: cannot read ({err})") from err
    match = re.search(r"^[ \t]*MOTION[ \t\r]*$", text, flags=re.MULTILINE)
    if match is None:
        raise MocapFormatError(f"{path}: no MOTION section (truncated file?)")
    header_lines = text[: match.start()].splitlines()
    motion_lines = text[match.end() :].splitlines()[1:]  # [0]: the end of the MOTION line

    joints, end_offsets, num_channels = _parse_hierarchy(header_lines, path)
    frames, frame_time = _parse_motion(motion_lines, num_channels, path, first_line=len(header_lines) + 2)

    T, J = frames.shape[0], len(joints)
    fps, fps_note = true_fps(1.0 / frame_time, path)
    notes = [fps_note] if fps_note else []
    offsets = np.stack([joint.offset for joint in joints])
    local = np.broadcast_to(np.eye(3), (T, J, 3, 3)).copy()
    # One scipy call per distinct rotation order (usually one or two for the whole skeleton).
    for axes in {joint.rotation_axes for joint in joints if joint.rotation_axes}:
        members = [j for j, joint in enumerate(joints) if joint.rotation_axes == axes]
        columns = np.array([joints[j].rotation_columns for j in members])  # (M, k)
        angles = frames[:, columns].reshape(-1, len(axes))
        local[:, members] = Rotation.from_euler(axes, angles, degrees=True).as_matrix().reshape(T, len(members), 3, 3)

    root = joints[0]
    root_positions = np.broadcast_to(root.offset, (T, 3)).copy()
    root_positions[:, root.position_axes] += frames[:, root.position_columns]
    for j, joint in enumerate(joints[1:], start=1):
        if not joint.position_columns:
            continue
        values = frames[:, joint.position_columns]
        offsets[j, joint.position_axes] = values.mean(axis=0)
        spread = float(np.ptp(values, axis=0).max())
        if spread > _STRETCH_TOLERANCE:
            notes.append(f"joint {joint.name} translation channels vary by up to {spread:.4g}; offset = their mean")

    if drop_tpose and (n := added_tpose_frames(local)):
        local, root_positions = local[n:], root_positions[n:]
        notes.append(
            "dropped the added T-pose frame 0" + (f" and {n - 1} frame(s) blending out of it" if n > 1 else "")
        )

    skeleton = MocapSkeleton(
        names=[joint.name for joint in joints],
        parents=[joint.parent for joint in joints],
        offsets=offsets,
        end_offsets=end_offsets,
    )
    clip = MocapClip(str(path), skeleton, local, root_positions, fps, units_to_metres=1.0, notes=notes)
    positions = sampled_positions(clip)
    clip.up_axis, up_note = detect_up_axis(skeleton, positions)
    clip.units_to_metres, units_note = guess_units(skeleton, positions, clip.up_axis)
    notes += [note for note in (up_note, units_note) if note]
    return clip


def guess_units(skeleton: MocapSkeleton, positions: np.ndarray, up_axis: str) -> tuple[float, str]:
    """Metres per file unit, snapped to one of `UNITS`, and a note saying what was assumed.

    BVH has no unit field. The skeleton's size is the larger of its rest pose's largest extent
    (End Sites included: height or arm span in a T-pose) and the 90th percentile over frames of
    its vertical extent (for rigs whose rest pose is folded up); the unit that makes it closest
    to a typical 1.6 m wins. Neighbouring units differ by 2.2x or more, so bodies from 1.0 to
    2.5 m snap correctly.
    """
    points = skeleton.rest_points()
    rest_size = float((points.max(axis=0) - points.min(axis=0)).max())
    up = {"y": 1, "z": 2}[up_axis]
    motion_size = float(np.percentile(positions[..., up].max(axis=1) - positions[..., up].min(axis=1), 90))
    size = max(rest_size, motion_size)
    if size <= 0:
        return 1.0, "units: the skeleton has no extent; assumed metres"
    name = min(UNITS, key=lambda unit: abs(np.log(size * UNITS[unit] / _TYPICAL_SIZE_M)))
    return UNITS[name], f"units: skeleton size {size:.4g} file units, assumed {name} ({size * UNITS[name]:.2f} m)"


def _mean_angle(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean over joints of the angle (degrees) between rotations a and b, (..., J, 3, 3)."""
    cos = (np.einsum("...ij,...ij->...", a, b) - 1.0) / 2.0  # trace(a^T b) = cos of the angle
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))).mean(axis=-1)


def added_tpose_frames(local_rotations: np.ndarray) -> int:
    """How many leading frames (T, J, 3, 3) belong to an added T-pose; 0 if there is none.

    cgspeed's MotionBuilder-friendly conversion adds the rest pose (a T-pose) as frame 0, and so
    does its Daz-friendly one (those files have one frame more than CMU's AMC of the same
    trial). Found as: frame 0 is rest-like (mean joint rotation under 5 degrees) and jumps to
    frame 1 (mean change over 1 degree and over 3x the clip's median per-frame change; a clip
    that really starts in its rest pose does not jump). The Daz-friendly files also blend the
    T-pose into the next 3-4 frames (a smoothing artefact), so the frames after it go too while
    their change to the next frame stays over that threshold (at most 10 of them).
    """
    if local_rotations.shape[0] < 3:
        return 0
    steps = _mean_angle(local_rotations[:-1], local_rotations[1:])
    threshold = max(_MIN_JUMP_DEG, _JUMP_FACTOR * float(np.median(steps)))
    if _mean_angle(local_rotations[0], np.eye(3)) > _REST_LIKE_DEG or steps[0] < threshold:
        return 0
    n = 1
    while n < 1 + _MAX_BLEND_FRAMES and n < len(steps) - 1 and steps[n] > threshold:
        n += 1
    return n


def _floats(tokens: list[str], path: Path, line: int, what: str) -> np.ndarray:
    try:
        return np.array(tokens, dtype=float)
    except ValueError:
        raise MocapFormatError(f"{path}: line {line}: non-numeric {what}: {' '.join(tokens)!r}") from None


def _parse_hierarchy(lines: list[str], path: Path) -> tuple[list[_Joint], dict[int, np.ndarray], int]:
    """Joints (parents before children), End Site offsets and the number of channels."""
    joints: list[_Joint] = []
    end_offsets: dict[int, np.ndarray] = {}
    stack: list[int] = []  # open blocks: a joint index, or -1 for an End Site
    pending: int | None = None  # the ROOT/JOINT/End Site waiting for its "{"
    end_offset: np.ndarray | None = None
    num_channels = 0

    for n, line in enumerate(lines, start=1):
        tokens = line.split()
        opens = bool(tokens) and tokens[-1] == "{"  # some writers put "{" after the name
        if opens:
            tokens = tokens[:-1]
        key = tokens[0] if tokens else ""
        current = stack[-1] if stack else None
        if key in ("ROOT", "JOINT"):
            name = " ".join(tokens[1:])
            if not name:
                raise MocapFormatError(f"{path}: line {n}: {key} without a name")
            if key == "ROOT" and joints:
                raise MocapFormatError(f"{path}: line {n}: a second ROOT ({name}); one skeleton per file")
            if key == "JOINT" and (current is None or current < 0):
                raise MocapFormatError(f"{path}: line {n}: JOINT {name} outside a joint (unbalanced braces?)")
            joints.append(_Joint(name, -1 if current is None else current))
            pending = len(joints) - 1
        elif key == "End":
            if current is None or current < 0:
                raise MocapFormatError(f"{path}: line {n}: End Site outside a joint")
            pending, end_offset = -1, None
        elif key == "OFFSET":
            if current is None:
                raise MocapFormatError(f"{path}: line {n}: OFFSET outside a joint")
            if len(tokens) != 4:
                raise MocapFormatError(f"{path}: line {n}: OFFSET needs 3 values, got {len(tokens) - 1}")
            offset = _floats(tokens[1:], path, n, "OFFSET")
            if current < 0:
                end_offset = offset
            else:
                joints[current].offset = offset
        elif key == "CHANNELS":
            if current is None or current < 0:
                raise MocapFormatError(f"{path}: line {n}: CHANNELS outside a joint")
            num_channels = _add_channels(joints[current], tokens, num_channels, path, n)
        elif key == "}":
            if current is None:
                raise MocapFormatError(f"{path}: line {n}: unbalanced braces: '}}' closes nothing")
            stack.pop()
            if current >= 0 and joints[current].offset is None:
                raise MocapFormatError(f"{path}: line {n}: joint {joints[current].name} has no OFFSET")
            if current < 0:
                if end_offset is None:
                    raise MocapFormatError(f"{path}: line {n}: End Site of {joints[stack[-1]].name} has no OFFSET")
                end_offsets[stack[-1]] = end_offset
        elif key not in ("", "HIERARCHY"):
            raise MocapFormatError(f"{path}: line {n}: unexpected {key!r} in the HIERARCHY section")
        if opens:
            if pending is None:
                raise MocapFormatError(f"{path}: line {n}: '{{' opens nothing")
            stack.append(pending)
            pending = None

    if not joints:
        raise MocapFormatError(f"{path}: no ROOT joint in the HIERARCHY section")
    if stack or pending is not None:
        raise MocapFormatError(f"{path}: unbalanced braces: {len(stack)} block(s) not closed before MOTION")
    return joints, end_offsets, num_channels


def _add_channels(joint: _Joint, tokens: list[str], column: int, path: Path, line: int) -> int:
    """Record a joint's CHANNELS line; returns the next free column of a frame."""
    try:
        count = int(tokens[1])
    except (IndexError, ValueError):
        raise MocapFormatError(f"{path}: line {line}: CHANNELS without a channel count") from None
    names = tokens[2:]
    if len(names) != count:
        raise MocapFormatError(f"{path}: line {line}: CHANNELS {count} lists {len(names)} channels")
    if joint.rotation_columns or joint.position_columns:
        raise MocapFormatError(f"{path}: line {line}: second CHANNELS line for joint {joint.name}")
    for name in names:
        key = name.lower()
        if key in _ROTATION:
            joint.rotation_axes += _ROTATION[key]
            joint.rotation_columns.append(column)
        elif key in _POSITION:
            joint.position_axes.append(_POSITION[key])
            joint.position_columns.append(column)
        else:
            raise MocapFormatError(f"{path}: line {line}: unknown channel {name!r} for joint {joint.name}")
        column += 1
    if len(joint.rotation_axes) > 3 or len(set(joint.position_axes)) != len(joint.position_axes):
        raise MocapFormatError(f"{path}: line {line}: unsupported channels for joint {joint.name}: {' '.join(names)}")
    return column


def _parse_motion(lines: list[str], num_channels: int, path: Path, first_line: int) -> tuple[np.ndarray, float]:
    """The (frames, channels) array and the frame time of the lines after MOTION (the first of
    them is line ``first_line`` of the file)."""
    rows = [(n, line) for n, line in enumerate(lines, start=first_line) if line.strip()]
    fields = {}
    for key in ("Frames", "Frame Time"):
        if not rows or not rows[0][1].strip().startswith(key + ":"):
            raise MocapFormatError(f"{path}: the MOTION section has no '{key}:' line")
        n, line = rows.pop(0)
        value = line.split(":", 1)[1].strip()
        try:
            fields[key] = int(value) if key == "Frames" else float(value)
        except ValueError:
            raise MocapFormatError(f"{path}: line {n}: bad '{key}:' value {value!r}") from None
    num_frames, frame_time = fields["Frames"], fields["Frame Time"]
    if frame_time <= 0:
        raise MocapFormatError(f"{path}: Frame Time {frame_time} is not positive")

    tokens = [line.split() for _, line in rows]
    for i, row in enumerate(tokens):
        if len(row) != num_channels:
            raise MocapFormatError(
                f"{path}: frame {i} (line {rows[i][0]}) has {len(row)} values, expected {num_channels}"
            )
    if len(tokens) != num_frames:
        raise MocapFormatError(f"{path}: header declares {num_frames} frames but the file has {len(tokens)}")
    if num_frames == 0:
        raise MocapFormatError(f"{path}: no frames")
    try:
        frames = np.array(tokens, dtype=float).reshape(num_frames, num_channels)
    except ValueError:
        for i, row in enumerate(tokens):  # find the culprit for the message
            _floats(row, path, rows[i][0], f"value in frame {i}")
        raise
    if not np.isfinite(frames).all():
        i = int(np.nonzero(~np.isfinite(frames).all(axis=1))[0][0])
        raise MocapFormatError(f"{path}: frame {i} (line {rows[i][0]}) has non-finite values")
    return frames, frame_time


# ---------------------------------------------------------------------- writing
# Euler order of the written rotation channels (intrinsic, like the reader: R = Rz @ Rx @ Ry);
# ZXY is what MotionBuilder and the CMU conversions use.
WRITE_EULER_ORDER = "ZXY"
# End Site lengths (metres, for a skeleton of the template's size) of the leaf joints, along
# their parent's bone: top of the head, hand, toes. They only serve viewers and bone directions.
_END_SITE_LENGTH = {"head": 0.2, "left_wrist": 0.1, "right_wrist": 0.1, "left_foot": 0.05, "right_foot": 0.05}


def write_bvh(path: str | Path, motion: CanonicalMotion, rest_joints: torch.Tensor | None = None) -> Path:
    """Write a canonical motion as a standard BVH file (metres, Y up, the body facing +Z).

    The hierarchy is the canonical skeleton with its joint names (SMPL's, as smplx spells them,
    which `avatar.mocap.retarget` recognises) and offsets from ``rest_joints`` (22, 3), the
    T-pose joints in the body frame (default: the template skeleton); leaf joints get End Sites.
    The root has 6 channels (``Xposition Yposition Zposition Zrotation Xrotation Yrotation``), the
    other joints the 3 rotations, in degrees. Lengths are in metres (BVH has no unit field; most
    importers offer a scale, and `read_bvh` guesses metres from the skeleton's size).

    Frames: the file's axes are the body frame's (Y up, +Z forward, +X the body's left), so
    the rest pose (all channels zero) is the upright T-pose, as BVH expects. A canonical
    pose maps to the file by the Z-up -> Y-up rotation ``A = UPRIGHT^T``: the root's rotation
    becomes ``A R_0`` and its position ``A transl``; the other local rotations are unchanged
    (the joint frames are the same). Reading the file back with `read_bvh` and
    `avatar.mocap.retarget.retarget` returns the motion (exactly for the template skeleton;
    another skeleton is retargeted onto the template's bone directions). A motion that starts
    in the T-pose and jumps away from it reads back with ``read_bvh(path, drop_tpose=False)``:
    otherwise its frame 0 looks like an added rest frame (see `added_tpose_frames`).
    """
    rotations, transl, fps = motion_arrays(motion)
    if rest_joints is None:
        rest = np.array(TEMPLATE_JOINTS_BODY_FRAME, dtype=np.float64)
    else:
        rest = np.asarray(torch.as_tensor(rest_joints).detach().cpu(), dtype=np.float64)
        if rest.shape != (NUM_JOINTS, 3) or not np.isfinite(rest).all():
            raise ValueError(f"rest_joints must be finite (22, 3) body-frame joints, got shape {rest.shape}")
    to_file = upright_rotation(torch.float64).T  # Z-up world -> the file's Y-up axes
    local = roma.rotvec_to_rotmat(torch.from_numpy(rotations))
    local[:, 0] = to_file @ local[:, 0]
    angles = roma.rotmat_to_euler(WRITE_EULER_ORDER, local, degrees=True).numpy()  # (T, 22, 3)
    root_position = transl @ to_file.numpy().T

    order = _depth_first()  # the order of the joints' channels in a frame
    frames = np.concatenate([root_position, angles[:, order].reshape(len(angles), -1)], axis=1)
    text = io.StringIO()
    text.write("HIERARCHY\n")
    _write_joint(text, 0, rest, depth=0, scale=_skeleton_scale(rest))
    text.write(f"MOTION\nFrames: {len(frames)}\nFrame Time: {1.0 / fps:.8f}\n")
    np.savetxt(text, frames, fmt="%.6f")
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text.getvalue())
    return path


def _depth_first(joint: int = 0) -> list[int]:
    """Canonical joint indices in the order the hierarchy lists them (children by index)."""
    order = [joint]
    for child in (j for j, p in enumerate(PARENTS) if p == joint):
        order += _depth_first(child)
    return order


def _skeleton_scale(rest: np.ndarray) -> float:
    """The skeleton's height relative to the template's (scales the End Sites)."""
    template = np.array(TEMPLATE_JOINTS_BODY_FRAME)
    height = np.ptp(rest[:, 1])
    return float(height / np.ptp(template[:, 1])) if height > 0 else 1.0


def _write_joint(out: io.StringIO, joint: int, rest: np.ndarray, depth: int, scale: float) -> None:
    pad, rot = "\t" * depth, " ".join(f"{axis}rotation" for axis in WRITE_EULER_ORDER)
    parent = PARENTS[joint]
    offset = rest[joint] - rest[parent] if parent >= 0 else np.zeros(3)
    out.write(f"{pad}{'ROOT' if parent < 0 else 'JOINT'} {JOINT_NAMES[joint]}\n{pad}{{\n")
    out.write(f"{pad}\tOFFSET {offset[0]:.6f} {offset[1]:.6f} {offset[2]:.6f}\n")
    if parent < 0:
        out.write(f"{pad}\tCHANNELS 6 Xposition Yposition Zposition {rot}\n")
    else:
        out.write(f"{pad}\tCHANNELS 3 {rot}\n")
    children = [j for j, p in enumerate(PARENTS) if p == joint]
    for child in children:
        _write_joint(out, child, rest, depth + 1, scale)
    if not children:
        bone = offset / max(np.linalg.norm(offset), 1e-9)
        end = bone * _END_SITE_LENGTH.get(JOINT_NAMES[joint], 0.05) * scale
        out.write(f"{pad}\tEnd Site\n{pad}\t{{\n{pad}\t\tOFFSET {end[0]:.6f} {end[1]:.6f} {end[2]:.6f}\n{pad}\t}}\n")
    out.write(f"{pad}}}\n")
