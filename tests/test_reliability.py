"""Trustworthy runs: a resumed run equals an uninterrupted one, run records keep every segment,
preemption saves and says how to continue, bad values fail before anything runs."""

import json
import signal
import time

import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from avatar.config import keep_prompts_literal, validate_config
from avatar.engine.fault_injection import compare, kill_and_resume
from avatar.engine.pipeline import run_pipeline
from avatar.engine.run_info import read_run_info, update_segment, write_run_info
from avatar.engine.runner import run
from avatar.stages.base import NonFiniteLossError

from helpers import FAST_POSE_FIT, LOW_POLY, compose_cfg

QUIET = ["trainer.val_every_n_steps=0", "trainer.log_every_n_steps=1", "stage.init_noise_deg=10"]


def fit(run_dir, *overrides, explicit=None):
    """Run pose_fit as the command line ``overrides`` would (the runner sees them as given)."""
    args = [*FAST_POSE_FIT, *QUIET, *overrides]
    return run(compose_cfg(run_dir, *args), overrides=args if explicit is None else explicit)


def rotations(path):
    return torch.load(path, weights_only=False)["state_dict"]["rotations"]


# ---- resume: the newest complete checkpoint, leftovers cleaned, logs continued --------------


@pytest.mark.slow
def test_resume_takes_the_newest_checkpoint_cleans_leftovers_and_keeps_the_logs(tmp_path):
    common = ["trainer.checkpoint_every_n_steps=4"]
    straight = fit(tmp_path / "a", *common, "trainer.max_steps=12")
    fit(tmp_path / "b", *common, "trainer.max_steps=8")
    ckpts = tmp_path / "b" / "checkpoints"
    # A kill between the two writes of the step-8 save: last.ckpt still holds step 4; a kill
    # mid-write left a hidden temp file.
    (ckpts / "last.ckpt").write_bytes((ckpts / "step000004.ckpt").read_bytes())
    (ckpts / ".step000012.a1b2c3d4.tmp.ckpt").write_bytes(b"")
    with pytest.raises(FileExistsError, match="resume=auto"):  # a fresh start would overwrite it
        fit(tmp_path / "b", *common, "trainer.max_steps=12")
    resumed = fit(tmp_path / "b", *common, "trainer.max_steps=12", "resume=auto")
    assert resumed["objective"] == straight["objective"]
    assert sorted(p.name for p in ckpts.iterdir()) == [
        "last.ckpt",
        "step000004.ckpt",
        "step000008.ckpt",
        "step000012.ckpt",
    ]
    torch.testing.assert_close(
        rotations(ckpts / "last.ckpt"), rotations(tmp_path / "a" / "checkpoints" / "last.ckpt"), rtol=0, atol=0
    )
    info = read_run_info(tmp_path / "b")
    assert [s["status"] for s in info["segments"]] == ["finished", "finished"]
    assert info["segments"][1]["resumed_from"]["step"] == 8
    assert info["segments"][1]["config_changes"] == {"trainer.max_steps": [8, 12]}
    # The CSV log kept the first segment's rows and holds every step once, as the straight run's.
    a = pd.read_csv(tmp_path / "a" / "csv" / "metrics.csv").dropna(subset=["train/loss"])
    b = pd.read_csv(tmp_path / "b" / "csv" / "metrics.csv").dropna(subset=["train/loss"])
    assert list(b["step"]) == list(a["step"]) == list(range(12))
    pd.testing.assert_series_equal(a["train/loss"].reset_index(drop=True), b["train/loss"].reset_index(drop=True))
    # result.json's time covers both segments' optimisation.
    assert resumed["train_seconds"] >= json.loads((tmp_path / "b" / "result.json").read_text())["train_seconds"] - 1e-9


def test_resuming_an_older_checkpoint_drops_the_logs_it_redoes(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    common = ["trainer.checkpoint_every_n_steps=4", "trainer.max_steps=8"]
    fit(tmp_path, *common)
    # TensorBoard reads a run's event files in name order: start time in whole seconds, host,
    # pid, then a per-process counter compared as text ("10" < "9"). A resume in the same second
    # as the first run (only in a test) could sort first and be purged by the older file.
    time.sleep(1.05 - time.time() % 1)
    fit(tmp_path, *common, f"resume={tmp_path / 'checkpoints' / 'step000004.ckpt'}")  # steps 4..7 again
    csv = pd.read_csv(tmp_path / "csv" / "metrics.csv").dropna(subset=["train/loss"])
    assert list(csv["step"]) == list(range(8))  # each step once
    events = EventAccumulator(str(tmp_path / "tensorboard")).Reload()
    assert [e.step for e in events.Scalars("train/loss")] == list(range(8))  # purged, then redone
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "last.ckpt",
        "step000004.ckpt",
        "step000008.ckpt",
    ]


