"""What a person sees in an exported avatar, per body region (:data:`avatar.body.regions.REGIONS`):
how far the sculpted surface left the body it started from and how lumpy it is
(:func:`surface_metrics`), and whether the parts the prompt does not name kept their look or took
the prompt's colours (:func:`color_metrics`, :func:`named_regions`).

Pure functions of meshes, per-vertex region indices, colours and the prompt: the appearance stage
reports them in its export (``surface``, ``colors``), ``avatar-eval appearance`` on finished runs.

Roughness, independent of the triangulation: at every vertex, the angle between its normal and the
mean normal of the surface within ``radius`` (a smooth body scores a few degrees, a lumpy one
more). The mean is taken over points sampled uniformly on the surface (about
:data:`SAMPLES_PER_DISC` in a disc of ``radius``) with the vertex normals interpolated there, not
over the mesh's vertices: the export (marching cubes) has a vertex every few millimetres, the
body model's torso and legs one every 2-3 cm, so within 2 cm a body vertex often has no other
vertex and would score 0. The region's value is the mean over its vertices weighted by their
area (a third of their faces'), so dense parts of a mesh do not count more. On parts thinner
than ``2 * radius`` (fingers, toes, ears) the far side falls in the disc too: both meshes have
them, so compare the two (``ratio``), not a region with another.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from scipy.spatial import cKDTree

from avatar.body.regions import REGIONS

MIN_DRIFT = 0.1  # RGB distance: a region that moved less from its colour before guidance kept it
SAMPLES_PER_DISC = 64  # surface samples expected in a disc of ``radius`` (mean normal's accuracy ~1 deg)
_CHUNK = 4096  # query vertices per neighbour search (bounded memory)


def _numpy(x, dtype=None) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


# ---- surface -------------------------------------------------------------------------------
def vertex_normals_and_areas(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit vertex normals (V, 3) (face normals weighted by area; zero for a vertex in no face)
    and vertex areas (V,) (a third of the adjacent faces' area)."""
    corners = vertices[faces]
    cross = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])  # |cross| = 2 area
    normals = np.zeros_like(vertices)
    areas = np.zeros(len(vertices))
    face_area = 0.5 * np.linalg.norm(cross, axis=1)
    for k in range(3):
        np.add.at(normals, faces[:, k], cross)
        np.add.at(areas, faces[:, k], face_area / 3.0)
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    return np.where(length > 0, normals / np.maximum(length, 1e-30), 0.0), areas


