"""Hydra entry point shared by ``train.py`` and the ``avatar-train`` console script."""

from __future__ import annotations

import logging
import os

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


@hydra.main(version_base="1.3", config_path=str(PROJECT_ROOT / "conf"), config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Run the configured stage; return ``result[optimized_metric]`` (what an Optuna sweep
    optimises; None for a plain run of a stage that reports no ``objective``)."""
    from avatar.engine.runner import run  # heavy imports after Hydra has parsed the command line

    if not cfg.resume and os.environ.get(RESUME_ENV):
        cfg.resume = os.environ[RESUME_ENV]
        log.info("resume=%s (from the launcher preset's %s)", cfg.resume, RESUME_ENV)
    metric = str(cfg.get("optimized_metric") or sweeps.DEFAULT_METRIC)
    with sweeps.trial_record(cfg) as record:  # an Optuna trial <-> this run folder, both ways
        result = run(cfg)
        record["value"] = value = sweeps.optimized_value(result, metric, required=sweeps.metric_required(metric))
    return value
