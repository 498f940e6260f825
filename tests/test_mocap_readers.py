"""Mocap readers: BVH and CMU ASF/AMC against hand-computed forward kinematics, malformed files,
folder loading, frame-rate and T-pose rules, and a few real clips of the shared corpus."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from avatar.mocap import (
    MocapFormatError,
    cmu_trial_id,
    load_folder,
    read_amc,
    read_asf,
    read_bvh,
    true_fps,
)
from avatar.mocap.bvh import UNITS

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "mocap"  # the repo is cloned beside shared/


def rx(deg):
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def ry(deg):
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def rz(deg):
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


AXIS = {"X": rx, "Y": ry, "Z": rz}


def points(clip):
    """World positions (T, J + E, 3) of the joints and then the End Sites."""
    rot, pos = clip.global_transforms()
    ends = [pos[:, j] + rot[:, j] @ offset for j, offset in clip.skeleton.end_offsets.items()]
    return np.concatenate([pos, np.stack(ends, axis=1)], axis=1) if ends else pos


# --- BVH -----------------------------------------------------------------------------------

# Root with an OFFSET and 6 channels; Spine in XYZ order; Head with 6 channels in YZX order
# (its translation channels repeat its offset, as MotionBuilder writes them); Leg in ZXY order.
HIERARCHY = """HIERARCHY
ROOT Hips
{
  OFFSET 0 10 0
  CHANNELS 6 Xposition Yposition Zposition Zrotation Yrotation Xrotation
  JOINT Spine
  {
    OFFSET 0 1 0
    CHANNELS 3 Xrotation Yrotation Zrotation
    JOINT Head
    {
      OFFSET 0 1 0
      CHANNELS 6 Xposition Yposition Zposition Yrotation Zrotation Xrotation
      End Site
      {
        OFFSET 0 0.5 0
      }
    }
  }
  JOINT Leg
  {
    OFFSET 1 0 0
    CHANNELS 3 Zrotation Xrotation Yrotation
    End Site
    {
      OFFSET 0 -2 0
    }
  }
}
"""


def bvh_text(frames, frame_time=1 / 30, hierarchy=HIERARCHY, declared=None):
    rows = "\n".join(" ".join(f"{v:g}" for v in frame) for frame in frames)
    count = len(frames) if declared is None else declared
    return f"{hierarchy}MOTION\nFrames: {count}\nFrame Time: {frame_time:.7f}\n{rows}\n"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_bvh_forward_kinematics_matches_hand_computed_positions(tmp_path):
    frames = [
        # root pos, root ZYX, spine XYZ, head pos + YZX, leg ZXY
        [1, 2, 3, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0],
        [0, 0, 0, 90, 0, 0, 90, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0],
    ]
    clip = read_bvh(write(tmp_path / "tiny.bvh", bvh_text(frames)))
    assert clip.skeleton.names == ["Hips", "Spine", "Head", "Leg"]
    assert clip.skeleton.parents == [-1, 0, 1, 0]
    assert clip.num_frames == 2 and clip.fps == 30.0
    np.testing.assert_allclose(clip.skeleton.end_offsets[2], [0, 0.5, 0])
    np.testing.assert_allclose(clip.skeleton.end_offsets[3], [0, -2, 0])
    # The root's position is its OFFSET plus its channels.
    np.testing.assert_allclose(clip.root_positions, [[1, 12, 3], [0, 10, 0]])

    # Frame 1, by hand: the root turns 90 deg about Z (y -> -x), the spine 90 deg about X (y -> z).
    expected = np.array([
        [0, 10, 0],  # Hips
        [-1, 10, 0],  # Spine: root + Rz90 (0, 1, 0)
        [-1, 10, 1],  # Head: spine + Rz90 Rx90 (0, 1, 0)
        [0, 11, 0],  # Leg: root + Rz90 (1, 0, 0)
        [-1, 10, 1.5],  # Head's End Site: head + Rz90 Rx90 (0, 0.5, 0)
        [2, 11, 0],  # Leg's End Site: leg + Rz90 (0, -2, 0)
    ])  # fmt: skip
    np.testing.assert_allclose(points(clip)[1], expected, atol=1e-9)
    np.testing.assert_allclose(points(clip)[0, :4], [[1, 12, 3], [1, 13, 3], [1, 14, 3], [2, 12, 3]], atol=1e-9)


@pytest.mark.parametrize("order", ["XYZ", "ZYX", "YZX", "ZXY", "XZY", "YXZ"])
def test_bvh_rotation_channels_compose_in_channel_order(tmp_path, order):
    """CHANNELS Arotation Brotation Crotation means R = RA @ RB @ RC (intrinsic, as scipy's
    upper-case sequences), for roots and joints, whatever the order."""
    hierarchy = (
        "HIERARCHY\nROOT r\n{\n OFFSET 0 0 0\n CHANNELS 6 "
        + " ".join(f"{a}rotation" for a in order)
        + " Xposition Yposition Zposition\n JOINT j\n {\n  OFFSET 0 1 0\n  CHANNELS 3 "
        + " ".join(f"{a}rotation" for a in order)
        + "\n  End Site\n  {\n   OFFSET 0 1 0\n  }\n }\n}\n"
    )
    angles = np.array([[30.0, -50.0, 70.0, 0.5, 0.25, -1.0, -20.0, 45.0, 110.0]])
    clip = read_bvh(write(tmp_path / "order.bvh", bvh_text(angles, hierarchy=hierarchy)))
    for joint, a in ((0, angles[0, :3]), (1, angles[0, 6:])):
        by_hand = AXIS[order[0]](a[0]) @ AXIS[order[1]](a[1]) @ AXIS[order[2]](a[2])
        np.testing.assert_allclose(clip.local_rotations[0, joint], by_hand, atol=1e-12)
        np.testing.assert_allclose(by_hand, Rotation.from_euler(order, a, degrees=True).as_matrix(), atol=1e-12)
    np.testing.assert_allclose(clip.root_positions[0], [0.5, 0.25, -1.0])  # position channels after rotations


def test_bvh_varying_translation_channels_of_a_joint_are_noted(tmp_path):
    frames = np.zeros((3, 18))
    frames[:, 10] = [1.0, 1.5, 2.0]  # Head's Y translation stretches
    clip = read_bvh(write(tmp_path / "stretch.bvh", bvh_text(frames)), drop_tpose=False)
    np.testing.assert_allclose(clip.skeleton.offsets[2], [0, 1.5, 0])
    assert any("Head translation channels vary" in note for note in clip.notes)


MALFORMED = {
    "no MOTION section": lambda good: good.split("MOTION")[0],
    "frame 1 (line 34) has 17 values, expected 18": lambda good: good.rstrip().rsplit(" ", 1)[0] + "\n",
    "header declares 3 frames but the file has 2": lambda good: good.replace("Frames: 2", "Frames: 3"),
    "non-numeric value in frame 0": lambda good: good.replace("\n1 2 3", "\n1 2 abc"),
    "unbalanced braces: 1 block(s) not closed": lambda good: good.replace("  }\n}\n", "  }\n"),
    "'}' closes nothing": lambda good: good.replace("}\nMOTION", "}\n}\nMOTION"),
    "CHANNELS 3 lists 2 channels": lambda good: good.replace(
        "3 Xrotation Yrotation Zrotation", "3 Xrotation Yrotation"
    ),
    "unknown channel 'Wrotation'": lambda good: good.replace(
        "Zrotation Xrotation Yrotation", "Wrotation Xrotation Yrotation"
    ),
    "OFFSET needs 3 values": lambda good: good.replace("OFFSET 1 0 0", "OFFSET 1 0"),
}


@pytest.mark.parametrize("problem", list(MALFORMED))
def test_malformed_bvh_raises_naming_the_file_and_the_problem(tmp_path, problem):
    good = bvh_text([[1, 2, 3] + [0] * 15, [0] * 18])
    read_bvh(write(tmp_path / "good.bvh", good))
    path = write(tmp_path / "broken.bvh", MALFORMED[problem](good))
    with pytest.raises(MocapFormatError) as err:
        read_bvh(path)
    assert str(path) in str(err.value) and problem in str(err.value)


CHAIN = """HIERARCHY
ROOT Hips
{
  OFFSET 0 0 0
  CHANNELS 6 Xposition Yposition Zposition Zrotation Yrotation Xrotation
  JOINT Chest
  {
    OFFSET 0 0.5 0
    CHANNELS 3 Zrotation Yrotation Xrotation
    End Site
    {
      OFFSET 0 0.5 0
    }
  }
  JOINT Thigh
  {
    OFFSET 0.1 0 0
    CHANNELS 3 Zrotation Yrotation Xrotation
    JOINT Shin
    {
      OFFSET 0 -0.4 0
      CHANNELS 3 Zrotation Yrotation Xrotation
      End Site
      {
        OFFSET 0 -0.4 0
      }
    }
  }
}
"""


def chain_frames(first_rotation, n=60):
    """Root at hip height, every joint rotated by a slow oscillation around 25 degrees."""
    t = np.arange(n)[:, None]
    rotations = np.repeat(25.0 + 3.0 * np.sin(t / 10.0), 12, axis=1)
    rotations[0] = first_rotation
    return np.hstack([np.tile([0.0, 0.9, 0.0], (n, 1)), rotations])


def test_added_tpose_frame_is_dropped_and_noted(tmp_path):
    path = write(tmp_path / "05_01.bvh", bvh_text(chain_frames(0.0), frame_time=0.0083333, hierarchy=CHAIN))
    clip = read_bvh(path)
    assert clip.num_frames == 59
    assert "dropped the added T-pose frame 0" in clip.notes
    assert not np.allclose(clip.local_rotations[0], np.eye(3))
    assert read_bvh(path, drop_tpose=False).num_frames == 60
    # A clip that starts in its rest pose and moves away smoothly keeps its first frame.
    ramp = chain_frames(0.0)
    ramp[:, 3:] = np.linspace(0, 30, 60)[:, None]
    clip = read_bvh(write(tmp_path / "ramp.bvh", bvh_text(ramp, hierarchy=CHAIN)))
    assert clip.num_frames == 60 and not any("T-pose" in note for note in clip.notes)


def test_units_and_up_axis_are_guessed_from_the_skeleton_size(tmp_path):
    # CHAIN is a body 1.8 units tall (toe to head) standing along +Y; scaled to about 1.7 m.
    for scale, unit in ((1.0, "metres"), (95.0, "centimetres"), (37.0, "inches"), (17.0, "CMU units (1/0.45 inch)")):
        frames = chain_frames(25.0)
        frames[:, :3] *= scale
        hierarchy = CHAIN
        for offset in ("0 0.5 0", "0.1 0 0", "0 -0.4 0"):
            scaled = " ".join(f"{float(v) * scale:g}" for v in offset.split())
            hierarchy = hierarchy.replace(f"OFFSET {offset}", f"OFFSET {scaled}")
        clip = read_bvh(write(tmp_path / f"s{scale}.bvh", bvh_text(frames, hierarchy=hierarchy)))
        assert clip.units_to_metres == UNITS[unit], (scale, clip.notes)
        assert any(note.startswith("units: ") and unit in note for note in clip.notes)
        assert clip.up_axis == "y"
    # The same body standing along +Z.
    z_up = CHAIN.replace("OFFSET 0 0.5 0", "OFFSET 0 0 0.5").replace("OFFSET 0 -0.4 0", "OFFSET 0 0 -0.4")
    assert read_bvh(write(tmp_path / "z.bvh", bvh_text(chain_frames(25.0), hierarchy=z_up))).up_axis == "z"


def test_cmu_trial_ids_and_frame_rates():
    assert cmu_trial_id("x/05_01.bvh") == "05_01"
    assert cmu_trial_id("acrnn_salsa_01__60_01.bvh") == "60_01"
    assert cmu_trial_id("131_04-dance.amc") == "131_04"
    assert cmu_trial_id("7_5.amc") == "07_05"
    assert cmu_trial_id("acrnn_indian_04__S94.bvh") is None
    assert true_fps(1 / 0.0083333, "05_01.bvh") == (120.0, None)
    assert true_fps(1 / 0.016667, "01_08.bvh") == (60.0, None)  # already 60: nothing to re-time
    assert true_fps(24.0, "60_01.bvh") == (24.0, None)
    for slow in ("60_01.bvh", "88_05.bvh", "33_01.amc", "136_19.amc"):
        fps, note = true_fps(1 / 0.0083333, slow)
        assert fps == 60.0 and "re-timed 120 -> 60 fps" in note
    assert true_fps(120.0, "136_18.amc") == (120.0, None)
    assert true_fps(120.0, "no_trial_id.bvh") == (120.0, None)


def test_bvh_of_a_60fps_cmu_subject_is_retimed(tmp_path):
    frames = chain_frames(25.0, n=10)
    clip = read_bvh(write(tmp_path / "88_01.bvh", bvh_text(frames, frame_time=0.0083333, hierarchy=CHAIN)))
    assert clip.fps == 60.0 and clip.trial_id == "88_01"
    assert any("re-timed 120 -> 60 fps" in note for note in clip.notes)


# --- ASF/AMC ---------------------------------------------------------------------------------

ASF = """# tiny test skeleton
:version 1.10
:name VICON
:units
  mass 1.0
  length 0.45
  angle deg
