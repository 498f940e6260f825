#!/usr/bin/env python
"""Turn a multirun (or any set of run directories) into a comparison table and plots.

    python experiments/analysis/compare_runs.py multirun/<experiment>/<date>_<id>
    python experiments/analysis/compare_runs.py RUN_DIR [RUN_DIR ...] --metrics train/loss metrics/joint_error_mm

For each run (a folder holding ``.hydra/overrides.yaml``) it reads the overrides, ``result.json``
and the CSV logger's ``csv/metrics.csv``, and writes into the first argument's folder:

* ``comparison.csv`` / ``comparison.md``: one row per run: its overrides, its result values and
  the last logged value of every metric, sorted by ``objective`` when present;
* ``summary.md``: runs that differ only by ``seed`` grouped into mean +- std;
* ``curves_<metric>.png``: each chosen metric against the global step, one line per run.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pandas as pd
import yaml


def find_runs(paths: list[Path]) -> list[Path]:
    runs = []
    for path in paths:
        candidates = [path] if (path / ".hydra" / "overrides.yaml").is_file() else []
        candidates += sorted(p.parent.parent for p in path.glob("*/.hydra/overrides.yaml"))
        runs += candidates
    return sorted(set(runs))


def parse_overrides(run: Path) -> dict[str, str]:
    overrides = yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text()) or []
    parsed = {}
    for item in overrides:
        key, _, value = item.lstrip("+~").partition("=")
        if not key.startswith("hydra"):
            parsed[key] = value
    return parsed


def run_status(run: Path) -> str:
    """finished | failed | interrupted | running, from the run's segments in run_info.json."""
    info_file = run / "run_info.json"
    segments = json.loads(info_file.read_text()).get("segments", []) if info_file.is_file() else []
    if segments:
        return segments[-1].get("status", "unknown")
    return "finished" if (run / "result.json").is_file() else "unknown"


def read_metrics(run: Path) -> pd.DataFrame | None:
    path = run / "csv" / "metrics.csv"
    return pd.read_csv(path) if path.is_file() else None


def last_values(metrics: pd.DataFrame) -> dict[str, float]:
    """The last logged (non-empty) value of every column but the counters."""
    out = {}
    for column in metrics.columns:
        if column in ("epoch", "step"):
            continue
        values = metrics[column].dropna()
        if len(values):
            out[column] = float(values.iloc[-1])
    return out


def collect(runs: list[Path]) -> pd.DataFrame:
    rows = []
    for run in runs:
        row: dict[str, object] = {"run": run.name}
        row.update(parse_overrides(run))
        row["status"] = run_status(run)
        result_file = run / "result.json"
        if result_file.is_file() and row["status"] in ("finished", "unknown"):
            result = json.loads(result_file.read_text())
            row.update({k: v for k, v in result.items() if isinstance(v, (int, float))})
        metrics = read_metrics(run)
        if metrics is not None:
            row.update({f"last:{k}": v for k, v in last_values(metrics).items()})
        rows.append(row)
    table = pd.DataFrame(rows)
    if "objective" in table:
        table = table.sort_values("objective", kind="stable")
    return table.reset_index(drop=True)


def seed_summary(table: pd.DataFrame, override_keys: list[str]) -> pd.DataFrame | None:
    """Mean and std over seeds of every numeric column, per setting of the other overrides."""
    keys = [k for k in override_keys if k != "seed"]
    numeric = [c for c in table.columns if pd.api.types.is_numeric_dtype(table[c])]
    if "seed" not in table or not numeric:
        return None
    if not keys:
        table = table.assign(setting="all")
        keys = ["setting"]
    grouped = table.groupby(keys, dropna=False)[numeric]
    summary = grouped.mean().add_suffix(" (mean)").join(grouped.std().add_suffix(" (std)"))
    summary["seeds"] = grouped.size()
    return summary.reset_index()


def plot_curves(runs: list[Path], metric: str, out_path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    drawn = 0
    for run in runs:
        metrics = read_metrics(run)
        if metrics is None or metric not in metrics:
            continue
        series = metrics[["step", metric]].dropna()
        label = ",".join(f"{k}={v}" for k, v in parse_overrides(run).items()) or run.name
        ax.plot(series["step"], series[metric], label=label)
        drawn += 1
    if drawn:
        ax.set_xlabel("global step")
        ax.set_ylabel(metric)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out_path, dpi=120)
    plt.close(fig)
    return bool(drawn)


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path, help="a multirun folder or run folders")
    parser.add_argument("--metrics", nargs="*", default=["train/loss"], help="metrics to plot against the step")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: the first path)")
    args = parser.parse_args(argv)

    runs = find_runs(args.paths)
    if not runs:
        raise SystemExit(f"No runs (folders with .hydra/overrides.yaml) under {', '.join(map(str, args.paths))}")
    out = args.out or args.paths[0]
    out.mkdir(parents=True, exist_ok=True)
    table = collect(runs)
    table.to_csv(out / "comparison.csv", index=False)
    (out / "comparison.md").write_text(table.to_markdown(index=False, floatfmt=".4g"))
    override_keys = sorted({k for run in runs for k in parse_overrides(run)})
    summary = seed_summary(table, override_keys)
    if summary is not None:
        (out / "summary.md").write_text(summary.to_markdown(index=False, floatfmt=".4g"))
    for metric in args.metrics:
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", metric)
        plot_curves(runs, metric, out / f"curves_{safe}.png")
    print(table.to_markdown(index=False, floatfmt=".4g"))
    return table


if __name__ == "__main__":
    main()
