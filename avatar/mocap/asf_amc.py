"""CMU ASF/AMC reader (Acclaim skeleton + motion), converted to the BVH-like convention of
`avatar.mocap.types`: one joint per ASF bone (plus the root), placed where the bone starts,
with identity local rotations in the ASF rest pose.

ASF/AMC semantics (Acclaim spec; as CMU's own viewer and Barbic's mocapPlayer implement them):
* a bone has a rest ``direction`` and ``length`` in world axes, and a local frame given by
  ``axis ax ay az XYZ``: C = Rz(az) Ry(ay) Rx(ax) (the rotations applied in the listed order);
* an AMC line gives the bone's rotation M in that local frame, its ``dof`` channels applied in
  the listed order (``dof rx ry rz``: M = Rz Ry Rx); the root likewise with its ``order``;
* a bone's world frame is W = W_parent C_parent^-1 C M, and it spans W C^-1 direction*length.
In the BVH convention the world rotation relative to the rest pose is G = W C^-1, so a bone's
local rotation is L = G_parent^-1 G = C M C^-1, and its joint's offset is its parent bone's
direction*length (zero for the bones that start at the root).

Units: ASF ``:units length`` L means a file length of 1 is 1/L inch (CMU writes L = 0.45, so a
7.6-unit femur is 0.43 m); angles follow ``angle deg|rad`` (ASF) and ``:DEGREES``/``:RADIANS``
(AMC). AMC has no frame rate: CMU's nominal 120 fps, re-timed to 60 where CMU lists the trial
as captured at 60 (see `avatar.mocap.types.true_fps`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import numpy as np
from scipy.spatial.transform import Rotation

from avatar.mocap.types import (
    CMU_NOMINAL_FPS,
    MocapClip,
    MocapFormatError,
    MocapSkeleton,
    cmu_trial_id,
    detect_up_axis,
    sampled_positions,
    true_fps,
)

_INCH = 0.0254
_ROTATION_DOFS = {"rx": "x", "ry": "y", "rz": "z"}
_TRANSLATION_DOFS = {"tx": 0, "ty": 1, "tz": 2}


@dataclass
class AsfBone:
    """One ASF bone (or the root) as read, in file units."""

    name: str
    direction: np.ndarray  # (3,) unit vector in world axes at rest (zero for the root)
    length: float
    axis: np.ndarray  # (3, 3) C: the bone's local frame in world axes at rest
    dofs: tuple[str, ...]  # AMC channels in file order: rx ry rz (tx ty tz l for the root/rare)


@dataclass
class AsfSkeleton:
    path: str
    skeleton: MocapSkeleton  # the root and one joint per bone, parents before children
    bones: list[AsfBone]  # per skeleton joint; bones[0] is the root (dofs = its ``order``)
    root_position: np.ndarray  # (3,) ``:root position``, added to the AMC root translation
    units_to_metres: float
    degrees: bool  # the ASF's angle unit, the default for its AMC files
    notes: list[str] = field(default_factory=list)


def _euler(order: str, angles: np.ndarray, degrees: bool) -> np.ndarray:
    """Rotation matrices (..., 3, 3) of rotations about fixed axes applied in ``order`` ("xyz"
    applies x first: Rz Ry Rx)."""
    angles = np.asarray(angles, dtype=float)
    flat = angles.reshape(-1, len(order))
    return Rotation.from_euler(order, flat, degrees=degrees).as_matrix().reshape(*angles.shape[:-1], 3, 3)


def read_asf(path: str | Path) -> AsfSkeleton:
    """Read an ASF skeleton; raises `MocapFormatError` naming the file and the problem."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as err:
        raise MocapFormatError(f"{path}: cannot read ({err})") from err

    def fail(n: int, what: str) -> MocapFormatError:
        return MocapFormatError(f"{path}: line {n}: {what}")

    def floats(tokens: list[str], n: int, count: int, what: str) -> np.ndarray:
        if len(tokens) != count:
            raise fail(n, f"{what} needs {count} values, got {len(tokens)}")
        try:
            return np.array(tokens, dtype=float)
        except ValueError:
            raise fail(n, f"non-numeric {what}: {' '.join(tokens)!r}") from None

    section = ""
    length_unit, degrees = 1.0, True
    root = {
        "order": ["TX", "TY", "TZ", "RX", "RY", "RZ"],
        "axis": "XYZ",
        "position": np.zeros(3),
        "orientation": np.zeros(3),
    }
    bones: dict[str, dict] = {}
    bone: dict | None = None
    children: dict[str, list[str]] = {}
    in_hierarchy = False
    for n, line in enumerate(lines, start=1):
        tokens = line.split()
        if not tokens or tokens[0].startswith("#"):
            continue
        key = tokens[0]
        if key.startswith(":"):
            section = key
            continue
        if section == ":units":
            if key == "length":
                length_unit = float(floats(tokens[1:], n, 1, "length unit")[0])
                if length_unit <= 0:
                    raise fail(n, f"length unit {length_unit} is not positive")
            elif key == "angle":
                if tokens[1:] not in (["deg"], ["rad"]):
                    raise fail(n, f"angle unit must be deg or rad, got {' '.join(tokens[1:])!r}")
                degrees = tokens[1] == "deg"
        elif section == ":root":
            if key == "order":
                root["order"] = [t.upper() for t in tokens[1:]]
            elif key == "axis":
                root["axis"] = tokens[1].upper() if len(tokens) == 2 else ""
            elif key in ("position", "orientation"):
                root[key] = floats(tokens[1:], n, 3, key)
        elif section == ":bonedata":
            if key == "begin":
                if bone is not None:
                    raise fail(n, "'begin' inside a bone (missing 'end')")
                bone = {"line": n, "dof": []}
            elif key == "end":
                if bone is None:
                    raise fail(n, "'end' without 'begin'")
                for needed in ("name", "direction", "length", "axis"):
                    if needed not in bone:
                        raise fail(bone["line"], f"bone {bone.get('name', '?')} has no {needed}")
                if bone["name"] in bones or bone["name"] == "root":
                    raise fail(bone["line"], f"bone name {bone['name']} is used twice")
                bones[bone["name"]] = bone
                bone = None
            elif bone is None:
                raise fail(n, f"{key!r} outside a begin/end bone block")
            elif key == "name":
                bone["name"] = " ".join(tokens[1:])
            elif key == "direction":
                bone["direction"] = floats(tokens[1:], n, 3, "direction")
            elif key == "length":
                bone["length"] = float(floats(tokens[1:], n, 1, "length")[0])
            elif key == "axis":
                bone["axis"] = floats(tokens[1:4], n, 3, "axis")
                bone["axis_order"] = tokens[4].upper() if len(tokens) == 5 else "XYZ"
            elif key == "dof":
                bone["dof"] = [t.lower() for t in tokens[1:]]
            # id, bodymass, cofmass, limits (and their continuation lines) do not matter here
        elif section == ":hierarchy":
            if key == "begin":
                in_hierarchy = True
            elif key == "end":
                in_hierarchy = False
            elif in_hierarchy:
                children.setdefault(key, []).extend(tokens[1:])
    if bone is not None:
        raise MocapFormatError(f"{path}: bone block at line {bone['line']} has no 'end' (truncated file?)")
    if not bones:
        raise MocapFormatError(f"{path}: no :bonedata bones")
    if not children:
        raise MocapFormatError(f"{path}: no :hierarchy section")

    # Joints in depth-first order from the root, following the hierarchy's child order.
    names, parents, stack, seen = [], [], [("root", -1)], set()
    while stack:
        name, parent = stack.pop()
        if name in seen:
            raise MocapFormatError(f"{path}: bone {name} appears twice in the hierarchy")
        if name != "root" and name not in bones:
            raise MocapFormatError(f"{path}: the hierarchy names {name}, which has no bone data")
        seen.add(name)
        names.append(name)
        parents.append(parent)
        stack.extend((child, len(names) - 1) for child in reversed(children.get(name, [])))
    unplaced = sorted(set(bones) - seen)
    if unplaced:
        raise MocapFormatError(f"{path}: bones not reached from the root in the hierarchy: {unplaced}")
    unknown_parents = sorted(set(children) - seen)
    if unknown_parents:
        raise MocapFormatError(f"{path}: the hierarchy gives children to unknown bones: {unknown_parents}")

    notes = []
    order = root["order"]
    if len(set(order)) != len(order) or not set(order) <= {"TX", "TY", "TZ", "RX", "RY", "RZ"}:
        raise MocapFormatError(f"{path}: unsupported root order {' '.join(order)}")
    if not (len(root["axis"]) == 3 and set(root["axis"]) == set("XYZ")):
        raise MocapFormatError(f"{path}: root axis must be an order of XYZ, got {root['axis']!r}")
    root_frame = _euler(root["axis"].lower(), root["orientation"], degrees)
    asf_bones = [AsfBone("root", np.zeros(3), 0.0, root_frame, tuple(t.lower() for t in order))]
    for name in names[1:]:
        data = bones[name]
        direction = data["direction"]
        norm = np.linalg.norm(direction)
        if norm < 1e-12 and data["length"] != 0:
            raise MocapFormatError(f"{path}: bone {name} has a zero direction")
        axis_order = data["axis_order"]
        if not (len(axis_order) == 3 and set(axis_order) == set("XYZ")):
            raise MocapFormatError(f"{path}: bone {name}: axis order must be an order of XYZ, got {axis_order!r}")
        unknown = [d for d in data["dof"] if d not in _ROTATION_DOFS and d not in (*_TRANSLATION_DOFS, "l")]
        if unknown:
            raise MocapFormatError(f"{path}: bone {name} has unknown dofs {unknown}")
        if any(d not in _ROTATION_DOFS for d in data["dof"]):
            notes.append(f"bone {name}: translation/length dofs {data['dof']} are read but not applied")
        frame = _euler(axis_order.lower(), data["axis"], degrees)
        asf_bones.append(AsfBone(name, direction / max(norm, 1e-12), data["length"], frame, tuple(data["dof"])))

    offsets = np.zeros((len(names), 3))
    end_offsets = {}
    has_children = {p for p in parents if p >= 0}
    for j in range(1, len(names)):
        parent = asf_bones[parents[j]]
        offsets[j] = parent.direction * parent.length
        if j not in has_children:
            end_offsets[j] = asf_bones[j].direction * asf_bones[j].length
    skeleton = MocapSkeleton(names=names, parents=parents, offsets=offsets, end_offsets=end_offsets)
    return AsfSkeleton(str(path), skeleton, asf_bones, root["position"], _INCH / length_unit, degrees, notes)


