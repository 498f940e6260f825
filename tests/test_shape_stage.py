"""The shape stage (text -> coarse body shape): AvatarCLIP's codebook query by guidance
direction, its on-disk codebook cache, the refinement and the outputs."""

from __future__ import annotations

import json
import re

import imageio.v2 as imageio
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import trimesh
from hydra.errors import ConfigCompositionException
from test_guidance import clip_checkpoint, open_clip_checkpoint  # noqa: F401  (fixtures)

from avatar.stages.shape import ShapeStage, direction_scores, score_codebook

from helpers import LOW_POLY, clip_backend_overrides, compose_cfg, run_train

FAST_SHAPE = [
    "stage=shape",
    f"body.topology={LOW_POLY}",
    "render.height=48",
    "render.width=48",
    "stage.codebook_size=24",
    "stage.refine_steps=2",
    "stage.refine_azimuths=[0.0]",
    "stage.preview_size=48",
]


@pytest.mark.slow
def test_shape_stage_runs_through_train_py_and_caches_the_codebook(tmp_path):
    cache = tmp_path / "cache"
    run1, run2 = tmp_path / "run1", tmp_path / "run2"
    run_train(
        *FAST_SHAPE, "prompt.shape=a tall heavy man", f"stage.cache_dir={cache}", "logger=csv", f"hydra.run.dir={run1}"
    )

    with np.load(run1 / "shape.npz") as npz:  # no pickle: every field is a plain array
        assert str(npz["body"]) == "anny" and str(npz["prompt"]) == "a tall heavy man"
        names = list(npz["shape_names"])
        assert names == ["gender", "age", "muscle", "weight", "height", "proportions"]
        assert npz["shape"].shape == (6,) and ((npz["shape"] >= 0) & (npz["shape"] <= 1)).all()
        assert 0 <= int(npz["codebook_index"]) < 24 and np.isfinite(npz["codebook_score"])
        num_verts = npz["vertices"].shape[0]
        assert npz["skinning_weights"].shape == (num_verts, 22)
        assert np.allclose(npz["skinning_weights"].sum(1), 1.0, atol=1e-4)
        assert npz["joints"].shape == (22, 3) and npz["top_k_index"].shape == (5,)
    mesh = trimesh.load(run1 / "body_rest.ply", process=False)
    assert len(mesh.vertices) == num_verts == 615 and len(mesh.faces) > 0
    skeleton = json.loads((run1 / "skeleton.json").read_text())
    assert len(skeleton["joint_names"]) == len(skeleton["parents"]) == len(skeleton["joints"]) == 22
    assert skeleton["pose"] == "t_pose"
    # T-pose: the wrists are level with the shoulders, far apart.
    joints = np.array(skeleton["joints"])
    assert abs(joints[20, 0] - joints[21, 0]) > 1.0
    image = imageio.imread(run1 / "shape.png")  # neutral, top 5, final front and side
    assert image.shape[1] > 8 * 48 and image.shape[0] > 48 and image.std() > 10
    result = json.loads((run1 / "result.json").read_text())
    assert result["codebook_cache_hit"] is False and result["codebook_renders"] == 24
    assert result["refine_steps"] == 2 and np.isfinite(result["objective"])
    metrics = (run1 / "csv" / "metrics.csv").read_text()
    assert "train/loss_direction" in metrics and "train/lambda_prior" in metrics

    # A second prompt with the same settings: one text encoding, no codebook renders.
    proc = run_train(
        *FAST_SHAPE, "prompt.shape=a short slim woman", f"stage.cache_dir={cache}", "stage.refine_steps=0",
        "stage.bind_pose=a_pose", "logger=none", f"hydra.run.dir={run2}",
    )  # fmt: skip
    result2 = json.loads((run2 / "result.json").read_text())
    assert result2["codebook_cache_hit"] is True and result2["codebook_renders"] == 0
    assert result2["codebook_cache"] == result["codebook_cache"]
    assert "Shape codebook: cache hit" in proc.stdout + proc.stderr
    assert result2["shape"] == result2["codebook_shape"]  # no refinement
    assert json.loads((run2 / "skeleton.json").read_text())["pose"] == "a_pose"


