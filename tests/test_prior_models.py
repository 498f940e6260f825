"""VPoser v2 and AvatarCLIP's motion VAE: the originals' state-dict layouts, loading from files
wrapped as the releases wrap them, the 6D conventions, and the canonical-pose conversions."""

import dataclasses
import os
import sys
import types

import pytest
import roma
import torch
import torch.nn.functional as F
from torch import nn

from avatar.body.skeleton import UPRIGHT
from avatar.priors import (
    MotionVAE,
    MotionVAEConfig,
    PriorWeightsError,
    VPoser,
    canonical_to_features,
    canonical_to_vposer,
    features_to_canonical,
    load_avatarclip_motion_vae,
    load_vposer_checkpoint,
    vposer_to_canonical,
)
from avatar.priors.motion_vae import rot6d_to_rotmat, rotmat_to_6d


def perturbed(model: nn.Module, seed: int) -> nn.Module:
    """Random weights and batch-norm statistics, so a wrong or skipped load cannot pass."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point() or name.endswith(".pe"):
                continue
            t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            if name.endswith("running_var"):
                t.abs_().add_(0.5)
    return model.eval()


def random_rotvecs(*shape: int, seed: int = 0) -> torch.Tensor:
    """Axis-angle vectors with angles below pi (where axis-angle is unique)."""
    g = torch.Generator().manual_seed(seed)
    axis = F.normalize(torch.randn(*shape, 3, generator=g), dim=-1)
    return axis * torch.rand(*shape, 1, generator=g) * 3.0


def assert_same_state(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def assert_rotations(m: torch.Tensor) -> None:
    eye = torch.eye(3).expand_as(m)
    # float32 Gram-Schmidt of nearly parallel raw vectors loses a few digits
    assert torch.allclose(m.transpose(-1, -2) @ m, eye, atol=1e-4)
    assert torch.allclose(torch.linalg.det(m), torch.ones(m.shape[:-2]), atol=1e-4)


# ---- VPoser ---------------------------------------------------------------------------------

VPOSER_KEYS = [
    *(f"encoder_net.{i}.{p}" for i in (1, 4)
      for p in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")),
    *(f"encoder_net.{i}.{p}" for i in (2, 6, 7) for p in ("weight", "bias")),
    *(f"encoder_net.8.{h}.{p}" for h in ("mu", "logvar") for p in ("weight", "bias")),
    *(f"decoder_net.{i}.{p}" for i in (0, 3, 5) for p in ("weight", "bias")),
]  # fmt: skip


def test_vposer_has_the_original_state_dict_layout():
    state = VPoser().state_dict()
    assert sorted(state) == sorted(VPOSER_KEYS)
    assert state["encoder_net.2.weight"].shape == (512, 63)
    assert state["encoder_net.8.mu.weight"].shape == (32, 512)
    assert state["decoder_net.5.weight"].shape == (126, 512)


def test_vposer_shapes_and_valid_rotations():
    vp = perturbed(VPoser(), 0)
    q_z = vp.encode(random_rotvecs(4, 21).reshape(4, 63))
    assert isinstance(q_z, torch.distributions.Normal) and q_z.mean.shape == (4, 32)
    assert (q_z.scale > 0).all()
    assert torch.allclose(vp.encode(random_rotvecs(4, 21)).mean, q_z.mean)  # (B, 21, 3) too
    out = vp.decode(torch.randn(5, 32))
    assert out["pose_body"].shape == (5, 21, 3) and out["pose_body_matrot"].shape == (5, 21, 3, 3)
    assert_rotations(out["pose_body_matrot"])
    matrot = roma.rotvec_to_rotmat(out["pose_body"])
    assert torch.allclose(matrot, out["pose_body_matrot"], atol=1e-5)
    full = vp(random_rotvecs(3, 21).reshape(3, 63))
    assert {"q_z", "q_z_sample", "poZ_body_mean", "poZ_body_std", "pose_body"} <= full.keys()
    a, b = (vp.sample(6, torch.Generator().manual_seed(1))["pose_body"] for _ in range(2))
    assert a.shape == (6, 21, 3) and torch.equal(a, b)


def test_vposer_6d_is_the_originals_interleaved_column_layout():
    # ContinousRotReprDecoder reads each joint's 6 numbers as a row-major 3x2 matrix whose
    # columns are the two vectors, and returns them as the rotation's first two columns.
    rotmat = roma.rotvec_to_rotmat(random_rotvecs(8))
    assert torch.allclose(VPoser().decoder_net[6](rotmat[..., :2].reshape(8, 6)), rotmat, atol=1e-6)


def save_vposer_release(folder, models_by_epoch) -> None:
    """The V02_05 download: a yaml and Lightning snapshots whose state_dict holds the model under
    `vp_model.` beside the trainer's body model, and callbacks keyed by a class whose package
    (Lightning) the loading side does not have."""
    (folder / "snapshots").mkdir(parents=True)
    (folder / "V02_05.yaml").write_text("model_params:\n  latentD: 32\n  num_neurons: 512\n")
    callbacks = types.ModuleType("fake_lightning_callbacks")
    early_stopping = type("EarlyStopping", (), {"__module__": callbacks.__name__})
    callbacks.EarlyStopping = early_stopping
    sys.modules[callbacks.__name__] = callbacks
    try:
        for epoch, model in models_by_epoch.items():
            state = {f"vp_model.{k}": v for k, v in model.state_dict().items()}
            state["bm_train.init_v_template"] = torch.zeros(1, 10, 3)
            ckpt = {
                "epoch": epoch,
                "pytorch-lightning_version": "1.0.8",
                "state_dict": state,
                "callbacks": {early_stopping: {"wait_count": 0, "best_score": torch.tensor(0.03)}},
                "optimizer_states": [{"state": {}, "param_groups": [{"lr": 1e-3}]}],
            }
            torch.save(ckpt, folder / "snapshots" / f"V02_05_epoch={epoch:02d}_val_loss=0.03.ckpt")
    finally:
        del sys.modules[callbacks.__name__]


def test_load_vposer_release_folder_ckpt_and_plain_state_dict(tmp_path):
    final, early = perturbed(VPoser(), 13), perturbed(VPoser(), 8)
    folder = tmp_path / "V02_05"
    save_vposer_release(folder, {8: early, 13: final})
    snapshots = sorted((folder / "snapshots").iterdir())
    os.utime(snapshots[0], (2e9, 2e9))  # epoch 08 newest on disk: the epoch decides, not mtime

    loaded = load_vposer_checkpoint(folder)
    assert_same_state(loaded, final)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    pose = random_rotvecs(4, 21).reshape(4, 63)
    z = torch.randn(4, 32)
    assert torch.equal(loaded.encode(pose).mean, final.encode(pose).mean)
    assert torch.equal(loaded.encode(pose).scale, final.encode(pose).scale)
    assert torch.equal(loaded.decode(z)["pose_body"], final.decode(z)["pose_body"])

    assert_same_state(load_vposer_checkpoint(snapshots[0]), early)  # a .ckpt file itself
    torch.save(final.state_dict(), tmp_path / "vposer.pt")
    assert_same_state(load_vposer_checkpoint(tmp_path / "vposer.pt"), final)


def test_vposer_missing_path_names_config_key_and_source(tmp_path):
    for path in (tmp_path / "nowhere", ""):
        with pytest.raises(FileNotFoundError) as err:
            load_vposer_checkpoint(path)
        message = str(err.value)
        assert "prior.vposer_path" in message
        assert "https://smpl-x.is.tue.mpg.de" in message and "VPoser v2.0" in message
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="snapshots"):
        load_vposer_checkpoint(tmp_path / "empty")


def test_vposer_mismatched_state_dict_names_the_keys(tmp_path):
    state = VPoser().state_dict()
    state["decoder_net.6.weight"] = state.pop("decoder_net.5.weight")
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(PriorWeightsError) as err:
        load_vposer_checkpoint(tmp_path / "bad.pt")
    message = str(err.value)
    assert "missing keys (1): decoder_net.5.weight" in message
    assert "unexpected keys (1): decoder_net.6.weight" in message
    assert "prior.vposer_path" in message


def test_canonical_vposer_round_trip():
    rotations = random_rotvecs(3, 22)
    body = canonical_to_vposer(rotations)
    assert body.shape == (3, 63)
    assert torch.equal(vposer_to_canonical(body, root=rotations[:, 0]), rotations)
    upright = vposer_to_canonical(body.reshape(3, 21, 3))
    assert torch.equal(upright[:, 0], torch.tensor(UPRIGHT).expand(3, 3))
    assert torch.equal(upright[:, 1:], rotations[:, 1:])


# ---- AvatarCLIP's motion VAE ----------------------------------------------------------------


def expected_motion_vae_shapes() -> dict[str, tuple[int, ...]]:
    shapes = {
        "encoder.query": (1, 256), "encoder.skelEmbedding.weight": (256, 330),
        "encoder.skelEmbedding.bias": (256,), "encoder.pos_encoder.pe": (5000, 1, 256),
        "encoder.final.weight": (256, 256), "encoder.final.bias": (256,),
        "decoder.pos_encoder.pe": (5000, 1, 256), "decoder.final.weight": (330, 256),
        "decoder.final.bias": (330,),
    }  # fmt: skip
    attention = {"in_proj_weight": (768, 256), "in_proj_bias": (768,),
                 "out_proj.weight": (256, 256), "out_proj.bias": (256,)}  # fmt: skip
    feedforward = {"linear1.weight": (1024, 256), "linear1.bias": (1024,),
                   "linear2.weight": (256, 1024), "linear2.bias": (256,)}  # fmt: skip
    for i in range(4):
        enc, dec = f"encoder.seqTransEncoder.layers.{i}.", f"decoder.seqTransDecoder.layers.{i}."
        for attn, prefix in (("self_attn", enc), ("self_attn", dec), ("multihead_attn", dec)):
            shapes.update({f"{prefix}{attn}.{k}": s for k, s in attention.items()})
        for prefix, norms in ((enc, 2), (dec, 3)):
            shapes.update({f"{prefix}{k}": s for k, s in feedforward.items()})
            for n in range(1, norms + 1):
                shapes.update({f"{prefix}norm{n}.weight": (256,), f"{prefix}norm{n}.bias": (256,)})
    return shapes


def test_motion_vae_has_avatarclips_state_dict_layout():
    state = MotionVAE().state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == expected_motion_vae_shapes()


def reference_forward(state, features, num_frames):
    """AvatarCLIP's computation written sequence-first, as its modules run: checks that the
    batch-first module adds the same positional rows to the same tokens."""

    def stack(layer_type, prefix):
        layers = nn.ModuleList([layer_type(256, 4, 1024, 0.1, "gelu") for _ in range(4)])
        sub = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
        layers.load_state_dict(sub)
        return layers.eval()

    enc_layers = stack(nn.TransformerEncoderLayer, "encoder.seqTransEncoder.layers.")
    dec_layers = stack(nn.TransformerDecoderLayer, "decoder.seqTransDecoder.layers.")
    b, t = features.shape[:2]
    pe = state["encoder.pos_encoder.pe"]
    embed = state["encoder.skelEmbedding.weight"], state["encoder.skelEmbedding.bias"]
    x = F.linear(features, *embed)
    x = torch.cat([state["encoder.query"].view(1, 1, -1).repeat(b, 1, 1), x], 1).permute(1, 0, 2)
    x = x + pe[: t + 1]
    for layer in enc_layers:
        x = layer(x)
    code = F.linear(x[0], state["encoder.final.weight"], state["encoder.final.bias"])
    y = state["decoder.pos_encoder.pe"][:num_frames].repeat(1, b, 1)
    for layer in dec_layers:
        y = layer(y, code.view(1, b, -1))
    y = F.linear(y, state["decoder.final.weight"], state["decoder.final.bias"]).permute(1, 0, 2)
    return code, y


def test_motion_vae_matches_the_original_computation():
    vae = perturbed(MotionVAE(), 3)
    features = canonical_to_features(random_rotvecs(2, 60, 22))
    with torch.no_grad():
        mu, logvar = vae.encode(features)
        decoded = vae.decode(mu)
        ref_code, ref_decoded = reference_forward(vae.state_dict(), features, 60)
        unflattened = vae.encode(features.reshape(2, 60, 55, 6))[0]
    assert mu.shape == (2, 256) and logvar is None and decoded.shape == (2, 60, 330)
    assert torch.allclose(mu, ref_code, atol=1e-5)
    assert torch.allclose(decoded, ref_decoded, atol=1e-5)
    assert vae.decode(mu, num_frames=30).shape == (2, 30, 330)
    assert torch.equal(unflattened, mu)


def test_motion_vae_mask_ignores_padded_frames():
    vae = perturbed(MotionVAE(), 4)
    features = canonical_to_features(random_rotvecs(2, 60, 22))
    mask = torch.zeros(2, 60, dtype=torch.bool)
    mask[:, :40] = True
    garbage = torch.where(mask[..., None], features, torch.randn_like(features) * 5)
    with torch.no_grad():
        masked, _ = vae.encode(garbage, mask)
        short, _ = vae.encode(features[:, :40])
    assert torch.allclose(masked, short, atol=1e-5)


def test_variational_option_splits_mu_logvar():
    vae = MotionVAE(MotionVAEConfig(variational=True)).train()
    features = canonical_to_features(random_rotvecs(2, 60, 22))
    out = vae(features)
    assert out["mu"].shape == out["logvar"].shape == out["z"].shape == (2, 256)
    assert out["features"].shape == (2, 60, 330) and not torch.equal(out["z"], out["mu"])


def test_convolutional_backbone_keeps_the_interface_and_a_code_per_time_step():
    """The free model's backbone (issue #26): same encode/decode/forward contract as AvatarCLIP's
    transformer; its code is latent_dim / 8 numbers for each of the 8 bottleneck steps of a
    60-frame clip, so a change late in the clip moves the late part of the code most."""
    config = MotionVAEConfig(num_joints=22, latent_dim=64, num_layers=1, variational=True, normalise=True,
                             logvar_init=-6.0, backbone="conv")  # fmt: skip
    vae = perturbed(MotionVAE(config), 6).eval()
    features = canonical_to_features(random_rotvecs(3, 60, 22), 22)
    vae.set_feature_statistics(features)
    with torch.no_grad():
        mu, logvar = vae.encode(features)
        assert mu.shape == logvar.shape == (3, 64)
        assert vae.decode(mu).shape == (3, 60, 132) and vae.decode(mu, 30).shape == (3, 30, 132)
        late = features.clone()
        late[:, 52:] = canonical_to_features(random_rotvecs(3, 8, 22, seed=1), 22)
        moved = (vae.encode(late)[0] - mu).abs().reshape(3, 8, 8).mean(dim=(0, 2))  # (step,)
    assert moved[-1] > 5 * moved[:4].max()
    vae.train()
    out = vae(features)
    assert out["features"].shape == (3, 60, 132) and not torch.equal(out["z"], out["mu"])

    # Padded frames do not reach the code.
    mask = torch.ones(3, 60, dtype=torch.bool)
    mask[:, 50:] = False
    garbage = torch.where(mask[..., None], features, torch.randn_like(features) * 5)
    with torch.no_grad():
        assert torch.allclose(vae.eval().encode(garbage, mask)[0], vae.encode(features, mask)[0], atol=1e-6)

    with pytest.raises(ValueError, match="encodes 60-frame clips, got 40"):
        vae.encode(features[:, :40])
    with pytest.raises(ValueError, match="at most 64 frames"):
        vae.decode(mu, 65)
    with pytest.raises(ValueError, match="multiple of 8"):
        MotionVAE(MotionVAEConfig(latent_dim=60, backbone="conv"))
    with pytest.raises(ValueError, match=r"backbone must be one of \['conv', 'transformer'\], got 'lstm'"):
        MotionVAE(MotionVAEConfig(backbone="lstm"))


def test_convolutional_backbone_time_grid_and_width_are_settings():
    """conv_levels sets the code's time grid (2 halvings: a 60-frame clip is 15 steps) and
    conv_channels the width apart from the code size; the code still keeps time."""
    config = MotionVAEConfig(num_joints=22, latent_dim=60, num_layers=1, variational=True, normalise=True,
                             logvar_init=-6.0, backbone="conv", conv_levels=2, conv_channels=32)  # fmt: skip
    vae = perturbed(MotionVAE(config), 7).eval()
    assert vae.encoder.embed.out_channels == 32 and vae.encoder.length == 15 and vae.encoder.per_step == 4
    features = canonical_to_features(random_rotvecs(3, 60, 22), 22)
    vae.set_feature_statistics(features)
    with torch.no_grad():
        mu, _ = vae.encode(features)
        assert mu.shape == (3, 60) and vae.decode(mu).shape == (3, 60, 132)
        late = features.clone()
        late[:, 56:] = canonical_to_features(random_rotvecs(3, 4, 22, seed=1), 22)
        moved = (vae.encode(late)[0] - mu).abs().reshape(3, 15, 4).mean(dim=(0, 2))  # (step,)
    assert moved[-1] > 5 * moved[:10].max()
    with pytest.raises(ValueError, match="at most 60 frames"):
        vae.decode(mu, 61)
    with pytest.raises(ValueError, match="multiple of 15"):
        MotionVAE(MotionVAEConfig(latent_dim=64, backbone="conv", conv_levels=2))


def test_fitted_code_prior_whitens_the_code_and_keeps_reconstructions():
    """code_prior: after fit_code_prior, the fitting clips' codes are ~N(0, I) in the public code
    space, encode -> decode reconstructs exactly as before the fit, decode(0) is the decoded
    training mean, and draws from N(0, I) reproduce the codes' correlations."""
    config = MotionVAEConfig(num_joints=22, latent_dim=30, num_layers=1, variational=True, normalise=True,
                             logvar_init=-2.0, backbone="conv", conv_levels=2, conv_channels=16, code_prior=True)  # fmt: skip
    vae = perturbed(MotionVAE(config), 8).eval()
    vae.code_mean.zero_()  # perturbed() also moved the prior's buffers: back to N(0, I), as trained
    vae.code_scale_tril.copy_(torch.eye(30))
    # Smooth clips with correlated joints: their codes are correlated too.
    t = torch.linspace(0, 1, 60)[None, :, None, None]
    phase, amp = torch.rand(400, 1, 22, 3), torch.rand(400, 1, 1, 1)
    features = canonical_to_features(0.6 * amp * torch.sin(6.28 * (t + phase)), 22)
    vae.set_feature_statistics(features)
    with torch.no_grad():
        before = vae.decode(vae.encode(features[:8])[0])
        raw_mu, _ = vae.encode(features)
        vae.fit_code_prior(features)
        mu, logvar = vae.encode(features)
        after = vae.decode(mu[:8])
    assert torch.allclose(after, before, atol=1e-4)
    assert not torch.allclose(vae.code_scale_tril, torch.eye(30))
    assert torch.allclose(vae.code_mean, raw_mu.mean(0), atol=1e-5)
    assert mu.mean(0).abs().max() < 1e-3 and logvar.shape == (400, 30)
    # Whitened: covariance of means + mean posterior variance is the identity.
    total = torch.cov(mu.T) + torch.diag(logvar.exp().mean(0))
    assert (total.diag() - 1).abs().max() < 0.05 and (total - torch.diag(total.diag())).abs().max() < 0.05
    # N(0, I) draws decode the fitted Gaussian: their raw codes have the training codes' covariance.
    eps = torch.randn(4000, 30, generator=torch.Generator().manual_seed(0))
    raw = vae.code_mean + eps @ vae.code_scale_tril.T
    assert torch.allclose(torch.cov(raw.T), vae.code_scale_tril @ vae.code_scale_tril.T, atol=0.1 * raw.var(0).max())
    # Training is untouched: forward works in the encoder's own space.
    out = vae(features[:4])
    assert torch.allclose(out["mu"], raw_mu[:4], atol=1e-6)
    with pytest.raises(ValueError, match="code_prior=True"):
        MotionVAE(MotionVAEConfig(latent_dim=64, backbone="conv", variational=True)).fit_code_prior(features)


