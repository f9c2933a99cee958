"""Train a tiny PIG from scratch on the synthetic clips (the recipe behind ``models/pig-tiny``).

Objectives as in the official code. Stage 1 is the official CLIP-ViP baseline
(``run_video_retrieval.py``): symmetric InfoNCE on the plain CLIP-ViP vector (projected video
CLS) against the text vector. Stage 2 is PIG (``run_video_retrieval_pig.py``:
``NCELearnableTempLoss`` plus the ``l2`` generation loss with ``norm_before_loss``, scale 1.0),
starting from stage 1's weights with a fresh optimiser:

* retrieval: symmetric InfoNCE, ``CE(t2v) + CE(v2t)`` (summed, as the official code does), on
  the L2-normalised final PIG video vector against the L2-normalised text vector, logits scaled
  by ``exp(logit_scale)`` (learned, clamped to ``[0, ln 200]`` after every step);
* generation: ``2 - 2 cos(pseudo_query, text_embed)`` where ``text_embed`` is the caption's
  projected EOS feature (``text_projection`` of the pooled EOS state, the official
  ``text_feats``), averaged over the batch.

The official PIG fine-tunes pre-trained CLIP weights; stage 1 stands in for that pre-training
here. It is also what makes the model see motion direction: trained from scratch with the PIG
objective alone, neither tower ever separates left from right or up from down (both stay at
chance for 5000 steps), while the CLIP-ViP objective learns them within ~1500 steps and stage 2
keeps them.

AdamW (betas 0.9/0.98, weight decay 0.2, as official), linear warm-up then cosine decay per
stage, gradient clipping at 1.0. Deviations for training from scratch on a CPU: larger learning
rates, 5% warm-up, ``logit_scale`` starting at ln(1/0.07) (CLIP's from-scratch value) and the
generator's token table frozen (the official model only reads its BOS/EOS rows and leaves it
untrained), sin/cos initial position and frame-time embeddings (:func:`init_weights`), and
caption-consistent augmentation (:mod:`pig.demo.augment`: mirrored and time-reversed clips,
captions re-drawn every step; off-diagonal pairs with identical attributes are left out of the
softmaxes). The checkpoint is the model's ``state_dict`` with float tensors stored in fp16.

``python -m pig.demo.train --data demo_out/synth --out models/pig-tiny``
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from pig import console
from pig.demo import augment, dataset, synth
from pig.engine.tokenizer import ClipTokenizer
from pig.export.config import PigConfig
from pig.export.model import PigModel

CHECKPOINT = "pig_tiny.pt"
ARGS = "args.json"
LOGIT_SCALE_MAX = math.log(200.0)
OBJECTIVES = ("clip-vip", "pig")


@dataclass(frozen=True)
class TrainSettings:
    """Optimisation settings (recorded in the model README)."""

    steps: int = 3500
    batch: int = 64
    lr: float = 5e-4
    weight_decay: float = 0.2
    warmup: float = 0.05
    grad_clip: float = 1.0
    seed: int = 0
    threads: int = 2
    objective: str = "pig"  # "clip-vip": InfoNCE on the plain CLIP-ViP vector only (stage 1)


CLIP_VIP_STAGE = TrainSettings(steps=2000, lr=1e-3, objective="clip-vip")
"""Stage 1 of the demo recipe, before the PIG settings' stage 2 (see the module docstring)."""

TINY = PigConfig(
    vision_width=96, vision_layers=2, vision_heads=4, vision_mlp=384,
    patch_size=16, image_size=64, num_frames=6, num_proxy=3,
    text_width=64, text_layers=2, text_heads=4, text_mlp=256,
    gen_layers=2, gen_heads=4, gen_mlp=256, embed_dim=64, top_k=8,
)
"""The tiny PIG: official structure and vocabulary, small widths (2-core CPU, < 25 MB in fp16)."""


