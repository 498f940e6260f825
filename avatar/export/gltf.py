"""Animated, rigged avatars as binary glTF 2.0 (``.glb``): the mesh skinned to the canonical
skeleton, and optionally one animation of a canonical motion.

What goes in the file (glTF is Y-up, the project's world is Z-up):

* a node ``<name>_z_up_to_y_up`` at the scene root turning the Z-up world into glTF's Y-up
  (-90 degrees about X, so the body's front, world -Y, becomes glTF's front +Z); under it the
  22 joint nodes, named as `JOINT_NAMES`, in the canonical hierarchy. A joint's translation is
  its rest offset from its parent (``rig.rest_joints``; the root's is the bind pose's
  ``transl``) and its rotation the bind pose's local rotation, so the nodes' global transforms
  are exactly ``Rig.joint_transforms`` (world) under the Y-up turn;
* the mesh, in its bind pose and in world coordinates, on a node at the scene root with no
  transform: glTF ignores the skinned mesh node's transform and skins with
  ``jointMatrix_j = global(joint_j) @ inverseBindMatrix_j``, here
  ``Y @ T_j(pose) @ T_j(bind)^-1`` with ``Y`` the Y-up turn, i.e. ``Y`` applied to
  ``Rig.pose(pose)`` (the inverse bind matrices are ``Rig.joint_transforms(bind)^-1``);
* the 8 largest skinning weights per vertex (``JOINTS_0/WEIGHTS_0`` and ``JOINTS_1/WEIGHTS_1``,
  renormalised to sum to one): viewers blend at most 4 or 8 influences;
* vertex colours as ``COLOR_0``: glTF's vertex colours are linear, ours are display (sRGB)
  colours, so they are linearised on writing and converted back on reading;
* with a motion, one animation: LINEAR samplers at ``frame / fps`` seconds, a rotation channel
  (unit quaternions, XYZW, sign-continuous so slerp takes the short way) for every joint and a
  translation channel for the root; ``fps`` also goes to the animation's ``extras``.

`read_animated_gltf` reads such a file back and `gltf_skinned_vertices` evaluates its skinning
as the glTF specification does, independently of `Rig`, to check the file.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

import numpy as np
import pygltflib
import roma
import torch
import trimesh

from avatar.body.skeleton import JOINT_NAMES, NUM_JOINTS, PARENTS
from avatar.body.skinning import Rig
from avatar.mocap.retarget import CanonicalMotion, motion_arrays
from avatar.utils.io import atomic_path

MAX_INFLUENCES = 8  # skinning weights kept per vertex (two JOINTS_n/WEIGHTS_n sets of 4)
# Z-up world -> glTF's Y-up: -90 degrees about X, (x, y, z) -> (x, z, -y).
Z_UP_TO_Y_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
_Z_UP_TO_Y_UP_QUAT = [-math.sqrt(0.5), 0.0, 0.0, math.sqrt(0.5)]  # XYZW

_COMPONENT_TYPES = {
    np.dtype(np.float32): pygltflib.FLOAT,
    np.dtype(np.uint8): pygltflib.UNSIGNED_BYTE,
    np.dtype(np.uint16): pygltflib.UNSIGNED_SHORT,
    np.dtype(np.uint32): pygltflib.UNSIGNED_INT,
}
_NUMPY_TYPES = {code: dtype for dtype, code in _COMPONENT_TYPES.items()} | {
    pygltflib.BYTE: np.dtype(np.int8),
    pygltflib.SHORT: np.dtype(np.int16),
}
_WIDTHS = {pygltflib.SCALAR: 1, pygltflib.VEC2: 2, pygltflib.VEC3: 3, pygltflib.VEC4: 4, pygltflib.MAT4: 16}
_SHAPES = {1: pygltflib.SCALAR, 2: pygltflib.VEC2, 3: pygltflib.VEC3, 4: pygltflib.VEC4, 16: pygltflib.MAT4}


# ---------------------------------------------------------------------- colour
def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(c: np.ndarray) -> np.ndarray:
    return np.where(c <= 0.0031308, c * 12.92, 1.055 * np.clip(c, 0.0031308, None) ** (1 / 2.4) - 0.055)


# ---------------------------------------------------------------------- writing
class _Buffer:
    """The single binary buffer of a .glb: one bufferView and one accessor per array."""

    def __init__(self, gltf: pygltflib.GLTF2) -> None:
        self.gltf = gltf
        self.chunks: list[bytes] = []
        self.length = 0

    def add(self, array: np.ndarray, target: int | None = None, min_max: bool = False, normalized: bool = False) -> int:
        """Append ``array`` (N, ...) and return its accessor's index. Matrices must be passed
        already in glTF's column-major order (the caller transposes)."""
        data = np.ascontiguousarray(array)
        if data.dtype not in _COMPONENT_TYPES:
            raise TypeError(f"glTF has no component type for {data.dtype}")
        width = int(np.prod(data.shape[1:], dtype=int))
        pad = -self.length % 4  # every bufferView starts 4-byte aligned
        self.chunks.append(b"\0" * pad + data.tobytes())
        self.length += pad
        self.gltf.bufferViews.append(
            pygltflib.BufferView(buffer=0, byteOffset=self.length, byteLength=data.nbytes, target=target)
        )
        self.length += data.nbytes
        flat = data.reshape(len(data), width)
        self.gltf.accessors.append(
            pygltflib.Accessor(
                bufferView=len(self.gltf.bufferViews) - 1,
                componentType=_COMPONENT_TYPES[data.dtype],
                normalized=normalized,
                count=len(data),
                type=_SHAPES[width],
                min=flat.min(0).tolist() if min_max else None,
                max=flat.max(0).tolist() if min_max else None,
            )
        )
        return len(self.gltf.accessors) - 1

    def blob(self) -> bytes:
        return b"".join(self.chunks) + b"\0" * (-self.length % 4)


