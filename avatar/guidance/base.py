"""The guidance protocol: a frozen image-text model that scores renders against a prompt.

AvatarCLIP steers every stage with CLIP: renders are embedded, prompts are embedded, and the
loss is ``1 - cos(image, text)``. Backends (OpenAI CLIP, OpenCLIP, the project's own model)
implement two hooks; this module does the rest: input checks, the differentiable preprocessing,
normalisation, the per-string text cache and the loss.
"""

from __future__ import annotations

import abc
import dataclasses
import logging
import os
import threading
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import torch
import torch.nn.functional as F

from avatar.registry import Registry
from avatar.utils.files import InputFileError, short_hash

log = logging.getLogger(__name__)

GUIDANCE: Registry["Guidance"] = Registry("guidance backend", "guidance")

C = TypeVar("C")


class GuidanceWeightsError(FileNotFoundError, RuntimeError):
    """The weights a guidance backend needs are missing, unreachable or unreadable.

    Both a FileNotFoundError and a RuntimeError, so callers catching either see it. The message
    names the file expected, the config key to set and where to get the weights.
    """


class GuidanceFileError(GuidanceWeightsError, InputFileError):
    """A weights file exists but is not what the config says: truncated, empty, random bytes, a
    file of another kind, or weights of another architecture than the configured model.

    Both a :class:`GuidanceWeightsError` (what callers of a backend catch) and the project's
    :class:`~avatar.utils.files.InputFileError`. The message names the file, the config key
    and the likely cause, and never advises unsafe loading.
    """


