"""INT8 graphs made for ONNX Runtime's CPU provider (precision ``int8-cpu``).

The TensorRT INT8 graph (:mod:`pig.calibration.int8`) keeps fp16 around its Q/DQ pairs, and the
CPU provider has few fp16 kernels: on a CPU it runs slower than fp32. This graph is ONNX
Runtime's dynamic quantisation (``quantize_dynamic``) of the fp32 graph instead: every
``MatMul`` with a constant weight gets an int8 weight (symmetric, per output channel) and its
activation is quantised to uint8 at run time, per tensor, from the actual batch's range, so no
calibration set is needed and outliers in unseen inputs cannot clip. ORT's optimiser fuses each
``DynamicQuantizeLinear -> MatMulInteger -> scale`` chain into one ``DynamicQuantizeMatMul``
(or ``MatMulIntegerToFloat``) kernel that runs the GEMM on int8 (VNNI/AMX where the CPU has
them). What needs fp32 stays fp32: LayerNorm, Softmax, the attention products (activation x
activation), the token selector's scores and top-k, the residual adds, the patch-embedding
convolution and the final normalisation.

Chosen by measurement against per-tensor weights, and against static Q/DQ (the TensorRT
placement with an fp32 rest, which ORT fuses into ``MatMulIntegerToFloat``/``QLinearMatMul``):
see :data:`WHY` and ``bench/bench_int8_cpu.py``. The few ``Gemm`` heads (one token per video)
stay fp32: ORT has no dynamic-quantised Gemm.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import onnx

from pig.calibration.int8 import weight_nodes

INT8_CPU_OPS = ("MatMul",)  # ORT has no dynamic Gemm kernel; the Gemms here are 1-token heads
PER_CHANNEL = True
WHY = ("full B/32 random weights, 2-core AVX-512 VNNI/AMX host, ORT CPU, one run against fp32 "
       "(bench/bench_int8_cpu.py): dynamic per-channel video 4.8x/2.7x (batch 1/8), text "
       "2.7x/2.3x; per-tensor the same kernels (differences within noise) and lower cosine; "
       "static Q/DQ with an fp32 rest 1.3-2.3x, lower cosine, needs a calibration set; demo "
       "model R@1 equal to fp32; see the README table")


def quantize_int8_cpu(model: onnx.ModelProto, per_channel: bool = PER_CHANNEL
                      ) -> onnx.ModelProto:
    """The ``int8-cpu`` version of the fp32 ``model`` (dynamic INT8 on constant-weight GEMMs;
    ``per_channel=False``: one weight scale per tensor, for comparisons)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    nodes = [n.name for n in weight_nodes(model.graph) if n.op_type in INT8_CPU_OPS]
    root = logging.getLogger()
    root.addFilter(_no_preprocess_advice)
    try:
        with tempfile.TemporaryDirectory(prefix="pig-int8-cpu-") as tmp:
            out = Path(tmp) / "int8-cpu.onnx"
            quantize_dynamic(model, out, op_types_to_quantize=list(INT8_CPU_OPS),
                             nodes_to_quantize=nodes, per_channel=per_channel,
                             weight_type=QuantType.QInt8,
                             extra_options={"MatMulConstBOnly": True})
            return onnx.load(str(out))
    finally:
        root.removeFilter(_no_preprocess_advice)


def _no_preprocess_advice(record: logging.LogRecord) -> bool:
    """Drop quantize_dynamic's advice to run its pre-processing (shape inference and fusions
    for static quantisation; the exported graphs already carry shapes)."""
    return "pre-processing before quantization" not in record.getMessage()


def settings() -> dict[str, Any]:
    """The quantisation settings recorded in the manifest."""
    return {"weights": "int8 symmetric, " + ("per output channel" if PER_CHANNEL else
                                             "per tensor"),
            "activations": "uint8, per tensor, range of each batch at run time (dynamic)",
            "quantized": "inputs of MatMul/Gemm with a constant weight",
            "not_quantized": "fp32 (LayerNorm, Softmax, attention products, token selector, "
                             "residual adds, patch convolution, final normalisation)",
            "runtime": "onnxruntime CPUExecutionProvider"}