def _numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _colors(vertex_colors: Any, num_vertices: int) -> np.ndarray:
    """(V, 3) float display colours in [0, 1] from float or uint8 input, checked."""
    colors = _numpy(vertex_colors)
    if colors.shape != (num_vertices, 3):
        raise ValueError(f"vertex_colors must be (V={num_vertices}, 3), got {colors.shape}")
    if colors.dtype == np.uint8:
        return colors.astype(np.float64) / 255.0
    colors = colors.astype(np.float64)
    if not np.isfinite(colors).all() or colors.min() < 0.0 or colors.max() > 1.0:
        raise ValueError("vertex_colors must be floats in [0, 1] (or uint8)")
    return colors


def top_influences(weights: np.ndarray, k: int = MAX_INFLUENCES) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest weights per vertex, renormalised to sum to one, and their joints, both
    (V, k) sorted by decreasing weight; unused slots have weight 0 and joint 0."""
    order = np.argsort(-weights, axis=1, kind="stable")[:, :k]
    top = np.clip(np.take_along_axis(weights, order, axis=1), 0.0, None)
    top /= np.clip(top.sum(1, keepdims=True), 1e-12, None)
    return np.where(top > 0, order, 0), top


def _unit_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    normals = trimesh.Trimesh(vertices, faces, process=False).vertex_normals.astype(np.float64)
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    return np.where(length > 1e-8, normals / np.clip(length, 1e-12, None), [0.0, 0.0, 1.0])  # isolated vertices


def _rest_translations(rig: Rig) -> np.ndarray:
    """(22, 3) node translations: rest offsets from the parent; the root's is the bind transl."""
    rest = _numpy(rig.rest_joints).astype(np.float64)
    out = np.array([rest[j] - rest[p] if p >= 0 else np.zeros(3) for j, p in enumerate(PARENTS)])
    out[0] = _numpy(rig.bind_pose.transl)[0]
    return out


def _quaternions(rotvecs: np.ndarray) -> np.ndarray:
    """Axis-angle (T, J, 3) -> unit quaternions (T, J, 4), XYZW, each joint's sequence sign-
    continuous (consecutive keys in the same hemisphere: some players slerp without flipping)."""
    quats = roma.rotvec_to_unitquat(torch.from_numpy(rotvecs)).numpy()
    for t in range(1, len(quats)):
        flip = (quats[t] * quats[t - 1]).sum(-1) < 0
        quats[t, flip] *= -1.0
    return quats


