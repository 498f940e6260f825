"""Measures of an exported avatar (avatar/metrics/appearance.py) and ``avatar-eval appearance``:
surface distance and roughness against the body, garment words, colour drift of unnamed regions."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
import trimesh
from omegaconf import OmegaConf

from avatar.body.regions import REGIONS
from avatar.evaluation import cli
from avatar.metrics.appearance import (
    color_metrics,
    named_regions,
    prompt_colors,
    roughness_angles,
    surface_metrics,
    vertex_normals_and_areas,
)

from helpers import LOW_POLY, compose_cfg


def table_rows(text: str, first_cell: str) -> list[list[str]]:
    """The cells of the markdown table rows whose first cell is ``first_cell``."""
    rows = [
        [c.strip() for c in line.strip().strip("|").split("|")] for line in text.splitlines() if line.startswith("|")
    ]
    return [r for r in rows if r[0] == first_cell]


def sphere(subdivisions: int = 4, radius: float = 0.2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An icosphere with its vertices in seven bands of height, one per region."""
    mesh = trimesh.creation.icosphere(subdivisions, radius=radius)
    vertices = np.asarray(mesh.vertices)
    bands = np.clip(((radius - vertices[:, 2]) / (2 * radius) * len(REGIONS)).astype(int), 0, len(REGIONS) - 1)
    return vertices, np.asarray(mesh.faces), bands


def radial_noise(vertices: np.ndarray, std: float, seed: int = 0) -> np.ndarray:
    """Each vertex moved along the sphere's normal by a normal draw of ``std`` metres."""
    noise = np.random.default_rng(seed).normal(0.0, std, (len(vertices), 1))
    return vertices + noise * vertices / np.linalg.norm(vertices, axis=1, keepdims=True)


def test_identical_meshes_are_zero_apart_and_as_rough():
    v, f, r = sphere()
    out = surface_metrics(v, f, r, v, f, r)
    dist, rough = out["surface_distance_mm"], out["roughness_deg"]
    assert set(dist) == {*REGIONS, "all"} and set(rough["ratio"]) == {*REGIONS, "all"}
    assert all(d["mean"] < 1e-3 and d["p95"] < 1e-3 for d in dist.values()), dist
    assert all(x == pytest.approx(1.0) for x in rough["ratio"].values())
    assert rough["body"]["all"] < 1.0  # a smooth sphere: the normals agree with their neighbourhood's


def test_a_scaled_copy_is_its_offset_away_outside():
    v, f, r = sphere()
    dist = surface_metrics(1.1 * v, f, r, v, f, r)["surface_distance_mm"]
    for stats in dist.values():  # every vertex 20 mm out along its own (vertex) direction
        assert stats["mean"] == pytest.approx(20.0, abs=0.05) and stats["p95"] == pytest.approx(20.0, abs=0.05)
        assert stats["signed_mean"] == pytest.approx(20.0, abs=0.05)
    inside = surface_metrics(0.95 * v, f, r, v, f, r)["surface_distance_mm"]["all"]
    assert inside["signed_mean"] < -9.0 and inside["mean"] > 9.0


def test_roughness_grows_with_noise():
    v, f, r = sphere()
    ratios, distances = [], []
    for std in (0.001, 0.003):
        out = surface_metrics(radial_noise(v, std), f, r, v, f, r)
        ratios.append(out["roughness_deg"]["ratio"])
        distances.append(out["surface_distance_mm"]["all"]["mean"])
    assert all(x > 2.0 for x in ratios[0].values()), ratios[0]
    assert all(ratios[1][k] > 1.5 * ratios[0][k] for k in ratios[0]), ratios
    assert distances[0] == pytest.approx(0.8, rel=0.2) and distances[1] == pytest.approx(2.4, rel=0.2)  # E|N(0, s)|


def test_roughness_does_not_depend_on_the_triangulation():
    """A coarse mesh (edges longer than the radius, like the body model's torso) and a fine one of
    the same smooth surface both score near 0, far below a noisy copy."""
    angles = {}
    for subdivisions in (2, 5):
        v, f, _ = sphere(subdivisions)
        a, w = roughness_angles(v, f, radius=0.02)
        angles[subdivisions] = np.average(a, weights=w)
    v, f, _ = sphere(4)
    a, w = roughness_angles(radial_noise(v, 0.003), f, radius=0.02)
    assert max(angles.values()) < 1.0 and np.average(a, weights=w) > 5.0, (angles, np.average(a, weights=w))