def test_cache_key_changes_with_what_the_embeddings_depend_on(tmp_path, anny_low):
    base = [*FAST_SHAPE, f"stage.cache_dir={tmp_path}"]

    def cache_file(extra: str):
        stage = ShapeStage(compose_cfg(tmp_path / "r", *base, *extra.split()))
        return stage.embedding_cache().path(stage.cache_key())

    extras = ("", "stage.codebook_seed=1", "render.height=40", "stage.framing=fixed", "prompt.shape=a_child")
    paths = {extra: cache_file(extra) for extra in extras}
    assert paths[""] == paths["prompt.shape=a_child"]  # the prompt is not part of the key
    assert len({paths[k] for k in ("", "stage.codebook_seed=1", "render.height=40", "stage.framing=fixed")}) == 4


def test_empty_prompt_names_the_config_key(tmp_path):
    cfg = compose_cfg(tmp_path, *FAST_SHAPE, "prompt.shape=' '")
    with pytest.raises(ValueError, match=r"prompt\.shape"):
        ShapeStage(cfg)


@pytest.mark.parametrize(
    ("override", "choices"),
    [("stage.framing=wide", "fit, fixed"), ("stage.scoring=cosine", "direction, similarity"),
     ("stage.bind_pose=x_pose", "t_pose, a_pose")],
)  # fmt: skip
def test_closed_choices_fail_when_the_config_is_composed(tmp_path, override, choices):
    with pytest.raises(ConfigCompositionException, match=re.escape(override)) as err:
        compose_cfg(tmp_path, *FAST_SHAPE, override)
    assert choices in str(err.value.__cause__)
    key, value = override.split("=")[0].removeprefix("stage."), choices.split(", ")[-1]
    assert compose_cfg(tmp_path, *FAST_SHAPE, f"stage.{key}={value}").stage[key] == value


class _WordGuidance:
    """A guidance-like object: texts embed as the sum of fixed word directions."""

    device = torch.device("cpu")

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.words = {w: F.normalize(torch.randn(32, generator=g), dim=0) for w in ("person", "tall", "short", "heavy")}

    def encode_text(self, texts):
        out = []
        for text in texts:
            vec = sum(v for w, v in self.words.items() if w in text.split())
            out.append(F.normalize(vec, dim=0))
        return torch.stack(out)


def test_direction_scoring_picks_the_entry_along_the_text_direction():
    guide = _WordGuidance()
    w = guide.words
    neutral_image = F.normalize(w["person"] + 0.2 * torch.randn(32, generator=torch.Generator().manual_seed(1)), dim=0)
    # Entries: neutral, neutral moved along "tall", "short", "heavy"; and one very close to the
    # prompt *text* but not along the direction (what plain similarity would pick).
    codebook = torch.stack([
        neutral_image,
        F.normalize(neutral_image + 0.5 * w["tall"], dim=0),
        F.normalize(neutral_image + 0.5 * w["short"], dim=0),
        F.normalize(neutral_image + 0.5 * w["heavy"], dim=0),
        F.normalize(w["person"] + w["tall"] + 0.9 * w["heavy"], dim=0),
    ])  # fmt: skip
    template = "a 3d rendering of a {} in unreal engine"
    neutral_text = template.format("person")
    picks = {
        word: int(
            score_codebook(
                guide, codebook, codebook[0], template.format(f"{word} person"), neutral_text, "direction"
            ).argmax()
        )
        for word in ("tall", "short", "heavy")
    }
    assert picks == {"tall": 1, "short": 2, "heavy": 3}
    scores = direction_scores(
        codebook, codebook[0], guide.encode_text(["a tall person"])[0], guide.encode_text(["a person"])[0]
    )
    assert scores[0] == 0.0  # the neutral entry has no direction
    assert (
        int(score_codebook(guide, codebook, codebook[0], "a tall heavy person", "a person", "similarity").argmax()) == 4
    )


