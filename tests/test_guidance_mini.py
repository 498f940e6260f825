"""The project's own guidance model: checkpoint round trip through the `mini` backend, and a
short run of its training stage on synthetic renders."""

from dataclasses import replace
from pathlib import Path

import pytest
import torch
import trimesh
from hydra.errors import ConfigCompositionException

from avatar.body.anny_body import AnnyBody, AnnyBodyConfig
from avatar.engine.runner import run
from avatar.guidance import build_guidance
from avatar.guidance.evaluation import color_check, color_pair_right, laplacian_basis, retrieval_and_binding
from avatar.guidance.interpolate import interpolate
from avatar.guidance.mini import MINI_CHECKPOINT, MiniGuidanceConfig
from avatar.guidance.mini_model import MiniImageTextModel, MiniModelConfig
from avatar.guidance.synthetic.poses import BODY_WORDS
from avatar.guidance.training import hard_negative_loss
from avatar.stages.base import STAGES

from helpers import LOW_POLY, compose_cfg

# The training stage at test size (low-poly body, a small image tower, one MiniLM layer trained).
SMALL_STAGE = ("stage=train_guidance", f"stage.topology={LOW_POLY}", "stage.batch_size=16", "stage.embed_dim=32",
               "stage.image_channels=[8,16,16,16,16]", "stage.text_trainable_layers=1")  # fmt: skip
SMALL = MiniModelConfig(embed_dim=32, image_channels=(8, 16, 16, 16, 16), image_hidden=32, text_trainable_layers=1)


def test_checkpoint_round_trip_through_the_backend(tmp_path):
    model = MiniImageTextModel(SMALL)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.01 * torch.randn_like(p))
    path = tmp_path / "mini.pt"
    torch.save(model.checkpoint({"note": "test"}), path)
    # Only what training changes is stored (MiniLM's frozen layers come from the pip package).
    assert not any(
        k.startswith("text.bert.encoder.layer.0.") for k in torch.load(path, weights_only=True)["state_dict"]
    )
    guidance = build_guidance(MiniGuidanceConfig(checkpoint=str(path)))
    for key, value in model.trained_state_dict().items():  # stored as float16
        assert torch.equal(guidance.model.state_dict()[key], value.half().float()), key
    text = guidance.encode_text(["a person in a red shirt", "a tall man"])
    assert text.shape == (2, 32) and torch.allclose(text.norm(dim=-1), torch.ones(2))
    images = torch.rand(2, 3, 96, 96, requires_grad=True)  # resized to 64 by the backend
    loss = guidance.guidance_loss(images, "a person in a red shirt").sum()
    loss.backward()
    assert torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in guidance.parameters())


def test_interpolated_checkpoint_mixes_each_tower_by_its_own_weight_and_loads(tmp_path):
    """WiSE-FT of a fine-tune with its start (``avatar-guidance-interpolate``, avatar/guidance/interpolate.py):
    the image tower at one weight, the text side at another; the result is a loadable mini checkpoint."""
    base_model, tuned_model = MiniImageTextModel(SMALL), MiniImageTextModel(SMALL)
    tuned_model.load_state_dict(base_model.state_dict())
    with torch.no_grad():
        for p in tuned_model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    base, tuned = tmp_path / "base.pt", tmp_path / "tuned.pt"
    torch.save(base_model.checkpoint({"seed": 0}), base)
    torch.save(tuned_model.checkpoint({"seed": 0, "combinations": "train"}), tuned)
    out = interpolate(
        [
            "--base",
            str(base),
            "--finetuned",
            str(tuned),
            "--alpha-text",
            "0.5",
            "--alpha-image",
            "1",
            "--out",
            str(tmp_path / "mixed.pt"),
        ]
    )
    a, b, mixed = (torch.load(p, weights_only=True) for p in (base, tuned, out))
    assert mixed["meta"]["alpha_text"] == 0.5 and mixed["meta"]["combinations"] == "train"
    text_keys = [k for k in a["state_dict"] if not k.startswith("image.")]
    assert text_keys and any(k.startswith("text.bert.") for k in text_keys)
    for key, value in mixed["state_dict"].items():
        if key.startswith("image."):
            assert torch.equal(value, b["state_dict"][key]), key
        else:
            expected = 0.5 * (a["state_dict"][key].float() + b["state_dict"][key].float())
            assert torch.allclose(value.float(), expected, atol=1e-3), key
    guidance = build_guidance(MiniGuidanceConfig(checkpoint=str(out)))
    texts = ["a person in a red shirt"]
    embeddings = [build_guidance(MiniGuidanceConfig(checkpoint=str(p))).encode_text(texts) for p in (base, tuned)]
    mixed_text = guidance.encode_text(texts)
    assert not torch.allclose(mixed_text, embeddings[0], atol=1e-4) and not torch.allclose(
        mixed_text, embeddings[1], atol=1e-4
    )
    # Bad input: a weight outside [0, 1], another architecture.
    with pytest.raises(SystemExit, match="alpha_image=1.5"):
        interpolate(
            [
                "--base",
                str(base),
                "--finetuned",
                str(tuned),
                "--alpha-text",
                "0",
                "--alpha-image",
                "1.5",
                "--out",
                str(tmp_path / "x.pt"),
            ]
        )
    other = tmp_path / "other.pt"
    torch.save(MiniImageTextModel(replace(SMALL, embed_dim=16)).checkpoint({}), other)
    with pytest.raises(SystemExit, match="embed_dim"):
        interpolate(
            [
                "--base",
                str(base),
                "--finetuned",
                str(other),
                "--alpha-text",
                "0.5",
                "--alpha-image",
                "0.5",
                "--out",
                str(tmp_path / "x.pt"),
            ]
        )
    assert not (tmp_path / "x.pt").exists()


