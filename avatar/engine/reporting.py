"""What a finished run reports to its loggers, and the names that identify runs in a sweep.

``report_result(loggers, cfg, run_dir, result)`` is called once by the runner when a stage
finished, before the loggers are finalised:

* the result, flattened (``region_rgb: {torso: [r, g, b]}`` -> ``region_rgb/torso/r`` ...), goes
  into the W&B run summary (``objective`` included) and into TensorBoard's HParams view
  (``result/<key>`` metrics against the flattened resolved config as hyperparameters; the same
  parameters in the TensorBoard and CSV ``hparams.yaml``);
* W&B also gets the stage's media: its videos (``turntable.mp4``, ``timelapse.mp4``,
  ``animation.mp4``, ``motion.mp4``: every top-level video of the run folder), its exported mesh
  as a 3D object (``avatar.glb``, ``avatar_animated.glb``; a ``.ply``-only mesh is converted to
  glb), and a ``results`` table (prompts, preview image, numeric results); with
  ``logger.wandb.log_artifacts=true`` an artifact with the meshes, ``.npz``/``.bvh`` outputs,
  ``last.ckpt``, the resolved config and the result.

Sweep naming (``job_dirname``, ``sweep_label``): a multirun job folder and its W&B run are named
by the values the sweep *varies* (``0_lr=0.01,seed=1``), constants left out. The swept keys come
from the sweep's own record: ``multirun.yaml`` in the sweep folder (the original command line,
written by Hydra's basic sweeper before any job starts) and ``hydra.sweeper.params`` (sweeps
defined in an experiment or search config).
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

COLOR_WORDS = ("rgb", "color", "colour")
VIDEO_SUFFIXES = (".mp4", ".webm", ".gif")
# Per stem, the first of these a run folder holds is what W&B shows in 3D (ply is converted).
MESH_SUFFIXES = (".glb", ".gltf", ".obj", ".stl", ".ply")
MAX_MESHES = 4
# The stage's main picture, in this order; else any top-level png, else the newest in images/.
PREVIEW_IMAGES = ("avatar_preview.png", "animation.png", "motion.png", "poses.png", "shape.png", "showcase_grid.png")
ARTIFACT_SUFFIXES = (".ply", ".obj", ".glb", ".gltf", ".npz", ".bvh")
NOT_OUTPUTS = ("wandb", "tensorboard", "csv", "checkpoints", ".hydra")  # folders that are logs, not results


WANDB_METADATA_KEYS = 100  # wandb.Artifact's limit


# ------------------------------------------------------------------------------ flattening
def flatten_result(result: dict, sep: str = "/") -> dict[str, Any]:
    """A result dict as flat ``key/sub/leaf`` entries. Lists of three numbers under a key that
    names a colour (``rgb``, ``color``, ``colour``) become ``/r``, ``/g``, ``/b``; other lists are
    indexed ``/0``, ``/1``...; empty dicts and lists disappear."""
    flat: dict[str, Any] = {}

    def walk(value: Any, path: list[str]) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, [*path, str(key)])
        elif isinstance(value, (list, tuple)):
            is_color = (
                len(value) == 3
                and all(_is_number(v) for v in value)
                and any(word in part.lower() for part in path for word in COLOR_WORDS)
            )
            for name, item in zip("rgb" if is_color else range(len(value)), value):
                walk(item, [*path, str(name)])
        else:
            flat[sep.join(path)] = value

    walk(result, [])
    return flat


def numeric_values(flat: dict[str, Any]) -> dict[str, float]:
    """The numbers of a flat dict (bools as 0/1), for loggers that take scalars only."""
    return {k: float(v) for k, v in flat.items() if isinstance(v, (int, float))}


def flatten_config(cfg: DictConfig | dict) -> dict[str, Any]:
    """The resolved config as ``{"stage.lr": 0.01, ...}`` (Hydra's override names); lists are
    kept as one value (their text), as TensorBoard's HParams wants scalars."""
    tree = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else cfg
    flat: dict[str, Any] = {}

    def walk(value: Any, path: list[str]) -> None:
        if isinstance(value, dict) and value:
            for key, item in value.items():
                walk(item, [*path, str(key)])
        elif isinstance(value, (bool, int, float, str)):
            flat[".".join(path)] = value
        else:
            flat[".".join(path)] = str(value)

    walk(tree, [])
    return flat


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# ------------------------------------------------------------------------------ reporting
def report_result(loggers: Iterable, cfg: DictConfig, run_dir: str | Path, result: dict) -> None:
    """Send a finished stage's result, config and outputs to every logger (see module doc)."""
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger
    from lightning.pytorch.utilities import rank_zero_only

    if getattr(rank_zero_only, "rank", 0) != 0:  # one report per run (other ranks hold no real loggers)
        return
    run_dir = Path(run_dir)
    flat = flatten_result(result)
    numbers = numeric_values(flat)
    params = flatten_config(cfg)
    step = int(result["steps"]) if _is_number(result.get("steps")) else _final_step(cfg, run_dir)
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            _report_tensorboard(logger, params, numbers, step)
        elif isinstance(logger, CSVLogger):
            logger.log_hyperparams(params)  # csv/hparams.yaml
        elif isinstance(logger, WandbLogger):
            _report_wandb(logger, cfg, run_dir, result, flat, numbers)


def _final_step(cfg: DictConfig, run_dir: Path) -> int:
    """The step the result belongs to: an optimisation (it has checkpoints) ends at max_steps."""
    return int(cfg.trainer.max_steps) if (run_dir / "checkpoints" / "last.ckpt").is_file() else 0


def _report_tensorboard(logger, params: dict, numbers: dict, step: int) -> None:
    """HParams view: one session with the config as hyperparameters and ``result/<key>`` metrics
    (logged as scalars too). ``hparams.yaml`` is rewritten with the parameters (Lightning writes
    it once, empty, when the fit ends, and never again)."""
    metrics = {f"result/{k}": v for k, v in numbers.items() if math.isfinite(v)} or None
    logger.log_hyperparams(params, metrics=metrics, step=step)
    logger.experiment.flush()
    Path(logger.log_dir, logger.NAME_HPARAMS_FILE).unlink(missing_ok=True)
    logger.save()


def _report_wandb(logger, cfg: DictConfig, run_dir: Path, result: dict, flat: dict, numbers: dict) -> None:
    import wandb

    run = logger.experiment
    run.summary.update({k: v for k, v in flat.items() if v is not None})
    media: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:  # meshes converted to glb live here until logged
        for path in videos(run_dir):
            _add(media, f"media/{path.stem}", lambda p=path: wandb.Video(str(p), format=p.suffix[1:]))
        for path in meshes(run_dir):
            _add(media, f"media/{path.stem}_3d", lambda p=path: wandb.Object3D(str(_as_glb(p, Path(tmp)))))
        preview = preview_image(run_dir)
        _add(media, "results", lambda: _results_table(cfg, run_dir, preview, numbers))
        if media:
            run.log(media)
    if cfg.logger.wandb.get("log_artifacts", False):
        _log_artifact(run, cfg, run_dir, result, numbers)


def _add(media: dict, key: str, make) -> None:
    """Media are best effort: a file W&B cannot read is a warning, not a failed run."""
    try:
        media[key] = make()
    except Exception as err:  # noqa: BLE001 - any reader error of any media type
        log.warning("W&B: could not log %s: %s: %s", key, type(err).__name__, err)


def _results_table(cfg: DictConfig, run_dir: Path, preview: Path | None, numbers: dict):
    import wandb

    prompts = OmegaConf.to_container(cfg.prompt, resolve=True) if "prompt" in cfg else {}
    columns = ["run", *(f"prompt_{k}" for k in prompts), "preview", *numbers]
    row = [run_dir.name, *map(str, prompts.values()), wandb.Image(str(preview)) if preview else None, *numbers.values()]
    return wandb.Table(columns=columns, data=[row])


def _log_artifact(run, cfg: DictConfig, run_dir: Path, result: dict, numbers: dict) -> None:
    import json

    import wandb

    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{cfg.stage.name}-{run.id}")
    # W&B takes at most 100 metadata keys: the top-level numbers first, nested ones while room is
    # left (a region-by-region report has hundreds); the whole result is the artifact's result.json.
    ordered = sorted(numbers, key=lambda key: "/" in key)
    metadata = {"run_dir": str(run_dir), **{key: numbers[key] for key in ordered[: WANDB_METADATA_KEYS - 1]}}
    artifact = wandb.Artifact(name, type=str(cfg.stage.name), metadata=metadata)
    for path in artifact_files(run_dir):
        artifact.add_file(str(path), name=path.relative_to(run_dir).as_posix())
    with artifact.new_file("result.json") as file:
        file.write(json.dumps(result, indent=2, default=str))
    run.log_artifact(artifact)


# ------------------------------------------------------------------------------ run folder
def videos(run_dir: Path) -> list[Path]:
    return sorted(p for p in run_dir.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)


def meshes(run_dir: Path) -> list[Path]:
    """One file per exported mesh (by stem) in the best format W&B shows in 3D."""
    best: dict[str, Path] = {}
    for path in sorted(run_dir.iterdir()):
        if path.is_file() and path.suffix.lower() in MESH_SUFFIXES:
            kept = best.get(path.stem)
            if kept is None or MESH_SUFFIXES.index(path.suffix.lower()) < MESH_SUFFIXES.index(kept.suffix.lower()):
                best[path.stem] = path
    return list(best.values())[:MAX_MESHES]


def _as_glb(path: Path, folder: Path) -> Path:
    if path.suffix.lower() != ".ply":
        return path
    import trimesh

    target = folder / f"{path.stem}.glb"
    trimesh.load(path, force="mesh").export(target)
    return target


def preview_image(run_dir: Path) -> Path | None:
    for name in PREVIEW_IMAGES:
        if (run_dir / name).is_file():
            return run_dir / name
    pngs = sorted(run_dir.glob("*.png")) or sorted((run_dir / "images").glob("*.png"))
    return pngs[-1] if pngs else None


def artifact_files(run_dir: Path) -> list[Path]:
    """Meshes and npz/bvh outputs (any depth, logs left out), ``checkpoints/last.ckpt`` and the
    resolved config."""
    files = [
        p for p in sorted(run_dir.rglob("*"))
        if p.is_file() and p.suffix.lower() in ARTIFACT_SUFFIXES
        and p.relative_to(run_dir).parts[0] not in NOT_OUTPUTS
    ]  # fmt: skip
    files += [p for p in (run_dir / "checkpoints" / "last.ckpt", run_dir / "config_resolved.yaml") if p.is_file()]
    return files


# ------------------------------------------------------------------------------ sweep naming
SWEEP_RECORD = "multirun.yaml"
MAX_LABEL = 120  # characters of a folder name; longer labels are cut and end in a hash


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def swept_keys(hydra_cfg: DictConfig) -> set[str] | None:
    """The config keys a multirun varies, or None when the sweep left no record of them.

    Read from the sweep folder's ``multirun.yaml`` (the original command line, sweep syntax
    included), else from this process's command line (a sweeper that writes no record runs its
    jobs in-process with the basic launcher), plus ``hydra.sweeper.params``."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()

    def sweeps(overrides: Iterable[str]) -> set[str]:
        found = set()
        for text in overrides:
            try:
                (override,) = parser.parse_overrides([str(text)])
            except Exception:  # noqa: BLE001 - not an override (a launcher's own argument)
                continue
            if override.is_sweep_override():
                found.add(_key(str(text)))
        return found

    keys: set[str] = set()
    known = False
    params = OmegaConf.select(hydra_cfg, "sweeper.params", default=None)
    if params:
        known = True
        for key, value in params.items():  # sweep syntax, or a sweeper's own (varies unless parsed constant)
            try:
                (override,) = parser.parse_overrides([f"{key}={value}"])
                varies = override.is_sweep_override()
            except Exception:  # noqa: BLE001
                varies = True
            if varies:
                keys.add(_key(str(key)))
    record = Path(str(OmegaConf.select(hydra_cfg, "sweep.dir", default=""))) / SWEEP_RECORD
    if record.is_file():
        known = True
        keys |= sweeps(OmegaConf.select(OmegaConf.load(record), "hydra.overrides.task", default=None) or [])
    else:
        command_line = sweeps(a for a in sys.argv[1:] if "=" in a and not a.startswith("-"))
        known = known or bool(command_line)
        keys |= command_line
    return keys if known else None


def sweep_label(overrides: Iterable[str], keys: set[str] | None, exclude: Iterable[str] = ()) -> str:
    """``lr=0.01,seed=1`` from a job's overrides: the swept keys only (all overrides when
    ``keys`` is None), in the job's order, each by its last dotted name unless two swept keys
    share it (then in full); Hydra's own keys and ``exclude`` left out."""
    excluded = {_key(k) for k in exclude}
    items = []
    for text in overrides:
        if "=" not in str(text):
            continue
        key, value = str(text).split("=", 1)
        name = _key(key)
        if name.startswith("hydra") or name in excluded or (keys is not None and name not in keys):
            continue
        items.append((name, value))
    short = [name.rsplit(".", 1)[-1] for name, _ in items]
    names = [s if short.count(s) == 1 else name for s, (name, _) in zip(short, items)]
    return ",".join(f"{n}={v}" for n, (_, v) in zip(names, items))


def path_safe(text: str, limit: int = MAX_LABEL) -> str:
    """Text a folder name can hold; a longer one is cut and ends in a hash of the whole, so it
    stays unique and the same for the same values."""
    safe = re.sub(r"[^A-Za-z0-9_.,=+-]+", "-", text)
    if len(safe) > limit:
        digest = hashlib.sha1(text.encode()).hexdigest()[:8]
        safe = f"{safe[: limit - 9]}-{digest}"
    return safe


def job_label(hydra_cfg: DictConfig) -> str:
    """What this multirun job varies (see ``sweep_label``), from its Hydra config."""
    exclude = OmegaConf.select(hydra_cfg, "job.config.override_dirname.exclude_keys", default=None) or []
    overrides = OmegaConf.select(hydra_cfg, "overrides.task", default=None) or []
    return sweep_label(list(overrides), swept_keys(hydra_cfg), list(exclude))


def job_dirname(hydra_cfg: DictConfig, num: Any) -> str:
    """A multirun job's folder: ``<job number>_<swept values>`` (``0_lr=0.01,seed=1``), the number
    alone when the job varies nothing."""
    label = path_safe(job_label(hydra_cfg))
    return f"{num}_{label}" if label else str(num)
