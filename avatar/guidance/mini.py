"""Config slot for the project's own offline guidance model (trained by a later stage).

The model and its loader arrive with `python train.py stage=train_guidance` (issue 6); until
then building it explains what exists instead. There is deliberately no stand-in model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from avatar.guidance.base import GUIDANCE, Guidance, GuidanceWeightsError, config_from, setting

MINI_CHECKPOINT = str(Path(__file__).resolve().parent / "weights" / "mini.pt")


@dataclass
class MiniGuidanceConfig:
    name: str = "mini"
    checkpoint: str = MINI_CHECKPOINT
    device: str = "cpu"


@GUIDANCE.register("mini")
def build_mini_guidance(cfg: Any) -> Guidance:
    cfg = config_from(MiniGuidanceConfig, cfg)
    raise GuidanceWeightsError(
        f"The project's own guidance model (`{GUIDANCE.config_key}=mini`) is not trained yet: its "
        f"weights ({cfg.checkpoint!r}, config key `{setting('checkpoint')}`) and loader come from "
        "`python train.py stage=train_guidance` (issue 6). Meanwhile use CLIP with local weights: "
        f"`{GUIDANCE.config_key}=clip {setting('checkpoint')}=/path/to/ViT-B-32.pt`, or "
        f"`{GUIDANCE.config_key}=open_clip {setting('pretrained')}=/path/to/open_clip_model.safetensors`."
    )