def test_mini_guidance_orders_shapes_and_its_shape_map_turns_the_rest(tmp_path):
    """The shipped offline guidance: "tall" vs "short" and "heavy" vs "slim" pick codebook
    entries (mean of the top 5) whose phenotypes differ in the right direction. Read through the
    shipped shape map (``stage.text_map=auto``), "a muscular person" and "a man" also move muscle
    up and gender down (on this 128-body codebook they did not without it: muscle -0.27,
    gender +0.31)."""
    cfg = compose_cfg(
        tmp_path, "stage=shape", f"body.topology={LOW_POLY}", "render.height=64", "render.width=64",
        "stage.codebook_size=128", f"stage.cache_dir={tmp_path}",
    )  # fmt: skip
    stage = ShapeStage(cfg)
    from avatar.guidance import build_guidance

    guidance = build_guidance(cfg.guidance)
    shapes, emb, hit, _ = stage.codebook(guidance)
    assert not hit and stage.codebook_renders == 128
    text_map = stage.text_map(guidance)
    assert text_map is not None and text_map.file.endswith("mini_shape_map.pt")
    names = stage.body.shape_names

    def moved(prompt: str, phenotype: str, text_map=text_map) -> float:
        """Top-5 mean minus codebook mean of one phenotype, as avatar-eval paraphrase reads it."""
        text = cfg.stage.template.format(prompt)
        scores = score_codebook(guidance, emb, emb[0], text, cfg.stage.neutral_text, "direction", text_map)
        return float((shapes[scores.topk(5).indices].mean(0) - shapes.mean(0))[names.index(phenotype)])

    assert moved("a tall man", "height") > moved("a short man", "height") + 0.3
    assert moved("a heavy person", "weight") > moved("a slim person", "weight") + 0.2
    assert moved("a muscular person", "muscle") > 0.1
    assert moved("a muscular person", "muscle") > moved("a muscular person", "muscle", text_map=None) + 0.2
    assert moved("a man", "gender") < -0.1


def test_smpl_body_and_refinement_move_the_shape(tmp_path, smpl_dir):
    cfg = compose_cfg(
        tmp_path, "stage=shape", "body=smpl", f"body.model_path={smpl_dir}", "render.height=48", "render.width=48",
        "stage.codebook_size=8", "stage.refine_steps=3", "stage.refine_lr=0.2", "stage.preview_size=48",
        f"stage.cache_dir={tmp_path / 'cache'}", "prompt.shape=a tall man",
    )  # fmt: skip
    result = ShapeStage(cfg).export()
    assert result["body"] == "smpl" and len(result["shape"]) == 10
    assert result["shape"] != result["codebook_shape"]  # three Adam steps moved the betas
    with np.load(tmp_path / "shape.npz") as npz:
        assert npz["vertices"].shape == (6890, 3) and npz["skinning_weights"].shape == (6890, 22)
    assert (tmp_path / "shape.png").is_file() and (tmp_path / "body_rest.ply").is_file()


@pytest.mark.parametrize("backend", ["clip", "open_clip"])
def test_shape_stage_runs_with_clip_backends(tmp_path, backend, request):
    """Structural: CLIP / OpenCLIP through their real loaders from tiny synthetic checkpoints."""
    from avatar.engine.runner import run

    guidance = clip_backend_overrides(backend, request)
    result = run(compose_cfg(tmp_path, *FAST_SHAPE, *guidance, f"stage.cache_dir={tmp_path / 'cache'}", "logger=csv"))
    assert np.isfinite(result["objective"]) and (tmp_path / "shape.npz").is_file()


def test_appearance_stage_starts_from_a_shape_run(tmp_path):
    """The pipeline's hand-over: the appearance stage builds its coarse body from shape.npz."""
    from avatar.engine.runner import run
    from avatar.stages import build_stage

    shape_dir = tmp_path / "shape"
    run(compose_cfg(shape_dir, *FAST_SHAPE, "prompt.shape=a tall man", "stage.refine_steps=0",
                    "stage.bind_pose=a_pose", f"stage.cache_dir={tmp_path / 'cache'}", "logger=csv"))  # fmt: skip
    with np.load(shape_dir / "shape.npz") as npz:
        shape, rest = torch.as_tensor(npz["shape"]), torch.as_tensor(npz["vertices"])
    stage = build_stage(
        compose_cfg(tmp_path / "app", "stage=appearance", f"body.topology={LOW_POLY}", f"stage.shape_dir={shape_dir}")
    )
    assert torch.allclose(stage.shape[0], shape)
    # The coarse body is the shape run's body in its bind pose (A-pose), mapped into the unit sphere.
    world = stage.world_from_object(stage.coarse_vertices)
    assert torch.allclose(world - world.mean(0), rest - rest.mean(0), atol=1e-4)
    assert stage.coarse_vertices.norm(dim=-1).max() <= stage.stage_cfg.object_radius + 1e-5


def test_the_neutral_prompt_keeps_the_neutral_body(tmp_path):
    """ "a person" in the template is the neutral text itself: no direction, so the neutral body
    (entry 0), not whichever entry a tie of zero scores lands on."""
    from avatar.engine.runner import run

    result = run(
        compose_cfg(
            tmp_path / "run",
            *FAST_SHAPE,
            "stage.refine_steps=0",
            "prompt.shape=a person",
            f"stage.cache_dir={tmp_path / 'cache'}",
            "logger=none",
        )
    )
    assert result["codebook_index"] == 0
