"""Hydra entry point shared by ``train.py`` and the ``avatar-train`` console script."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

from avatar.config import register_configs
from avatar.engine import sweeps
from avatar.utils.paths import PROJECT_ROOT

register_configs()
sweeps.register_resolvers()  # ${avatar.sampler_seed:...} in conf/hparams_search/

log = logging.getLogger(__name__)

# A launcher preset's default for `resume` (set through hydra.job.env_set, see
# conf/hydra/launcher/slurm_gpu.yaml: a launcher config cannot set a top-level key, since Hydra
# composes hydra/* before the primary config). An explicit resume=... on the command line wins.
RESUME_ENV = "AVATAR_RESUME"


# Config options renamed, still accepted for old command lines: group -> {old: new}.
RENAMED_OPTIONS = {"preset": {"cpu": "tiny"}}


def warn_deprecated_choices() -> None:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    choices = HydraConfig.get().runtime.choices
    for group, renamed in RENAMED_OPTIONS.items():
        if choices.get(group) in renamed:
            log.warning(
                "%s=%s is now %s=%s (a preset sets sizes, not the device: trainer=cpu|gpu chooses the device); "
                "the old name still works for now.", group, choices[group], group, renamed[choices[group]],
            )  # fmt: skip


@hydra.main(version_base="1.3", config_path=str(PROJECT_ROOT / "conf"), config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Run the configured stage; return ``result[optimized_metric]`` (what an Optuna sweep
    optimises; None for a plain run of a stage that reports no ``objective``)."""
    from avatar.engine.runner import run  # heavy imports after Hydra has parsed the command line

    warn_deprecated_choices()
    if not cfg.resume and os.environ.get(RESUME_ENV):
        cfg.resume = os.environ[RESUME_ENV]
        log.info("resume=%s (from the launcher preset's %s)", cfg.resume, RESUME_ENV)
    metric = str(cfg.get("optimized_metric") or sweeps.DEFAULT_METRIC)
    with sweeps.trial_record(cfg) as record:  # an Optuna trial <-> this run folder, both ways
        result = run(cfg)
        record["value"] = value = sweeps.optimized_value(result, metric, required=sweeps.metric_required(metric))
    return value


# ---- avatar-export: re-export (or re-evaluate) a run from its checkpoint -----------------------
_RUN_KEYS = ("resume=", "mode=", "hydra.run.dir=", "run_dir=")


def export_overrides(run_dir: Path, checkpoint: str = "last", mode: str = "export", extra: list[str] = ()) -> list[str]:
    """The command line that re-exports the run in ``run_dir``: the overrides its last segment
    ran with (run_info.json), then ``mode``, ``resume`` and the run directory; ``extra``
    overrides are deliberate changes (recorded as such)."""
    from avatar.engine.run_info import read_run_info

    run_dir = Path(run_dir).resolve()
    info = read_run_info(run_dir) if (run_dir / "run_info.json").is_file() else None
    if not info or not info.get("segments"):
        raise FileNotFoundError(
            f"{run_dir} holds no run_info.json: give the folder of a run made by train.py (a stage's own "
            "folder inside a pipeline run, e.g. <run>/appearance)."
        )
    from avatar.engine.checkpoints import CHECKPOINT_DIR, newest_checkpoint

    overrides = [o for o in info["segments"][-1].get("overrides", []) if not o.lstrip("+~").startswith(_RUN_KEYS)]
    # A stage that does not train has no checkpoints: its export runs again from its inputs.
    trained = checkpoint != "last" or newest_checkpoint(run_dir / CHECKPOINT_DIR) is not None
    resume = [f"resume={checkpoint}"] if trained else []
    return [*overrides, *extra, f"mode={mode}", *resume, f"hydra.run.dir={run_dir}"]


def export_main(argv: list[str] | None = None) -> None:
    """``avatar-export <run dir>``: rewrite a finished or interrupted run's outputs (meshes,
    videos, result.json) from its newest (or a given) checkpoint, without training."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(
        prog="avatar-export",
        description="Re-export a run from its checkpoint: python train.py <its overrides> mode=export "
        "resume=<checkpoint> hydra.run.dir=<run>. Stages without checkpoints re-run their export.",
    )
    parser.add_argument("run_dir", type=Path, help="the run's folder (a stage folder inside a pipeline run)")
    parser.add_argument("--checkpoint", default="last", help="last (default) or a checkpoint file")
    parser.add_argument("--evaluate-only", action="store_true", help="only evaluate: result.json, no files rewritten")
    parser.add_argument("overrides", nargs="*", help="deliberate config changes, e.g. stage.export_resolution=256")
    args = parser.parse_args(argv)
    mode = "evaluate" if args.evaluate_only else "export"
    sys.argv = ["avatar-export", *export_overrides(args.run_dir, args.checkpoint, mode, args.overrides)]
    main()
