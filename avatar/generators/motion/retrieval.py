"""``retrieval`` (not in the paper, one-shot): the paper's objective minimised over the real mocap
clips of the motion codebook (avatar/priors/motion_codebook.py, ``prior.motion_codebook``) instead
of the VAE's codes. The ``retrieval_top_k`` clips closest to the candidates (reconstruction
measured in joint positions, see :func:`position_distances`) are scored by the active paper terms
(that reconstruction + guidance - delta: real clips need no smoothness term) and the lowest wins;
with ``lambda_description`` the prompt's match with each clip's mocap description
(avatar/priors/motion_descriptions.py) joins both the ranking and the score.

It was the tiny/small default while the project's CPU-trained VAE could not decode gait; now the
latent optimisation starts from the clip retrieval picks (``latent_init=retrieval`` with
``smooth_change``, the presets' default) and beats it on the evaluation prompts
(docs/experiments/motion.md, 2026-12-05 night). It stays the one-shot baseline.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import roma
import torch

from avatar.generators.motion import MOTION_GENERATORS, OneShot
from avatar.priors.data import body_joints

if TYPE_CHECKING:
    from avatar.stages.motion import MotionStage

log = logging.getLogger(__name__)


@MOTION_GENERATORS.register("retrieval")
class RetrievalGenerator(OneShot):
    terms = ("reconstruction", "guidance", "delta", "description")

    def __init__(self, stage: MotionStage) -> None:
        super().__init__(stage)
        self._info: dict[str, Any] = {}
        self.captured: torch.Tensor | None = None  # the picked codebook clip (all its frames) as stored, its own root

    def info(self) -> dict[str, Any]:
        return dict(self._info)

    @torch.no_grad()
    def make(self, stage: MotionStage) -> torch.Tensor:
        """The retrieved clip's rotations (T, 22, 3) (see the module docstring)."""
        from avatar.priors.loading import load_motion_codebook

        sc, t = stage.stage_cfg, int(stage.stage_cfg.num_frames)
        book = load_motion_codebook(stage.cfg.prior)
        if book.num_frames < t or abs(book.fps - float(sc.fps)) > 1e-3:
            raise ValueError(
                f"The motion codebook ({stage.cfg.prior.motion_codebook or 'shipped'}) holds {book.num_frames}-frame clips at "
                f"{book.fps:g} fps; stage.num_frames={t} at stage.fps={sc.fps:g} needs clips at least as long at the same rate: "
                "rebuild it with `python train.py stage=build_motion_codebook stage.num_frames=<n> stage.fps=<fps>`"
            )
        clips = stage.with_root(book.rotations[:, :t])
        recon = position_distances(stage, clips)  # (N,): rank-weighted, metres
        description = description_distances(stage, book) if stage.active("description") else torch.zeros(len(book))
        shortlist = (recon + stage.weight("description") * description).argsort()[: max(1, int(sc.retrieval_top_k))]
        totals = []
        for i in shortlist.tolist():
            # The paper's terms with reconstruction measured in joint positions (as the ranking);
            # no smoothness term: it counters optimisation spikes, and would rank real walks low.
            losses = stage.motion_losses(
                clips[i], roma.rotvec_to_rotmat(clips[i, :, 1:]), smoothness=False, reconstruction=False
            )
            losses["reconstruction"] = recon[i]
            if stage.active("description"):
                losses["description"] = description[i]
            totals.append(float(sum(stage.weight(name) * value for name, value in losses.items())))
        best = int(shortlist[int(np.argmin(totals))])
        self.captured = book.rotations[best].float()
        self._info = {"retrieval_clips": len(book), "retrieval_source": book.sources[best], "retrieval_index": best,
                      "retrieval_joint_distance_m": float(recon[best]), "retrieval_loss": float(min(totals))}  # fmt: skip
        if book.descriptions:
            self._info["retrieval_description"] = book.descriptions[best]
        if stage.active("description"):
            self._info["retrieval_description_distance"] = float(description[best])
        log.info(
            "Retrieved %s (joint distance %.3f m, loss %.4f; %d shortlisted)",
            book.sources[best],
            recon[best],
            min(totals),
            len(shortlist),
        )
        return clips[best]


def description_distances(stage: MotionStage, book) -> torch.Tensor:
    """(N,) per codebook clip, 1 - the prompt's share among the pose words for its description
    (``motion_descriptions.description_distances``)."""
    from avatar.priors.motion_descriptions import description_distances

    if not book.descriptions:
        raise ValueError(
            f"stage.lambda_description={stage.loss_weights['description']} needs clip descriptions, and the motion codebook "
            f"({stage.cfg.prior.motion_codebook or 'shipped'}, prior.motion_codebook) has none: rebuild it from a corpus with a "
            "MANIFEST.tsv (`python train.py stage=build_motion_codebook`; ../shared/mocap has one) or set stage.lambda_description=0"
        )
    if not stage.prompt:
        raise ValueError(stage.empty_prompt_message())
    sc = stage.stage_cfg
    # The prompt as the guidance reads it (mini's snapped reading names the pose word of a paraphrase).
    prompt = stage.guidance.read(stage.prompt) if stage.guidance is not None else stage.prompt
    return description_distances(
        prompt, book.descriptions, float(sc.description_temperature), float(sc.description_min_share)
    )


@torch.no_grad()
def position_distances(stage: MotionStage, clips: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    """Per clip of clips (N, T, 22, 3): the rank-weighted sum over candidates of the mean
    joint-position distance (m, template skeleton, pelvis at the origin) to the closest
    frame (run of ``match_window`` frames). Retrieval ranks by positions: rotation distances
    between clips of different people are dominated by wrist and spine details, positions
    by the posture."""
    cands = body_joints(stage.candidate_rotations)  # (K, 22, 3)
    window = int(stage.stage_cfg.match_window)
    out = []
    for part in clips.split(chunk):
        n, t = part.shape[:2]
        frames = body_joints(part.reshape(n * t, 22, 3)).reshape(n, t, 22, 3)
        dist = (frames[:, None] - cands[None, :, None]).norm(dim=-1).mean(-1)  # (n, K, T)
        if window > 1:  # as in reconstruction_distances: the closest run of `window` frames
            dist = torch.nn.functional.avg_pool1d(dist.reshape(-1, 1, t), window, stride=1).reshape(n, len(cands), -1)
        out.append((stage.rank_weights * dist.min(-1).values).sum(-1))
    return torch.cat(out)
