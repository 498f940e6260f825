"""A stage's own reading of a guidance model's text embeddings: a residual linear map
``t -> normalise(t + W t)`` fitted for one set of guidance weights (issue #28).

Why: fine-tuning the shared text tower so that the shape words point the right way also moved
the colour and pose words (the motion stage and the colour check got worse;
docs/experiments/guidance-model.md, 2026-12-05). A map that only one stage applies, to the text
embeddings it scores against, changes that stage and nothing else. The shape stage reads the
shipped ``mini_shape_map.pt`` (fitted by ``experiments/guidance/shape_direction_adapter.py``;
docs/models/mini_shape_map.md).

A map belongs to the weights it was fitted on: the file records their SHA-256, and loading it
for other weights fails (an explicit path) or is skipped with a warning (``auto``). ``auto``
finds ``<weights stem>_<kind>_map.pt`` beside the guidance's weights file, so a retrained or
another model has no map until one is fitted for it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from avatar.utils.files import InputFileError, load_torch_file, short_hash

log = logging.getLogger(__name__)

AUTO, NONE = "auto", "none"


class TextDirectionMap:
    """``t -> normalise(t + t W^T)`` on L2-normalised text embeddings (..., E).

    ``weight`` (E, E) starts at zero (the identity map); ``meta`` says how it was fitted
    (``guidance_sha256_12``: the weights it belongs to)."""

    def __init__(self, weight: torch.Tensor, meta: dict[str, Any] | None = None, file: str = "") -> None:
        if weight.ndim != 2 or weight.shape[0] != weight.shape[1]:
            raise ValueError(f"a text map's weight must be square (E, E), got {tuple(weight.shape)}")
        self.weight = weight.float()
        self.meta = dict(meta or {})
        self.file = file

    @property
    def dim(self) -> int:
        return int(self.weight.shape[0])

    def __call__(self, text_emb: torch.Tensor) -> torch.Tensor:
        return apply_direction_map(text_emb, self.weight)

    def record(self) -> dict[str, Any]:
        """What a run records about the map it read."""
        return {"file": self.file, "sha256_12": short_hash(self.file) if self.file else None, **self.meta}

    def save(self, path: str | Path) -> None:
        from avatar.utils.io import atomic_path

        with atomic_path(Path(path)) as tmp:
            torch.save({"weight": self.weight.detach().clone(), "meta": self.meta}, tmp)

    @classmethod
    def load(cls, path: str | Path, config_key: str) -> "TextDirectionMap":
        hint = "Fit one with experiments/guidance/shape_direction_adapter.py --out <file>, or set it to none."
        payload = load_torch_file(path, config_key, "a text direction map ({'weight': (E, E), 'meta': {...}})", hint)
        if not isinstance(payload, dict) or not isinstance(payload.get("weight"), torch.Tensor):
            raise InputFileError(f"`{config_key}={path}` holds no 'weight' tensor: not a text direction map. {hint}")
        try:
            return cls(payload["weight"], payload.get("meta"), str(path))
        except ValueError as err:
            raise InputFileError(f"`{config_key}={path}`: {err}. {hint}") from err


def apply_direction_map(text_emb: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``normalise(t + t W^T)`` for text embeddings (..., E) and W (E, E)."""
    return F.normalize(text_emb + text_emb @ weight.to(text_emb.device).T, dim=-1)


def map_beside(weights_file: str | Path, kind: str) -> Path:
    """Where ``auto`` looks for a ``kind`` map of a weights file: ``<stem>_<kind>_map.pt`` beside it."""
    file = Path(weights_file)
    return file.with_name(f"{file.stem}_{kind}_map.pt")


def resolve_text_map(setting: str, guidance, kind: str, config_key: str) -> TextDirectionMap | None:
    """The map a stage applies to ``guidance``'s text embeddings under ``setting``: ``none``,
    ``auto`` (the one beside the guidance weights, when it was fitted for them) or a file path
    (it must fit the guidance: its size and the weights it was fitted on)."""
    setting = str(setting or NONE).strip()
    if setting.lower() == NONE:
        return None
    weights = guidance.loaded_weights or {}
    if setting.lower() == AUTO:
        if not weights.get("file") or not map_beside(weights["file"], kind).is_file():
            return None
        path, explicit = map_beside(weights["file"], kind), False
    else:
        path, explicit = Path(setting).expanduser(), True
    text_map = TextDirectionMap.load(path, config_key)
    problem = None
    if text_map.dim != guidance.embed_dim:
        problem = f"it maps {text_map.dim}-d embeddings and the guidance's are {guidance.embed_dim}-d"
    else:
        fitted_for, loaded = text_map.meta.get("guidance_sha256_12"), weights.get("sha256_12")
        if fitted_for and loaded and fitted_for != loaded:
            problem = f"it was fitted for the guidance weights with sha256 {fitted_for}, and {weights.get('file')} has {loaded}"
    if problem is None:
        log.info("Reading the prompt's text embedding through %s (%s)", path, config_key)
        return text_map
    refit = f"experiments/guidance/shape_direction_adapter.py guidance.checkpoint={weights.get('file')} --out {path}"
    advice = f"Refit it for these weights ({refit}) or set {config_key}=none."
    if explicit:
        raise InputFileError(f"`{config_key}={path}` does not fit the guidance: {problem}. {advice}")
    log.warning("%s=auto: not using %s: %s. %s", config_key, path, problem, advice)
    return None


def pearson(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of two 1-d tensors (differentiable)."""
    x, y = x - x.mean(), y - y.mean()
    return (x * y).sum() / (x.norm() * y.norm() + 1e-8)


def fit_direction_map(
    text_emb: torch.Tensor,
    neutral_text_emb: torch.Tensor,
    image_emb: torch.Tensor,
    neutral_image_emb: torch.Tensor,
    targets: torch.Tensor,
    steps: int = 300,
    lr: float = 1e-2,
    l2: float = 3e-3,
    log_every: int = 50,
) -> tuple[torch.Tensor, list[float]]:
    """Fit ``W`` so that each prompt's direction score over bodies correlates with its target.

    ``text_emb`` (P, E): the prompts; ``image_emb`` (N, E): bodies; ``targets`` (P, N): what each
    prompt's score should follow over the bodies (e.g. the z-score of the phenotype it names).
    The score is AvatarCLIP's ``cos(image - neutral image, map(text) - map(neutral text))``;
    the loss is minus the mean Pearson correlation plus ``l2 * |W|^2``. Adam from W = 0.
    Returns (W (E, E), the correlation after each step)."""
    from avatar.stages.shape import direction_scores

    dim = text_emb.shape[1]
    weight = torch.zeros(dim, dim, requires_grad=True)
    optimiser = torch.optim.Adam([weight], lr=lr)
    history = []
    for step in range(1, steps + 1):
        texts = apply_direction_map(text_emb, weight)
        neutral = apply_direction_map(neutral_text_emb.reshape(1, -1), weight)[0]
        scores = torch.stack([direction_scores(image_emb, neutral_image_emb, t, neutral) for t in texts])
        grounding = torch.stack([pearson(scores[i], targets[i]) for i in range(len(texts))]).mean()
        loss = -grounding + l2 * weight.pow(2).sum()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        history.append(float(grounding.detach()))
        if log_every and (step == 1 or step % log_every == 0):
            norm = float(weight.detach().norm())
            log.info("text map step %d/%d: correlation %.3f |W| %.3f", step, steps, history[-1], norm)
    return weight.detach().clone(), history