@pytest.mark.slow
def test_training_stage_runs_and_publishes_a_loadable_model(tmp_path):
    cfg_overrides = ["stage=train_guidance", f"stage.topology={LOW_POLY}", "stage.batch_size=16", "stage.eval_samples=32",
                     "stage.embed_dim=32", "stage.image_channels=[8,16,16,16,16]", "stage.text_trainable_layers=1",
                     "trainer.val_every_n_steps=0", "trainer.enable_progress_bar=false", "logger=csv"]  # fmt: skip
    cfg = compose_cfg(tmp_path, *cfg_overrides, "trainer.max_steps=2")
    result = run(cfg)
    assert result["steps"] == 2 and 0.0 <= result["retrieval_top1"] <= 1.0 and 0.0 <= result["binding_accuracy"] <= 1.0
    guidance = build_guidance(MiniGuidanceConfig(checkpoint=str(tmp_path / "mini.pt")))
    assert guidance.encode_image(torch.rand(1, 3, 64, 64)).shape == (1, 32)
    # Trained without the held-out attribute combinations (the default), recorded in the weights.
    assert torch.load(tmp_path / "mini.pt", weights_only=True)["meta"]["combinations"] == "train"
    assert 0.0 <= result["pose_accuracy"] <= 1.0

    # Fine-tuning: the next run starts from those weights (same architecture) ...
    first = torch.load(tmp_path / "mini.pt", weights_only=True)["state_dict"]
    tuned_dir = tmp_path / "tuned"
    tuned = compose_cfg(tuned_dir, *cfg_overrides, "trainer.max_steps=1", f"stage.init_weights={tmp_path / 'mini.pt'}")
    stage = STAGES.get("train_guidance")(tuned)
    for key, value in stage.model.trained_state_dict().items():
        assert torch.equal(value, first[key].float()), key
    assert stage.seen_combinations() == "train"  # the start never saw the held-out combinations either
    # ... and refuses weights of another architecture, naming the sizes to set.
    other = compose_cfg(
        tmp_path / "other", *cfg_overrides, "stage.embed_dim=64", f"stage.init_weights={tmp_path / 'mini.pt'}"
    )
    with pytest.raises(ValueError, match="embed_dim"):
        STAGES.get("train_guidance")(other)


