"""The Lightning plumbing every stage shares: run records, loggers, checkpoints, resume,
schedules, multirun, W&B offline, and clear failures."""

import json
import re

import pandas as pd
import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from avatar.engine.runner import run
from avatar.engine.schedules import validate_weight, weight_at
from avatar.engine.trainer import build_loggers
from avatar.stages.base import NonFiniteLossError
from avatar.utils.io import atomic_path

from helpers import FAST_POSE_FIT, compose_cfg, run_train


def lambda_rotation_l2(step):  # the pose-fit default: [0, 1e-3, 0.0, 100]
    return 1e-3 * max(0.0, 1 - step / 100)


def test_schedules():
    assert weight_at(0.5, 10) == 0.5
    assert weight_at([10, 1.0, 0.0, 20], 0) == 1.0
    assert weight_at([10, 1.0, 0.0, 20], 15) == pytest.approx(0.5)
    assert weight_at([10, 1.0, 0.0, 20], 99) == 0.0
    for bad in ([1, 2], "fast", [5, 1, 0, 5], True):
        with pytest.raises(ValueError, match="stage.lambda_x"):
            validate_weight("stage.lambda_x", bad)


@pytest.mark.slow
def test_cli_run_records_logs_and_checkpoints(tmp_path):
    run_dir = tmp_path / "run"
    run_train(
        *FAST_POSE_FIT,
        "trainer.max_steps=6",
        "trainer.checkpoint_every_n_steps=3",
        "trainer.val_every_n_steps=3",
        "trainer.log_every_n_steps=1",
        "seed=7",
        f"hydra.run.dir={run_dir}",
    )
    # Run records: overrides, resolved config, git revision, package versions.
    overrides = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text())
    assert "seed=7" in overrides and "stage=pose_fit" in overrides
    resolved = yaml.safe_load((run_dir / "config_resolved.yaml").read_text())
    assert resolved["seed"] == 7 and resolved["run_dir"] == str(run_dir)
    info = json.loads((run_dir / "run_info.json").read_text())
    assert re.fullmatch(r"[0-9a-f]{40}", info["git"]["commit"])
    assert torch.__version__.startswith(info["packages"]["torch"])
    assert info["hardware"]["torch_build"] == torch.__version__
    # CSV: raw, weighted and weight of every term each step; the schedule follows the step.
    metrics = pd.read_csv(run_dir / "csv" / "metrics.csv")
    rows = metrics.dropna(subset=["train/lambda_rotation_l2"])
    assert len(rows) == 6
    for _, row in rows.iterrows():
        assert row["train/lambda_rotation_l2"] == pytest.approx(lambda_rotation_l2(row["step"]), rel=1e-5)
        assert row["train/weighted_joints"] == pytest.approx(row["train/loss_joints"], rel=1e-6)
    losses = metrics["train/loss_joints"].dropna()
    assert losses.is_monotonic_decreasing and losses.iloc[-1] < 0.9 * losses.iloc[0]
    errors = metrics["metrics/joint_error_mm"].dropna()
    # TensorBoard: scalars and validation images.
    events = EventAccumulator(str(run_dir / "tensorboard")).Reload()
    assert "train/loss_joints" in events.Tags()["scalars"]
    assert "val/fit" in events.Tags()["images"]
    # Checkpoints every 3 steps, plus last; they hold what is optimised, not the body model.
    ckpts = sorted(p.name for p in (run_dir / "checkpoints").glob("*.ckpt"))
    assert ckpts == ["last.ckpt", "step000003.ckpt", "step000006.ckpt"]
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert state["global_step"] == 6 and set(state["state_dict"]) >= {"rotations", "transl"}
    assert not any(k.startswith("body.") for k in state["state_dict"])
    result = json.loads((run_dir / "result.json").read_text())
    assert result["objective"] == pytest.approx(errors.iloc[-1], rel=1e-3)


