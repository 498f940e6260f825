"""OpenCLIP guidance through ``open_clip`` (open-clip-torch): LAION/DataComp-trained CLIPs.

``pretrained`` is either a tag from ``open_clip.list_pretrained_tags_by_model(model)``
(fetched from the Hugging Face hub on machines with internet, or found in the local hub
cache offline) or the path of a local checkpoint. Nothing ever falls back to random weights.
"""

from __future__ import annotations

import os
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


@dataclass
class OpenClipGuidanceConfig:
    name: str = "open_clip"
    model: str = "ViT-B-32"  # a name from open_clip.list_models() (or model_config_file's)
    pretrained: Optional[str] = "laion2b_s34b_b79k"  # a tag for `model`, or a local checkpoint
    model_config_file: Optional[str] = None  # custom model JSON; its file stem is the model name
    cache_dir: Optional[str] = None  # download cache (None: the Hugging Face hub cache)
    device: str = "cpu"
    allow_download: bool = True  # False: never touch the network, use cached files only
    network_timeout_s: float = 5.0  # how long to wait for the hub before failing


class OpenClipGuidance(Guidance):
    """A frozen OpenCLIP model; input size, mean and std from its preprocessing config."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any, embed_dim: int) -> None:
        import open_clip

        pp = open_clip.get_model_preprocess_cfg(model)
        size = pp["size"]
        super().__init__(
            embed_dim=embed_dim,
            input_size=(size, size) if isinstance(size, int) else tuple(size),
            mean=pp["mean"],
            std=pp["std"],
        )
        self.model = model
        self.tokenizer = tokenizer
        self.to(next(model.parameters()).device)
        self.freeze()

    def _embed_tokens(self, texts: list[str]) -> torch.Tensor:
        return self.model.encode_text(self.tokenizer(texts).to(self.device))

    def _embed_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels)


@GUIDANCE.register("open_clip")
def build_open_clip_guidance(cfg: Any) -> OpenClipGuidance:
    cfg = config_from(OpenClipGuidanceConfig, cfg)
    # Imported here: `import open_clip` costs ~2 s (timm, transformers hooks) beyond torch.
    import open_clip

    if cfg.model_config_file:
        config_file = Path(cfg.model_config_file).expanduser()
        if not config_file.is_file():
            raise FileNotFoundError(
                f"OpenCLIP model config {str(config_file)!r} (config key "
                f"`{setting('model_config_file')}`) does not exist"
            )
        open_clip.add_model_config(config_file)
    if cfg.model not in open_clip.list_models():
        raise ValueError(
            f"Unknown OpenCLIP model {cfg.model!r} (config key `{setting('model')}`). A custom "
            f"model JSON given as `{setting('model_config_file')}` registers under its file stem. "
            f"Built-in models: {', '.join(open_clip.list_models())}"
        )
    if not cfg.pretrained:
        raise GuidanceWeightsError(
            f"`{setting('pretrained')}` is empty: OpenCLIP guidance needs trained weights and "
            "never runs with random ones.\n" + _how_to_get(cfg)
        )

    checkpoint, tag_cfg = _resolve_pretrained(cfg)
    overrides: dict[str, Any] = {}
    if tag_cfg:
        # What open_clip does for a tag but not for a file path: the tag's normalisation,
        # and QuickGELU for weights trained with it (open_clip itself only warns).
        overrides = dict(
            force_preprocess_cfg={"mean": tag_cfg["mean"], "std": tag_cfg["std"]},
            force_quick_gelu=tag_cfg.get("quick_gelu", False),
        )
    try:
        model = open_clip.create_model(
            cfg.model,
            pretrained=checkpoint,
            device=cfg.device,
            cache_dir=cfg.cache_dir,
            require_pretrained=True,
            **overrides,
        )
    except Exception as e:
        raise GuidanceWeightsError(
            f"Could not load OpenCLIP weights {checkpoint!r} into {cfg.model!r}: "
            f"{type(e).__name__}: {e}\n" + _how_to_get(cfg)
        ) from e
    tokenizer = open_clip.get_tokenizer(cfg.model, cache_dir=cfg.cache_dir)
    embed_dim = open_clip.get_model_config(cfg.model)["embed_dim"]
    return OpenClipGuidance(model, tokenizer, embed_dim)


def _resolve_pretrained(cfg: OpenClipGuidanceConfig) -> tuple[str, Optional[dict]]:
    """The local weights file for ``cfg.pretrained``, and the tag's config when it is a tag.

    open_clip's own tag download goes through huggingface_hub, which offline retries for about
    50 s per file before failing, and even with the file cached asks the hub first. So: look in
    the cache, probe the hub, and only then let open_clip download.
    """
    import open_clip

    tag_cfg = open_clip.get_pretrained_cfg(cfg.model, cfg.pretrained)
    if not tag_cfg:
        path = Path(cfg.pretrained).expanduser()
        if path.is_file():
            return str(path), None
        raise GuidanceWeightsError(
            f"`{setting('pretrained')}={cfg.pretrained}` is neither an existing file nor a known "
            f"tag for {cfg.model!r} (tags: {open_clip.list_pretrained_tags_by_model(cfg.model) or 'none'}).\n"
            + _how_to_get(cfg)
        )

    cached = _cached_file(tag_cfg, cfg.cache_dir)
    if cached:
        return cached, tag_cfg
    source = _hub_repo_url(tag_cfg) or tag_cfg["url"]
    if not cfg.allow_download:
        reason = f"downloading is off (`{setting('allow_download')}=false`)"
    elif not url_reachable(source, cfg.network_timeout_s):
        reason = f"{source} is unreachable (no network?)"
    else:
        try:
            return open_clip.download_pretrained(tag_cfg, cache_dir=cfg.cache_dir), tag_cfg
        except Exception as e:
            raise GuidanceWeightsError(
                f"Downloading OpenCLIP weights {cfg.model}/{cfg.pretrained} from {source} failed: {e}\n"
                + _how_to_get(cfg)
            ) from e
    where = cfg.cache_dir or "the Hugging Face hub cache"
    raise GuidanceWeightsError(
        f"OpenCLIP weights for {cfg.model!r} tag {cfg.pretrained!r} are not in {where}, and "
        f"{reason}.\n" + _how_to_get(cfg)
    )


def _hub_repo_url(tag_cfg: dict) -> Optional[str]:
    """The hub repository of a tag (open_clip prefers the hub whenever a tag names one)."""
    if not tag_cfg.get("hf_hub"):
        return None
    from huggingface_hub.constants import ENDPOINT

    repo_id, _ = os.path.split(tag_cfg["hf_hub"])
    return f"{ENDPOINT}/{repo_id}"


def _cached_file(tag_cfg: dict, cache_dir: Optional[str]) -> Optional[str]:
    """Where open_clip would find a tag's weights already downloaded, or None."""
    hf_hub = tag_cfg.get("hf_hub")
    if not hf_hub:
        # URL downloads land in cache_dir (default ~/.cache/clip) under the URL's file name.
        root = Path(cache_dir or "~/.cache/clip").expanduser()
        target = root / os.path.basename(tag_cfg["url"])
        return str(target) if target.is_file() else None

    from huggingface_hub import try_to_load_from_cache
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    # open_clip's convention: 'org/repo/' (default file name) or 'org/repo/file'.
    repo_id, filename = os.path.split(hf_hub)
    filename = filename or HF_WEIGHTS_NAME
    # open_clip fetches a .safetensors twin first when the repository has one.
    stem, ext = os.path.splitext(filename)
    twin = HF_SAFE_WEIGHTS_NAME if filename == HF_WEIGHTS_NAME else stem + ".safetensors"
    for name in ([twin] if ext in (".bin", ".pth") else []) + [filename]:
        hit = try_to_load_from_cache(repo_id, name, cache_dir=cache_dir)
        if isinstance(hit, str):  # not None, not the "known missing" marker
            return hit
    return None


def _how_to_get(cfg: OpenClipGuidanceConfig) -> str:
    import open_clip

    tags = open_clip.list_pretrained_tags_by_model(cfg.model)
    text = (
        f"Set `{setting('pretrained')}=/path/to/weights` (a local OpenCLIP checkpoint: "
        f".safetensors, .bin or .pt state dict) or `{setting('cache_dir')}=<download cache "
        "holding the tag's weights>`."
    )
    if not tags:
        return text
    default = OpenClipGuidanceConfig.pretrained
    tag = next(t for t in (cfg.pretrained, default, tags[0]) if t in tags)
    return text + (
        f" The released weights are on the Hugging Face hub: on a machine with internet run\n"
        f"    python -c \"import open_clip; open_clip.create_model('{cfg.model}', "
        f"pretrained='{tag}', cache_dir='open_clip_weights')\"\n"
        f"then copy the open_clip_weights folder to this machine and set "
        f"`{setting('cache_dir')}=/path/to/open_clip_weights`."
    )
