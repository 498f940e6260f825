"""What a run reports: results, media and artifacts in W&B (read back from the offline run file),
the HParams view in TensorBoard, the final step's scalars of a short run, failed runs, and the
names of sweep jobs."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pandas as pd
import pytest
import yaml
from omegaconf import OmegaConf

from avatar.engine.reporting import flatten_result, job_label, path_safe, sweep_label
from avatar.engine.runner import run
from avatar.stages.base import NonFiniteLossError

from helpers import FAST_POSE_FIT, LOW_POLY, compose_cfg, run_train

TINY_APPEARANCE = [
    "stage=appearance", f"body.topology={LOW_POLY}", "trainer.max_steps=2", "stage.init_steps=5", "stage.volume.compile=false",
    "stage.init_cache=false", "stage.export_resolution=32", "stage.export_views=2", "stage.turntable_frames=2",
    "stage.val_size=16", "stage.val_views=2", "stage.max_ray_num=800", "stage.proposal_resolution=32",
    "trainer.enable_progress_bar=false",
]  # fmt: skip


@pytest.fixture(autouse=True)
def offline_wandb():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "offline")
        mp.setenv("WANDB_SILENT", "true")
        yield


# ------------------------------------------------------------------ reading an offline W&B run
def wandb_records(run_dir: Path) -> list:
    """The records of the run's offline ``.wandb`` file (W&B's LevelDB-style log of protobuf
    records: a 7-byte header, then 32 KiB blocks of chunks [crc u32, length u16, type u8])."""
    import wandb
    from wandb.proto import wandb_internal_pb2 as pb

    # The W&B service writes the file in the background: its last records (the exit code) can
    # still be buffered when the run returns. Tearing the service down waits for them (a later
    # run starts a new one); without it the exit record was missing once in five CI runs.
    wandb.teardown()
    (path,) = sorted(Path(run_dir, "wandb").glob("offline-run-*/run-*.wandb"))
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    records, pending, pos, block = [], b"", 7, 32768
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a chunk header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:
            pos += left
            continue
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST chunk: a record is complete
            record = pb.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def wandb_run(run_dir: Path) -> dict:
    """Summary, logged media types, artifacts, exit code and run record of an offline run."""
    out = {"summary": {}, "media": {}, "artifacts": [], "exit_code": None, "run": None}
    for record in wandb_records(run_dir):
        kind = record.WhichOneof("record_type")
        if kind == "summary":
            for item in record.summary.update:
                key = item.key or "/".join(item.nested_key)
                out["summary"][key] = json.loads(item.value_json)
        elif kind == "history":
            for item in record.history.item:
                if list(item.nested_key[-1:]) == ["_type"]:
                    out["media"]["/".join(item.nested_key[:-1])] = json.loads(item.value_json)
        elif kind == "artifact":
            out["artifacts"].append(record.artifact)
        elif kind == "exit":
            out["exit_code"] = record.exit.exit_code
        elif kind == "run":
            out["run"] = record.run
    return out


# ------------------------------------------------------------------ a real, tiny appearance run
@pytest.fixture(scope="module")
def appearance_run(tmp_path_factory):
    """A 2-step appearance run (~5 s) with every logger and artifacts on."""
    run_dir = tmp_path_factory.mktemp("appearance")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "offline")
        result = run(
            compose_cfg(
                run_dir,
                *TINY_APPEARANCE,
                "logger=wandb",
                "logger.wandb.log_artifacts=true",
                "trainer.log_every_n_steps=10",
                "trainer.val_every_n_steps=1",
            )
        )
    return run_dir, result


@pytest.mark.slow
def test_results_reach_the_wandb_summary(appearance_run):
    run_dir, result = appearance_run
    logged = wandb_run(run_dir)
    summary = logged["summary"]
    assert summary["objective"] == pytest.approx(result["objective"])
    assert summary["steps"] == 2 and summary["export_vertices"] == result["export_vertices"]
    for region, rgb in result["region_rgb"].items():
        assert [summary[f"region_rgb/{region}/{c}"] for c in "rgb"] == pytest.approx(rgb)
    assert logged["exit_code"] == 0


def test_videos_mesh_table_and_artifact_are_logged(appearance_run):
    run_dir, result = appearance_run
    logged = wandb_run(run_dir)
    media = logged["media"]
    assert media["media/turntable"] == media["media/timelapse"] == "video-file"
    assert media["media/avatar_3d"] == "object3D-file"  # avatar.glb, preferred over .obj/.ply
    assert media["results"] == "table-file"
    (table_file,) = run_dir.glob("wandb/offline-run-*/files/media/table/results_*.table.json")
    table = json.loads(table_file.read_text())
    row = dict(zip(table["columns"], table["data"][0]))
    assert row["prompt_appearance"] == "a person in a red shirt and blue trousers"
    assert row["objective"] == pytest.approx(result["objective"])
    assert row["region_rgb/legs/b"] == pytest.approx(result["region_rgb"]["legs"][2])
    (table_artifact,) = [a for a in logged["artifacts"] if a.type == "run_table"]  # the table and its image
    assert any(e.path.endswith("/avatar_preview.png") for e in table_artifact.manifest.contents) and row["preview"]
    # The stage's artifact: its metadata within W&B's 100 keys (the region report alone has more),
    # the top-level numbers kept; the whole result travels as the artifact's result.json.
    (stage_artifact,) = [a for a in logged["artifacts"] if a.type == "appearance"]
    metadata = json.loads(stage_artifact.metadata)
    assert len(flatten_result(result)) > 100 >= len(metadata)
    assert metadata["objective"] == pytest.approx(result["objective"]) and metadata["run_dir"] == str(run_dir)
    assert any(e.path == "result.json" for e in stage_artifact.manifest.contents)
    (artifact,) = [a for a in logged["artifacts"] if a.type == "appearance"]
    files = {entry.path for entry in artifact.manifest.contents}
    assert {"avatar.glb", "avatar.ply", "avatar_rig.npz", "checkpoints/last.ckpt", "result.json"} <= files


def test_the_run_record_names_the_guidance_weights_it_loaded(appearance_run):
    from avatar.engine.run_info import read_run_info
    from avatar.guidance.mini import MINI_CHECKPOINT
    from avatar.utils.files import short_hash

    run_dir, _ = appearance_run
    record = read_run_info(run_dir)["segments"][-1]["loaded_weights"]
    (guidance,) = [w for w in record.values() if w["file"] == str(MINI_CHECKPOINT)]
    assert guidance["sha256_12"] == short_hash(MINI_CHECKPOINT) and guidance["architecture"].startswith("mini")


def test_tensorboard_hparams_hold_the_config_and_results(appearance_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    run_dir, result = appearance_run
    events = EventAccumulator(str(run_dir / "tensorboard")).Reload()

    def plugin_data(tag):
        return plugin_data_pb2.HParamsPluginData.FromString(events.SummaryMetadata(tag).plugin_data.content)

    metrics = {m.name.tag for m in plugin_data("_hparams_/experiment").experiment.metric_infos}
    assert {"result/objective", "result/region_rgb/torso/r", "result/steps"} <= metrics
    hparams = plugin_data("_hparams_/session_start_info").session_start_info.hparams
    assert hparams["stage.name"].string_value == "appearance"
    assert hparams["trainer.max_steps"].number_value == 2
    (objective,) = events.Scalars("result/objective")
    assert objective.value == pytest.approx(result["objective"]) and objective.step == 2
    saved = yaml.safe_load((run_dir / "tensorboard" / "hparams.yaml").read_text())
    assert saved["stage.name"] == "appearance" and saved["seed"] == 0  # was {}


def test_final_step_is_logged_whatever_the_interval(tmp_path):
    run(
        compose_cfg(
            tmp_path,
            *FAST_POSE_FIT,
            "trainer.max_steps=6",
            "trainer.log_every_n_steps=10",
            "trainer.val_every_n_steps=0",
            "logger=csv",
            "stage.lambda_rotation_l2=0",
        )
    )
    metrics = pd.read_csv(tmp_path / "csv" / "metrics.csv")
    assert set(metrics["step"]) == {5}  # the last step (0-based), nothing else with interval 10
    last = metrics[metrics["step"] == 5].ffill().bfill().iloc[0]
    for column in (
        "train/loss",
        "train/loss_joints",
        "train/lambda_joints",
        "train/weighted_joints",
        "metrics/joint_error_mm",
        "lr-Adam",
    ):
        assert pd.notna(last[column]), column
    assert last["train/lambda_rotation_l2"] == 0.0  # a zero-weight term still shows its weight


def test_diverging_run_is_failed_in_wandb_and_in_its_folder(tmp_path):
    with pytest.raises(NonFiniteLossError):
        run(compose_cfg(tmp_path, *FAST_POSE_FIT, "stage.init_noise_deg=nan", "trainer.max_steps=3", "logger=wandb"))
    info = json.loads((tmp_path / "run_info.json").read_text())
    assert info["segments"][-1]["status"] == "failed"
    assert "NonFiniteLossError" in (tmp_path / "traceback.txt").read_text()
    assert not (tmp_path / "result.json").exists()
    logged = wandb_run(tmp_path)
    assert logged["exit_code"] not in (None, 0)
    assert "objective" not in logged["summary"]


# ------------------------------------------------------------------ names
def test_flatten_result_names_colors_and_indexes_lists():
    flat = flatten_result(
        {
            "objective": 1.5,
            "region_rgb": {"torso": [0.1, 0.2, 0.3]},
            "scores": [3, 2, 1],
            "nested": {"a": {"b": 2}},
            "files": {"glb": "avatar.glb"},
            "empty": [],
        }
    )
    assert flat == {
        "objective": 1.5, "region_rgb/torso/r": 0.1, "region_rgb/torso/g": 0.2, "region_rgb/torso/b": 0.3,
        "scores/0": 3, "scores/1": 2, "scores/2": 1, "nested/a/b": 2, "files/glb": "avatar.glb",
    }  # fmt: skip


def test_sweep_labels_show_swept_values_only():
    job = ["stage=pose_fit", "body.topology=x", "stage.lr=0.01", "seed=1", "hydra/launcher=joblib"]
    assert sweep_label(job, {"stage.lr", "seed"}) == "lr=0.01,seed=1"
    assert sweep_label(job, None, exclude=["hydra/launcher"]) == "stage=pose_fit,topology=x,lr=0.01,seed=1"
    assert sweep_label(["stage.lr=1", "prior.lr=2"], {"stage.lr", "prior.lr"}) == "stage.lr=1,prior.lr=2"
    long = path_safe("x=" + "9" * 300)
    assert len(long) == 120 and long == path_safe("x=" + "9" * 300) != path_safe("x=" + "9" * 299)
    # An experiment's sweep (hydra.sweeper.params), e.g. the appearance ladder:
    hydra = OmegaConf.create({
        "sweeper": {"params": {"+appearance_ladder": "glob(*)", "seed": "0"}},
        "sweep": {"dir": "/nonexistent"},
        "overrides": {"task": ["experiment=appearance_ablation", "seed=0", "+appearance_ladder=2_init"]},
        "job": {"config": {"override_dirname": {"exclude_keys": ["experiment"]}}},
    })  # fmt: skip
    assert job_label(hydra) == "appearance_ladder=2_init"


def test_ladder_step_is_in_the_config_and_wandb(tmp_path):
    from avatar.engine.trainer import build_loggers

    cfg = compose_cfg(tmp_path, "experiment=appearance_ablation", "+appearance_ladder=2_init", "logger=wandb")
    assert cfg.variant == "appearance_ladder/2_init"
    (wandb_logger,) = [lg for lg in build_loggers(cfg, tmp_path, []) if type(lg).__name__ == "WandbLogger"]
    experiment = wandb_logger.experiment
    assert experiment.config["variant"] == "appearance_ladder/2_init"
    assert "appearance_ladder/2_init" in experiment.tags
    import wandb

    wandb.finish()


@pytest.mark.slow
def test_sweep_folders_and_run_names_are_the_swept_values(tmp_path):
    from hydra.core.hydra_config import HydraConfig

    from avatar.engine.trainer import run_name

    sweep = tmp_path / "sweep"
    run_train(
        "-m",
        *FAST_POSE_FIT,
        "trainer.max_steps=2",
        "trainer.val_every_n_steps=0",
        "stage.lr=0.01,0.02",
        "seed=0,1",
        "logger=csv",
        f"hydra.sweep.dir={sweep}",
    )
    jobs = sorted(p.name for p in sweep.iterdir() if (p / "result.json").is_file())
    assert jobs == ["0_lr=0.01,seed=0", "1_lr=0.01,seed=1", "2_lr=0.02,seed=0", "3_lr=0.02,seed=1"]
    # The W&B name follows the same rule, from what the job's own Hydra config says it varies.
    for job in jobs:
        saved = OmegaConf.load(sweep / job / ".hydra" / "hydra.yaml").hydra
        overrides = list(OmegaConf.load(sweep / job / ".hydra" / "overrides.yaml"))
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(HydraConfig, "initialized", staticmethod(lambda: True))
            mp.setattr(HydraConfig, "get", staticmethod(lambda saved=saved: saved))
            assert run_name(overrides) == job.split("_", 1)[1]
    assert run_name(["stage=pose_fit", "seed=1"]) == "stage=pose_fit,seed=1"  # a single run: every override
