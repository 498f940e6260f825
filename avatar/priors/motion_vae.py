"""AvatarCLIP's motion VAE: a transformer over 60-frame clips of 6D joint rotations.

Mirrors ``MotionXTransformerEncoder`` / ``MotionXTransformerDecoder`` and their use in
``MotionOptimizer`` of hongfz16/AvatarCLIP, ``AvatarAnimate/models/motion_generation.py``
(commit f5672dc), the code that loads ``data/motion_vae.pth`` (``torch.load(...)['state_dict']``
into a module whose attributes are ``encoder`` and ``decoder``). Adapted from ACTOR
(Petrovich et al.) but simpler: no action classes, one learned query token instead of ACTOR's
mu/sigma tokens, and time queries that are bare positional encodings.

Per-frame features: 55 joints x 6D = 330 numbers, SMPL-X's joint order (0 global orientation,
1..21 body as SMPL/the canonical skeleton, 22 jaw, 23-24 eyes, 25-39 left hand, 40-54 right
hand). No translation. The 6D of a rotation matrix R is its first two *rows*,
``(R00, R01, R02, R10, R11, R12)``, and back by Gram-Schmidt with the result stacked as rows
(PyTorch3D's ``matrix_to_rotation_6d`` / ``rotation_6d_to_matrix``, which AvatarCLIP copies into
``AvatarAnimate/models/utils.py``). AvatarCLIP only reads joints 1..21 of a decoded clip (its
axis-angle columns 3:66); the root orientation is discarded and poses are rendered upright.

Architecture (d = ``latent_dim`` = 256, 4 layers, 4 heads, feed-forward 1024, GELU, dropout
0.1, post-norm layers as ``nn.Transformer*Layer`` defaults, no final norm), state-dict keys:

* ``encoder.skelEmbedding`` Linear(330, d); ``encoder.query`` (1, d), a learned token put
  *before* the frames; ``encoder.pos_encoder.pe`` (5000, 1, d) sinusoidal table added to
  [query, frames] (then dropout); ``encoder.seqTransEncoder.layers.{0..3}``;
  ``encoder.final`` Linear(d, d) applied to the query token's output.
* ``decoder.pos_encoder.pe`` (5000, 1, d): its first T rows are the decoder's queries (no
  dropout); the memory is the latent code as one token; ``decoder.seqTransDecoder.layers.
  {0..3}``; ``decoder.final`` Linear(d, 330). (AvatarCLIP's ``decoder.linear`` is an
  ``nn.Identity`` when code and model width agree, as they do: it has no state and is omitted.)

The released encoder has one output head of size d, so as released the "VAE" encodes to a
single code: :meth:`MotionVAE.encode` returns ``(mu, None)``. AvatarCLIP never uses the encoder
(it optimises the code directly). ``MotionVAEConfig.variational=True`` widens ``encoder.final``
to 2d, split into ``(mu, logvar)`` for training a true VAE; such weights do not have the
released layout.

The project's free model adds three switches of :class:`MotionVAEConfig`, all off for
AvatarCLIP's weights (same keys and computation): ``normalise`` (the transformer sees features
standardised per channel by buffers ``feature_mean``/``feature_std``, taken from the training
data; ``encode`` takes and ``decode`` returns raw features), ``norm_first`` (pre-LN layers; the
parameters keep their names) and ``logvar_init`` (the variational head's initial log-variance).
Without them a VAE of this code cannot memorise eight walks: it decodes them as swaying in place
(docs/experiments/motion-priors.md, 2026-12-05; ``avatar/priors/motion_overfit.py``).

``MotionVAEConfig.backbone="conv"`` swaps both halves for temporal convolutions whose code holds
a few numbers per time step (the shipped free model; same interface and file format, see
``_ConvMotionEncoder``): the transformer, even with those switches, learnt only each window's
mean pose from the whole corpus within a CPU's budget.

``MotionVAEConfig.code_prior`` adds a Gaussian fitted to the training clips' codes after training
(buffers ``code_mean``, ``code_scale_tril``; :meth:`MotionVAE.fit_code_prior`), and ``encode`` /
``decode`` speak the whitened code ``(z - mean) L^-1``: a draw from N(0, I) then decodes like the
training clips. A code per time step is correlated from step to step (motion is smooth), and N(0, I)
drawn step by step decoded to jittery clips half the data's diversity (ex-post density estimation,
as in Ghosh et al. 2020, "From Variational to Deterministic Autoencoders"). Everything that draws,
starts or regularises codes (the motion stage's ``latent_init``, ``lambda_latent``) keeps
treating them as N(0, I).

That Gaussian has the right diversity, but its draws rarely walk: one gait's codes trace a loop
over its phase, and codes between two phases decode to standing, so a Gaussian (or a few broad
mixtures, a flow, an autoregressive prior) puts its mass where the strides cancel
(docs/experiments/motion-priors.md, 2026-12-06). ``MotionVAEConfig.code_prior_components``
keeps the posteriors of the K training clips the Gaussian was fitted to (buffers
``code_components_mean`` / ``code_components_std``) and :meth:`MotionVAE.sample_codes` draws
from their mixture: the aggregate posterior, which is the prior that maximises the training
objective for a given encoder (Hoffman & Johnson 2016, "ELBO surgery"; a VampPrior whose
pseudo-inputs are the training clips, Tomczak & Welling 2018). Each clip has a mixture weight
(``code_components_weight``): the free model's stage gives each recording an equal share, so a
few long recordings do not fill the samples (the Gaussian stays the clips' moments, every clip
equal, as the VAE trains on them). Its draws walk as often as the decoded training clips do, and
they are variations of training clips, not new motions: ``avatar-eval priors`` reports how far
they lie from the nearest one.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import roma
import torch
import torch.nn.functional as F
from torch import nn

from avatar.body.skeleton import NUM_JOINTS
from avatar.priors.vposer import extract_state_dict, load_state_dict_strict, read_torch_file
from avatar.utils.files import file_identity, weights_record

log = logging.getLogger(__name__)

NUM_FEATURE_JOINTS = 55  # SMPL-X's joints: AvatarCLIP's per-frame layout
ROT6D = 6
# Floor of a channel's standard deviation when features are normalised: a few 6D channels barely
# move (a near-identity joint's R00 ~ 1 - angle^2 / 2, std < 0.01) and would otherwise dominate.
FEATURE_STD_FLOOR = 0.05

MOTION_VAE_CONFIG_KEY = "prior.motion_vae_path"
MOTION_VAE_HELP = (
    "AvatarCLIP's motion VAE is not shipped: download motion_vae.pth from the 'Pretrained "
    "weights ... for motion generation' Google Drive folder linked in AvatarCLIP's README "
    "(https://github.com/hongfz16/AvatarCLIP#download-pretrained-models--other-data, "
    "https://drive.google.com/drive/folders/1TSyeT8MwH5EVQRbNGRVkWsA4Y9Y6dRbk) and point "
    "`prior.motion_vae_path` at it. "
    "Example: python train.py prior.motion_vae_path=/data/motion_vae.pth"
)
MOTION_VAE_WHAT = "AvatarCLIP's motion VAE weights (motion_vae.pth: {'state_dict': encoder.*, decoder.*})"


@dataclass
class MotionVAEConfig:
    num_frames: int = 60  # clip length AvatarCLIP decodes
    num_joints: int = NUM_FEATURE_JOINTS  # joints per frame, 6D each
    latent_dim: int = 256  # transformer width and size of the latent code
    num_layers: int = 4
    num_heads: int = 4
    ff_size: int = 1024  # latent_dim * 4 in AvatarCLIP
    dropout: float = 0.1
    activation: str = "gelu"
    max_len: int = 5000  # rows of the saved positional table: must match the weights
    variational: bool = False  # False: AvatarCLIP's single-code encoder head
    # The free model's training fixes (docs/experiments/motion-priors.md, 2026-12-05). AvatarCLIP's
    # release uses none of them: the defaults reproduce its computation and its state-dict layout.
    normalise: bool = False  # features standardised per channel by the buffers feature_mean/_std
    norm_first: bool = False  # pre-LN transformer layers (AvatarCLIP's, as nn.Transformer*: post-LN)
    logvar_init: float = 0.0  # initial log-variance of a variational encoder (its head's bias)
    # "transformer": AvatarCLIP's modules (the only layout its weights load into). "conv": temporal
    # convolutions around the same code, the free model's (issue #26: the transformer learnt only
    # each window's mean pose at corpus scale within a CPU's budget); num_layers is then the
    # residual blocks per time resolution, num_heads and ff_size are unused.
    backbone: str = "transformer"
    # conv only: halvings of time before the code (3: a 60-frame clip is coded as 8 steps; 2: as
    # 15 steps, a finer time grid for the strides) and the channel width (0: latent_dim).
    conv_levels: int = 3
    conv_channels: int = 0
    # A Gaussian fitted to the training codes, whitening the public code (fit_code_prior).
    code_prior: bool = False
    # With code_prior: how many training clips' posteriors sample_codes draws from (their mixture,
    # kept by fit_code_prior); 0: sample_codes draws N(0, I) of the whitened code.
    code_prior_components: int = 0

    @property
    def feature_dim(self) -> int:
        return self.num_joints * ROT6D


class _SinusoidalTable(nn.Module):
    """Transformer sine/cosine positional encodings, stored (as in AvatarCLIP) as a buffer."""

    def __init__(self, dim: int, max_len: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        position = torch.arange(max_len, dtype=torch.float32)[:, None]
        freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
        pe = torch.zeros(max_len, dim)
        pe[:, 0::2] = torch.sin(position * freq)
        pe[:, 1::2] = torch.cos(position * freq)
        self.register_buffer("pe", pe[:, None, :])  # (max_len, 1, dim): the original's layout

    def rows(self, length: int) -> torch.Tensor:
        """The first ``length`` encodings as (1, length, dim)."""
        return self.pe[:length].transpose(0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Add encodings to batch-first tokens (B, T, dim), then dropout."""
        return self.dropout(x + self.rows(x.shape[1]))


