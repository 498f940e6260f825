"""What a sweep needs from a run: the metric it optimises, and a link between an Optuna trial and
the run directory that computed it.

* ``optimized_value(result, metric)``: the number ``train.py``'s ``main()`` returns to the sweeper,
  read from the run's result dict by ``optimized_metric`` (nested results are flattened with "/").
* Trial <-> run link, both ways, for ``hparams_search=optuna``:

  - the sweeper calls ``link_trial_to_job`` (its ``custom_search_space`` hook) for every trial it
    asks, in launch order, so the n-th call is job ``hydra.job.num == n``: the trial's user attrs
    get ``job_num`` and ``sweep_dir`` and the sweep folder's ``optuna_trials.jsonl`` gets a line
    (trial number and id, job number, study, storage, params);
  - the job, when it ends (finished or failed), writes ``optuna_trial.json`` into its run folder
    (study, storage, trial number, value or error), sets the trial's ``run_dir`` user attr (in the
    sweeper's process, i.e. the basic launcher, with any storage; from other processes through a
    shared storage such as sqlite) and rewrites the sweep folder's ``trials.csv`` index
    (trial, job, run folder, status, value).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import logging
import math
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

DEFAULT_METRIC = "objective"
TRIAL_REGISTRY = "optuna_trials.jsonl"  # sweep folder: one line per trial the sweeper asked
TRIAL_INDEX = "trials.csv"  # sweep folder: trial -> job folder, status, value
RUN_TRIAL_FILE = "optuna_trial.json"  # run folder: which trial of which study it computed

# Trials asked by the sweeper in this process, by (sweep dir, job number): a job launched in the
# same process (basic launcher) sets its run folder on the live trial, whatever the storage.
_LIVE_TRIALS: dict[tuple[str, int], Any] = {}
_JOB_COUNTERS: dict[tuple[int, str], Iterator[int]] = {}


# ---------------------------------------------------------------------------- the metric
def flatten_result(result: dict) -> dict[str, Any]:
    """A nested result as flat "/" keys, the names the loggers use (``region_rgb: {torso: [r, g,
    b]}`` -> ``region_rgb/torso/r`` ...; avatar/engine/reporting.py: flatten_result)."""
    try:
        from avatar.engine.reporting import flatten_result as flatten

        return flatten(result)
    except ImportError:  # pragma: no cover - reporting.py is the one place that names them
        pass
    flat: dict[str, Any] = {}
    for key, value in result.items():
        if isinstance(value, dict):
            flat.update({f"{key}/{k}": v for k, v in flatten_result(value).items()})
        else:
            flat[str(key)] = value
    return flat


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def optimized_value(result: dict, metric: str = DEFAULT_METRIC, required: bool = True) -> float | None:
    """The value of ``metric`` in a run's result dict (nested keys joined with "/").

    A missing, non-numeric or non-finite value is an error naming the metric and the numeric
    keys the result has (so a sweep records the trial as failed, with that message) when
    ``required``; otherwise it gives None."""
    flat = flatten_result(result)
    value = flat.get(metric)
    if value is None and "." in metric:  # "region_rgb.torso.r" spelled the OmegaConf way
        value = flat.get(metric.replace(".", "/"))
    problem = None
    if value is None:
        numeric = sorted(k for k, v in flat.items() if _is_number(v))
        problem = KeyError(
            f"optimized_metric={metric!r} is not in the run's result; its numeric keys are {numeric}. "
            "Choose one with optimized_metric=<key> (nested keys joined with '/')."
        )
    elif not _is_number(value):
        problem = TypeError(f"optimized_metric={metric!r} is {value!r}, not a number")
    elif not math.isfinite(float(value)):
        problem = ValueError(f"optimized_metric={metric!r} is {value} (the run diverged)")
    if problem is not None:
        if required:
            raise problem
        return None
    return float(value)


def optuna_sweep_active() -> bool:
    """Whether this job runs under the Optuna sweeper (which consumes main()'s return value)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return False
    target = OmegaConf.select(HydraConfig.get(), "sweeper._target_", default="") or ""
    return "optuna" in str(target).lower() and _is_multirun()


def _is_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def metric_required(metric: str) -> bool:
    """A missing metric fails the run when a sweeper optimises it, or when one was chosen
    explicitly; a plain run of a stage without an ``objective`` (the showcase) returns None."""
    return metric != DEFAULT_METRIC or optuna_sweep_active()


# ---------------------------------------------------------------------------- sampler seed
def sampler_seed(seed: Any, storage: Any = None) -> int | None:
    """The Optuna sampler's seed (``hydra.sweeper.sampler.seed`` in conf/hparams_search/).

    * No storage (one sweeper process, the study in memory): the run's ``seed``, so the study
      replays exactly.
    * A shared storage (sqlite/RDB URL: several workers add trials to one study): None, i.e.
      fresh OS entropy per worker. With one fixed seed every worker would propose the same
      parameters (TPE starts with seeded random trials), wasting the workers on duplicates.
      To replay one worker, give it ``hydra.sweeper.sampler.seed=<n>`` explicitly.
    """
    if storage in (None, "", "null"):
        return None if seed is None else int(seed)
    return None


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("avatar.sampler_seed"):
        OmegaConf.register_new_resolver("avatar.sampler_seed", sampler_seed)


# ---------------------------------------------------------------------------- trial <-> run
def _storage_url(storage: Any) -> str | None:
    return None if storage in (None, "") else str(storage)


def link_trial_to_job(config: DictConfig, trial) -> None:
    """The Optuna sweeper's ``custom_search_space`` hook (called once per asked trial, in the
    order the trials are launched): records which job number the trial runs as.

    To add a search space of your own (conditional parameters), write a hook that calls this one
    and name it in ``hydra.sweeper.custom_search_space``."""
    sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()
    counter = _JOB_COUNTERS.setdefault((id(config), str(sweep_dir)), itertools.count())
    job_num = next(counter)
    trial.set_user_attr("job_num", job_num)
    trial.set_user_attr("sweep_dir", str(sweep_dir))
    _LIVE_TRIALS[(str(sweep_dir), job_num)] = trial
    entry = {
        "trial": trial.number,
        "trial_id": trial._trial_id,
        "job_num": job_num,
        "study": trial.study.study_name,
        "storage": _storage_url(OmegaConf.select(config, "hydra.sweeper.storage")),
        "params": dict(trial.params),
    }
    sweep_dir.mkdir(parents=True, exist_ok=True)
    with open(sweep_dir / TRIAL_REGISTRY, "a") as f:
        f.write(json.dumps(entry, default=str) + "\n")


def read_registry(sweep_dir: Path) -> list[dict]:
    path = Path(sweep_dir) / TRIAL_REGISTRY
    if not path.is_file():
        return []
    entries = []
    for line in path.read_text().splitlines():
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:  # a line being written by the sweeper right now
            continue
    return entries


@contextmanager
def trial_record(cfg: DictConfig) -> Iterator[dict]:
    """Around a job of an Optuna sweep: on the way out (finished or failed) link the run folder
    and the trial both ways. The caller may put ``value`` into the yielded dict. Outside an
    Optuna sweep it does nothing. Linking is best effort: it never fails the run."""
    record: dict = {}
    try:
        yield record
    except BaseException as err:
        record["error"] = f"{type(err).__name__}: {err}"[:500]
        raise
    finally:
        try:
            _link(cfg, record)
        except Exception as err:  # noqa: BLE001  (a link is bookkeeping, never worth a failed run)
            log.warning("Could not link the Optuna trial to %s: %s", cfg.get("run_dir"), err)


def _link(cfg: DictConfig, record: dict) -> None:
    from hydra.core.hydra_config import HydraConfig

    if not _is_multirun():
        return
    hc = HydraConfig.get()
    job_num = int(hc.job.num)
    run_dir = Path(str(cfg.run_dir)).absolute()
    sweep_dir = Path(str(hc.sweep.dir)).absolute()
    if not (sweep_dir / TRIAL_REGISTRY).is_file():  # the sweep folder is the run's parent, normally
        sweep_dir = next((p for p in run_dir.parents if (p / TRIAL_REGISTRY).is_file()), sweep_dir)
    entry = next((e for e in reversed(read_registry(sweep_dir)) if e.get("job_num") == job_num), None)
    if entry is None:
        return  # not an Optuna sweep (or one that does not use the hook)
    from avatar.engine.run_info import run_status
    from avatar.utils.io import atomic_write_text

    info = {
        "study": entry["study"],
        "storage": entry["storage"],
        "trial": entry["trial"],
        "job_num": job_num,
        "sweep_dir": str(sweep_dir),
        "params": entry.get("params", {}),
        "optimized_metric": str(cfg.get("optimized_metric", DEFAULT_METRIC)),
        "value": record.get("value"),
        "status": run_status(run_dir),
    }
    if record.get("error"):
        info["error"] = record["error"]
    atomic_write_text(run_dir / RUN_TRIAL_FILE, json.dumps(info, indent=2, default=str))
    _set_trial_run_dir(sweep_dir, job_num, entry, run_dir)
    write_trial_index(sweep_dir)


def _set_trial_run_dir(sweep_dir: Path, job_num: int, entry: dict, run_dir: Path) -> None:
    trial = _LIVE_TRIALS.pop((str(sweep_dir), job_num), None)
    if trial is not None:  # launched in the sweeper's own process
        trial.set_user_attr("run_dir", str(run_dir))
        return
    if entry.get("storage"):  # another process: reach the trial through the shared storage
        import optuna

        optuna.storages.get_storage(entry["storage"]).set_trial_user_attr(entry["trial_id"], "run_dir", str(run_dir))
    # in-memory storage in another process: the trial's job_num/sweep_dir attrs are the link


def write_trial_index(sweep_dir: Path) -> Path:
    """``trials.csv``: every trial this sweep folder's sweeper asked, in order, with its job
    folder, the run's status and the optimised value (empty while a trial runs)."""
    from avatar.utils.io import atomic_write_text

    sweep_dir = Path(sweep_dir)
    runs = {}
    for path in sweep_dir.glob(f"*/{RUN_TRIAL_FILE}"):
        try:
            info = json.loads(path.read_text())
            runs[info["job_num"]] = (path.parent, info)
        except (json.JSONDecodeError, KeyError):
            continue
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["trial", "job_num", "run", "status", "value", "params"])
    for entry in read_registry(sweep_dir):
        folder, info = runs.get(entry["job_num"], (None, {}))
        writer.writerow([
            entry["trial"], entry["job_num"], folder.name if folder else "", info.get("status", "running"),
            "" if info.get("value") is None else info["value"], json.dumps(entry.get("params", {}), default=str),
        ])  # fmt: skip
    atomic_write_text(sweep_dir / TRIAL_INDEX, out.getvalue())
    return sweep_dir / TRIAL_INDEX


__all__ = [
    "flatten_result", "optimized_value", "metric_required", "optuna_sweep_active", "sampler_seed",
    "register_resolvers", "link_trial_to_job", "trial_record", "write_trial_index", "read_registry",
]  # fmt: skip
