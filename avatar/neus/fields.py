"""The NeuS fields of AvatarCLIP's appearance stage: SDF, colour and variance networks.

These follow the NeuS code (Wang et al. 2021, itself following IDR) that AvatarCLIP builds on:

* :class:`SDFNetwork`: an MLP on positionally encoded points, softplus(beta=100) activations,
  weight normalisation, one skip connection, and IDR's *geometric initialisation* so that the
  untrained network is (approximately) the SDF of a sphere of radius ``sdf_bias``. Its output is
  the signed distance plus a feature vector for the colour network.
* :class:`ColorNetwork`: IDR's "idr" mode (point, encoded view direction, normal, feature) with
  a shared ReLU trunk and two sigmoid heads. Head ``a`` reproduces the coarse body's look (the
  stage keeps it as a regulariser), head ``b`` is the guided texture that gets exported.
* :class:`SingleVariance`: NeuS's learned scalar; ``inv_s = exp(10 * variance)`` is the
  sharpness of the logistic density around the zero level set.

Everything lives in a normalised object space where the body fits inside the unit sphere.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm as _weight_norm


@dataclass
class NeusFieldConfig:
    """Sizes of the three networks. Defaults are AvatarCLIP's (``paper`` preset); its ``small``
    preset is ``sdf_hidden=128, sdf_layers=3, color_hidden=128``.

    ``sdf_layers`` counts hidden layers. A skip index ``s`` in ``sdf_skip_in`` means the input
    encoding is concatenated to the input of linear layer ``s`` (NeuS convention); only
    ``1 <= s <= sdf_layers - 1`` is meaningful (a hidden layer that is not the first one and
    not the output layer), other indices are dropped with a warning, so one tuple works for
    every layer count.
    """

    sdf_hidden: int = 256
    sdf_layers: int = 4
    sdf_multires: int = 6
    sdf_skip_in: tuple[int, ...] = (2,)
    sdf_bias: float = 0.5
    softplus_beta: float = 100.0
    weight_norm: bool = True
    geometric_init: bool = True
    feature_dim: int = 256
    color_hidden: int = 256
    color_layers: int = 4
    color_multires_view: int = 4
    init_variance: float = 0.3


class Embedder(nn.Module):
    """NeRF positional encoding: ``[x, sin(2^k x), cos(2^k x)]`` for k < ``multires``;
    ``multires=0`` is the identity."""

    def __init__(self, multires: int, d_in: int = 3) -> None:
        super().__init__()
        self.multires = multires
        self.out_dim = d_in * (1 + 2 * multires)
        self.register_buffer("freqs", 2.0 ** torch.arange(multires, dtype=torch.float32), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if self.multires == 0:
            return x
        xf = x[..., None, :] * self.freqs[:, None]  # (..., K, d)
        enc = torch.stack([torch.sin(xf), torch.cos(xf)], dim=-2)  # (..., K, 2, d)
        return torch.cat([x, enc.flatten(-3)], dim=-1)


def valid_skips(skip_in: tuple[int, ...], n_hidden: int) -> tuple[int, ...]:
    """The skip indices kept for ``n_hidden`` hidden layers (see :class:`NeusFieldConfig`)."""
    kept = tuple(sorted({s for s in skip_in if 1 <= s <= n_hidden - 1}))
    dropped = sorted(set(skip_in) - set(kept))
    if dropped:
        warnings.warn(
            f"sdf_skip_in {dropped} invalid for {n_hidden} hidden layers (valid: 1..{n_hidden - 1}); ignored",
            stacklevel=3,
        )
    return kept


_SKIP_SCALE = 1.0 / math.sqrt(2)


class SDFNetwork(nn.Module):
    """NeuS/IDR SDF MLP: ``x -> (sdf, feature)`` (see the module docstring)."""

    def __init__(self, cfg: NeusFieldConfig) -> None:
        super().__init__()
        if cfg.sdf_layers < 1:
            raise ValueError(f"sdf_layers must be >= 1, got {cfg.sdf_layers}")
        self.embed = Embedder(cfg.sdf_multires)
        d_in = self.embed.out_dim
        if cfg.sdf_hidden <= d_in:
            raise ValueError(f"sdf_hidden ({cfg.sdf_hidden}) must exceed the encoding size ({d_in})")
        self.skip_in = valid_skips(tuple(cfg.sdf_skip_in), cfg.sdf_layers)
        dims = [d_in] + [cfg.sdf_hidden] * cfg.sdf_layers + [1 + cfg.feature_dim]
        n_lin = len(dims) - 1
        layers = []
        for layer in range(n_lin):
            out_dim = dims[layer + 1] - d_in if layer + 1 in self.skip_in else dims[layer + 1]
            lin = nn.Linear(dims[layer], out_dim)
            if cfg.geometric_init:
                self._geometric_init(lin, layer, n_lin, dims, d_in, out_dim, cfg)
            layers.append(_weight_norm(lin) if cfg.weight_norm else lin)
        self.layers = nn.ModuleList(layers)
        self.activation = nn.Softplus(beta=cfg.softplus_beta)

    def _geometric_init(self, lin, layer, n_lin, dims, d_in, out_dim, cfg) -> None:
        """IDR's init: the hidden layers see only xyz (the encoding's extra columns are zeroed,
        so high frequencies start silent) and the last layer maps |h| to ``|x| - bias``."""
        with torch.no_grad():
            if layer == n_lin - 1:
                nn.init.normal_(lin.weight, mean=math.sqrt(math.pi) / math.sqrt(dims[layer]), std=1e-4)
                nn.init.constant_(lin.bias, -cfg.sdf_bias)
                return
            nn.init.constant_(lin.bias, 0.0)
            nn.init.normal_(lin.weight, 0.0, math.sqrt(2) / math.sqrt(out_dim))
            if cfg.sdf_multires > 0 and layer == 0:
                lin.weight[:, 3:] = 0.0
            elif cfg.sdf_multires > 0 and layer in self.skip_in:
                lin.weight[:, -(d_in - 3) :] = 0.0

    def forward(self, x: Tensor) -> Tensor:
        """(N, 3) -> (N, 1 + feature_dim): signed distance first, then the features."""
        inputs = self.embed(x)
        h = inputs
        last = len(self.layers) - 1
        for i, lin in enumerate(self.layers):
            if i in self.skip_in:
                h = torch.cat([h, inputs], dim=-1) / math.sqrt(2)
            h = lin(h)
            if i < last:
                h = self.activation(h)
        return h

    def forward_with_gradient(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(forward(x), d sdf / dx)`` with the gradient written out as ordinary forward
        operations: the chain rule through the layers, from the output back to the encoding
        (softplus' derivative is ``sigmoid(beta z)``; the encoding's is ``2^k cos`` and
        ``-2^k sin``).

        The result equals ``torch.autograd.grad(sdf.sum(), x, create_graph=True)``, but a loss
        on it is then differentiated once (first order) instead of through autograd's double
        backward: about a quarter less work per training step, and a graph ``torch.compile``
        can fuse (it cannot compile a double backward)."""
        enc = self.embed
        inputs = enc(x)
        beta = self.activation.beta
        h, slopes, weights = inputs, [], []
        last = len(self.layers) - 1
        for i, lin in enumerate(self.layers):
            if i in self.skip_in:
                h = torch.cat([h, inputs], dim=-1) * _SKIP_SCALE
            weight = lin.weight  # weight-normalised: computed from (g, v) at each access
            weights.append(weight)
            z = F.linear(h, weight, lin.bias)
            if i < last:
                slopes.append(torch.sigmoid(beta * z))
                h = F.softplus(z, beta=beta)
            else:
                h = z
        # d sdf / d (input of layer i), from the last layer down; skips add to the encoding's.
        g = weights[last][0].expand(len(x), -1)
        g_inputs = None
        d_in = inputs.shape[-1]
        for i in range(last - 1, -1, -1):
            if i + 1 in self.skip_in:
                g_skip = g[:, -d_in:] * _SKIP_SCALE
                g_inputs = g_skip if g_inputs is None else g_inputs + g_skip
                g = g[:, :-d_in] * _SKIP_SCALE
            g = (g * slopes[i]) @ weights[i]
        g_inputs = g if g_inputs is None else g_inputs + g
        grad = g_inputs[:, :3]
        if enc.multires > 0:  # [x, sin(2^k x), cos(2^k x)] -> d/dx per coordinate
            xf = x[:, None, :] * enc.freqs[:, None]
            g_sc = g_inputs[:, 3:].reshape(len(x), enc.multires, 2, 3)
            grad = grad + ((g_sc[:, :, 0] * torch.cos(xf) - g_sc[:, :, 1] * torch.sin(xf)) * enc.freqs[:, None]).sum(1)
        return h, grad


