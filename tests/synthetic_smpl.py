"""A synthetic SMPL-format model file, so the licensed SMPL path is tested through smplx's real
loader without the real (licensed) model.

The body is a stick figure: one tube per bone around the canonical template skeleton, with
SMPL's array names and shapes (6,890 vertices, 24 joints, 10 shape and 207 pose directions).
It is NOT SMPL: only the file format and the joint layout are shared.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from avatar.body.skeleton import PARENTS, TEMPLATE_JOINTS_BODY_FRAME

NUM_VERTS = 6890
SMPL_PARENTS = list(PARENTS) + [20, 21]  # SMPL's hand joints hang from the wrists
RINGS, SEGMENTS = 12, 23


def _joints24() -> np.ndarray:
    joints = np.array(TEMPLATE_JOINTS_BODY_FRAME + ((0.79, 0.46, -0.05), (-0.79, 0.46, -0.05)))
    return joints


def _tube(start: np.ndarray, end: np.ndarray, radius: float) -> np.ndarray:
    axis = end - start
    axis_n = axis / np.linalg.norm(axis)
    helper = np.array([0.0, 0.0, 1.0]) if abs(axis_n[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    u = np.cross(axis_n, helper)
    u /= np.linalg.norm(u)
    v = np.cross(axis_n, u)
    angles = np.linspace(0, 2 * np.pi, RINGS, endpoint=False)
    circle = radius * (np.cos(angles)[:, None] * u + np.sin(angles)[:, None] * v)
    t = np.linspace(0.0, 1.0, SEGMENTS)
    return (start + t[:, None, None] * axis + circle[None]).reshape(-1, 3)


def make_synthetic_smpl(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    joints = _joints24()
    children = {j: [c for c, p in enumerate(SMPL_PARENTS) if p == j] for j in range(24)}
    leaf_direction = {15: (0, 0.15, 0), 10: (0, 0, 0.08), 11: (0, 0, 0.08), 22: (0.08, 0, 0), 23: (-0.08, 0, 0)}
    radius = {j: 0.05 for j in range(24)} | {0: 0.1, 3: 0.1, 6: 0.1, 9: 0.1, 15: 0.09}

    verts, faces, weights, regressor_rings = [], [], [], []
    for j in range(24):
        end = joints[children[j][0]] if children[j] else joints[j] + np.array(leaf_direction[j])
        if j in (0, 9):  # pelvis and upper spine: their tube follows the spine
            end = joints[3 if j == 0 else 12]
        tube = _tube(joints[j], end, radius[j])
        base = sum(len(x) for x in verts)
        regressor_rings.append(base + np.arange(RINGS))  # the first ring is centred on joint j
        for s in range(SEGMENTS - 1):
            for r in range(RINGS):
                a, b = base + s * RINGS + r, base + s * RINGS + (r + 1) % RINGS
                c, d = a + RINGS, b + RINGS
                faces += [(a, c, b), (b, c, d)]
        verts.append(tube)
        weights.append(np.full(len(tube), j))
    v = np.concatenate(verts)
    owner = np.concatenate(weights)
    pad = NUM_VERTS - len(v)
    assert pad >= 0
    v = np.concatenate([v, np.repeat(joints[:1], pad, axis=0)])  # unreferenced padding vertices
    owner = np.concatenate([owner, np.zeros(pad, dtype=int)])

    lbs = np.zeros((NUM_VERTS, 24))
    lbs[np.arange(NUM_VERTS), owner] = 1.0
    regressor = np.zeros((24, NUM_VERTS))
    for j, ring in enumerate(regressor_rings):
        regressor[j, ring] = 1.0 / RINGS
    shapedirs = np.zeros((NUM_VERTS, 3, 10))
    shapedirs[:, 1, 0] = 0.05 * v[:, 1]  # beta0: taller
    radial = v - (regressor[owner] @ v)  # beta1: thicker limbs
    shapedirs[:, [0, 2], 1] = 0.3 * radial[:, [0, 2]]
    shapedirs[:, :, 2:] = 1e-4 * rng.standard_normal((NUM_VERTS, 3, 8))
    return {
        "v_template": v,
        "f": np.array(faces, dtype=np.int64),
        "weights": lbs,
        "J_regressor": regressor,
        "kintree_table": np.array([[4294967295] + SMPL_PARENTS[1:], list(range(24))], dtype=np.int64),
        "shapedirs": shapedirs,
        "posedirs": np.zeros((NUM_VERTS, 3, 207)),
    }


def write_synthetic_smpl(folder: Path, gender: str = "neutral") -> Path:
    """Write <folder>/smpl/SMPL_<GENDER>.pkl (smplx's layout) and return the file path."""
    path = Path(folder) / "smpl" / f"SMPL_{gender.upper()}.pkl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(make_synthetic_smpl(), f)
    return path
