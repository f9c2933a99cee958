"""``pig-export --calibrate``: write a bundle's fp16, INT8 and int8-cpu graphs and their
accuracy report.

Each calibrated precision of :data:`pig.engine.graphs.PRECISION_TABLE` has one row in
:data:`PASSES`: how its graph is made from the fp32 graph, and whether it needs calibration
data. Each graph is checked (``onnx.checker`` full check), written as ``<branch>.<precision>.onnx``
and registered in the manifest with its sha256 and provenance (method, tool versions,
calibration source and counts, settings, date). The accuracy report against fp32, which runs
every graph in ONNX Runtime, is written to ``accuracy_report.json`` and returned.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from pig.calibration import int8_cpu
from pig.calibration.data import CalibrationSet, CaptionedVideos, calibration_set
from pig.calibration.fp16 import convert_fp16, fp32_islands
from pig.calibration.int8 import quantize_int8, settings
from pig.calibration.options import CALIBRATION_METHODS
from pig.calibration.report import accuracy_report, write_report
from pig.engine.bundle import Bundle
from pig.engine.display import log_stderr
from pig.engine.graphs import BRANCHES, CALIBRATED_PRECISIONS, INPUT_NAMES, Branch, graph_file
from pig.engine.host.fsutil import write_atomic
from pig.errors import PigError

WHY_INT8 = ("demo model, 600 held-out clips: R@1 equal to fp32 and video cosine >= 0.9995; "
            "ONNX Runtime quantize_static (also fake-quantizes residual adds, LayerNorm inputs "
            "and GEMM outputs): lower cosine; ModelOpt 0.47 ONNX PTQ: default (MHA Q/DQ) breaks "
            "the token selector (same set 0.27), with disable_mha_qdq on par but it pins onnx "
            "1.21 and onnxruntime-gpu; see bench/bench_precision.py")


def _versions() -> dict[str, str]:
    import onnxruntime

    import pig

    return {"pig-engine": pig.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__}


def _save(model: onnx.ModelProto, path: Path) -> None:
    """Check, then write atomically (temporary file in the bundle, fsync, rename)."""
    onnx.checker.check_model(model, full_check=True)
    write_atomic(path, model.SerializeToString())


@dataclass(frozen=True)
class Inputs:
    """What a pass may use besides the fp32 graph: the branch, the calibration set (for the
    passes that need one) and the INT8 range settings."""

    branch: Branch
    data: CalibrationSet | None
    method: str
    percentile: float


Made = tuple[onnx.ModelProto, dict[str, Any]]  # the graph, and its manifest provenance


def _fp16(fp32: onnx.ModelProto, _: Inputs) -> Made:
    return convert_fp16(fp32), {
        "method": "fp16 with fp32 islands", "tool": "pig.calibration.fp16",
        "fp32_islands": dict(Counter(fp32_islands(fp32.graph).values()))}


def _int8(fp32: onnx.ModelProto, inputs: Inputs) -> Made:
    cal = inputs.data
    if cal is None:
        raise PigError("int8 calibration needs a calibration set")
    feed = cal.pixel_values if inputs.branch == "video" else cal.input_ids
    model = quantize_int8(fp32, INPUT_NAMES[inputs.branch], feed, inputs.method,
                          inputs.percentile)
    return model, {"method": "int8 explicit Q/DQ", "tool": "pig.calibration.int8 (Q/DQ "
                   "placement ours, calibration runs in onnxruntime)", "why": WHY_INT8,
                   "calibration": {**cal.provenance(), **settings(inputs.method,
                                                                  inputs.percentile)}}


def _int8_cpu(fp32: onnx.ModelProto, _: Inputs) -> Made:
    return int8_cpu.quantize_int8_cpu(fp32), {
        "method": "int8 dynamic (ONNX Runtime CPU)", "why": int8_cpu.WHY,
        "tool": "onnxruntime.quantization.quantize_dynamic",
        "quantization": int8_cpu.settings()}


@dataclass(frozen=True)
class Pass:
    """How one calibrated precision's graphs are made from the fp32 graphs."""

    precision: str
    make: Callable[[onnx.ModelProto, Inputs], Made]
    needs_data: bool = False


PASSES: dict[str, Pass] = {p.precision: p for p in (
    Pass("fp16", _fp16),
    Pass("int8", _int8, needs_data=True),
    Pass("int8-cpu", _int8_cpu),  # dynamic: ranges from each batch at run time
)}


def calibrate_bundle(bundle_dir: str | Path, calibration: CaptionedVideos,
                     evaluation: CaptionedVideos,
                     precisions: Sequence[str] = CALIBRATED_PRECISIONS,
                     method: str = "max", percentile: float = 99.99,
                     max_videos: int = 64, max_captions: int = 256,
                     max_eval_videos: int | None = None,
                     log: Callable[[str], Any] = log_stderr) -> dict[str, Any]:
    """Write the ``precisions`` graphs of both branches into the bundle and register them;
    return the accuracy report on ``evaluation`` (also written into the bundle).

    ``calibration``: the INT8 ranges' inputs, at most ``max_videos`` videos and
    ``max_captions`` captions of it (read only when a pass needs data). ``evaluation``: the
    report's captioned videos (at most ``max_eval_videos``). ``log``: progress lines.
    """
    unknown = sorted(set(precisions) - set(PASSES))
    if unknown:
        raise PigError(f"unknown precision {unknown[0]!r} (choose from {', '.join(PASSES)})")
    if method not in CALIBRATION_METHODS:
        raise PigError(f"unknown calibration method {method!r}")
    bundle = Bundle.load(bundle_dir)
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    common = {"created": created, "versions": _versions()}
    cal = None
    if any(PASSES[p].needs_data for p in precisions):
        cal = calibration_set(calibration, bundle.recipe, bundle.tokenizer_spec, max_videos,
                              max_captions)
        for line in cal.skipped:
            log(f"note: calibration video skipped: {line}")
        log(f"calibration set: {len(cal.pixel_values)} videos, {len(cal.input_ids)} captions "
            f"({cal.source})")
    fp32_graphs = {branch: onnx.load(str(bundle.graph_path(branch, "fp32")))
                   for branch in BRANCHES}
    for precision in precisions:
        for branch in BRANCHES:  # the fp32 graph is read-only: passes work on copies
            model, meta = PASSES[precision].make(fp32_graphs[branch],
                                                 Inputs(branch, cal, method, percentile))
            file = graph_file(branch, precision)
            _save(model, bundle.dir / file)
            bundle.set_graph(branch, precision, file, io="float32 (as fp32)", **meta, **common)
            log(f"wrote {file} ({(bundle.dir / file).stat().st_size / 2**20:.1f} MiB)")
    report = accuracy_report(bundle, list(precisions), evaluation, max_eval_videos)
    log(f"wrote {write_report(bundle, report)}")
    return report
