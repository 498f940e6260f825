"""A stage's text direction map (avatar/guidance/text_map.py): its algebra, its fit, how a stage
finds it and refuses one fitted for other weights, and the shipped map for the shipped mini."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from avatar.guidance.text_map import (
    TextDirectionMap,
    fit_direction_map,
    map_beside,
    pearson,
    resolve_text_map,
)
from avatar.stages.shape import direction_scores
from avatar.utils.files import InputFileError, short_hash


def test_a_zero_map_is_the_identity_and_every_map_normalises():
    g = torch.Generator().manual_seed(0)
    text = F.normalize(torch.randn(5, 16, generator=g), dim=-1)
    assert torch.allclose(TextDirectionMap(torch.zeros(16, 16))(text), text, atol=1e-6)
    mapped = TextDirectionMap(torch.randn(16, 16, generator=g))(text)
    assert torch.allclose(mapped.norm(dim=-1), torch.ones(5), atol=1e-5)
    assert not torch.allclose(mapped, text, atol=1e-2)
    with pytest.raises(ValueError, match="square"):
        TextDirectionMap(torch.zeros(16, 8))


def test_the_fit_turns_a_prompt_that_points_the_wrong_way():
    """Bodies vary along u in image space; the prompt's text direction points along -u, so its
    direction score anti-correlates with the attribute; the fitted map turns it round."""
    g = torch.Generator().manual_seed(3)
    dim, n = 12, 300
    u = F.normalize(torch.randn(dim, generator=g), dim=0)
    base = F.normalize(torch.randn(dim, generator=g), dim=0)
    attribute = torch.randn(n, generator=g)
    images = F.normalize(base + 0.3 * attribute[:, None] * u + 0.05 * torch.randn(n, dim, generator=g), dim=-1)
    neutral_text = F.normalize(torch.randn(dim, generator=g), dim=0)
    prompt = F.normalize(neutral_text - 0.4 * u, dim=0)[None]
    before = pearson(direction_scores(images, base, prompt[0], neutral_text), attribute)
    weight, history = fit_direction_map(prompt, neutral_text, images, base, attribute[None], steps=150, l2=1e-3)
    after = pearson(
        direction_scores(images, base, TextDirectionMap(weight)(prompt)[0], TextDirectionMap(weight)(neutral_text)),
        attribute,
    )
    assert before < -0.5 and after > 0.8
    assert history[-1] == pytest.approx(float(after), abs=0.05)


def _guidance(file, dim: int = 16):
    return SimpleNamespace(embed_dim=dim, loaded_weights={"file": str(file), "sha256_12": short_hash(file)})


def test_auto_finds_the_map_beside_the_weights_and_refuses_one_for_other_weights(tmp_path, caplog):
    weights = tmp_path / "model.pt"
    weights.write_bytes(b"weights v1")
    guidance = _guidance(weights)
    assert resolve_text_map("auto", guidance, "shape", "stage.text_map") is None  # none fitted yet
    weight = 0.1 * torch.randn(16, 16, generator=torch.Generator().manual_seed(0))
    TextDirectionMap(weight, {"guidance_sha256_12": short_hash(weights)}).save(map_beside(weights, "shape"))
    assert map_beside(weights, "shape").name == "model_shape_map.pt"
    found = resolve_text_map("auto", guidance, "shape", "stage.text_map")
    assert found is not None and torch.equal(found.weight, weight)
    assert found.record()["guidance_sha256_12"] == short_hash(weights)
    assert resolve_text_map("none", guidance, "shape", "stage.text_map") is None

    weights.write_bytes(b"weights v2, retrained")  # the map now belongs to other weights
    guidance = _guidance(weights)
    with caplog.at_level(logging.WARNING, logger="avatar.guidance.text_map"):
        assert resolve_text_map("auto", guidance, "shape", "stage.text_map") is None
    assert "fitted for the guidance weights" in caplog.text and "stage.text_map=none" in caplog.text
    with pytest.raises(InputFileError, match=r"`stage.text_map=.*model_shape_map.pt` does not fit the guidance"):
        resolve_text_map(str(map_beside(weights, "shape")), guidance, "shape", "stage.text_map")


def test_an_explicit_map_of_the_wrong_size_or_kind_names_the_key(tmp_path):
    weights = tmp_path / "model.pt"
    weights.write_bytes(b"weights")
    small = tmp_path / "small.pt"
    TextDirectionMap(torch.zeros(8, 8)).save(small)
    with pytest.raises(InputFileError, match=r"maps 8-d embeddings and the guidance's are 16-d"):
        resolve_text_map(str(small), _guidance(weights), "shape", "stage.text_map")
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(InputFileError, match=r"`stage.text_map=.*other.pt` holds no 'weight' tensor"):
        resolve_text_map(str(other), _guidance(weights), "shape", "stage.text_map")
    with pytest.raises(FileNotFoundError, match="stage.text_map"):
        resolve_text_map(str(tmp_path / "missing.pt"), _guidance(weights), "shape", "stage.text_map")


def test_the_shipped_mini_has_its_shape_map():
    """mini_shape_map.pt was fitted for the shipped mini.pt: republishing mini.pt without
    refitting the map (experiments/guidance/shape_direction_adapter.py --out ...) fails here."""
    from avatar.guidance import build_guidance

    guidance = build_guidance({"name": "mini"})
    text_map = resolve_text_map("auto", guidance, "shape", "stage.text_map")
    assert text_map is not None and text_map.dim == guidance.embed_dim
    assert text_map.meta["guidance_sha256_12"] == guidance.loaded_weights["sha256_12"]
    assert float(text_map.weight.norm()) > 0.1  # it was fitted, not left at the identity
