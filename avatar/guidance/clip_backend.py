"""OpenAI CLIP, the paper's guidance model, through the ``clip`` package (clip-anytorch).

Weights come from a local file (``checkpoint``: the official ``.pt`` JIT archive, a saved
state dict or a ``.safetensors`` file) or are fetched by model name into ``download_root`` on
machines with internet. Nothing ever falls back to random weights: a missing file raises
GuidanceWeightsError; a damaged or foreign file, or weights of another architecture than
``model``, raise GuidanceFileError naming the file, the config key and the likely cause.

The architecture of a file is read from its tensor shapes, as ``clip.model.build_model`` does
(:func:`clip_architecture`); the OpenCLIP backend uses the same helpers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import warnings
from collections.abc import Iterator, Mapping
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
from avatar.utils.files import (
    InputFileError,
    check_file,
    describe,
    describe_training_checkpoint,
    is_torchscript_archive,
    load_safetensors_file,
    load_torch_weights,
)

log = logging.getLogger(__name__)

# CLIP's normalisation constants (clip.clip._transform); hard-coded there too.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_DEFAULT_ROOT = "~/.cache/clip"  # where clip.load puts downloads when download_root is None


@dataclass
class ClipGuidanceConfig:
    name: str = "clip"
    model: str = "ViT-B/32"  # a name from clip.available_models()
    # Local weights file. Its architecture (read from its tensor shapes) must be `model`'s when it
    # is a released one; a custom architecture runs as the file says, with a warning.
    checkpoint: Optional[str] = None
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
        return _build_from_file(cfg)
    _check_named_weights(cfg)
    try:
        # jit=False: rebuild the official JIT archive as a Python clip.model.CLIP, an ordinary
        # module with parameters to freeze, not a graph traced for 224 px on CUDA.
        with _unactionable_warnings_silenced():
            model, _ = clip.load(cfg.model, device=cfg.device, jit=False, download_root=cfg.download_root)
    except Exception as e:
        raise GuidanceWeightsError(
            f"Could not load CLIP weights {cfg.model!r}: {type(e).__name__}: {e}\n" + _how_to_get(cfg.model)
        ) from e
    guidance = ClipGuidance(model)
    url = clip.clip._MODELS[cfg.model]
    root = Path(os.path.expanduser(cfg.download_root or CLIP_DEFAULT_ROOT))
    # clip.load checked the file against the SHA-256 its URL carries.
    guidance.record_weights(root / os.path.basename(url), cfg.model, sha256_12=url.split("/")[-2][:12])
    return guidance


def _build_from_file(cfg: ClipGuidanceConfig) -> ClipGuidance:
    """``clip.load(cfg.checkpoint, jit=False)``'s work, with the file checked first: read the
    state dict (a TorchScript archive's, or a saved one), check it is CLIP's and of the
    configured architecture, then ``clip.model.build_model`` as clip.load does."""
    import clip

    path = Path(cfg.checkpoint).expanduser()
    key = setting("checkpoint")
    if not path.exists():
        raise GuidanceWeightsError(
            f"CLIP checkpoint {str(path)!r} (config key `{key}`) does not exist.\n" + _how_to_get(cfg.model)
        )
    filename = cfg.model.replace("/", "-").replace("@", "-") + ".pt"
    what = f"CLIP weights (OpenAI's {filename} or a state dict of clip.model.CLIP)"
    hint = (
        f"The official file is what `python -c \"import clip; clip.load('{cfg.model}')\"` downloads "
        f"to {CLIP_DEFAULT_ROOT}/{filename}."
    )
    with as_guidance_file_error():
        state_dict, file_format = read_clip_weights(path, key, what, hint)
    arch = clip_architecture(state_dict)
    released = released_clip_name(arch)
    if released is None:
        log.warning(
            "`%s=%s` holds a CLIP of an architecture no OpenAI release has (%s); it runs as the file "
            "says, and `%s=%s` does not describe it.",
            key,
            path,
            arch.describe(),
            setting("model"),
            cfg.model,
        )
    elif released != cfg.model:
        raise GuidanceFileError(
            f"`{key}={path}` holds CLIP {released} weights ({arch.describe()}), but the config says "
            f"`{setting('model')}={cfg.model}`. Set `{setting('model')}={released}` so the run records "
            f"the model that runs, or give {filename} weights."
        )
    try:
        with _unactionable_warnings_silenced():
            model = clip.model.build_model(state_dict).to(cfg.device)
    except Exception as e:  # e.g. tensors whose shapes do not fit one another
        raise GuidanceFileError(
            f"`{key}={path}` has CLIP's tensor names but they do not build a CLIP model "
            f"({type(e).__name__}: {_first_line(e)}): the file is damaged or was edited. {hint}"
        ) from e
    if str(cfg.device) == "cpu":
        model.float()  # as clip.load: the released weights are partly float16
    guidance = ClipGuidance(model)
    guidance.record_weights(path, released or f"custom CLIP ({arch.describe()})", format=file_format)
    return guidance


# -- reading and recognising CLIP weight files (shared with the OpenCLIP backend) -------------
@contextlib.contextmanager
def as_guidance_file_error() -> Iterator[None]:
    """Re-raise the file readers' InputFileError as GuidanceFileError (both, with one message)."""
    try:
        yield
    except GuidanceFileError:
        raise
    except InputFileError as err:
        raise GuidanceFileError(str(err)) from err


# The tensors every CLIP state dict (OpenAI's layout, which OpenCLIP's CLIP class shares) has,
# and those of each vision tower, as clip.model.build_model reads them.
CLIP_TEXT_KEYS = ("positional_embedding", "token_embedding.weight", "ln_final.weight", "text_projection")
CLIP_VIT_KEYS = ("visual.proj", "visual.conv1.weight", "visual.positional_embedding")
CLIP_RESNET_KEYS = ("visual.layer1.0.conv1.weight", "visual.attnpool.positional_embedding")


def read_clip_weights(path: Path, config_key: str, what: str, hint: str) -> tuple[dict, str]:
    """The CLIP state dict in ``path`` and the file's format (``torchscript``, ``safetensors``,
    ``state_dict``). A TorchScript archive (OpenAI's release) is read with ``torch.jit.load``,
    as clip.load and open_clip do; anything else as tensors only. A training checkpoint that
    wraps a state dict (``{'state_dict': ..., 'epoch': ...}``, OpenCLIP's trainer) is unwrapped
    as OpenCLIP does. Raises InputFileError unless the result is a CLIP state dict."""
    file = check_file(path, config_key, what, hint)
    if is_torchscript_archive(file):
        try:
            with _unactionable_warnings_silenced():
                state_dict = dict(torch.jit.load(str(file), map_location="cpu").state_dict())
        except Exception as err:
            raise InputFileError(
                f"{describe(path, config_key)} is a TorchScript archive that does not load "
                f"({type(err).__name__}: {_first_line(err)}): it is damaged or truncated. Expected {what}. {hint}"
            ) from err
        for extra in ("input_resolution", "context_length", "vocab_size"):  # OpenAI's, not weights
            state_dict.pop(extra, None)
        file_format = "torchscript"
        payload: Any = state_dict
    elif file.suffix == ".safetensors":
        payload = state_dict = load_safetensors_file(file, config_key, what, hint)
        file_format = "safetensors"
    else:
        payload = load_torch_weights(file, config_key, what, hint)
        state_dict = _unwrap_state_dict(payload)
        file_format = "state_dict"
    problem = clip_state_dict_problem(state_dict, payload)
    if problem:
        what_it_is, advice = problem
        raise InputFileError(f"{describe(path, config_key)} is {what_it_is}, not {what}. {advice}{hint}")
    return state_dict, file_format


def _unwrap_state_dict(payload: Any) -> Any:
    """What open_clip.factory.load_state_dict makes of a loaded file: the inner 'state_dict' of
    a training checkpoint, without DistributedDataParallel's 'module.' prefix."""
    if isinstance(payload, Mapping) and isinstance(payload.get("state_dict"), Mapping):
        payload = payload["state_dict"]
    if isinstance(payload, Mapping) and payload and all(isinstance(k, str) for k in payload):
        if next(iter(payload)).startswith("module."):
            payload = {k.removeprefix("module."): v for k, v in payload.items()}
    return payload


def clip_state_dict_problem(state_dict: Any, payload: Any = None) -> Optional[tuple[str, str]]:
    """(what ``state_dict``, loaded from ``payload``, is instead of a CLIP state dict, advice), or
    None when it is one."""
    if not isinstance(state_dict, Mapping) or not state_dict:
        return f"a {type(state_dict).__name__}" + (" with nothing in it" if not state_dict else ""), ""
    keys = [str(k) for k in state_dict][:5]
    tensors = all(isinstance(v, torch.Tensor) for v in state_dict.values())
    has_vision = all(k in state_dict for k in CLIP_VIT_KEYS) or all(k in state_dict for k in CLIP_RESNET_KEYS)
    if tensors and has_vision and all(k in state_dict for k in CLIP_TEXT_KEYS):
        if any(v.is_meta for v in state_dict.values()):
            return "a CLIP state dict whose tensors hold no data (saved from the meta device)", ""
        return None
    if isinstance(payload, Mapping) and isinstance(payload.get("config"), Mapping) and "state_dict" in payload:
        return "a mini guidance checkpoint", "It goes to `guidance=mini guidance.checkpoint=...`. "
    training = describe_training_checkpoint(payload)
    if training:
        return f"{training} whose state dict is not a CLIP model's (first keys {keys})", ""
    if tensors and any(k.startswith("text.") for k in state_dict) and any(k.startswith("visual.") for k in state_dict):
        return (f"an OpenCLIP model with its own text tower (keys {keys}...), not in CLIP's layout",
                "It goes to `guidance=open_clip` with its model name. ")  # fmt: skip
    if not tensors:
        return f"a dict holding things other than tensors (keys {keys})", ""
    missing = [k for k in CLIP_TEXT_KEYS + CLIP_VIT_KEYS if k not in state_dict][:4]
    return f"a state dict of another model (first keys {keys}; no {missing})", ""


@dataclasses.dataclass(frozen=True)
class ClipArchitecture:
    """A CLIP's shape-defining hyper-parameters, as clip.model.build_model derives them from a
    state dict. Attention heads are not in the tensor shapes (build_model assumes width / 64)."""

    vision: str  # "ViT" or "ResNet"
    vision_layers: Any  # int (ViT) or a tuple of 4 (ResNet)
    vision_width: int
    patch_size: Optional[int]  # None for a ResNet
    image_size: int
    embed_dim: int
    context_length: int
    vocab_size: int
    text_width: int
    text_layers: int

    def describe(self) -> str:
        if self.vision == "ViT":
            vision = f"ViT patch {self.patch_size}, width {self.vision_width}, {self.vision_layers} layers"
        else:
            vision = f"ResNet layers {list(self.vision_layers)}, width {self.vision_width}"
        return (f"{vision}, {self.image_size} px, embed {self.embed_dim}, text width {self.text_width} x "
                f"{self.text_layers} layers, context {self.context_length}, vocab {self.vocab_size}")  # fmt: skip

    def differences(self, other: "ClipArchitecture") -> list[str]:
        """'field: self's value vs other's' for each field that differs."""
        return [
            f"{f.name} {getattr(self, f.name)} vs {getattr(other, f.name)}"
            for f in dataclasses.fields(self)
            if getattr(self, f.name) != getattr(other, f.name)
        ]

    @staticmethod
    def from_open_clip_config(model_cfg: Mapping) -> Optional["ClipArchitecture"]:
        """The architecture an OpenCLIP model config builds, or None for one outside CLIP's
        layout (a timm or Hugging Face tower, a custom text tower, CoCa)."""
        from open_clip.model import CLIPTextCfg, CLIPVisionCfg

        vision_cfg, text_cfg = dict(model_cfg.get("vision_cfg", {})), dict(model_cfg.get("text_cfg", {}))
        if (model_cfg.get("custom_text") or "multimodal_cfg" in model_cfg or "timm_model_name" in vision_cfg
                or "hf_model_name" in text_cfg):  # fmt: skip
            return None
        try:
            v, t = CLIPVisionCfg(**vision_cfg), CLIPTextCfg(**text_cfg)
        except TypeError:
            return None
        size = v.image_size if isinstance(v.image_size, int) else tuple(v.image_size)
        if not isinstance(size, int):
            if len(set(size)) != 1:
                return None
            size = size[0]
        resnet = isinstance(v.layers, (tuple, list))
        return ClipArchitecture(
            vision="ResNet" if resnet else "ViT",
            vision_layers=tuple(v.layers) if resnet else int(v.layers),
            vision_width=int(v.width),
            patch_size=None if resnet else int(v.patch_size),
            image_size=int(size),
            embed_dim=int(model_cfg["embed_dim"]),
            context_length=int(t.context_length),
            vocab_size=int(t.vocab_size),
            text_width=int(t.width),
            text_layers=int(t.layers),
        )


def clip_architecture(state_dict: Mapping) -> ClipArchitecture:
    """The architecture of a CLIP state dict (checked by :func:`clip_state_dict_problem`), derived
    from tensor shapes exactly as clip.model.build_model (and OpenCLIP's
    build_model_from_openai_state_dict) derive it."""
    sd = state_dict
    if "visual.proj" in sd:
        vision_width = sd["visual.conv1.weight"].shape[0]
        vision_layers = len([k for k in sd if k.startswith("visual.") and k.endswith(".attn.in_proj_weight")])
        patch_size = sd["visual.conv1.weight"].shape[-1]
        grid_size = round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5)
        image_size = patch_size * grid_size
        vision = "ViT"
    else:
        vision_layers = tuple(
            len({k.split(".")[2] for k in sd if k.startswith(f"visual.layer{b}")}) for b in (1, 2, 3, 4)
        )
        vision_width = sd["visual.layer1.0.conv1.weight"].shape[0]
        output_width = round((sd["visual.attnpool.positional_embedding"].shape[0] - 1) ** 0.5)
        patch_size, image_size, vision = None, output_width * 32, "ResNet"
    return ClipArchitecture(
        vision=vision,
        vision_layers=vision_layers,
        vision_width=int(vision_width),
        patch_size=None if patch_size is None else int(patch_size),
        image_size=int(image_size),
        embed_dim=int(sd["text_projection"].shape[1]),
        context_length=int(sd["positional_embedding"].shape[0]),
        vocab_size=int(sd["token_embedding.weight"].shape[0]),
        text_width=int(sd["ln_final.weight"].shape[0]),
        text_layers=len({k.split(".")[2] for k in sd if k.startswith("transformer.resblocks")}),
    )


