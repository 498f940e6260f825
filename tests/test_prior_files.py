"""The files of the paper-faithful path and the priors: every one a run reads fails, when empty,
truncated, random bytes or of another kind, naming the file, its config key and the likely
cause; each prior loader logs the weights it really loaded; the VPoser checkpoint names that
Hydra's parser needs quoted; AvatarCLIP's own pose codebook; SMPL release pickles without chumpy.

Everything here is small and synthetic: tiny VPoser/motion-VAE/CLIP models built with the real
model code, a synthetic SMPL pickle that names chumpy's classes, copies of the shipped files.
"""

from __future__ import annotations

import logging
import pickle
import re
import shlex
import shutil
import subprocess
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse
import torch
import torch.nn.functional as F

from avatar.body.smpl_body import CONVERT_COMMAND, BodyModelFileError, SmplBody, SmplBodyConfig, resolve_smpl_file
from avatar.mocap.amass import write_amass_npz
from avatar.mocap.retarget import CanonicalMotion
from avatar.mocap.types import MocapFormatError
from avatar.priors import MotionVAE, MotionVAEConfig, PriorWeightsError, VPoser, load_avatarclip_motion_vae
from avatar.priors.codebook import (
    AVATARCLIP_EMBEDDING_MODEL,
    WEIGHTS_DIR,
    guidance_embedding_model,
    read_avatarclip_codebook,
    usable_embeddings,
)
from avatar.priors.loading import (
    PriorConfig,
    codebook_files,
    load_codebook,
    load_motion_codebook,
    load_motion_prior,
    load_pose_prior,
)
from avatar.priors.vposer import VPOSER_HELP, load_vposer_checkpoint, vposer_to_canonical
from avatar.stages.animate import read_any_motion
from avatar.stages.motion_files import CandidatePoses, load_candidates, load_motion, save_motion
from avatar.utils.files import InputFileError, short_hash

from helpers import LOW_POLY, ROOT, compose_cfg

CKPT_NAME = "V02_05_epoch=08_val_loss=0.03.ckpt"  # the release's snapshot names hold '='
KINDS = ("empty", "truncated", "random", "foreign")
CAUSE = {
    "empty": r"empty \(0 bytes\)",
    "truncated": r"truncated",
    "random": r"truncated|corrupted|another format",
    "foreign": r"\bnot\b|lacks|holds",
}


