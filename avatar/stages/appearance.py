"""Appearance stage: a NeuS avatar initialised from the coarse body, sculpted and textured by the
guidance model from random views, exported as a rigged, coloured mesh (AvatarCLIP Sec. 3.3).

Object space: the coarse body (world, metres, Z up, facing -Y) is centred and scaled so its
bounding sphere has radius ``object_radius`` inside the unit sphere, as AvatarCLIP's NeuS expects.
Cameras, rays and fields live there; exported meshes go back to world coordinates, so they
line up with the body's skeleton and can be rigged by it.

Per step (paper defaults; every switch is a flag, every term a ``lambda_``):
  * ``views_per_step`` random views (AvatarCLIP's sampling: every 4th a face close-up),
  * rays only inside the dilated silhouette of the current surface, at the largest square
    resolution whose silhouette holds at most ``max_ray_num`` rays (adaptive resolution),
  * renders: head A (compared to the coarse body's render, L1), head B lit near the view
    direction (shaded texture) and a textureless grey render, both on augmented backgrounds and
    scored by the guidance model against the prompt (face / back prompts for such views),
  * eikonal and mask (silhouette of the coarse body) terms,
  * (not in the paper; the free default's, conf/stage_guidance/appearance_mini.yaml) priors from
    the coarse body where the prompt says nothing: its signed distance on and around its surface,
    its colours in the regions the prompt does not name (:meth:`AppearanceStage.body_priors`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from avatar.body.base import build_body
from avatar.body.regions import DEMO_PALETTE, GREY_PALETTE, REGIONS, SKIN_PALETTE, region_colors, vertex_regions
from avatar.body.skeleton import JOINT_INDEX, CanonicalPose, named_pose
from avatar.export.media import image_grid, save_image, save_mesh, save_video, to_uint8
from avatar.guidance.augment import random_crops
from avatar.guidance.base import build_guidance
from avatar.metrics.appearance import appearance_report, named_regions
from avatar.neus.fields import NeusFieldConfig, NeusFields
from avatar.neus.init import NOISE_SCALES, sample_surface
from avatar.neus.mesh_sdf import MeshQuery
from avatar.neus.volume import NeusVolumeRenderer, VolumeRenderConfig
from avatar.render import (
    Cameras,
    MeshRenderer,
    make_background,
    orbit_cameras,
    sample_views,
    sized_renderer,
)
from avatar.stages.base import STAGES, StageModule
from avatar.utils.bounds import at_least
from avatar.utils.io import atomic_path
from avatar.utils.paths import cache_dir

log = logging.getLogger(__name__)

PAPER_TEMPLATE = "a 3d rendering of {} in unreal engine"


class CoarseColor(StrEnum):
    """The coarse body's look (head A's target, head B's start, the unnamed regions' prior): the
    renderer's grey, the demo's region palette, or skin on head, arms and hands, grey elsewhere."""

    grey = "grey"
    regions = "regions"
    skin = "skin"


COARSE_PALETTES = {CoarseColor.grey: GREY_PALETTE, CoarseColor.regions: DEMO_PALETTE, CoarseColor.skin: SKIN_PALETTE}


class NeusInit(StrEnum):
    """How the NeuS fields start: fitted to the body mesh's signed distance (``mesh``), to
    renders of it (``render``, the paper's), or from NeuS's sphere (``none``)."""

    mesh = "mesh"
    render = "render"
    none = "none"


@dataclass
class AppearanceStageConfig:
    name: str = "appearance"
    # The coarse body: a shape stage's run directory (its shape.npz), or "" for the body model's
    # neutral shape in ``bind_pose``.
    shape_dir: str = ""
    bind_pose: str = "t_pose"  # t_pose | a_pose (when shape_dir is empty)
    object_radius: float = 0.9  # the body's bounding sphere radius in NeuS object space
    fields: NeusFieldConfig = field(default_factory=NeusFieldConfig)
    volume: VolumeRenderConfig = field(default_factory=VolumeRenderConfig)

    # Initialisation (the paper's stage A): "mesh" fits the SDF to the coarse body's exact signed
    # distance (fast), "render" fits it to renders of the coarse body (the paper's way), "none"
    # starts from the geometric-init sphere (ablation).
    init: NeusInit = NeusInit.mesh
    init_steps: int = at_least(0, 1000)
    init_lr: float = 1e-3
    init_batch_points: int = 8192
    init_cache: bool = True  # reuse a mesh initialisation with identical inputs (project cache)
    coarse_color: CoarseColor = CoarseColor.grey

    # Guided stage
    prompt_template: str = PAPER_TEMPLATE
    face_template: str = "the face of {}"
    back_template: str = "the back of {}"
    max_ray_num: int = at_least(1, 12544)  # rays per step (paper; small: 7000)
    max_resolution: int = 512
    views_per_step: int = at_least(1, 1)  # the paper renders one view per step
    lr: float = 5e-4
    warmup_steps: int = 500
    # paper switches
    face_prompt: bool = True
    back_prompt: bool = True
    background_augmentation: bool = True
    textureless_render: bool = True
    shaded_texture: bool = True
    silhouette_rays: bool = True
    crop_augmentation: bool = False  # random scale/shift crops before the guidance model (not in the paper)
    proposal_refresh_every: int = 250  # re-extract the sampling proposal from the SDF (surface sampler)
    proposal_resolution: int = 96
    textureless_albedo: float = 0.8

    lambda_coarse: Any = 1.0  # L1 of head A to the coarse body's render
    lambda_eikonal: Any = 0.1
    lambda_mask: Any = 1.0  # BCE of the opacity to the coarse body's silhouette
    lambda_guidance_texture: Any = 1.0  # 1 - cos of the shaded textured render (head B)
    lambda_guidance_geometry: Any = 1.0  # 1 - cos of the textureless render
    # Priors from the coarse body (not in the paper), on ``body_points`` points sampled on its
    # surface each step (AppearanceStage.body_priors): L1 of the SDF to the body's signed distance
    # there and at as many points around it (the surface stays on the body where nothing moves it,
    # no lumps or floaters grow off it), and L1 of head B to the coarse colours in the regions the
    # prompt does not name
    # (avatar.metrics.appearance.named_regions: a shirt names the torso, not the face or hands).
    lambda_body_surface: Any = 0.0
    lambda_unnamed_color: Any = 0.0
    body_points: int = at_least(1, 4096)

    # Validation and export
    val_size: int = at_least(8, 128)
    val_views: int = at_least(1, 4)
    export_resolution: int = at_least(16, 512)  # marching cubes grid (paper: 512^3)
    export_views: int = at_least(1, 8)  # views of the visibility test for vertex colours
    turntable_frames: int = at_least(1, 60)


def resolution_for_rays(max_rays: int, views: int, silhouette_fraction: float, max_resolution: int) -> int:
    """AvatarCLIP's adaptive resolution: the largest square image whose rendered rays (only the
    silhouette's when ``silhouette_fraction`` < 1) stay within ``max_rays`` over ``views``."""
    fraction = min(max(silhouette_fraction, 1e-3), 1.0)
    return int(max(16, min(max_resolution, math.floor(math.sqrt(max_rays / (views * fraction))))))


def load_coarse_shape(body, shape_dir: str, bind_pose: str) -> tuple[torch.Tensor, str, str]:
    """The coarse body an appearance run starts from (``stage.shape_dir``, ``stage.bind_pose``):
    its shape (1, S), the name of the pose it is made in and where the shape came from (a
    shape run's ``shape.npz``, or ``"default"``: the body model's neutral shape)."""
    if not shape_dir:
        return body.default_shape(1).float(), bind_pose, "default"
    path = Path(shape_dir) / "shape.npz"
    if not path.is_file():
        raise FileNotFoundError(
            f"stage.shape_dir={shape_dir!r} has no shape.npz: give the run directory of a "
            "shape stage (python train.py stage=shape ...), or leave stage.shape_dir empty"
        )
    data = np.load(path, allow_pickle=False)
    if str(data["body"]) != body.name:
        raise ValueError(
            f"stage.shape_dir holds a {data['body']} shape but body={body.name}; run with body={data['body']}"
        )
    shape = torch.as_tensor(data["shape"], dtype=torch.float32).reshape(1, -1)
    pose = str(data["bind_pose"]) if "bind_pose" in data else bind_pose
    return shape, pose, str(path)


def coarse_body_rig(body, shape: torch.Tensor, bind_pose_name: str):
    """The coarse body rigged and moved to the T-pose the way the export is (``Rig.to_rest``
    from its bind pose): the surface the exported avatar is compared with (CPU)."""
    from avatar.body.skinning import rig_from_body

    rig = rig_from_body(body, shape, named_pose(bind_pose_name)).to("cpu")
    return rig.to_rest("t_pose") if bind_pose_name != "t_pose" else rig


def coarse_region_rgb(coarse_color: str) -> dict[str, list[float]]:
    """Each region's colour before guidance (``stage.coarse_color``'s palette)."""
    palette = COARSE_PALETTES[CoarseColor(coarse_color)]
    return {r: list(palette[r]) for r in REGIONS}


@STAGES.register("appearance")
class AppearanceStage(StageModule):
    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        sc = self.stage_cfg
        if not str(cfg.prompt.appearance).strip():
            raise ValueError(
                "prompt.appearance is empty: give the appearance text, e.g. prompt.appearance='a person in a red shirt'"
            )
        self.body = build_body(cfg.body)
        self.freeze_component("body")
        shape, bind_pose, self.shape_source = self._load_shape()
        self.register_buffer("shape", shape)
        self.bind_pose = bind_pose
        with torch.no_grad():
            out = self.body(shape=shape, pose=bind_pose)
        world = out.vertices[0].float()
        centre = 0.5 * (world.amax(0) + world.amin(0))
        scale = sc.object_radius / float((world - centre).norm(dim=-1).max())
        self.register_buffer("centre", centre)
        self.scale = scale
        self.register_buffer("coarse_vertices", (world - centre) * scale)  # object space
        self.register_buffer("faces", self.body.faces.clone(), persistent=False)
        self.register_buffer("head_target", (out.joints[0, JOINT_INDEX["head"]].float() - centre) * scale)
        weights = self.body.skinning_weights.float()
        coarse = region_colors(weights, COARSE_PALETTES[CoarseColor(sc.coarse_color)])
        self.register_buffer("coarse_colors", coarse, persistent=False)
        # Body priors: the coarse body on the CPU (sampled there with the step's generator; its
        # signed distance from a Warp BVH built on first use) and whether its faces are unnamed.
        named = named_regions(str(cfg.prompt.appearance))
        unnamed = torch.tensor([r not in named for r in REGIONS])[vertex_regions(weights)]
        faces = self.body.faces.long()
        self.body_cpu = (self.coarse_vertices.cpu(), faces.cpu())
        self._body_query: MeshQuery | None = None
        self.register_buffer("body_face_unnamed", unnamed[faces].all(dim=1), persistent=False)

        self.fields = NeusFields(sc.fields)
        self.volume = NeusVolumeRenderer(self.fields, sc.volume)
        self.volume.set_proposal(self.coarse_vertices, self.faces)
        self._mesh_renderers: dict[int, MeshRenderer] = {}
        self.guidance = None

    # ---- inputs ------------------------------------------------------------------------------
    def _load_shape(self) -> tuple[torch.Tensor, CanonicalPose, str]:
        shape, self.bind_pose_name, source = load_coarse_shape(
            self.body, self.stage_cfg.shape_dir, self.stage_cfg.bind_pose
        )
        return shape, named_pose(self.bind_pose_name), source

    def world_from_object(self, points: torch.Tensor) -> torch.Tensor:
        return points / self.scale + self.centre

    def mesh_renderer(self, size: int) -> MeshRenderer:
        if size not in self._mesh_renderers:
            self._mesh_renderers[size] = sized_renderer(size, background="white")
        return self._mesh_renderers[size]

    def prompts(self, info: dict[str, torch.Tensor]) -> list[str]:
        sc, text = self.stage_cfg, str(self.cfg.prompt.appearance).strip()
        out = []
        for face, back in zip(info["is_face"].tolist(), info["is_back"].tolist()):
            template = sc.prompt_template
            if face and sc.face_prompt:
                template = sc.face_template
            elif back and sc.back_prompt:
                template = sc.back_template
            out.append(template.format(text))
        return out

    # ---- lifecycle ---------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        # Lightning calls setup before it moves the module to the accelerator: move it here so
        # that the NeuS initialisation (thousands of field steps) runs on the GPU too.
        if self._trainer is not None:
            self.to(self.trainer.strategy.root_device)
        if self.guidance is None:
            self.guidance = build_guidance(self.cfg.guidance).to(self.device)
            self.freeze_component("guidance")
        if self._trainer is None or self.trainer.ckpt_path is None:  # resumed runs restore the fields
            self.initialise_fields()

    # The surface sampler's proposal is state: it is extracted from the field every
    # ``proposal_refresh_every`` steps, so a resumed run needs the one the run was using, not one
    # extracted from the field at the resume step.
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        proposal = self.volume._proposal
        if proposal is not None:
            checkpoint["neus_proposal"] = {"vertices": proposal["vertices"].cpu(), "faces": proposal["faces"].cpu()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        proposal = checkpoint.get("neus_proposal")
        if proposal is None:
            raise ValueError(
                "This appearance checkpoint has no NeuS sampling proposal (written before proposals were "
                "checkpointed), so resuming it cannot repeat the interrupted run; start the stage again."
            )
        self.volume.set_proposal(proposal["vertices"].to(self.device), proposal["faces"].to(self.device))

    def initialise_fields(self) -> None:
        sc = self.stage_cfg
        if sc.init == "none":
            return
        path = self._init_cache_path()
        if sc.init_cache and path.is_file():
            self.fields.load_state_dict(torch.load(path, map_location=self.device, weights_only=True))
            log.info("NeuS initialisation reused from %s", path)
        else:
            t0 = time.perf_counter()
            if sc.init == "mesh":
                from avatar.neus.init import fit_fields_to_mesh

                metrics = fit_fields_to_mesh(
                    self.fields, self.coarse_vertices, self.faces, self.coarse_colors, steps=sc.init_steps,
                    batch_points=sc.init_batch_points, lr=sc.init_lr,
                    generator=torch.Generator().manual_seed(int(self.cfg.seed)),
                )  # fmt: skip
            else:
                metrics = self.fit_fields_to_renders()
            self.fields.zero_grad(set_to_none=True)
            log.info("NeuS initialisation (%s) in %.1f s: %s", sc.init, time.perf_counter() - t0, metrics)
            if sc.init_cache:
                with atomic_path(path) as tmp:
                    torch.save(self.fields.state_dict(), tmp)
        self.refresh_proposal()

    def _init_cache_path(self) -> Path:
        sc = self.stage_cfg
        key = json.dumps({
            "body": self.body.name, "topology": str(self.cfg.body.get("topology", "")),
            "vertices": hashlib.sha1(self.coarse_vertices.cpu().numpy().tobytes()).hexdigest(),
            "colors": sc.coarse_color, "fields": OmegaConf.to_container(sc.fields, resolve=True),
            "init": sc.init, "steps": sc.init_steps, "lr": sc.init_lr, "points": sc.init_batch_points,
            "seed": int(self.cfg.seed), "version": 1,
        }, sort_keys=True)  # fmt: skip
        digest = hashlib.sha1(key.encode()).hexdigest()[:16]
        return cache_dir() / "neus_init" / f"{sc.init}_{digest}.pt"

    def fit_fields_to_renders(self) -> dict[str, float]:
        """The paper's stage A: fit SDF and both colour heads to renders of the coarse body from
        random views (mask BCE + colour L1 + eikonal)."""
        sc = self.stage_cfg
        params = list(self.fields.parameters())
        optimiser = torch.optim.Adam(params, lr=sc.init_lr)
        last = {}
        for step in range(sc.init_steps):
            g = torch.Generator().manual_seed(int(self.cfg.seed) * 7_919 + step)
            cams, info = sample_views(sc.views_per_step, self.cfg.views, g, torch.zeros(3), self.head_target, step=step)
            batch = self.render_views(cams, g, need_coarse=True)
            color = (batch["color_a"] - batch["coarse_rgb"]).abs().mean() + (
                batch["color_b"] - batch["coarse_rgb"]
            ).abs().mean()
            mask = F.binary_cross_entropy(batch["opacity"].clamp(1e-4, 1 - 1e-4), batch["coarse_alpha"])
            loss = color + mask + 0.1 * batch["eikonal"]
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            last = {"color_l1": float(color), "mask_bce": float(mask)}
            if step % sc.proposal_refresh_every == 0 and step:
                self.refresh_proposal()
        return last

    @torch.no_grad()
    def refresh_proposal(self) -> None:
        """The surface sampler samples around the current surface: re-extract it (coarse grid)."""
        if not self.volume.sampler.uses_proposal and not self.stage_cfg.silhouette_rays:
            return
        from avatar.neus.extract import extract_mesh

        try:
            mesh = extract_mesh(self.fields.sdf, resolution=self.stage_cfg.proposal_resolution, device=self.device)
        except ValueError as err:  # no surface yet (e.g. init=none at step 0): keep the body
            log.warning("Proposal not refreshed: %s", err)
            return
        vertices = torch.as_tensor(np.asarray(mesh.vertices), dtype=torch.float32, device=self.device)
        faces = torch.as_tensor(np.asarray(mesh.faces), dtype=torch.long, device=self.device)
        self.volume.set_proposal(vertices, faces)

    # ---- rendering ---------------------------------------------------------------------------
    def render_views(self, cams: Cameras, g: torch.Generator, need_coarse: bool, size: int | None = None) -> dict:
        """Volume-render ``cams`` at an adaptive (or given) resolution. Returns per-view images
        (B, C, H, W): color_a, color_b (accumulated, no background), opacity (B, 1, H, W),
        normal (B, 3, H, W), and the coarse body's albedo render / silhouette when asked."""
        sc = self.stage_cfg
        n = len(cams)
        sil_vertices, sil_faces = self.volume.dilated_proposal()  # rays outside it have no opacity
        if size is None:
            fraction = 1.0
            if sc.silhouette_rays:
                probe = self.mesh_renderer(32).render(sil_vertices, sil_faces, cams, shading=False)
                fraction = float(probe.alpha.mean())
            size = resolution_for_rays(sc.max_ray_num, n, fraction, sc.max_resolution)
        origins, dirs = cams.generate_rays(size, size)
        if sc.silhouette_rays:
            select = self.mesh_renderer(size).render(sil_vertices, sil_faces, cams, shading=False).alpha > 0
        else:
            select = torch.ones(n, size, size, dtype=torch.bool, device=origins.device)
        rays = select.reshape(-1).nonzero()[:, 0]
        out = self.volume.render(
            origins.reshape(-1, 3)[rays], dirs.reshape(-1, 3)[rays], training=self.training, generator=g
        )

        def scatter(values: torch.Tensor, channels: int) -> torch.Tensor:
            image = values.new_zeros(n * size * size, channels).index_copy(0, rays, values.reshape(len(rays), channels))
            return image.reshape(n, size, size, channels).permute(0, 3, 1, 2)

        batch = {
            "color_a": scatter(out["color_a"], 3), "color_b": scatter(out["color_b"], 3),
            "opacity": scatter(out["opacity"], 1), "normal": scatter(out["normal"], 3),
            "eikonal": out["eikonal"], "n_points": out["n_points"], "size": size, "rays": len(rays),
        }  # fmt: skip
        if need_coarse:
            coarse = self.mesh_renderer(size).render(
                self.coarse_vertices, self.faces, cams, colors=self.coarse_colors, background="white", shading=False
            )  # the albedo: NeuS heads are albedo too (lighting is applied to both the same way)
            batch["coarse_rgb"] = coarse.rgb
            batch["coarse_alpha"] = coarse.alpha.reshape(n, 1, size, size).float()
        return batch

    def shade(self, batch: dict, albedo: torch.Tensor, light_dir: torch.Tensor, ambient: torch.Tensor) -> torch.Tensor:
        """Lambert shading of accumulated albedo with the accumulated normal: albedo * (ambient +
        (1 - ambient) * max(0, n.l)); the opacity weights are already in ``albedo``."""
        lambert = (batch["normal"] * light_dir[:, :, None, None]).sum(1, keepdim=True).clamp(min=0.0)
        a = ambient[:, None, None, None]
        return albedo * (a + (1.0 - a) * lambert)

    # ---- optimisation ------------------------------------------------------------------------
    def compute_losses(self, batch_idx) -> dict[str, torch.Tensor]:
        sc = self.stage_cfg
        g = self.step_generator()
        if self.global_step > 0 and sc.proposal_refresh_every > 0 and self.global_step % sc.proposal_refresh_every == 0:
            self.refresh_proposal()
        cams, info = sample_views(
            sc.views_per_step, self.cfg.views, g, torch.zeros(3), self.head_target.cpu(), step=self.global_step
        )
        cams = cams.to(self.device)
        info = {k: v.to(self.device) for k, v in info.items()}
        need_coarse = self.active("coarse") or self.active("mask")
        batch = self.render_views(cams, g, need_coarse=need_coarse)
        n, size = len(cams), batch["size"]
        self.log("train/resolution", float(size), on_step=True)
        self.log("train/rays", float(batch["rays"]), on_step=True)
        opacity = batch["opacity"]
        losses: dict[str, torch.Tensor] = {}
        if self.active("coarse"):
            white = 1.0 - opacity
            losses["coarse"] = (batch["color_a"] + white - batch["coarse_rgb"]).abs().mean()
        if self.active("mask"):
            losses["mask"] = F.binary_cross_entropy(opacity.clamp(1e-4, 1 - 1e-4), batch["coarse_alpha"])
        if self.active("eikonal"):
            losses["eikonal"] = batch["eikonal"]
        if self.active("body_surface") or self.active("unnamed_color"):
            losses.update(self.body_priors(g))
        guided = self.active("guidance_texture") or (sc.textureless_render and self.active("guidance_geometry"))
        if guided:
            kind = "random" if sc.background_augmentation else "white"
            background = make_background(kind, n, size, size, g).to(opacity)
            prompts = self.prompts(info)
            light, ambient = info["light_dir"], info["ambient"]

            def score(image: torch.Tensor) -> torch.Tensor:
                if sc.crop_augmentation:
                    image = random_crops(image, g)
                return self.guidance.guidance_loss(image.clamp(0, 1), prompts).mean()

            if self.active("guidance_texture"):
                albedo = batch["color_b"]
                lit = self.shade(batch, albedo, light, ambient) if sc.shaded_texture else albedo
                losses["guidance_texture"] = score(lit + (1.0 - opacity) * background)
            if sc.textureless_render and self.active("guidance_geometry"):
                grey = self.shade(batch, sc.textureless_albedo * opacity, light, ambient)
                losses["guidance_geometry"] = score(grey + (1.0 - opacity) * background)
        return losses

    def body_priors(self, g: torch.Generator) -> dict[str, torch.Tensor]:
        """Priors from the coarse body, on ``body_points`` points sampled (area-weighted) on its
        surface: ``body_surface``, the field's SDF held to the body's signed distance on the
        surface and around it (as many points again, offset from the surface points at the NeuS
        initialisation's two wider noise scales: no lump or floater grows where the guidance
        carries no shape); ``unnamed_color``, head B held to the coarse colours on the surface in
        the regions the prompt does not name."""
        sc = self.stage_cfg
        vertices, faces = self.body_cpu
        surface, face, bary = sample_surface(vertices, faces, sc.body_points, g)
        points = surface.to(self.device)
        out = {}
        sdf = features = grad = None
        if self.active("unnamed_color"):
            sdf, features, grad = self.fields.sdf_features_gradient(points, create_graph=True)
        if self.active("body_surface"):
            scales = torch.tensor(NOISE_SCALES[1:]).repeat_interleave(-(-len(surface) // 2))[: len(surface)]
            shell = surface + scales[:, None] * torch.randn(surface.shape, generator=g)
            if self._body_query is None:
                self._body_query = MeshQuery(vertices, faces)
            target = self._body_query.query(shell)[0].to(self.device)
            on_body = self.fields.sdf(points) if sdf is None else sdf
            around = self.fields.sdf(shell.to(self.device)) - target
            out["body_surface"] = torch.cat([on_body, around]).abs().mean()
        if self.active("unnamed_color"):
            face = face.to(self.device)
            keep = self.body_face_unnamed[face]
            target = (self.coarse_colors[self.faces[face]] * bary.to(self.device)[..., None]).sum(1)
            view = -F.normalize(grad.detach(), dim=-1)  # seen head-on
            color_b = self.fields.colors(points, grad, view, features)[1]
            error = (color_b - target).abs().sum(-1) * keep
            out["unnamed_color"] = error.sum() / keep.sum().clamp_min(1) / 3.0
        return out

    def parameters_to_optimise(self) -> list[torch.nn.Parameter]:
        return list(self.fields.parameters())

    def validate(self) -> None:
        self.validation_image()

    # ---- validation, export ------------------------------------------------------------------
    def validation_cameras(self) -> Cameras:
        return orbit_cameras(self.stage_cfg.val_views, 1.9, 10.0, torch.zeros(3), 60.0, start_azimuth_deg=0.0).to(
            self.device
        )

    def validation_image(self) -> np.ndarray:
        """Rows: textured (head B, softly lit), textureless, normals; columns: orbit views. Each
        is also a frame of the optimisation timelapse (images/val_step*.png)."""
        sc = self.stage_cfg
        cams = self.validation_cameras()
        was_training = self.training
        self.eval()
        with torch.enable_grad():
            rows = [[], [], []]
            for k in range(len(cams)):
                b = self.render_views(cams[k], torch.Generator(), need_coarse=False, size=sc.val_size)
                b = {key: (v.detach() if torch.is_tensor(v) else v) for key, v in b.items()}
                opacity = b["opacity"]
                light = cams[k].position / cams[k].position.norm(dim=-1, keepdim=True)
                amb = torch.full((1,), 0.5, device=self.device)
                rows[0].append(to_uint8((self.shade(b, b["color_b"], light, amb) + 1 - opacity)[0]))
                rows[1].append(to_uint8((self.shade(b, 0.8 * opacity, light, amb) + 1 - opacity)[0]))
                normal = F.normalize(b["normal"], dim=1, eps=1e-6)
                rows[2].append(to_uint8(((0.5 + 0.5 * normal) * opacity + 1 - opacity)[0]))
        self.train(was_training)
        grid = image_grid(rows[0] + rows[1] + rows[2], ncols=len(cams))
        save_image(self.run_dir() / "images" / f"val_step{self.global_step:06d}.png", grid)
        self.log_image("val/avatar", grid)
        return grid

    def vertex_color_fn(self):
        def color(points: torch.Tensor, view_dirs: torch.Tensor, normals: torch.Tensor) -> torch.Tensor:
            points = points.to(self.device, torch.float32)
            _, features = self.fields.sdf_and_features(points)
            return self.fields.colors(points, normals.to(points), view_dirs.to(points), features)[1]

        return color

    def export(self) -> dict[str, Any]:
        """The final validation image and the timelapse; then marching cubes -> largest component
        -> head-B colours with a visibility test -> world coordinates -> skinning weights
        transferred from the body -> .ply/.obj/.glb + rig.npz, previews, colour per region."""
        from avatar.body.skinning import rig_from_body, rig_surface
        from avatar.neus.extract import extract_mesh, vertex_colors_with_visibility

        sc, out_dir = self.stage_cfg, self.run_dir()
        self.validation_image()
        frames = sorted((out_dir / "images").glob("val_step*.png"))
        if len(frames) > 1:
            import imageio.v3 as iio

            save_video(out_dir / "timelapse.mp4", [iio.imread(p) for p in frames], fps=4)
        with torch.no_grad():
            mesh = extract_mesh(self.fields.sdf, resolution=sc.export_resolution, device=self.device)
        with torch.no_grad():
            colors = vertex_colors_with_visibility(mesh, self.vertex_color_fn(), n_views=sc.export_views)
        vertices = self.world_from_object(
            torch.as_tensor(np.asarray(mesh.vertices), dtype=torch.float32, device=self.device)
        )
        faces = torch.as_tensor(np.asarray(mesh.faces), dtype=torch.long)
        body_rig = rig_from_body(self.body, self.shape, self.bind_pose).to("cpu")  # files and previews: CPU work
        rig = rig_surface(body_rig, vertices.cpu(), faces)
        if self.bind_pose_name != "t_pose":  # exported in the canonical rest pose, whatever it was made in
            rig = rig.to_rest("t_pose")
        vertices = torch.as_tensor(rig.vertices, dtype=torch.float32)
        for suffix in ("ply", "obj", "glb"):
            save_mesh(out_dir / f"avatar.{suffix}", vertices, faces, colors)
        rig.save(out_dir / "avatar_rig.npz")
        # Mean colour per body region (by the transferred skinning weights): the colour check.
        regions = vertex_regions(torch.as_tensor(rig.weights))
        col = torch.as_tensor(colors, dtype=torch.float32)
        region_means = {r: col[regions == i].mean(0).tolist() for i, r in enumerate(REGIONS) if (regions == i).any()}
        self.preview(rig, colors)
        # What a person sees, per region: how far the surface left the coarse body and how lumpy it
        # is next to it (both T-pose, world metres), and whether the parts the prompt does not
        # name kept their colour (avatar/metrics/appearance.py; avatar-eval appearance).
        body = coarse_body_rig(self.body, self.shape, self.bind_pose_name)
        report = appearance_report(
            vertices, faces, regions, col, body.vertices, body.faces, vertex_regions(body.weights),
            str(self.cfg.prompt.appearance), coarse_region_rgb(sc.coarse_color),
        )  # fmt: skip
        return {
            "export_vertices": int(vertices.shape[0]),
            "export_faces": int(faces.shape[0]),
            "region_rgb": region_means,
            **report,
        }

    def preview(self, rig, colors) -> None:
        """A turntable of the exported mesh and a posed check (arms raised) of the rig."""
        sc = self.stage_cfg
        vertices = torch.as_tensor(rig.vertices, dtype=torch.float32)
        faces = torch.as_tensor(rig.faces, dtype=torch.long)
        col = torch.as_tensor(colors, dtype=torch.float32)
        renderer = sized_renderer(256, background="white")
        centre = 0.5 * (vertices.amax(0) + vertices.amin(0))
        cams = orbit_cameras(sc.turntable_frames, 3.2, 10.0, centre, 45.0)
        frames = [to_uint8(img) for img in renderer.render(vertices, faces, cams, colors=col).rgb]
        save_video(self.run_dir() / "turntable.mp4", frames, fps=20)
        posed = rig.pose(named_pose("arms_raised"))[0].float()
        views = orbit_cameras(3, 3.2, 10.0, centre, 45.0, start_azimuth_deg=-30.0)
        tiles = [to_uint8(img) for img in renderer.render(vertices, faces, views, colors=col).rgb]
        tiles += [to_uint8(img) for img in renderer.render(posed, faces, views, colors=col).rgb]
        save_image(self.run_dir() / "avatar_preview.png", image_grid(tiles, ncols=3))

    def evaluate(self) -> dict[str, float]:
        """The final losses; the objective (what a sweep minimises) is the independent scorer's,
        never the loss of the model the avatar was optimised against."""
        if self.guidance is None:
            return {"objective": 0.0}
        metrics = self.final_losses()
        metrics["objective"] = metrics.get("scorer_loss_final", metrics["guidance_loss_final"])
        return metrics

    def final_losses(self) -> dict[str, float]:
        """1 - cosine of the textured avatar's validation views (white background) with the
        prompt: by the guiding model (``guidance_loss_final``) and by the independently trained
        scorer (``scorer_loss_final``, unless ``scorer.enabled=false``)."""
        from avatar.guidance.base import build_scorer

        cams = self.validation_cameras()
        was_training = self.training
        self.eval()
        images = []
        with torch.enable_grad():  # the SDF normals need autograd
            for k in range(len(cams)):
                b = self.render_views(cams[k], torch.Generator(), need_coarse=False, size=self.stage_cfg.val_size)
                images.append((b["color_b"] + 1 - b["opacity"]).detach())
        self.train(was_training)
        text = self.stage_cfg.prompt_template.format(str(self.cfg.prompt.appearance).strip())
        judges = {"guidance_loss_final": self.guidance}
        scorer = build_scorer(self.cfg)
        if scorer is not None:
            judges["scorer_loss_final"] = scorer.to(self.device)
        with torch.no_grad():
            return {
                name: float(np.mean([float(model.guidance_loss(image, text).mean()) for image in images]))
                for name, model in judges.items()
            }
