"""NeuS for the appearance stage: fields (SDF, two-head colour, variance), the volume renderer
with the paper's and the surface-band sampler, mesh signed distance, and mesh initialisation.

(Marching-cubes extraction lives in ``avatar.neus.extract``.)"""

from avatar.neus.fields import ColorNetwork, NeusFieldConfig, NeusFields, SDFNetwork, SingleVariance
from avatar.neus.init import evaluate_fit, fit_fields_to_mesh, sample_surface
from avatar.neus.mesh_sdf import MeshQuery, closest_surface_points, mesh_signed_distance
from avatar.neus.volume import NeusVolumeRenderer, VolumeRenderConfig, sphere_chord

__all__ = [
    "ColorNetwork",
    "MeshQuery",
    "NeusFieldConfig",
    "NeusFields",
    "NeusVolumeRenderer",
    "SDFNetwork",
    "SingleVariance",
    "VolumeRenderConfig",
    "closest_surface_points",
    "evaluate_fit",
    "fit_fields_to_mesh",
    "mesh_signed_distance",
    "sample_surface",
    "sphere_chord",
]
