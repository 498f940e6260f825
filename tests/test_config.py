"""Every config file and experiment overlay composes; typos fail with the key's name."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

from avatar.config import register_configs, validate_config

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
EXPERIMENTS = sorted(p.stem for p in (ROOT / "experiments" / "experiment").glob("*.yaml"))
GROUP_OPTIONS = sorted(
    (group.name, option.stem)
    for group in CONF.iterdir()
    if group.is_dir() and group.name not in ("stage_preset", "stage_guidance")  # chosen by stage + preset/guidance
    for option in group.glob("*.yaml")
)
# conf/stage_preset/<stage>_<preset>.yaml: a preset's sizes for one stage.
STAGE_PRESETS = sorted(tuple(p.stem.rsplit("_", 1)) for p in (CONF / "stage_preset").glob("*.yaml"))

register_configs()


def compose_with(overrides, return_hydra_config=False):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=overrides, return_hydra_config=return_hydra_config)


def test_every_group_is_found():
    groups = {g for g, _ in GROUP_OPTIONS}
    assert {"stage", "body", "guidance", "trainer", "logger", "preset", "hparams_search"} <= groups
    assert len(EXPERIMENTS) >= 2


@pytest.mark.parametrize("group,option", GROUP_OPTIONS)
def test_every_config_file_composes(group, option):
    cfg = compose_with([f"{group}={option}"], return_hydra_config=True)
    if group in ("body", "guidance", "stage"):
        assert cfg[group].name == option
    if group == "preset":
        assert cfg.preset == {"cpu": "tiny"}.get(option, option)  # cpu: the old name of tiny


@pytest.mark.parametrize("stage,preset", STAGE_PRESETS)
def test_every_stage_preset_is_picked_by_its_stage_and_preset(stage, preset):
    cfg = compose_with([f"stage={stage}", f"preset={preset}"])
    validate_config(cfg)
    own = OmegaConf.load(CONF / "stage_preset" / f"{stage}_{preset}.yaml")
    for key, value in own.get("stage", {}).items():
        if not isinstance(value, DictConfig):
            assert cfg.stage[key] == value, key


def test_stage_settings_of_a_guidance_model_are_picked_by_stage_and_guidance():
    """conf/stage_guidance/<stage>_<guidance>.yaml: the appearance stage's body priors come with the
    offline mini model only; with CLIP or OpenCLIP the stage is the paper's (no priors, grey body)."""
    own = OmegaConf.load(CONF / "stage_guidance" / "appearance_mini.yaml").stage
    mini = compose_with(["stage=appearance", "guidance=mini"]).stage
    assert (mini.lambda_body_surface, mini.lambda_unnamed_color, mini.coarse_color) == (
        own.lambda_body_surface, own.lambda_unnamed_color, own.coarse_color,
    ) and own.lambda_body_surface > 0 and own.lambda_unnamed_color > 0  # fmt: skip
    for guidance in ("clip", "open_clip"):
        paper = compose_with(["stage=appearance", f"guidance={guidance}"]).stage
        assert (paper.lambda_body_surface, paper.lambda_unnamed_color, paper.coarse_color) == (0, 0, "grey")
        assert paper.lambda_guidance_geometry > 0  # the paper's sculpting stays
    assert compose_with(["stage=pose", "guidance=mini"]).stage.name == "pose"  # other stages: no file, no change


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_overlay_composes(experiment):
    cfg = compose_with([f"experiment={experiment}"], return_hydra_config=True)
    assert cfg.experiment_name == experiment
    assert cfg.hydra.sweeper.params, "an experiment overlay declares what it sweeps"


@pytest.mark.parametrize("launcher", ["basic", "joblib", "submitit_local", "submitit_slurm"])
def test_launchers_compose(launcher):
    cfg = compose_with([f"hydra/launcher={launcher}"], return_hydra_config=True)
    assert cfg.hydra.launcher is not None


@pytest.mark.parametrize(
    "override,key",
    [
        ("trainer.max_step=5", "max_step"),  # misspelled
        ("stage.lamda_joints=1", "lamda_joints"),
        ("body.topolgy=notoes", "topolgy"),
        ("seeed=1", "seeed"),
        ("logger.wandb.projct=x", "projct"),
    ],
)
def test_unknown_keys_fail_with_their_name(override, key):
    with pytest.raises((ConfigCompositionException, ConfigKeyError, ConfigAttributeError)) as err:
        compose_with([override])
    message = str(err.value) + str(err.value.__cause__)
    assert key in message


@pytest.mark.parametrize("override,key", [("+stage.lambda_made_up=1", "lambda_made_up"), ("+sed=3", "sed")])
def test_keys_forced_in_with_plus_are_refused_before_running(override, key):
    cfg = compose_with([override])  # Hydra's `+` bypasses struct mode...
    with pytest.raises(ConfigKeyError) as err:  # ...so the runner validates again
        validate_config(cfg)
    assert key in str(err.value)


@pytest.mark.parametrize("group,option", [(g, o) for g, o in GROUP_OPTIONS if g != "hparams_search"])
def test_every_config_file_validates(group, option):
    validate_config(compose_with([f"{group}={option}"]))


def test_wrong_types_fail_with_the_key():
    with pytest.raises((ConfigCompositionException, ValidationError)) as err:
        compose_with(["trainer.max_steps=lots"])
    assert "max_steps" in str(err.value) + str(err.value.__cause__)


def test_schema_of_one_option_does_not_leak_into_another():
    # SMPL's model_path is not an Anny key.
    with pytest.raises(ConfigCompositionException) as err:
        compose_with(["body=anny", "body.model_path=/x"])
    assert "model_path" in str(err.value) + str(err.value.__cause__)
    assert compose_with(["body=smpl", "body.model_path=/x"]).body.model_path == "/x"


def test_presets_set_sizes():
    tiny, paper = compose_with(["preset=tiny"]), compose_with(["preset=paper"])
    assert tiny.render.height < paper.render.height == 224
    assert paper.trainer.max_steps == 30000


def test_the_old_preset_name_cpu_composes_the_same_config_as_tiny():
    from omegaconf import OmegaConf

    for stage in ("appearance", "motion", "shape"):
        old, new = compose_with([f"stage={stage}", "preset=cpu"]), compose_with([f"stage={stage}", "preset=tiny"])
        assert OmegaConf.to_yaml(old) == OmegaConf.to_yaml(new), stage
