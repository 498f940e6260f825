"""The project's own offline guidance model (`guidance=mini`, the default): a small image-text
model trained on synthetic renders of the body model (avatar/guidance/mini_model.py, trained by
`python train.py stage=train_guidance stage.publish=true`). The shipped ``mini.pt`` is that base
model interpolated in weight space with its binding fine-tune (avatar-guidance-interpolate;
docs/models/mini.md).

It knows the synthetic vocabulary: body shapes, poses, garments (tops, trousers, shorts,
skirts, shoes), hair, ~750 named colours and five patterns, in AvatarCLIP's prompt templates
and plain paraphrases. It does not know named characters or open-vocabulary concepts ("Iron
Man", "a Viking"): those need `guidance=clip` / `guidance=open_clip` with their weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from avatar.guidance.base import (
    GUIDANCE,
    Guidance,
    GuidanceFileError,
    GuidanceWeightsError,
    config_from,
    setting,
)
from avatar.guidance.snapping import Snapper, TextReading
from avatar.utils.files import InputFileError

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
MINI_CHECKPOINT = str(WEIGHTS_DIR / "mini.pt")
# A second model (other seed and architecture) that scores results, so no stage is judged by
# the model that guided it.
MINI_SCORER_CHECKPOINT = str(WEIGHTS_DIR / "mini_scorer.pt")


@dataclass
class MiniGuidanceConfig:
    name: str = "mini"
    checkpoint: str = MINI_CHECKPOINT  # mini_scorer.pt is the independent scoring model
    device: str = "cpu"
    # How the text tower reads a prompt: as_written, or snapped (rewritten into the training
    # grammar first by nearest neighbours in the frozen MiniLM space; a prompt of grammar words
    # is unchanged; avatar/guidance/snapping.py, docs/experiments/guidance-model.md 2026-12-05).
    text_reading: TextReading = TextReading.as_written


class MiniGuidance(Guidance):
    def __init__(self, model, device: str = "cpu", text_reading: TextReading | str = TextReading.as_written) -> None:
        size = model.cfg.image_size
        # The model rescales [0, 1] pixels itself: identity normalisation here.
        super().__init__(model.cfg.embed_dim, (size, size), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
        self.model = model
        self.text_reading = TextReading(text_reading)
        self.snapper = Snapper() if self.text_reading == TextReading.snapped else None
        self.to(device)
        self.freeze()

    def read(self, text: str) -> str:
        """What the text tower reads for ``text``: the text itself, or its snap into the grammar
        (logged at INFO the first time a text is rewritten)."""
        return text if self.snapper is None else self.snapper(text)

    def _embed_tokens(self, texts: list[str]) -> torch.Tensor:
        return self.model.text([self.read(t) for t in texts])

    def _embed_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.image(pixels)


@GUIDANCE.register("mini")
def build_mini_guidance(cfg: Any) -> Guidance:
    from avatar.guidance.mini_model import MiniImageTextModel, read_checkpoint

    cfg = config_from(MiniGuidanceConfig, cfg)
    path = Path(cfg.checkpoint).expanduser()
    key = setting("checkpoint")
    if not path.is_file():
        raise GuidanceWeightsError(
            f"The offline guidance weights {str(path)!r} (config key `{key}`) do not "
            "exist. Train them with `python train.py stage=train_guidance stage.publish=true`, or use "
            f"CLIP with local weights: `{GUIDANCE.config_key}=clip {key}=/path/to/ViT-B-32.pt`."
        )
    try:
        payload = read_checkpoint(path, key)
        model = MiniImageTextModel.from_checkpoint(payload)
    except InputFileError as err:
        raise GuidanceFileError(str(err)) from err
    except ValueError as err:  # the payload's parts do not fit together
        raise GuidanceFileError(
            f"`{key}={path}` is not a usable mini guidance checkpoint: {err}. It may come from another "
            "version of this project, or be damaged."
        ) from err
    guidance = MiniGuidance(model, cfg.device, cfg.text_reading)
    m = model.cfg
    guidance.record_weights(
        path,
        f"mini (embed {m.embed_dim}, image {m.image_size} px, channels {list(m.image_channels)}, "
        f"MiniLM top {m.text_trainable_layers} layers tuned)",
        text_reading=str(guidance.text_reading),
    )
    return guidance
