"""Profile one step of the appearance stage: where the time of a guided NeuS step goes.

The stage runs under the project's own Lightning trainer (``build_trainer``, the default loggers),
as a real run does, in two passes over the same steps (same seed, same views):

1. **Step time**: nothing instrumented; the wall time between Lightning's ``on_train_batch_start``
   of consecutive steps (view sampling, renders, guidance, backward, optimiser, scheduler,
   logging: everything a run pays per step). Steps with a proposal refresh are reported apart.
2. **Sections**: the functions a step calls are wrapped with timers (on CUDA each timer
   synchronises, so this pass is slower than pass 1 and is only used for the shares):
   view sampling, the silhouette-ray mask (mesh raster of the dilated proposal), the NeuS
   renderer split into ray layout (Warp), up-sampling (SDF without gradients) and the fields
   with the compositing; the coarse body's render (head A's target), shading of the textured
   and textureless images, backgrounds, crop augmentation, the guidance model's forward;
   the backward pass and the optimiser step (Lightning hooks). The guidance model's backward is
   replayed on the same images (leaf tensors) and subtracted from the backward pass to give the
   NeuS backward. "Lightning, logging, Python" is the step time of pass 1 minus every section.
   The proposal refresh (marching cubes of the SDF, every ``proposal_refresh_every`` steps) is
   timed once and amortised.

The reference "NeuS step" is benchmark_neus's training step on the same rays and fields: render
the rays of the stage's last step and backpropagate a loss using every output. The ratio stage
step / NeuS step says how much the stage adds around the renderer.

    python -m benchmarks.profile_appearance                       # CPU, preset tiny (the demo's)
    python -m benchmarks.profile_appearance --preset paper --device cuda --steps 50
    python -m benchmarks.profile_appearance -o stage.views_per_step=2 --out profile.json

Needs the NeuS initialisation of the body (made and cached by the first run: minutes on a CPU).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from lightning.pytorch.callbacks import Callback

import avatar.stages  # noqa: F401  (registers the stages)
import avatar.stages.appearance as appearance_module
from avatar.config import register_configs
from avatar.engine.trainer import build_loggers, build_trainer
from avatar.stages.base import STAGES

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "a person in a red shirt and blue trousers"


def compose_stage_cfg(preset: str, device: str, run_dir: Path, steps: int, overrides: list[str]):
    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(
            "config",
            overrides=[
                "stage=appearance",
                f"preset={preset}",
                f"trainer={'gpu' if device == 'cuda' else 'cpu'}",
                f"prompt.appearance={PROMPT}",
                f"trainer.max_steps={steps}",
                "trainer.val_every_n_steps=0",
                f"trainer.checkpoint_every_n_steps={steps + 1}",
                "trainer.enable_progress_bar=false",
                *overrides,
                f"run_dir={run_dir}",
            ],
        )


class Clock:
    """Wall-clock timers by section; synchronises CUDA around each timed call when asked."""

    def __init__(self, sync: bool) -> None:
        self.sync = sync
        self.seconds: dict[str, float] = defaultdict(float)
        self.enabled = False

    def now(self) -> float:
        if self.sync:
            torch.cuda.synchronize()
        return time.perf_counter()

    @contextmanager
    def section(self, name: str):
        if not self.enabled:
            yield
            return
        t0 = self.now()
        try:
            yield
        finally:
            self.seconds[name] += self.now() - t0

    def wrap(self, owner, attr: str, name: str) -> None:
        original = getattr(owner, attr)

        def timed(*args, **kwargs):
            with self.section(name):
                return original(*args, **kwargs)

        setattr(owner, attr, timed)


class StepTimes(Callback):
    """Wall time from one step's start to the next's, and the step's backward / optimiser time."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.starts: list[float] = []
        self.marks: dict[str, float] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        self.starts.append(self.clock.now())

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        self.marks["backward"] = self.clock.now()

    def on_after_backward(self, trainer, pl_module) -> None:
        if self.clock.enabled:
            self.clock.seconds["backward (NeuS + guidance)"] += self.clock.now() - self.marks["backward"]

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.marks["optimiser"] = self.clock.now()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self.clock.enabled:
            self.clock.seconds["optimiser step, LR schedule"] += self.clock.now() - self.marks["optimiser"]

    def on_train_end(self, trainer, pl_module) -> None:
        self.starts.append(self.clock.now())

    def durations(self) -> list[float]:
        return [b - a for a, b in zip(self.starts, self.starts[1:])]