def find_asf(amc_path: str | Path) -> Path | None:
    """The ASF of an AMC in the same folder: for trial SS_TT, the ASF named for subject SS
    ("SS.asf", "7.asf", "07-walk.asf"); for other names, the folder's only ASF."""
    amc_path = Path(amc_path)
    candidates = sorted(amc_path.parent.glob("*.asf"))
    trial = cmu_trial_id(amc_path)
    if trial is None:
        return candidates[0] if len(candidates) == 1 else None
    subject = int(trial.split("_")[0])
    for candidate in candidates:
        match = re.match(r"[0-9]+", candidate.stem)
        if match and int(match.group()) == subject:
            return candidate
    return None


def read_amc(amc_path: str | Path, asf: str | Path | AsfSkeleton | None = None) -> MocapClip:
    """Read an AMC motion with its ASF skeleton (a path, an already read `AsfSkeleton`, or
    None to look for it with `find_asf`)."""
    amc_path = Path(amc_path)
    if asf is None:
        asf = find_asf(amc_path)
        if asf is None:
            raise MocapFormatError(f"{amc_path}: no ASF skeleton beside it (expected the subject's SS.asf)")
    if not isinstance(asf, AsfSkeleton):
        asf = read_asf(asf)
    try:
        text = amc_path.read_text(encoding="utf-8", errors="replace")
    except OSError as err:
        raise MocapFormatError(f"{amc_path}: cannot read ({err})") from err

    lines = text.splitlines()
    degrees, start = asf.degrees, None
    for n, line in enumerate(lines):
        stripped = line.strip()
        if stripped.upper() == ":RADIANS":
            degrees = False
        elif stripped.upper() == ":DEGREES":
            degrees = True
        elif stripped.isdigit():
            start = n
            break
        elif stripped and not stripped.startswith(("#", ":")):
            raise MocapFormatError(f"{amc_path}: line {n + 1}: expected a frame number, got {stripped[:40]!r}")
    if start is None:
        raise MocapFormatError(f"{amc_path}: no frames")
    frame_numbers, values, layout = _parse_frames(lines, start, asf, amc_path)

    notes = list(asf.notes)
    unmoved = [b.name for b in asf.bones if b.dofs and b.name not in layout]
    if unmoved:
        notes.append(f"bones with dofs but no AMC values (kept at rest): {unmoved}")
    if not np.array_equal(frame_numbers, np.arange(frame_numbers[0], frame_numbers[0] + len(frame_numbers))):
        first, last = frame_numbers[0], frame_numbers[-1]
        notes.append(f"frame numbers are not consecutive ({first} to {last} in {len(frame_numbers)} frames)")

    T, J = len(frame_numbers), len(asf.bones)
    local = np.broadcast_to(np.eye(3), (T, J, 3, 3)).copy()
    root_positions = np.broadcast_to(asf.root_position, (T, 3)).copy()
    for j, bone in enumerate(asf.bones):
        if bone.name not in layout:
            continue
        columns = values[:, layout[bone.name]]  # (T, len(dofs))
        rot = [k for k, d in enumerate(bone.dofs) if d in _ROTATION_DOFS]
        if rot:
            M = _euler("".join(_ROTATION_DOFS[bone.dofs[k]] for k in rot), columns[:, rot], degrees)
            local[:, j] = bone.axis @ M @ bone.axis.T
        if j == 0:
            for k, d in enumerate(bone.dofs):
                if d in _TRANSLATION_DOFS:
                    root_positions[:, _TRANSLATION_DOFS[d]] += columns[:, k]

    fps, fps_note = true_fps(CMU_NOMINAL_FPS, amc_path)
    notes.append(f"AMC has no frame rate: assumed CMU's {CMU_NOMINAL_FPS:g} fps")
    if fps_note:
        notes.append(fps_note)
    notes.append(f"units: ASF length unit {_INCH / asf.units_to_metres:g}: 1 file unit = {asf.units_to_metres:.5g} m")
    clip = MocapClip(str(amc_path), asf.skeleton, local, root_positions, fps, asf.units_to_metres, notes=notes)
    clip.up_axis, up_note = detect_up_axis(asf.skeleton, sampled_positions(clip))
    if up_note:
        notes.append(up_note)
    return clip