class _MotionEncoder(nn.Module):
    def __init__(self, cfg: MotionVAEConfig) -> None:
        super().__init__()
        d = cfg.latent_dim
        self.skelEmbedding = nn.Linear(cfg.feature_dim, d)
        self.pos_encoder = _SinusoidalTable(d, cfg.max_len, cfg.dropout)
        self.query = nn.Parameter(torch.randn(1, d))
        layer = nn.TransformerEncoderLayer(d, cfg.num_heads, cfg.ff_size, cfg.dropout, cfg.activation,
                                           batch_first=True, norm_first=cfg.norm_first)  # fmt: skip
        self.seqTransEncoder = nn.TransformerEncoder(layer, cfg.num_layers, enable_nested_tensor=False)
        self.final = nn.Linear(d, 2 * d if cfg.variational else d)
        if cfg.variational:
            with torch.no_grad():
                self.final.bias[d:] = cfg.logvar_init

    def forward(self, features: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, t = features.shape[:2]
        tokens = self.skelEmbedding(features.reshape(b, t, -1))
        tokens = torch.cat([self.query.expand(b, 1, -1), tokens], dim=1)
        padding = None
        if mask is not None:  # the query token is never padding
            padding = torch.cat([mask.new_zeros(b, 1), ~mask], dim=1)
        out = self.seqTransEncoder(self.pos_encoder(tokens), src_key_padding_mask=padding)
        return self.final(out[:, 0])


class _MotionDecoder(nn.Module):
    def __init__(self, cfg: MotionVAEConfig) -> None:
        super().__init__()
        d = cfg.latent_dim
        # Only the table is used: the queries are its rows, without the module's dropout.
        self.pos_encoder = _SinusoidalTable(d, cfg.max_len, cfg.dropout)
        layer = nn.TransformerDecoderLayer(d, cfg.num_heads, cfg.ff_size, cfg.dropout, cfg.activation,
                                           batch_first=True, norm_first=cfg.norm_first)  # fmt: skip
        self.seqTransDecoder = nn.TransformerDecoder(layer, cfg.num_layers)
        self.final = nn.Linear(d, cfg.feature_dim)

    def forward(self, z: torch.Tensor, num_frames: int) -> torch.Tensor:
        queries = self.pos_encoder.rows(num_frames).expand(z.shape[0], -1, -1)
        return self.final(self.seqTransDecoder(tgt=queries, memory=z[:, None, :]))


# ---- The free model's convolutional backbone -------------------------------------------------
# ``conv_levels`` halvings of time: with 3, a 60-frame clip is 8 steps at the bottleneck, and the
# code is those 8 steps' values (latent_dim / 8 numbers each). A single-vector code read out by
# fully connected layers learnt gait more slowly at corpus scale (docs/experiments/motion-priors.md).


class _ResidualConv(nn.Module):
    def __init__(self, channels: int, dropout: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv1d(channels, channels, 3, padding=1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.dropout(F.gelu(self.conv1(F.gelu(x)))))


def _bottleneck_length(cfg: MotionVAEConfig) -> int:
    return math.ceil(cfg.num_frames / 2**cfg.conv_levels)


class _ConvMotionEncoder(nn.Module):
    """Clips (B, T, F) -> (B, d) or (B, 2d): residual temporal convolutions, time halved
    ``conv_levels`` times; each bottleneck step gives d / steps numbers of the code (a code
    that keeps time: a gait's phase is where in the code the strides sit, not something the
    decoder must learn to read out of one vector)."""

    def __init__(self, cfg: MotionVAEConfig) -> None:
        super().__init__()
        d, c = cfg.latent_dim, cfg.conv_channels or cfg.latent_dim  # code size, channel width
        self.num_frames = cfg.num_frames
        self.embed = nn.Conv1d(cfg.feature_dim, c, 3, padding=1)
        self.levels = nn.ModuleList(
            nn.Sequential(
                *[_ResidualConv(c, cfg.dropout) for _ in range(cfg.num_layers)], nn.Conv1d(c, c, 3, stride=2, padding=1)
            )
            for _ in range(cfg.conv_levels)
        )
        self.length = _bottleneck_length(cfg)
        if d % self.length:
            raise ValueError(f"the convolutional motion VAE's latent_dim ({d}) must be a multiple of {self.length} "
                             f"(its bottleneck steps for {cfg.num_frames} frames)")  # fmt: skip
        self.per_step = d // self.length  # the code is per_step numbers for each bottleneck step
        self.variational = cfg.variational
        self.final = nn.Conv1d(c, 2 * self.per_step if cfg.variational else self.per_step, 1)
        if cfg.variational:
            with torch.no_grad():
                self.final.bias[self.per_step :] = cfg.logvar_init

    def forward(self, features: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, t = features.shape[:2]
        if t != self.num_frames:
            raise ValueError(f"this convolutional motion VAE encodes {self.num_frames}-frame clips, got {t} frames")
        x = features.reshape(b, t, -1)
        if mask is not None:
            x = x * mask[..., None].to(x.dtype)
        x = self.embed(x.transpose(1, 2))
        for level in self.levels:
            x = level(x)
        out = self.final(F.gelu(x))  # (B, [2] per_step, length)
        if not self.variational:
            return out.transpose(1, 2).flatten(1)
        mu, logvar = out.chunk(2, dim=1)
        return torch.cat([mu.transpose(1, 2).flatten(1), logvar.transpose(1, 2).flatten(1)], dim=-1)


class _ConvMotionDecoder(nn.Module):
    """Codes (B, d) -> clips (B, T, F) for T up to the bottleneck length x 2^conv_levels."""

    def __init__(self, cfg: MotionVAEConfig) -> None:
        super().__init__()
        c = cfg.conv_channels or cfg.latent_dim
        self.length = _bottleneck_length(cfg)
        self.per_step = cfg.latent_dim // self.length
        self.start = nn.Conv1d(self.per_step, c, 3, padding=1)
        self.levels = nn.ModuleList(
            nn.Sequential(
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv1d(c, c, 3, padding=1),
                *[_ResidualConv(c, cfg.dropout) for _ in range(cfg.num_layers)],
            )
            for _ in range(cfg.conv_levels)
        )
        self.final = nn.Conv1d(c, cfg.feature_dim, 1)

    def forward(self, z: torch.Tensor, num_frames: int) -> torch.Tensor:
        most = self.length * 2 ** len(self.levels)
        if num_frames > most:
            raise ValueError(f"this convolutional motion VAE decodes at most {most} frames, asked for {num_frames}")
        x = self.start(z.reshape(z.shape[0], self.length, self.per_step).transpose(1, 2))
        for level in self.levels:
            x = level(x)
        return self.final(F.gelu(x))[..., :num_frames].transpose(1, 2)


BACKBONES = {"transformer": (_MotionEncoder, _MotionDecoder), "conv": (_ConvMotionEncoder, _ConvMotionDecoder)}


class MotionVAE(nn.Module):
    """Clips of per-frame 6D joint rotations (B, T, 330) <-> one latent code (B, 256)."""

    def __init__(self, config: MotionVAEConfig | None = None) -> None:
        super().__init__()
        self.config = config or MotionVAEConfig()
        if self.config.backbone not in BACKBONES:
            raise ValueError(
                f"MotionVAEConfig.backbone must be one of {sorted(BACKBONES)}, got {self.config.backbone!r}"
            )
        encoder, decoder = BACKBONES[self.config.backbone]
        self.encoder = encoder(self.config)
        self.decoder = decoder(self.config)
        if self.config.normalise:  # set from the training data: set_feature_statistics
            self.register_buffer("feature_mean", torch.zeros(self.config.feature_dim))
            self.register_buffer("feature_std", torch.ones(self.config.feature_dim))
        if self.config.code_prior:  # N(0, I) until fit_code_prior (training runs in that space)
            d = self.config.latent_dim
            self.register_buffer("code_mean", torch.zeros(d))
            self.register_buffer("code_scale_tril", torch.eye(d))
            k = self.config.code_prior_components
            if k:  # 5.2 MB of the shipped (float16) file for 2,704 clips of a 480-number code
                self.register_buffer("code_components_mean", torch.zeros(k, d))
                self.register_buffer("code_components_std", torch.ones(k, d))
                self.register_buffer("code_components_weight", torch.ones(k))  # relative, max 1
        elif self.config.code_prior_components:
            raise ValueError("MotionVAEConfig.code_prior_components needs code_prior=True")

    @torch.no_grad()
    def set_feature_statistics(self, features: torch.Tensor, min_std: float = FEATURE_STD_FLOOR) -> None:
        """Per-channel mean and standard deviation (floored at ``min_std``) of training features
        (..., F): what ``config.normalise`` standardises by. Without it every channel is fitted
        on its raw scale, and the mean squared error is dominated by the root orientation and
        the arms while the legs' swing (6D channels of std ~0.05-0.2) is fitted last."""
        if not self.config.normalise:
            raise ValueError("set_feature_statistics needs MotionVAEConfig(normalise=True)")
        flat = features.reshape(-1, self.config.feature_dim).to(self.feature_mean)
        self.feature_mean.copy_(flat.mean(0))
        self.feature_std.copy_(flat.std(0).clamp_min(min_std))

    def normalise(self, features: torch.Tensor) -> torch.Tensor:
        """Features (B, T, F) in the units the transformer sees (unchanged without ``normalise``);
        the training loss compares reconstructions in these units."""
        if not self.config.normalise:
            return features
        return (features - self.feature_mean) / self.feature_std

    def denormalise(self, features: torch.Tensor) -> torch.Tensor:
        if not self.config.normalise:
            return features
        return features * self.feature_std + self.feature_mean

    def _encode_raw(
        self, features: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(mu, logvar)`` in the encoder's own code space (the one training regularises)."""
        if self.config.normalise:
            features = self.normalise(features.reshape(*features.shape[:2], -1))
        out = self.encoder(features, mask)
        if not self.config.variational:
            return out, None
        mu, logvar = out.chunk(2, dim=-1)
        return mu, logvar

    def _decode_raw(self, z: torch.Tensor, num_frames: int | None = None) -> torch.Tensor:
        return self.denormalise(self.decoder(z, num_frames or self.config.num_frames))

    def encode(
        self, features: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(mu, logvar)`` for clips (B, T, F) or (B, T, joints, 6).

        ``mask`` (B, T) bool marks real frames (True) of padded clips. ``logvar`` is None for
        AvatarCLIP's single-head encoder (``config.variational=False``). With a fitted
        ``code_prior`` both are whitened (``logvar``: the diagonal of the whitened posterior).
        """
        mu, logvar = self._encode_raw(features, mask)
        if not self.config.code_prior:
            return mu, logvar
        # Triangular solves: L^-1 (mu - mean) and the diagonal of L^-1 diag(sigma^2) L^-T.
        inv = torch.linalg.solve_triangular(self.code_scale_tril, torch.eye(mu.shape[-1]).to(mu), upper=False)
        mu = (mu - self.code_mean) @ inv.T
        if logvar is not None:
            logvar = torch.log(logvar.exp() @ (inv**2).T)
        return mu, logvar

    def decode(self, z: torch.Tensor, num_frames: int | None = None) -> torch.Tensor:
        """Features (B, T, F) of the clips for codes (B, latent_dim); T defaults to 60."""
        if self.config.code_prior:
            z = self.code_mean + z @ self.code_scale_tril.T
        return self._decode_raw(z, num_frames)

    @torch.no_grad()
    def sample_codes(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` codes (n, latent_dim) drawn from the prior, in the public code ``decode`` takes:
        with ``code_prior_components``, a training clip's posterior picked by its mixture weight
        and a draw from it; else N(0, I). On the CPU (``generator``'s device); move them where
        needed."""
        d = self.config.latent_dim
        if not self.config.code_prior_components:
            return torch.randn(n, d, generator=generator)
        pick = torch.multinomial(self.code_components_weight.cpu().float(), n, replacement=True, generator=generator)
        mean, std = self.code_components_mean.cpu()[pick], self.code_components_std.cpu()[pick]
        raw = mean + std * torch.randn(n, d, generator=generator, dtype=mean.dtype)
        return torch.linalg.solve_triangular(self.code_scale_tril.cpu(), (raw - self.code_mean.cpu()).T, upper=False).T

    def forward(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> dict[str, torch.Tensor | None]:
        """Encode, draw z (reparameterised, when variational and training; else z = mu), decode:
        the training pass, in the encoder's own code space (its KL term is to N(0, I) there).

        Returns ``mu``, ``logvar``, ``z`` and the reconstructed ``features`` (same T as input).
        """
        mu, logvar = self._encode_raw(features, mask)
        z = mu
        if logvar is not None and self.training:
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return {"mu": mu, "logvar": logvar, "z": z, "features": self._decode_raw(z, features.shape[1])}

    @torch.no_grad()
    def fit_code_prior(
        self, features: torch.Tensor, weights: torch.Tensor | None = None, batch: int = 256, jitter: float = 1e-5
    ) -> None:
        """Fit ``code_mean`` / ``code_scale_tril`` to clips (N, T, F) of the training data: the mean
        and Cholesky factor of the aggregate posterior's covariance, Cov[mu] + E[diag sigma^2]
        (+ ``jitter`` I), every clip equal; with ``code_prior_components`` (which must be N) also
        keep each clip's posterior, the mixture :meth:`sample_codes` draws from, with mixture
        weights ``weights`` (N,) (positive, any scale; default equal). Deterministic."""
        if not (self.config.code_prior and self.config.variational):
            raise ValueError("fit_code_prior needs MotionVAEConfig(code_prior=True, variational=True)")
        if features.shape[0] < 2:
            raise ValueError(f"fit_code_prior needs at least 2 clips, got {features.shape[0]}")
        k = self.config.code_prior_components
        if k and features.shape[0] != k:
            raise ValueError(
                f"MotionVAEConfig.code_prior_components={k} keeps one posterior per fitting clip, but "
                f"fit_code_prior got {features.shape[0]} clips: build the model with code_prior_components="
                f"{features.shape[0]} (or 0 to sample the Gaussian)"
            )
        if weights is not None and (not k or weights.shape != (features.shape[0],) or not (weights > 0).all()):
            raise ValueError(
                f"fit_code_prior's weights are the mixture weights of the {features.shape[0]} clips' posteriors: "
                f"give a positive tensor of shape ({features.shape[0]},) and a model with code_prior_components, "
                f"got shape {tuple(weights.shape)} with {int((weights <= 0).sum())} not positive, "
                f"code_prior_components={k}"
            )
        was_training = self.training
        self.eval()
        mus, variances = [], []
        for chunk in features.split(batch):
            mu, logvar = self._encode_raw(chunk.to(self.code_mean))
            mus.append(mu.double())
            variances.append(logvar.double().exp())
        self.train(was_training)
        mu, var = torch.cat(mus), torch.cat(variances)
        cov = torch.cov(mu.T) + torch.diag(var.mean(0) + jitter)
        self.code_mean.copy_(mu.mean(0))
        self.code_scale_tril.copy_(torch.linalg.cholesky(cov))
        if k:
            self.code_components_mean.copy_(mu)
            self.code_components_std.copy_(var.sqrt())
            w = torch.ones(k) if weights is None else weights.double()
            self.code_components_weight.copy_(w / w.max())  # relative: float16 in the shipped file


# ---- Canonical rotations <-> AvatarCLIP's features ---------------------------------------------


def rotmat_to_6d(rotmat: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> (..., 6): the first two rows (PyTorch3D's convention, used by AvatarCLIP)."""
    return rotmat[..., :2, :].reshape(*rotmat.shape[:-2], 6)


def rot6d_to_rotmat(d6: torch.Tensor) -> torch.Tensor:
    """(..., 6) -> (..., 3, 3) by Gram-Schmidt, rows b1, b2, b1 x b2 (inverse of rotmat_to_6d)."""
    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = F.normalize(a1, dim=-1)
    b2 = F.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    return torch.stack([b1, b2, torch.cross(b1, b2, dim=-1)], dim=-2)


def canonical_to_features(rotations: torch.Tensor, num_joints: int = NUM_FEATURE_JOINTS) -> torch.Tensor:
    """Canonical rotations (..., T, 22, 3) axis-angle -> features (..., T, num_joints * 6).

    Canonical joints 0..21 fill slots 0..21 (SMPL-X shares SMPL's first 22 joints, joint 0 the
    global orientation); the jaw, eyes and hands are the identity. Translation is not part of
    AvatarCLIP's features.
    """
    if rotations.shape[-2:] != (NUM_JOINTS, 3):
        raise ValueError(f"expected canonical rotations (..., {NUM_JOINTS}, 3), got {tuple(rotations.shape)}")
    rotmat = roma.rotvec_to_rotmat(rotations)
    rest = torch.eye(3, dtype=rotmat.dtype, device=rotmat.device)
    rest = rest.expand(*rotmat.shape[:-3], num_joints - NUM_JOINTS, 3, 3)
    d6 = rotmat_to_6d(torch.cat([rotmat, rest], dim=-3))
    return d6.reshape(*rotations.shape[:-2], num_joints * ROT6D)


def features_to_canonical(features: torch.Tensor, root: torch.Tensor | None = None) -> torch.Tensor:
    """Features (..., T, joints * 6) -> canonical rotations (..., T, 22, 3) axis-angle.

    Slots 22.. (jaw, eyes, hands) are dropped. ``root`` (axis-angle, broadcastable to
    (..., T, 3)) replaces joint 0: AvatarCLIP discards the decoded root and renders upright, so
    pass ``skeleton.UPRIGHT`` to do the same with its weights (the root convention of its
    training data is unknown).
    """
    d6 = features.reshape(*features.shape[:-1], -1, ROT6D)[..., :NUM_JOINTS, :]
    rotations = roma.rotmat_to_rotvec(rot6d_to_rotmat(d6))
    if root is not None:
        root = torch.as_tensor(root, dtype=rotations.dtype, device=rotations.device)
        root = root.expand_as(rotations[..., 0, :])[..., None, :]
        rotations = torch.cat([root, rotations[..., 1:, :]], dim=-2)
    return rotations


# ---- Loading the released weights -------------------------------------------------------------


def load_avatarclip_motion_vae(path: str | Path, config: MotionVAEConfig | None = None) -> MotionVAE:
    """A frozen MotionVAE in eval mode from AvatarCLIP's ``motion_vae.pth`` (or project weights).

    The file may be ``{'state_dict': ...}`` (what AvatarCLIP reads), a plain state dict or a
    pickled module. Entries outside ``encoder.``/``decoder.`` are not part of the model and
    are skipped with a warning (AvatarCLIP loads non-strictly); inside them loading is strict.
    A file without the constant positional tables gets this module's (AvatarCLIP would too).
    """
    if not str(path):
        raise FileNotFoundError(f"The motion prior needs `{MOTION_VAE_CONFIG_KEY}`. {MOTION_VAE_HELP}")
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(
            f"Motion VAE weights {str(file)!r} (config key `{MOTION_VAE_CONFIG_KEY}`) do not exist "
            f"or are not a file. {MOTION_VAE_HELP}"
        )
    key = MOTION_VAE_CONFIG_KEY
    state = extract_state_dict(read_torch_file(file, key, MOTION_VAE_WHAT, MOTION_VAE_HELP), file, key)
    skipped = [k for k in state if not k.startswith(("encoder.", "decoder."))]
    if skipped:
        warnings.warn(f"{file}: ignoring entries outside the motion VAE: {', '.join(skipped)}", stacklevel=2)
    state = {k: v for k, v in state.items() if k not in skipped}
    model = MotionVAE(config)
    for table in ("encoder.pos_encoder.pe", "decoder.pos_encoder.pe"):
        state.setdefault(table, getattr(model, table.split(".")[0]).pos_encoder.pe)
    load_state_dict_strict(model, state, file, key)
    c = model.config
    architecture = f"AvatarCLIP motion VAE (d={c.latent_dim}, {c.num_layers} layers, {c.num_frames} frames x {c.num_joints} joints)"
    log.info("Motion prior: %s loaded from %s (%s)", architecture, file_identity(file), key)
    model.loaded_weights = weights_record(file, architecture, key)
    return model.eval().requires_grad_(False)