def _released(vision, layers, width, patch, size, embed, text_width) -> ClipArchitecture:
    return ClipArchitecture(vision, layers, width, patch, size, embed, 77, 49408, text_width, 12)


# OpenAI's released CLIPs (the models of clip.available_models()), as build_model derives them
# from the released files; tests check this table against OpenCLIP's configs of the same models.
RELEASED_CLIP_ARCHITECTURES: dict[str, ClipArchitecture] = {
    "RN50": _released("ResNet", (3, 4, 6, 3), 64, None, 224, 1024, 512),
    "RN101": _released("ResNet", (3, 4, 23, 3), 64, None, 224, 512, 512),
    "RN50x4": _released("ResNet", (4, 6, 10, 6), 80, None, 288, 640, 640),
    "RN50x16": _released("ResNet", (6, 8, 18, 8), 96, None, 384, 768, 768),
    "RN50x64": _released("ResNet", (3, 15, 36, 10), 128, None, 448, 1024, 1024),
    "ViT-B/32": _released("ViT", 12, 768, 32, 224, 512, 512),
    "ViT-B/16": _released("ViT", 12, 768, 16, 224, 512, 512),
    "ViT-L/14": _released("ViT", 24, 1024, 14, 224, 768, 768),
    "ViT-L/14@336px": _released("ViT", 24, 1024, 14, 336, 768, 768),
}


def released_clip_name(arch: ClipArchitecture) -> Optional[str]:
    """The clip.available_models() name of a released architecture, or None."""
    return next((name for name, known in RELEASED_CLIP_ARCHITECTURES.items() if known == arch), None)


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0][:200] if lines else repr(err)


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
        f"CLIP weights for {cfg.model!r} are missing: {problem}, and {reason}.\n" + _how_to_get(cfg.model)
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
