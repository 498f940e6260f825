"""Appearance of synthetic bodies: a named-colour vocabulary, garment parts and per-vertex colours.

The vocabulary comes from matplotlib's XKCD survey colours (949 names people actually typed)
and the 148 CSS4 web colours, with their real RGB values. Where a name is in both tables the
CSS4 value wins (``navy`` is #000080, ``crimson`` #DC143C, ``teal`` #008080: the values of the
web colours people know). Names a person would not say of clothes are dropped (see
:func:`_keep_name`).

Garments are painted on *parts*: finer regions than :mod:`avatar.body.regions`, cut from the
dominant canonical joint of every vertex's skinning weights and, along a limb, from where the
vertex projects on its bone in the T-pose (e.g. the upper half of the thigh for shorts). Patterns
(stripes, checks, dots) are low-frequency functions of the vertex positions in an arms-down
reference pose, so stripes go around the arms and the torso.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import matplotlib.colors as mcolors
import torch

from avatar.body.skeleton import JOINT_INDEX, JOINT_NAMES, CanonicalPose, named_pose

# ---- colour vocabulary ---------------------------------------------------------------------
# Words that make a colour name something nobody says of a garment (jokes, misspellings,
# survey slang like "greeny").
_BANNED_WORDS = frozenset(
    "shit puke poo poop vomit barf booger ugly nasty icky gross sickly boring bland pig bruise "
    "burple liliac lavendar toupe terracota manilla kelley siena purply purpley greeny bluey "
    "browny orangey pinky reddy yellowy blurple puce dirt dirty poison radioactive toxic "
    "windows camo swamp cheese bile diarrhea mud".split()
)
_BANNED_NAMES = frozenset({"light light green", "light light blue", "blue blue", "green green"})


def _keep_name(name: str) -> bool:
    """At most two plain words, none of them banned."""
    words = name.split()
    return (
        len(words) <= 2
        and all(w.isalpha() for w in words)
        and not any(w in _BANNED_WORDS for w in words)
        and name not in _BANNED_NAMES
    )


def _build_vocabulary() -> dict[str, tuple[float, float, float]]:
    table: dict[str, tuple[float, float, float]] = {}
    for key, hex_value in mcolors.XKCD_COLORS.items():
        name = key.removeprefix("xkcd:").replace("gray", "grey")
        if _keep_name(name):
            table[name] = mcolors.to_rgb(hex_value)
    for name, hex_value in mcolors.CSS4_COLORS.items():
        if name in table:  # single-word web colours people know: CSS4's value
            table[name] = mcolors.to_rgb(hex_value)
    # A joined name ("darkgreen") duplicates its spaced form ("dark green"): keep the spaced one.
    spaced = {n.replace(" ", "") for n in table if " " in n}
    return {n: rgb for n, rgb in sorted(table.items()) if " " in n or n not in spaced}


COLORS: dict[str, tuple[float, float, float]] = _build_vocabulary()
# Everyday colour words, drawn half of the time so the common ones are seen most.
BASIC_COLORS: tuple[str, ...] = (
    "red", "blue", "green", "yellow", "orange", "purple", "pink", "brown", "black", "white",
    "grey", "navy", "teal", "maroon", "olive", "crimson", "beige", "turquoise", "lavender",
    "khaki", "gold", "cyan", "magenta", "dark green", "light blue", "dark blue", "sky blue",
)  # fmt: skip
HAIR_COLORS: dict[str, tuple[float, float, float]] = {
    "black": (0.05, 0.04, 0.04), "dark brown": (0.20, 0.12, 0.07), "brown": (0.40, 0.26, 0.13),
    "blond": (0.88, 0.74, 0.45), "red": (0.62, 0.22, 0.08), "grey": (0.55, 0.55, 0.55),
    "white": (0.92, 0.92, 0.90),
}  # fmt: skip
# Skin tones are interpolated between these two albedos (not mentioned in captions).
SKIN_LIGHT = (0.96, 0.80, 0.69)
SKIN_DARK = (0.33, 0.20, 0.13)
TEXTURELESS_GREY = 0.7  # the renderer's default albedo

PATTERNS: tuple[str, ...] = ("solid", "horizontal stripes", "vertical stripes", "checks", "dots")
TOP_KINDS: tuple[str, ...] = ("long sleeves", "short sleeves", "sleeveless")
BOTTOM_KINDS: tuple[str, ...] = ("trousers", "shorts", "skirt")
SHOE_KINDS: tuple[str, ...] = ("shoes", "sneakers", "boots", "barefoot")

# ---- body parts ----------------------------------------------------------------------------
PARTS: tuple[str, ...] = (
    "face", "hair", "neck", "torso", "upper_arm_top", "upper_arm_bottom", "forearm", "hands",
    "hips", "thigh_top", "thigh_bottom", "shin_top", "shin_bottom", "feet",
)  # fmt: skip
# What each garment covers.
TOP_PARTS = {
    "long sleeves": ("torso", "upper_arm_top", "upper_arm_bottom", "forearm"),
    "short sleeves": ("torso", "upper_arm_top"),
    "sleeveless": ("torso",),
}
BOTTOM_PARTS = {
    "trousers": ("hips", "thigh_top", "thigh_bottom", "shin_top", "shin_bottom"),
    "shorts": ("hips", "thigh_top"),
    "skirt": ("hips", "thigh_top", "thigh_bottom"),
}
SHOE_PARTS = {"shoes": ("feet",), "sneakers": ("feet",), "boots": ("feet", "shin_bottom"), "barefoot": ()}

_JOINT_PART = {
    "pelvis": "hips", "spine1": "torso", "spine2": "torso", "spine3": "torso", "collar": "torso",
    "neck": "neck", "head": "face", "wrist": "hands", "elbow": "forearm", "ankle": "feet",
    "foot": "feet", "shoulder": "upper_arm_top", "hip": "thigh_top", "knee": "shin_top",
}  # fmt: skip
# Split of a limb segment (fraction along the bone from its joint): shorts end half-way down the
# thigh, short sleeves half-way down the upper arm, boots cover the lower 40% of the shin.
_LIMB_SPLIT = {
    "upper_arm_bottom": ("shoulder", "elbow", 0.5),
    "thigh_bottom": ("hip", "knee", 0.5),
    "shin_bottom": ("knee", "ankle", 0.6),
}
# Hair: the top of the head joint's vertices (above this fraction of the skull height), and its
# back (behind the head's centre, above the lower part of the skull).
_HAIR_TOP, _HAIR_BACK = 0.62, 0.2


def _strip_side(joint: str) -> str:
    return joint.removeprefix("left_").removeprefix("right_")


@dataclass
class BodyParts:
    """Per-vertex part labels and pattern coordinates of one body topology."""

    part: torch.Tensor  # (V,) index into PARTS
    pattern_coords: torch.Tensor  # (V, 2): around-the-body arc length and height, metres

    def mask(self, names: tuple[str, ...] | list[str]) -> torch.Tensor:
        """(V,) bool: the vertices of any of ``names``."""
        ids = torch.tensor([PARTS.index(n) for n in names], dtype=torch.long)
        return torch.isin(self.part, ids)

    @staticmethod
    def from_body(body) -> "BodyParts":
        """Parts of ``body`` (a BodyModel with ``skinning_weights``), from its neutral T-pose."""
        with torch.no_grad():
            tpose = body(body.default_shape(1), CanonicalPose.rest(1, body.skinning_weights.dtype))
            verts, joints = tpose.vertices[0].float(), tpose.joints[0].float()
            ref = body(body.default_shape(1), _arms_down_pose(body.skinning_weights.dtype)).vertices[0].float()
        dominant = body.skinning_weights.argmax(1)
        part = torch.empty(len(verts), dtype=torch.long)
        for j, joint in enumerate(JOINT_NAMES):
            part[dominant == j] = PARTS.index(_JOINT_PART[_strip_side(joint)])
        for lower, (start, end, split) in _LIMB_SPLIT.items():
            for side in ("left_", "right_"):
                a, b = joints[JOINT_INDEX[side + start]], joints[JOINT_INDEX[side + end]]
                on_limb = dominant == JOINT_INDEX[side + start]
                t = ((verts - a) @ (b - a)) / (b - a).square().sum()
                part[on_limb & (t > split)] = PARTS.index(lower)
        head = dominant == JOINT_INDEX["head"]
        z0, z1 = joints[JOINT_INDEX["head"], 2], verts[head, 2].max()
        rel = (verts[:, 2] - z0) / (z1 - z0)
        back = verts[:, 1] > verts[head, 1].mean()  # bodies face -Y
        part[head & ((rel > _HAIR_TOP) | (back & (rel > _HAIR_BACK)))] = PARTS.index("hair")
        return BodyParts(part, _pattern_coords(ref))


def _arms_down_pose(dtype) -> CanonicalPose:
    """The reference pose of patterns: the A-pose with the arms lowered to 80 degrees."""
    pose = named_pose("a_pose", dtype)
    for side in ("left_shoulder", "right_shoulder"):
        pose.rotations[0, JOINT_INDEX[side]] *= 80.0 / 45.0
    return pose


def _pattern_coords(vertices: torch.Tensor) -> torch.Tensor:
    """(V, 2): arc length around the vertical body axis on a 0.15 m cylinder, and height."""
    centre = vertices.mean(0)
    angle = torch.atan2(vertices[:, 0] - centre[0], -(vertices[:, 1] - centre[1]))
    return torch.stack([0.15 * angle, vertices[:, 2]], dim=-1)


def pattern_mask(coords: torch.Tensor, pattern: str, period: float, phase: tuple[float, float]) -> torch.Tensor:
    """(V,) bool: where the second colour of ``pattern`` shows (period in metres)."""
    u = coords[:, 0] / period + phase[0]
    v = coords[:, 1] / period + phase[1]
    if pattern == "solid":
        return torch.zeros(len(coords), dtype=torch.bool)
    if pattern == "horizontal stripes":
        return (v % 1.0) < 0.5
    if pattern == "vertical stripes":
        return (u % 1.0) < 0.5
    if pattern == "checks":
        return (torch.floor(u) + torch.floor(v)) % 2 == 1
    if pattern == "dots":
        return ((u % 1.0 - 0.5).square() + (v % 1.0 - 0.5).square()) < 0.3**2
    raise ValueError(f"unknown pattern {pattern!r}; choose one of {PATTERNS}")


# ---- sampling ------------------------------------------------------------------------------
@dataclass
class AppearanceConfig:
    textureless_prob: float = 0.15
    basic_color_prob: float = 0.5  # draw from BASIC_COLORS, else from the whole vocabulary
    pattern_prob: float = 0.35  # a garment is patterned (else solid)
    pattern_period: tuple[float, float] = (0.12, 0.2)  # metres
    top_probs: tuple[float, ...] = (0.45, 0.4, 0.15)  # TOP_KINDS
    skirt_prob_female: float = 0.3  # bottoms: skirt by gender, the rest 2:1 trousers:shorts
    skirt_prob_male: float = 0.05
    shoe_probs: tuple[float, ...] = (0.35, 0.3, 0.2, 0.15)  # SHOE_KINDS
    bald_prob: float = 0.1


def sample_color(rng: random.Random, cfg: AppearanceConfig, avoid: str | None = None) -> str:
    while True:
        pool = BASIC_COLORS if rng.random() < cfg.basic_color_prob else tuple(COLORS)
        name = rng.choice(pool)
        if name != avoid:
            return name


def _garment(rng: random.Random, cfg: AppearanceConfig, kind: str) -> dict:
    color = sample_color(rng, cfg)
    garment = {"kind": kind, "color": color, "pattern": "solid"}
    if rng.random() < cfg.pattern_prob:
        garment.update(
            pattern=rng.choice(PATTERNS[1:]),
            color2=sample_color(rng, cfg, avoid=color),
            period=rng.uniform(*cfg.pattern_period),
            phase=(rng.random(), rng.random()),
        )
    return garment


def sample_appearance(rng: random.Random, gender: float, cfg: AppearanceConfig | None = None) -> dict:
    """Structured attributes of one outfit (what captions read). Keys: ``textureless`` (bool),
    ``skin`` (RGB), ``hair`` (None = bald, or {"color"}), ``top``/``bottom``/``shoes``: dicts
    with ``kind``, ``color``, ``pattern`` (+ ``color2``, ``period``, ``phase`` if patterned);
    barefoot shoes have no colour. A textureless sample keeps the structure (for the same draw
    count) but is rendered plain grey and captioned without clothes."""
    cfg = cfg or AppearanceConfig()
    textureless = rng.random() < cfg.textureless_prob
    u = rng.random()
    skin = tuple(a + u * (b - a) for a, b in zip(SKIN_LIGHT, SKIN_DARK))
    hair = None if rng.random() < cfg.bald_prob else {"color": rng.choice(tuple(HAIR_COLORS))}
    top = _garment(rng, cfg, rng.choices(TOP_KINDS, cfg.top_probs)[0])
    skirt = cfg.skirt_prob_female if gender > 0.5 else cfg.skirt_prob_male
    r = rng.random()
    bottom_kind = "skirt" if r < skirt else ("trousers" if r < skirt + (1 - skirt) * 2 / 3 else "shorts")
    bottom = _garment(rng, cfg, bottom_kind)
    shoe_kind = rng.choices(SHOE_KINDS, cfg.shoe_probs)[0]
    shoes = {"kind": shoe_kind, "color": sample_color(rng, cfg), "pattern": "solid"}
    if shoe_kind == "barefoot":
        shoes["color"] = None
    return {"textureless": textureless, "skin": skin, "hair": hair, "top": top, "bottom": bottom, "shoes": shoes}


def vertex_colors(appearance: dict, parts: BodyParts) -> torch.Tensor:
    """(V, 3) float32 albedo of ``appearance`` on the body of ``parts``."""
    n = len(parts.part)
    if appearance["textureless"]:
        return torch.full((n, 3), TEXTURELESS_GREY)
    colors = torch.tensor(appearance["skin"]).expand(n, 3).clone()
    if appearance["hair"] is not None:
        colors[parts.mask(("hair",))] = torch.tensor(HAIR_COLORS[appearance["hair"]["color"]])
    layers = (
        (appearance["bottom"], BOTTOM_PARTS),
        (appearance["top"], TOP_PARTS),
        (appearance["shoes"], SHOE_PARTS),
    )
    for garment, covers in layers:
        mask = parts.mask(covers[garment["kind"]])
        if not mask.any():
            continue
        paint = torch.tensor(COLORS[garment["color"]]).expand(n, 3).clone()
        if garment["pattern"] != "solid":
            second = pattern_mask(parts.pattern_coords, garment["pattern"], garment["period"], garment["phase"])
            paint[second] = torch.tensor(COLORS[garment["color2"]])
        colors[mask] = paint[mask]
    return colors


def color_distance(a: str, b: str) -> float:
    """Euclidean RGB distance between two vocabulary colours."""
    return math.dist(COLORS[a], COLORS[b])
