"""Accuracy of a bundle's precision graphs against its fp32 graphs, in ONNX Runtime on CPU.

Per precision: cosine between its embeddings and the fp32 ones (mean, min; video and text),
token-selector agreement (fraction of videos whose selected token set is identical, and whose
order is identical too) and, when the set's captions name their videos, R@1/5/10 and the
median rank (``pig.metrics``; a caption's videos are those of its key). Written into the
bundle as ``accuracy_report.json`` by ``pig-export --calibrate``; ``pig-eval --bundle`` prints
it for any captioned set.
"""

from __future__ import annotations

import time
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pig.calibration.data import CaptionedVideos
from pig.engine.backends.accuracy import REPORT
from pig.engine.backends.base import encode_cut_text
from pig.engine.backends.onnxruntime import cpu_session
from pig.engine.bundle import Bundle
from pig.engine.graphs import INPUT_NAMES, MIN_TEXT_LENGTH, OUTPUT_NAME, TOPK_INDICES
from pig.engine.host.fsutil import write_json_atomic
from pig.engine.tokenizer import ClipTokenizer
from pig.errors import PigError
from pig.metrics import retrieval_metrics, retrieval_ranks


def run_graph(path: Path, name: str, data: np.ndarray, batch: int = 32,
              eos_id: int | None = None) -> dict[str, np.ndarray]:
    """``{output name: array}`` of the graph at ``path`` over ``data`` in batches (ORT, CPU).
    ``eos_id``: a text graph with a dynamic sequence axis gets its batches cut to their
    tokens, as the backends cut them (:func:`~pig.engine.backends.base.encode_cut_text`)."""
    session = cpu_session(path)
    if eos_id is not None and not isinstance(session.get_inputs()[0].shape[1], int):
        (only,) = [o.name for o in session.get_outputs()]  # the text graph's one output

        def run(x: np.ndarray) -> np.ndarray:
            return session.run(None, {name: x})[0]

        return {only: encode_cut_text(run, data, eos_id, MIN_TEXT_LENGTH, batch)}
    return _run(session, name, data, batch)


def _run(session: Any, name: str, data: np.ndarray, batch: int = 32) -> dict[str, np.ndarray]:
    parts = [session.run(None, {name: np.ascontiguousarray(data[i:i + batch])})
             for i in range(0, len(data), batch)]
    names = [o.name for o in session.get_outputs()]
    return {n: np.concatenate(out) for n, out in zip(names, zip(*parts, strict=True),
                                                     strict=True)}


@dataclass
class Outputs:
    """Every graph's outputs over an evaluation set: ``video[precision][output]`` (one row per
    readable video, keys in ``video_keys``), ``text[precision][output]`` (one row per query,
    keys in ``query_keys``, ``None`` when the set pairs nothing)."""

    video: dict[str, dict[str, np.ndarray]]
    text: dict[str, dict[str, np.ndarray]]
    video_keys: list[Hashable]
    query_keys: list[Hashable] | None
    skipped: list[str]


def embed(bundle: Bundle, precisions: list[str], data: CaptionedVideos,
          max_videos: int | None = None, batch: int = 16) -> Outputs:
    """Run the fp32 graphs and those of ``precisions`` over ``data``, the videos streamed in
    batches of ``batch`` (memory stays bounded whatever the set's size)."""
    names = ["fp32", *precisions]
    video_sessions = {p: cpu_session(bundle.graph_path("video", p)) for p in names}
    parts: dict[str, list[dict[str, np.ndarray]]] = {p: [] for p in names}
    keys: list[Hashable] = []
    skipped: list[str] = []
    pending: list[np.ndarray] = []

    def flush() -> None:
        x = np.stack(pending)
        pending.clear()
        for p, session in video_sessions.items():
            parts[p].append(_run(session, INPUT_NAMES["video"], x, batch))

    for item in data.videos(bundle.recipe, max_videos):
        if item.pixels is None:
            skipped.append(item.error)
            continue
        keys.append(item.key)
        pending.append(item.pixels)
        if len(pending) == batch:
            flush()
    if pending:
        flush()
    if not keys:
        raise PigError(f"{data.source}: no readable video"
                       + (f" (first: {skipped[0]})" if skipped else ""))
    video = {p: {n: np.concatenate([part[n] for part in parts[p]]) for n in parts[p][0]}
             for p in names}
    captions = data.captions()
    query_keys: list[Hashable] | None = None
    if all(k is not None for k, _ in captions):
        gallery = set(keys)
        captions = [(k, c) for k, c in captions if k in gallery]
        query_keys = [k for k, _ in captions]
    if not captions:
        raise PigError(f"{data.source}: no caption of a readable video")
    ids = ClipTokenizer(bundle.tokenizer_spec).encode([c for _, c in captions])
    eos = bundle.tokenizer_spec.eos_id  # cut as the runtime cuts
    text = {p: run_graph(bundle.graph_path("text", p), INPUT_NAMES["text"], ids, eos_id=eos)
            for p in names}
    return Outputs(video, text, keys, query_keys, skipped)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def selector_agreement(ref: np.ndarray, got: np.ndarray) -> dict[str, float]:
    """Fractions of rows whose selected index set / ordered list equal the reference."""
    same_set = np.all(np.sort(ref, axis=1) == np.sort(got, axis=1), axis=1)
    return {"topk_same_set": float(same_set.mean()),
            "topk_same_order": float(np.all(ref == got, axis=1).mean())}


