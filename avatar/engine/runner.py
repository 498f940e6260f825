"""Run one stage from a composed config: record the run, seed, build, fit or run, report.

A run directory is the unit a researcher compares, so it must tell the truth:
- every start of the run (first or resumed) is a *segment* in ``run_info.json``, with its
  overrides, git state, what it resumed from and what changed; the segment ends ``finished``,
  ``failed`` (traceback in ``traceback.txt``) or ``interrupted`` (SIGTERM/Ctrl-C, with a
  checkpoint of the step it stopped at and the command that resumes it);
- a resumed run continues the same optimisation: a config that differs from the one the run
  started with is an error naming the keys, unless the new values are given explicitly on the
  command line (then they are recorded as the segment's ``config_changes``);
- ``result.json`` is written only when the run finishes, and only here: each stage's
  ``export()`` and ``evaluate()`` feed it (the stage contract, avatar/stages/base.py);
- ``mode=export`` (or ``evaluate``) restores the newest or a given checkpoint and only exports
  (or evaluates): a finished or interrupted run is re-exported without training.
"""

from __future__ import annotations

import json
import logging
import traceback
from pathlib import Path

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from avatar.config import RunMode, keep_prompts_literal, validate_config
from avatar.engine.checkpoints import (
    CHECKPOINT_DIR,
    INTERRUPT_EXIT_CODE,
    StopOnSigint,
    is_preemption,
    newest_checkpoint,
    remove_temp_files,
    train_clock,
)
from avatar.engine.reporting import report_result
from avatar.engine.run_info import previous_config, update_segment, write_run_info
from avatar.engine.trainer import build_loggers, build_trainer, resolve_resume
from avatar.guidance.vocabulary import warn_if_unfamiliar
from avatar.stages import build_stage
from avatar.utils.io import atomic_write_text

log = logging.getLogger(__name__)

# Keys that change how a run reports, not what it computes: they may differ between segments.
BOOKKEEPING_KEYS = (
    "run_dir", "resume", "pipeline", "logger", "trainer.enable_progress_bar", "trainer.log_every_n_steps",
    "trainer.val_every_n_steps", "trainer.checkpoint_every_n_steps", "trainer.profiler", "optimized_metric",
    "variant", "mode",
)  # fmt: skip


class RunInterrupted(SystemExit):
    """The run stopped on SIGTERM or Ctrl-C with a checkpoint of its current step; the exit code
    is the shell's for the signal (143, 130), so a scheduler sees a failed job and can requeue."""


def current_overrides() -> list[str]:
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def run(cfg: DictConfig, overrides: list[str] | None = None) -> dict:
    """Run ``cfg.stage`` in ``cfg.run_dir`` (or, with ``pipeline=full``, every stage) and return
    its result dict (``objective`` is what an Optuna sweep minimises)."""
    keep_prompts_literal(cfg)
    validate_config(cfg)
    run_dir = Path(cfg.run_dir)
    overrides = current_overrides() if overrides is None else overrides
    if cfg.pipeline.name:
        from avatar.engine.pipeline import run_pipeline

        write_run_info(run_dir, cfg, overrides)
        return _recorded(run_dir, overrides, lambda: run_pipeline(cfg, overrides), pipeline=True)
    remove_temp_files(run_dir)
    resume = resolve_resume(cfg, run_dir)
    if resume is None and RunMode(cfg.mode) is not RunMode.train:
        resume = newest_checkpoint(run_dir / CHECKPOINT_DIR)  # export/evaluate: the run's newest state
    elif resume is None and not str(cfg.resume or "").strip() and newest_checkpoint(run_dir / CHECKPOINT_DIR):
        raise FileExistsError(
            f"{run_dir} already holds a run with checkpoints. Continue it with resume=auto, or give "
            "the new run its own directory (leave hydra.run.dir out): a fresh start here would "
            "overwrite its checkpoints."
        )
    changes = _check_unchanged(cfg, run_dir, overrides) if resume else {}
    resumed_from = {"checkpoint": str(resume[0]), "step": resume[1]} if resume else None
    info = write_run_info(run_dir, cfg, overrides, resumed_from=resumed_from, config_changes=changes)
    if resume:
        log.info("Resuming %s from %s (step %d)", run_dir, resume[0], resume[1])
    return _recorded(run_dir, overrides, lambda: _run_stage(cfg, run_dir, overrides, resume, info))


