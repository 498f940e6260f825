#!/usr/bin/env python
"""Turn a multirun (or any set of run directories) into a report a researcher can paste.

    python experiments/analysis/compare_runs.py multirun/<experiment>/<date>_<id>
    python experiments/analysis/compare_runs.py RUN_DIR [RUN_DIR ...] --metrics train/loss metrics/joint_error_mm
    python experiments/analysis/compare_runs.py SWEEP --sort objective     # best first

For each run (a folder holding ``.hydra/overrides.yaml``) it reads the overrides, the status
(``run_info.json``: finished / failed / interrupted), ``result.json`` (nested results flattened:
``region_rgb/torso/r``), the Optuna trial (``optuna_trial.json``) and the CSV logger's
``csv/metrics.csv``, and writes into the first argument's folder (or ``--out``):

* ``report.md``: the constant overrides once in a header, a table of the runs (the overrides
  that vary, status, results), the seed summary, the best run, failures, and the montage and
  curve images linked;
* ``comparison.csv``: every column (constant overrides and last logged metrics included);
  ``comparison.md``: the report's table;
* ``summary.md``: runs that differ only by ``seed`` grouped into mean and std, or a statement
  that the seed changes nothing when every setting's runs agree exactly;
* ``montage.png``: each run's preview image (``avatar_preview.png`` or the stage's main picture,
  else its newest ``images/*.png``) labelled with the values it varies;
* ``curves_<metric>.png``: each chosen metric against the global step, one line per run.

Runs are listed in the sweep's own order (job number); ``--sort KEY`` sorts by a column.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path

import pandas as pd
import yaml

from avatar.engine.run_info import read_run_info, run_status

# The stage's main picture, in this order (what the stages save: grep -rn save_image avatar/stages)
PREVIEW_IMAGES = ("avatar_preview.png", "animation.png", "motion.png", "poses.png", "shape.png", "showcase_grid.png")
# Result columns that differ between identical runs (wall clock, memory): not evidence that the
# seed matters.
NONDETERMINISTIC = re.compile(r"(seconds|time|duration|peak|_gib$|_mb$|per_s$|speed)", re.IGNORECASE)
ID_COLUMNS = ("job", "run", "trial", "status")


# ------------------------------------------------------------------------------ reading runs
def job_number(run: Path) -> float:
    match = re.match(r"(\d+)(_|$)", run.name)
    return int(match.group(1)) if match else math.inf


def find_runs(paths: list[Path]) -> list[Path]:
    """Run folders under each path, in the sweep's order (job number, then name)."""
    runs: list[Path] = []
    for path in paths:
        candidates = [path] if (path / ".hydra" / "overrides.yaml").is_file() else []
        candidates += [p.parent.parent for p in path.glob("*/.hydra/overrides.yaml")]
        runs += [r for r in sorted(candidates, key=lambda r: (job_number(r), r.name)) if r not in runs]
    return runs


def parse_overrides(run: Path) -> dict[str, str]:
    overrides = yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text()) or []
    parsed = {}
    for item in overrides:
        key, _, value = item.lstrip("+~").partition("=")
        if not key.startswith("hydra"):
            # one spelling of a bool: a sweep records `False`, a command line may say `false`
            parsed[key] = value.capitalize() if value.lower() in ("true", "false") else value
    return parsed


def run_error(run: Path) -> str:
    segments = read_run_info(run).get("segments", [])
    return str(segments[-1].get("error", "")) if segments else ""


def flatten(result: dict, prefix: str = "") -> dict[str, object]:
    """Nested results as "/" keys (``region_rgb/torso/r``), the names the loggers use."""
    try:
        from avatar.engine.sweeps import flatten_result

        return flatten_result(result)
    except ImportError:  # the script run outside the project's environment
        flat: dict[str, object] = {}
        for key, value in result.items():
            if isinstance(value, dict):
                flat.update(flatten(value, f"{prefix}{key}/"))
            else:
                flat[f"{prefix}{key}"] = value
        return flat


def is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


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