def test_resume_refuses_a_forgotten_override_and_records_a_deliberate_one(tmp_path):
    fit(
        tmp_path, "trainer.checkpoint_every_n_steps=2", "trainer.max_steps=2", "stage.lambda_rotation_l2=[0,0.01,0.0,8]"
    )
    # The schedule forgotten on the resume command: an error naming it, nothing run.
    with pytest.raises(ValueError, match="stage.lambda_rotation_l2"):
        fit(tmp_path, "trainer.checkpoint_every_n_steps=2", "trainer.max_steps=4", "resume=auto")
    assert [s["status"] for s in read_run_info(tmp_path)["segments"]] == ["finished"]
    # Given explicitly, the change is deliberate: it runs, and the record keeps both values.
    fit(
        tmp_path,
        "trainer.checkpoint_every_n_steps=2",
        "trainer.max_steps=4",
        "stage.lambda_rotation_l2=0.5",
        "resume=auto",
    )
    segments = read_run_info(tmp_path)["segments"]
    assert segments[-1]["config_changes"]["stage.lambda_rotation_l2"] == [[0, 0.01, 0.0, 8], 0.5]


def test_resume_auto_starts_fresh_without_a_checkpoint_and_last_explains(tmp_path):
    result = fit(tmp_path / "fresh", "trainer.max_steps=2", "resume=auto")
    assert result["steps"] == 2 if "steps" in result else True
    assert read_run_info(tmp_path / "fresh")["segments"][0]["resumed_from"] is None
    with pytest.raises(FileNotFoundError, match="hydra.run.dir"):  # nothing ran there
        fit(tmp_path / "empty", "resume=last")
    run_dir = tmp_path / "started"
    write_run_info(run_dir, compose_cfg(run_dir, *FAST_POSE_FIT), [])  # started, killed before a checkpoint
    with pytest.raises(FileNotFoundError, match="before its first one.*resume=auto"):
        fit(run_dir, "resume=last")


@pytest.mark.slow
def test_sigterm_saves_the_current_step_exits_143_and_resumes_identically(tmp_path):
    overrides = [*FAST_POSE_FIT, *QUIET, "trainer.max_steps=400", "trainer.checkpoint_every_n_steps=100", "logger=csv"]
    report = kill_and_resume(tmp_path, overrides, "checkpoints/step000100.ckpt", signal.SIGTERM, delay=0.5)
    assert report["killed_exit_code"] == 143
    killed = tmp_path / "stopped_"
    info = read_run_info(killed)
    first, second = info["segments"]
    assert first["status"] == "interrupted" and "resume=auto" in first["resume_command"]
    assert str(killed) in first["resume_command"]
    # The checkpoint of the step it stopped at (past the periodic one) is what it resumed from.
    assert 100 <= first["stopped_at_step"] < 400
    assert second["resumed_from"]["step"] == first["stopped_at_step"] and second["status"] == "finished"
    torch.testing.assert_close(
        rotations(killed / "checkpoints" / "last.ckpt"),
        rotations(tmp_path / "straight" / "checkpoints" / "last.ckpt"),
        rtol=0,
        atol=0,
    )
    assert report["identical"], report["files"]


@pytest.mark.slow
def test_appearance_killed_mid_run_resumes_to_byte_identical_outputs(tmp_path):
    overrides = ["stage=appearance", f"body.topology={LOW_POLY}", "logger=csv", "seed=1", "trainer.max_steps=8",
                 "trainer.checkpoint_every_n_steps=3", "trainer.val_every_n_steps=4", "stage.init_steps=20",
                 "stage.export_resolution=48", "stage.turntable_frames=2", "stage.val_size=16", "stage.max_ray_num=1500",
                 "stage.proposal_refresh_every=4", "trainer.enable_progress_bar=false"]  # fmt: skip
    report = kill_and_resume(tmp_path, overrides, "checkpoints/step000003.ckpt")
    assert report["killed_exit_code"] == -signal.SIGKILL
    assert {"avatar.ply", "avatar.glb", "avatar_rig.npz", "turntable.mp4"} <= set(report["files"])
    assert report["identical"], report["files"]


# ---- the pipeline: an interrupted stage follows the rule finished stages follow -----------