def _run_stage(cfg: DictConfig, run_dir: Path, overrides: list[str], resume, info: dict) -> dict:
    """The stage contract (avatar/stages/base.py): train (fit, or restore under ``mode=export``),
    then export, then evaluate; the runner writes their merged result to ``result.json``."""
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    warn_if_unfamiliar(cfg)  # guidance=mini: a prompt far from its vocabulary (avatar/guidance/vocabulary.py)
    module = build_stage(cfg)
    mode = RunMode(cfg.mode)
    if mode is not RunMode.train and module.trainable and resume is None:
        raise ValueError(
            f"mode={mode.value} re-exports a trained run from its checkpoint, and {run_dir} has none: "
            "give resume=last (or a checkpoint file) and hydra.run.dir=<the run's directory>."
        )
    if resume and not module.trainable:
        raise ValueError(
            f"resume={cfg.resume}: stage {cfg.stage.name!r} has no checkpoints to resume (it is not an optimisation)"
        )
    wandb_id = info.get("wandb_id")
    if cfg.logger.wandb.enabled and not wandb_id:
        from wandb.sdk.lib.runid import generate_id

        wandb_id = generate_id()
        update_segment(run_dir, wandb_id=wandb_id)
    loggers = build_loggers(
        cfg, run_dir, overrides, resume_step=resume[1] if resume else None, wandb_id=wandb_id,
        keep_logs=mode is not RunMode.train,
    )  # fmt: skip
    module.attach_loggers(loggers)
    status, trainer = "failed", None
    try:
        result: dict = {"steps": 0}  # optimisation steps (0: a stage that does not train)
        if module.trainable:
            trainer = build_trainer(cfg, run_dir, loggers, restore_only=mode is not RunMode.train, resume=resume)
            trainer.fit(module, ckpt_path=str(resume[0]) if resume else None)
            # Lightning hands the module back on the CPU after fit; export where it trained.
            module.to(trainer.strategy.root_device)
            clock = train_clock(trainer)
            result["steps"] = int(trainer.global_step)
            result["train_seconds"] = round(clock.seconds(), 1)  # every segment's optimisation
        module.eval()
        if mode is not RunMode.evaluate:
            result.update(module.export())
        result.update(module.evaluate())
        report_result(loggers, cfg, run_dir, result)  # results, media, table, artifact -> loggers
        status = "success"
    except BaseException as err:
        if trainer is not None and is_preemption(err):
            signal = next((c.signal for c in trainer.callbacks if isinstance(c, StopOnSigint)), None)
            update_segment(run_dir, stopped_at_step=int(trainer.global_step))
            raise RunInterrupted(INTERRUPT_EXIT_CODE.get(signal, 143)) from err
        raise
    finally:
        weights = loaded_weights(module)
        if weights:
            update_segment(run_dir, loaded_weights=weights)
        for logger in loggers:
            logger.finalize(status)
        if cfg.logger.wandb.enabled:
            import wandb

            wandb.finish(exit_code=0 if status == "success" else 1)
    if torch.cuda.is_available():  # the stage's peak, for the README's time-and-memory table
        result["cuda_peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    write_result(run_dir, result)
    log.info("Run finished in %s: %s", run_dir, result)
    return result


def write_result(run_dir: Path, result: dict) -> None:
    """``result.json``: the stage's export and evaluation, written once, when the run finishes."""
    atomic_write_text(run_dir / "result.json", json.dumps(result, indent=2, default=_plain))


def _plain(value):
    """JSON for the numpy and torch scalars/arrays a stage's metrics may hold."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"result value {value!r} ({type(value).__name__}) is not JSON")


def loaded_weights(module: torch.nn.Module) -> dict[str, dict]:
    """What weights files the stage really loaded (file, short hash, architecture), from every
    component that records them (``loaded_weights``), keyed by the component's name."""
    found = {}
    for name, component in [("stage", module), *vars(module).items(), *module.named_modules()]:
        record = getattr(component, "loaded_weights", None)
        if isinstance(record, dict) and record:
            found[name or "stage"] = record
    return found


def _recorded(run_dir: Path, overrides: list[str], body, pipeline: bool = False) -> dict:
    """Run ``body`` and record how the segment ended (and, on failure, the traceback)."""
    import time

    def ended(status: str, **fields) -> None:
        update_segment(run_dir, status=status, ended=time.strftime("%Y-%m-%dT%H:%M:%S%z"), **fields)

    try:
        result = body()
    except (RunInterrupted, KeyboardInterrupt):
        command = resume_command(overrides, run_dir, pipeline)
        ended("interrupted", resume_command=command)
        log.error(
            "Interrupted; a checkpoint of the current step is in %s/checkpoints. Resume with:\n  %s", run_dir, command
        )
        raise
    except BaseException as err:
        if isinstance(err, SystemExit) and err.code in (0, None):
            raise
        atomic_write_text(run_dir / "traceback.txt", "".join(traceback.format_exception(err)))
        ended("failed", error=f"{type(err).__name__}: {err}"[:2000])
        raise
    ended("finished")
    return result


def resume_command(overrides: list[str], run_dir: Path, pipeline: bool = False) -> str:
    kept = [o for o in overrides if not o.lstrip("+~").startswith(("resume=", "hydra.run.dir=", "run_dir="))]
    if not pipeline:
        kept.append("resume=auto")
    quoted = [f"'{o}'" if any(c in o for c in " ${}()[]'\"*?") else o for o in kept]
    return " ".join(["python train.py", *quoted, f"hydra.run.dir={run_dir}"])


def _check_unchanged(cfg: DictConfig, run_dir: Path, overrides: list[str]) -> dict:
    """A resumed segment must run the config the run started with. Keys that differ and are
    named in this segment's overrides are deliberate (returned, to be recorded); any other
    difference (an override forgotten on the resume command) is an error naming the keys."""
    from omegaconf import OmegaConf

    from avatar.engine.pipeline import config_differences

    before = previous_config(run_dir)
    if before is None:
        return {}
    now = OmegaConf.to_container(cfg, resolve=True)
    changed = [k for k in config_differences(before, now) if not k.startswith(BOOKKEEPING_KEYS)]
    # A value override names its key (and the keys below it); a group selection (stage=pose_fit)
    # names none: it selects defaults, it does not set them.
    named = {o.lstrip("+~").split("=", 1)[0] for o in overrides} - config_groups()
    # Keys the code added or removed since the run started are no one's forgotten override.
    code = {k for k in changed if _ABSENT in (_select(before, k, _ABSENT), _select(now, k, _ABSENT))}
    deliberate = {
        k: [_select(before, k), _select(now, k)]
        for k in changed
        if k in code or any(k == n or k.startswith(n + ".") for n in named)
    }
    forgotten = [k for k in changed if k not in deliberate]
    if forgotten:
        shown = {k: [_select(before, k), _select(now, k)] for k in forgotten[:8]}
        raise ValueError(
            f"Resuming {run_dir} with a config that differs from the one it ran with: {shown} "
            "([was, now]). Repeat the run's overrides (see its run_info.json or .hydra/overrides.yaml), "
            "or give the new values explicitly on the command line to change them on purpose "
            "(they are recorded in run_info.json), or start a new run directory."
        )
    if deliberate:
        log.warning("Resuming with deliberate config changes (recorded in run_info.json): %s", deliberate)
    return deliberate


def config_groups() -> set[str]:
    """The names of Hydra config groups (folders of conf/ and experiments/)."""
    from avatar.utils.paths import PROJECT_ROOT

    return {
        p.name
        for root in ("conf", "experiments")
        if (PROJECT_ROOT / root).is_dir()
        for p in (PROJECT_ROOT / root).iterdir()
        if p.is_dir()
    } | {"hydra/launcher", "hydra/sweeper"}


_ABSENT = object()


def _select(tree: dict, dotted: str, default=None):
    """The value at a dotted key of a plain config tree, or ``default`` where it is absent."""
    node = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node
