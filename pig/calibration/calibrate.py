"""``pig-export --calibrate``: write a bundle's fp16, INT8 and int8-cpu graphs and their
accuracy report.

Each graph is checked (``onnx.checker`` full check), written as ``<branch>.<precision>.onnx``
and registered in the manifest with its sha256 and provenance (method, tool versions,
calibration source and counts, settings, date). The accuracy report against fp32, which runs
every graph in ONNX Runtime, is printed and written to ``accuracy_report.json``.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click
import onnx

from pig.calibration import data as cdata
from pig.calibration import int8_cpu
from pig.calibration.fp16 import convert_fp16, fp32_islands
from pig.calibration.int8 import quantize_int8, settings
from pig.calibration.options import CALIBRATION_METHODS
from pig.calibration.report import accuracy_report, format_report, write_report
from pig.engine.bundle import Bundle
from pig.engine.graphs import BRANCHES, CALIBRATED_PRECISIONS, INPUT_NAMES, graph_file
from pig.engine.host.fsutil import write_atomic
from pig.errors import PigError

EvalSource = cdata.EvalSet | str | Path | None
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


def calibrate_bundle(bundle_dir: str | Path, videos: Path | None = None,
                     captions: Path | None = None,
                     precisions: Sequence[str] = CALIBRATED_PRECISIONS,
                     method: str = "max", percentile: float = 99.99,
                     max_videos: int = 64, max_captions: int = 256,
                     eval_data: EvalSource = None,
                     echo: Callable[[str], Any] = click.echo) -> dict[str, Any]:
    """Write the ``precisions`` graphs of both branches into the bundle and register them;
    return the accuracy report (also written into the bundle).

    Calibration data: at most ``max_videos`` / ``max_captions`` from ``videos`` (a folder) +
    ``captions`` (one caption per line), or both ``None`` for the demo training clips.
    ``eval_data``: the report's inputs, an :class:`~pig.calibration.data.EvalSet`, a
    ``pig.demo.synth`` folder, or ``None`` for the demo held-out clips rendered on the fly.
    """
    if (videos is None) != (captions is None):
        raise PigError("calibration needs both --videos and --captions (or neither, for the "
                       "demo calibration set)")
    unknown = sorted(set(precisions) - set(CALIBRATED_PRECISIONS))
    if unknown:
        raise PigError(f"unknown precision {unknown[0]!r} (choose from "
                       f"{', '.join(CALIBRATED_PRECISIONS)})")
    if method not in CALIBRATION_METHODS:
        raise PigError(f"unknown calibration method {method!r}")
    bundle = Bundle.load(bundle_dir)
    recipe, spec = bundle.recipe, bundle.tokenizer_spec
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    common = {"created": created, "versions": _versions()}
    cal = None
    if "int8" in precisions:
        cal = (cdata.demo_set(recipe, spec, max_videos, max_captions) if videos is None else
               cdata.from_files(videos, captions, recipe, spec, max_videos, max_captions))
        for line in cal.skipped:
            echo(f"note: calibration video skipped: {line}")
        echo(f"calibration set: {len(cal.pixel_values)} videos, {len(cal.input_ids)} captions "
             f"({cal.source})")
    fp32_graphs = {branch: onnx.load(str(bundle.graph_path(branch, "fp32")))
                   for branch in BRANCHES}
    for precision in precisions:
        for branch, name in INPUT_NAMES.items():
            fp32 = fp32_graphs[branch]  # read-only: both passes work on copies
            if precision == "fp16":
                model = convert_fp16(fp32)
                meta = {"method": "fp16 with fp32 islands", "tool": "pig.calibration.fp16",
                        "fp32_islands": dict(Counter(fp32_islands(fp32.graph).values()))}
            elif precision == "int8-cpu":
                model = int8_cpu.quantize_int8_cpu(fp32)
                meta = {"method": "int8 dynamic (ONNX Runtime CPU)", "why": int8_cpu.WHY,
                        "tool": "onnxruntime.quantization.quantize_dynamic",
                        "quantization": int8_cpu.settings()}
            else:
                assert cal is not None
                feed = cal.pixel_values if branch == "video" else cal.input_ids
                model = quantize_int8(fp32, name, feed, method, percentile)
                meta = {"method": "int8 explicit Q/DQ", "tool": "pig.calibration.int8 "
                        "(Q/DQ placement ours, calibration runs in onnxruntime)", "why": WHY_INT8,
                        "calibration": {**cal.provenance(), **settings(method, percentile)}}
            file = graph_file(branch, precision)
            _save(model, bundle.dir / file)
            bundle.set_graph(branch, precision, file, io="float32 (as fp32)", **meta, **common)
            echo(f"wrote {file} ({(bundle.dir / file).stat().st_size / 2**20:.1f} MiB)")
    evals = eval_data if isinstance(eval_data, cdata.EvalSet) else cdata.demo_heldout(
        recipe, spec, None if eval_data is None else Path(eval_data))
    report = accuracy_report(bundle, list(precisions), evals)
    echo(format_report(report))
    echo(f"wrote {write_report(bundle, report)}")
    return report
