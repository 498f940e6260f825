"""Research workflow: Optuna studies that survive failed trials and link trials to runs, the
metric a sweep optimises, the debug configs and the SLURM launcher preset."""

import csv
import json
import math

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from avatar.config import register_configs
from avatar.engine import sweeps
from avatar.engine.run_info import run_status

from helpers import FAST_POSE_FIT, ROOT, run_train

register_configs()
sweeps.register_resolvers()


def compose_hydra(*overrides):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


# ------------------------------------------------------------------------------ the metric
def test_optimized_value_reads_nested_results_and_names_what_is_missing():
    result = {"objective": 2.0, "region_rgb": {"torso": [0.1, 0.2, 0.3]}, "files": {"mesh": "a.ply"}}
    assert sweeps.optimized_value(result) == 2.0
    assert sweeps.optimized_value(result, "region_rgb/torso/g") == pytest.approx(0.2)
    with pytest.raises(KeyError) as err:
        sweeps.optimized_value(result, "psnr")
    assert "psnr" in str(err.value) and "region_rgb/torso/r" in str(err.value) and "objective" in str(err.value)
    with pytest.raises(ValueError, match="diverged"):
        sweeps.optimized_value({"objective": math.nan})
    with pytest.raises(TypeError):
        sweeps.optimized_value(result, "files/mesh")
    assert sweeps.optimized_value({"clip_score": 1.0}, required=False) is None  # a plain run: no objective
    assert not sweeps.metric_required("objective") and sweeps.metric_required("psnr")


def test_main_returns_the_chosen_metric_and_fails_clearly_without_it(tmp_path, monkeypatch):
    import avatar.cli as cli

    from helpers import compose_cfg

    monkeypatch.setattr("avatar.engine.runner.run", lambda cfg: {"joint_error_mm": 3.0, "objective": 3.0, "seconds": 1})
    assert cli.main(compose_cfg(tmp_path, *FAST_POSE_FIT, "optimized_metric=joint_error_mm")) == 3.0
    with pytest.raises(KeyError) as err:
        cli.main(compose_cfg(tmp_path, *FAST_POSE_FIT, "optimized_metric=psnr"))
    assert "optimized_metric='psnr'" in str(err.value) and "joint_error_mm" in str(err.value)


# ------------------------------------------------------------------------------ the search config
def test_sampler_seed_replays_one_worker_and_differs_between_shared_workers(tmp_path):
    alone = compose_hydra("hparams_search=optuna", "seed=5")
    assert OmegaConf.select(alone, "hydra.sweeper.sampler.seed") == 5  # in-memory study: reproducible
    shared = compose_hydra("hparams_search=optuna", "seed=5", f"hydra.sweeper.storage=sqlite:///{tmp_path}/s.db")
    assert OmegaConf.select(shared, "hydra.sweeper.sampler.seed") is None  # each worker its own draws
    pinned = compose_hydra(
        "hparams_search=optuna", "hydra.sweeper.storage=sqlite:///x.db", "hydra.sweeper.sampler.seed=3"
    )
    assert OmegaConf.select(pinned, "hydra.sweeper.sampler.seed") == 3
    sweeper = alone.hydra.sweeper
    assert sweeper.max_failure_rate == 1.0 and alone.optimized_metric == "objective"
    assert "trainer.max_steps" not in sweeper.params  # the budget is not a hyperparameter
    assert set(sweeper.params) == {"stage.lr", "stage.lambda_rotation_l2"}


@pytest.mark.slow
def test_optuna_study_survives_a_diverging_trial_and_links_trials_to_runs(tmp_path):
    import optuna

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    common = [
        *FAST_POSE_FIT,
        "trainer.max_steps=3",
        "logger=csv",
        "hparams_search=optuna",
        f"hydra.sweeper.storage={storage}",
        "hydra.sweeper.study_name=diverge",
    ]
    # Worker 1: seed 0 draws init noise 10, inf, 10 for its three trials (inf: a NaN loss at step 0).
    run_train(
        "-m",
        *common,
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.sampler.seed=0",
        "stage.init_noise_deg=choice(10,inf)",
        f"hydra.sweep.dir={tmp_path / 'w1'}",
    )
    # Worker 2 joins the same study with its own sampler (no seed: the storage is shared).
    run_train(
        "-m", *common, "hydra.sweeper.n_trials=2", "stage.init_noise_deg=10", f"hydra.sweep.dir={tmp_path / 'w2'}"
    )

    study = optuna.load_study(study_name="diverge", storage=storage)
    states = [t.state for t in study.trials]
    assert len(states) == 5, "every trial ran, the failed one did not end the study"
    assert states.count(optuna.trial.TrialState.FAIL) == 1 and states.count(optuna.trial.TrialState.COMPLETE) == 4
    first = {(t.params["stage.lr"], t.params["stage.lambda_rotation_l2"]) for t in study.trials[:3]}
    second = {(t.params["stage.lr"], t.params["stage.lambda_rotation_l2"]) for t in study.trials[3:]}
    assert not first & second, "the second worker proposes its own trials"
    for trial in study.trials:  # trial -> run folder, and back
        run_dir = tmp_path / ("w1" if trial.number < 3 else "w2") / trial.user_attrs["run_dir"].rsplit("/", 1)[-1]
        assert trial.user_attrs["run_dir"] == str(run_dir) and run_dir.is_dir()
        link = json.loads((run_dir / "optuna_trial.json").read_text())
        assert (
            link["trial"] == trial.number
            and link["study"] == "diverge"
            and link["job_num"] == trial.user_attrs["job_num"]
        )
        if trial.state == optuna.trial.TrialState.FAIL:
            assert run_status(run_dir) == "failed" and (run_dir / "traceback.txt").is_file()
            assert "Non-finite loss" in link["error"] and link["value"] is None
        else:
            assert link["value"] == pytest.approx(trial.value)
            assert json.loads((run_dir / "result.json").read_text())["objective"] == pytest.approx(trial.value)
    rows = list(csv.DictReader((tmp_path / "w1" / "trials.csv").open()))
    assert [r["trial"] for r in rows] == ["0", "1", "2"]
    assert sorted(r["status"] for r in rows) == ["failed", "finished", "finished"]
    best = OmegaConf.load(tmp_path / "w1" / "optimization_results.yaml")
    assert best.best_value == pytest.approx(min(t.value for t in study.trials[:3] if t.value is not None))


