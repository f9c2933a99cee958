"""Text->video retrieval on the held-out synthetic clips: PyTorch, ONNX Runtime and the ablation.

Every held-out caption queries the gallery of all held-out clips. Reported: R@1/5/10 (%), median
and mean rank for (a) the PIG vector in PyTorch (the checkpoint as shipped, fp16 weights
upcast), (b) the exported fp32 ONNX bundle in ONNX Runtime, (c) the plain CLIP-ViP vector
(projected video CLS, no pseudo-query interaction) of the same model and (d) with
``--baseline``, the paper's ablation: the CLIP-ViP vector of a model trained with the CLIP-ViP
objective only (``python -m pig.demo.train --steps 0``). Clips that share every attribute are
interchangeable: retrieving any of them counts as correct.

``pig-eval --checkpoint models/pig-tiny/pig_tiny.pt --config models/pig-tiny/args.json
--data demo_out/synth --bundle bundles/pig-tiny --report report.json`` (:mod:`pig.cli.eval`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from pig.demo import dataset, synth
from pig.metrics import retrieval_metrics, retrieval_ranks

RULE = ("a retrieved clip whose attributes (shape, colour, size, motion, background, second "
        "object) equal the query clip's counts as correct")


def ranking_agreement(sim_a: np.ndarray, sim_b: np.ndarray, ranks_a: np.ndarray,
                      ranks_b: np.ndarray, k: int = 10) -> dict[str, float | bool]:
    """How far two similarity matrices of the same queries x gallery rank alike."""
    top_a = np.argsort(-sim_a, axis=1, kind="stable")[:, :k]
    top_b = np.argsort(-sim_b, axis=1, kind="stable")[:, :k]
    return {
        "target_ranks_identical": bool(np.array_equal(ranks_a, ranks_b)),
        f"top{k}_order_identical_fraction": float(np.mean(np.all(top_a == top_b, axis=1))),
        "max_abs_sim_diff": float(np.max(np.abs(sim_a - sim_b))),
    }


def attribute_errors(sim: np.ndarray, specs: Sequence[synth.ClipSpec]) -> dict[str, float]:
    """Per attribute, % of queries whose top-1 clip gets that attribute wrong."""
    top1 = np.argmax(sim, axis=1)
    names = list(vars(specs[0]))
    wrong = {n: [getattr(specs[q], n) != getattr(specs[t], n) for q, t in enumerate(top1)]
             for n in names}
    return {n: 100.0 * float(np.mean(w)) for n, w in wrong.items()}


def direction_twin_accuracy(sim: np.ndarray, specs: Sequence[synth.ClipSpec]
                            ) -> dict[str, dict[str, float | None]]:
    """How often a caption scores its own clip above the clip that differs only in direction.

    ``sim[i, j]``: caption of clip ``i`` against clip ``j`` (queries and gallery are the same
    clips, in the same order).
    For every query whose clip has a twin in the gallery (same attributes, the opposite motion
    of its axis), per motion axis: the number of such queries and the % where
    ``sim[query, own clip] > sim[query, twin]`` (50% = the direction is not encoded).
    """
    first: dict[tuple[str, ...], int] = {}
    for i, spec in enumerate(specs):
        first.setdefault(spec.key(), i)
    out = {}
    for axis in synth.MOTION_AXES:
        wins = []
        for q, spec in enumerate(specs):
            if spec.motion in axis:
                twin = replace(spec, motion=synth.opposite(spec.motion))
                if (t := first.get(twin.key())) is not None:
                    wins.append(sim[q, q] > sim[q, t])
        out["/".join(axis)] = {"queries": len(wins),
                               "percent": 100.0 * float(np.mean(wins)) if wins else None}
    return out


def torch_embeddings(model: Any, pixels: np.ndarray, ids: np.ndarray,
                     batch: int = 50) -> dict[str, np.ndarray]:
    """Unit vectors from the PyTorch model: ``text``, ``pig`` (final) and ``clip`` (ablation)."""
    import torch

    out: dict[str, list[np.ndarray]] = {"text": [], "pig": [], "clip": []}
    with torch.no_grad():
        for i in range(0, len(pixels), batch):
            v = model.encode_video(torch.from_numpy(np.array(pixels[i : i + batch])))
            t = model.encode_text(torch.from_numpy(ids[i : i + batch]))
            out["pig"].append(v.embed_norm.numpy())
            out["clip"].append(v.clip_embed_norm.numpy())
            out["text"].append(t.embed_norm.numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def ort_embeddings(bundle_dir: Path, pixels: np.ndarray, ids: np.ndarray) -> dict[str, np.ndarray]:
    """Unit vectors from the bundle's fp32 graphs in ONNX Runtime (CPU)."""
    from pig.engine.backends import open_backend
    from pig.engine.bundle import Bundle

    with open_backend(Bundle.load(bundle_dir), "onnxruntime", "fp32", device="cpu",
                      log=lambda _: None) as backend:
        return {"pig": backend.encode_video(np.ascontiguousarray(pixels)),
                "text": backend.encode_text(ids)}