def test_code_prior_components_sample_the_training_posteriors(tmp_path):
    """code_prior_components: fit_code_prior keeps each fitting clip's posterior, sample_codes draws from their mixture in the public (whitened) code, the buffers travel with
    the weights, and the wrong number of clips is a clear error. Without components sample_codes is
    N(0, I)."""
    config = MotionVAEConfig(num_joints=22, latent_dim=30, num_layers=1, variational=True, normalise=True,
                             logvar_init=-4.0, backbone="conv", conv_levels=2, conv_channels=16, code_prior=True,
                             code_prior_components=50)  # fmt: skip
    vae = perturbed(MotionVAE(config), 9).eval()
    with torch.no_grad():  # narrow posteriors (as trained ones are), so the clips' codes stand apart
        vae.encoder.final.bias[vae.encoder.per_step :] = -8.0
    t = torch.linspace(0, 1, 60)[None, :, None, None]
    features = canonical_to_features(
        0.6 * torch.rand(50, 1, 1, 1) * torch.sin(6.28 * (t + torch.rand(50, 1, 22, 3))), 22
    )
    vae.set_feature_statistics(features)
    with torch.no_grad():
        raw_mu, raw_logvar = vae._encode_raw(features)
        vae.fit_code_prior(features)
    assert torch.allclose(vae.code_components_mean, raw_mu, atol=1e-6)
    assert torch.allclose(vae.code_components_std, (0.5 * raw_logvar).exp(), rtol=1e-5)
    # Draws, taken back to the raw code, sit within a few posterior sigmas of one of the clips' codes.
    z = vae.sample_codes(400, torch.Generator().manual_seed(0))
    raw = vae.code_mean + z @ vae.code_scale_tril.T
    scaled = (raw[:, None] - raw_mu[None]) / (0.5 * raw_logvar).exp()[None]  # (400, 50, 30)
    nearest = scaled.pow(2).mean(-1).min(1).values
    assert nearest.max() < 3.0 and nearest.median() < 1.5, nearest.max()
    # ... while the Gaussian's draws (the same moments) do not.
    gaussian = vae.code_mean + torch.randn(400, 30, generator=torch.Generator().manual_seed(0)) @ vae.code_scale_tril.T
    far = ((gaussian[:, None] - raw_mu[None]) / (0.5 * raw_logvar).exp()[None]).pow(2).mean(-1).min(1).values
    assert far.median() > 5 * nearest.median()
    # Draws from the mixture have (about) the whitened code's unit covariance.
    z = vae.sample_codes(4000, torch.Generator().manual_seed(1))
    assert z.mean(0).abs().max() < 0.2 and (z.var(0) - 1).abs().max() < 0.3
    # The buffers are in the file format: a rebuilt model samples the same codes.
    torch.save({"config": dataclasses.asdict(config), "state_dict": vae.state_dict()}, tmp_path / "m.pt")
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    rebuilt = MotionVAE(MotionVAEConfig(**payload["config"]))
    rebuilt.load_state_dict(payload["state_dict"])
    g = torch.Generator().manual_seed(2)
    assert torch.equal(rebuilt.sample_codes(5, g), vae.sample_codes(5, torch.Generator().manual_seed(2)))
    with pytest.raises(ValueError, match="code_prior_components=50 keeps one posterior per fitting clip, but "
                       "fit_code_prior got 49 clips"):  # fmt: skip
        vae.fit_code_prior(features[:49])
    # Mixture weights: clip 7 holding half the weight gets about half the draws (the Gaussian is
    # still every clip's equally); they are kept relative to the largest, as the file stores them.
    weights = torch.ones(50)
    weights[7] = 49.0
    gaussian_before = vae.code_scale_tril.clone()
    vae.fit_code_prior(features, weights)
    assert torch.equal(vae.code_scale_tril, gaussian_before) and vae.code_components_weight.max() == 1.0
    raw = vae.code_mean + vae.sample_codes(1000, torch.Generator().manual_seed(4)) @ vae.code_scale_tril.T
    scaled = ((raw[:, None] - raw_mu[None]) / (0.5 * raw_logvar).exp()[None]).pow(2).mean(-1)
    assert 0.4 < (scaled.argmin(1) == 7).float().mean() < 0.6
    with pytest.raises(ValueError, match=r"mixture weights of the 50 clips' posteriors: give a positive tensor of "
                       r"shape \(50,\).*1 not positive"):  # fmt: skip
        vae.fit_code_prior(features, torch.cat([torch.zeros(1), torch.ones(49)]))
    with pytest.raises(ValueError, match="code_prior_components needs code_prior=True"):
        MotionVAE(
            MotionVAEConfig(latent_dim=30, backbone="conv", conv_levels=2, variational=True, code_prior_components=4)
        )
    plain = MotionVAE(MotionVAEConfig(latent_dim=30, backbone="conv", conv_levels=2, variational=True))
    assert torch.equal(plain.sample_codes(3, torch.Generator().manual_seed(3)),
                       torch.randn(3, 30, generator=torch.Generator().manual_seed(3)))  # fmt: skip