:documentation
  spine up, arm along +x on top of it (local frame turned 90 deg about z), leg down
:root
   order TX TY TZ RX RY RZ
   axis XYZ
   position 0 0 0
   orientation 0 0 0
:bonedata
  begin
     id 1
     name spine
     direction 0 1 0
     length 2
     axis 0 0 0  XYZ
    dof rx ry rz
    limits (-180.0 180.0)
           (-180.0 180.0)
           (-180.0 180.0)
  end
  begin
     id 2
     name arm
     direction 1 0 0
     length 3
     axis 0 0 90  XYZ
    dof rx
    limits (-180.0 180.0)
  end
  begin
     id 3
     name leg
     direction 0 -1 0
     length 4
     axis 0 0 0  XYZ
    dof rx rz
    limits (-180.0 180.0)
           (-180.0 180.0)
  end
:hierarchy
  begin
    root spine leg
    spine arm
  end
"""

AMC = """#!OML:ASF tiny.asf
:FULLY-SPECIFIED
:DEGREES
1
root 1 2 3 0 0 0
spine 0 0 0
arm 0
leg 0 0
2
root 0 0 0 0 0 90
spine 90 0 0
arm 90
leg 0 0
"""


def test_asf_skeleton_is_converted_to_bone_start_joints(tmp_path):
    asf = read_asf(write(tmp_path / "01.asf", ASF))
    skeleton = asf.skeleton
    assert skeleton.names == ["root", "spine", "arm", "leg"]
    assert skeleton.parents == [-1, 0, 1, 0]
    # A joint sits where its bone starts: at the end of its parent bone.
    np.testing.assert_allclose(skeleton.offsets, [[0, 0, 0], [0, 0, 0], [0, 2, 0], [0, 0, 0]])
    np.testing.assert_allclose(skeleton.end_offsets[2], [3, 0, 0])
    np.testing.assert_allclose(skeleton.end_offsets[3], [0, -4, 0])
    assert set(skeleton.end_offsets) == {2, 3}
    assert asf.units_to_metres == pytest.approx(0.0254 / 0.45)
    assert asf.bones[2].dofs == ("rx",) and asf.bones[0].dofs == ("tx", "ty", "tz", "rx", "ry", "rz")
    np.testing.assert_allclose(asf.bones[2].axis, rz(90), atol=1e-12)


def test_amc_forward_kinematics_matches_hand_computed_positions(tmp_path):
    write(tmp_path / "01.asf", ASF)
    clip = read_amc(write(tmp_path / "01_01.amc", AMC))  # finds 01.asf beside it
    assert clip.num_frames == 2 and clip.fps == 120.0 and clip.up_axis == "y"
    assert clip.units_to_metres == pytest.approx(0.0254 / 0.45)
    rest = points(clip)[0]
    np.testing.assert_allclose(rest, [[1, 2, 3], [1, 2, 3], [1, 4, 3], [1, 2, 3], [4, 4, 3], [1, -2, 3]], atol=1e-9)
    # Frame 2, by hand: root Rz90; spine rx 90; the arm's rx 90 is about its local x axis,
    # which its axis (0 0 90) turns onto world y: a 90 deg turn about y in the spine's frame.
    expected = np.array([
        [0, 0, 0],  # root
        [0, 0, 0],  # spine starts at the root
        [0, 0, 2],  # arm: Rz90 Rx90 (0, 2, 0)
        [0, 0, 0],  # leg starts at the root
        [-3, 0, 2],  # arm end: + Rz90 Rx90 Ry90 (3, 0, 0)
        [4, 0, 0],  # leg end: Rz90 (0, -4, 0)
    ])  # fmt: skip
    np.testing.assert_allclose(points(clip)[1], expected, atol=1e-9)


def reference_asf_amc_positions(asf_text: str, amc_text: str) -> list[dict[str, np.ndarray]]:
    """Bone start positions per frame, straight from the ASF/AMC spec as CMU's viewer and
    mocapPlayer compute them: W = W_parent C_parent^-1 C M; a bone spans W C^-1 dir * length."""
    bones, children, section, bone = {}, {}, "", None
    for line in asf_text.splitlines():
        t = line.split()
        if not t or t[0].startswith("#"):
            continue
        if t[0].startswith(":"):
            section = t[0]
        elif section == ":bonedata":
            if t[0] == "begin":
                bone = {"dof": []}
            elif t[0] == "end":
                bones[bone["name"]] = bone
            elif t[0] == "name":
                bone["name"] = t[1]
            elif t[0] == "direction":
                bone["dir"] = np.array(t[1:4], float)
            elif t[0] == "length":
                bone["len"] = float(t[1])
            elif t[0] == "axis":
                ax = [float(v) for v in t[1:4]]
                bone["C"] = rz(ax[2]) @ ry(ax[1]) @ rx(ax[0])
            elif t[0] == "dof":
                bone["dof"] = t[1:]
        elif section == ":hierarchy" and t[0] not in ("begin", "end"):
            children[t[0]] = t[1:]
    frames = []
    for line in amc_text.splitlines():
        t = line.split()
        if not t or t[0].startswith(("#", ":")):
            continue
        if len(t) == 1 and t[0].isdigit():
            frames.append({})
        else:
            frames[-1][t[0]] = [float(v) for v in t[1:]]
    result = []
    for frame in frames:
        r = frame["root"]
        world = {"root": rz(r[5]) @ ry(r[4]) @ rx(r[3])}
        start = {"root": np.array(r[:3])}
        end = dict(start)
        todo = ["root"]
        while todo:
            parent = todo.pop()
            c_parent = bones[parent]["C"] if parent != "root" else np.eye(3)
            for name in children.get(parent, []):
                b = bones[name]
                motion = np.eye(3)
                for dof, value in zip(b["dof"], frame.get(name, [])):
                    motion = AXIS[dof[1].upper()](value) @ motion  # each later dof applied after
                world[name] = world[parent] @ np.linalg.inv(c_parent) @ b["C"] @ motion
                start[name] = end[parent]
                end[name] = start[name] + world[name] @ np.linalg.inv(b["C"]) @ b["dir"] * b["len"]
                todo.append(name)
        result.append(start)
    return result


def test_amc_matches_an_independent_implementation_of_the_spec(tmp_path):
    """Random angles on bones with skewed local frames and partial dofs."""
    asf = ASF.replace("axis 0 0 0  XYZ\n    dof rx ry rz", "axis 10 -35 60  XYZ\n    dof rx ry rz")
    asf = asf.replace("axis 0 0 90  XYZ", "axis -20 15 90  XYZ").replace("direction 0 -1 0", "direction 0.6 -0.8 0")
    rng = np.random.default_rng(0)
    lines = ["#!OML:ASF", ":FULLY-SPECIFIED", ":DEGREES"]
    for f in range(1, 6):
        a = rng.uniform(-120, 120, size=9)
        root = f"root {a[0] / 9:g} {a[1] / 9:g} {a[2] / 9:g} {a[3]:g} {a[4]:g} {a[5]:g}"
        lines += [str(f), root, f"spine {a[6]:g} {a[7]:g} {a[8]:g}", f"arm {a[0]:g}", f"leg {a[1]:g} {a[2]:g}"]
    amc = "\n".join(lines) + "\n"
    clip = read_amc(write(tmp_path / "01_01.amc", amc), write(tmp_path / "tiny.asf", asf))
    _, positions = clip.global_transforms()
    for t, reference in enumerate(reference_asf_amc_positions(asf, amc)):
        for j, name in enumerate(clip.skeleton.names):
            np.testing.assert_allclose(positions[t, j], reference[name], atol=1e-9)


AMC_MALFORMED = {
    "frame 2 (ending line 12) misses bones ['leg'] (truncated file?)": lambda good: good.rsplit("leg", 1)[0],
    "frame 2: bone arm has 2 values, expected 1": lambda good: good.replace("arm 90", "arm 90 5"),
    "frame 2: non-numeric value for bone spine": lambda good: good.replace("spine 90 0 0", "spine 90 x 0"),
    "bone 'tail' is not in the ASF": lambda good: good.replace("arm 0\n", "arm 0\ntail 1\n"),
    "bone arm has 2 values, the ASF declares 1 dofs": lambda good: good.replace("arm 0\n", "arm 0 1\n"),
    "no frames": lambda good: good.split("\n1\n")[0] + "\n",
}


@pytest.mark.parametrize("problem", list(AMC_MALFORMED))
def test_malformed_amc_raises_naming_the_file_and_the_problem(tmp_path, problem):
    asf = read_asf(write(tmp_path / "01.asf", ASF))
    path = write(tmp_path / "01_01.amc", AMC_MALFORMED[problem](AMC))
    with pytest.raises(MocapFormatError) as err:
        read_amc(path, asf)
    assert str(path) in str(err.value) and problem in str(err.value)


@pytest.mark.parametrize(
    ("broken", "problem"),
    [
        (
            ASF.replace("     axis 0 0 90  XYZ\n    dof rx\n    limits (-180.0 180.0)\n  end\n", ""),
            "line 32: 'begin' inside a bone (missing 'end')",
        ),
        (ASF.split("     length 4")[0], "bone block at line 36 has no 'end' (truncated file?)"),
        (ASF.replace("spine arm", "spine arm tail"), "the hierarchy names tail, which has no bone data"),
        (ASF.replace("    spine arm\n", ""), "bones not reached from the root in the hierarchy: ['arm']"),
        (ASF.replace("length 3", "length three"), "non-numeric length"),
        (ASF.split(":hierarchy")[0], "no :hierarchy section"),
    ],
)
def test_malformed_asf_raises_naming_the_file_and_the_problem(tmp_path, broken, problem):
    path = write(tmp_path / "01.asf", broken)
    with pytest.raises(MocapFormatError) as err:
        read_asf(path)
    assert str(path) in str(err.value) and problem in str(err.value)


def test_amc_of_a_60fps_cmu_subject_is_retimed(tmp_path):
    write(tmp_path / "61.asf", ASF)
    clip = read_amc(write(tmp_path / "61_03.amc", AMC))
    assert clip.fps == 60.0 and any("re-timed 120 -> 60 fps" in note for note in clip.notes)


# --- folders ---------------------------------------------------------------------------------


def test_folder_loading_reports_bad_files_and_loads_the_rest(tmp_path, caplog):
    good_bvh = bvh_text([[1, 2, 3] + [0] * 15, [0] * 18])
    (tmp_path / "a").mkdir()
    write(tmp_path / "a" / "good.bvh", good_bvh)
    write(tmp_path / "a" / "bad.bvh", good_bvh.replace("Frames: 2", "Frames: 5"))
    write(tmp_path / "a" / "notes.txt", "not motion")
    (tmp_path / "b").mkdir()
    write(tmp_path / "b" / "01.asf", ASF)
    write(tmp_path / "b" / "01_01.amc", AMC)
    write(tmp_path / "b" / "01_02.amc", AMC.rsplit("leg", 1)[0])
    write(tmp_path / "b" / "02_01.amc", AMC)  # no 02.asf beside it

    clips, problems = load_folder(tmp_path)
    assert sorted(Path(c.path).name for c in clips) == ["01_01.amc", "good.bvh"]
    reported = {Path(path).name: message for path, message in problems}
    assert set(reported) == {"bad.bvh", "01_02.amc", "02_01.amc"}
    assert "declares 5 frames" in reported["bad.bvh"] and "misses bones" in reported["01_02.amc"]
    assert "no ASF skeleton" in reported["02_01.amc"]
    assert "bad.bvh" in caplog.text  # logged as a warning too
    assert [c.trial_id for c in clips if c.path.endswith(".amc")] == ["01_01"]
    assert len(load_folder(tmp_path, formats=("bvh",))[0]) == 1
    with pytest.raises(MocapFormatError):
        load_folder(tmp_path, on_error="raise")


def test_a_folder_of_archives_is_extracted_once_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AVATAR_CACHE_DIR", str(tmp_path / "cache"))
    shared = tmp_path / "shared"
    shared.mkdir()

    def make_archive(text: str) -> None:
        data = text.encode()
        with tarfile.open(shared / "tiny_bvh.tar.xz", "w:xz") as tar:
            for name in ("tiny_bvh", "tiny_bvh/source"):
                info = tarfile.TarInfo(name)
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            info = tarfile.TarInfo("tiny_bvh/source/05_01.bvh")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

    make_archive(bvh_text([[1, 2, 3] + [0] * 15, [0] * 18]))
    clips, problems = load_folder(shared)
    extracted = tmp_path / "cache" / "mocap" / "tiny_bvh" / "source" / "05_01.bvh"
    assert problems == [] and [c.path for c in clips] == [str(extracted)]
    assert [p.name for p in extracted.parents[2].iterdir()] == ["tiny_bvh"]  # no temporary left
    mtime = extracted.stat().st_mtime_ns
    load_folder(shared)
    assert extracted.stat().st_mtime_ns == mtime  # not extracted again

    make_archive(bvh_text([[1, 2, 3] + [0] * 15] * 3))  # a changed archive replaces the old copy
    clips, _ = load_folder(shared)
    assert clips[0].num_frames == 3
    (shared / "broken.tar.xz").write_bytes(b"not an archive")
    clips, problems = load_folder(shared)
    assert len(clips) == 1 and problems[0][0].endswith("broken.tar.xz") and "cannot extract" in problems[0][1]


# --- real clips of the shared corpus -----------------------------------------------------------

REAL = {
    "cgspeed_mb": [
        "JonathanAlderson__BVH-Animation-Software/02_01.bvh",
        "JonathanAlderson__BVH-Animation-Software/05_16.bvh",
    ],
    "cmu_asfskel_loops": ["trangdang168__animation-toolkit/142_07.bvh"],
    "cmu_asfamc": ["maxxgx__motion-graphs/02.asf", "maxxgx__motion-graphs/02_03.amc"],
    "cgspeed_daz": ["Przestr__motion-capture/07_01.bvh", "oshevchuk27__animation-toolkit/88_01.bvh"],
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """The few real files these tests read, extracted from the corpus's archives."""
    if not CORPUS.is_dir():
        pytest.skip(f"no mocap corpus at {CORPUS}")
    dest = tmp_path_factory.mktemp("corpus")
    for archive, members in REAL.items():
        wanted = {f"{archive}/{m}" for m in members}
        with tarfile.open(CORPUS / f"{archive}.tar.xz", "r:xz") as tar:
            for member in tar:
                if member.name in wanted:
                    tar.extract(member, dest)
                    wanted.discard(member.name)
                    if not wanted:
                        break
        assert not wanted, f"missing from {archive}.tar.xz: {wanted}"
    return dest


