"""Shared test setup: caches in temp dirs (except Anny's one-time build, kept in the project
cache so the suite builds it at most once per machine), a low-poly body, no network."""

from __future__ import annotations

import os

import pytest

# tests/ (helpers, synthetic_smpl, synthetic_mocap) and experiments/analysis/ (compare_runs) are
# importable through pytest's `pythonpath` setting (pyproject.toml).

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

# `make test` runs the suite on pytest-xdist workers, one per core (TEST_WORKERS). Each worker
# and the train.py processes it starts keep to one thread: two workers with torch's default
# threads each oversubscribe the cores, and OpenMP's waiting then makes a step several times slower.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)

LOW_POLY = "notoes_collapse5pc"


@pytest.fixture(autouse=True)
def _isolated_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))


@pytest.fixture(scope="session")
def anny_low():
    from avatar.body.anny_body import AnnyBody, AnnyBodyConfig

    return AnnyBody(AnnyBodyConfig(topology=LOW_POLY))


@pytest.fixture(scope="session")
def smpl_dir(tmp_path_factory):
    from synthetic_smpl import write_synthetic_smpl

    folder = tmp_path_factory.mktemp("smpl_models")
    write_synthetic_smpl(folder)
    return folder


@pytest.fixture(scope="session")
def smpl_synthetic(smpl_dir):
    from avatar.body.smpl_body import SmplBody, SmplBodyConfig

    return SmplBody(SmplBodyConfig(model_path=str(smpl_dir)))