def test_load_motion_vae_release_layouts(tmp_path):
    vae = perturbed(MotionVAE(), 5)
    # AvatarCLIP reads torch.load(motion_vae.pth)['state_dict']; the rest is training metadata.
    release = {"meta": {"epoch": 100}, "state_dict": vae.state_dict(), "optimizer": {}}
    torch.save(release, tmp_path / "motion_vae.pth")
    loaded = load_avatarclip_motion_vae(tmp_path / "motion_vae.pth")
    assert_same_state(loaded, vae)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    features = canonical_to_features(random_rotvecs(2, 60, 22))
    with torch.no_grad():
        assert torch.equal(loaded.encode(features)[0], vae.encode(features)[0])
        z = torch.randn(2, 256)
        assert torch.equal(loaded.decode(z), vae.decode(z))

    torch.save(vae, tmp_path / "pickled_model.pth")
    assert_same_state(load_avatarclip_motion_vae(tmp_path / "pickled_model.pth"), vae)

    # Entries of other modules are skipped with a warning; missing constant tables are rebuilt.
    state = {k: v for k, v in vae.state_dict().items() if not k.endswith(".pe")}
    state["clip.logit_scale"] = torch.ones(())
    torch.save({"state_dict": state}, tmp_path / "extra.pth")
    with pytest.warns(UserWarning, match="clip.logit_scale"):
        assert_same_state(load_avatarclip_motion_vae(tmp_path / "extra.pth"), vae)