def _parse_frames(
    lines: list[str], start: int, asf: AsfSkeleton, path: Path
) -> tuple[np.ndarray, np.ndarray, dict[str, list[int]]]:
    """Frame numbers (T,), values (T, C) and bone name -> its C columns, from the AMC body.

    Fast path: every frame lists the same bones in the same order (CMU's files do), so the
    whole body is one token array reshaped to (T, tokens per frame). Anything else goes through
    `_diagnose` for a precise error.
    """
    dofs = {b.name: len(b.dofs) for b in asf.bones}
    # The first frame fixes the layout: bone order and where each bone's values sit.
    layout: dict[str, list[int]] = {}
    names_at: list[tuple[int, str]] = []  # token position of each bone name within a frame
    position, column = 1, 0
    for n in range(start + 1, len(lines)):
        tokens = lines[n].split()
        if not tokens:
            continue
        if tokens[0].isdigit() and len(tokens) == 1:
            break
        name = tokens[0]
        if name not in dofs:
            raise MocapFormatError(f"{path}: line {n + 1}: bone {name!r} is not in the ASF {asf.path}")
        if name in layout:
            raise MocapFormatError(f"{path}: line {n + 1}: bone {name} twice in frame 0")
        if len(tokens) - 1 != dofs[name]:
            count = len(tokens) - 1
            raise MocapFormatError(
                f"{path}: line {n + 1}: bone {name} has {count} values, the ASF declares {dofs[name]} dofs"
            )
        names_at.append((position, name))
        layout[name] = list(range(column, column + dofs[name]))
        position += 1 + dofs[name]
        column += dofs[name]
    stride = position

    tokens = np.array("\n".join(lines[start:]).split(), dtype=object)
    if len(tokens) % stride:
        _diagnose(lines, start, layout, path)
    table = tokens.reshape(-1, stride)
    for pos, name in names_at:
        if not (table[:, pos] == name).all():
            _diagnose(lines, start, layout, path)
    value_columns = [c for c in range(1, stride) if c not in {pos for pos, _ in names_at}]
    try:
        frame_numbers = table[:, 0].astype(np.int64)
        values = table[:, value_columns].astype(float)
    except ValueError:
        _diagnose(lines, start, layout, path)
    if not np.isfinite(values).all():
        i = int(np.nonzero(~np.isfinite(values).all(axis=1))[0][0])
        raise MocapFormatError(f"{path}: frame {frame_numbers[i]} has non-finite values")
    return frame_numbers, values, layout