def fit(cfg, module, clock: Clock, run_dir: Path) -> StepTimes:
    times = StepTimes(clock)
    loggers = build_loggers(cfg, run_dir, [], resume_step=None, wandb_id=None)
    module.attach_loggers(loggers)
    trainer = build_trainer(cfg, run_dir, loggers, extra_callbacks=[times])
    trainer.fit(module)
    return times


def instrument(module, clock: Clock, replay: list) -> None:
    """Wrap what a step calls (see the module docstring)."""
    volume = module.volume
    clock.wrap(volume.sampler, "layout", "NeuS: ray layout (Warp bands)")
    clock.wrap(volume, "_sdf_chunked", "NeuS: up-sampling (SDF, no grad)")
    clock.wrap(volume, "render", "NeuS: fields + compositing")  # minus the two above (subtracted later)
    clock.wrap(appearance_module, "sample_views", "view sampling")
    clock.wrap(appearance_module, "make_background", "backgrounds")
    clock.wrap(appearance_module, "random_crops", "crop augmentation")
    clock.wrap(module, "shade", "shading (textured, textureless)")
    # The silhouette mask and the coarse target are mesh renders made inside render_views: time
    # them through the mesh renderers it asks for.
    mesh_renderer = module.mesh_renderer

    def timed_mesh_renderer(size):
        renderer = mesh_renderer(size)
        if not getattr(renderer, "_profiled", False):
            original = renderer.render

            def render(vertices, faces, cams, colors=None, **kwargs):
                name = "coarse body render (head A target)" if colors is not None else "silhouette-ray mask (raster)"
                with clock.section(name):
                    return original(vertices, faces, cams, colors=colors, **kwargs)

            renderer.render = render
            renderer._profiled = True
        return renderer

    module.mesh_renderer = timed_mesh_renderer
    guidance_loss = module.guidance.guidance_loss

    def timed_guidance(images, texts):
        with clock.section("guidance forward"):
            out = guidance_loss(images, texts)
        if clock.enabled:
            replay.append((images.detach().clone(), list(texts)))
        return out

    module.guidance.guidance_loss = timed_guidance


def guidance_backward_seconds(module, replay: list, clock: Clock) -> float:
    """The guidance model's backward on the step's own images (leaf tensors), summed."""
    total = 0.0
    for images, texts in replay:
        leaf = images.requires_grad_(True)
        loss = module.guidance.guidance_loss.__wrapped_original__(leaf, texts).mean()
        t0 = clock.now()
        loss.backward()
        total += clock.now() - t0
    return total