def test_pose_word_heads_train_the_image_tower_on_body_views_only(tmp_path):
    cfg = compose_cfg(tmp_path, "stage=train_guidance", f"stage.topology={LOW_POLY}", "stage.batch_size=16",
                      "stage.embed_dim=32", "stage.image_channels=[8,16,16,16,16]", "stage.text_trainable_layers=1",
                      "stage.lambda_pose_words=0.5", "stage.pose_balance=0.5", "stage.pose_phrasings=true")  # fmt: skip
    stage = STAGES.get("train_guidance")(cfg)
    losses = stage.compute_losses(None)
    assert torch.isfinite(losses["pose_words"]) and losses["pose_words"] > 0
    losses["pose_words"].backward()
    assert stage.pose_heads["body"].weight.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in stage.model.image.parameters())
    # Face close-ups show no body: they are left out, and a batch of only them has no loss.
    image = torch.nn.functional.normalize(torch.randn(2, 32), dim=-1)
    faces = [{"view": "face", "pose": {"arms": "arms raised", "body": "walking"}}] * 2
    assert stage.pose_word_loss(image, faces) is None
    body = [{"view": "body", "pose": {"arms": None, "body": "walking"}}, faces[0]]
    alone = stage.pose_word_loss(image[:1], body[:1])
    assert torch.allclose(stage.pose_word_loss(image, body), alone)
    # A lower-body view shows no arms: it trains the body head only.
    legs = [{"view": "legs", "pose": {"arms": "arms raised", "body": "walking"}}]
    body_head_only = torch.nn.functional.cross_entropy(
        stage.pose_heads["body"](image[:1]), torch.tensor([BODY_WORDS.index("walking")])
    )
    assert torch.allclose(stage.pose_word_loss(image[:1], legs), body_head_only)


def test_change_negatives_are_a_loss_term_with_a_checked_copy_probability(tmp_path):
    stage = STAGES.get("train_guidance")(
        compose_cfg(tmp_path, *SMALL_STAGE, "stage.lambda_change=1.0", "stage.change_copy_prob=1.0")
    )
    losses = stage.compute_losses(None)
    assert set(losses) >= {"contrastive", "binding", "change"} and torch.isfinite(losses["change"])
    assert "change" not in STAGES.get("train_guidance")(compose_cfg(tmp_path / "off", *SMALL_STAGE)).compute_losses(
        None
    )
    with pytest.raises(ValueError, match="stage.change_copy_prob"):
        STAGES.get("train_guidance")(compose_cfg(tmp_path / "bad", *SMALL_STAGE, "stage.change_copy_prob=1.5"))


def test_binding_swaps_all_puts_every_swap_in_one_softmax(tmp_path):
    stage = STAGES.get("train_guidance")(compose_cfg(tmp_path, *SMALL_STAGE, "stage.binding_swaps=all"))
    assert torch.isfinite(stage.compute_losses(None)["binding"])
    torch.manual_seed(0)
    image = torch.nn.functional.normalize(torch.randn(3, 32), dim=-1)
    text = torch.nn.functional.normalize(torch.randn(3, 32), dim=-1)
    captions = ["a red shirt", "a blue shirt", "a green shirt", "a pink shirt"]
    with torch.no_grad():
        emb = dict(zip(captions, stage.model.encode_text(captions)))
    scale = torch.tensor(10.0, requires_grad=True)
    # Image 0 against two negatives, image 1 none (skipped), image 2 one: the mean of the two
    # rows' cross-entropies over (caption, its negatives).
    loss = hard_negative_loss(stage.model, image, text, [["a red shirt", "a blue shirt"], [], ["a green shirt"]], scale)
    row0 = torch.stack([image[0] @ text[0], image[0] @ emb["a red shirt"], image[0] @ emb["a blue shirt"]])
    row2 = torch.stack([image[2] @ text[2], image[2] @ emb["a green shirt"]])
    expected = 0.5 * (-(scale * row0).log_softmax(0)[0] - (scale * row2).log_softmax(0)[0])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()  # the padding of image 2's row must not reach the learnt scale's gradient
    assert torch.isfinite(scale.grad)
    assert hard_negative_loss(stage.model, image, text, [[], [], []], scale) is None
    with pytest.raises(ConfigCompositionException, match="stage.binding_swaps"):  # an Enum field: at composition
        STAGES.get("train_guidance")(compose_cfg(tmp_path / "bad", *SMALL_STAGE, "stage.binding_swaps=some"))


