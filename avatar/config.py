"""Structured configs: every config group is a dataclass registered in Hydra's ConfigStore, so a
misspelled or unknown key fails when the config is composed, with the key's name.

Groups whose options differ in fields (``body``, ``guidance``, ``stage``) register one schema
per option (``body/anny_schema``...), which the option's YAML file names in its defaults list.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from avatar.body.anny_body import AnnyBodyConfig
from avatar.body.smpl_body import SmplBodyConfig
from avatar.engine.pipeline import PipelineConfig
from avatar.engine.schedules import validate_weight
from avatar.guidance.clip_backend import ClipGuidanceConfig
from avatar.guidance.mini import MINI_SCORER_CHECKPOINT, MiniGuidanceConfig
from avatar.guidance.open_clip_backend import OpenClipGuidanceConfig
from avatar.guidance.training import GuidanceTrainStageConfig
from avatar.priors.loading import PriorConfig
from avatar.priors.training import (
    MotionCodebookStageConfig,
    MotionVAEStageConfig,
    PoseCodebookStageConfig,
    PosePriorStageConfig,
)
from avatar.render.cameras import ViewSamplingConfig
from avatar.render.mesh_renderer import MeshRenderConfig
from avatar.stages.animate import AnimateStageConfig
from avatar.stages.appearance import AppearanceStageConfig
from avatar.stages.motion import MotionStageConfig
from avatar.stages.pose import PoseStageConfig
from avatar.stages.pose_fit import PoseFitStageConfig
from avatar.stages.shape import ShapeStageConfig
from avatar.stages.showcase import ShowcaseStageConfig
from avatar.utils.bounds import at_least, check_bounds


@dataclass
class PromptConfig:
    shape: str = "a person"  # t_shape: body shape
    appearance: str = "a person in a red shirt and blue trousers"  # t_app
    motion: str = "a person raising both arms"  # t_motion


@dataclass
class ScorerConfig:
    """The model that scores results for metrics (not the one that guides): any guidance
    backend's config; the default is the independently trained ``mini_scorer``."""

    enabled: bool = True
    guidance: dict = field(default_factory=lambda: {"name": "mini", "checkpoint": MINI_SCORER_CHECKPOINT})


@dataclass
class TrainerConfig:
    """Arguments of ``lightning.Trainer`` (plus checkpointing), chosen by ``trainer=cpu|gpu|ddp``."""

    accelerator: str = "cpu"
    devices: Any = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    max_steps: int = at_least(1, 200, "a run of 0 steps reports an untrained result")
    log_every_n_steps: int = at_least(1, 10)
    val_every_n_steps: int = at_least(0, 100)  # 0: none; validation images (renders) every N optimisation steps
    checkpoint_every_n_steps: int = at_least(1, 100, "a run with no checkpoints cannot resume")
    gradient_clip_val: Optional[float] = None
    deterministic: bool = False
    enable_progress_bar: bool = True
    # Lightning's profiler: null (off), "simple" (time per hook, in the run's log), "advanced",
    # "pytorch" (conf/debug/profiler.yaml turns on "simple")
    profiler: Optional[str] = None


@dataclass
class WandbConfig:
    enabled: bool = False
    project: str = "avatar"
    entity: Optional[str] = None
    mode: str = "offline"  # online | offline | disabled; offline runs sync later with `wandb sync`
    tags: list[str] = field(default_factory=list)
    log_images: bool = True
    # Upload the run's outputs (meshes, glb, npz/bvh, last.ckpt, resolved config, result) as a
    # W&B artifact when the stage finishes (avatar/engine/reporting.py); off: they can be large.
    log_artifacts: bool = False


@dataclass
class LoggerConfig:
    tensorboard: bool = True
    csv: bool = True
    wandb: WandbConfig = field(default_factory=WandbConfig)