def check_standing_human(clip, joints: int, fps: float, feet: tuple[str, ...]) -> None:
    """Joint count, frame rate, a human-sized rest skeleton along +Y, and feet lowest when moving.

    The rest skeleton's height (End Sites included) runs from the toe or ankle joints to the top
    of the head bone, or only to the head joint where a conversion zeroed the End Sites (CMU's
    02_01 re-export): 1.35-1.70 m in this corpus, under the subjects' full statures.
    """
    assert len(clip.skeleton.names) == joints and clip.fps == fps and clip.up_axis == "y"
    rest = clip.skeleton.rest_points()
    height = (rest[:, 1].max() - rest[:, 1].min()) * clip.units_to_metres
    assert 1.3 <= height <= 2.0, (clip.path, height)
    _, pos = clip.global_transforms()
    lowest = np.array(clip.skeleton.names)[pos[..., 1].argmin(axis=1)]
    assert np.isin(lowest, feet).mean() > 0.9, (clip.path, set(lowest))


@pytest.mark.slow
def test_real_cgspeed_motionbuilder_bvh(corpus):
    folder = corpus / "cgspeed_mb" / "JonathanAlderson__BVH-Animation-Software"
    reexport = read_bvh(folder / "02_01.bvh")  # re-exported without the T-pose
    assert reexport.num_frames == 343 and not any("T-pose" in n for n in reexport.notes)
    clip = read_bvh(folder / "05_16.bvh")
    assert clip.num_frames == 526 - 1 and "dropped the added T-pose frame 0" in clip.notes
    assert clip.units_to_metres == pytest.approx(0.0254 / 0.45) and clip.trial_id == "05_16"
    for c in (reexport, clip):
        check_standing_human(c, 31, 120.0, ("LeftToeBase", "RightToeBase", "LeftFoot", "RightFoot"))


