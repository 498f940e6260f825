"""Three sentences to an animated avatar in one command: ``python train.py pipeline=full``.

The pipeline runs the stages one after another, each in its own folder of the pipeline's run
directory, each reading the previous ones' outputs::

    <run dir>/1_shape       prompt.shape       -> shape.npz
    <run dir>/2_appearance  prompt.appearance  -> avatar_rig.npz, avatar.ply  (stage.shape_dir=1_shape)
    <run dir>/3_pose        prompt.motion      -> poses.npz
    <run dir>/4_motion                         -> motion.npz                   (stage.pose_dir=3_pose)
    <run dir>/5_animate                        -> avatar_animated.glb, videos   (avatar_dir, motion)

Every stage's config is composed by Hydra exactly as ``python train.py stage=<name> <the
command line's overrides> <pipeline.overrides.<name>>`` would compose it, so presets, body,
guidance, prompts and seeds apply to every stage, and stage-specific settings go to one stage
(``'pipeline.overrides.appearance=[trainer.max_steps=100]'``).

Re-running the command with ``hydra.run.dir=<that run dir>`` continues it: a stage whose
``result.json`` exists with the same config (prompts other than its own aside) is reused; an
interrupted optimisation stage resumes from its newest checkpoint (``resume=auto``). A finished
*or interrupted* stage whose config changed, or that follows a stage that ran again, is an
error naming the changes, unless
``pipeline.redo_changed=true``: then its folder is renamed ``<folder>.replaced-<time>`` (nothing
is lost) and the stage runs again. So a new motion for the same avatar is
``... hydra.run.dir=<run dir> prompt.motion="..." pipeline.redo_changed=true``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from avatar.engine.run_info import run_status
from avatar.utils.io import atomic_write_text

log = logging.getLogger(__name__)

# Each stage's inputs: config key -> the earlier stage whose folder it reads.
STAGE_INPUTS: dict[str, dict[str, str]] = {
    "appearance": {"stage.shape_dir": "shape"},
    "motion": {"stage.pose_dir": "pose"},
    "animate": {"stage.avatar_dir": "appearance", "stage.motion": "motion"},
}


@dataclass
class PipelineConfig:
    name: str = ""  # "" = run the single stage named by `stage`; "full" = the whole pipeline
    stages: list[str] = field(default_factory=list)
    overrides: dict[str, list[str]] = field(default_factory=dict)  # stage name -> its own overrides
    redo_changed: bool = False  # rerun finished stages whose config changed (old folder kept aside)


def _pipeline_free(overrides: list[str]) -> list[str]:
    """The command line's overrides without those that select the pipeline or a stage."""
    drop = ("pipeline=", "pipeline.", "+pipeline", "stage=", "resume=", "run_dir=")
    return [o for o in overrides if not o.lstrip("~+").startswith(drop)]


def _stage_folders(cfg: DictConfig, run_dir: Path) -> dict[str, Path]:
    return {name: run_dir / f"{i + 1}_{name}" for i, name in enumerate(cfg.pipeline.stages)}


# The prompt each stage reads; the others do not make its output stale.
STAGE_PROMPT = {"shape": "shape", "appearance": "appearance", "pose": "motion", "motion": "motion", "animate": None}


def _comparable(cfg: DictConfig, stage: str) -> dict:
    """What a stage's output depends on: its config without where it ran, the prompts other
    stages read, and with paths inside the pipeline's run directory made relative to it (so a
    moved or copied pipeline directory is still reused)."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    root = str(Path(plain["run_dir"]).parent) if plain.get("run_dir") else None
    for key in ("run_dir", "resume", "pipeline"):
        plain.pop(key, None)
    plain["prompt"] = {k: v for k, v in plain.get("prompt", {}).items() if k == STAGE_PROMPT.get(stage)}

    def relative(value):
        if isinstance(value, dict):
            return {k: relative(v) for k, v in value.items()}
        if isinstance(value, list):
            return [relative(v) for v in value]
        if root and isinstance(value, str) and (value == root or value.startswith(root + "/")):
            return "<pipeline>" + value[len(root) :]
        return value

    return relative(plain)


def config_differences(a, b, prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two plain config trees."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            out += config_differences(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


def compose_stage(name: str, overrides: list[str]) -> DictConfig:
    """A stage's config composed as the command line would (inside the running Hydra app)."""
    from hydra import compose

    return compose("config", overrides=[f"stage={name}", *overrides])


