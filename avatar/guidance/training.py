"""Training the offline guidance model on synthetic renders (issue 6):

    python train.py stage=train_guidance stage.publish=true                      # guidance=mini
    python train.py stage=train_guidance stage.output_name=mini_scorer seed=1 stage.publish=true

Every step renders a fresh batch (avatar/guidance/synthetic) with captions, and optimises a
symmetric contrastive loss where identical captions count as positives; each image's caption
with two regions' colours swapped is an extra negative (the binding the prototype lacked).

Outfits are drawn with ``stage.combinations=train`` by default: the held-out attribute
combinations of avatar/guidance/synthetic/holdout.py (e.g. a green top with a red bottom,
polka-dot shorts) are never rendered, so ``avatar-eval guidance`` can measure retrieval on
them honestly. The weights shipped in avatar/guidance/weights/ (mini.pt, mini_scorer.pt) were
trained before this switch existed, i.e. with every combination (``combinations=all``): their
held-out-combination numbers are an upper bound, not a generalisation measurement.
"""

from __future__ import annotations

import copy
import random
import time
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F

from avatar.engine.run_info import git_revision
from avatar.guidance.evaluation import retrieval_and_binding
from avatar.guidance.mini import WEIGHTS_DIR
from avatar.guidance.mini_model import MiniImageTextModel, MiniModelConfig, read_checkpoint
from avatar.guidance.synthetic.captions import (
    POSE_PHRASES,
    all_swap_negatives,
    change_negative,
    pose_negative,
    render_caption,
    swap_negative,
)
from avatar.guidance.synthetic.generator import SyntheticConfig, SyntheticRenderer
from avatar.guidance.synthetic.poses import ARM_WORDS, BODY_WORDS
from avatar.stages.base import STAGES, StageModule, warmup_cosine
from avatar.utils.io import atomic_path, publish_file

# Colour-free prompts of the kind the pose, motion and shape stages ask (lambda_anchor).
ANCHOR_PROMPTS: tuple[str, ...] = (
    *(f"a person {phrase}" for phrases in POSE_PHRASES.values() for phrase in phrases),
    *(f"a {words} {noun}" for words in ("tall", "short", "heavy", "slim", "muscular", "tall heavy", "short slim")
      for noun in ("man", "woman", "person")),
)  # fmt: skip


class BindingSwaps(StrEnum):
    """Negatives of the binding loss: ``one`` random garment pair swapped per caption, or ``all``."""

    one = "one"
    all = "all"


@dataclass
class GuidanceTrainStageConfig:
    name: str = "train_guidance"
    output_name: str = "mini"  # "mini" guides; "mini_scorer" (other seed/architecture) scores
    topology: str = "anny"
    batch_size: int = 128
    lr: float = 3e-4
    text_lr: float = 3e-5  # the fine-tuned MiniLM layers move slowly
    warmup_steps: int = 100
    embed_dim: int = 256
    image_channels: list[int] = field(default_factory=lambda: [32, 64, 128, 256, 256])
    text_trainable_layers: int = 2
    eval_samples: int = 256
    # Outfit combinations rendered for training and validation: "train" (no held-out
    # combination; see the module docstring), "all" (how the shipped weights were trained) or
    # "held_out" (only held-out combinations: for experiments).
    combinations: str = "train"
    publish: bool = False
    # A mini checkpoint to start from (fine-tuning; its architecture is used, the sizes above
    # must match it); empty: from scratch (MiniLM's pretrained text tower, a fresh image tower).
    init_weights: str = ""
    lambda_contrastive: Any = 1.0
    lambda_binding: Any = 1.0  # image vs its caption and the colour-swapped caption
    # "one": one random pair of mentioned garments swapped per caption; "all": every pair, all of
    # them negatives in one softmax (a caption naming three garments gets three swaps).
    binding_swaps: BindingSwaps = BindingSwaps.one
    lambda_pose: Any = 0.0  # image vs its caption and the caption with a pose word changed (docs/experiments/guidance-model.md: no gain measured)
    # Image vs its caption and the caption with one attribute changed (captions.change_negative);
    # with chance change_copy_prob a garment takes another mentioned garment's colour ("a blue
    # shirt and blue trousers"), the one-colour body the colour check drifts to.
    lambda_change: Any = 0.0
    change_copy_prob: float = 0.5
    # Auxiliary: linear heads on the image embedding classify the pose words read from the
    # geometry (arms, body; None is a class), face close-ups excluded. Contrastive learning alone
    # barely encodes pose: the other attributes already tell a batch's captions apart. The heads
    # are training-only (not in the checkpoint).
    lambda_pose_words: Any = 0.0
    pose_balance: float = 0.0  # SyntheticConfig.pose_balance: rare pose words drawn more often
    pose_frequency: float = 0.0  # SyntheticConfig.pose_frequency: 1 = poses as often as the corpus holds them
    pose_mention_prob: float = 0.5  # SyntheticConfig.pose_mention_prob
    stride_view_deg: float = 0.0  # SyntheticConfig.stride_view_deg: "walking" only where a stride shows
    legs_prob: float = 0.0  # SyntheticConfig.legs_prob: share of lower-body views (bottom and shoes fill the image)
    walking_clips: str = ""  # SyntheticConfig.walking_clips: MANIFEST.tsv; "walking" only for poses from walk clips
    pose_phrasings: bool = False  # SyntheticConfig.pose_phrasings: "raising both arms", "striding", ...
    # Fine-tuning without forgetting (needs init_weights): train_image_tower=false keeps the image
    # tower as it was, lambda_anchor keeps the text embeddings of colour-free captions (the
    # batch's captions with garments and hair left out, and the pose and shape prompts the
    # pipeline asks) where the starting model put them, and lambda_anchor_image the batch's image
    # embeddings, so what the pose, shape and motion stages read from the model stays while the
    # binding of colours to garments is trained.
    train_image_tower: bool = True
    lambda_anchor: Any = 0.0
    lambda_anchor_image: Any = 0.0
    anchor_texts: int = 48  # colour-free texts per step, half from the batch, half prompts
    # The mini checkpoint the anchors hold to; empty: the starting model (init_weights). Set it to
    # continue a fine-tune in chunks (init_weights = the last chunk) without the anchor drifting.
    anchor_weights: str = ""