def test_vertex_normals_and_areas_of_a_cube():
    box = trimesh.creation.box((1.0, 2.0, 3.0))
    normals, areas = vertex_normals_and_areas(np.asarray(box.vertices), np.asarray(box.faces))
    assert areas.sum() == pytest.approx(box.area)
    assert np.allclose(np.linalg.norm(normals, axis=1), 1.0)
    assert (np.sign(normals) == np.sign(box.vertices)).all()  # corners: outward, between their three faces


@pytest.mark.parametrize(
    "prompt, expected",
    [
        ("a person in a red shirt and blue trousers", {"torso": "named", "hips": "named", "legs": "named"}),
        ("someone wearing a green dress", {"torso": "named", "hips": "named", "legs": "partly"}),
        (
            "a woman in a yellow hoodie and black shorts",
            {"torso": "named", "arms": "named", "hips": "named", "legs": "partly"},
        ),
        ("a firefighter", {}),
        (
            "A man in Long-Sleeved SHIRTS, white sneakers and a cap",
            {"head": "partly", "torso": "named", "arms": "named", "feet": "named"},
        ),  # fmt: skip
        (
            "a girl with long blond hair in a black t-shirt and gloves",
            {"head": "partly", "torso": "named", "hands": "named"},
        ),  # fmt: skip
        ("a man in grey dresses and leggings", {"torso": "named", "hips": "named", "legs": "named"}),
        ("a programmer with a laptop", {}),  # whole words only: no "top"
        # Garment words of the WordNet lexicon whose main sense is clothing (pullover: a sweater,
        # corduroys: trousers, moccasins: shoes); "walker" (a person first, a shoe second) names nothing.
        (
            "a woman in a maroon pullover and brown corduroys",
            {"torso": "named", "arms": "named", "hips": "named", "legs": "named"},
        ),
        ("a walker in red moccasins", {"feet": "named"}),
    ],
)
def test_named_regions(prompt, expected):
    named = named_regions(prompt)
    assert named == expected
    assert list(named) == [r for r in REGIONS if r in named]


def test_prompt_colors_reads_longer_names_first():
    colors = prompt_colors("a person in a Dark Blue shirt and gray trousers, red shoes")
    assert list(colors) == ["dark blue", "grey", "red"]  # not "dark" nor "blue"; "gray" = "grey"
    assert colors["red"] == [1.0, 0.0, 0.0]
    assert prompt_colors("a firefighter") == {}


def region_colors(rgb_of: dict[str, tuple[float, float, float]], per_region: int = 5):
    index = np.repeat(np.arange(len(REGIONS)), per_region)
    colors = np.array([rgb_of.get(r, (0.7, 0.7, 0.7)) for r in REGIONS], dtype=np.float64)[index]
    return colors, index


GREY = {r: [0.7, 0.7, 0.7] for r in REGIONS}


def test_color_metrics_flags_unnamed_regions_that_took_the_prompts_colour():
    prompt = "a person in a red shirt and blue trousers"
    colors, index = region_colors({
        "torso": (0.9, 0.1, 0.1), "hips": (0.1, 0.1, 0.8), "legs": (0.1, 0.1, 0.8),
        "head": (0.85, 0.15, 0.15),  # took the shirt's red
        "feet": (0.65, 0.65, 0.65),  # a little darker: kept its grey
    })  # fmt: skip  # hands and arms: grey, as before guidance
    out = color_metrics(colors, index, prompt, GREY)
    regions = out["regions"]
    assert list(out["prompt_colors"]) == ["red", "blue"]
    assert out["unnamed_regions"] == ["head", "arms", "hands", "feet"]
    assert out["unnamed_took_prompt_color"] == ["head"] and out["unnamed_like_named_region"] == ["head"]
    assert regions["head"]["nearest_prompt_color"] == "red" and regions["head"]["like_named_region"] == "torso"
    assert regions["hands"]["drift"] == pytest.approx(0.0) and not regions["hands"]["took_prompt_color"]
    assert regions["torso"]["prompt"] == "named" and regions["torso"]["took_prompt_color"]
    drifts = [
        np.linalg.norm(np.subtract(rgb, 0.7)) for rgb in ((0.85, 0.15, 0.15), (0.7,) * 3, (0.7,) * 3, (0.65,) * 3)
    ]
    assert out["unnamed_drift"] == pytest.approx(np.mean(drifts))
    # 8-bit colours (a .ply's) read the same
    as_bytes = color_metrics(np.round(colors * 255).astype(np.uint8), index, prompt, GREY)
    assert as_bytes["unnamed_took_prompt_color"] == ["head"]
    assert as_bytes["regions"]["head"]["rgb"] == pytest.approx(regions["head"]["rgb"], abs=2 / 255)