def run_pipeline(cfg: DictConfig, overrides: list[str]) -> dict:
    from avatar.engine.runner import run

    unknown = [s for s in cfg.pipeline.stages if s not in {"shape", "appearance", "pose", "motion", "animate"}]
    if unknown:
        raise ValueError(f"pipeline.stages has unknown stages {unknown}")
    extra = {name for name, given in cfg.pipeline.overrides.items() if given} - set(cfg.pipeline.stages)
    if extra:
        raise ValueError(f"pipeline.overrides names stages that are not in pipeline.stages: {sorted(extra)}")
    run_dir = Path(cfg.run_dir)
    folders = _stage_folders(cfg, run_dir)
    base = _pipeline_free(overrides)
    summary: dict = {"stages": {}}
    ran_earlier: list[str] = []  # stages run (not reused) so far: later ones are stale
    for name in cfg.pipeline.stages:
        folder = folders[name]
        links = []
        for key, source in STAGE_INPUTS.get(name, {}).items():
            if source in folders:
                links.append(f"{key}={folders[source]}")
        stage_overrides = [*base, *links, *list(cfg.pipeline.overrides.get(name, []))]
        stage_cfg = compose_stage(name, [*stage_overrides, f"run_dir={folder}"])
        result_file = folder / "result.json"
        saved = folder / "config_resolved.yaml"
        finished = result_file.is_file() and run_status(folder) in ("finished", "unknown")
        if saved.is_file():  # finished, or interrupted / failed part-way: the same rule for both
            changed = config_differences(_comparable(OmegaConf.load(saved), name), _comparable(stage_cfg, name))
            if ran_earlier:
                changed.append(f"inputs from the re-run stage(s) {ran_earlier}")
            if not changed and finished:
                log.info("Pipeline: reusing %s (%s)", name, folder)
                summary["stages"][name] = {"folder": str(folder), "reused": True, **json.loads(result_file.read_text())}
                continue
            if changed and not cfg.pipeline.redo_changed:
                how = "finished" if finished else "started (and did not finish)"
                raise RuntimeError(
                    f"Stage {name!r} in {folder} {how} with another config (changed: {changed[:8]}). "
                    "Add pipeline.redo_changed=true to run it again from scratch (its folder is kept as "
                    "<folder>.replaced-<time>), or start a new run directory."
                )
            if changed:
                aside = folder.with_name(f"{folder.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
                folder.rename(aside)
                log.info("Pipeline: %s changed (%s); the old run is kept in %s", name, changed[:8], aside)
        if saved.is_file() and not finished:
            log.info("Pipeline: continuing the interrupted stage %s (from its newest checkpoint, if any)", name)
            stage_cfg = compose_stage(name, [*stage_overrides, f"run_dir={folder}", "resume=auto"])
        log.info("Pipeline: running %s in %s", name, folder)
        start = time.perf_counter()
        result = run(stage_cfg, overrides=[f"stage={name}", *stage_overrides])
        ran_earlier.append(name)
        summary["stages"][name] = {
            "folder": str(folder),
            "reused": False,
            "seconds": round(time.perf_counter() - start, 1),
            **result,
        }
    last = cfg.pipeline.stages[-1]
    summary["objective"] = summary["stages"][last].get("objective", 0.0)
    atomic_write_text(run_dir / "pipeline.json", json.dumps(summary, indent=2, default=str))
    log.info("Pipeline finished in %s", run_dir)
    return summary