def sincos(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """``[N, dim]`` sines then cosines of ``positions`` at ``dim // 2`` geometric frequencies
    (periods from 2 pi to 200 pi: smooth, near-linear codes of a few positions)."""
    freqs = torch.exp(-math.log(100.0) * torch.arange(dim // 2) / (dim // 2))
    angles = positions.float()[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def init_weights(model: PigModel, seed: int) -> None:
    """Deterministic from-scratch initialisation (CLIP-style scales).

    The video tower's patch-position and frame-time embeddings start as unit-amplitude sin/cos
    codes of (column, row) and frame index rather than small noise: motion direction is a
    relation between where and when, and both start as strong as the patch content.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("logit_scale"):
                p.fill_(math.log(1 / 0.07))
            elif "layer_norm" in name or "layrnorm" in name or "layernorm" in name:
                p.fill_(1.0 if name.endswith("weight") else 0.0)
            elif p.ndim == 1 and name.endswith("bias"):
                p.zero_()
            elif p.ndim >= 2 and "embedding" not in name and "added_cls" not in name:
                fan_in = math.prod(p.shape[1:])
                p.normal_(0.0, fan_in**-0.5, generator=g)
            else:  # token/position/temporal embeddings, class/proxy/frame CLS vectors
                p.normal_(0.0, 0.02, generator=g)
        emb = model.encoder.clipmodel.vision_model.embeddings
        cfg = model.cfg
        side, half = cfg.image_size // cfg.patch_size, cfg.vision_width // 2
        rows, cols = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
        emb.position_embedding.weight[1:] = torch.cat(
            [sincos(cols.flatten(), half), sincos(rows.flatten(), half)], dim=1)
        emb.position_embedding.weight[0] = 0.0
        emb.temporal_embedding[0] = sincos(torch.arange(cfg.num_frames), cfg.vision_width)


def losses(
    model: PigModel, pixel_values: torch.Tensor, input_ids: torch.Tensor,
    exclude: torch.Tensor | None = None, objective: str = "pig",
) -> tuple[torch.Tensor, torch.Tensor]:
    """(retrieval InfoNCE, generation loss) of ``B`` matching clip/caption pairs.

    ``exclude`` (``[B, B]`` bool) marks pairs that are neither positive nor negative (identical
    attributes); they leave both softmaxes.
    ``objective="clip-vip"``: the InfoNCE is on the plain CLIP-ViP vector and the generation
    loss is 0 (the official CLIP-ViP baseline objective; generator and fusioner are not run).
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, not {objective!r}")
    text = model.encode_text(input_ids)
    if objective == "clip-vip":
        video_norm = F.normalize(model.encode_clip_vip(pixel_values), dim=-1)
    else:
        video = model.encode_video(pixel_values)
        video_norm = video.embed_norm
    b = pixel_values.shape[0]
    scale = model.encoder.clipmodel.logit_scale.exp()
    logits = scale * video_norm @ text.embed_norm.T  # [videos, texts]
    if exclude is not None:
        logits = logits.masked_fill(exclude, float("-inf"))
    target = torch.arange(b)
    retrieval = F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)
    if objective == "clip-vip":
        return retrieval, torch.zeros(())
    cos = F.cosine_similarity(video.pseudo_query, text.embed, dim=-1)
    return retrieval, (2.0 - 2.0 * cos).mean()


def lr_at(step: int, s: TrainSettings) -> float:
    warm = max(1, int(s.warmup * s.steps))
    if step < warm:
        return s.lr * (step + 1) / warm
    return 0.5 * s.lr * (1.0 + math.cos(math.pi * (step - warm) / max(1, s.steps - warm)))


def batches(n: int, batch: int, seed: Sequence[int]) -> Iterator[np.ndarray]:
    """Endless shuffled epochs of index batches (the last partial batch of an epoch dropped)."""
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(n)
        for i in range(0, n - batch + 1, batch):
            yield order[i : i + batch]


def make_model(cfg: PigConfig, seed: int) -> PigModel:
    torch.manual_seed(seed)
    model = PigModel(cfg)
    init_weights(model, seed)
    model.generator.clip_reconstructor.embeddings.token_embedding.weight.requires_grad_(False)
    return model


def train(
    model: PigModel,
    pixels: np.ndarray,
    specs: Sequence[synth.ClipSpec],
    tokenize: Callable[[list[str]], np.ndarray],
    s: TrainSettings,
    log_every: int = 50,
    monitor: Callable[[PigModel], dict[str, float]] | None = None,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Run ``s.steps`` optimiser steps in place; returns the logged history.

    Every step draws ``s.batch`` clips, mirrors and reverses them at random and captions them
    afresh (:mod:`pig.demo.augment`).
    ``monitor`` (e.g. held-out R@1) is called in eval mode at every log step; it reads the model
    only, so the run is the same with or without it. ``progress`` shows a bar (rate, ETA) on
    stderr; logged records go to stdout either way.
    """
    torch.set_num_threads(s.threads)
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": s.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=s.lr, betas=(0.9, 0.98), eps=1e-6)
    logit_scale = model.encoder.clipmodel.logit_scale
    stream = OBJECTIVES.index(s.objective)  # each stage draws its own batches and augmentations
    rng = np.random.default_rng([s.seed, 1, stream])
    history: list[dict[str, Any]] = []
    model.train()
    t0 = time.perf_counter()
    draws = batches(len(pixels), s.batch, [s.seed, stream])
    bar = tqdm(total=s.steps, desc=s.objective, unit="step", disable=not progress)
    for step, idx in zip(range(s.steps), draws, strict=False):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, s)
        px, batch_specs, captions = augment.augmented_batch(pixels, specs, idx, rng)
        exclude = torch.from_numpy(augment.same_key_mask(batch_specs))
        retrieval, generation = losses(model, torch.from_numpy(px),
                                       torch.from_numpy(tokenize(captions)), exclude, s.objective)
        loss = retrieval + generation
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, s.grad_clip)
        opt.step()
        with torch.no_grad():
            logit_scale.clamp_(0.0, LOGIT_SCALE_MAX)
        if step % log_every == 0 or step == s.steps - 1:
            rec = {"objective": s.objective, "step": step, "retrieval": retrieval.item(),
                   "generation": generation.item(), "logit_scale": logit_scale.exp().item(),
                   "seconds": time.perf_counter() - t0}
            if monitor is not None:
                model.eval()
                rec.update(monitor(model))
                model.train()
            history.append(rec)
            bar.write(json.dumps(rec))
            sys.stdout.flush()
        bar.update()
    bar.close()
    model.eval()
    return history


def heldout_monitor(data: Path, cfg: PigConfig) -> Callable[[PigModel], dict[str, float]]:
    """Held-out text->video R@1 of the PIG and the plain CLIP-ViP vectors (fp32 weights)."""
    from pig.demo.evaluate import torch_embeddings
    from pig.metrics import retrieval_metrics, retrieval_ranks

    clips = synth.load_manifest(data, "heldout")
    pixels = dataset.clip_pixels(data, clips, cfg.recipe())
    ids = dataset.caption_ids(clips, cfg.tokenizer_spec())
    keys = [c.spec.key() for c in clips]

    def r1(model: PigModel) -> dict[str, float]:
        e = torch_embeddings(model, pixels, ids)
        return {f"heldout_R@1_{k}": retrieval_metrics(
            retrieval_ranks(e["text"] @ e[k].T, keys, keys))["R@1"] for k in ("pig", "clip")}

    return r1


def fp16_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state_dict with every floating tensor rounded to fp16 (integer buffers unchanged)."""
    return {k: (v.half() if v.is_floating_point() else v).clone()
            for k, v in model.state_dict().items()}


_D = TrainSettings()


@click.command(context_settings=console.CONTEXT, help=__doc__.splitlines()[0])
@click.option("--data", type=click.Path(path_type=Path), default=Path("demo_out/synth"),
              show_default=True, help="output of python -m pig.demo.synth")
@click.option("--out", type=click.Path(path_type=Path), default=Path("models/pig-tiny"),
              show_default=True)
@click.option("--clip-vip-steps", type=int, default=CLIP_VIP_STAGE.steps, show_default=True,
              help="stage 1: steps of the CLIP-ViP baseline objective (0 skips it)")
@click.option("--clip-vip-lr", type=float, default=CLIP_VIP_STAGE.lr, show_default=True)
@click.option("--steps", type=int, default=_D.steps, show_default=True,
              help="stage 2: PIG steps")
@click.option("--batch", type=int, default=_D.batch, show_default=True)
@click.option("--lr", type=float, default=_D.lr, show_default=True,
              help="stage 2: PIG peak learning rate")
@click.option("--seed", type=int, default=_D.seed, show_default=True)
@click.option("--threads", type=int, default=_D.threads, show_default=True)
@click.option("--log-every", type=int, default=250, show_default=True)
@click.option("--monitor", is_flag=True,
              help="print held-out R@1 at every log step (slower; same weights)")
def cli(data: Path, out: Path, clip_vip_steps: int, clip_vip_lr: float, steps: int, batch: int,
        lr: float, seed: int, threads: int, log_every: int, monitor: bool) -> None:
    common: dict[str, Any] = {"batch": batch, "seed": seed, "threads": threads}
    stages = [TrainSettings(steps=clip_vip_steps, lr=clip_vip_lr, objective="clip-vip",
                            **common),
              TrainSettings(steps=steps, lr=lr, **common)]
    stages = [st for st in stages if st.steps > 0]
    if not stages:
        raise click.UsageError("nothing to train: --clip-vip-steps and --steps are both 0")
    torch.set_num_threads(threads)
    cfg = TINY
    clips = synth.load_manifest(data, "train")
    t0 = time.perf_counter()
    pixels = dataset.clip_pixels(data, clips, cfg.recipe())
    t_data = time.perf_counter() - t0
    model = make_model(cfg, seed)
    evaluate = heldout_monitor(data, cfg)
    tokenize = ClipTokenizer(cfg.tokenizer_spec()).encode
    log: list[dict[str, Any]] = []
    for st in stages:
        t0 = time.perf_counter()
        history = train(model, pixels, [c.spec for c in clips], tokenize, st, log_every,
                        evaluate if monitor else None, progress=True)
        seconds = time.perf_counter() - t0
        log.append({"settings": asdict(st), "train_seconds": seconds,
                    "heldout": evaluate(model), "history": history})
    out.mkdir(parents=True, exist_ok=True)
    torch.save(fp16_state_dict(model), out / CHECKPOINT)
    (out / ARGS).write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    summary = {"train_clips": len(clips), "data_seconds": t_data,
               "train_seconds": sum(st["train_seconds"] for st in log),
               "stages": [{k: v for k, v in st.items() if k != "history"} for st in log]}
    (out / "train_log.json").write_text(json.dumps({**summary, "stages": log}, indent=1))
    print(json.dumps(summary))


def main(argv: list[str] | None = None) -> None:
    """``python -m pig.demo.train`` (errors: :mod:`pig.console`)."""
    console.run(cli, argv, "python -m pig.demo.train")


if __name__ == "__main__":
    main()