def neus_reference_step(module, device: str, clock: Clock, repeats: int = 3) -> float:
    """benchmark_neus's training step on the rays of one stage step."""
    g = torch.Generator().manual_seed(0)
    sc = module.stage_cfg
    cams, _ = appearance_module.sample_views(
        sc.views_per_step, module.cfg.views, g, torch.zeros(3), module.head_target.cpu()
    )
    cams = cams.to(device)
    batch_rays = {}

    original = module.volume.render

    def capture(rays_o, rays_d, **kwargs):
        batch_rays["o"], batch_rays["d"] = rays_o.detach(), rays_d.detach()
        return original(rays_o, rays_d, **kwargs)

    module.volume.render = capture
    module.render_views(cams, g, need_coarse=False)
    module.volume.render = original
    times = []
    for _ in range(repeats + 1):
        t0 = clock.now()
        out = original(batch_rays["o"], batch_rays["d"], training=True, generator=torch.Generator().manual_seed(0))
        loss = out["color_a"].mean() + out["color_b"].mean() + out["opacity"].mean() + 0.1 * out["eikonal"]
        loss = loss + 1e-3 * out["normal"].sum()
        loss.backward()
        module.fields.zero_grad(set_to_none=True)
        times.append(clock.now() - t0)
    return statistics.median(times[1:]), len(batch_rays["o"])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny", help="tiny (the CPU demo's), small or paper")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=12, help="timed steps per pass (after --warmup)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("-o", "--override", action="append", default=[], help="a config override (repeatable)")
    parser.add_argument("--out", help="write the profile as JSON here")
    args = parser.parse_args(argv)
    sync = args.device == "cuda"
    total_steps = args.warmup + args.steps
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_stage_cfg(args.preset, args.device, Path(tmp) / "plain", total_steps, args.override)
        # Pass 1: the plain step.
        clock = Clock(sync)
        module = STAGES.build(cfg.stage.name, cfg).to(args.device)
        t0 = time.perf_counter()
        module.setup("fit")  # NeuS initialisation (cached) and the first proposal, outside the timing
        setup_seconds = time.perf_counter() - t0
        module.setup = lambda stage: None
        plain = fit(cfg, module, clock, Path(tmp) / "plain").durations()[args.warmup :]
        refresh_every = int(cfg.stage.proposal_refresh_every)
        refresh_steps = {s for s in range(args.warmup, total_steps) if refresh_every and s and s % refresh_every == 0}
        plain_steps = [t for s, t in zip(range(args.warmup, total_steps), plain) if s not in refresh_steps]
        step = statistics.median(plain_steps)

        # Pass 2: sections.
        cfg2 = compose_stage_cfg(args.preset, args.device, Path(tmp) / "sections", total_steps, args.override)
        module2 = STAGES.build(cfg2.stage.name, cfg2).to(args.device)
        module2.setup("fit")
        module2.setup = lambda stage: None
        clock2 = Clock(sync)
        replay: list = []
        original_guidance = module2.guidance.guidance_loss
        instrument(module2, clock2, replay)
        module2.guidance.guidance_loss.__wrapped_original__ = original_guidance

        class Enable(Callback):
            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                clock2.enabled = batch_idx >= args.warmup and batch_idx not in refresh_steps
                if not clock2.enabled:
                    replay.clear()

        times2 = StepTimes(clock2)
        loggers = build_loggers(cfg2, Path(tmp) / "sections", [], resume_step=None, wandb_id=None)
        module2.attach_loggers(loggers)
        trainer = build_trainer(cfg2, Path(tmp) / "sections", loggers, extra_callbacks=[Enable(), times2])
        clock2.enabled = False
        trainer.fit(module2)
        clock2.enabled = True
        measured = [s for s in range(args.warmup, total_steps) if s not in refresh_steps]
        n = max(1, len(measured))
        replay_kept = replay[-2 * n :] if replay else []
        guidance_bwd = guidance_backward_seconds(module2, replay_kept, clock2)
        sections = {k: v / n for k, v in clock2.seconds.items()}
        sections["guidance backward (replayed)"] = guidance_bwd / n
        inner = sections.get("NeuS: ray layout (Warp bands)", 0) + sections.get("NeuS: up-sampling (SDF, no grad)", 0)
        sections["NeuS: fields + compositing"] = sections.get("NeuS: fields + compositing", 0) - inner
        backward = sections.pop("backward (NeuS + guidance)", 0.0)
        sections["NeuS backward"] = backward - sections["guidance backward (replayed)"]
        module2.to(args.device)
        t0 = clock2.now()
        module2.refresh_proposal()
        refresh = clock2.now() - t0
        sections["proposal refresh (amortised)"] = refresh / refresh_every if refresh_every else 0.0
        sections["Lightning, logging, Python"] = (
            step + sections["proposal refresh (amortised)"] - sum(sections.values())
        )
        neus_step, rays = neus_reference_step(module2, args.device, clock2)
    step_with_refresh = step + sections["proposal refresh (amortised)"]
    result = {
        "preset": args.preset,
        "device": torch.cuda.get_device_name() if args.device == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
        "overrides": args.override,
        "setup_seconds": round(setup_seconds, 2),
        "step_ms": round(1000 * step_with_refresh, 1),
        "steps_per_second": round(1.0 / step_with_refresh, 3),
        "neus_step_ms": round(1000 * neus_step, 1),
        "stage_over_neus": round(step_with_refresh / neus_step, 2),
        "rays": rays,
        "refresh_seconds": round(refresh, 2),
        "sections_ms": {k: round(1000 * v, 1) for k, v in sorted(sections.items(), key=lambda kv: -kv[1])},
    }
    if args.device == "cuda":
        result["cuda_peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    print(f"appearance step, preset {args.preset}, {result['device']}: {result['step_ms']} ms "
          f"({result['steps_per_second']} steps/s); NeuS step on the same {rays} rays {result['neus_step_ms']} ms; "
          f"stage / NeuS = {result['stage_over_neus']}")  # fmt: skip
    print("| section | ms / step | share |\n|---|---:|---:|")
    for name, ms in result["sections_ms"].items():
        print(f"| {name} | {ms:.1f} | {100 * ms / result['step_ms']:.0f} % |")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
