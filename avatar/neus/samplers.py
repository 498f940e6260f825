"""Ray samplers of the NeuS volume renderer, chosen by name (``VolumeRenderConfig.sampler``).

A sampler decides, for a batch of rays, which rays are rendered and over which intervals of
each ray the samples go; :class:`avatar.neus.volume.NeusVolumeRenderer` does the rest (uniform
samples, NeuS up-sampling, compositing) the same way for every sampler. See the module
docstring of ``avatar.neus.volume`` for what the two built-in samplers do and assume.

A new sampler is a class registered here with ``@NEUS_SAMPLERS.register("<name>")`` that
implements :meth:`RaySampler.layout` and :meth:`RaySampler.bounds`; select it with
``stage.volume.sampler=<name>``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from avatar.registry import Registry

if TYPE_CHECKING:
    from avatar.neus.volume import NeusVolumeRenderer

NEUS_SAMPLERS: Registry = Registry("NeuS sampler", "stage.volume.sampler")


@dataclass
class SampleLayout:
    """Groups of rays sharing a sample layout: ``(ray indices (M,), interval starts (M, K),
    interval ends (M, K))``, with the samples per interval; ``band_spacing`` spaces the uniform
    samples by each interval's length / ``n_samples`` (else by NeuS's 2 / ``n_samples``)."""

    groups: list[tuple[Tensor, Tensor, Tensor]]
    n_samples: int
    n_importance: int
    up_sample_steps: int
    band_spacing: bool
    stats: dict[str, int] = field(default_factory=dict)


class RaySampler:
    uses_proposal = False  # samples around the renderer's proposal mesh (kept current by the caller)

    def layout(self, renderer: NeusVolumeRenderer, rays_o: Tensor, rays_d: Tensor) -> SampleLayout:
        raise NotImplementedError

    def bounds(self, renderer: NeusVolumeRenderer, rays_o: Tensor, rays_d: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(near, far, hit)`` of each ray's first interval (N,)."""
        raise NotImplementedError


def _closest_approach(rays_o: Tensor, rays_d: Tensor) -> Tensor:
    return -(rays_o * rays_d).sum(-1) / (rays_d * rays_d).sum(-1)


@NEUS_SAMPLERS.register("paper")
class PaperSampler(RaySampler):
    """NeuS/AvatarCLIP: every ray over ``[mid - 1, mid + 1]`` around its closest approach to the
    origin (``near_far_from_sphere``), ``n_samples`` + ``n_importance`` samples."""

    def layout(self, renderer, rays_o, rays_d) -> SampleLayout:
        cfg, n = renderer.cfg, len(rays_o)
        mid = _closest_approach(rays_o, rays_d)
        groups = [(torch.arange(n, device=rays_o.device), (mid - 1.0).clamp_min(0.0)[:, None], (mid + 1.0)[:, None])]
        stats = {"rays": n, "rays_rendered": n}
        return SampleLayout(groups, cfg.n_samples, cfg.n_importance, cfg.up_sample_steps, False, stats)

    def bounds(self, renderer, rays_o, rays_d):
        from avatar.neus.volume import sphere_chord

        mid = _closest_approach(rays_o, rays_d)
        _, _, hit = sphere_chord(rays_o, rays_d)
        return (mid - 1.0).clamp_min(0.0), mid + 1.0, hit


@NEUS_SAMPLERS.register("surface")
class SurfaceSampler(RaySampler):
    """Bands behind each entry of the ray into the dilated proposal mesh (the renderer's
    ``set_proposal``); rays that miss it are not rendered."""

    uses_proposal = True

    def layout(self, renderer, rays_o, rays_d) -> SampleLayout:
        cfg = renderer.cfg
        starts, ends, counts = renderer._surface_bands(rays_o, rays_d)
        groups = []
        for k in range(1, cfg.max_bands + 1):
            idx = (counts == k).nonzero().squeeze(1)
            if len(idx):
                groups.append((idx, starts[idx, :k], ends[idx, :k]))
        stats = {
            "rays": len(rays_o),
            "rays_rendered": int((counts > 0).sum()),
            "rays_multi_band": int((counts > 1).sum()),
            "rays_at_max_bands": int((counts == cfg.max_bands).sum()),
        }
        return SampleLayout(
            groups, cfg.surface_samples, cfg.surface_importance, cfg.surface_up_sample_steps, True, stats
        )

    def bounds(self, renderer, rays_o, rays_d):
        starts, ends, counts = renderer._surface_bands(rays_o, rays_d)
        hit = counts > 0
        zero = torch.zeros_like(starts[:, 0])
        return torch.where(hit, starts[:, 0], zero), torch.where(hit, ends[:, 0], zero), hit