def write_animated_gltf(
    path: str | Path,
    rig: Rig,
    motion: CanonicalMotion | None = None,
    vertex_colors: Any = None,
    name: str = "avatar",
) -> Path:
    """Write ``rig`` (and ``motion``, if given, as its one animation) to a binary glTF (.glb).

    ``vertex_colors`` (V, 3): display colours, floats in [0, 1] or uint8. Without a motion the
    file holds the rig in its bind pose and no animation. See the module docstring for the
    layout and the coordinate frames. Written atomically.
    """
    vertices = _numpy(rig.vertices).astype(np.float64)
    faces = _numpy(rig.faces).astype(np.int64)
    num_v = len(vertices)
    colors = None if vertex_colors is None else _colors(vertex_colors, num_v)
    animation = None if motion is None else motion_arrays(motion)
    if faces.ndim != 2 or faces.shape[1] != 3 or (faces.size and (faces.min() < 0 or faces.max() >= num_v)):
        raise ValueError(f"rig.faces must be (F, 3) indices into the {num_v} vertices")

    gltf = pygltflib.GLTF2(asset=pygltflib.Asset(version="2.0", generator="avatar (AvatarCLIP reimplementation)"))
    buf = _Buffer(gltf)

    # Mesh: bind pose, world (Z-up) coordinates; the joints' matrices take it to glTF's Y-up.
    joints, weights = top_influences(_numpy(rig.weights).astype(np.float64))
    attributes = pygltflib.Attributes(
        POSITION=buf.add(vertices.astype(np.float32), pygltflib.ARRAY_BUFFER, min_max=True),
        NORMAL=buf.add(_unit_normals(vertices, faces).astype(np.float32), pygltflib.ARRAY_BUFFER),
        JOINTS_0=buf.add(joints[:, :4].astype(np.uint8), pygltflib.ARRAY_BUFFER),
        WEIGHTS_0=buf.add(weights[:, :4].astype(np.float32), pygltflib.ARRAY_BUFFER),
        JOINTS_1=buf.add(joints[:, 4:].astype(np.uint8), pygltflib.ARRAY_BUFFER),
        WEIGHTS_1=buf.add(weights[:, 4:].astype(np.float32), pygltflib.ARRAY_BUFFER),
    )
    if colors is not None:
        attributes.COLOR_0 = buf.add(srgb_to_linear(colors).astype(np.float32), pygltflib.ARRAY_BUFFER)
    indices = buf.add(faces.reshape(-1).astype(np.uint32), pygltflib.ELEMENT_ARRAY_BUFFER)
    gltf.materials.append(
        pygltflib.Material(
            name=f"{name}_material",  # matte, coloured by COLOR_0 (the default material is metallic)
            pbrMetallicRoughness=pygltflib.PbrMetallicRoughness(
                baseColorFactor=[1.0, 1.0, 1.0, 1.0], metallicFactor=0.0, roughnessFactor=1.0
            ),
        )
    )
    gltf.meshes.append(
        pygltflib.Mesh(name=name, primitives=[pygltflib.Primitive(attributes=attributes, indices=indices, material=0)])
    )

    # Nodes: 0..21 the joints (canonical order), then the Y-up parent, then the mesh node.
    rest_t = _rest_translations(rig)
    rest_q = _quaternions(_numpy(rig.bind_pose.rotations).astype(np.float64))[0]
    for j in range(NUM_JOINTS):
        gltf.nodes.append(
            pygltflib.Node(
                name=JOINT_NAMES[j],
                translation=rest_t[j].tolist(),
                rotation=rest_q[j].tolist(),
                children=[c for c, p in enumerate(PARENTS) if p == j] or None,
            )
        )
    up_node, mesh_node = NUM_JOINTS, NUM_JOINTS + 1
    gltf.nodes.append(pygltflib.Node(name=f"{name}_z_up_to_y_up", rotation=_Z_UP_TO_Y_UP_QUAT, children=[0]))
    gltf.nodes.append(pygltflib.Node(name=name, mesh=0, skin=0))
    gltf.scenes.append(pygltflib.Scene(name=name, nodes=[up_node, mesh_node]))
    gltf.scene = 0

    inverse_bind = torch.linalg.inv(rig.joint_transforms(rig.bind_pose)[0].double()).cpu().numpy()
    gltf.skins.append(
        pygltflib.Skin(
            name=f"{name}_skeleton",
            joints=list(range(NUM_JOINTS)),
            skeleton=0,
            inverseBindMatrices=buf.add(inverse_bind.transpose(0, 2, 1).astype(np.float32)),  # column-major
        )
    )

    if animation is not None:
        rotations, transl, fps = animation
        times = buf.add((np.arange(len(rotations)) / fps).astype(np.float32), min_max=True)
        quats = _quaternions(rotations)
        outputs = [buf.add(quats[:, j].astype(np.float32)) for j in range(NUM_JOINTS)]
        outputs.append(buf.add(transl.astype(np.float32)))
        samplers = [
            pygltflib.AnimationSampler(input=times, output=out, interpolation=pygltflib.ANIM_LINEAR) for out in outputs
        ]
        channels = [
            pygltflib.AnimationChannel(sampler=j, target=pygltflib.AnimationChannelTarget(node=j, path="rotation"))
            for j in range(NUM_JOINTS)
        ]
        channels.append(
            pygltflib.AnimationChannel(
                sampler=NUM_JOINTS, target=pygltflib.AnimationChannelTarget(node=0, path="translation")
            )
        )
        source = getattr(motion, "source", "") or ""
        gltf.animations.append(
            pygltflib.Animation(
                name=f"{name}_motion", samplers=samplers, channels=channels, extras={"fps": fps, "source": source}
            )
        )

    blob = buf.blob()
    gltf.buffers.append(pygltflib.Buffer(byteLength=len(blob)))
    gltf.set_binary_blob(blob)
    path = Path(path)
    with atomic_path(path) as tmp:
        gltf.save_binary(str(tmp))
    return path


