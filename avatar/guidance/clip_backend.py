"""OpenAI CLIP, the paper's guidance model, through the ``clip`` package (clip-anytorch).

Weights come from a local file (``checkpoint``: the official ``.pt`` JIT archive or a saved
state dict) or are fetched by model name into ``download_root`` on machines with internet.
Nothing ever falls back to random weights: a missing file raises GuidanceWeightsError.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from avatar.guidance.base import (
    GUIDANCE,
    Guidance,
    GuidanceWeightsError,
    config_from,
    setting,
    url_reachable,
)

# CLIP's normalisation constants (clip.clip._transform); hard-coded there too.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_DEFAULT_ROOT = "~/.cache/clip"  # where clip.load puts downloads when download_root is None


@dataclass
class ClipGuidanceConfig:
    name: str = "clip"
    model: str = "ViT-B/32"  # a name from clip.available_models()
    checkpoint: Optional[str] = None  # local weights file; when set, `model` is not used
    download_root: Optional[str] = None  # folder of named downloads (None: ~/.cache/clip)
    device: str = "cpu"
    allow_download: bool = True  # False: never touch the network, use download_root only
    network_timeout_s: float = 5.0  # how long to wait for the download host before failing


class ClipGuidance(Guidance):
    """A frozen ``clip.model.CLIP``; input size from the model (224 for ViT-B/32)."""

    def __init__(self, model: torch.nn.Module) -> None:
        resolution = model.visual.input_resolution
        super().__init__(
            embed_dim=model.text_projection.shape[1],
            input_size=(resolution, resolution),
            mean=CLIP_MEAN,
            std=CLIP_STD,
        )
        self.model = model
        self.to(model.text_projection.device)
        self.freeze()

    def _embed_tokens(self, texts: list[str]) -> torch.Tensor:
        import clip

        # truncate=False: clip raises on prompts over 77 tokens rather than cutting them.
        return self.model.encode_text(clip.tokenize(texts).to(self.device))

    def _embed_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels)  # casts to the model dtype (fp16 on GPU)


@GUIDANCE.register("clip")
def build_clip_guidance(cfg: Any) -> ClipGuidance:
    cfg = config_from(ClipGuidanceConfig, cfg)
    with _unactionable_warnings_silenced():
        # Imported here: `import clip` costs ~1 s (torchvision, pkg_resources) beyond torch.
        import clip

    if cfg.checkpoint:
        path = Path(cfg.checkpoint).expanduser()
        if not path.is_file():
            raise GuidanceWeightsError(
                f"CLIP checkpoint {str(path)!r} (config key `{setting('checkpoint')}`) does not exist.\n"
                + _how_to_get(cfg.model)
            )
        source = str(path)
    else:
        _check_named_weights(cfg)
        source = cfg.model
    try:
        # jit=False: rebuild every file (JIT archives included) as a Python clip.model.CLIP,
        # an ordinary module with parameters to freeze, not a graph traced for 224 px on CUDA.
        with _unactionable_warnings_silenced():
            model, _ = clip.load(source, device=cfg.device, jit=False, download_root=cfg.download_root)
    except Exception as e:
        raise GuidanceWeightsError(
            f"Could not load CLIP weights from {source!r}: {type(e).__name__}: {e}\n"
            "It must be an OpenAI CLIP JIT archive or a state dict that clip.model.build_model "
            "accepts.\n" + _how_to_get(cfg.model)
        ) from e
    return ClipGuidance(model)


@contextlib.contextmanager
def _unactionable_warnings_silenced() -> Iterator[None]:
    """clip imports the deprecated pkg_resources, and clip.load tries every file as a JIT
    archive first (torch.jit.load is deprecated): warnings users can do nothing about."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
        warnings.filterwarnings("ignore", message="`torch.jit.load` is deprecated", category=FutureWarning)
        yield


def _check_named_weights(cfg: ClipGuidanceConfig) -> None:
    """Fail fast unless clip.load(cfg.model) can find or download its weights.

    clip.load downloads with urllib and no timeout, so offline it can hang: check the file
    (and its SHA256, which clip.load would otherwise answer with a re-download) and probe the
    host here first.
    """
    import clip

    if cfg.model not in clip.available_models():
        raise ValueError(
            f"Unknown CLIP model {cfg.model!r} (config key `{setting('model')}`); choose one of "
            f"{clip.available_models()} or set `{setting('checkpoint')}` to a local weights file"
        )
    url = clip.clip._MODELS[cfg.model]  # not public API, but the only source of the URL
    root = Path(os.path.expanduser(cfg.download_root or CLIP_DEFAULT_ROOT))
    target = root / os.path.basename(url)
    if target.is_file():
        expected_sha256 = url.split("/")[-2]  # clip's URLs carry the file's SHA256
        digest = hashlib.sha256()
        with target.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 24), b""):
                digest.update(chunk)
        if digest.hexdigest() == expected_sha256:
            return
        problem = f"{str(target)!r} exists but its SHA256 does not match (an interrupted download?)"
    else:
        problem = f"{str(target)!r} does not exist"
    if not cfg.allow_download:
        reason = f"downloading is off (`{setting('allow_download')}=false`)"
    elif not url_reachable(url, cfg.network_timeout_s):
        host = url.split("/")[2]
        reason = f"the download host {host} is unreachable (no network?)"
    else:
        return  # clip.load will download it
    raise GuidanceWeightsError(
        f"CLIP weights for {cfg.model!r} are missing: {problem}, and {reason}.\n"
        + _how_to_get(cfg.model)
    )


def _how_to_get(model: str) -> str:
    filename = model.replace("/", "-").replace("@", "-") + ".pt"  # clip's naming, e.g. ViT-B-32.pt
    return (
        f"Set `{setting('checkpoint')}=/path/to/{filename}` (or `{setting('download_root')}=<folder "
        f"holding {filename}>`). The weights are the official OpenAI CLIP release: on a machine "
        f"with internet run\n"
        f"    python -c \"import clip; clip.load('{model}')\"\n"
        f"then copy {CLIP_DEFAULT_ROOT}/{filename} to this machine."
    )