def format_table(results: dict[str, dict[str, float]]) -> str:
    cols = ("R@1", "R@5", "R@10", "MdR", "MnR")
    lines = [f"{'model':<28}" + "".join(f"{c:>8}" for c in cols)]
    lines += [f"{name:<28}" + "".join(f"{m[c]:>8.1f}" for c in cols) for name, m in results.items()]
    return "\n".join(lines)


def evaluate(checkpoint: Path, config: Path, data: Path, bundle: Path | None,
             baseline: Path | None = None) -> dict[str, Any]:
    """Metrics of every variant on the held-out split, as a JSON-ready dict."""
    from pig.export.checkpoint import load_checkpoint
    from pig.export.config import load_args

    loaded = load_checkpoint(checkpoint, load_args(config))
    cfg = loaded.config
    clips = synth.load_manifest(data, "heldout")
    pixels = dataset.clip_pixels(data, clips, cfg.recipe())
    ids = dataset.caption_ids(clips, cfg.tokenizer_spec())
    keys = [c.spec.key() for c in clips]
    t0 = time.perf_counter()
    emb = torch_embeddings(loaded.model, pixels, ids)
    sims = {"PIG (PyTorch)": emb["text"] @ emb["pig"].T,
            "CLIP-ViP vector of the PIG": emb["text"] @ emb["clip"].T}
    report: dict[str, Any] = {
        "checkpoint": str(checkpoint), "checkpoint_sha256": loaded.sha256,
        "heldout_clips": len(clips), "queries": len(clips),
        "distinct_attribute_combinations": len(set(keys)), "correctness_rule": RULE,
        "torch_seconds": time.perf_counter() - t0,
    }
    if baseline is not None:
        base = load_checkpoint(baseline, load_args(config))
        base_emb = torch_embeddings(base.model, pixels, ids)
        sims["CLIP-ViP baseline model"] = base_emb["text"] @ base_emb["clip"].T
        report.update(baseline=str(baseline), baseline_sha256=base.sha256)
    if bundle is not None:
        t0 = time.perf_counter()
        ort = ort_embeddings(bundle, pixels, ids)
        sims["PIG (ONNX Runtime fp32)"] = ort["text"] @ ort["pig"].T
        report["ort_seconds"] = time.perf_counter() - t0
    ranks = {name: retrieval_ranks(s, keys, keys) for name, s in sims.items()}
    report["metrics"] = {name: retrieval_metrics(r) for name, r in ranks.items()}
    specs = [c.spec for c in clips]
    report["top1_attribute_errors_percent"] = {
        name: attribute_errors(s, specs) for name, s in sims.items()}
    report["direction_twin_accuracy"] = direction_twin_accuracy(sims["PIG (PyTorch)"], specs)
    if bundle is not None:
        report["ort_vs_torch"] = ranking_agreement(
            sims["PIG (PyTorch)"], sims["PIG (ONNX Runtime fp32)"],
            ranks["PIG (PyTorch)"], ranks["PIG (ONNX Runtime fp32)"])
    return report


def format_demo_report(report: dict[str, Any]) -> str:
    """The printed form of :func:`evaluate`'s report."""
    lines = [f"{report['heldout_clips']} held-out clips "
             f"({report['distinct_attribute_combinations']} attribute combinations); {RULE}",
             format_table(report["metrics"]), "top-1 attribute errors (% of queries):"]
    for name, errs in report["top1_attribute_errors_percent"].items():
        lines.append(f"  {name:<28}" + " ".join(f"{k}={v:.1f}" for k, v in errs.items()))
    lines.append("caption prefers its clip over the same clip in the opposite direction "
                 "(PIG, PyTorch):")
    lines.append("  " + "  ".join(f"{k} {v['percent']:.1f}% of {v['queries']}"
                                  for k, v in report["direction_twin_accuracy"].items()
                                  if v["queries"]))
    if "ort_vs_torch" in report:
        lines.append("ONNX Runtime vs PyTorch: " + json.dumps(report["ort_vs_torch"]))
    return "\n".join(lines)