# ---------------------------------------------------------------------- reading
def _accessor(gltf: pygltflib.GLTF2, blob: bytes, index: int) -> np.ndarray:
    """An accessor's data as (count, width) array (float for normalized integers); matrices are
    returned as stored (column-major rows of 16)."""
    acc = gltf.accessors[index]
    view = gltf.bufferViews[acc.bufferView]
    dtype = _NUMPY_TYPES[acc.componentType]
    width = _WIDTHS[acc.type]
    elem = dtype.itemsize * width
    stride = view.byteStride or elem
    start = (view.byteOffset or 0) + (acc.byteOffset or 0)
    raw = np.frombuffer(blob, dtype=np.uint8, count=stride * (acc.count - 1) + elem if acc.count else 0, offset=start)
    if acc.count and stride != elem:
        rows = np.lib.stride_tricks.as_strided(raw, shape=(acc.count, elem), strides=(stride, 1))
        raw = np.ascontiguousarray(rows)
    data = raw.view(dtype).reshape(acc.count, width)
    if acc.normalized:
        data = data.astype(np.float64) / np.iinfo(dtype).max
    return data


def _node_matrix(node: pygltflib.Node) -> np.ndarray:
    """A node's local 4x4 transform (its matrix, or T @ R @ S)."""
    if node.matrix is not None:
        return np.array(node.matrix, dtype=np.float64).reshape(4, 4).T  # column-major
    out = np.eye(4)
    if node.rotation is not None:
        out[:3, :3] = roma.unitquat_to_rotmat(torch.tensor(node.rotation, dtype=torch.float64)).numpy()
    if node.scale is not None:
        out[:3, :3] = out[:3, :3] * np.array(node.scale)[None]
    if node.translation is not None:
        out[:3, 3] = node.translation
    return out


