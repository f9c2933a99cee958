"""One-shot GPU verification of the backends (run via scripts/gpu_check.sh; < 5 minutes).

On a GPU machine, in one go:
  * TensorRT, either flavour (TensorRT 10/11 or TensorRT-RTX on a GPU it supports): build
    every engine of the bundle (all precisions), compare each with ONNX Runtime CPU fp32
    (cosine mean/min over the inputs; R@1 on the demo held-out clips), benchmark. Where the
    flavour cannot run on this GPU (TensorRT-RTX on Hopper) the refusal is the note.
  * ONNX Runtime CUDA (when the CUDA provider exists): the same parity and benchmark;
    otherwise it shows that asking for CUDA is refused with a clear message (no silent
    CPU fallback).
  * cuda-python: pinned host buffer -> device -> host round trip on one stream, with the
    pinned vs pageable copy bandwidth.
  * ONNX Runtime CPU fp32: the baseline row.
Throughput is videos/s and queries/s at batch 1, 8 and 64, printed as one table.

Without ``--bundle`` the demo model (models/pig-tiny) is exported and calibrated (fp32, fp16,
INT8) into a scratch folder and its inputs are demo held-out clips, so R@1 is measured; with
``--bundle`` (e.g. a full B/32 bundle) the inputs are random and the R@1 column is empty.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pig.engine.backends.base import Backend  # noqa: E402
from pig.engine.backends.onnxruntime import OrtBackend  # noqa: E402
from pig.engine.backends.onnxruntime import cuda_missing as ort_cuda_missing  # noqa: E402
from pig.engine.backends.tensorrt import missing as trt_missing  # noqa: E402
from pig.engine.bundle import Bundle  # noqa: E402
from pig.engine.graphs import PRECISIONS  # noqa: E402
from pig.engine.host import gpu  # noqa: E402
from pig.errors import PigError  # noqa: E402

BATCHES = (1, 8, 64)
N_PARITY = 64


HELDOUT = 300  # demo held-out clips for R@1 (test_demo_search uses the same count)


@dataclass
class Inputs:
    """Video and text inputs of the parity rows; ``keys``: demo attribute keys (R@1)."""

    pixels: np.ndarray
    ids: np.ndarray
    keys: list[Any] | None


def _demo_bundle(scratch: Path) -> tuple[Bundle, Inputs]:
    """The demo model exported + calibrated, and its held-out clips decoded."""
    from pig.calibration.calibrate import calibrate_bundle
    from pig.demo import dataset, steps

    checkpoint, config = steps.model_files()
    bundle = steps.ensure_bundle(checkpoint, config, scratch / "bundle")
    clips = steps.ensure_clips(scratch / "heldout", HELDOUT)
    calibrate_bundle(bundle.dir, dataset.DemoClips("train", 256),
                     dataset.DemoClips("heldout", HELDOUT, folder=scratch / "heldout"),
                     max_videos=32, log=lambda _: None)
    bundle = Bundle.load(Path(bundle.dir))
    pixels = dataset.clip_pixels(scratch / "heldout", clips, bundle.recipe)
    ids = dataset.caption_ids(clips, bundle.tokenizer_spec)
    return bundle, Inputs(np.ascontiguousarray(pixels), ids, [c.spec.key() for c in clips])


def _random_inputs(bundle: Bundle, n: int) -> Inputs:
    from tests.fake_bundle import token_ids

    r = bundle.recipe
    rng = np.random.default_rng(0)
    px = rng.standard_normal((n, r.num_frames, 3, r.size, r.size), dtype=np.float32)
    return Inputs(px, token_ids(bundle.tokenizer_spec, n), None)


def _rate(fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray, budget_s: float = 1.0) -> float:
    """Items/s of ``fn(x)`` (one warm-up call, then repeat until ``budget_s``)."""
    fn(x)
    n, t0 = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < budget_s or n < 3:
        fn(x)
        n += 1
    return n * x.shape[0] / elapsed


def _cosines(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    c = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return float(c.mean()), float(c.min())


def _r1(video: np.ndarray, text: np.ndarray, keys: list[Any] | None) -> float | None:
    """Text-to-video R@1 (percent) on the demo held-out clips; None without demo inputs."""
    if keys is None:
        return None
    from pig.metrics import retrieval_metrics, retrieval_ranks

    return retrieval_metrics(retrieval_ranks(text @ video.T, keys, keys))["R@1"]


def _row(label: str, backend: Backend, ref: dict[str, np.ndarray], inputs: Inputs,
         build_s: float | None) -> dict[str, Any]:
    px, ids = inputs.pixels, inputs.ids
    v, t = backend.encode_video(px), backend.encode_text(ids)
    row: dict[str, Any] = {"row": label, "device": backend.device, "build_s": build_s}
    row["video_cos_mean"], row["video_cos_min"] = _cosines(v, ref["video"])
    row["text_cos_mean"], row["text_cos_min"] = _cosines(t, ref["text"])
    row["R@1"] = _r1(v, t, inputs.keys)
    px = np.concatenate([px] * -(-max(BATCHES) // len(px)))[: max(BATCHES)]
    ids = np.concatenate([ids] * -(-max(BATCHES) // len(ids)))[: max(BATCHES)]
    for b in BATCHES:
        row[f"videos/s@{b}"] = _rate(backend.encode_video, px[:b])
        row[f"queries/s@{b}"] = _rate(backend.encode_text, ids[:b])
    print(f"  measured {label}", flush=True)
    return row


def _cuda_round_trip(notes: list[str]) -> dict[str, Any] | None:
    from pig.engine.trt.cuda import Cuda, DeviceBuffer, PinnedBuffer

    try:
        cuda = Cuda()
    except PigError as err:
        notes.append(f"cuda-python: {err}")
        return None
    shape = (64, 12, 3, 224, 224)  # one batch-64 video input, 462 MB
    pinned = PinnedBuffer(cuda, shape, np.float32)
    back = PinnedBuffer(cuda, shape, np.float32)
    dev = DeviceBuffer(cuda, pinned.nbytes)
    stream = cuda.stream()
    try:
        pinned.array[:] = np.random.default_rng(1).standard_normal(shape, dtype=np.float32)
        t0 = time.perf_counter()
        cuda.copy_async(dev.ptr, pinned.ptr, pinned.nbytes, "h2d", stream)
        cuda.synchronize(stream)
        h2d = pinned.nbytes / (time.perf_counter() - t0) / 1e9
        cuda.copy_async(back.ptr, dev.ptr, pinned.nbytes, "d2h", stream)
        cuda.synchronize(stream)
        pageable = np.array(pinned.array)
        t0 = time.perf_counter()
        cuda.copy_async(dev.ptr, pageable.ctypes.data, pageable.nbytes, "h2d", stream)
        cuda.synchronize(stream)
        h2d_pageable = pageable.nbytes / (time.perf_counter() - t0) / 1e9
        same = bool(np.array_equal(back.array, pinned.array))
    finally:
        for buf in (pinned, back, dev):
            buf.close()
        cuda.check(cuda.rt.cudaStreamDestroy(stream))
    return {"device": cuda.device_name(), "cudart": cuda.rt.__name__, "round_trip_equal": same,
            "h2d_pinned_GBps": round(h2d, 1), "h2d_pageable_GBps": round(h2d_pageable, 1)}


def _table(rows: list[dict[str, Any]]) -> str:
    cols = ["row", "build_s", "video_cos_mean", "video_cos_min", "text_cos_mean",
            "text_cos_min", "R@1", *[f"videos/s@{b}" for b in BATCHES],
            *[f"queries/s@{b}" for b in BATCHES]]

    def fmt(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.6f}" if abs(v) <= 1.0 else f"{v:.1f}"
        return str(v)

    cells = [[fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(x[i]) for x in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines += ["  ".join(x.ljust(w) for x, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", help="bundle directory (default: the demo model, calibrated)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="pig-gpucheck-") as scratch:
        if args.bundle:
            bundle = Bundle.load(Path(args.bundle))
            return _check(bundle, _random_inputs(bundle, N_PARITY), args.json)
        return _check(*_demo_bundle(Path(scratch)), args.json)


def _check(bundle: Bundle, inputs: Inputs, json_path: str | None) -> int:
    found, why = gpu.gpu_or_none()
    print(f"GPU: {found} via {found.source}, driver {found.driver_version}" if found
          else f"GPU: none ({why})")
    notes: list[str] = []

    with OrtBackend(bundle, "fp32", "cpu") as cpu:
        ref = {"video": cpu.encode_video(inputs.pixels), "text": cpu.encode_text(inputs.ids)}
        rows = [_row("onnxruntime cpu fp32 (reference)", cpu, ref, inputs, None)]

    trt_why = trt_missing()
    if trt_why:
        notes.append(f"TensorRT rows skipped: {trt_why}")
    else:
        from pig.engine.backends.tensorrt import TrtBackend

        for p in PRECISIONS:
            if not all(p in bundle.precisions(b) for b in ("video", "text")):
                continue
            t0 = time.perf_counter()
            try:
                be = TrtBackend(bundle, p)
            except PigError as err:  # a graph TensorRT rejects is a result, not a crash
                notes.append(f"tensorrt {p}: {err}")
                continue
            with be:
                rows.append(_row(f"{be.flavour} {p}", be, ref, inputs,
                                 time.perf_counter() - t0))

    ort_why = ort_cuda_missing()
    if ort_why:
        notes.append(f"onnxruntime CUDA rows skipped: {ort_why}")
    for p in ("fp32", "fp16"):
        if p not in bundle.precisions("video") or (ort_why and p != "fp32"):
            continue
        try:
            be = OrtBackend(bundle, p, "cuda")
        except PigError as err:  # the refusal itself is a result: no silent CPU fallback
            notes.append(f"onnxruntime --device cuda refused as designed: {err}")
            continue
        with be:
            rows.append(_row(f"onnxruntime cuda {p}", be, ref, inputs, None))

    if found is not None:
        rt = _cuda_round_trip(notes)
        if rt is not None:
            notes.append(f"cuda-python round trip: {rt}")

    print("\n" + _table(rows))
    for n in notes:
        print(f"note: {n}")
    if json_path:
        Path(json_path).write_text(json.dumps({"rows": rows, "notes": notes}, indent=2))
    bad = [r["row"] for r in rows if r["video_cos_min"] < 0.99 or r["text_cos_min"] < 0.99]
    if bad:
        print(f"FAIL: cosine < 0.99 vs ONNX Runtime fp32 for {', '.join(bad)}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