def test_color_metrics_sees_a_garment_colour_spread_even_when_it_missed_the_prompt():
    purple = (0.6, 0.3, 0.9)  # the shirt came out purple, and so did the arms and hands
    colors, index = region_colors({"torso": purple, "arms": purple, "hands": (0.62, 0.32, 0.88)})
    out = color_metrics(torch.as_tensor(colors), torch.as_tensor(index), "a person in a red shirt", GREY)
    assert out["unnamed_took_prompt_color"] == []
    assert out["unnamed_like_named_region"] == ["arms", "hands"]
    nothing = color_metrics(colors, index, "a firefighter", GREY)
    assert nothing["prompt_colors"] == {} and nothing["unnamed_regions"] == list(REGIONS)
    assert nothing["unnamed_took_prompt_color"] == [] and nothing["unnamed_like_named_region"] == []


def test_eval_appearance_on_a_fabricated_run(tmp_path, anny_low, capsys):
    """A run folder as the appearance stage leaves it: the low-poly body in the T-pose pushed 4 mm
    out along its normals, its torso red, the rest grey."""
    from avatar.body.regions import vertex_regions
    from avatar.body.skinning import rig_from_body
    from avatar.export.media import save_mesh

    run = tmp_path / "run"
    run.mkdir()
    prompt = "a person in a red shirt"
    cfg = compose_cfg(
        run, "stage=appearance", f"body.topology={LOW_POLY}", f"prompt.appearance='{prompt}'", "stage.coarse_color=grey"
    )  # the coarse body grey everywhere: the regions left grey kept their colour
    (run / "config_resolved.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    body = rig_from_body(anny_low, anny_low.default_shape(1), "t_pose")
    normals, _ = vertex_normals_and_areas(body.vertices.double().numpy(), body.faces.numpy())
    rig = replace(body, vertices=body.vertices + 0.004 * torch.as_tensor(normals, dtype=body.vertices.dtype))
    rig.save(run / "avatar_rig.npz")
    regions = vertex_regions(rig.weights)
    colors = torch.full((rig.num_vertices, 3), 0.7)
    colors[regions == REGIONS.index("torso")] = torch.tensor([0.9, 0.1, 0.1])
    save_mesh(run / "avatar.ply", rig.vertices, rig.faces, colors)

    out_file = tmp_path / "appearance.json"
    cli.main(["appearance", str(run), "--json", str(out_file)])
    (result,) = json.loads(out_file.read_text())
    dist = result["surface"]["surface_distance_mm"]["all"]
    assert 2.5 < dist["mean"] <= 4.05 and dist["signed_mean"] > 2.5, dist  # concave spots are nearer
    assert result["surface"]["roughness_deg"]["ratio"]["torso"] == pytest.approx(1.0, abs=0.3)
    colors_out = result["colors"]
    assert result["prompt"] == prompt and colors_out["regions"]["torso"]["prompt"] == "named"
    assert colors_out["unnamed_drift"] < 0.01 and colors_out["unnamed_took_prompt_color"] == []
    printed = capsys.readouterr().out
    (torso,) = table_rows(printed, "torso")
    assert torso[8] == "named" and torso[10] == "red", torso
    (head,) = table_rows(printed, "head")
    assert head[8] == "unnamed" and head[10] == "no", head
    with pytest.raises(SystemExit, match="not a finished appearance run"):
        cli.main(["appearance", str(tmp_path)])


def test_a_region_that_barely_moved_kept_its_colour():
    """Silver (0.75) is next to the coarse grey (0.7): hands at 0.73 are nearer silver than grey,
    but moved too little to have taken anything."""
    colors, index = region_colors({"torso": (0.75, 0.75, 0.75), "hands": (0.73, 0.73, 0.73)})
    out = color_metrics(colors, index, "a person in a silver shirt", GREY)
    hands = out["regions"]["hands"]
    assert hands["nearest_prompt_distance"] < hands["drift"] < 0.1
    assert not hands["took_prompt_color"] and hands["like_named_region"] is None
    assert out["unnamed_took_prompt_color"] == [] and out["unnamed_like_named_region"] == []