def surface_samples(
    vertices: np.ndarray, faces: np.ndarray, normals: np.ndarray, spacing: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Points (N, 3) uniform on the surface, about one per ``spacing**2`` of area (stratified per
    face: each face gets floor(area / spacing**2) points or one more), with the vertex normals
    interpolated there (N, 3), unit length."""
    rng = np.random.default_rng(seed)
    corners = vertices[faces]
    area = 0.5 * np.linalg.norm(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1)
    expected = area / spacing**2
    counts = np.floor(expected + rng.random(len(faces))).astype(np.int64)
    face = np.repeat(np.arange(len(faces)), counts)
    u, v = rng.random(len(face)), rng.random(len(face))
    flip = u + v > 1.0
    u, v = np.where(flip, 1.0 - u, u), np.where(flip, 1.0 - v, v)
    bary = np.stack([1.0 - u - v, u, v], axis=1)
    points = (bary[:, :, None] * corners[face]).sum(1)
    n = (bary[:, :, None] * normals[faces[face]]).sum(1)
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-30)
    return points, n


def roughness_angles(
    vertices, faces, radius: float = 0.02, samples_per_disc: int = SAMPLES_PER_DISC, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Per vertex: the angle (degrees) between its normal and the mean surface normal within
    ``radius`` (see the module's docstring), and its area (the weight of its angle in a region's
    mean). Vertices in no face get area 0 (angle NaN)."""
    vertices, faces = _numpy(vertices, np.float64), _numpy(faces, np.int64)
    normals, areas = vertex_normals_and_areas(vertices, faces)
    spacing = radius * float(np.sqrt(np.pi / samples_per_disc))
    points, point_normals = surface_samples(vertices, faces, normals, spacing, seed)
    mean = np.zeros_like(vertices)
    if len(points):
        tree = cKDTree(points)
        for start in range(0, len(vertices), _CHUNK):
            pairs = cKDTree(vertices[start : start + _CHUNK]).sparse_distance_matrix(
                tree, radius, output_type="ndarray"
            )
            i = pairs["i"] + start
            for k in range(3):
                mean[:, k] += np.bincount(i, weights=point_normals[pairs["j"], k], minlength=len(vertices))
    length = np.linalg.norm(mean, axis=1)
    cos = (normals * mean).sum(1) / np.maximum(length, 1e-30)
    angles = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
    angles[(length == 0) | (areas == 0)] = np.nan
    return angles, areas


def largest_component(vertices: np.ndarray, faces: np.ndarray, regions: np.ndarray):
    """The mesh's largest connected piece (by vertex count), its faces re-indexed, with its
    vertices' regions; vertices in no face dropped."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(vertices)
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    used = np.zeros(n, dtype=bool)
    used[faces.reshape(-1)] = True
    keep = label == np.bincount(label[used]).argmax()
    index = np.cumsum(keep) - 1
    kept_faces = faces[keep[faces[:, 0]]]
    return vertices[keep], index[kept_faces], regions[keep]


def _region_means(values: np.ndarray, weights: np.ndarray, regions: np.ndarray) -> dict[str, float]:
    keep = np.isfinite(values) & (weights > 0)
    out = {}
    for i, name in enumerate(REGIONS):
        mask = keep & (regions == i)
        if mask.any():
            out[name] = float(np.average(values[mask], weights=weights[mask]))
    if keep.any():
        out["all"] = float(np.average(values[keep], weights=weights[keep]))
    return out


def _distance_stats(distance_mm: np.ndarray, signed_mm: np.ndarray) -> dict[str, float]:
    return {
        "mean": float(distance_mm.mean()),
        "p95": float(np.percentile(distance_mm, 95)),
        "signed_mean": float(signed_mm.mean()),
    }


def surface_metrics(
    export_vertices,
    export_faces,
    export_regions,
    body_vertices,
    body_faces,
    body_regions,
    radius: float = 0.02,
    largest_only: bool = True,
) -> dict:
    """The sculpted surface against the body it started from, both in the same frame (world
    metres, the T-pose), per region (``*_regions``: (V,) indices into ``REGIONS``) and ``all``:

    * ``surface_distance_mm[region]``: ``mean`` and ``p95`` of the unsigned distance from the
      export's vertices to the body's surface, and ``signed_mean`` (positive outside the body:
      clothes and hair stand out, a shrunk surface is negative);
    * ``roughness_deg``: ``export`` and ``body`` (per region, area-weighted mean of
      :func:`roughness_angles`) and ``ratio`` = export / body (1: as smooth as the body);
    * ``roughness_radius_m``: the radius used.

    ``largest_only``: each mesh's largest connected piece only (the export keeps its largest;
    Anny's eyeballs are separate pieces whose far side would count as roughness of the eyelids).
    """
    from avatar.neus.mesh_sdf import MeshQuery

    ev, ef, er = _numpy(export_vertices, np.float32), _numpy(export_faces, np.int64), _numpy(export_regions, np.int64)
    bv, bf, br = _numpy(body_vertices, np.float32), _numpy(body_faces, np.int64), _numpy(body_regions, np.int64)
    if len(er) != len(ev) or len(br) != len(bv):
        raise ValueError("export_regions / body_regions must give one region index per vertex")
    if largest_only:
        ev, ef, er = largest_component(ev, ef, er)
        bv, bf, br = largest_component(bv, bf, br)
    signed = MeshQuery(torch.from_numpy(bv), torch.from_numpy(bf), "cpu").query(torch.from_numpy(ev), signed=True)[0]
    signed_mm = signed.double().numpy() * 1000.0
    distance_mm = np.abs(signed_mm)
    distance = {
        name: _distance_stats(distance_mm[er == i], signed_mm[er == i])
        for i, name in enumerate(REGIONS)
        if (er == i).any()
    }
    distance["all"] = _distance_stats(distance_mm, signed_mm)
    export_angles, export_areas = roughness_angles(ev, ef, radius)
    body_angles, body_areas = roughness_angles(bv, bf, radius)
    rough_export = _region_means(export_angles, export_areas, er)
    rough_body = _region_means(body_angles, body_areas, br)
    ratio = {r: rough_export[r] / rough_body[r] for r in rough_export if rough_body.get(r, 0.0) > 0}
    return {
        "surface_distance_mm": distance,
        "roughness_deg": {"export": rough_export, "body": rough_body, "ratio": ratio},
        "roughness_radius_m": float(radius),
    }


# ---- what the prompt names ------------------------------------------------------------------
NAMED, PARTLY = "named", "partly"
# Garment words -> the regions they cover: "named" (the garment is that region's look) or
# "partly" (it covers some of it: shorts and skirts the thighs, hats and hair the head). Matched
# as whole words, case-insensitive, with plurals ("shirts", "dresses"); hyphens count as spaces
# ("t-shirt" = "t shirt", "long-sleeved" = "long sleeved").
_TOP = {"torso": NAMED}
_LONG_TOP = {"torso": NAMED, "arms": NAMED}
_BOTTOM = {"hips": NAMED, "legs": NAMED}
_SHORT_BOTTOM = {"hips": NAMED, "legs": PARTLY}
GARMENT_REGIONS: dict[str, dict[str, str]] = {
    # tops
    **dict.fromkeys(("shirt", "t shirt", "tshirt", "tee", "top", "blouse", "tank top", "polo", "vest"), _TOP),
    **dict.fromkeys(("short sleeve", "short sleeved"), {"torso": NAMED, "arms": PARTLY}),
    # long-sleeved tops
    **dict.fromkeys(
        ("sweater", "jumper", "hoodie", "jacket", "coat", "cardigan", "sweatshirt", "long sleeve", "long sleeved"),
        _LONG_TOP,
    ),
    # bottoms
    **dict.fromkeys(("trousers", "pants", "jeans", "leggings"), _BOTTOM),
    **dict.fromkeys(("shorts", "skirt"), _SHORT_BOTTOM),
    "dress": {"torso": NAMED, "hips": NAMED, "legs": PARTLY},
    # feet
    **dict.fromkeys(("shoe", "boot", "sneaker", "sock", "sandal"), {"feet": NAMED}),
    # head
    **dict.fromkeys(("hat", "cap", "beanie", "helmet", "hood", "hair", "haired", "ponytail", "beard"), {"head": PARTLY}),
    # hands
    **dict.fromkeys(("glove", "mitten"), {"hands": NAMED}),
}  # fmt: skip


def _normalised_text(text: str) -> str:
    return " ".join(re.sub(r"[-_/]", " ", text.lower()).split())


def _word_pattern(phrase: str) -> re.Pattern:
    """``phrase`` as whole words, its last word with an optional plural ending."""
    return re.compile(rf"(?<![a-z]){re.escape(phrase)}(?:s|es)?(?![a-z])")


_GARMENT_PATTERNS = {word: _word_pattern(word) for word in GARMENT_REGIONS}


def garment_words(prompt: str) -> list[str]:
    """The :data:`GARMENT_REGIONS` words the prompt says, in that table's order, then those that
    other garment words of the prompt stand for: a word whose most frequent sense is a garment in
    the WordNet lexicon (avatar/guidance/lexicon.py: "pullover" -> sweater, "corduroys" ->
    trousers, "moccasins" -> shoe)."""
    from avatar.guidance.lexicon import look_up

    text = _normalised_text(prompt)
    found = [word for word, pattern in _GARMENT_PATTERNS.items() if pattern.search(text)]
    for token in re.findall(r"[a-z']+", text):
        garment = look_up("garment", token, primary_only=True)
        word = _garment_key(garment) if garment is not None else None
        if word is not None and word not in found:
            found.append(word)
    return found


def _garment_key(garment: str) -> str | None:
    """The :data:`GARMENT_REGIONS` word of a grammar garment name ("t-shirt" -> "t shirt",
    "shoes" -> "shoe")."""
    name = _normalised_text(garment)
    for key in (name, name[:-1] if name.endswith("s") else name):
        if key in GARMENT_REGIONS:
            return key
    return None


def named_regions(prompt: str) -> dict[str, str]:
    """Regions the prompt names through garment words (:data:`GARMENT_REGIONS`), each ``named``
    or ``partly`` (named wins over partly), in :data:`REGIONS` order; regions not listed are
    unnamed. ``"a person in a red shirt and blue trousers"`` -> torso, hips, legs named."""
    levels: dict[str, str] = {}
    for word in garment_words(prompt):
        for region, level in GARMENT_REGIONS[word].items():
            if levels.get(region) != NAMED:
                levels[region] = level
    return {r: levels[r] for r in REGIONS if r in levels}


# ---- colours ---------------------------------------------------------------------------------
def prompt_colors(prompt: str, vocabulary: Mapping[str, Sequence[float]] | None = None) -> dict[str, list[float]]:
    """The colour words of ``prompt`` (vocabulary: :data:`avatar.guidance.synthetic.COLORS`, name
    -> RGB; "gray" read as "grey"), in the order they are said. Longer names first: "dark blue"
    is one colour, not "dark" and "blue"."""
    if vocabulary is None:
        from avatar.guidance.synthetic.appearance import COLORS as vocabulary
    text = _normalised_text(prompt).replace("gray", "grey")
    found: list[tuple[int, str]] = []
    for name in sorted(vocabulary, key=lambda n: (-len(n.split()), -len(n), n)):
        pattern = re.compile(rf"(?<![a-z#]){re.escape(name)}(?![a-z#])")
        for match in pattern.finditer(text):
            found.append((match.start(), name))
        text = pattern.sub(lambda m: "#" * len(m.group(0)), text)  # said once: not also "blue" of "dark blue"
    return {name: [float(c) for c in vocabulary[name]] for _, name in sorted(found)}


def _rgb_distance(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)))


def color_metrics(vertex_colors, vertex_region_index, prompt: str, initial_region_rgb: Mapping) -> dict:
    """``vertex_colors``: (V, 3 or 4) floats in 0..1 or 8-bit integers. Per region
    (``regions[name]``): ``rgb`` (mean vertex colour, 0..1), ``prompt`` (named /
    partly / unnamed, :func:`named_regions`), ``initial_rgb`` (the region's colour before
    guidance: ``initial_region_rgb[name]``), ``drift`` (RGB distance from it), the nearest of the
    prompt's colours (``nearest_prompt_color`` and its distance) and ``took_prompt_color``: the
    region is nearer that colour than its initial colour; ``like_named_region`` (regions not
    named only): the named region whose mean colour it is nearer than its initial colour (it took
    the garment's colour, whether or not that is the prompt's), or None. Neither flag is raised
    for a region that drifted less than :data:`MIN_DRIFT` (it kept its colour). Summary over the unnamed
    regions (what the prompt leaves alone should keep its look): ``unnamed_regions``,
    ``unnamed_drift`` (mean drift; None without unnamed regions), ``unnamed_took_prompt_color``
    and ``unnamed_like_named_region`` (region names).
    ``prompt_colors``: the colour words read from the prompt, name -> RGB."""
    colors = _numpy(vertex_colors)[:, :3]
    colors = colors / 255.0 if np.issubdtype(colors.dtype, np.integer) else colors.astype(np.float64)  # 8-bit: 0..255
    index = _numpy(vertex_region_index, np.int64)
    if len(index) != len(colors):
        raise ValueError(f"{len(colors)} vertex colours but {len(index)} region indices")
    said = prompt_colors(prompt)
    named = named_regions(prompt)
    regions: dict[str, dict] = {}
    for i, name in enumerate(REGIONS):
        mask = index == i
        if not mask.any():
            continue
        rgb = colors[mask].mean(0)
        initial = [float(c) for c in initial_region_rgb[name]]
        entry = {
            "rgb": [float(c) for c in rgb], "prompt": named.get(name, "unnamed"), "initial_rgb": initial,
            "drift": _rgb_distance(rgb, initial), "nearest_prompt_color": None, "nearest_prompt_distance": None,
            "took_prompt_color": False,
        }  # fmt: skip
        if said:
            nearest = min(said, key=lambda c: _rgb_distance(rgb, said[c]))
            entry["nearest_prompt_color"] = nearest
            entry["nearest_prompt_distance"] = _rgb_distance(rgb, said[nearest])
            entry["took_prompt_color"] = (
                MIN_DRIFT <= entry["drift"] and entry["nearest_prompt_distance"] < entry["drift"]
            )
        regions[name] = entry
    garments = [r for r, e in regions.items() if e["prompt"] == NAMED]
    for entry in regions.values():
        entry["like_named_region"] = None
        others = [r for r in garments if regions[r] is not entry]
        if entry["prompt"] != NAMED and others and entry["drift"] >= MIN_DRIFT:
            nearest = min(others, key=lambda r: _rgb_distance(entry["rgb"], regions[r]["rgb"]))
            if _rgb_distance(entry["rgb"], regions[nearest]["rgb"]) < entry["drift"]:
                entry["like_named_region"] = nearest
    unnamed = [r for r, e in regions.items() if e["prompt"] == "unnamed"]
    return {
        "prompt_colors": said,
        "regions": regions,
        "unnamed_regions": unnamed,
        "unnamed_drift": float(np.mean([regions[r]["drift"] for r in unnamed])) if unnamed else None,
        "unnamed_took_prompt_color": [r for r in unnamed if regions[r]["took_prompt_color"]],
        "unnamed_like_named_region": [r for r in unnamed if regions[r]["like_named_region"]],
    }


def appearance_report(
    vertices, faces, regions, colors, body_vertices, body_faces, body_regions, prompt: str, initial_region_rgb: Mapping,
    radius: float = 0.02,
) -> dict:  # fmt: skip
    """Both measures of an exported avatar, as the stage's export and ``avatar-eval appearance``
    report them: ``{"surface": surface_metrics(...), "colors": color_metrics(...)}``."""
    return {
        "surface": surface_metrics(vertices, faces, regions, body_vertices, body_faces, body_regions, radius),
        "colors": color_metrics(colors, regions, prompt, initial_region_rgb),
    }


def markdown_table(report: dict) -> str:
    """One row per region (and ``all``): distance mean / p95 / signed mean (mm), roughness export /
    body / ratio (degrees), mean RGB, what the prompt says of it, its colour drift, whether it
    took a prompt colour or a named region's colour; then a summary of the unnamed regions."""
    surface, colors = report["surface"], report["colors"]
    dist, rough = surface["surface_distance_mm"], surface["roughness_deg"]
    header = ("region", "dist mean (mm)", "dist p95 (mm)", "signed mean (mm)", "rough export (deg)",
              "rough body (deg)", "ratio", "mean RGB", "prompt", "drift", "took prompt colour", "like named")  # fmt: skip

    def num(table: dict, key: str, fmt: str = ".1f") -> str:
        return "-" if table.get(key) is None else format(table[key], fmt)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for region in (*REGIONS, "all"):
        d = dist.get(region, {})
        c = colors["regions"].get(region)
        if not d and c is None:
            continue
        rgb = "-" if c is None else "(" + ", ".join(f"{v:.2f}" for v in c["rgb"]) + ")"
        took = "-" if c is None else ((c["nearest_prompt_color"] or "yes") if c["took_prompt_color"] else "no")
        lines.append("| " + " | ".join((
            region, num(d, "mean"), num(d, "p95"), num(d, "signed_mean"), num(rough["export"], region, ".2f"),
            num(rough["body"], region, ".2f"), num(rough["ratio"], region, ".2f"), rgb,
            "-" if c is None else c["prompt"], "-" if c is None else f"{c['drift']:.2f}", took,
            "-" if c is None or c["prompt"] == NAMED else (c["like_named_region"] or "no"),
        )) + " |")  # fmt: skip
    drift = colors["unnamed_drift"]
    lines.append("")
    lines.append(
        f"prompt colours: {', '.join(colors['prompt_colors']) or 'none'}; unnamed regions: "
        f"{', '.join(colors['unnamed_regions']) or 'none'}; their mean drift: "
        f"{'-' if drift is None else f'{drift:.3f}'}; took a prompt colour: "
        f"{', '.join(colors['unnamed_took_prompt_color']) or 'none'}; took a named region's colour: "
        f"{', '.join(colors['unnamed_like_named_region']) or 'none'}"
    )
    return "\n".join(lines)