# ---- small synthetic files ---------------------------------------------------------------------
def perturbed(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random weights, so a wrong or skipped load cannot pass."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point() and not name.endswith(".pe"):
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
                if name.endswith("running_var"):
                    t.abs_().add_(0.5)
    return model.eval()


def write_vposer_release(folder: Path, seed: int = 0) -> tuple[Path, VPoser]:
    """A V02_05-like folder: snapshots/<name with '='>.ckpt holding the model under ``vp_model.``."""
    model = perturbed(VPoser(), seed)
    ckpt = folder / "V02_05" / "snapshots" / CKPT_NAME
    ckpt.parent.mkdir(parents=True)
    torch.save({"epoch": 8, "state_dict": {f"vp_model.{k}": v for k, v in model.state_dict().items()}}, ckpt)
    return ckpt, model


SMALL_VAE = MotionVAEConfig(latent_dim=16, num_layers=1, num_heads=2, ff_size=32, max_len=64)


def small_motion_vae() -> MotionVAE:
    return perturbed(MotionVAE(SMALL_VAE))


def write_avatarclip_codebook(path: Path, size: int = 12, embed_dim: int = 512, seed: int = 0):
    """AvatarCLIP's data/codebook.pth format: {'codebook': (N, 32), 'codebook_embedding': (N, E)}."""
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(size, 32, generator=g)
    embeddings = torch.randn(size, embed_dim, generator=g) * 3.0  # CLIP's raw (unnormalised) features
    torch.save({"codebook": latents, "codebook_embedding": embeddings}, path)
    return latents, embeddings


def tiny_clip_checkpoint(path: Path, embed_dim: int = 64) -> Path:
    """An OpenAI CLIP ViT with 32-px patches (AvatarCLIP's kind), tiny, through clip's own code."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        import clip
    torch.manual_seed(0)
    model = clip.model.CLIP(
        embed_dim=embed_dim, image_resolution=64, vision_layers=1, vision_width=64, vision_patch_size=32,
        context_length=77, vocab_size=49408, transformer_width=64, transformer_heads=2, transformer_layers=1,
    )  # fmt: skip
    torch.save(model.state_dict(), path)
    return path


def arms_motion(frames: int = 8) -> CanonicalMotion:
    rotations = torch.zeros(frames, 22, 3)
    rotations[:, 16, 2] = torch.linspace(0, 1, frames)
    return CanonicalMotion(rotations, torch.zeros(frames, 3), fps=30.0)


def make_bad(good: Path, kind: str, foreign: Path, out_dir: Path, name: str) -> Path:
    """A broken copy of ``good`` named ``name``: empty, half of it, random bytes, or ``foreign``."""
    out = out_dir / kind / name
    out.parent.mkdir(parents=True, exist_ok=True)
    if kind == "empty":
        out.write_bytes(b"")
    elif kind == "truncated":
        data = good.read_bytes()
        out.write_bytes(data[: len(data) // 2])
    elif kind == "random":
        data = np.random.default_rng(7).bytes(4096)
        assert not data.startswith((b"\x80", b"PK", b"\x93NUMPY"))
        out.write_bytes(data)
    else:
        shutil.copyfile(foreign, out)
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """One good file of each kind the loaders read."""
    d = tmp_path_factory.mktemp("good")
    out = {}
    out["motion"] = save_motion(d / "run_motion" / "motion.npz", arms_motion(), prompt="raise", generator="latent")
    out["clip_npz"] = save_motion(d / "clip.npz", arms_motion(), prompt="raise", generator="latent")
    out["poses"] = CandidatePoses(torch.zeros(2, 22, 3), torch.ones(2), ["a", "b"], "p", "t").save(
        d / "run_pose" / "poses.npz"
    )
    out["amass"] = write_amass_npz(d / "clip_poses.npz", arms_motion())
    out["vposer"], _ = write_vposer_release(d)
    out["motion_vae"] = d / "motion_vae.pth"
    torch.save({"state_dict": small_motion_vae().state_dict()}, out["motion_vae"])
    out["avatarclip_codebook"] = d / "codebook.pth"
    write_avatarclip_codebook(out["avatarclip_codebook"])
    for name in ("pose_prior.pt", "motion_vae.pt", "pose_codebook.npz", "motion_codebook.npz"):
        out[name] = Path(shutil.copyfile(WEIGHTS_DIR / name, d / name))
    out["avatarclip_style_vae"] = d / "avatarclip_style.pth"  # another program's weights file
    torch.save({"state_dict": {"encoder.query": torch.zeros(1, 4)}}, out["avatarclip_style_vae"])
    return out


# (label, config key, good file, foreign file, file name, loader)
LOADERS = [
    ("animate motion npz", "stage.motion", "clip_npz", "pose_codebook.npz", "clip.npz",
     lambda p: read_any_motion(str(p), "stage.motion")),
    ("animate motion.npz", "stage.motion", "motion", "poses", "motion.npz",
     lambda p: read_any_motion(str(p), "stage.motion")),
    ("motion stage output", "stage.motion_dir", "motion", "amass", "motion.npz", lambda p: load_motion(p)),
    ("pose stage output", "stage.pose_dir", "poses", "motion", "poses.npz", lambda p: load_candidates(p)),
    ("project pose prior", "prior.pose_prior", "pose_prior.pt", "vposer", "pose_prior.pt",
     lambda p: load_pose_prior(PriorConfig(pose_prior=str(p)))),
    ("project motion prior", "prior.motion_prior", "motion_vae.pt", "avatarclip_style_vae", "motion_vae.pt",
     lambda p: load_motion_prior(PriorConfig(motion_prior=str(p)))),
    ("project pose codebook", "prior.codebook", "pose_codebook.npz", "avatarclip_codebook", "pose_codebook.npz",
     lambda p: load_codebook(PriorConfig(codebook=str(p)))),
    ("motion codebook", "prior.motion_codebook", "motion_codebook.npz", "pose_codebook.npz", "motion_codebook.npz",
     lambda p: load_motion_codebook(PriorConfig(motion_codebook=str(p)))),
    ("VPoser release", "prior.vposer_path", "vposer", "pose_codebook.npz", CKPT_NAME,
     lambda p: load_vposer_checkpoint(p)),
    ("AvatarCLIP motion VAE", "prior.motion_vae_path", "motion_vae", "motion_codebook.npz", "motion_vae.pth",
     lambda p: load_avatarclip_motion_vae(p, SMALL_VAE)),
    ("AvatarCLIP pose codebook", "prior.avatarclip_codebook_path", "avatarclip_codebook", "pose_prior.pt",
     "codebook.pth", lambda p: read_avatarclip_codebook(p)),
    ("AMASS motion", "stage.motion", "amass", "pose_prior.pt", "clip_poses.npz",
     lambda p: read_any_motion(str(p), "stage.motion")),
]  # fmt: skip


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("label,key,good,foreign,name,load", LOADERS, ids=[row[0] for row in LOADERS])
def test_broken_files_name_the_file_the_key_and_the_cause(tmp_path, files, kind, label, key, good, foreign, name, load):
    load(files[good])  # the good file loads
    bad = make_bad(files[good], kind, files[foreign], tmp_path, name)
    with pytest.raises(ValueError) as err:  # InputFileError, MocapFormatError, PriorFileError: all ValueErrors
        load(bad)
    message = str(err.value)
    assert str(bad) in message, message
    assert f"`{key}" in message, message
    assert re.search(CAUSE[kind], message), message
    assert "weights_only" not in message  # never advise unsafe loading


def test_amass_reader_names_its_key_and_the_cause(tmp_path, files):
    from avatar.mocap.amass import read_amass_npz

    bad = make_bad(files["amass"], "truncated", files["amass"], tmp_path, "clip_poses.npz")
    with pytest.raises(MocapFormatError, match=r"`stage\.mocap_root=.*clip_poses\.npz` .*truncated"):
        read_amass_npz(bad)
    foreign = make_bad(files["amass"], "foreign", files["poses"], tmp_path, "clip_poses.npz")
    with pytest.raises(MocapFormatError, match=r"clip_poses\.npz \(`stage\.motion`\).*'poses' and 'trans'"):
        read_amass_npz(foreign, key="stage.motion")


def test_rig_file_errors_name_the_key(tmp_path, files):
    from avatar.body.skinning import Rig

    bad = make_bad(files["clip_npz"], "truncated", files["clip_npz"], tmp_path, "avatar_rig.npz")
    with pytest.raises(InputFileError, match=r"`stage\.avatar_dir=.*avatar_rig\.npz` .*truncated"):
        Rig.load(bad)


def test_a_real_pickle_still_reaches_the_vposer_checkpoint_fallback(tmp_path):
    """A training checkpoint pickling a class of an uninstalled package: read through the
    documented full-unpickle fallback (tested in full in test_prior_models.py); a truncated copy
    of the same file fails clearly instead of reaching the fallback's error."""
    module = types.ModuleType("fake_lightning_callbacks")

    class ModelCheckpoint:
        pass

    ModelCheckpoint.__module__, ModelCheckpoint.__qualname__ = module.__name__, "ModelCheckpoint"
    module.ModelCheckpoint = ModelCheckpoint
    model = perturbed(VPoser(), 3)
    ckpt = tmp_path / "V02_05" / "snapshots" / CKPT_NAME
    ckpt.parent.mkdir(parents=True)
    sys.modules[module.__name__] = module
    try:
        torch.save({"callbacks": {ModelCheckpoint: {"best": 1.0}},
                    "state_dict": {f"vp_model.{k}": v for k, v in model.state_dict().items()}}, ckpt)  # fmt: skip
    finally:
        del sys.modules[module.__name__]
    loaded = load_vposer_checkpoint(ckpt.parent.parent)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    cut = tmp_path / "cut" / CKPT_NAME
    cut.parent.mkdir()
    cut.write_bytes(ckpt.read_bytes()[:5000])
    with pytest.raises(PriorWeightsError, match=r"prior\.vposer_path.*truncated") as err:
        load_vposer_checkpoint(cut)
    assert isinstance(err.value, InputFileError) and "weights_only" not in str(err.value)


# ---- the motion VAE's mismatch error names its config key ---------------------------------------------
def test_motion_vae_mismatch_names_the_config_key_not_a_state_dict_key(tmp_path):
    path = tmp_path / "motion_vae.pth"
    torch.save({"state_dict": small_motion_vae().state_dict()}, path)  # another width than AvatarCLIP's
    with pytest.raises(PriorWeightsError) as err:
        load_avatarclip_motion_vae(path)
    message = str(err.value)
    assert "(config key `prior.motion_vae_path`) does not match MotionVAE" in message
    assert "config key `decoder.pos_encoder.pe`" not in message
    assert "shape mismatches" in message


# ---- VPoser snapshot names on Hydra's command line -----------------------------------------------------
def test_vposer_checkpoint_names_with_equals_signs_compose_when_quoted(tmp_path):
    from hydra.errors import OverrideParseException

    ckpt, model = write_vposer_release(tmp_path)
    with pytest.raises(OverrideParseException):  # as a user would first type it
        compose_cfg(tmp_path, f"prior.vposer_path={ckpt}")
    cfg = compose_cfg(tmp_path, f'prior.vposer_path="{ckpt}"')  # what the shell passes for '...="..."'
    assert cfg.prior.vposer_path == str(ckpt)
    loaded = load_pose_prior(cfg.prior)
    assert torch.equal(loaded.decoder_net[0].weight, model.decoder_net[0].weight)
    folder = compose_cfg(tmp_path, f"prior.vposer_path={ckpt.parent.parent}")  # the folder needs no quotes
    assert load_vposer_checkpoint(folder.prior.vposer_path).training is False

    # The command the help and the README give, split as a POSIX shell does, composes intact.
    command = re.search(r"`(python train\.py 'prior\.vposer_path=[^`]*)`", VPOSER_HELP).group(1)
    override = shlex.split(command)[2]
    expected = "/data/V02_05/snapshots/V02_05_epoch=13_val_loss=0.03.ckpt"
    assert compose_cfg(tmp_path, override).prior.vposer_path == expected
    assert command in (ROOT / "README.md").read_text()


# ---- AvatarCLIP's pose codebook ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def avatarclip(tmp_path_factory):
    d = tmp_path_factory.mktemp("avatarclip")
    ckpt, vposer = write_vposer_release(d, seed=5)
    path = d / "codebook.pth"
    latents, embeddings = write_avatarclip_codebook(path, size=12, embed_dim=64, seed=1)
    return {"vposer_dir": ckpt.parent.parent, "vposer": vposer, "codebook": path, "latents": latents,
            "embeddings": embeddings, "clip": tiny_clip_checkpoint(d / "tiny-clip.pt", embed_dim=64)}  # fmt: skip


def test_avatarclip_codebook_decodes_its_latents_with_vposer(avatarclip, caplog):
    cfg = PriorConfig(vposer_path=str(avatarclip["vposer_dir"]), avatarclip_codebook_path=str(avatarclip["codebook"]))
    with caplog.at_level(logging.INFO):
        book = load_codebook(cfg)
    with torch.no_grad():
        expected = vposer_to_canonical(avatarclip["vposer"].decode(avatarclip["latents"])["pose_body"])
    assert len(book) == 12 and book.rotations.shape == (12, 22, 3) and book.joints.shape == (12, 22, 3)
    assert torch.allclose(book.rotations, expected, atol=1e-6)
    assert torch.equal(book.embeddings, avatarclip["embeddings"])
    assert book.embedding_model == AVATARCLIP_EMBEDDING_MODEL
    assert (book.cluster_sizes == 1).all() and book.sources[3] == "AvatarCLIP codebook.pth entry 3"
    digest = short_hash(avatarclip["codebook"])
    assert any("AvatarCLIP codebook of 12 VPoser latents" in r.getMessage() and digest in r.getMessage()
               for r in caplog.records)  # fmt: skip
    assert codebook_files(cfg) == [avatarclip["codebook"], avatarclip["vposer_dir"] / "snapshots" / CKPT_NAME]

    with pytest.raises(ValueError, match=r"prior\.avatarclip_codebook_path=.*set `prior\.vposer_path`"):
        load_codebook(PriorConfig(avatarclip_codebook_path=str(avatarclip["codebook"])))


def test_avatarclip_codebook_format_errors(tmp_path, avatarclip):
    wrong = tmp_path / "codebook.pth"
    torch.save({"codebook": torch.zeros(4, 32), "codebook_embedding": torch.zeros(5, 512)}, wrong)
    with pytest.raises(InputFileError, match=r"same N"):
        read_avatarclip_codebook(wrong)
    torch.save({"codebook": torch.zeros(4, 16), "codebook_embedding": torch.zeros(4, 512)}, wrong)
    cfg = PriorConfig(vposer_path=str(avatarclip["vposer_dir"]), avatarclip_codebook_path=str(wrong))
    with pytest.raises(InputFileError, match=r"16-d latents.*32-d"):
        load_codebook(cfg)


def pose_overrides(tmp_path, avatarclip, *extra: str) -> list[str]:
    return [
        "stage=pose", f"body.topology={LOW_POLY}", "render.height=32", "render.width=32", "stage.preview_size=32",
        f"stage.cache_dir={tmp_path / 'cache'}", "logger=none", "prompt.motion=a person raising both arms",
        "stage.top_k=8", "stage.num_candidates=3", f"prior.vposer_path={avatarclip['vposer_dir']}",
        f"prior.avatarclip_codebook_path={avatarclip['codebook']}", *extra,
    ]  # fmt: skip


def test_pose_search_uses_avatarclip_embeddings_with_clip_guidance(tmp_path, avatarclip):
    """With CLIP (a ViT with 32-px patches, as AvatarCLIP's) of the embeddings' width, the search
    scores the file's embeddings against the prompt, as AvatarCLIP does: no renders."""
    from avatar.guidance import build_guidance
    from avatar.stages.pose import PoseStage

    cfg = compose_cfg(
        tmp_path, *pose_overrides(tmp_path, avatarclip, "guidance=clip", f"guidance.checkpoint={avatarclip['clip']}")
    )
    stage = PoseStage(cfg)
    guidance = build_guidance(cfg.guidance)
    assert guidance_embedding_model(guidance) == AVATARCLIP_EMBEDDING_MODEL
    candidates, info = stage.search(guidance)
    assert stage.codebook_renders == 0 and info["codebook_cache_hit"] is True
    assert info["codebook_cache"] == str(avatarclip["codebook"])
    text = F.normalize(guidance.encode_text([stage.prompt_text])[0].float(), dim=0)
    expected = F.normalize(avatarclip["embeddings"], dim=-1) @ text
    picked = [int(s.split(":")[0].removeprefix("codebook ")) for s in candidates.source]
    assert picked[0] == int(expected.argmax())
    assert torch.allclose(candidates.scores, expected[picked], atol=1e-5)
    book = load_codebook(cfg.prior)
    assert torch.allclose(candidates.rotations, book.rotations[picked])


def test_pose_search_embeds_avatarclip_poses_anew_for_other_guidance(tmp_path, avatarclip):
    """The mini guidance (another embedding space): the decoded poses are rendered and embedded,
    cached under a key naming both the codebook and the VPoser file."""
    from avatar.guidance import build_guidance
    from avatar.stages.pose import PoseStage

    cfg = compose_cfg(tmp_path, *pose_overrides(tmp_path, avatarclip))
    stage = PoseStage(cfg)
    guidance = build_guidance(cfg.guidance)
    assert usable_embeddings(load_codebook(cfg.prior), guidance) is None
    candidates, info = stage.search(guidance)
    assert stage.codebook_renders == 12 and info["codebook_cache_hit"] is False
    assert len(candidates) == 3 and isinstance(stage.cache_key()["codebook"], list)
    assert len(stage.cache_key()["codebook"]) == 2


def test_clip_of_another_width_does_not_reuse_the_embeddings(tmp_path, avatarclip):
    from avatar.guidance import ClipGuidanceConfig, build_guidance

    wide = tiny_clip_checkpoint(tmp_path / "wide.pt", embed_dim=32)
    guidance = build_guidance(ClipGuidanceConfig(checkpoint=str(wide)))
    cfg = PriorConfig(vposer_path=str(avatarclip["vposer_dir"]), avatarclip_codebook_path=str(avatarclip["codebook"]))
    assert usable_embeddings(load_codebook(cfg), guidance) is None  # 32-d guidance, 64-d embeddings


# ---- SMPL release pickles without chumpy ------------------------------------------------------------
def write_chumpy_smpl(path: Path, protocol: int) -> dict:
    """A synthetic SMPL pickle as the releases store it: chumpy arrays (``chumpy.ch.Ch``) and a
    scipy.sparse J_regressor. A stand-in ``chumpy`` module exists only while pickling."""
    from synthetic_smpl import make_synthetic_smpl

    plain = make_synthetic_smpl()
    chumpy, chumpy_ch = types.ModuleType("chumpy"), types.ModuleType("chumpy.ch")

    class Ch:  # chumpy's Ch pickles its __dict__: the array under 'x' and bookkeeping
        def __init__(self, x):
            self.x = np.asarray(x, dtype=np.float64)
            self._dirty_vars, self._itr, self._depends_on_deps = set(), None, {}
            self._make_dense = self._make_sparse = False

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    chumpy_ch.Ch, chumpy.ch = Ch, chumpy_ch
    release = dict(plain, shapedirs=Ch(plain["shapedirs"]), v_template=Ch(plain["v_template"]),
                   J_regressor=scipy.sparse.csc_matrix(plain["J_regressor"]), bs_style="lbs", bs_type="lrotmin")  # fmt: skip
    sys.modules.update({"chumpy": chumpy, "chumpy.ch": chumpy_ch})
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pickle.dumps(release, protocol=protocol))
    finally:
        del sys.modules["chumpy"], sys.modules["chumpy.ch"]
    assert b"chumpy" in path.read_bytes()  # the file names chumpy's class, as the releases do
    return plain