def test_motion_vae_errors_name_keys_config_key_and_source(tmp_path):
    for path in (tmp_path / "motion_vae.pth", ""):
        with pytest.raises(FileNotFoundError) as err:
            load_avatarclip_motion_vae(path)
        message = str(err.value)
        assert "prior.motion_vae_path" in message and "hongfz16/AvatarCLIP" in message
        assert "drive.google.com" in message

    state = MotionVAE().state_dict()
    state["encoder.queries"] = state.pop("encoder.query")
    torch.save({"state_dict": state}, tmp_path / "renamed.pth")
    names_both = r"missing keys \(1\): encoder\.query\n.*unexpected keys \(1\): encoder\.queries"
    with pytest.raises(PriorWeightsError, match=names_both):
        load_avatarclip_motion_vae(tmp_path / "renamed.pth")

    variational = MotionVAE(MotionVAEConfig(variational=True))
    torch.save(variational.state_dict(), tmp_path / "variational.pth")
    shape = r"encoder\.final\.weight: file \(512, 256\) vs model \(256, 256\)"
    with pytest.raises(PriorWeightsError, match=shape):
        load_avatarclip_motion_vae(tmp_path / "variational.pth")


def test_features_are_pytorch3d_6d_of_smplx_joints_and_round_trip():
    rotations = random_rotvecs(2, 5, 22)
    features = canonical_to_features(rotations)
    assert features.shape == (2, 5, 330)
    per_joint = features.reshape(2, 5, 55, 6)
    rotmat = roma.rotvec_to_rotmat(rotations)
    assert torch.allclose(per_joint[..., :22, :3], rotmat[..., 0, :])  # first row
    assert torch.allclose(per_joint[..., :22, 3:], rotmat[..., 1, :])  # second row
    identity_6d = torch.tensor([1.0, 0, 0, 0, 1, 0])
    assert torch.equal(per_joint[..., 22:, :], identity_6d.expand(2, 5, 33, 6))  # jaw, eyes, hands
    assert torch.allclose(features_to_canonical(features), rotations, atol=1e-5)
    assert torch.allclose(rot6d_to_rotmat(rotmat_to_6d(rotmat)), rotmat, atol=1e-6)

    decoded = MotionVAE().eval().decode(torch.randn(2, 256))
    assert_rotations(rot6d_to_rotmat(decoded.reshape(2, 60, 55, 6)))
    upright = features_to_canonical(decoded, root=torch.tensor(UPRIGHT))
    assert upright.shape == (2, 60, 22, 3)
    assert torch.allclose(upright[..., 0, :], torch.tensor(UPRIGHT).expand(2, 60, 3))
    assert torch.allclose(upright[..., 1:, :], features_to_canonical(decoded)[..., 1:, :])