@pytest.mark.slow
def test_fine_tuning_without_forgetting_keeps_the_image_tower_and_anchors_color_free_text(tmp_path):
    small = (*SMALL_STAGE, "trainer.val_every_n_steps=0", "trainer.enable_progress_bar=false", "logger=csv")
    start = tmp_path / "start"
    run(compose_cfg(start, *small, "trainer.max_steps=1"))
    # Both options keep what a starting model learnt: without one they are refused, naming the fix.
    for option in ("stage.lambda_anchor=1.0", "stage.lambda_anchor_image=1.0", "stage.train_image_tower=false"):
        with pytest.raises(ValueError, match="stage.init_weights"):
            STAGES.get("train_guidance")(compose_cfg(tmp_path / "bad", *small, option))
    tuned_dir = tmp_path / "tuned"
    tuned = compose_cfg(tuned_dir, *small, "trainer.max_steps=3", f"stage.init_weights={start / 'mini.pt'}",
                        "stage.train_image_tower=false", "stage.lambda_anchor=1.0", "stage.lr=1e-2", "stage.text_lr=1e-3")  # fmt: skip
    stage = STAGES.get("train_guidance")(tuned)
    losses = stage.compute_losses(None)
    # At the start the model is its anchor: the anchor loss is zero, and it has a gradient path.
    assert set(losses) >= {"contrastive", "binding", "anchor"} and abs(losses["anchor"].item()) < 1e-5
    assert losses["anchor"].requires_grad and not any(p.requires_grad for p in stage.anchor.parameters())
    # With the image tower trained, lambda_anchor_image holds its embeddings: zero at the start.
    free = compose_cfg(
        tmp_path / "free", *small, f"stage.init_weights={start / 'mini.pt'}", "stage.lambda_anchor_image=1.0"
    )
    losses = STAGES.get("train_guidance")(free).compute_losses(None)
    assert abs(losses["anchor_image"].item()) < 1e-5 and losses["anchor_image"].requires_grad
    run(tuned)
    before = torch.load(start / "mini.pt", weights_only=True)["state_dict"]
    after = torch.load(tuned_dir / "mini.pt", weights_only=True)["state_dict"]
    image_keys = [k for k in before if k.startswith("image.")]
    assert image_keys and all(torch.equal(before[k], after[k]) for k in image_keys)
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("text."))
    # A second chunk starts from the tuned model but stays anchored to the first start: the anchor
    # is the start's weights, so the anchor loss is no longer zero.
    chunk = compose_cfg(tmp_path / "chunk", *small, f"stage.init_weights={tuned_dir / 'mini.pt'}",
                        f"stage.anchor_weights={start / 'mini.pt'}", "stage.lambda_anchor=1.0")  # fmt: skip
    stage = STAGES.get("train_guidance")(chunk)
    anchor = stage.anchor.state_dict()
    assert all(torch.equal(v, anchor[k]) for k, v in before.items())
    assert stage.compute_losses(None)["anchor"].item() > 1e-4
    with pytest.raises(ValueError, match="stage.anchor_weights"):
        STAGES.get("train_guidance")(compose_cfg(tmp_path / "bad", *small, f"stage.init_weights={start / 'mini.pt'}",
                                                 f"stage.anchor_weights={start / 'mini.pt'}"))  # fmt: skip


def test_color_field_basis_is_resolution_independent_and_skips_small_components():
    """Two meshes of one shape at 4x different resolutions get modes of the same scale (unit RMS
    per vertex), and an extra disconnected part (Anny's eyes and mouth) costs one more vector, not
    a body mode."""
    coarse, fine = (trimesh.creation.icosphere(subdivisions=s) for s in (2, 3))
    scales = []
    for mesh in (coarse, fine):
        basis = laplacian_basis(torch.tensor(mesh.vertices), torch.tensor(mesh.faces), k=4)
        assert basis.shape == (len(mesh.vertices), 4)
        scales.append(basis.pow(2).mean(0).sqrt())
    assert torch.allclose(scales[0], torch.ones(4), atol=1e-3) and torch.allclose(scales[1], torch.ones(4), atol=1e-3)
    eye = trimesh.creation.icosphere(subdivisions=1).apply_translation([3.0, 0.0, 0.0])
    both = trimesh.util.concatenate([coarse, eye])
    basis = laplacian_basis(torch.tensor(both.vertices), torch.tensor(both.faces), k=4)
    assert basis.shape[1] == 5
    on_body = basis[: len(coarse.vertices)]
    varying = (on_body.std(0) > 0.1).sum()  # the other vectors are constant on the body
    assert varying == 3, on_body.std(0)


