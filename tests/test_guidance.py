"""Guidance backends, driven through their real loading paths with tiny synthetic checkpoints.

No CLIP weights exist offline, so each test builds a small model with the package's own model
code, saves it, and loads it back through the backend. Nothing here touches the network:
the by-name/by-tag paths are driven with ``allow_download=False``.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import open_clip
import pytest
import torch

with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)  # clip imports the deprecated pkg_resources
    import clip
from avatar.guidance import (
    GUIDANCE,
    ClipGuidanceConfig,
    Guidance,
    GuidanceWeightsError,
    MiniGuidanceConfig,
    OpenClipGuidanceConfig,
    build_guidance,
    similarity,
)
from avatar.guidance.open_clip_backend import _cached_file

TINY_OPEN_CLIP = "tiny-guidance-test"  # the model JSON's file stem is the model name
OPEN_CLIP_TAG = "laion2b_s34b_b79k"


def _tiny_clip() -> torch.nn.Module:
    torch.manual_seed(0)
    model = clip.model.CLIP(
        embed_dim=64,
        image_resolution=64,
        vision_layers=2,
        vision_width=64,
        vision_patch_size=32,
        context_length=77,
        vocab_size=49408,
        transformer_width=64,
        transformer_heads=2,
        transformer_layers=2,
    )
    # clip.model.build_model stores the weights in fp16 before clip.load casts them back to
    # fp32 on the CPU; fp16-representable values make the round trip exact.
    for p in model.parameters():
        p.data = p.data.half().float()
    return model.eval()


def _assert_same_weights(expected: dict, loaded: dict) -> None:
    assert set(expected) == set(loaded)
    for key, value in expected.items():
        assert torch.equal(value, loaded[key]), key


@pytest.fixture(scope="module")
def clip_checkpoint(tmp_path_factory) -> tuple[Path, dict]:
    model = _tiny_clip()
    path = tmp_path_factory.mktemp("clip") / "tiny-clip.pt"
    torch.save(model.state_dict(), path)
    return path, model.state_dict()


@pytest.fixture(scope="module")
def open_clip_checkpoint(tmp_path_factory) -> tuple[Path, Path, dict]:
    folder = tmp_path_factory.mktemp("open_clip")
    config_file = folder / f"{TINY_OPEN_CLIP}.json"
    config_file.write_text(
        json.dumps(
            {
                "embed_dim": 32,
                "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 32, "head_width": 32},
                "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
            }
        )
    )
    open_clip.add_model_config(config_file)
    torch.manual_seed(1)
    model = open_clip.create_model(TINY_OPEN_CLIP, pretrained=None)
    path = folder / "tiny-open-clip.pt"
    torch.save(model.state_dict(), path)
    return config_file, path, model.state_dict()


@pytest.fixture(scope="module")
def clip_guidance(clip_checkpoint) -> Guidance:
    return build_guidance(ClipGuidanceConfig(checkpoint=str(clip_checkpoint[0])))


@pytest.fixture(scope="module")
def open_clip_guidance(open_clip_checkpoint) -> Guidance:
    config_file, path, _ = open_clip_checkpoint
    return build_guidance(
        OpenClipGuidanceConfig(model=TINY_OPEN_CLIP, pretrained=str(path), model_config_file=str(config_file))
    )


@pytest.fixture(params=["clip", "open_clip"])
def guidance(request) -> Guidance:
    return request.getfixturevalue(f"{request.param}_guidance")


# -- loading the real file ------------------------------------------------------------------
def test_clip_loads_the_saved_state_dict(clip_guidance, clip_checkpoint):
    torch.manual_seed(123)  # a random init would differ from the saved weights
    _assert_same_weights(clip_checkpoint[1], clip_guidance.model.state_dict())
    assert clip_guidance.embed_dim == 64
    assert clip_guidance.input_size == (64, 64)  # inferred from the positional embedding


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::torch.jit.TracerWarning")
def test_clip_loads_a_jit_archive(tmp_path):
    model = _tiny_clip()
    traced = torch.jit.trace(model, (torch.rand(1, 3, 64, 64), clip.tokenize(["a person"])))
    path = tmp_path / "tiny-clip-jit.pt"
    torch.jit.save(traced, path)
    guidance = build_guidance(ClipGuidanceConfig(checkpoint=str(path)))
    _assert_same_weights(model.state_dict(), guidance.model.state_dict())


def test_open_clip_loads_the_saved_state_dict(open_clip_guidance, open_clip_checkpoint):
    _assert_same_weights(open_clip_checkpoint[2], open_clip_guidance.model.state_dict())
    assert open_clip_guidance.embed_dim == 32
    assert open_clip_guidance.input_size == (64, 64)


def test_open_clip_loads_safetensors(open_clip_checkpoint, tmp_path):
    from safetensors.torch import save_file

    config_file, _, state_dict = open_clip_checkpoint
    path = tmp_path / "tiny.safetensors"
    save_file(state_dict, str(path))
    guidance = build_guidance({"name": "open_clip", "model": TINY_OPEN_CLIP, "pretrained": str(path)})
    _assert_same_weights(state_dict, guidance.model.state_dict())


# -- the protocol, for every backend ---------------------------------------------------------
def test_embeddings_have_shape_and_unit_norm(guidance):
    text = guidance.encode_text(["a tall man", "a short woman", "a child"])
    image = guidance.encode_image(torch.rand(2, 3, *guidance.input_size))
    assert text.shape == (3, guidance.embed_dim) and image.shape == (2, guidance.embed_dim)
    for emb in (text, image):
        assert emb.dtype == torch.float32
        torch.testing.assert_close(emb.norm(dim=-1), torch.ones(len(emb)))


def test_encode_image_resizes_any_size_differentiably(guidance):
    images = torch.rand(2, 3, 128, 96, requires_grad=True)
    emb = guidance.encode_image(images)
    assert emb.shape == (2, guidance.embed_dim)
    guidance.guidance_loss(images, "a person").sum().backward()
    assert torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0
    assert all(p.grad is None for p in guidance.parameters())


def test_guidance_loss_decreases_under_adam(guidance):
    torch.manual_seed(0)
    logits = torch.zeros(1, 3, 96, 96, requires_grad=True)  # image = sigmoid(logits), in [0, 1]
    optimizer = torch.optim.Adam([logits], lr=0.1)
    losses = []
    for _ in range(8):
        loss = guidance.guidance_loss(torch.sigmoid(logits), "a muscular man").mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 1e-3


def test_guidance_loss_pairs_prompts_with_images(guidance):
    images = torch.rand(2, 3, 64, 64)
    prompts = ["a tall man", "a short woman"]
    expected = 1 - similarity(guidance.encode_image(images), guidance.encode_text(prompts))
    torch.testing.assert_close(guidance.guidance_loss(images, prompts), expected)
    broadcast = guidance.guidance_loss(images, "a tall man")
    assert broadcast.shape == (2,)
    torch.testing.assert_close(broadcast[0], expected[0])
    with pytest.raises(ValueError, match="3 prompts"):
        guidance.guidance_loss(images, ["a", "b", "c"])


def test_text_embeddings_are_cached_and_consistent(guidance):
    first = guidance.encode_text(["a dancer", "a robot"])
    assert {"a dancer", "a robot"} <= set(guidance._text_cache)
    again = guidance.encode_text(["a robot", "a dancer", "a robot"])
    torch.testing.assert_close(again, first[[1, 0, 1]])
    assert not first.requires_grad


def test_weights_are_frozen_even_after_train(guidance):
    guidance.train()
    assert not guidance.training and not any(m.training for m in guidance.modules())
    assert not any(p.requires_grad for p in guidance.parameters())


@pytest.mark.parametrize("prompts", ["", "   ", [], ["a man", ""]])
def test_empty_prompts_are_refused(guidance, prompts):
    with pytest.raises(ValueError, match="prompt"):
        guidance.encode_text(prompts)


def test_empty_prompt_is_named_in_the_error(clip_guidance):
    with pytest.raises(ValueError, match=r"Text prompt 1 is empty \(' '\)"):
        clip_guidance.guidance_loss(torch.rand(1, 3, 64, 64), ["a man", " "])


# -- missing weights: clear errors, fast, no network ---------------------------------------
def test_clip_missing_checkpoint_names_path_key_and_hint(tmp_path):
    missing = tmp_path / "ViT-B-32.pt"
    with pytest.raises(GuidanceWeightsError) as err:
        build_guidance(ClipGuidanceConfig(checkpoint=str(missing)))
    message = str(err.value)
    assert str(missing) in message and "guidance.checkpoint" in message
    assert "python -c \"import clip; clip.load('ViT-B/32')\"" in message
    assert "~/.cache/clip/ViT-B-32.pt" in message
    assert isinstance(err.value, FileNotFoundError) and isinstance(err.value, RuntimeError)


def test_clip_unreadable_checkpoint_is_a_weights_error(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(GuidanceWeightsError, match="guidance.checkpoint=.*bad.pt. is not a PyTorch file"):
        build_guidance(ClipGuidanceConfig(checkpoint=str(bad)))


def test_clip_by_name_without_download_names_the_expected_file(tmp_path):
    start = time.monotonic()
    with pytest.raises(GuidanceWeightsError) as err:
        build_guidance(ClipGuidanceConfig(download_root=str(tmp_path), allow_download=False))
    assert time.monotonic() - start < 2
    message = str(err.value)
    assert str(tmp_path / "ViT-B-32.pt") in message and "does not exist" in message
    assert "guidance.checkpoint=/path/to/ViT-B-32.pt" in message and "clip.load('ViT-B/32')" in message


def test_clip_by_name_with_a_corrupt_file_is_refused(tmp_path):
    (tmp_path / "ViT-B-32.pt").write_bytes(b"partial download")
    with pytest.raises(GuidanceWeightsError, match="SHA256 does not match"):
        build_guidance(ClipGuidanceConfig(download_root=str(tmp_path), allow_download=False))


def test_clip_unknown_model_name():
    with pytest.raises(ValueError, match="Unknown CLIP model 'ViT-Z/99'"):
        build_guidance(ClipGuidanceConfig(model="ViT-Z/99"))


@pytest.mark.parametrize("pretrained", [None, ""])
def test_open_clip_refuses_random_weights(pretrained):
    with pytest.raises(GuidanceWeightsError, match="never runs with random ones") as err:
        build_guidance(OpenClipGuidanceConfig(pretrained=pretrained))
    assert "guidance.pretrained" in str(err.value)


def test_open_clip_missing_file_names_path_and_key(tmp_path):
    missing = tmp_path / "open_clip_model.safetensors"
    with pytest.raises(GuidanceWeightsError) as err:
        build_guidance(OpenClipGuidanceConfig(pretrained=str(missing)))
    message = str(err.value)
    assert str(missing) in message and "guidance.pretrained" in message
    assert "open_clip.create_model('ViT-B-32', pretrained='laion2b_s34b_b79k'" in message


def test_open_clip_tag_without_download_names_cache_and_hint(tmp_path):
    start = time.monotonic()
    with pytest.raises(GuidanceWeightsError) as err:
        build_guidance(OpenClipGuidanceConfig(cache_dir=str(tmp_path), allow_download=False))
    assert time.monotonic() - start < 2
    message = str(err.value)
    assert str(tmp_path) in message and OPEN_CLIP_TAG in message
    assert "guidance.pretrained" in message and "guidance.cache_dir" in message


def test_open_clip_finds_a_tag_in_the_hub_cache_offline(tmp_path):
    # The layout huggingface_hub writes: models--org--repo/{refs/main, snapshots/<rev>/file}.
    repo = tmp_path / "models--laion--CLIP-ViT-B-32-laion2B-s34B-b79K"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    weights = repo / "snapshots" / "abc123" / "open_clip_model.safetensors"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"")
    tag_cfg = open_clip.get_pretrained_cfg("ViT-B-32", OPEN_CLIP_TAG)
    assert _cached_file(tag_cfg, str(tmp_path)) == str(weights)
    assert _cached_file(tag_cfg, str(tmp_path / "elsewhere")) is None


def test_open_clip_unknown_model_points_at_model_config_file():
    with pytest.raises(ValueError, match="model_config_file"):
        build_guidance(OpenClipGuidanceConfig(model="no-such-model"))


def test_mini_missing_weights_explain_how_to_get_them(tmp_path):
    missing = str(tmp_path / "mini.pt")
    with pytest.raises(GuidanceWeightsError) as err:
        build_guidance(MiniGuidanceConfig(checkpoint=missing))
    message = str(err.value)
    assert missing in message and "guidance.checkpoint" in message
    assert "stage=train_guidance" in message and "guidance=clip" in message


# -- building from config ------------------------------------------------------------------
def test_build_from_omegaconf_and_registry_errors(clip_checkpoint):
    from omegaconf import OmegaConf

    assert {"clip", "open_clip", "mini"} <= set(GUIDANCE.names())
    cfg = OmegaConf.create({"name": "clip", "checkpoint": str(clip_checkpoint[0])})
    assert build_guidance(cfg).embed_dim == 64
    with pytest.raises(TypeError, match="checkpont"):
        build_guidance({"name": "clip", "checkpont": "typo"})
    with pytest.raises(KeyError, match="guidance"):
        build_guidance({"name": "nope"})


def test_similarity_is_rowwise_cosine():
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    b = torch.tensor([[1.0, 0.0]])
    torch.testing.assert_close(similarity(a, b), torch.tensor([1.0, 0.0]))
