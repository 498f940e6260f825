"""NeuS volume rendering with two samplers: the paper's chord sampler and a surface-band sampler.

Both samplers feed the same NeuS renderer (Wang et al. 2021, ``render_core``): the opacity of the
section between two samples is the exact drop of the logistic CDF ``sigmoid(sdf * inv_s)``
between its ends (estimated from the section's mid-point SDF and the annealed cosine between the
ray and the SDF gradient), colours come from the colour network at the section mid-points,
and the eikonal term is taken over the same points. Colours are NOT composited over a
background: the caller does ``rgb = color + (1 - opacity) * background``.

Samplers (``VolumeRenderConfig.sampler``, registered by name in ``avatar.neus.samplers``):

* ``"paper"``: NeuS/AvatarCLIP. Every ray is sampled over ``[mid - 1, mid + 1]`` around its
  closest approach to the origin (NeuS ``near_far_from_sphere``): ``n_samples`` uniform samples
  (one random shift per ray when perturbing), then ``up_sample_steps`` rounds of importance
  sampling of the SDF-derived weights with ``inv_s = 64 * 2**i`` (NeuS ``up_sample``), adding
  ``n_importance`` samples in total. This is the baseline.
* ``"surface"`` (default): the body is already known to lie near a *proposal* mesh (the coarse
  body at first, then the current SDF's marching-cubes mesh, refreshed by the caller). The
  proposal is dilated by ``dilation`` along its vertex normals and ray cast with Warp. A ray
  that misses the dilated proposal gets zero opacity with no network call. A ray that hits it
  at ``t`` is sampled only in the band ``[t, t + 2 * surface_band]`` (``surface_samples``
  uniform, plus ``surface_importance`` by the same NeuS up-sampling). A ray that leaves the
  band without being stopped can enter the dilated proposal again further on (it grazed an
  arm and goes on to the torso): each later entry opens another band on the same ray (up to
  ``max_bands``), so the sampler sees everything the proposal says may be there. While the
  density is blurry (small ``inv_s``) the dilation and bands widen (``opacity_tail``).

  Assumption (the caller keeps it true by refreshing the proposal): the true surface lies
  inside the dilated proposal and at most ``2 * surface_band - dilation`` (along the ray)
  behind the dilated proposal's surface. Where it holds, the surface sampler renders what the
  paper sampler renders, with ~4x fewer samples per ray and no work on background rays.
  Geometry outside the dilated proposal is invisible to it (and gets no gradient): growth
  beyond ``dilation`` needs a proposal refresh.

Memory: network calls run on ``chunk`` points at a time. Without gradients (evaluation and the
up-sampling passes) this bounds memory; with gradients the autograd graph of every chunk is kept
for the backward pass, so a training step's memory grows with the number of samples, which the
surface sampler cuts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import warp as wp
from torch import Tensor, nn

from avatar.neus.fields import NeusFields
from avatar.neus.samplers import NEUS_SAMPLERS
from avatar.render.mesh_renderer import vertex_normals
from avatar.utils.warp_setup import init_warp

_MAX_ITERATIONS = 64  # ray-cast steps per ray in the band search (exits skipped + entries)


@wp.kernel
def _band_starts(
    mesh: wp.uint64,
    origins: wp.array(dtype=wp.vec3),
    directions: wp.array(dtype=wp.vec3),
    t_min: wp.array(dtype=float),
    t_max: wp.array(dtype=float),
    band_length: float,
    min_cos: float,
    max_bands: int,
    starts: wp.array2d(dtype=float),
    lengths: wp.array2d(dtype=float),
    counts: wp.array(dtype=wp.int32),
):
    """Per ray, the distances where it enters the (closed, outward-wound) dilated proposal,
    each after the previous band; a ray starting inside opens a band at ``t_min``. Exits (hits
    on back faces) are skipped. A band is ``band_length / cos`` long, ``cos`` the angle between
    the ray and the entered face's normal (floored at ``min_cos``): a grazing ray travels
    further behind the dilated surface before it reaches the true one."""
    i = wp.tid()
    o = origins[i]
    d = directions[i]
    t = t_min[i]
    t_end = t_max[i]
    count = int(0)
    first = int(1)
    it = int(0)
    while count < max_bands and t < t_end and it < _MAX_ITERATIONS:
        it += 1
        q = wp.mesh_query_ray(mesh, o + d * t, d, t_end - t)
        if not q.result:
            break
        exiting = wp.dot(q.normal, d) > 0.0
        if exiting and first == 1:  # the ray starts inside the dilated proposal
            length = band_length / min_cos
            starts[i, count] = t
            lengths[i, count] = length
            count += 1
            t = t + length
        elif exiting:
            t = t + q.t + 1.0e-5
        else:
            length = band_length / wp.max(-wp.dot(q.normal, d), min_cos)
            starts[i, count] = t + q.t
            lengths[i, count] = length
            count += 1
            t = t + q.t + length
        first = 0
    counts[i] = count


@dataclass
class VolumeRenderConfig:
    """Sampler choice and sizes (see the module docstring).

    ``surface_band`` is the half-width (object-space units) of the band sampled behind each
    entry into the proposal dilated by ``dilation``; ``max_bands`` bounds how many separate
    entries one ray may get bands for (a ray needing more is rendered with the first
    ``max_bands``: counted in :attr:`NeusVolumeRenderer.last_stats`). Bands of grazing rays are
    longer: ``1 / max(cos, min_cos)`` times, ``cos`` between the ray and the surface normal.

    ``opacity_tail`` keeps the surface sampler right while the density is still blurry (small
    ``inv_s``, e.g. NeuS's initial 20): a ray meets ``sigmoid(-opacity_tail)`` (1% for 4.6) of
    its opacity more than ``opacity_tail / inv_s`` in front of the surface, so the effective
    dilation is ``max(dilation, opacity_tail / inv_s)`` (rounded up to a 10% grid so the BVH
    is rebuilt only when it changes much) and the bands grow by the difference.
    """

    sampler: str = "surface"
    n_samples: int = 32
    n_importance: int = 32
    up_sample_steps: int = 4
    perturb: bool = True
    surface_band: float = 0.08
    surface_samples: int = 8
    surface_importance: int = 8
    surface_up_sample_steps: int = 1
    dilation: float = 0.03
    min_cos: float = 0.25
    opacity_tail: float = 4.6
    max_bands: int = 3
    chunk: int = 65536
    # torch.compile the per-sample network evaluation (SDF, its gradient, both colours): about
    # 1.5x faster fields on a CPU (benchmarks/profile_appearance.py); the first call compiles
    # (~20 s on a 2-core CPU, a few seconds once the inductor cache in /tmp is warm).
    compile: bool = False


def sample_pdf(bins: Tensor, weights: Tensor, n_samples: int) -> Tensor:
    """NeRF/NeuS inverse-CDF sampling (deterministic ``u``, as NeuS's up-sampling):
    ``bins`` (N, S+1) section ends, ``weights`` (N, S) -> (N, n_samples) new positions."""
    weights = weights + 1e-5
    pdf = weights / weights.sum(-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[:, :1]), torch.cumsum(pdf, -1)], -1)
    u = torch.linspace(0.5 / n_samples, 1.0 - 0.5 / n_samples, n_samples, device=bins.device, dtype=bins.dtype)
    u = u.expand(cdf.shape[0], n_samples).contiguous()
    inds = torch.searchsorted(cdf.contiguous(), u, right=True)
    below = (inds - 1).clamp_min(0)
    above = inds.clamp_max(cdf.shape[-1] - 1)
    cdf_lo, cdf_hi = cdf.gather(1, below), cdf.gather(1, above)
    bin_lo, bin_hi = bins.gather(1, below), bins.gather(1, above)
    denom = cdf_hi - cdf_lo
    denom = torch.where(denom < 1e-5, torch.ones_like(denom), denom)
    return bin_lo + (u - cdf_lo) / denom * (bin_hi - bin_lo)


def sphere_chord(rays_o: Tensor, rays_d: Tensor, radius: float = 1.0) -> tuple[Tensor, Tensor, Tensor]:
    """Exact entry/exit distances (N,) of rays with the sphere of ``radius`` at the origin
    (entry clamped to >= 0), and whether the ray meets it at all."""
    a = (rays_d * rays_d).sum(-1)
    mid = -(rays_o * rays_d).sum(-1) / a
    closest2 = ((rays_o + mid[:, None] * rays_d) ** 2).sum(-1)
    half = torch.sqrt((radius**2 - closest2).clamp_min(0.0) / a)
    return (mid - half).clamp_min(0.0), mid + half, closest2 < radius**2


def _alpha_weights(prev_sdf: Tensor, next_sdf: Tensor, inv_s) -> tuple[Tensor, Tensor]:
    """NeuS discrete opacity of sections from the SDF at their ends, and the compositing
    weights ``alpha * transmittance``."""
    prev_cdf = torch.sigmoid(prev_sdf * inv_s)
    next_cdf = torch.sigmoid(next_sdf * inv_s)
    alpha = ((prev_cdf - next_cdf + 1e-5) / (prev_cdf + 1e-5)).clip(0.0, 1.0)
    trans = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1.0 - alpha + 1e-7], -1), -1)[:, :-1]
    return alpha, alpha * trans


class NeusVolumeRenderer(nn.Module):
    """Renders rays through :class:`NeusFields` (see the module docstring)."""

    def __init__(self, fields: NeusFields, cfg: VolumeRenderConfig | None = None) -> None:
        super().__init__()
        self.fields = fields
        self.cfg = cfg or VolumeRenderConfig()
        self.sampler = NEUS_SAMPLERS.build(self.cfg.sampler)  # avatar.neus.samplers
        if self.cfg.max_bands < 1:
            raise ValueError("max_bands must be >= 1")
        init_warp()
        self._proposal: dict | None = None
        self._loaded_on: set[str] = set()
        self.last_stats: dict[str, int] = {}

    def __getstate__(self) -> dict:
        # Warp meshes belong to this process: copies and pickles rebuild them on first use.
        state = self.__dict__.copy()
        if state.get("_proposal") is not None:
            state["_proposal"] = {k: v for k, v in state["_proposal"].items() if k in ("vertices", "faces", "normals")}
        state["_loaded_on"] = set()
        state.pop("_compiled_points", None)  # compiled code belongs to this process too
        return state

    # ------------------------------------------------------------------ proposal (Warp)
    def set_proposal(self, vertices: Tensor, faces: Tensor) -> None:
        """Use the (closed, outward-wound) mesh ``vertices`` (V, 3), ``faces`` (F, 3) in object
        space as the known surface of the surface sampler; it is dilated by ``cfg.dilation``
        along area-weighted vertex normals and its BVH built once here."""
        if faces.ndim != 2 or faces.shape[1] != 3 or vertices.ndim != 2 or vertices.shape[1] != 3:
            raise ValueError("set_proposal needs vertices (V, 3) and faces (F, 3)")
        verts = vertices.detach().to(torch.float32)
        faces = faces.detach().to(device=verts.device, dtype=torch.int64)
        if len(faces) == 0:
            raise ValueError("set_proposal got an empty mesh")
        if faces.min() < 0 or faces.max() >= len(verts):
            raise ValueError(f"faces index outside the {len(verts)} vertices")
        self._proposal = {
            "vertices": verts.contiguous(),
            "faces": faces,
            "normals": vertex_normals(verts, faces).contiguous(),
        }

    def effective_dilation(self) -> float:
        """``max(dilation, opacity_tail / inv_s)`` on a 10% geometric grid (see the config)."""
        cfg = self.cfg
        need = cfg.opacity_tail / float(self.fields.inv_s().detach())
        if need <= cfg.dilation:
            return cfg.dilation
        return cfg.dilation * 1.1 ** math.ceil(math.log(need / cfg.dilation, 1.1) - 1e-9)

    def dilated_proposal(self) -> tuple[Tensor, Tensor]:
        """The mesh the surface sampler casts rays against (the proposal dilated by
        :meth:`effective_dilation`): outside its silhouette no ray can have opacity."""
        prop = self._proposal
        if prop is None:
            raise RuntimeError("no proposal: call set_proposal(vertices, faces) first")
        return prop["vertices"] + self.effective_dilation() * prop["normals"], prop["faces"]

    def _warp_mesh(self, device: torch.device, dilation: float) -> wp.Mesh:
        prop = self._proposal
        if prop is None:
            raise RuntimeError("the surface sampler needs set_proposal(vertices, faces) first")
        if prop.get("built") != (str(device), dilation):
            verts = prop["vertices"].to(device)
            prop["dilated"] = (verts + dilation * prop["normals"].to(device)).contiguous()
            prop["indices"] = prop["faces"].to(device=device, dtype=torch.int32).reshape(-1).contiguous()
            prop["mesh"] = wp.Mesh(
                points=wp.from_torch(prop["dilated"], dtype=wp.vec3),
                indices=wp.from_torch(prop["indices"], dtype=wp.int32),
            )
            prop["built"] = (str(device), dilation)
        return prop["mesh"]

    def band_length(self) -> float:
        """Length of each surface band: ``2 * surface_band`` plus the extra dilation."""
        return 2.0 * self.cfg.surface_band + self.effective_dilation() - self.cfg.dilation

    def _surface_bands(self, rays_o: Tensor, rays_d: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Band starts (N, max_bands), band ends (same) and band counts (N,) of every ray."""
        cfg = self.cfg
        device = rays_o.device
        mesh = self._warp_mesh(device, self.effective_dilation())
        length = self.band_length()
        t_min, t_max, _ = sphere_chord(rays_o, rays_d)
        n = len(rays_o)
        starts = torch.zeros(n, cfg.max_bands, dtype=torch.float32, device=device)
        lengths = torch.zeros(n, cfg.max_bands, dtype=torch.float32, device=device)
        counts = torch.zeros(n, dtype=torch.int32, device=device)
        if n:
            wp_device = wp.device_from_torch(device)
            if str(wp_device) not in self._loaded_on:
                wp.load_module(_band_starts.module, device=wp_device)
                self._loaded_on.add(str(wp_device))
            inputs = [
                mesh.id,
                wp.from_torch(rays_o.detach().float().contiguous(), dtype=wp.vec3),
                wp.from_torch(rays_d.detach().float().contiguous(), dtype=wp.vec3),
                wp.from_torch(t_min.float().contiguous()),
                wp.from_torch(t_max.float().contiguous()),
                length,
                cfg.min_cos,
                cfg.max_bands,
            ]
            outputs = [wp.from_torch(starts), wp.from_torch(lengths), wp.from_torch(counts)]
            if wp_device.is_cuda:
                with wp.ScopedStream(wp.stream_from_torch(device)):
                    wp.launch(_band_starts, dim=n, inputs=inputs, outputs=outputs, device=wp_device)
            else:
                wp.launch(_band_starts, dim=n, inputs=inputs, outputs=outputs, device=wp_device)
        starts = starts.to(rays_o.dtype)
        ends = torch.minimum(starts + lengths.to(rays_o.dtype), t_max[:, None])
        return starts, ends, counts.long()

    def ray_bounds(self, rays_o: Tensor, rays_d: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(near, far, hit)``, each (N,). "paper": NeuS's ``[mid - 1, mid + 1]`` (near clamped
        to >= 0), hit = the ray meets the unit sphere. "surface": the first band
        ``[t_hit, t_hit + 2 * surface_band]`` (widened while ``inv_s`` is small, see the
        config) clamped into the unit sphere's chord, hit = the
        ray meets the dilated proposal (rays "inside the dilated silhouette"); near = far = 0
        where it does not. Later bands of the same ray (see the module docstring) are not
        reported here."""
        return self.sampler.bounds(self, rays_o, rays_d)

    # ------------------------------------------------------------------ rendering
    def forward(self, *args, **kwargs) -> dict:
        return self.render(*args, **kwargs)

    def render(
        self,
        rays_o: Tensor,
        rays_d: Tensor,
        cos_anneal_ratio: float = 1.0,
        training: bool = True,
        generator: torch.Generator | None = None,
    ) -> dict:
        """Render N rays (object space; ``rays_d`` unit length). ``training`` turns on the
        sampling jitter (when ``cfg.perturb``). Gradients reach the fields through every output
        whenever autograd is enabled.

        Returns ``color_a``, ``color_b`` (N, 3) (weight-accumulated, no background), ``opacity``
        (N,) (weight sum), ``normal`` (N, 3) (weight-accumulated unit normals), ``depth`` (N,)
        (weight-accumulated section mid-point distance: divide by opacity for the surface
        distance), ``eikonal`` (scalar, mean ``(|grad| - 1)^2`` over the samples within radius
        1.2, as NeuS) and ``n_points`` (int, network evaluations made by this call).
        """
        cfg = self.cfg
        n = len(rays_o)
        device, dtype = rays_o.device, rays_o.dtype
        out = {
            "color_a": torch.zeros(n, 3, device=device, dtype=dtype),
            "color_b": torch.zeros(n, 3, device=device, dtype=dtype),
            "opacity": torch.zeros(n, device=device, dtype=dtype),
            "normal": torch.zeros(n, 3, device=device, dtype=dtype),
            "depth": torch.zeros(n, device=device, dtype=dtype),
        }
        perturb = training and cfg.perturb
        # groups of rays sharing a sample layout: (ray index, band starts, band ends)
        layout = self.sampler.layout(self, rays_o, rays_d)
        groups, n_samples, n_importance, steps = (
            layout.groups,
            layout.n_samples,
            layout.n_importance,
            layout.up_sample_steps,
        )
        self.last_stats = layout.stats

        n_points = 0
        eik_sum = torch.zeros((), device=device, dtype=dtype)
        eik_count = 0
        for idx, lo, hi in groups:
            step = (
                ((hi - lo) / n_samples).clamp_min(1e-6)
                if layout.band_spacing
                else torch.full_like(lo, 2.0 / cfg.n_samples)
            )
            res = self._render_group(
                rays_o[idx],
                rays_d[idx],
                lo,
                hi,
                n_samples,
                n_importance,
                steps,
                step,
                perturb,
                cos_anneal_ratio,
                generator,
            )
            for key in out:
                out[key] = out[key].index_copy(0, idx, res[key].to(dtype))
            n_points += res["n_points"]
            eik_sum = eik_sum + res["eikonal_sum"]
            eik_count += res["eikonal_count"]
        out["eikonal"] = eik_sum / max(eik_count, 1)
        out["n_points"] = n_points
        return out

    def _render_group(
        self,
        rays_o,
        rays_d,
        lo,
        hi,
        n_samples,
        n_importance,
        steps,
        sample_dist,
        perturb,
        cos_anneal_ratio,
        generator=None,
    ) -> dict:
        """NeuS sampling + ``render_core`` for rays with the same number of bands K: ``lo``,
        ``hi`` (M, K) band bounds; ``n_samples`` uniform samples per band; ``sample_dist`` (M, K)
        the nominal spacing of each band (NeuS: ``2 / n_samples``), also the length given to a
        band's last section."""
        m, k = lo.shape
        lin = torch.linspace(0.0, 1.0, n_samples, device=rays_o.device, dtype=rays_o.dtype)
        z = lo[:, :, None] + (hi - lo)[:, :, None] * lin
        if perturb:  # NeuS: one shift per ray of up to half the (nominal) spacing
            if generator is None:
                raise ValueError(
                    "perturbed (training) renders need a generator: pass generator= (a resumed run must repeat its draws)"
                )
            shift = torch.rand(m, 1, 1, generator=generator, device=generator.device, dtype=z.dtype).to(z.device) - 0.5
            z = z + shift * sample_dist[:, :, None]
        z = z.reshape(m, k * n_samples)
        n_points = 0
        fields = self.fields

        def band_of(zz: Tensor) -> Tensor:  # band index of each sample (M, S)
            return (torch.searchsorted(lo.contiguous(), zz.contiguous(), right=True) - 1).clamp_min(0)

        if n_importance > 0 and steps > 0:
            with torch.no_grad():
                sdf = self._sdf_chunked(rays_o, rays_d, z)
                n_points += z.numel()
                for i in range(steps):
                    new_z = self._up_sample(rays_o, rays_d, z, sdf, band_of(z), n_importance // steps, 64 * 2**i)
                    z, order = torch.sort(torch.cat([z, new_z], -1), -1)
                    if i + 1 < steps:
                        new_sdf = self._sdf_chunked(rays_o, rays_d, new_z)
                        n_points += new_z.numel()
                        sdf = torch.cat([sdf, new_sdf], -1).gather(1, order)
        z = z.detach()

        # render_core: one network evaluation per section mid-point.
        s = z.shape[1]
        band = band_of(z)
        dists = z[:, 1:] - z[:, :-1]
        same_band = band[:, 1:] == band[:, :-1]
        last = sample_dist.gather(1, band)  # (M, S) the spacing of each sample's band
        dists = torch.where(same_band, dists, last[:, :-1])  # band ends
        dists = torch.cat([dists, last[:, -1:]], -1)
        mid_z = z + dists * 0.5
        pts = (rays_o[:, None, :] + rays_d[:, None, :] * mid_z[..., None]).reshape(-1, 3)
        dirs = rays_d[:, None, :].expand(m, s, 3).reshape(-1, 3)
        sdf, grad, col_a, col_b = self._full_chunked(pts, dirs)
        n_points += len(pts)

        inv_s = fields.inv_s()
        true_cos = (dirs * grad).sum(-1)
        iter_cos = -(F.relu(-true_cos * 0.5 + 0.5) * (1.0 - cos_anneal_ratio) + F.relu(-true_cos) * cos_anneal_ratio)
        half = iter_cos * dists.reshape(-1) * 0.5
        _, weights = _alpha_weights((sdf - half).reshape(m, s), (sdf + half).reshape(m, s), inv_s)

        grad_norm = grad.norm(dim=-1)
        relax_inside = (pts.norm(dim=-1) < 1.2).to(grad.dtype).detach()
        unit_n = grad / grad_norm.clamp_min(1e-8)[:, None]
        w = weights[..., None]
        return {
            "color_a": (col_a.reshape(m, s, 3) * w).sum(1),
            "color_b": (col_b.reshape(m, s, 3) * w).sum(1),
            "opacity": weights.sum(-1),
            "normal": (unit_n.reshape(m, s, 3) * w).sum(1),
            "depth": (mid_z * weights).sum(-1),
            "eikonal_sum": (relax_inside * (grad_norm - 1.0) ** 2).sum(),
            "eikonal_count": int(relax_inside.sum()),
            "n_points": n_points,
        }

    def _up_sample(self, rays_o, rays_d, z, sdf, band, n_new: int, inv_s: float) -> Tensor:
        """NeuS ``up_sample``: section weights from SDF pairs with a conservative (steepest
        neighbouring, never positive) cosine, then deterministic inverse-CDF samples. Sections
        joining two bands (the empty gap between them) get zero weight."""
        pts = rays_o[:, None, :] + rays_d[:, None, :] * z[..., None]
        radius = pts.norm(dim=-1)
        inside = ((radius[:, :-1] < 1.0) | (radius[:, 1:] < 1.0)).to(z.dtype)
        prev_sdf, next_sdf = sdf[:, :-1], sdf[:, 1:]
        dist = z[:, 1:] - z[:, :-1]
        mid_sdf = (prev_sdf + next_sdf) * 0.5
        cos_val = (next_sdf - prev_sdf) / (dist + 1e-5)
        prev_cos = torch.cat([torch.zeros_like(cos_val[:, :1]), cos_val[:, :-1]], -1)
        cos_val = torch.minimum(prev_cos, cos_val).clip(-1e3, 0.0) * inside
        same_band = band[:, 1:] == band[:, :-1]
        _, weights = _alpha_weights(mid_sdf - cos_val * dist * 0.5, mid_sdf + cos_val * dist * 0.5, inv_s)
        weights = weights * same_band.to(weights.dtype)
        return sample_pdf(z, weights, n_new).detach()

    def _sdf_chunked(self, rays_o: Tensor, rays_d: Tensor, z: Tensor) -> Tensor:
        pts = (rays_o[:, None, :] + rays_d[:, None, :] * z[..., None]).reshape(-1, 3)
        c = self.cfg.chunk
        return torch.cat([self.fields.sdf(pts[i : i + c]) for i in range(0, len(pts), c)]).reshape(z.shape)

    def _evaluate_points(self, pts: Tensor, dirs: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """SDF, gradient and both colours of points (differentiable when grad is enabled)."""
        sdf, feat, grad = self.fields.sdf_features_gradient(pts, torch.is_grad_enabled())
        col_a, col_b = self.fields.colors(pts, grad, dirs, feat)
        return sdf, grad, col_a, col_b

    def point_evaluator(self):
        """:meth:`_evaluate_points`, compiled once per process when ``cfg.compile``."""
        if not self.cfg.compile:
            return self._evaluate_points
        if getattr(self, "_compiled_points", None) is None:
            # dynamic: the number of samples changes every step (one graph, no recompiles).
            self._compiled_points = torch.compile(self._evaluate_points, dynamic=True)
        return self._compiled_points

    def _full_chunked(self, pts: Tensor, dirs: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """SDF, gradient and both colours at every point, ``cfg.chunk`` points per call."""
        evaluate = self.point_evaluator()
        outs = []
        c = self.cfg.chunk
        for i in range(0, len(pts), c):
            outs.append(evaluate(pts[i : i + c], dirs[i : i + c]))
        if not outs:
            e = pts.new_zeros(0)
            return e, pts.new_zeros(0, 3), pts.new_zeros(0, 3), pts.new_zeros(0, 3)
        return tuple(torch.cat(parts) for parts in zip(*outs))