def preview_image(run: Path) -> Path | None:
    for name in PREVIEW_IMAGES:
        if (run / name).is_file():
            return run / name
    pngs = sorted(run.glob("*.png")) or sorted((run / "images").glob("*.png"))
    return pngs[-1] if pngs else None


def collect(runs: list[Path]) -> pd.DataFrame:
    """One row per run, in the given order: job, run, trial, overrides, status, results (flat,
    numeric) and ``last:<metric>`` values."""
    rows = []
    for run in runs:
        job = job_number(run)
        row: dict[str, object] = {"job": int(job) if job != math.inf else None, "run": run.name}
        trial_file = run / "optuna_trial.json"
        if trial_file.is_file():
            row["trial"] = json.loads(trial_file.read_text()).get("trial")
        row.update(parse_overrides(run))
        row["status"] = run_status(run)
        result_file = run / "result.json"
        if result_file.is_file() and row["status"] in ("finished", "unknown"):
            result = flatten(json.loads(result_file.read_text()))
            row.update({k: v for k, v in result.items() if is_number(v)})
        metrics = read_metrics(run)
        if metrics is not None:
            row.update({f"last:{k}": v for k, v in last_values(metrics).items()})
        rows.append(row)
    table = pd.DataFrame(rows)
    if "trial" in table:
        table["trial"] = table["trial"].astype("Int64")
    return table


# ------------------------------------------------------------------------------ what varies
def split_overrides(table: pd.DataFrame, override_keys: list[str]) -> tuple[list[str], dict[str, str]]:
    """(keys whose value differs between runs, {key: value} of the constant ones)."""
    varying, constant = [], {}
    for key in override_keys:
        values = table[key].fillna("<unset>").astype(str) if key in table else pd.Series(dtype=str)
        if values.nunique() > 1:
            varying.append(key)
        elif len(values):
            constant[key] = values.iloc[0]
    return varying, constant