class RunMode(StrEnum):
    """What a run does: ``train`` (optimise, then export and evaluate), ``export`` (restore the
    run's newest or the given checkpoint, export and evaluate: re-export a finished or
    interrupted run), ``evaluate`` (restore, evaluate only: result.json, no files rewritten)."""

    train = "train"
    export = "export"
    evaluate = "evaluate"


@dataclass
class Config:
    stage: Any = MISSING
    body: Any = MISSING
    guidance: Any = MISSING
    prompt: PromptConfig = field(default_factory=PromptConfig)
    render: MeshRenderConfig = field(default_factory=MeshRenderConfig)
    views: ViewSamplingConfig = field(default_factory=ViewSamplingConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    prior: PriorConfig = field(default_factory=PriorConfig)
    scorer: ScorerConfig = field(default_factory=ScorerConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)  # pipeline=full runs every stage
    preset: str = "tiny"  # set by the preset overlay: tiny | small | paper (cpu: the old name of tiny)
    experiment_name: str = "default"  # groups runs (W&B group, output folder)
    # Which variant of an experiment this run is, set by the overlay that makes it (an ablation
    # ladder's step: experiments/appearance_ladder/*.yaml set "appearance_ladder/<step>"); it is
    # in the resolved and W&B config and a W&B tag, so runs filter and group by it.
    variant: str = ""
    seed: int = 0
    # The result.json key a sweep optimises (what train.py's main() returns to Optuna); nested
    # results are addressed with "/", e.g. "region_rgb/torso/r"
    optimized_metric: str = "objective"
    # Resume: "" (fresh run), "last" (this run directory's last checkpoint; combine with
    # hydra.run.dir=<the interrupted run's dir>), or a path to a checkpoint file.
    resume: str = ""
    mode: RunMode = RunMode.train
    run_dir: str = "${hydra:runtime.output_dir}"


# The schema of each option of the groups whose options differ in fields.
OPTION_SCHEMAS: dict[str, dict[str, type]] = {
    "body": {"anny": AnnyBodyConfig, "smpl": SmplBodyConfig},
    "guidance": {"mini": MiniGuidanceConfig, "clip": ClipGuidanceConfig, "open_clip": OpenClipGuidanceConfig},
    "stage": {
        "showcase": ShowcaseStageConfig,
        "shape": ShapeStageConfig,
        "pose_fit": PoseFitStageConfig,
        "train_pose_prior": PosePriorStageConfig,
        "train_motion_vae": MotionVAEStageConfig,
        "build_pose_codebook": PoseCodebookStageConfig,
        "build_motion_codebook": MotionCodebookStageConfig,
        "train_guidance": GuidanceTrainStageConfig,
        "appearance": AppearanceStageConfig,
        "motion": MotionStageConfig,
        "pose": PoseStageConfig,
        "animate": AnimateStageConfig,
    },
}


def validate_config(cfg: DictConfig) -> None:
    """Check a composed config against the schemas once more. Composition already rejects
    misspelled keys; this also rejects keys forced in with Hydra's ``+key=value`` syntax, which
    bypasses struct mode, so a typo can never be silently ignored."""
    plain = OmegaConf.to_container(cfg, resolve=False)
    for group, schemas in OPTION_SCHEMAS.items():
        name = plain[group].get("name")
        if name not in schemas:
            raise ValueError(f"{group}.name={name!r} is not one of {sorted(schemas)}")
        _merge_strict(OmegaConf.structured(schemas[name]), plain[group], prefix=group)
        plain[group] = None
    _merge_strict(OmegaConf.structured(Config), plain, prefix="")
    # Values: declared bounds (avatar.utils.bounds), loss weights, prompts.
    # (``run_dir`` is left out: it names Hydra's output folder, unset when a test composes.)
    resolved = {
        key: OmegaConf.to_container(cfg[key], resolve=True) if OmegaConf.is_config(cfg[key]) else cfg[key]
        for key in cfg
        if key != "run_dir"
    }
    for group, schemas in OPTION_SCHEMAS.items():
        check_bounds(schemas[resolved[group]["name"]], resolved[group], group)
    check_bounds(Config, {k: v for k, v in resolved.items() if k not in OPTION_SCHEMAS}, "")
    for key, spec in resolved["stage"].items():
        if key.startswith("lambda_"):
            validate_weight(f"stage.{key}", spec)
    check_prompts_readable(resolved)


def keep_prompts_literal(cfg: DictConfig) -> None:
    """Prompts are text: ``${...}`` in a prompt is kept as written, never interpolated by OmegaConf
    ("a man with ${oc.env:HOME}" must not become "a man with /root")."""
    prompts = cfg.get("prompt")
    if prompts is None:
        return
    raw = OmegaConf.to_container(prompts, resolve=False)
    for key, text in raw.items():
        if isinstance(text, str) and "${" in text and "\\${" not in text:
            prompts[key] = text.replace("${", "\\${")


def check_prompts_readable(resolved: dict) -> None:
    """The offline ``mini`` model reads English words only: a prompt with no word in the Latin
    alphabet (Chinese, Arabic, emoji...) would guide the run by nothing and pick an arbitrary
    result, so it is an error; words it cannot read beside English ones are a warning. Readable
    prompts far from its vocabulary ("a firefighter", "Harry Potter") are warned about at the
    stage's start, not here (avatar/guidance/vocabulary.py: that needs the sentence encoder)."""
    if resolved["guidance"].get("name") != "mini":
        return
    import logging

    for key, text in resolved.get("prompt", {}).items():
        words = str(text).split()
        unreadable = [w for w in words if not re.search(r"[A-Za-z]", w)]
        if words and len(unreadable) == len(words):
            raise ValueError(
                f"prompt.{key}={text!r}: the offline `mini` guidance model reads English only and finds no "
                "word it can read here. Write the prompt in English, or use guidance=clip / "
                "guidance=open_clip with their weights for other languages."
            )
        if unreadable and any(ord(c) > 0x24F for w in unreadable for c in w):
            logging.getLogger(__name__).warning(
                "prompt.%s: the `mini` guidance model cannot read %s; it reads the English words only", key, unreadable
            )


def _merge_strict(schema: DictConfig, values: dict, prefix: str) -> None:
    try:
        OmegaConf.merge(schema, values)
    except (ConfigKeyError, ValidationError) as err:
        where = f" in `{prefix}`" if prefix else ""
        raise ConfigKeyError(f"Invalid config{where}: {err.msg if hasattr(err, 'msg') else err}") from err


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    for group, schemas in OPTION_SCHEMAS.items():
        for option, schema in schemas.items():
            cs.store(group=group, name=f"{option}_schema", node=schema)
    _register_resolvers()


def _register_resolvers() -> None:
    if not OmegaConf.has_resolver("avatar.uid"):
        # One short id per run, cached, so a run directory name never collides with another
        # run started in the same second.
        OmegaConf.register_new_resolver("avatar.uid", lambda: uuid.uuid4().hex[:6], use_cache=True)
    if not OmegaConf.has_resolver("avatar.job_dirname"):
        # A multirun job's folder: its number and the values the sweep varies (constants left
        # out), e.g. 0_lr=0.01,seed=1 (avatar/engine/reporting.py: job_dirname).
        def job_dirname(num, *, _root_):
            from avatar.engine.reporting import job_dirname as name

            return name(_root_.hydra, num)

        OmegaConf.register_new_resolver("avatar.job_dirname", job_dirname)
    if not OmegaConf.has_resolver("avatar.path_safe"):
        # Overrides make readable folder names; strip what a path can't hold and cap the length.
        OmegaConf.register_new_resolver(
            "avatar.path_safe", lambda s: re.sub(r"[^A-Za-z0-9_.,=+-]+", "-", str(s))[:80] or "default"
        )