def test_pipeline_refuses_to_resume_an_interrupted_stage_under_a_changed_prompt(tmp_path):
    from hydra import initialize_config_dir

    from avatar.config import register_configs
    from avatar.engine.pipeline import compose_stage

    from helpers import ROOT

    register_configs()
    overrides = ["pipeline=full", "pipeline.stages=[appearance]", f"body.topology={LOW_POLY}"]
    folder = tmp_path / "1_appearance"
    cfg = compose_cfg(tmp_path, *overrides, "prompt.appearance='a person in a green dress'")
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        red = compose_stage("appearance", [f"body.topology={LOW_POLY}", f"run_dir={folder}"])
        write_run_info(folder, red, [])
        update_segment(folder, status="interrupted")
        with pytest.raises(RuntimeError, match="appearance.*did not finish.*prompt.appearance.*redo_changed"):
            run_pipeline(cfg, [*overrides, "prompt.appearance='a person in a green dress'"])
    assert (folder / "config_resolved.yaml").is_file()  # nothing moved, nothing lost


# ---- failures are failures ---------------------------------------------------------------


def test_nan_guard_names_the_overflowing_term_and_the_newest_checkpoint(tmp_path):
    fit(tmp_path, "trainer.max_steps=2", "trainer.checkpoint_every_n_steps=2")
    with pytest.raises(NonFiniteLossError) as err:  # finite loss, infinite weighted term
        fit(
            tmp_path,
            "trainer.max_steps=4",
            "trainer.checkpoint_every_n_steps=2",
            "stage.lambda_joints=1e300",
            "resume=auto",
        )
    message = str(err.value)
    assert "terms ['joints']" in message and "step000002.ckpt" in message and "resume=auto" in message
    info = read_run_info(tmp_path)
    assert info["segments"][-1]["status"] == "failed" and "NonFiniteLossError" in info["segments"][-1]["error"]
    assert "NonFiniteLossError" in (tmp_path / "traceback.txt").read_text()


def test_compare_runs_reports_failed_runs_as_failed(tmp_path):
    from compare_runs import collect

    with pytest.raises(NonFiniteLossError):
        fit(tmp_path / "bad", "trainer.max_steps=2", "stage.init_noise_deg=nan")
    fit(tmp_path / "good", "trainer.max_steps=2")
    for name in ("bad", "good"):
        (tmp_path / name / ".hydra").mkdir(exist_ok=True)
        (tmp_path / name / ".hydra" / "overrides.yaml").write_text(f"- experiment_name={name}\n")
    table = collect([tmp_path / "bad", tmp_path / "good"]).set_index("run")
    assert table.loc["bad", "status"] == "failed" and table.loc["good", "status"] == "finished"


def test_every_weight_zero_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="Every loss weight.*stage.lambda_joints"):
        fit(tmp_path, "trainer.max_steps=2", "stage.lambda_joints=0", "stage.lambda_rotation_l2=0")


