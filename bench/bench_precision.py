"""Accuracy (and ONNX Runtime CPU latency) of the fp16 and INT8 graphs against fp32.

1. Demo model (``models/pig-tiny``, when present): fp16 and INT8 as ``pig-export --calibrate``
   writes them (``int8``: max calibration), plus the INT8 alternatives the choice was made
   against: percentile calibration (``int8-pct``) and ONNX Runtime ``quantize_static``
   (``int8-ort``: QDQ, per-channel symmetric int8, MatMul/Gemm/Conv with constant weights, the
   rest fp32), and the CPU graph ``int8-cpu`` (dynamic, no calibration; its speed:
   ``bench/bench_int8_cpu.py``). R@1/5/10 on the demo held-out clips; all calibrated on the
   same demo training clips. (ModelOpt was measured once by hand: it cannot share this
   environment, see the ``why`` field of an INT8 manifest entry.)
2. Official-reference random weights, full B/32 config: the report on 16 demo held-out clips,
   cosine against the official reference outputs, and CPU latency per video at batch 1 as a
   ratio to fp32 in the same run (ORT's CPU provider has few fp16/int8 kernels for these ops:
   the graphs are meant for TensorRT, the ratio only shows the CPU cost of checking them).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx

from pig.calibration.calibrate import calibrate_bundle
from pig.calibration.data import calibration_set
from pig.calibration.fp16 import convert_fp16
from pig.calibration.int8 import quantize_int8, weight_nodes
from pig.calibration.int8_cpu import quantize_int8_cpu
from pig.calibration.report import accuracy_report, cosine, format_report, run_graph
from pig.demo.dataset import DemoClips
from pig.engine.bundle import Bundle
from pig.engine.graphs import INPUT_NAMES, OUTPUT_NAME, TOPK_INDICES
from pig.export.checkpoint import LoadedCheckpoint, load_checkpoint
from pig.export.config import infer_from_shapes, load_args
from pig.export.onnx_export import export_bundle
from pig.export.spec_weights import generate, load_spec, spec_inputs

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "tests" / "reference" / "weights_spec.json"
DEMO_MODEL = ROOT / "models" / "pig-tiny"
DEMO_DATA = ROOT / "demo_out" / "synth"


def ort_quantize_static(model: onnx.ModelProto, name: str, data: np.ndarray) -> onnx.ModelProto:
    """The lighter alternative: ONNX Runtime's QDQ quantizer with TensorRT-style settings."""
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    batches = iter([{name: np.ascontiguousarray(data[i:i + 8])} for i in range(0, len(data), 8)])

    class Reader:
        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(batches, None)

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.onnx", Path(tmp) / "out.onnx"
        onnx.save(model, src)
        quantize_static(
            str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["MatMul", "Gemm", "Conv"],
            nodes_to_quantize=[n.name for n in weight_nodes(model.graph)], per_channel=True,
            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                           "QuantizeBias": False})
        return onnx.load(str(dst))


Variant = Callable[[onnx.ModelProto, str, np.ndarray], onnx.ModelProto]
VARIANTS: dict[str, Variant] = {
    "fp16": lambda m, _n, _d: convert_fp16(m),
    "int8": lambda m, n, d: quantize_int8(m, n, d, "max"),
    "int8-pct": lambda m, n, d: quantize_int8(m, n, d, "percentile"),
    "int8-ort": ort_quantize_static,
    "int8-cpu": lambda m, _n, _d: quantize_int8_cpu(m),
}


def demo_model(tmp: Path) -> None:
    ckpt = DEMO_MODEL / "pig_tiny.pt"
    if not ckpt.is_file():
        print(f"{ckpt} not found: demo-model part skipped")
        return
    t0 = time.perf_counter()
    export_bundle(load_checkpoint(ckpt, load_args(DEMO_MODEL / "args.json")), tmp / "demo")
    bundle = Bundle.load(tmp / "demo")
    cal = calibration_set(DemoClips("train", 256), bundle.recipe, bundle.tokenizer_spec)
    for precision, make in VARIANTS.items():
        for branch, name in INPUT_NAMES.items():
            data = cal.pixel_values if branch == "video" else cal.input_ids
            model = make(onnx.load(str(bundle.graph_path(branch, "fp32"))), name, data)
            onnx.save(model, bundle.dir / f"{branch}.{precision}.onnx")
            bundle.set_graph(branch, precision, f"{branch}.{precision}.onnx")
    evals = DemoClips("heldout", 600,
                      folder=DEMO_DATA if (DEMO_DATA / "clips.jsonl").is_file() else None)
    report = accuracy_report(bundle, list(VARIANTS), evals)
    print(f"demo model {ckpt.relative_to(ROOT)}: calibrated on {len(cal.pixel_values)} "
          f"training clips / {len(cal.input_ids)} captions ({time.perf_counter() - t0:.0f} s)")
    print(format_report(report))


def _latency(path: Path, pixels: np.ndarray, runs: int = 3) -> float:
    run_graph(path, "pixel_values", pixels[:1])  # warm-up (session creation included)
    t0 = time.perf_counter()
    for _ in range(runs):
        run_graph(path, "pixel_values", pixels[:1])
    return (time.perf_counter() - t0) / runs


def full_reference(tmp: Path) -> None:
    t0 = time.perf_counter()
    weights = generate(load_spec(SPEC), "full")
    cfg = infer_from_shapes({k: v.shape for k, v in weights.items()})
    import torch

    from pig.export.model import PigModel

    model = PigModel(cfg).eval()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=True)
    del weights
    root = tmp / "full"
    export_bundle(LoadedCheckpoint(model, cfg, SPEC, ""), root)
    del model
    pixels, ids = spec_inputs(load_spec(SPEC))
    lines: list[str] = []
    report = calibrate_bundle(root, DemoClips("train", 256), DemoClips("heldout", 16),
                              log=lines.append)
    lines.append(format_report(report))
    print(f"official-reference random weights, full config ({time.perf_counter() - t0:.0f} s)")
    print("\n".join(line for line in lines if not line.startswith("wrote ")))
    with np.load(ROOT / "tests" / "reference" / "reference_outputs_full.npz") as ref:
        want_v, want_t = ref["video_embed_norm"], ref["text_embed_norm"]
        want_k = ref["topk_token_indices"]
    bundle = Bundle.load(root)
    base = _latency(bundle.graph_path("video", "fp32"), pixels)
    print(f"\n{'precision':<10}{'cos vs official (video min)':>29}{'(text min)':>12}"
          f"{'top-k = official':>18}{'CPU s/video':>13}{'vs fp32':>9}")
    for p in ("fp32", "fp16", "int8", "int8-cpu"):
        video = run_graph(bundle.graph_path("video", p), "pixel_values", pixels)
        text = run_graph(bundle.graph_path("text", p), INPUT_NAMES["text"], ids)[OUTPUT_NAME]
        t = base if p == "fp32" else _latency(bundle.graph_path("video", p), pixels)
        same = int(np.all(video[TOPK_INDICES] == want_k, axis=1).sum())
        cv = cosine(video[OUTPUT_NAME], want_v).min()
        print(f"{p:<10}{cv:>29.6f}{cosine(text, want_t).min():>12.6f}"
              f"{f'{same}/{len(want_k)}':>18}{t:>13.3f}{base / t:>8.2f}x")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-precision-") as tmp:
        demo_model(Path(tmp))
        print()
        full_reference(Path(tmp))


if __name__ == "__main__":
    main()