class ColorNetwork(nn.Module):
    """IDR-mode rendering MLP with a shared trunk and two sigmoid RGB heads ``a`` and ``b``.

    Head ``b`` starts as an exact copy of head ``a`` so the exported texture starts from the
    coarse look; the stage then trains them apart (``a`` held to the body's colours, ``b``
    guided by text)."""

    def __init__(self, cfg: NeusFieldConfig) -> None:
        super().__init__()
        if cfg.color_layers < 1:
            raise ValueError(f"color_layers must be >= 1, got {cfg.color_layers}")
        self.embed_view = Embedder(cfg.color_multires_view)
        d_in = 3 + self.embed_view.out_dim + 3 + cfg.feature_dim
        dims = [d_in] + [cfg.color_hidden] * cfg.color_layers
        wn = _weight_norm if cfg.weight_norm else (lambda m: m)
        self.trunk = nn.ModuleList(wn(nn.Linear(dims[i], dims[i + 1])) for i in range(len(dims) - 1))
        self.head_a = nn.Linear(cfg.color_hidden, 3)
        self.head_b = nn.Linear(cfg.color_hidden, 3)
        self.head_b.load_state_dict(self.head_a.state_dict())
        self.head_a, self.head_b = wn(self.head_a), wn(self.head_b)

    def forward(self, points: Tensor, normals: Tensor, view_dirs: Tensor, features: Tensor) -> tuple[Tensor, Tensor]:
        h = torch.cat([points, self.embed_view(view_dirs), normals, features], dim=-1)
        for lin in self.trunk:
            h = torch.relu(lin(h))
        return torch.sigmoid(self.head_a(h)), torch.sigmoid(self.head_b(h))


