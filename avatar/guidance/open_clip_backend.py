"""OpenCLIP guidance through ``open_clip`` (open-clip-torch): LAION/DataComp-trained CLIPs.

``pretrained`` is either a tag from ``open_clip.list_pretrained_tags_by_model(model)``
(fetched from the Hugging Face hub on machines with internet, or found in the local hub
cache offline) or the path of a local checkpoint. Nothing ever falls back to random weights.

Every weights file is checked before open_clip reads it: a truncated, empty, random or foreign
file, or weights of another architecture than ``model`` (read from the tensor shapes, as CLIP's
``build_model`` does), raise GuidanceFileError naming the file, the config key and the fix.

QuickGELU (``quick_gelu``): OpenAI's CLIPs and some OpenCLIP trainings (laion400m, MetaCLIP)
used it; a model run with the other activation computes other embeddings without any error. open_clip
applies it only for ``-quickgelu`` model names, and for tags only warns. Here ``quick_gelu=null``
(auto) takes it from what is known of the weights: a tag's record (also for a file recognised as a
tag's download), OpenAI's TorchScript release format (always QuickGELU), else the model name.
``true``/``false`` set it for a file nothing is known of, and are refused where they contradict
what is known. The guidance's ``loaded_weights`` records the value that ran and why.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from avatar.guidance.base import (
    GUIDANCE,
    Guidance,
    GuidanceFileError,
    GuidanceWeightsError,
    config_from,
    setting,
    url_reachable,
)
from avatar.guidance.clip_backend import (
    ClipArchitecture,
    as_guidance_file_error,
    clip_architecture,
    read_clip_weights,
)
from avatar.utils.files import (
    InputFileError,
    check_file,
    describe,
    describe_training_checkpoint,
    is_torchscript_archive,
    load_safetensors_file,
    load_torch_weights,
    short_hash,
)

log = logging.getLogger(__name__)


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
    # QuickGELU activation: null = auto (from the tag, OpenAI's file format, or a -quickgelu
    # model name); true/false for a weights file nothing is known of. See the module docstring.
    quick_gelu: Optional[bool] = None


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
    tag = cfg.pretrained if tag_cfg else None
    model_cfg = open_clip.get_model_config(cfg.model)
    file_format, openai_state_dict = _check_weights_file(cfg, checkpoint, model_cfg, tag)
    sha256 = short_hash(checkpoint, 64)
    if tag_cfg is None:
        tag, tag_cfg = _recognised_tag(cfg.model, Path(checkpoint), sha256) or (None, None)
    quick_gelu, quick_gelu_source = _decide_quick_gelu(cfg, model_cfg, tag, tag_cfg, file_format)

    if openai_state_dict is not None:
        model = _build_openai_format(cfg, model_cfg, openai_state_dict, checkpoint)
    else:
        overrides: dict[str, Any] = {}
        if tag_cfg:
            # What open_clip does for a tag but not for a file path: the tag's normalisation.
            overrides["force_preprocess_cfg"] = {"mean": tag_cfg["mean"], "std": tag_cfg["std"]}
        try:
            model = open_clip.create_model(
                cfg.model,
                pretrained=checkpoint,
                device=cfg.device,
                cache_dir=cfg.cache_dir,
                require_pretrained=True,
                force_quick_gelu=quick_gelu,
                **overrides,
            )
        except Exception as e:
            raise GuidanceFileError(
                f"`{setting('pretrained')}={checkpoint}` does not load into `{setting('model')}={cfg.model}` "
                f"({type(e).__name__}: {_brief(e)}): the file holds another model's weights, or is damaged. "
                f"Set `{setting('model')}` to the file's model.\n" + _how_to_get(cfg)
            ) from e
    ran_quick_gelu = any(isinstance(m, open_clip.model.QuickGELU) for m in model.modules())
    if ran_quick_gelu != quick_gelu:  # e.g. timm towers, which always use nn.GELU
        log.warning(
            "OpenCLIP model %s was to run with quick_gelu=%s (%s) but its built modules %s QuickGELU; "
            "the run records what is in the model.",
            cfg.model,
            quick_gelu,
            quick_gelu_source,
            "use" if ran_quick_gelu else "do not use",
        )
    tokenizer = open_clip.get_tokenizer(cfg.model, cache_dir=cfg.cache_dir)
    guidance = OpenClipGuidance(model, tokenizer, model_cfg["embed_dim"])
    extra: dict[str, Any] = {
        "quick_gelu": ran_quick_gelu,
        "quick_gelu_source": quick_gelu_source,
        "format": file_format,
    }
    if tag:
        extra["tag"] = tag
    guidance.record_weights(checkpoint, cfg.model, sha256_12=sha256[:12], **extra)
    return guidance


def _check_weights_file(
    cfg: OpenClipGuidanceConfig, path: str, model_cfg: dict, tag: Optional[str]
) -> tuple[str, Optional[dict]]:
    """Check the weights file before open_clip reads it; return its format and, for OpenAI's
    TorchScript release (which open_clip's safe loading cannot read), its state dict.

    For a model in CLIP's layout the file must be a CLIP state dict of ``cfg.model``'s
    architecture; for other layouts (timm/HF towers) it must at least be a dict of tensors, and
    open_clip's strict loading checks the rest."""
    key = setting("pretrained")
    what = f"OpenCLIP weights for `{setting('model')}={cfg.model}`" + (f" (tag {tag!r})" if tag else "")
    hint = f"Weights of another model need `{setting('model')}` set to that model."
    file = Path(path)
    with as_guidance_file_error():
        if file.suffix in (".npz", ".npy"):  # big_vision (SigLIP) weights: open_clip's own reader
            check_file(file, key, what, hint)
            return "big_vision", None
        expected = ClipArchitecture.from_open_clip_config(model_cfg)
        if expected is None:
            if is_torchscript_archive(file):
                raise InputFileError(
                    f"{describe(path, key)} is OpenAI's TorchScript CLIP format, which fits only models in "
                    f"CLIP's layout (e.g. ViT-B-32), not `{setting('model')}={cfg.model}`."
                )
            _check_tensor_dict(file, key, what, hint)
            return ("safetensors" if file.suffix == ".safetensors" else "state_dict"), None
        state_dict, file_format = read_clip_weights(file, key, what, hint)
    found = clip_architecture(state_dict)
    if found != expected:
        raise GuidanceFileError(_architecture_mismatch(cfg, path, found, expected))
    if file_format == "torchscript":
        _check_heads(cfg, path, model_cfg, found)
        return file_format, state_dict
    return file_format, None


def _check_tensor_dict(file: Path, key: str, what: str, hint: str) -> None:
    """That ``file`` reads as a non-empty dict of tensors (or wraps one, as training
    checkpoints do), for model layouts whose tensor names open_clip checks itself."""
    from avatar.guidance.clip_backend import _unwrap_state_dict

    if file.suffix == ".safetensors":
        load_safetensors_file(file, key, what, hint)
        return
    payload = load_torch_weights(file, key, what, hint)
    state_dict = _unwrap_state_dict(payload)
    if isinstance(state_dict, dict) and state_dict and all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        if not (isinstance(payload, dict) and isinstance(payload.get("config"), dict)):  # not a mini checkpoint
            return
    training = describe_training_checkpoint(payload)
    advice = ""
    if isinstance(payload, dict) and isinstance(payload.get("config"), dict) and "state_dict" in payload:
        problem, advice = "a mini guidance checkpoint", "It goes to `guidance=mini guidance.checkpoint=...`. "
    elif training:
        problem = f"{training} without a usable state dict"
    else:
        problem = f"a {type(payload).__name__}, not a dict of tensors"
    raise InputFileError(f"{describe(file, key)} is {problem}, not {what}. {advice}{hint}")


def _architecture_mismatch(
    cfg: OpenClipGuidanceConfig, path: str, found: ClipArchitecture, expected: ClipArchitecture
) -> str:
    import open_clip

    same = []
    for name in open_clip.list_models():
        model_cfg = open_clip.get_model_config(name)
        if model_cfg and ClipArchitecture.from_open_clip_config(model_cfg) == found:
            same.append(name)
    text = (
        f"`{setting('pretrained')}={path}` holds weights of another architecture than "
        f"`{setting('model')}={cfg.model}` (file vs config: {'; '.join(found.differences(expected))}). "
    )
    if same:
        plain = [n for n in same if not n.endswith("-quickgelu")] or same
        return text + (
            f"Set `{setting('model')}={plain[0]}` (OpenCLIP models of the file's architecture: "
            f"{', '.join(same)}) so the run records the model that runs, or give weights of {cfg.model}."
        )
    return text + (
        f"No built-in OpenCLIP model has the file's architecture ({found.describe()}): describe it in a "
        f"model JSON given as `{setting('model_config_file')}`, or give weights of {cfg.model}."
    )


def _check_heads(cfg: OpenClipGuidanceConfig, path: str, model_cfg: dict, found: ClipArchitecture) -> None:
    """OpenAI-format files build with width / 64 attention heads (open_clip's
    build_model_from_openai_state_dict, as clip's build_model): refuse a config saying otherwise."""
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    vision, text = CLIPVisionCfg(**model_cfg["vision_cfg"]), CLIPTextCfg(**model_cfg["text_cfg"])
    config_heads = (vision.width // vision.head_width, text.heads)
    file_heads = (found.vision_width // 64, found.text_width // 64)
    if (
        found.vision == "ViT"
        and config_heads != file_heads
        or found.vision != "ViT"
        and config_heads[1] != file_heads[1]
    ):
        raise GuidanceFileError(
            f"`{setting('pretrained')}={path}` is in OpenAI's format, whose models have width/64 attention "
            f"heads {file_heads} (vision, text), but `{setting('model')}={cfg.model}` has {config_heads}."
        )


def _build_openai_format(cfg: OpenClipGuidanceConfig, model_cfg: dict, state_dict: dict, path: str) -> torch.nn.Module:
    """open_clip's loader for OpenAI's release files (``open_clip.load_openai_model``'s steps,
    on the state dict already read): always QuickGELU, float32, OpenAI's normalisation."""
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
    from open_clip.model import build_model_from_openai_state_dict

    try:
        model = build_model_from_openai_state_dict(state_dict, quick_gelu=True, cast_dtype=None)
    except Exception as e:
        raise GuidanceFileError(
            f"`{setting('pretrained')}={path}` has CLIP's tensor names but they do not build a CLIP model "
            f"({type(e).__name__}: {_brief(e)}): the file is damaged or was edited."
        ) from e
    model = model.to(cfg.device).float()
    model.visual.image_mean = OPENAI_DATASET_MEAN
    model.visual.image_std = OPENAI_DATASET_STD
    return model


def _recognised_tag(model: str, path: Path, sha256: str) -> Optional[tuple[str, dict]]:
    """The tag of ``model`` whose download ``path`` is, recognised by where the Hugging Face hub
    cache puts it (``models--org--repo``) or by its download URL's file name (checked against
    the SHA-256 in the URL where OpenAI's URLs carry one); None when not recognised."""
    import open_clip

    for tag in open_clip.list_pretrained_tags_by_model(model):
        tag_cfg = open_clip.get_pretrained_cfg(model, tag)
        hub = tag_cfg.get("hf_hub")
        if hub and "models--" + os.path.split(hub)[0].replace("/", "--") in path.parts:
            return tag, tag_cfg
        url = tag_cfg.get("url")
        if url and os.path.basename(url) == path.name:
            if "openaipublic" in url and url.split("/")[-2] != sha256:
                continue
            return tag, tag_cfg
    return None


def _decide_quick_gelu(
    cfg: OpenClipGuidanceConfig, model_cfg: dict, tag: Optional[str], tag_cfg: Optional[dict], file_format: str
) -> tuple[bool, str]:
    """(quick_gelu, why): see the module docstring. Refuses a setting that contradicts what is
    known of the weights."""
    by_name = bool(model_cfg.get("quick_gelu", False))
    if tag_cfg is not None:
        known: Optional[bool] = bool(tag_cfg.get("quick_gelu", False))
        why = f"tag {tag!r} of {cfg.model}"
    elif file_format == "torchscript":
        known, why = True, "OpenAI's TorchScript release format"
    else:
        known, why = None, ""
    key = setting("quick_gelu")
    if cfg.quick_gelu is not None and known is not None and bool(cfg.quick_gelu) != known:
        raise GuidanceFileError(
            f"`{key}={str(cfg.quick_gelu).lower()}` contradicts the weights `{setting('pretrained')}="
            f"{cfg.pretrained}`: they are {why}, trained {'with' if known else 'without'} QuickGELU. "
            f"Remove `{key}` (null: automatic)."
        )
    if cfg.quick_gelu is not None:
        value, source = bool(cfg.quick_gelu), key
    elif known is not None:
        value, source = known, why
    elif by_name:
        value, source = True, f"the model name {cfg.model}"
    else:
        value = False
        source = (f"assumed: nothing is known of the file; set `{key}=true` for weights trained with "
                  "QuickGELU (OpenAI, laion400m, MetaCLIP)")  # fmt: skip
    if by_name and not value:
        base = cfg.model.removesuffix("-quickgelu")
        raise GuidanceFileError(
            f"`{setting('model')}={cfg.model}` runs QuickGELU, but the weights were trained without it "
            f"({source}). Set `{setting('model')}={base}`."
        )
    return value, source


def _brief(err: BaseException) -> str:
    """The first lines of an error, short, without torch's advice to load unsafely."""
    text = " ".join(line.strip() for line in str(err).strip().splitlines()[:4])[:400]
    if "weights_only" in text:
        return "the file holds pickled objects that a tensors-only load refuses"
    return text or repr(err)


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