def test_binding_verdicts_are_per_image_and_skip_images_without_a_negative():
    model = MiniImageTextModel(SMALL).eval()
    images = torch.rand(4, 3, SMALL.image_size, SMALL.image_size, generator=torch.Generator().manual_seed(0))
    captions = ["a red shirt and blue trousers", "a green top", "a blue shirt and red trousers", "a man"]
    swapped = ["a blue shirt and red trousers", None, "a red shirt and blue trousers", None]
    out = retrieval_and_binding(model, images, captions, swapped)
    with torch.no_grad():
        image, text = model.encode_image(images), model.encode_text(captions)
    expected = [bool(image[i] @ text[i] > image[i] @ text[j]) for i, j in ((0, 2), (2, 0))]
    assert out["binding_wins"] == expected and out["binding_pairs"] == 2
    assert out["binding_accuracy"] == pytest.approx(sum(expected) / 2)


def test_color_pair_verdict_reads_the_region_colors():
    right = {"torso": (0.8, 0.0, 0.1), "legs": (0.1, 0.1, 0.8)}
    assert color_pair_right(right, "red", "blue")
    assert not color_pair_right(right, "blue", "red")
    assert not color_pair_right({"torso": (0.2, 0.0, 0.9), "legs": (0.1, 0.1, 0.8)}, "red", "blue")  # one colour


@pytest.mark.slow
@pytest.mark.skipif(not Path(MINI_CHECKPOINT).is_file(), reason="the mini guidance model is not trained yet")
def test_shipped_mini_turns_the_torso_red_and_the_legs_blue():
    """The real test of a guidance model (issue 6): optimise only a grey body's low-frequency
    colour field for the prompt from three seeds (views, backgrounds, crops); read the result per
    body region (not by the model's score)."""
    guidance = build_guidance(MiniGuidanceConfig())
    body = AnnyBody(AnnyBodyConfig(topology=LOW_POLY))
    check = color_check(guidance, body, "red", "blue", seeds=3, steps=100, views=4, size=96)
    assert all(check.right), (check.torso, check.legs)
    for torso, legs in zip(check.torso, check.legs):
        assert torso[0] > torso[1] + 0.3 and torso[0] > torso[2] + 0.3, torso
        assert legs[2] > legs[0] + 0.3 and legs[2] > legs[1] + 0.3, legs


SCORER_CHECKPOINT = Path(MINI_CHECKPOINT).with_name("mini_scorer.pt")


def test_shipped_scorer_is_an_independent_model_that_reads_garment_colors():
    """The metrics model (issue 6): another seed and architecture than the guiding model, and it
    prefers the right caption of a rendered outfit over the one with the colours swapped."""
    from avatar.body.regions import REGIONS, vertex_regions
    from avatar.render import MeshRenderConfig, MeshRenderer, orbit_cameras

    scorer = build_guidance(MiniGuidanceConfig(checkpoint=str(SCORER_CHECKPOINT)))
    guide = build_guidance(MiniGuidanceConfig())
    assert scorer.model.cfg.image_channels != guide.model.cfg.image_channels
    assert scorer.model.cfg.embed_dim != guide.model.cfg.embed_dim
    body = AnnyBody(AnnyBodyConfig(topology=LOW_POLY))
    vertices = body().vertices[0]
    regions = vertex_regions(body.skinning_weights)
    colors = torch.full_like(vertices, 0.75)
    colors[(regions == REGIONS.index("torso")) | (regions == REGIONS.index("arms"))] = torch.tensor([0.9, 0.1, 0.1])
    colors[(regions == REGIONS.index("legs")) | (regions == REGIONS.index("hips"))] = torch.tensor([0.1, 0.2, 0.9])
    centre = 0.5 * (vertices.amax(0) + vertices.amin(0))
    images = (
        MeshRenderer(MeshRenderConfig(height=96, width=96))
        .render(vertices, body.faces, orbit_cameras(4, 2.8, 10.0, centre, 45.0), colors=colors, background="white")
        .rgb
    )
    right = 1 - scorer.guidance_loss(images, "a person in a red shirt and blue trousers").mean()
    swapped = 1 - scorer.guidance_loss(images, "a person in a blue shirt and red trousers").mean()
    assert right > swapped + 0.05, (float(right), float(swapped))