# ---- values that used to be accepted silently ----------------------------------------------


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["stage=pose_fit", "trainer.max_steps=0"], "trainer.max_steps"),
        (["stage=pose_fit", "stage.lambda_joints=-1"], "stage.lambda_joints"),
        (["stage=pose_fit", "stage.lambda_joints=nan"], "stage.lambda_joints"),
        (["stage=pose_fit", "stage.lambda_rotation_l2=[0,1,-1,10]"], "stage.lambda_rotation_l2"),
        (["stage=pose_fit", "trainer.checkpoint_every_n_steps=0"], "trainer.checkpoint_every_n_steps"),
        (["stage=pose_fit", "render.height=0"], "render.height"),
        (["stage=motion", "stage.fps=-5"], "stage.fps"),
        (["stage=animate", "stage.fps=-5"], "stage.fps"),
        (["stage=pose", "stage.top_k=0"], "stage.top_k"),
        (["stage=shape", "stage.top_k=0"], "stage.top_k"),
        (["stage=pose_fit", "prompt.motion='跑步'"], "prompt.motion"),
        (["stage=pose_fit", "prompt.shape='🏃‍♀️💪'"], "prompt.shape"),
    ],
)
def test_bad_values_fail_before_anything_runs_naming_the_key(tmp_path, overrides, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        validate_config(compose_cfg(tmp_path, *overrides))


def test_prompts_are_taken_literally(tmp_path):
    cfg = compose_cfg(tmp_path, "stage=pose_fit", "prompt.appearance='a man with ${oc.env:HOME}'")
    keep_prompts_literal(cfg)
    validate_config(cfg)
    assert cfg.prompt.appearance == "a man with ${oc.env:HOME}"
    assert OmegaConf.to_container(cfg, resolve=True)["prompt"]["appearance"] == "a man with ${oc.env:HOME}"


def test_fault_injection_masks_only_the_run_folders_own_path(tmp_path):
    a, b = tmp_path / "run_a", tmp_path / "run_b"
    for folder, other in ((a, "x"), (b, "y")):
        folder.mkdir()
        (folder / "avatar.gltf").write_text(f'{{"source": "{folder.resolve()}/4_motion/motion.npz"}}')
        (folder / "notes.txt").write_text(other)
    assert compare(a, b) == {"avatar.gltf": "same (its run folder's path aside)", "notes.txt": "DIFFERENT"}


def test_fault_injection_compare_ignores_records_only(tmp_path):
    for name, mesh in (("a", b"mesh"), ("b", b"mesh!")):
        (tmp_path / name / "csv").mkdir(parents=True)
        (tmp_path / name / "avatar.ply").write_bytes(mesh)
        (tmp_path / name / "run_info.json").write_text(name)
        (tmp_path / name / "csv" / "metrics.csv").write_text(name)
    assert compare(tmp_path / "a", tmp_path / "b") == {"avatar.ply": "DIFFERENT"}


# ---- the stage contract: mode=export re-exports a finished or interrupted run ----------------


def test_mode_export_rewrites_a_finished_runs_outputs_from_its_checkpoint(tmp_path):
    common = ["trainer.max_steps=6", "trainer.checkpoint_every_n_steps=3"]
    first = fit(tmp_path, *common)
    npz = (tmp_path / "pose_fit.npz").read_bytes()
    (tmp_path / "pose_fit.npz").unlink()
    (tmp_path / "result.json").unlink()
    ckpts = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    rows = (tmp_path / "csv" / "metrics.csv").read_text()
    again = fit(tmp_path, *common, "mode=export", "resume=last")
    assert (tmp_path / "pose_fit.npz").read_bytes() == npz  # the same state, the same file
    assert again == {**first, "train_seconds": again["train_seconds"]} and again["steps"] == 6
    assert json.loads((tmp_path / "result.json").read_text()) == again  # the runner wrote it
    assert 0 < again["train_seconds"] <= first["train_seconds"]  # the checkpoint's clock, not re-timed
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ckpts  # nothing trained or saved
    assert (tmp_path / "csv" / "metrics.csv").read_text().startswith(rows)  # no log row lost
    segments = read_run_info(tmp_path)["segments"]
    assert [s["status"] for s in segments] == ["finished", "finished"]
    assert "mode=export" in segments[-1]["overrides"]


def test_mode_export_of_an_interrupted_run_exports_its_checkpoint_step(tmp_path):
    fit(tmp_path / "short", "trainer.max_steps=3", "trainer.checkpoint_every_n_steps=3")
    # The same run as if stopped at step 3 of 6: its newest checkpoint is step 3.
    (tmp_path / "run").mkdir()
    for p in (tmp_path / "short").iterdir():
        if p.name in ("checkpoints", ".hydra", "run_info.json"):
            p.rename(tmp_path / "run" / p.name)
    exported = fit(
        tmp_path / "run", "trainer.max_steps=6", "trainer.checkpoint_every_n_steps=3", "mode=export",
        explicit=[*FAST_POSE_FIT, *QUIET, "trainer.max_steps=6", "trainer.checkpoint_every_n_steps=3", "mode=export"],
    )  # fmt: skip
    assert exported["steps"] == 3 and (tmp_path / "run" / "pose_fit.npz").is_file()
    with pytest.raises(ValueError, match="resume=last"):  # nothing to export in an empty folder
        fit(tmp_path / "empty", "trainer.max_steps=6", "mode=export")
    evaluated = fit(
        tmp_path / "run", "trainer.max_steps=6", "trainer.checkpoint_every_n_steps=3", "mode=evaluate",
        explicit=[*FAST_POSE_FIT, *QUIET, "trainer.max_steps=6", "trainer.checkpoint_every_n_steps=3", "mode=evaluate"],
    )  # fmt: skip
    assert evaluated["joint_error_mm"] == exported["joint_error_mm"] and "pose_file" not in evaluated


@pytest.mark.slow  # two train.py processes (~20 s)
def test_avatar_export_command_reexports_a_run_from_its_record(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from avatar.cli import export_overrides

    from helpers import run_train

    run_train(*FAST_POSE_FIT, *QUIET, "trainer.max_steps=4", "stage.lr=0.05", f"hydra.run.dir={tmp_path}")
    first = json.loads((tmp_path / "result.json").read_text())
    (tmp_path / "result.json").unlink()
    (tmp_path / "pose_fit.npz").unlink()
    command = export_overrides(tmp_path)
    assert "stage.lr=0.05" in command and "mode=export" in command and "resume=last" in command
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "avatar-export"), str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = json.loads((tmp_path / "result.json").read_text())
    assert again["joint_error_mm"] == first["joint_error_mm"] and (tmp_path / "pose_fit.npz").is_file()
    with pytest.raises(FileNotFoundError, match="run_info.json"):
        export_overrides(tmp_path / "nowhere")