def multi_positive_nce(logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """-log of the softmax mass on the positives, per row, averaged."""
    log_prob = logits.log_softmax(dim=1)
    return -(log_prob.masked_fill(~positives, float("-inf")).logsumexp(dim=1)).mean()


def contrastive_loss(image: torch.Tensor, text: torch.Tensor, captions: list[str], scale) -> torch.Tensor:
    """Symmetric image <-> caption InfoNCE over a batch; images sharing a caption are all positives."""
    same = torch.tensor([[a == b for b in captions] for a in captions])
    logits = scale * image @ text.T
    return 0.5 * (multi_positive_nce(logits, same) + multi_positive_nce(logits.T, same))


def at_most_one(make_negative):
    """A negative maker (caption plan, attributes, rng) -> text or None, as one returning a list
    of zero or one texts (``hard_negative_loss`` takes lists)."""
    return lambda plan, attrs, rng: [text] if (text := make_negative(plan, attrs, rng)) else []


def load_initial_model(path: str, expected: MiniModelConfig) -> tuple[MiniImageTextModel, dict]:
    """The model in a mini checkpoint, to fine-tune (its architecture must be ``expected``'s),
    and the checkpoint's meta."""
    payload = read_checkpoint(path, "stage.init_weights")
    saved = {k: tuple(v) if isinstance(v, list) else v for k, v in payload["config"].items()}
    differ = {k: (saved.get(k), v) for k, v in asdict(expected).items() if saved.get(k) != v}
    if differ:
        raise ValueError(
            f"stage.init_weights={path!r} has another architecture than the stage config: {differ} (saved, configured). "
            "Set the stage's sizes to the checkpoint's (e.g. stage.embed_dim, stage.image_channels, stage.text_trainable_layers)"
        )
    return MiniImageTextModel.from_checkpoint(payload), dict(payload.get("meta", {}))


def hard_negative_loss(
    model: MiniImageTextModel, image: torch.Tensor, text: torch.Tensor, negatives: list[list[str]], scale
) -> torch.Tensor | None:
    """Cross-entropy of each image between its caption and its hard negatives (texts ``model``
    encodes), one softmax per image (None: no image in the batch has one)."""
    idx = [i for i, t in enumerate(negatives) if t]
    if not idx:
        return None
    negative = model.encode_text([t for i in idx for t in negatives[i]])
    rows = image[idx]
    counts = torch.tensor([len(negatives[i]) for i in idx])
    owner = torch.repeat_interleave(torch.arange(len(idx)), counts)  # image row of each negative
    slot = torch.cat([torch.arange(1, c + 1) for c in counts.tolist()])  # its column (0: the caption)
    logits = image.new_zeros((len(idx), 1 + int(counts.max())))
    logits[:, 0] = (rows * text[idx]).sum(-1)
    logits[owner, slot] = (rows[owner] * negative).sum(-1)
    empty = torch.arange(logits.shape[1]) > counts[:, None]  # padding of images with fewer negatives
    # Masked after scaling: -inf in the product would give the learnt scale a NaN gradient.
    return F.cross_entropy((scale * logits).masked_fill(empty, float("-inf")), torch.zeros(len(idx), dtype=torch.long))


@STAGES.register("train_guidance")
class GuidanceTrainStage(StageModule):
    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        sc = self.stage_cfg
        if not 0.0 <= sc.change_copy_prob <= 1.0:
            raise ValueError(f"stage.change_copy_prob={sc.change_copy_prob}: a probability in [0, 1] (0.5 by default)")
        model_cfg = MiniModelConfig(
            embed_dim=sc.embed_dim, image_channels=tuple(sc.image_channels),
            text_trainable_layers=sc.text_trainable_layers,
        )  # fmt: skip
        self.init_meta: dict | None = None  # the starting checkpoint's meta when fine-tuning
        self.anchor: MiniImageTextModel | None = None  # the starting model, frozen (lambda_anchor)
        if sc.init_weights:
            self.model, self.init_meta = load_initial_model(sc.init_weights, model_cfg)
        else:
            self.model = MiniImageTextModel(model_cfg)
        anchored = self.active("anchor") or self.active("anchor_image")
        needs_start = [k for k, on in (("stage.lambda_anchor / lambda_anchor_image", anchored),
                                       ("stage.train_image_tower=false", not sc.train_image_tower)) if on]  # fmt: skip
        if needs_start and not sc.init_weights:
            raise ValueError(
                f"{', '.join(needs_start)} keeps what a starting model learnt: give stage.init_weights (a mini checkpoint)"
            )
        if sc.anchor_weights and not anchored:
            raise ValueError(
                f"stage.anchor_weights={sc.anchor_weights!r} is only read by the anchors: set stage.lambda_anchor or stage.lambda_anchor_image > 0, or leave it empty"
            )
        if anchored:
            self.anchor = (
                load_initial_model(sc.anchor_weights, model_cfg)[0] if sc.anchor_weights else copy.deepcopy(self.model)
            )
            self.freeze_component("anchor")
            self.anchor.eval()
        if not sc.train_image_tower:
            self.model.image.requires_grad_(False)
        self.synthetic = SyntheticRenderer(SyntheticConfig(
            topology=sc.topology, image_size=self.model.cfg.image_size, combinations=sc.combinations,
            pose_balance=sc.pose_balance, pose_frequency=sc.pose_frequency, stride_view_deg=sc.stride_view_deg, legs_prob=sc.legs_prob, walking_clips=sc.walking_clips, pose_mention_prob=sc.pose_mention_prob, pose_phrasings=sc.pose_phrasings,
        ))  # fmt: skip
        embed = self.model.cfg.embed_dim
        self.pose_heads = torch.nn.ModuleDict({
            "arms": torch.nn.Linear(embed, len(ARM_WORDS) + 1), "body": torch.nn.Linear(embed, len(BODY_WORDS) + 1),
        })  # fmt: skip
        self._start = time.perf_counter()
        self._eval = None

    def compute_losses(self, batch) -> dict[str, torch.Tensor]:
        g = self.step_generator()
        data = self.synthetic.generate(self.stage_cfg.batch_size, g)
        rng = random.Random(int(torch.randint(2**62, (1,), generator=g)))
        image = self.model.encode_image(data.images)
        text = self.model.encode_text(data.captions)
        scale = self.model.logit_scale.exp().clamp(max=100.0)
        losses = {}
        if self.active("contrastive"):
            losses["contrastive"] = contrastive_loss(image, text, data.captions, scale)
        change = at_most_one(partial(change_negative, copy_prob=self.stage_cfg.change_copy_prob))
        swaps = (
            at_most_one(swap_negative)
            if self.stage_cfg.binding_swaps == "one"
            else lambda p, a, rng: all_swap_negatives(p, a)
        )
        for term, make_negatives in (("binding", swaps), ("pose", at_most_one(pose_negative)), ("change", change)):
            if self.active(term):
                negatives = [make_negatives(p, a, rng) for p, a in zip(data.plans, data.attributes)]
                loss = hard_negative_loss(self.model, image, text, negatives, scale)
                if loss is not None:
                    losses[term] = loss
        if self.active("pose_words"):
            loss = self.pose_word_loss(image, data.attributes)
            if loss is not None:
                losses["pose_words"] = loss
        if self.active("anchor"):
            losses["anchor"] = self.anchor_loss(data.plans, data.attributes, rng)
        if self.active("anchor_image"):
            with torch.no_grad():
                target = self.anchor.encode_image(data.images)
            losses["anchor_image"] = 1.0 - (image * target).sum(-1).mean()
        return losses

    def anchor_loss(self, plans, attributes, rng: random.Random) -> torch.Tensor:
        """1 - cosine between this model's and the starting model's embeddings of colour-free
        captions: half of ``anchor_texts`` the batch's captions with garments and hair left out,
        half pose and shape prompts ("a person raising both arms", "a tall heavy man")."""
        half = self.stage_cfg.anchor_texts // 2
        texts = {
            render_caption(replace(plan, garments=[], hair=False), attrs)
            for plan, attrs in zip(plans[:half], attributes[:half])
        }
        texts = sorted(texts | set(rng.sample(ANCHOR_PROMPTS, min(half, len(ANCHOR_PROMPTS)))))
        with torch.no_grad():
            target = self.anchor.encode_text(texts)
        return 1.0 - (self.model.encode_text(texts) * target).sum(-1).mean()

    def pose_word_loss(self, image: torch.Tensor, attributes: list[dict]) -> torch.Tensor | None:
        """Cross-entropy of the pose heads on the body views' image embeddings (None: only
        face close-ups in the batch); the arms head skips lower-body views too."""
        hidden = {"arms": ("face", "legs"), "body": ("face",)}
        if all(a["view"] == "face" for a in attributes):
            return None
        loss = image.new_zeros(())
        for group, words in (("arms", ARM_WORDS), ("body", BODY_WORDS)):
            idx = [i for i, a in enumerate(attributes) if a["view"] not in hidden[group]]
            if not idx:
                continue
            classes = {w: k for k, w in enumerate(words)}  # None -> len(words)
            target = torch.tensor([classes.get(attributes[i]["pose"][group], len(words)) for i in idx])
            loss = loss + F.cross_entropy(self.pose_heads[group](image[idx]), target)
        return loss

    def configure_optimizers(self):
        text_params = [p for n, p in self.model.named_parameters() if p.requires_grad and n.startswith("text.bert.")]
        other = [p for n, p in self.model.named_parameters() if p.requires_grad and not n.startswith("text.bert.")]
        other += list(self.pose_heads.parameters())
        optimizer = torch.optim.AdamW(
            [{"params": other, "lr": self.stage_cfg.lr}, {"params": text_params, "lr": self.stage_cfg.text_lr}],
            weight_decay=0.01,
        )
        schedule = warmup_cosine(self.stage_cfg.warmup_steps, self.cfg.trainer.max_steps)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": torch.optim.lr_scheduler.LambdaLR(optimizer, schedule), "interval": "step"},
        }

    def validate(self) -> None:
        for key, value in self.once_per_step("heldout", self.heldout_metrics).items():
            self.log(f"val/{key}", value, on_step=True, prog_bar=key == "retrieval_top1")

    @torch.no_grad()
    def heldout_metrics(self) -> dict[str, float]:
        """Retrieval and binding (avatar.guidance.evaluation) on a fixed batch rendered with its
        own seed, never used for training."""
        if self._eval is None:
            data = self.synthetic.generate(self.stage_cfg.eval_samples, torch.Generator().manual_seed(10_000_019))
            rng = random.Random(7)
            swapped = [swap_negative(p, a, rng) for p, a in zip(data.plans, data.attributes)]
            posed = [pose_negative(p, a, rng) for p, a in zip(data.plans, data.attributes)]
            self._eval = (data.images, data.captions, swapped, posed)
        was_training = self.model.training
        self.model.eval()
        images, captions, swapped, posed = self._eval
        metrics = retrieval_and_binding(self.model, images, captions, swapped, pose_changed=posed)
        self.model.train(was_training)
        return {
            "retrieval_top1": metrics["text_to_image_top1"], "binding_accuracy": metrics["binding_accuracy"],
            "pose_accuracy": metrics["pose_accuracy"],
        }  # fmt: skip

    def seen_combinations(self) -> str:
        """The outfit combinations the weights have seen: this run's, or "all" when they start from
        weights that saw every combination (the held-out row is then an upper bound)."""
        if self.init_meta is not None and self.init_meta.get("combinations", "all") != "train":
            return "all"
        return self.stage_cfg.combinations

    def evaluate(self) -> dict:
        metrics = self.once_per_step("heldout", self.heldout_metrics)
        return {**metrics, "objective": -metrics["retrieval_top1"]}

    def export(self) -> dict:
        """The weights file (``<output_name>.pt``, its metrics in its meta), published to
        avatar/guidance/weights/ with ``stage.publish=true``."""
        metrics = {
            **self.once_per_step("heldout", self.heldout_metrics),
            "train_seconds": round(time.perf_counter() - self._start, 1),
            "steps": int(self.global_step),
        }
        meta = {**metrics, "git": git_revision()["commit"], "seed": int(self.cfg.seed), "combinations": self.seen_combinations(),
                "init_weights": self.stage_cfg.init_weights, "anchor_weights": self.stage_cfg.anchor_weights}  # fmt: skip
        payload = self.model.checkpoint(meta)
        out = self.run_dir() / f"{self.stage_cfg.output_name}.pt"
        with atomic_path(out) as tmp:
            torch.save(payload, tmp)
        if self.stage_cfg.publish:
            publish_file(out, WEIGHTS_DIR)
        return {"weights_file": out.name}
