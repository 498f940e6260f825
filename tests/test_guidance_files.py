"""Trustworthy guidance weights (issue 23): every file a guidance backend is pointed at either
loads as what the config says, or fails with a message naming the file, the config key and the
likely cause; the activation and architecture that run are the ones the weights were trained
with; and the backend names (log line + ``loaded_weights``) the weights it really loaded.

Like tests/test_guidance.py, every model is a tiny one built by the libraries' own code (no
mocks): CLIP through ``clip.model.CLIP``, OpenCLIP through a model JSON, mini through
``MiniImageTextModel``.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import warnings
from pathlib import Path

import open_clip
import pytest
import torch

with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)  # clip imports the deprecated pkg_resources
    import clip
from avatar.guidance import ClipGuidanceConfig, MiniGuidanceConfig, OpenClipGuidanceConfig, build_guidance
from avatar.guidance.base import GuidanceFileError, GuidanceWeightsError
from avatar.guidance.clip_backend import (
    RELEASED_CLIP_ARCHITECTURES,
    ClipArchitecture,
    clip_architecture,
    released_clip_name,
)
from avatar.guidance.mini_model import MiniImageTextModel, MiniModelConfig, read_checkpoint
from avatar.guidance.open_clip_backend import _recognised_tag
from avatar.utils.files import InputFileError, short_hash

TINY = "tiny-files-test"  # OpenCLIP model JSON stems (the model names)
TINY_QUICKGELU = "tiny-files-test-quickgelu"
TINY_PATCH16 = "tiny-files-test-patch16"
SMALL_MINI = MiniModelConfig(embed_dim=32, image_channels=(8, 16, 16, 16, 16), image_hidden=32, text_trainable_layers=1)
KEY = {"mini": "guidance.checkpoint", "clip": "guidance.checkpoint", "open_clip": "guidance.pretrained"}


def _tiny_clip(patch_size: int = 32) -> torch.nn.Module:
    """A tiny OpenAI CLIP whose head counts are width / 64, as OpenAI-format loaders assume."""
    torch.manual_seed(0)
    model = clip.model.CLIP(
        embed_dim=32, image_resolution=64, vision_layers=2, vision_width=64,
        vision_patch_size=patch_size, context_length=77, vocab_size=49408,
        transformer_width=64, transformer_heads=1, transformer_layers=2,
    )  # fmt: skip
    for p in model.parameters():  # fp16-representable: exact through clip's fp16 round trip
        p.data = p.data.half().float()
    return model.eval()


def _open_clip_config(folder: Path, name: str, patch_size: int = 32, **extra) -> Path:
    config_file = folder / f"{name}.json"
    config_file.write_text(json.dumps({
        "embed_dim": 32,
        "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": patch_size, "head_width": 64},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 2},
        **extra,
    }))  # fmt: skip
    open_clip.add_model_config(config_file)
    return config_file


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Good weights for each backend, and the tiny OpenCLIP model configs."""
    folder = tmp_path_factory.mktemp("weights")
    _open_clip_config(folder, TINY)
    _open_clip_config(folder, TINY_QUICKGELU, quick_gelu=True)
    _open_clip_config(folder, TINY_PATCH16, patch_size=16)
    model = _tiny_clip()
    torch.save(model.state_dict(), folder / "clip.pt")
    torch.save(_tiny_clip(patch_size=16).state_dict(), folder / "clip-patch16.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation and tracer warnings
        traced = torch.jit.trace(model, (torch.rand(1, 3, 64, 64), clip.tokenize(["a person"])))
        torch.jit.save(traced, folder / "clip-openai-format.pt")
    mini = MiniImageTextModel(SMALL_MINI)
    torch.save(mini.checkpoint({"note": "test"}), folder / "mini.pt")
    return {"clip": folder / "clip.pt", "open_clip": folder / "clip.pt", "mini": folder / "mini.pt",
            "clip_patch16": folder / "clip-patch16.pt", "openai_format": folder / "clip-openai-format.pt"}  # fmt: skip


def _config(backend: str, path: Path, **kw):
    if backend == "mini":
        return MiniGuidanceConfig(checkpoint=str(path), **kw)
    if backend == "clip":
        return ClipGuidanceConfig(checkpoint=str(path), **kw)
    return OpenClipGuidanceConfig(model=kw.pop("model", TINY), pretrained=str(path), **kw)


def _lightning_checkpoint(pickled_objects: bool) -> dict:
    """What Lightning's ModelCheckpoint writes (its keys), with or without hyper-parameters that
    need full unpickling (a Namespace, as `save_hyperparameters` of argparse args stores)."""
    hparams = argparse.Namespace(lr=1e-3) if pickled_objects else {"lr": 1e-3}
    return {"epoch": 3, "global_step": 120, "pytorch-lightning_version": "2.6.6",
            "state_dict": {"model.layer.weight": torch.zeros(2, 2)}, "optimizer_states": [],
            "hyper_parameters": hparams}  # fmt: skip


def _bad_file(kind: str, backend: str, files: dict, folder: Path) -> tuple[Path, str]:
    """A bad weights file of ``kind`` for ``backend`` and a word its error must contain."""
    suffix = ".pt"
    if kind == "truncated":
        data = files[backend].read_bytes()
        data, cause = data[: len(data) // 2], "truncated"
    elif kind == "empty":
        data, cause = b"", "empty"
    elif kind == "random":
        data, cause = random.Random(0).randbytes(4096), "random"
    elif kind == "html":
        data, cause = b"<html><body>403 Forbidden</body></html>", "text"
    elif kind == "lightning":
        path = folder / "epoch=3-step=120.ckpt"
        torch.save(_lightning_checkpoint(pickled_objects=False), path)
        return path, "Lightning training checkpoint"
    elif kind == "lightning_pickled":
        path = folder / "last.ckpt"
        torch.save(_lightning_checkpoint(pickled_objects=True), path)
        return path, "Lightning training checkpoint"
    elif kind == "foreign":  # another backend's weights
        other = files["clip"] if backend == "mini" else files["mini"]
        return other, ("CLIP state dict" if backend == "mini" else "mini guidance checkpoint")
    else:
        raise AssertionError(kind)
    path = folder / f"{kind}{suffix}"
    path.write_bytes(data)
    return path, cause


@pytest.mark.parametrize("backend", ["mini", "clip", "open_clip"])
@pytest.mark.parametrize("kind", ["truncated", "empty", "random", "html", "lightning", "lightning_pickled", "foreign"])
def test_bad_weights_file_names_file_key_and_cause(files, tmp_path, backend, kind):
    path, cause = _bad_file(kind, backend, files, tmp_path)
    with pytest.raises(GuidanceFileError) as err:
        build_guidance(_config(backend, path))
    message = str(err.value)
    assert f"`{KEY[backend]}={path}`" in message, message
    assert cause in message, message
    assert "weights_only=False" not in message and "weights_only" not in message, message
    # One error type for "this file is not what the config says", which callers of the
    # backends (GuidanceWeightsError) and of the file readers (InputFileError) both catch.
    assert isinstance(err.value, InputFileError) and isinstance(err.value, GuidanceWeightsError)


def test_truncated_safetensors_for_open_clip(files, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "weights.safetensors"
    save_file(torch.load(files["clip"], weights_only=True), str(path))
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(GuidanceFileError, match=r"guidance.pretrained=.*weights.safetensors.*truncated"):
        build_guidance(_config("open_clip", path))


def test_openai_torchscript_archive_into_mini_is_named(files):
    with pytest.raises(GuidanceFileError, match="TorchScript archive .*guidance=clip"):
        build_guidance(_config("mini", files["openai_format"]))


def test_mini_reader_names_the_key_it_was_given(tmp_path):
    """The training stage's and the interpolation script's reader: the same clear errors."""
    empty = tmp_path / "mini.pt"
    empty.write_bytes(b"")
    with pytest.raises(InputFileError, match=r"`stage.init_weights=.*mini.pt` is empty"):
        read_checkpoint(empty, "stage.init_weights")


def test_mini_checkpoint_from_another_version_is_named(files, tmp_path):
    payload = torch.load(files["mini"], weights_only=True)
    payload["config"]["image_layers"] = 7
    path = tmp_path / "future-mini.pt"
    torch.save(payload, path)
    with pytest.raises(GuidanceFileError, match=r"guidance.checkpoint=.*another version"):
        build_guidance(_config("mini", path))


# -- architecture: detected from the tensor shapes, refused when not the configured one ----------
@pytest.fixture(scope="module")
def vit_b16_weights(tmp_path_factory) -> Path:
    """A state dict of OpenAI's ViT-B/16 shapes (zeros, float16: ~300 MB, no model built)."""
    with torch.device("meta"):
        shapes = clip.model.CLIP(512, 224, 12, 768, 16, 77, 49408, 512, 8, 12).state_dict()
    path = tmp_path_factory.mktemp("vit_b16") / "ViT-B-16.pt"
    torch.save({k: torch.zeros(v.shape, dtype=torch.float16) for k, v in shapes.items()}, path)
    return path


def test_clip_refuses_vit_b16_weights_under_a_vit_b32_config(vit_b16_weights):
    assert released_clip_name(clip_architecture(torch.load(vit_b16_weights, weights_only=True))) == "ViT-B/16"
    with pytest.raises(GuidanceFileError) as err:
        build_guidance(ClipGuidanceConfig(checkpoint=str(vit_b16_weights), model="ViT-B/32"))
    message = str(err.value)
    assert f"guidance.checkpoint={vit_b16_weights}" in message and "ViT-B/16 weights" in message
    assert "Set `guidance.model=ViT-B/16`" in message


def test_open_clip_refuses_vit_b16_weights_under_a_vit_b32_config(vit_b16_weights):
    with pytest.raises(GuidanceFileError) as err:
        build_guidance(OpenClipGuidanceConfig(model="ViT-B-32", pretrained=str(vit_b16_weights)))
    message = str(err.value)
    assert f"guidance.pretrained={vit_b16_weights}" in message and "patch_size 16 vs 32" in message
    assert "Set `guidance.model=ViT-B-16`" in message


def test_open_clip_refuses_weights_of_another_custom_architecture(files, tmp_path):
    # A registered model of the file's architecture is named as the fix ...
    with pytest.raises(GuidanceFileError, match=f"patch_size 16 vs 32.*Set `guidance.model={TINY_PATCH16}`"):
        build_guidance(_config("open_clip", files["clip_patch16"]))
    guidance = build_guidance(_config("open_clip", files["clip_patch16"], model=TINY_PATCH16))
    assert guidance.loaded_weights["architecture"] == TINY_PATCH16
    # ... and without one, a model JSON is (open_clip would resize the positional embedding of
    # 96 px weights to 64 px without a word).
    model = clip.model.CLIP(32, 96, 2, 64, 32, 77, 49408, 64, 1, 2)
    path = tmp_path / "clip-96px.pt"
    torch.save(model.state_dict(), path)
    with pytest.raises(GuidanceFileError, match="image_size 96 vs 64.*No built-in.*guidance.model_config_file"):
        build_guidance(_config("open_clip", path))


def test_clip_architecture_agrees_with_clips_build_model(files):
    state_dict = torch.load(files["clip"], weights_only=True)
    model = clip.model.build_model(dict(state_dict))
    arch = clip_architecture(state_dict)
    assert (arch.patch_size, arch.vision_width, arch.vision_layers) == (32, 64, 2)
    assert arch.image_size == model.visual.input_resolution == 64
    assert arch.embed_dim == model.text_projection.shape[1] == 32
    assert arch.context_length == model.context_length and arch.text_layers == len(model.transformer.resblocks)
    assert released_clip_name(arch) is None


@pytest.mark.parametrize("clip_name", sorted(RELEASED_CLIP_ARCHITECTURES))
def test_released_architectures_match_open_clips_configs(clip_name):
    open_clip_name = clip_name.replace("/", "-").replace("@336px", "-336")
    expected = ClipArchitecture.from_open_clip_config(open_clip.get_model_config(open_clip_name))
    assert RELEASED_CLIP_ARCHITECTURES[clip_name] == expected


def test_clip_custom_architecture_runs_with_a_warning_and_is_recorded(files, caplog):
    with caplog.at_level(logging.WARNING, logger="avatar.guidance.clip_backend"):
        guidance = build_guidance(_config("clip", files["clip"]))
    assert any("no OpenAI release has" in r.getMessage() for r in caplog.records)
    assert guidance.loaded_weights["architecture"].startswith("custom CLIP (ViT patch 32, width 64")


# -- QuickGELU for OpenCLIP ----------------------------------------------------------------------
def _activations(model: torch.nn.Module) -> set[type]:
    return {type(m) for m in model.modules() if isinstance(m, (open_clip.model.QuickGELU, torch.nn.GELU))}


def test_openai_format_weights_get_quick_gelu_in_open_clip(files):
    guidance = build_guidance(_config("open_clip", files["openai_format"]))
    assert _activations(guidance.model) == {open_clip.model.QuickGELU}
    record = guidance.loaded_weights
    assert record["quick_gelu"] is True and "TorchScript" in record["quick_gelu_source"]
    assert record["format"] == "torchscript"
    # The weights are the archive's, and the embeddings are what OpenAI's CLIP computes.
    expected = _tiny_clip().state_dict()
    loaded = guidance.model.state_dict()
    assert all(torch.equal(expected[k], loaded[k]) for k in expected)
    tokens = clip.tokenize(["a person"])
    with torch.no_grad():
        torch.testing.assert_close(guidance.model.encode_text(tokens), _tiny_clip().encode_text(tokens))


def test_open_clip_file_without_evidence_runs_gelu_and_says_so(files):
    guidance = build_guidance(_config("open_clip", files["open_clip"]))
    assert _activations(guidance.model) == {torch.nn.GELU}
    assert guidance.loaded_weights["quick_gelu"] is False
    assert "guidance.quick_gelu=true" in guidance.loaded_weights["quick_gelu_source"]


def test_open_clip_quick_gelu_setting_and_quickgelu_model_names(files):
    forced = build_guidance(_config("open_clip", files["open_clip"], quick_gelu=True))
    assert _activations(forced.model) == {open_clip.model.QuickGELU}
    assert forced.loaded_weights["quick_gelu_source"] == "guidance.quick_gelu"
    by_name = build_guidance(_config("open_clip", files["open_clip"], model=TINY_QUICKGELU))
    assert _activations(by_name.model) == {open_clip.model.QuickGELU}
    with pytest.raises(GuidanceFileError, match=f"Set `guidance.model={TINY}`"):
        build_guidance(_config("open_clip", files["open_clip"], model=TINY_QUICKGELU, quick_gelu=False))
    with pytest.raises(GuidanceFileError, match="guidance.quick_gelu=false.*contradicts"):
        build_guidance(_config("open_clip", files["openai_format"], quick_gelu=False))


def test_tag_downloads_are_recognised_by_their_path():
    hub = Path("/cache/models--timm--vit_base_patch32_clip_224.laion400m_e31/snapshots/abc/open_clip_pytorch_model.bin")
    tag, tag_cfg = _recognised_tag("ViT-B-32", hub, "0" * 64)
    assert tag == "laion400m_e31" and tag_cfg["quick_gelu"] is True
    tag, tag_cfg = _recognised_tag("ViT-B-32", Path("/w/vit_b_32-quickgelu-laion400m_e32-46683a32.pt"), "0" * 64)
    assert tag == "laion400m_e32" and tag_cfg["quick_gelu"] is True
    laion2b = Path("/cache/models--laion--CLIP-ViT-B-32-laion2B-s34B-b79K/snapshots/abc/open_clip_model.safetensors")
    assert _recognised_tag("ViT-B-32", laion2b, "0" * 64)[0] == "laion2b_s34b_b79k"
    # OpenAI's file name alone is not enough: its URL carries the SHA-256 to match.
    assert _recognised_tag("ViT-B-32", Path("/w/ViT-B-32.pt"), "0" * 64) is None
    assert _recognised_tag("ViT-B-32", Path("/w/my-weights.pt"), "0" * 64) is None


# -- what really ran: one INFO line and `loaded_weights` -------------------------------------------
@pytest.mark.parametrize("backend", ["mini", "clip", "open_clip"])
def test_loaded_weights_are_logged_and_recorded(files, caplog, backend):
    path = files[backend]
    with caplog.at_level(logging.INFO, logger="avatar.guidance.base"):
        guidance = build_guidance(_config(backend, path))
    lines = [r.getMessage() for r in caplog.records if r.name == "avatar.guidance.base" and r.levelno == logging.INFO]
    assert len(lines) == 1, lines
    record = guidance.loaded_weights
    assert record["file"] == str(path) and record["sha256_12"] == short_hash(path)
    assert str(path) in lines[0] and short_hash(path) in lines[0] and record["architecture"] in lines[0]
    if backend == "open_clip":
        assert record["architecture"] == TINY and "quick_gelu=False" in lines[0]
    if backend == "mini":
        assert record["architecture"].startswith("mini (embed 32")