def test_real_cmu_asf_named_looping_bvh(corpus):
    clip = read_bvh(corpus / "cmu_asfskel_loops" / REAL["cmu_asfskel_loops"][0])
    assert clip.num_frames == 96 and clip.units_to_metres == 0.01
    check_standing_human(clip, 29, 120.0, ("ltoes", "rtoes", "lfoot", "rfoot"))


def test_real_cgspeed_daz_bvh(corpus):
    folder = corpus / "cgspeed_daz"
    clip = read_bvh(folder / REAL["cgspeed_daz"][0])
    assert clip.units_to_metres == 0.01 and any("T-pose" in n for n in clip.notes)
    check_standing_human(clip, 43, 120.0, ("lFoot", "rFoot"))
    acrobatics = read_bvh(folder / REAL["cgspeed_daz"][1])  # subject 88: captured at 60 fps
    assert acrobatics.fps == 60.0 and any("re-timed 120 -> 60" in n for n in acrobatics.notes)


def test_real_cmu_asf_amc(corpus):
    folder = corpus / "cmu_asfamc" / "maxxgx__motion-graphs"
    clip = read_amc(folder / "02_03.amc")
    check_standing_human(clip, 31, 120.0, ("ltoes", "rtoes", "lfoot", "rfoot"))
    # Against the spec implemented independently, on a few frames.
    amc_text = (folder / "02_03.amc").read_text()
    _, positions = clip.global_transforms()
    reference = reference_asf_amc_positions((folder / "02.asf").read_text(), amc_text)
    for t in (0, clip.num_frames // 2, clip.num_frames - 1):
        for j, name in enumerate(clip.skeleton.names):
            np.testing.assert_allclose(positions[t, j], reference[t][name], atol=1e-4)  # directions are normalised


def test_real_amc_agrees_with_the_cgspeed_bvh_conversion(corpus):
    """The corpus has no trial in both formats, but subject 02's ASF and cgspeed's 31-joint BVH
    skeleton (converted from CMU's ASF/AMC) must line up joint for joint, with the same bone
    directions at rest and the same knee hinge axis in motion."""
    amc = read_amc(corpus / "cmu_asfamc" / "maxxgx__motion-graphs" / "02_03.amc")
    bvh = read_bvh(corpus / "cgspeed_mb" / "JonathanAlderson__BVH-Animation-Software" / "02_01.bvh")
    assert amc.skeleton.parents == bvh.skeleton.parents
    a, b = amc.skeleton.offsets, bvh.skeleton.offsets
    moving = (np.linalg.norm(a, axis=1) > 0.5) & (np.linalg.norm(b, axis=1) > 0.5)
    cos = np.sum(a[moving] * b[moving], axis=1) / np.linalg.norm(a[moving], axis=1) / np.linalg.norm(b[moving], axis=1)
    assert np.median(np.degrees(np.arccos(np.clip(cos, -1, 1)))) < 3
    knee_axes = []
    for clip, knee in ((amc, "ltibia"), (bvh, "LeftLeg")):
        rotvec = Rotation.from_matrix(clip.local_rotations[:, clip.skeleton.index(knee)]).as_rotvec()
        bent = np.linalg.norm(rotvec, axis=1) > np.radians(20)
        axes = rotvec[bent] / np.linalg.norm(rotvec[bent], axis=1, keepdims=True)
        mean = np.mean(axes * np.sign(axes[:, :1]), axis=0)  # a hinge: one axis, either sign
        knee_axes.append(mean / np.linalg.norm(mean))
    assert np.degrees(np.arccos(knee_axes[0] @ knee_axes[1])) < 10