def _retrieval(text: np.ndarray, video: np.ndarray, query_keys: list[Hashable],
               video_keys: list[Hashable]) -> dict[str, float]:
    m = retrieval_metrics(retrieval_ranks(text @ video.T, query_keys, video_keys))
    return {k: m[k] for k in ("R@1", "R@5", "R@10", "MdR")}


def accuracy_report(bundle: Bundle, precisions: list[str], data: CaptionedVideos,
                    max_videos: int | None = None) -> dict[str, Any]:
    """The report of ``precisions`` (each present for both branches) against fp32 on
    ``data`` (at most ``max_videos`` of its videos): cosine to fp32, token-selector
    agreement and, when its captions name their videos, R@1/5/10 and the median rank."""
    out = embed(bundle, precisions, data, max_videos)
    report: dict[str, Any] = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "runtime": "onnxruntime CPUExecutionProvider", "eval_set": data.source,
        "videos": len(out.video_keys), "captions": len(out.text["fp32"][OUTPUT_NAME]),
        "videos_skipped": len(out.skipped), "precisions": {}}
    ref_video, ref_text = out.video["fp32"], out.text["fp32"]
    queries = out.query_keys
    if queries is not None:
        report["fp32"] = _retrieval(ref_text[OUTPUT_NAME], ref_video[OUTPUT_NAME], queries,
                                    out.video_keys)
    for p in precisions:
        video, text = out.video[p], out.text[p]
        cv = cosine(ref_video[OUTPUT_NAME], video[OUTPUT_NAME])
        ct = cosine(ref_text[OUTPUT_NAME], text[OUTPUT_NAME])
        entry: dict[str, Any] = {
            "file_video": bundle.graph_entry("video", p)["file"],
            "file_text": bundle.graph_entry("text", p)["file"],
            "sha256_video": bundle.graph_sha256("video", p),
            "sha256_text": bundle.graph_sha256("text", p),
            "video_cosine_mean": float(cv.mean()), "video_cosine_min": float(cv.min()),
            "text_cosine_mean": float(ct.mean()), "text_cosine_min": float(ct.min())}
        if TOPK_INDICES in video:
            entry.update(selector_agreement(ref_video[TOPK_INDICES], video[TOPK_INDICES]))
        if queries is not None:
            r = _retrieval(text[OUTPUT_NAME], video[OUTPUT_NAME], queries, out.video_keys)
            entry.update(r)
            entry.update({f"d{k}": r[k] - report["fp32"][k] for k in r})
        report["precisions"][p] = entry
    return report


def format_report(report: dict[str, Any]) -> str:
    """A table, one row per precision (R@k in %, deltas in points against fp32)."""
    cols = [("video_cosine_mean", "vid cos", ".5f"), ("video_cosine_min", "vid min", ".5f"),
            ("text_cosine_mean", "txt cos", ".5f"), ("text_cosine_min", "txt min", ".5f"),
            ("topk_same_set", "topk set", ".3f"), ("topk_same_order", "topk ord", ".3f"),
            ("R@1", "R@1", ".1f"), ("dR@1", "dR@1", "+.1f"), ("R@5", "R@5", ".1f"),
            ("R@10", "R@10", ".1f"), ("MdR", "MdR", ".1f")]
    rows = {"fp32": report["fp32"]} if "fp32" in report else {}
    rows.update(report["precisions"])
    cols = [c for c in cols if any(c[0] in r for r in rows.values())]
    lines = [f"accuracy vs fp32 ({report['runtime']}; {report['videos']} videos, "
             f"{report['captions']} captions: {report['eval_set']})",
             f"{'precision':<10}" + "".join(f"{h:>10}" for _, h, _ in cols)]
    for name, r in rows.items():
        lines.append(f"{name:<10}" + "".join(
            f"{format(r[k], f):>10}" if k in r else f"{'':>10}" for k, _, f in cols))
    return "\n".join(lines)


def write_report(bundle: Bundle, report: dict[str, Any]) -> Path:
    path = bundle.dir / REPORT
    write_json_atomic(path, report)
    return path