def read_animated_gltf(path: str | Path) -> dict[str, Any]:
    """Read a skinned, animated .glb (as `write_animated_gltf` writes it) with pygltflib.

    Returns a dict of numpy arrays in the file's own (Y-up) conventions, quaternions XYZW:
    ``joint_names`` (list), ``parents`` (22,) int (-1 for the root), ``rest_translations``
    (22, 3) and ``rest_rotations`` (22, 4) (the joint nodes' own TRS), ``skeleton_parent``
    (4, 4) (global transform of the root joint's parent node: the Z-up -> Y-up turn),
    ``inverse_bind_matrices`` (22, 4, 4) (row-major, as numpy multiplies), ``vertices`` (V, 3),
    ``normals`` (V, 3), ``faces`` (F, 3), ``colors`` (V, 3) display colours in [0, 1] or None,
    ``joints`` (V, 8) and ``weights`` (V, 8), and for the animation (empty without one)
    ``times`` (T,), ``rotations`` (T, 22, 4), ``root_translations`` (T, 3), ``fps`` (float or
    None), ``name``.
    """
    gltf = pygltflib.GLTF2().load(str(path))
    if gltf is None:
        raise ValueError(f"{path}: not a readable glTF file")
    blob = gltf.binary_blob()
    if not gltf.skins:
        raise ValueError(f"{path}: the file has no skin")
    skin = gltf.skins[0]
    joint_nodes = list(skin.joints)
    slot = {node: j for j, node in enumerate(joint_nodes)}
    parent_node = {child: i for i, node in enumerate(gltf.nodes) for child in (node.children or [])}
    parents = np.array([slot.get(parent_node.get(n, -1), -1) for n in joint_nodes])

    root = joint_nodes[int(np.nonzero(parents < 0)[0][0])]
    skeleton_parent, node = np.eye(4), parent_node.get(root)
    while node is not None:
        skeleton_parent = _node_matrix(gltf.nodes[node]) @ skeleton_parent
        node = parent_node.get(node)

    joint_ts = [gltf.nodes[n] for n in joint_nodes]
    mesh_node = next(n for n in gltf.nodes if n.skin is not None and n.mesh is not None)
    primitive = gltf.meshes[mesh_node.mesh].primitives[0]
    attrs = primitive.attributes
    get = functools.partial(_accessor, gltf, blob)
    colors = None if attrs.COLOR_0 is None else linear_to_srgb(get(attrs.COLOR_0)[:, :3].astype(np.float64))
    inverse_bind = get(skin.inverseBindMatrices).reshape(-1, 4, 4).transpose(0, 2, 1).astype(np.float64)

    rest_rotations = np.array([n.rotation if n.rotation is not None else [0, 0, 0, 1] for n in joint_ts], float)
    rest_translations = np.array([n.translation if n.translation is not None else [0, 0, 0] for n in joint_ts], float)
    times, rotations = np.zeros(0), np.zeros((0, len(joint_nodes), 4))
    root_translations, fps = np.zeros((0, 3)), None
    if gltf.animations:
        anim = gltf.animations[0]
        times = get(anim.samplers[anim.channels[0].sampler].input)[:, 0].astype(np.float64)
        rotations = np.broadcast_to(rest_rotations, (len(times), len(joint_nodes), 4)).copy()
        root_translations = np.broadcast_to(rest_translations[parents < 0][0], (len(times), 3)).copy()
        for channel in anim.channels:
            j = slot.get(channel.target.node)
            values = get(anim.samplers[channel.sampler].output).astype(np.float64)
            if j is not None and channel.target.path == "rotation":
                rotations[:, j] = values
            elif j is not None and channel.target.path == "translation" and parents[j] < 0:
                root_translations = values
        extras = anim.extras or {}
        if "fps" in extras:
            fps = float(extras["fps"])
        elif len(times) > 1:
            fps = float(1.0 / np.median(np.diff(times)))

    return {
        "name": mesh_node.name,
        "joint_names": [n.name for n in joint_ts],
        "parents": parents,
        "rest_translations": rest_translations,
        "rest_rotations": rest_rotations,
        "skeleton_parent": skeleton_parent,
        "inverse_bind_matrices": inverse_bind,
        "vertices": get(attrs.POSITION).astype(np.float64),
        "normals": None if attrs.NORMAL is None else get(attrs.NORMAL).astype(np.float64),
        "faces": get(primitive.indices).reshape(-1, 3).astype(np.int64),
        "colors": colors,
        "joints": np.concatenate([get(attrs.JOINTS_0), get(attrs.JOINTS_1)], axis=1).astype(np.int64),
        "weights": np.concatenate([get(attrs.WEIGHTS_0), get(attrs.WEIGHTS_1)], axis=1).astype(np.float64),
        "times": times,
        "rotations": rotations,
        "root_translations": root_translations,
        "fps": fps,
    }


def gltf_skinned_vertices(data: dict[str, Any], frame: int | None = None) -> np.ndarray:
    """Skinned vertices (V, 3) of a file read by `read_animated_gltf`, in its Y-up world, at
    keyframe ``frame`` (None: the nodes' own rest transforms, i.e. the bind pose).

    The glTF specification's skinning: global joint transforms from the node hierarchy (the
    joints' parent chain included), times the inverse bind matrices, blended by the weights.
    """
    parents = data["parents"]
    rotations, translations = data["rest_rotations"], data["rest_translations"].copy()
    if frame is not None:
        if not 0 <= frame < len(data["times"]):
            raise IndexError(f"frame {frame} out of range: the file has {len(data['times'])} keyframes")
        rotations = data["rotations"][frame]
        translations[parents < 0] = data["root_translations"][frame]
    local = np.tile(np.eye(4), (len(parents), 1, 1))
    local[:, :3, :3] = roma.unitquat_to_rotmat(torch.from_numpy(np.asarray(rotations, dtype=np.float64))).numpy()
    local[:, :3, 3] = translations
    world: dict[int, np.ndarray] = {}

    def global_transform(j: int) -> np.ndarray:
        if j not in world:
            above = data["skeleton_parent"] if parents[j] < 0 else global_transform(int(parents[j]))
            world[j] = above @ local[j]
        return world[j]

    joint_matrices = np.stack([global_transform(j) for j in range(len(parents))]) @ data["inverse_bind_matrices"]
    blended = np.einsum("vk,vkab->vab", data["weights"], joint_matrices[data["joints"]])
    return np.einsum("vab,vb->va", blended[:, :3, :3], data["vertices"]) + blended[:, :3, 3]