class SingleVariance(nn.Module):
    """NeuS's deviation network: one learned scalar, ``inv_s = exp(10 * variance)``."""

    def __init__(self, init_variance: float = 0.3) -> None:
        super().__init__()
        self.variance = nn.Parameter(torch.tensor(float(init_variance)))

    def forward(self) -> Tensor:
        return torch.exp(self.variance * 10.0).clamp(1e-6, 1e6)


class NeusFields(nn.Module):
    """The three networks behind one small interface used by the renderer, init and stage."""

    def __init__(self, cfg: NeusFieldConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or NeusFieldConfig()
        self.sdf_net = SDFNetwork(self.cfg)
        self.color_net = ColorNetwork(self.cfg)
        self.variance = SingleVariance(self.cfg.init_variance)

    def sdf(self, x: Tensor) -> Tensor:
        """Signed distance (N,) of points (N, 3), negative inside."""
        return self.sdf_net(x)[:, 0]

    def sdf_and_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        out = self.sdf_net(x)
        return out[:, 0], out[:, 1:]

    def sdf_features_gradient(self, x: Tensor, create_graph: bool) -> tuple[Tensor, Tensor, Tensor]:
        """SDF (N,), features (N, F) and the SDF's spatial gradient (N, 3) in one forward pass
        (what the renderer needs per sample). ``create_graph`` keeps the gradient differentiable
        (training: the eikonal term and the normals feed the loss)."""
        with torch.set_grad_enabled(create_graph):
            out, grad = self.sdf_net.forward_with_gradient(x.detach())
        return out[:, 0], out[:, 1:], grad

    def gradient(self, x: Tensor, create_graph: bool) -> Tensor:
        """d sdf / dx (N, 3) (:meth:`SDFNetwork.forward_with_gradient`)."""
        return self.sdf_features_gradient(x, create_graph)[2]

    def colors(self, x: Tensor, normals: Tensor, view_dirs: Tensor, features: Tensor) -> tuple[Tensor, Tensor]:
        """RGB in [0, 1] of heads ``a`` and ``b``, each (N, 3). ``normals`` is the raw SDF
        gradient, as in NeuS."""
        return self.color_net(x, normals, view_dirs, features)

    def inv_s(self) -> Tensor:
        """NeuS's sharpness ``exp(10 * variance)`` (a 0-dim tensor)."""
        return self.variance()