@pytest.mark.slow
def test_resume_continues_exactly_where_it_stopped(tmp_path):
    common = [
        *FAST_POSE_FIT,
        "trainer.checkpoint_every_n_steps=4",
        "trainer.val_every_n_steps=0",
        "trainer.log_every_n_steps=1",
        "stage.init_noise_deg=10",
        "stage.lambda_rotation_l2=[0,0.01,0.0,8]",
    ]
    straight = run(compose_cfg(tmp_path / "a", *common, "trainer.max_steps=8"))
    run(compose_cfg(tmp_path / "b", *common, "trainer.max_steps=4"))  # "interrupted" at step 4
    resumed = run(
        compose_cfg(tmp_path / "b", *common, "trainer.max_steps=8", "resume=last"),
        overrides=[*common, "trainer.max_steps=8", "resume=last"],
    )  # max_steps changed explicitly
    assert resumed["objective"] == pytest.approx(straight["objective"], rel=1e-6)
    a = torch.load(tmp_path / "a" / "checkpoints" / "last.ckpt", weights_only=False)
    b = torch.load(tmp_path / "b" / "checkpoints" / "last.ckpt", weights_only=False)
    assert b["global_step"] == 8
    torch.testing.assert_close(b["state_dict"]["rotations"], a["state_dict"]["rotations"])
    assert b["lr_schedulers"][0]["last_epoch"] == a["lr_schedulers"][0]["last_epoch"] == 8
    # Logged schedule values after the resume match the uninterrupted run's.
    ma = pd.read_csv(tmp_path / "a" / "csv" / "metrics.csv").dropna(subset=["train/lambda_rotation_l2"])
    mb = pd.read_csv(tmp_path / "b" / "csv" / "metrics.csv").dropna(subset=["train/lambda_rotation_l2"])
    late_a = ma[ma.step >= 4].set_index("step")["train/lambda_rotation_l2"]
    late_b = mb[mb.step >= 4].set_index("step")["train/lambda_rotation_l2"]
    assert len(late_b) == 4
    pd.testing.assert_series_equal(late_a, late_b)


def test_resume_last_without_checkpoint_explains(tmp_path):
    with pytest.raises(FileNotFoundError, match="hydra.run.dir"):
        run(compose_cfg(tmp_path, *FAST_POSE_FIT, "resume=last"))


def test_nan_loss_stops_with_a_clear_error(tmp_path):
    with pytest.raises(NonFiniteLossError) as err:
        run(compose_cfg(tmp_path, *FAST_POSE_FIT, "stage.init_noise_deg=nan", "trainer.max_steps=5", "logger=none"))
    message = str(err.value)
    assert "joints" in message and "step 0" in message
    assert "No checkpoint was written" in message and "resume=" not in message  # nothing to resume yet


def test_bad_loss_weight_names_the_key(tmp_path):
    with pytest.raises(ValueError, match="stage.lambda_joints"):
        run(compose_cfg(tmp_path, *FAST_POSE_FIT, "stage.lambda_joints=[1,2]", "logger=none"))


def test_zero_weight_terms_are_not_computed(tmp_path):
    cfg = compose_cfg(
        tmp_path,
        *FAST_POSE_FIT,
        "stage.lambda_rotation_l2=0",
        "trainer.max_steps=2",
        "trainer.log_every_n_steps=1",
        "trainer.val_every_n_steps=0",
    )
    run(cfg)
    metrics = pd.read_csv(tmp_path / "csv" / "metrics.csv")
    assert "train/loss_rotation_l2" not in metrics.columns
    assert metrics["train/loss_joints"].notna().sum() == 2


def test_wandb_offline_groups_types_and_names_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = compose_cfg(tmp_path, *FAST_POSE_FIT, "logger=wandb", "experiment_name=lr_study")
    (wandb_logger,) = [
        lg
        for lg in build_loggers(cfg, tmp_path, ["stage.lr=0.1", "seed=1", "hydra.verbose=true"])
        if type(lg).__name__ == "WandbLogger"
    ]
    experiment = wandb_logger.experiment
    assert experiment.group == "lr_study" and experiment.job_type == "pose_fit"
    assert experiment.name == "stage.lr=0.1,seed=1"
    assert experiment.config["stage"]["name"] == "pose_fit"
    wandb_logger.log_metrics({"train/loss": 0.5}, step=3)
    import wandb

    wandb.finish()
    (run_file,) = list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    data = run_file.read_bytes()
    assert b"trainer/global_step" in data and b"train/loss" in data  # the step is the x-axis