def _diagnose(lines: list[str], start: int, layout: dict[str, list[int]], path: Path) -> NoReturn:
    """Walk the AMC body line by line and raise a `MocapFormatError` at the first frame that
    does not match the layout of the first frame."""
    expected = list(layout)
    frame, seen = None, []

    def check_frame(last_line: int, at_end: bool) -> None:
        if frame is not None and seen != expected:
            missing = [b for b in expected if b not in seen]
            what = f"misses bones {missing}" if missing else f"lists bones in another order: {seen}"
            hint = " (truncated file?)" if at_end else ""
            raise MocapFormatError(f"{path}: frame {frame} (ending line {last_line}) {what}{hint}")

    for n in range(start, len(lines)):
        tokens = lines[n].split()
        if not tokens:
            continue
        if len(tokens) == 1 and tokens[0].isdigit():
            check_frame(n, at_end=False)
            frame, seen = int(tokens[0]), []
            continue
        name, where = tokens[0], f"{path}: line {n + 1}: frame {frame}"
        if name not in layout:
            raise MocapFormatError(f"{where}: unexpected {name!r}")
        if len(tokens) - 1 != len(layout[name]):
            raise MocapFormatError(f"{where}: bone {name} has {len(tokens) - 1} values, expected {len(layout[name])}")
        try:
            np.array(tokens[1:], dtype=float)
        except ValueError:
            raise MocapFormatError(f"{where}: non-numeric value for bone {name}: {' '.join(tokens[1:])!r}") from None
        seen.append(name)
    check_frame(len(lines), at_end=True)
    raise MocapFormatError(f"{path}: malformed frame data")
