"""experiments/analysis/compare_runs.py: a sweep's runs in its own order, the overrides that
vary, flattened results, seeds as mean +- std where the seed matters, a montage and a report."""

import json
import os
import subprocess
import sys

import pytest
import yaml
from PIL import Image

from compare_runs import main as compare
from helpers import FAST_POSE_FIT, ROOT, run_train


@pytest.mark.slow
def test_compare_a_real_sweep_with_a_failed_run(tmp_path):
    sweep = tmp_path / "sweep"
    # 2 lr x 2 seeds; init noise makes the seed matter (it draws the initial pose)
    run_train(
        "-m",
        *FAST_POSE_FIT,
        "trainer.max_steps=3",
        "trainer.log_every_n_steps=1",
        "logger=csv",
        "stage.init_noise_deg=10",
        "stage.lr=0.01,0.1",
        "seed=0,1",
        f"hydra.sweep.dir={sweep}",
    )
    # a diverging run in the same folder, as job 10 (after 0..3: the order is numeric, not text)
    failed = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *FAST_POSE_FIT, "trainer.max_steps=3", "trainer.log_every_n_steps=1", "logger=csv",
         "stage.init_noise_deg=inf", "stage.lr=0.01", "seed=0", f"hydra.run.dir={sweep / '10_diverged'}"],
        cwd=ROOT, env=dict(os.environ, HYDRA_FULL_ERROR="1"), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert failed.returncode != 0

    table = compare([str(sweep), "--metrics", "train/loss"])
    assert list(table["job"]) == [0, 1, 2, 3, 10]  # the sweep's order
    assert list(table["status"]) == ["finished"] * 4 + ["failed"]
    for _, row in table[table["status"] == "finished"].iterrows():
        result = json.loads((sweep / row["run"] / "result.json").read_text())
        assert row["objective"] == pytest.approx(result["objective"])

    shown = (sweep / "comparison.md").read_text().splitlines()[0]
    assert "stage.lr" in shown and "seed" in shown and "stage.init_noise_deg" in shown  # they vary
    assert "render.height" not in shown and "body.topology" not in shown  # constants: in the header
    assert "enable_progress_bar" not in shown  # `false` on a command line, `False` in a sweep: one value
    report = (sweep / "report.md").read_text()
    assert "`render.height=32`" in report and "`body.topology=" in report
    assert "![Montage](montage.png)" in report and "curves_train_loss.png" in report
    assert "Non-finite loss" in report  # why job 10 failed
    assert " ± " in report and "objective (mean)" in (sweep / "summary.md").read_text()
    montage = Image.open(sweep / "montage.png")
    assert montage.width > montage.height > 0
    assert (sweep / "curves_train_loss.png").is_file()

    best_first = compare([str(sweep), "--sort", "objective", "--out", str(tmp_path / "sorted")])
    objectives = list(best_first["objective"].dropna())
    assert objectives == sorted(objectives) and best_first["status"].iloc[-1] == "failed"


def fake_run(folder, overrides, result, status="finished"):
    """A run folder as the runner leaves it (no training): overrides, run_info, result."""
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (folder / "run_info.json").write_text(json.dumps({"segments": [{"status": status}]}))
    if result is not None:
        (folder / "result.json").write_text(json.dumps(result))


def test_seed_that_changes_nothing_is_reported_as_such_and_results_are_flattened(tmp_path):
    for job, (lr, seed) in enumerate([(0.01, 0), (0.01, 1), (0.1, 0), (0.1, 1)]):
        result = {"objective": lr * 10, "train_seconds": 1.0 + job, "region_rgb": {"torso": [0.5, lr, 0.2]}}
        fake_run(
            tmp_path / f"{job}_lr={lr},seed={seed}", ["stage=appearance", f"stage.lr={lr}", f"seed={seed}"], result
        )
    table = compare([str(tmp_path), "--metrics"])
    assert table["region_rgb/torso/g"].tolist() == [0.01, 0.01, 0.1, 0.1]
    summary = (tmp_path / "summary.md").read_text()
    assert "seed changes nothing" in summary and "(std)" not in summary  # timings differ, results do not
    report = (tmp_path / "report.md").read_text()
    assert "seed changes nothing" in report and "`stage=appearance`" in report
    assert "region_rgb/torso/g" in (tmp_path / "comparison.md").read_text()