@pytest.mark.slow
@pytest.mark.parametrize("protocol", [0, 2])
def test_chumpy_smpl_release_converts_and_loads_through_smplx(tmp_path, smpl_synthetic, protocol):
    from avatar.body.convert_smpl import main

    release = tmp_path / "release" / "basicmodel_neutral_lbs_10_207_0_v1.1.0.pkl"
    write_chumpy_smpl(release, protocol)
    with pytest.raises(BodyModelFileError) as err:  # as downloaded: chumpy is needed and unusable
        SmplBody(SmplBodyConfig(model_path=str(release)))
    assert f"{CONVERT_COMMAND} {release}" in str(err.value) and "does not help" in str(err.value)

    out = tmp_path / "models" / "smpl"
    out.mkdir(parents=True)
    assert main([str(release), str(out)]) == 0
    converted = out / "SMPL_NEUTRAL.pkl"
    assert b"chumpy" not in converted.read_bytes() and b"scipy" not in converted.read_bytes()
    body = SmplBody(SmplBodyConfig(model_path=str(tmp_path / "models")))  # smplx's own loader
    shape = torch.tensor([[1.0, -0.5] + [0.0] * 8])
    assert torch.allclose(body(shape).vertices, smpl_synthetic(shape).vertices, atol=1e-5)
    assert torch.equal(body.skinning_weights, smpl_synthetic.skinning_weights)


