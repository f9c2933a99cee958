"""ONNX Runtime CPU speed of the ``int8-cpu`` graphs and the variants they were chosen against,
as ratios to fp32 measured in the same run (interleaved, best of ``REPEATS``: the host is shared).

Model: the full B/32 config with the official-reference random weights (speed does not depend
on the weights), exported once into ``.cache/bench/int8_cpu/`` (about 2 minutes), or
``$PIG_BENCH_BUNDLE``. Variants of both graphs:

* ``int8-cpu``: what ``pig-export --calibrate`` writes (:mod:`pig.calibration.int8_cpu`:
  dynamic INT8, per-channel int8 weights, constant-weight MatMul/Gemm);
* ``dyn-tensor``: the same with one weight scale per tensor;
* ``qdq-fp32``: static Q/DQ in the TensorRT placement (:mod:`pig.calibration.int8`, calibrated
  on the reference inputs) with an fp32 rest, which ORT fuses into ``MatMulIntegerToFloat``;
* ``int8``: the bundle's TensorRT Q/DQ graph as written (fp16 rest), for reference.

For each, the nodes ORT's optimiser leaves (``optimized_model_filepath``) show which GEMMs run
as integer kernels. Then end-to-end ``pig-engine index`` (:func:`index_videos`, 2 workers) of
the demo's held-out clips with fp32 against int8-cpu. Accuracy: ``bench/bench_precision.py``.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from bench.bench_pipeline import CACHE as PIPELINE_CACHE
from bench.bench_pipeline import bundle as cached_bundle
from pig.calibration import int8_cpu
from pig.calibration.fp16 import convert_fp16
from pig.calibration.int8 import quantize_int8
from pig.engine.backends.onnxruntime import OrtOptions, session_options
from pig.engine.bundle import Bundle
from pig.engine.ingest.options import PipelineOptions
from pig.engine.ingest.run import index_videos
from pig.export.spec_weights import load_spec, spec_inputs

REPO = Path(__file__).resolve().parent.parent
SPEC = REPO / "tests" / "reference" / "weights_spec.json"
REPEATS = 3
VIDEO_BATCHES, TEXT_BATCHES = (1, 8), (8, 64)
E2E_CLIPS = 24
INTEGER_OPS = ("DynamicQuantizeMatMul", "MatMulIntegerToFloat", "MatMulInteger", "QLinearMatMul",
               "QGemm", "ConvInteger", "QLinearConv")


def _variants(pixels: np.ndarray, ids: np.ndarray
              ) -> dict[str, Callable[[onnx.ModelProto, str], onnx.ModelProto]]:
    data = {"video": ("pixel_values", pixels), "text": ("input_ids", ids)}

    return {
        "int8-cpu": lambda m, _b: int8_cpu.quantize_int8_cpu(m),
        "dyn-tensor": lambda m, _b: int8_cpu.quantize_int8_cpu(m, per_channel=False),
        "qdq-fp32": lambda m, b: quantize_int8(m, *data[b], fp16_rest=False),
        "int8": lambda m, b: convert_fp16(quantize_int8(m, *data[b], fp16_rest=False)),
    }


def _session(path: Path, optimized: Path | None = None) -> ort.InferenceSession:
    so = session_options(OrtOptions())
    if optimized is not None:
        so.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _integer_gemms(optimized: Path) -> str:
    ops = Counter(n.op_type for n in onnx.load(str(optimized), load_external_data=False).graph.node)
    ints = sum(c for op, c in ops.items() if op in INTEGER_OPS)
    floats = sum(c for op, c in ops.items() if op in ("MatMul", "FusedMatMul", "Gemm", "Conv"))
    return f"{ints} int / {floats} float"


def _best(session: ort.InferenceSession, feed: dict[str, np.ndarray]) -> float:
    t0 = time.perf_counter()
    session.run(None, feed)
    return time.perf_counter() - t0


def speed(root: Path, work: Path) -> None:
    pixels, ids = spec_inputs(load_spec(SPEC))
    inputs = {"video": ("pixel_values", pixels, VIDEO_BATCHES),
              "text": ("input_ids", ids, TEXT_BATCHES)}
    print(f"ONNX Runtime {ort.__version__} CPU, {os.cpu_count()} cores, full B/32 graphs; "
          f"items/s best of {REPEATS}, interleaved; ratio to fp32 in the same run")
    for branch, (name, data, batches) in inputs.items():
        fp32 = onnx.load(str(root / f"{branch}.onnx"))
        paths = {"fp32": root / f"{branch}.onnx"}
        for v, make in _variants(pixels, ids).items():
            paths[v] = work / f"{branch}.{v}.onnx"
            if not paths[v].is_file():
                onnx.save(make(fp32, branch), str(paths[v]))
        del fp32
        sessions, kinds = {}, {}
        for v, p in paths.items():
            opt = work / f"{branch}.{v}.opt.onnx"
            sessions[v] = _session(p, opt)
            kinds[v] = _integer_gemms(opt)
        print(f"\n{branch:<6}{'GEMM nodes after ORT fusion':>30}" +
              "".join(f"{f'b{b}/s':>9}{'x fp32':>8}" for b in batches))
        best: dict[tuple[str, int], float] = {}
        for b in batches:
            x = np.ascontiguousarray(np.resize(data, (b, *data.shape[1:])))
            for s in sessions.values():
                s.run(None, {name: x})  # warm-up at this batch size
            for _ in range(REPEATS):
                for v, s in sessions.items():
                    t = _best(s, {name: x})
                    best[v, b] = min(best.get((v, b), np.inf), t)
        for v in sessions:
            row = f"{v:<10}{kinds[v]:>26}"
            for b in batches:
                rate = b / best[v, b]
                row += f"{rate:>9.2f}{best['fp32', b] / best[v, b]:>7.2f}x"
            print(row, flush=True)
        sessions.clear()


def end_to_end(root: Path, work: Path) -> None:
    from pig.demo import synth

    clips = work / "clips"
    if not clips.is_dir():
        synth.generate(clips, num_train=0, num_heldout=E2E_CLIPS)
    bundle = Bundle.load(root)
    for b in ("video", "text"):
        if "int8-cpu" not in bundle.precisions(b):
            bundle.set_graph(b, "int8-cpu", f"{b}.int8-cpu.onnx")
    rates: dict[str, float] = {}
    for _ in range(2):
        for p in ("fp32", "int8-cpu"):
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                report = index_videos([clips], bundle, Path(tmp) / "idx", precision=p,
                                      options=PipelineOptions(workers=2), log=lambda _: None)
                rates[p] = max(rates.get(p, 0.0), report.indexed / (time.perf_counter() - t0))
    print(f"\npig-engine index, {E2E_CLIPS} demo held-out clips, full B/32, batch 8, best of 2: "
          f"fp32 {rates['fp32']:.2f} videos/s, int8-cpu {rates['int8-cpu']:.2f} videos/s "
          f"({rates['int8-cpu'] / rates['fp32']:.2f}x)")


def main() -> None:
    env = os.environ.get("PIG_BENCH_BUNDLE")
    root = Path(env) if env else cached_bundle("full").dir
    work = PIPELINE_CACHE.parent / "int8_cpu"
    work.mkdir(parents=True, exist_ok=True)
    speed(root, work)
    # the int8-cpu graphs inside the bundle for the end-to-end run (symlinks to the cache)
    for b in ("video", "text"):
        link = root / f"{b}.int8-cpu.onnx"
        if not link.exists():
            link.symlink_to(work / f"{b}.int8-cpu.onnx")
    end_to_end(root, work)


if __name__ == "__main__":
    main()