def short_names(keys: list[str]) -> dict[str, str]:
    """``stage.lr`` -> ``lr`` unless two keys share the last name."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last)}


def short_value(value: object) -> str:
    text = str(value)
    try:
        number = float(text)
    except ValueError:
        return text
    return text if len(text) <= 7 or not math.isfinite(number) else f"{number:.4g}"


def run_label(row: pd.Series, varying: list[str]) -> str:
    names = short_names(varying)
    label = ", ".join(f"{names[k]}={short_value(row[k])}" for k in varying if k in row and pd.notna(row[k]))
    return label or (f"job {row['job']}" if pd.notna(row.get("job")) else str(row["run"]))


def result_columns(table: pd.DataFrame, override_keys: list[str]) -> list[str]:
    skip = set(ID_COLUMNS) | set(override_keys)
    return [
        c
        for c in table.columns
        if c not in skip and not c.startswith("last:") and pd.api.types.is_numeric_dtype(table[c])
    ]


# ------------------------------------------------------------------------------ seeds
def seed_summary(table: pd.DataFrame, varying: list[str]) -> tuple[pd.DataFrame | None, str]:
    """Mean and std over seeds of every numeric column, per setting of the other varying
    overrides, when the seed changes a result; else (None, a sentence saying it does not)."""
    if "seed" not in varying:
        return None, ""
    keys = [k for k in varying if k != "seed"]
    done = table[table["status"].isin(["finished", "unknown"])]
    numeric = [
        c
        for c in done.columns
        if c not in ID_COLUMNS and c != "seed" and c not in keys and pd.api.types.is_numeric_dtype(done[c])
    ]
    if done.empty or not numeric:
        return None, ""
    if not keys:
        done = done.assign(setting="all")
        keys = ["setting"]
    grouped = done.groupby(keys, dropna=False, sort=False)
    deterministic = [c for c in numeric if not NONDETERMINISTIC.search(c)]
    seeds = sorted(done["seed"].astype(str).unique(), key=lambda s: (len(s), s))
    if deterministic and all((group[c].nunique(dropna=False) <= 1) for _, group in grouped for c in deterministic):
        return None, (
            f"The seed changes nothing here: every setting's runs have identical results across seeds "
            f"{', '.join(seeds)} ({len(deterministic)} result and metric columns compared; timings excluded). "
            "Make the seed matter (random initialisation, random views) or drop it from the sweep."
        )
    summary = grouped[numeric].mean().add_suffix(" (mean)").join(grouped[numeric].std().add_suffix(" (std)"))
    summary["seeds"] = grouped.size()
    return summary.reset_index(), ""


def mean_std_table(summary: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """The summary as ``mean ± std`` cells (for the report)."""
    keys = [c for c in summary.columns if not c.endswith((" (mean)", " (std)")) and c != "seeds"]
    out = summary[keys].copy()
    for c in columns:
        if f"{c} (mean)" in summary:
            out[c] = [
                f"{m:.4g} ± {s:.2g}" if pd.notna(s) else f"{m:.4g}"
                for m, s in zip(summary[f"{c} (mean)"], summary[f"{c} (std)"])
            ]
    out["seeds"] = summary["seeds"]
    return out


# ------------------------------------------------------------------------------ images
def plot_curves(runs: list[Path], labels: dict[Path, str], metric: str, out_path: Path) -> bool:
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
        ax.plot(series["step"], series[metric], label=labels.get(run, run.name))
        drawn += 1
    if drawn:
        ax.set_xlabel("global step")
        ax.set_ylabel(metric)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out_path, dpi=120)
    plt.close(fig)
    return bool(drawn)


def montage(
    runs: list[Path],
    labels: dict[Path, str],
    out_path: Path,
    statuses: dict[Path, str],
    tile_height: int = 192,
    ncols: int = 4,
) -> bool:
    """Every run's preview image in the runs' order, each under its label (the values it varies);
    a grey tile for a run without one (a failed run)."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line_h = 13
    tiles, texts = [], []
    for run in runs:
        path = preview_image(run)
        if path is not None:
            image = Image.open(path).convert("RGB")
            width = max(1, round(image.width * tile_height / image.height))
            image = image.resize((width, tile_height))
        else:
            image = Image.new("RGB", (tile_height, tile_height), (200, 200, 200))
            status = statuses.get(run, "")
            note = "no image" if status in ("finished", "unknown", "") else status
            ImageDraw.Draw(image).text((8, tile_height // 2), note, fill=(90, 0, 0), font=font)
        lines: list[str] = []  # the label wrapped at its commas to the image's width
        for part in labels.get(run, run.name).split(", "):
            joined = f"{lines[-1]}, {part}" if lines else part
            if lines and measure.textlength(joined, font=font) <= image.width - 4:
                lines[-1] = joined
            else:
                lines.append(part)
        tiles.append(image)
        texts.append(lines)
    if not tiles:
        return False
    label_h = line_h * max(len(t) for t in texts) + 4
    ncols = min(ncols, len(tiles))
    nrows = math.ceil(len(tiles) / ncols)
    cell_w = max(t.width for t in tiles)
    sheet = Image.new("RGB", (ncols * cell_w, nrows * (tile_height + label_h)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, (image, lines) in enumerate(zip(tiles, texts)):
        x, y = (i % ncols) * cell_w, (i // ncols) * (tile_height + label_h)
        sheet.paste(image, (x, y + label_h))
        for j, line in enumerate(lines):
            draw.text((x + 2, y + 2 + j * line_h), line, fill=(0, 0, 0), font=font)
    sheet.save(out_path)
    return True


# ------------------------------------------------------------------------------ report
def markdown(table: pd.DataFrame) -> str:
    """A pasteable table; missing values (a failed run's results) left blank."""
    return table.astype(object).where(table.notna(), None).to_markdown(index=False, floatfmt=".4g", missingval="")


def write_report(
    out: Path,
    paths: list[Path],
    table: pd.DataFrame,
    shown: pd.DataFrame,
    constant: dict[str, str],
    varying: list[str],
    summary_md: str,
    images: list[tuple[str, str]],
    sort: str | None,
) -> Path:
    counts = table["status"].value_counts().to_dict()
    lines = [f"# Comparison: {', '.join(p.name for p in paths)}", ""]
    lines.append(
        f"{len(table)} runs ({', '.join(f'{n} {s}' for s, n in counts.items())}) from "
        f"{', '.join(f'`{p}`' for p in paths)}."
    )
    lines.append("")
    if constant:
        lines.append("Constant overrides (every run): " + " ".join(f"`{k}={v}`" for k, v in constant.items()))
    lines.append(
        "Varying: " + (", ".join(f"`{k}`" for k in varying) if varying else "nothing (the runs share their overrides)")
    )
    lines.append("")
    lines += [f"## Runs ({'sorted by ' + sort if sort else 'in sweep order'})", "", markdown(shown), ""]
    if "objective" in table and table["objective"].notna().any():
        best = table.loc[table["objective"].idxmin()]
        lines += [
            f"Lowest objective: **{best['objective']:.4g}**, job {best['job']} "
            f"({run_label(best, varying)}), `{best['run']}`.",
            "",
        ]
    failed = table[~table["status"].isin(["finished", "unknown"])]
    if len(failed):
        lines += ["## Runs that did not finish", ""]
        for _, row in failed.iterrows():
            lines.append(
                f"- job {row['job']} ({run_label(row, varying)}): {row['status']}"
                + (f": {row['error']}" if row.get("error") else "")
            )
        lines.append("")
    if summary_md:
        lines += ["## Seeds", "", summary_md, ""]
    for title, name in images:
        lines += [f"## {title}", "", f"![{title}]({name})", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path, help="a multirun folder or run folders")
    parser.add_argument("--metrics", nargs="*", default=["train/loss"], help="metrics to plot against the step")
    parser.add_argument("--sort", default=None, help="sort the runs by this column (default: the sweep's order)")
    parser.add_argument("--descending", action="store_true", help="with --sort: largest first")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: the first path)")
    args = parser.parse_args(argv)

    runs = find_runs(args.paths)
    if not runs:
        raise SystemExit(f"No runs (folders with .hydra/overrides.yaml) under {', '.join(map(str, args.paths))}")
    out = args.out or args.paths[0]
    out.mkdir(parents=True, exist_ok=True)
    table = collect(runs)
    table["error"] = [run_error(r) if s not in ("finished", "unknown") else "" for r, s in zip(runs, table["status"])]
    if args.sort:
        if args.sort not in table:
            raise SystemExit(f"--sort {args.sort}: no such column; columns: {list(table.columns)}")
        table = table.sort_values(args.sort, ascending=not args.descending, kind="stable", na_position="last")
    order = [runs[i] for i in table.index]
    table = table.reset_index(drop=True)
    table.drop(columns="error").to_csv(out / "comparison.csv", index=False)

    override_keys = list(dict.fromkeys(k for run in runs for k in parse_overrides(run)))
    varying, constant = split_overrides(table, override_keys)
    results = result_columns(table, override_keys)
    shown = table[[c for c in ("job", "trial") if c in table] + varying + ["status"] + results]
    (out / "comparison.md").write_text(markdown(shown))

    summary, statement = seed_summary(table, varying)
    if summary is not None:
        (out / "summary.md").write_text(markdown(summary))
        summary_md = markdown(mean_std_table(summary, results))
    else:
        summary_md = statement
        if statement:
            (out / "summary.md").write_text(statement + "\n")

    labels = {run: run_label(row, varying) for run, (_, row) in zip(order, table.iterrows())}
    images = []
    if montage(order, labels, out / "montage.png", dict(zip(order, table["status"]))):
        images.append(("Montage", "montage.png"))
    for metric in args.metrics:
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", metric)
        if plot_curves(order, labels, metric, out / f"curves_{safe}.png"):
            images.append((f"Curves: {metric}", f"curves_{safe}.png"))
    report = write_report(out, args.paths, table, shown, constant, varying, summary_md, images, args.sort)
    print(report.read_text())
    return table.drop(columns="error")


if __name__ == "__main__":
    main()