@pytest.mark.slow
def test_multirun_basic_and_joblib_and_comparison(tmp_path):
    from compare_runs import main as compare

    for launcher in ("basic", "joblib"):
        sweep = tmp_path / launcher
        # init noise: the seed draws the initial pose, so the seeds' results differ (mean +- std)
        run_train(
            "-m",
            *FAST_POSE_FIT,
            "trainer.max_steps=3",
            "stage.init_noise_deg=10",
            "seed=0,1",
            f"hydra/launcher={launcher}",
            "hydra.launcher.n_jobs=2" if launcher == "joblib" else "trainer.log_every_n_steps=1",
            f"hydra.sweep.dir={sweep}",
            "logger=csv",
        )
        jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and (p / "result.json").is_file())
        assert [p.name.split("_")[0] for p in jobs] == ["0", "1"]
        assert all("seed=" in p.name for p in jobs)
        table = compare([str(sweep)])
        assert len(table) == 2 and set(table["seed"]) == {"0", "1"}
        for job in jobs:
            row = table[table["run"] == job.name].iloc[0]
            assert row["objective"] == pytest.approx(json.loads((job / "result.json").read_text())["objective"])
        assert (sweep / "comparison.md").read_text().count("\n") >= 3
        summary = (sweep / "summary.md").read_text()
        assert "objective (mean)" in summary


def test_atomic_writes_leave_nothing_half_written(tmp_path):
    target = tmp_path / "mesh.ply"
    target.write_text("complete old mesh")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half a mesh")
            raise RuntimeError("interrupted")
    assert target.read_text() == "complete old mesh"
    assert [p.name for p in tmp_path.iterdir()] == ["mesh.ply"]


@pytest.mark.slow
def test_optuna_search_minimises_the_objective(tmp_path):
    sweep = tmp_path / "optuna"
    run_train(
        "-m",
        *FAST_POSE_FIT,
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=2",
        "logger=csv",
        "trainer.max_steps=40",
        f"hydra.sweep.dir={sweep}",
    )
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    objectives = [json.loads(p.read_text())["objective"] for p in sweep.glob("*/result.json")]
    assert len(objectives) == 2 and best["best_value"] == pytest.approx(min(objectives))
    assert set(best["best_params"]) == {"stage.lr", "stage.lambda_rotation_l2"}  # not the budget


def test_run_directories_never_collide(tmp_path):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from avatar.config import register_configs

    from helpers import ROOT

    register_configs()
    dirs = []
    for _ in range(2):  # two runs composed within the same second
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            cfg = compose("config", return_hydra_config=True)
        dirs.append((OmegaConf.select(cfg, "hydra.run.dir"), OmegaConf.select(cfg, "hydra.sweep.dir")))
    assert dirs[0][0] != dirs[1][0] and dirs[0][1] != dirs[1][1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown on machines without a GPU")
def test_gpu_trainer_without_gpu_says_so(tmp_path):
    from avatar.engine.trainer import build_trainer

    cfg = compose_cfg(tmp_path, *FAST_POSE_FIT, "trainer=gpu")
    with pytest.raises(RuntimeError, match="trainer=cpu"):
        build_trainer(cfg, tmp_path, [])
    ddp = compose_cfg(tmp_path, *FAST_POSE_FIT, "trainer=ddp")
    assert ddp.trainer.strategy == "ddp" and ddp.trainer.devices == -1


def test_publish_copies_atomically(tmp_path):
    from avatar.utils.io import publish_file

    run_output = tmp_path / "run" / "weights.pt"
    run_output.parent.mkdir()
    run_output.write_bytes(b"new weights")
    shipped = tmp_path / "package" / "weights"
    target = publish_file(run_output, shipped)
    assert target == shipped / "weights.pt" and target.read_bytes() == b"new weights"
    assert [p.name for p in shipped.iterdir()] == ["weights.pt"]  # no temp file left behind