def test_convert_smpl_command_line_and_refusals(tmp_path):
    release = tmp_path / "basicModel_f_lbs_10_207_0_v1.0.0.pkl"
    write_chumpy_smpl(release, 2)
    proc = subprocess.run([sys.executable, "-m", "avatar.body.convert_smpl", str(release), str(tmp_path / "plain.pkl")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "plain.pkl").is_file() and "body.model_path" in proc.stdout

    from avatar.body.convert_smpl import SmplConversionError, convert

    evil = tmp_path / "evil.pkl"
    evil.write_bytes(b"cos\nsystem\n(S'echo hi'\ntR.")
    with pytest.raises(SmplConversionError, match=r"refusing to unpickle os\.system"):
        convert(evil, tmp_path / "out.pkl")
    truncated = tmp_path / "cut.pkl"
    truncated.write_bytes(release.read_bytes()[:1000])
    with pytest.raises(SmplConversionError, match=r"cut\.pkl.*truncated"):
        convert(truncated, tmp_path / "out.pkl")
    assert not (tmp_path / "out.pkl").exists()


def test_smpl_folder_finds_the_release_file_names(tmp_path):
    from synthetic_smpl import make_synthetic_smpl

    folder = tmp_path / "SMPL_python_v.1.1.0"
    names = {"neutral": "smpl/models/basicmodel_neutral_lbs_10_207_0_v1.1.0.pkl",
             "male": "basicModel_m_lbs_10_207_0_v1.0.0.pkl"}  # fmt: skip
    for name in [*names.values(), "smpl/models/basicmodel_neutral_lbs_10_207_0_v1.0.0.pkl"]:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(pickle.dumps(make_synthetic_smpl()))
    for gender, name in names.items():
        assert resolve_smpl_file(str(folder), gender) == folder / name  # v1.1.0 before v1.0.0
    with pytest.raises(BodyModelFileError, match=r"basicmodel_f_lbs_10_207_0_v1\.\*\.pkl"):
        resolve_smpl_file(str(folder), "female")
    assert SmplBody(SmplBodyConfig(model_path=str(folder))).num_vertices == 6890


# ---- each prior loader names the weights it loaded -------------------------------------------------
def test_each_prior_loader_logs_the_weights_it_loaded(files, caplog):
    cases = [
        (lambda: load_pose_prior(PriorConfig(pose_prior=str(files["pose_prior.pt"]))), files["pose_prior.pt"], "project VPoser"),
        (lambda: load_motion_prior(PriorConfig(motion_prior=str(files["motion_vae.pt"]))), files["motion_vae.pt"], "project MotionVAE"),
        (lambda: load_codebook(PriorConfig(codebook=str(files["pose_codebook.npz"]))), files["pose_codebook.npz"], "project codebook"),
        (lambda: load_motion_codebook(PriorConfig(motion_codebook=str(files["motion_codebook.npz"]))),
         files["motion_codebook.npz"], "Motion codebook"),
        (lambda: load_pose_prior(PriorConfig(vposer_path=str(files["vposer"].parent.parent))), files["vposer"], "VPoser v2"),
        (lambda: load_avatarclip_motion_vae(files["motion_vae"], SMALL_VAE), files["motion_vae"],
         "AvatarCLIP motion VAE"),
    ]  # fmt: skip
    for load, path, kind in cases:
        caplog.clear()
        with caplog.at_level(logging.INFO):
            loaded = load()
        lines = [r.getMessage() for r in caplog.records if short_hash(path) in r.getMessage()]
        assert len(lines) == 1, (kind, [r.getMessage() for r in caplog.records])
        assert str(path) in lines[0] and kind in lines[0], lines[0]
        if isinstance(loaded, torch.nn.Module):  # the record the runner copies into run_info.json
            assert (
                loaded.loaded_weights["sha256_12"] == short_hash(path) and kind in loaded.loaded_weights["architecture"]
            )