class Guidance(torch.nn.Module, abc.ABC):
    """A frozen image-text embedding model.

    Subclasses implement :meth:`_embed_tokens` (texts -> raw embeddings) and
    :meth:`_embed_pixels` (preprocessed pixels -> raw embeddings). Both run the backend's own
    network; this class normalises their output.

    Preprocessing (:meth:`preprocess`): the whole image is resized to the backend's input size
    with antialiased bilinear interpolation (differentiable), then normalised with the backend's
    mean/std. There is NO centre crop: every pixel of a render receives gradient, and a
    non-square image is stretched to the square input, so render square images.
    """

    def __init__(
        self,
        embed_dim: int,
        input_size: tuple[int, int],
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        super().__init__()
        self.embed_dim = int(embed_dim)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        # Non-persistent: they are constants of the backend, not state to checkpoint.
        self.register_buffer("pixel_mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self._text_cache: dict[str, torch.Tensor] = {}
        # What really ran: set by the backend's builder (:meth:`record_weights`) once loaded.
        self.loaded_weights: dict[str, Any] | None = None

    def record_weights(
        self, file: str | os.PathLike, architecture: str, sha256_12: str | None = None, **extra: Any
    ) -> dict[str, Any]:
        """Note (``self.loaded_weights``) and log, in one INFO line, the weights that really
        loaded: the file, the first 12 hex digits of its SHA-256, the architecture that runs and
        backend-specific facts (``extra``, e.g. ``quick_gelu``). A stage or the runner copies
        ``loaded_weights`` into the run record."""
        info: dict[str, Any] = {
            "backend": type(self).__name__,
            "file": str(file),
            "sha256_12": sha256_12 or short_hash(file),
            "architecture": architecture,
            **extra,
        }
        self.loaded_weights = info
        details = "".join(f", {k}={v}" for k, v in extra.items())
        log.info(
            "Guidance weights loaded: %s (sha256 %s), architecture %s%s",
            info["file"],
            info["sha256_12"],
            architecture,
            details,
        )
        return info

    # -- backend hooks --------------------------------------------------------------------
    @abc.abstractmethod
    def _embed_tokens(self, texts: list[str]) -> torch.Tensor:
        """Raw (unnormalised) text embeddings, (N, D)."""

    @abc.abstractmethod
    def _embed_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """Raw (unnormalised) image embeddings, (B, D), from :meth:`preprocess` output."""

    # -- frozen ---------------------------------------------------------------------------
    def freeze(self) -> "Guidance":
        """Stop gradients into the weights and fix eval mode; backends call this once built."""
        for p in self.parameters():
            p.requires_grad_(False)
        return self.train(False)

    def train(self, mode: bool = True) -> "Guidance":
        # Guidance is never trained: a stage calling .train() on its modules must not switch
        # the backend into train mode (e.g. OpenCLIP's patch dropout is train-only).
        return super().train(False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    # -- encoders -------------------------------------------------------------------------
    def read(self, text: str) -> str:
        """The text this backend's text tower reads for ``text``: itself here; ``mini`` with
        ``text_reading=snapped`` rewrites it into its training grammar. Other text matching of
        a stage (the clip descriptions) reads the prompt the same way."""
        return text

    @torch.no_grad()
    def encode_text(self, texts: str | Sequence[str]) -> torch.Tensor:
        """L2-normalised text embeddings (N, D), float32, on the backend's device.

        Each distinct string is encoded once and cached: stages re-use a handful of prompts
        for thousands of steps. Strings are encoded one at a time: batched with others (padded
        to the longest) a string's embedding differs in the last bits with the batch, so an
        embedding would depend on which prompts happened to be new at the same step, and a
        resumed run would drift from an uninterrupted one.
        """
        texts = _check_prompts(texts)
        missing = list(dict.fromkeys(t for t in texts if t not in self._text_cache))
        for text in missing:
            self._text_cache[text] = F.normalize(self._embed_tokens([text]).float(), dim=-1)[0]
        # Per-entry .to(): the module may have moved device since an entry was cached.
        return torch.stack([self._text_cache[t].to(self.device) for t in texts])

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> normalised pixels at the backend's input size."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W) in [0, 1]; got shape {tuple(images.shape)}")
        images = images.to(device=self.device, dtype=torch.float32)
        if tuple(images.shape[-2:]) != self.input_size:
            images = F.interpolate(images, size=self.input_size, mode="bilinear", align_corners=False, antialias=True)
        return (images - self.pixel_mean) / self.pixel_std

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised image embeddings (B, D), float32, differentiable w.r.t. ``images``."""
        return F.normalize(self._embed_pixels(self.preprocess(images)).float(), dim=-1)

    def guidance_loss(self, images: torch.Tensor, texts: str | Sequence[str]) -> torch.Tensor:
        """AvatarCLIP's loss ``1 - cos(image, text)`` per image, shape (B,).

        ``texts`` holds one prompt (used for every image) or one prompt per image.
        """
        text_emb = self.encode_text(texts)
        if text_emb.shape[0] not in (1, images.shape[0]):
            raise ValueError(
                f"guidance_loss got {images.shape[0]} images and {text_emb.shape[0]} prompts; "
                "give one prompt, or one per image"
            )
        return 1.0 - similarity(self.encode_image(images), text_emb)


def similarity(image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine similarity (B,) of (B, D) and (B, D) or (1, D) embeddings."""
    return F.cosine_similarity(image_emb, text_emb, dim=-1)


def _check_prompts(texts: str | Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    if not texts:
        raise ValueError("No text prompt given: the guidance needs at least one non-empty prompt")
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"Text prompt {i} is empty ({text!r}); every prompt must be a non-empty string")
    return texts


# -- building ---------------------------------------------------------------------------------
def config_from(cls: type[C], cfg: Any) -> C:
    """``cfg`` as the dataclass ``cls``: an instance passes through, a mapping (dict or
    OmegaConf DictConfig) is unpacked, so unknown keys fail loudly as a TypeError."""
    if isinstance(cfg, cls):
        return cfg
    if not isinstance(cfg, Mapping):
        raise TypeError(f"Expected a {cls.__name__} or a mapping, got {type(cfg).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise TypeError(f"Unknown {cls.__name__} keys {unknown}; known keys: {sorted(known)}")
    return cls(**{k: cfg[k] for k in cfg})


def build_guidance(cfg: Any) -> Guidance:
    """Build the backend named by ``cfg.name`` (``cfg`` a config dataclass or a mapping)."""
    name = cfg["name"] if isinstance(cfg, Mapping) else cfg.name
    return GUIDANCE.build(name, cfg)


def setting(key: str) -> str:
    """The user-facing config key for a guidance setting, e.g. ``guidance.checkpoint``."""
    return f"{GUIDANCE.config_key}.{key}"


def url_reachable(url: str, timeout_s: float) -> bool:
    """Whether an HTTP HEAD to ``url`` gets any answer within ``timeout_s`` seconds.

    The downloaders in clip/open_clip/huggingface_hub either have no timeout (urllib without
    one) or retry for ~50 s offline, so backends ask this first and fail fast. The request runs
    in a daemon thread because DNS resolution ignores socket timeouts. Proxies from the
    environment are honoured (urllib's defaults).
    """
    answer: list[bool] = []

    def probe() -> None:
        try:
            urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout_s).close()
            answer.append(True)
        except urllib.error.HTTPError:  # the server answered (e.g. 403/404): the host is up
            answer.append(True)
        except Exception:  # DNS failure, refused, timed out, TLS error: treat as offline
            answer.append(False)

    thread = threading.Thread(target=probe, name="guidance-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout_s)
    return bool(answer and answer[0])


def build_scorer(cfg: Any) -> Guidance | None:
    """The metrics model of a run config (``cfg.scorer``), or None when ``scorer.enabled=false``.
    It is a separately trained model, so a stage is never judged by the model that guided it."""
    if not cfg.scorer.enabled:
        return None
    return build_guidance(cfg.scorer.guidance)