def test_a_job_in_another_process_links_its_trial_through_the_shared_storage(tmp_path):
    """What a joblib or SLURM job does (the sweeper's live trial is not in its process)."""
    import optuna

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="s", storage=storage)
    trial = study.ask()
    entry = {"trial": trial.number, "trial_id": trial._trial_id, "job_num": 0, "storage": storage}
    sweeps._set_trial_run_dir(tmp_path, 0, entry, tmp_path / "0_lr=0.1")
    assert optuna.load_study(study_name="s", storage=storage).trials[0].user_attrs["run_dir"] == str(
        tmp_path / "0_lr=0.1"
    )


# ------------------------------------------------------------------------------ debug configs
def test_debug_configs_compose():
    fdr = compose_hydra("stage=pose_fit", "debug=fdr")
    assert fdr.trainer.max_steps <= 2 and fdr.trainer.checkpoint_every_n_steps == 1
    assert fdr.logger.csv and not fdr.logger.tensorboard and not fdr.logger.wandb.enabled
    overfit = compose_hydra("stage=appearance", "debug=overfit")
    assert overfit.views.polar_std_deg == 0 and overfit.views.face_every == 0
    assert overfit.views.distance_range[0] == overfit.views.distance_range[1]
    profiler = compose_hydra("stage=pose_fit", "debug=profiler")
    assert profiler.trainer.profiler == "simple"
    assert compose_hydra("stage=pose_fit").trainer.profiler is None


def test_profiler_reaches_the_lightning_trainer(tmp_path):
    from lightning.pytorch.profilers import SimpleProfiler

    from avatar.engine.trainer import build_trainer

    from helpers import compose_cfg

    cfg = compose_cfg(tmp_path, *FAST_POSE_FIT, "debug=profiler")
    assert isinstance(build_trainer(cfg, tmp_path, []).profiler, SimpleProfiler)


@pytest.mark.slow
def test_debug_fdr_runs_a_stage_end_to_end(tmp_path):
    run_dir = tmp_path / "fdr"
    run_train(*FAST_POSE_FIT, "debug=fdr", f"hydra.run.dir={run_dir}")
    assert run_status(run_dir) == "finished"
    assert (run_dir / "csv" / "metrics.csv").is_file() and not (run_dir / "tensorboard").exists()
    assert len(list((run_dir / "checkpoints").glob("step*.ckpt"))) == 2  # one every step
    assert list((run_dir / "images").glob("*.png"))


def test_slurm_preset_composes():
    cfg = compose_hydra("hydra/launcher=slurm_gpu", "experiment=pose_fit_lr_sweep")
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.gpus_per_node == 1 and launcher.timeout_min > 0
    assert 0 < launcher.signal_delay_s < launcher.timeout_min * 60 and launcher.max_num_timeout > 0
    assert cfg.hydra.job.env_set.AVATAR_RESUME == "auto"  # requeued jobs continue (avatar/cli.py)
    assert cfg.hydra.sweeper.params.seed == "0,1"  # the experiment's sweep is untouched


def test_launcher_resume_default_yields_to_the_command_line(tmp_path, monkeypatch):
    import avatar.cli as cli

    from helpers import compose_cfg

    seen = []

    def fake_run(cfg):
        seen.append(cfg.resume)
        return {"objective": 1.0}

    monkeypatch.setattr("avatar.engine.runner.run", fake_run)
    monkeypatch.setenv(cli.RESUME_ENV, "auto")  # what the SLURM preset sets (hydra.job.env_set)
    for given in ("", "last"):
        assert cli.main(compose_cfg(tmp_path, *FAST_POSE_FIT, f"resume={given}")) == 1.0
    assert seen == ["auto", "last"]
