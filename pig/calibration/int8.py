"""INT8 graphs with explicit Q/DQ, calibrated on real inputs in ONNX Runtime.

Placement is the one TensorRT fuses into INT8 GEMM/convolution kernels: on every ``MatMul``,
``Gemm`` and ``Conv`` with a constant weight (the linear layers and the patch embedding) the
weight becomes an int8 initializer behind a ``DequantizeLinear`` (symmetric, one scale per
output channel) and the activation input gets a ``QuantizeLinear -> DequantizeLinear`` pair
(symmetric, one scale per tensor from the calibration set), shared by the GEMMs that read the
same tensor and seen by no other consumer. Activation x activation products (attention scores,
P.V), ``LayerNormalization``, ``Softmax``, the residual adds, the token selector and the final
normalisation get no Q/DQ; biases stay float (TensorRT adds them in the GEMM epilogue). The rest
is then converted by :func:`pig.calibration.fp16.convert_fp16`, so what is not INT8 is the same
fp16 with fp32 islands as the fp16 graph (scales fp16, hence opset >= 19).

We insert the Q/DQ ourselves. ONNX Runtime's ``quantize_static`` rewires *every* consumer of a
quantized tensor to the dequantized copy (residual adds and LayerNorms read fake-quantized
values) and quantizes the GEMM outputs too: on the demo model its video cosine to fp32 was lower
(mean 0.99984, min 0.99925 against 0.99991, 0.99955 here; ``bench/bench_precision.py``).
NVIDIA ModelOpt 0.47 (``modelopt.onnx.quantization``, runs on CPU) by default also quantizes the
attention products, which scrambles the token selector (same top-k set on 27% of the clips
against 66% here, min cosine 0.9908); with ``disable_mha_qdq`` it is on par with this pass, but
it requires onnx 1.21 and onnxruntime-gpu, which cannot share an environment with the engine's
onnx/onnxruntime. Attention stays fp16, where TensorRT's fused attention kernels run it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from pig.calibration.fp16 import convert_fp16
from pig.calibration.options import CALIBRATION_METHODS
from pig.engine.backends.onnxruntime import cpu_session

QUANT_OPS = ("MatMul", "Gemm", "Conv")
QDQ_OPSET = 19  # QuantizeLinear/DequantizeLinear take float16 scales from opset 19 on
_SAMPLE = 1 << 20  # |x| values kept per tensor for the percentile method


def weight_axis(node: onnx.NodeProto, rank: int) -> int:
    """Output-channel axis of the weight (input 1) of a MatMul/Gemm/Conv."""
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    return 0 if node.op_type == "Conv" else rank - 1


def weight_nodes(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """The MatMul/Gemm/Conv nodes whose second input is a float initializer."""
    weights = {t.name for t in graph.initializer if t.data_type == TensorProto.FLOAT}
    return [n for n in graph.node if n.op_type in QUANT_OPS and n.input[1] in weights]


def calibrate(model: onnx.ModelProto, tensors: Iterable[str], input_name: str,
              data: np.ndarray, method: str = "max", percentile: float = 99.99,
              batch: int = 8) -> dict[str, float]:
    """``{tensor: amax}``: the clipping range of each activation over ``data``.

    ``max``: the largest |x| seen. ``percentile``: that percentile of |x| (over an evenly
    strided sample of at most 2**20 values per tensor and batch).
    """
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"calibration method must be one of {CALIBRATION_METHODS}")
    tensors = list(dict.fromkeys(tensors))
    probe = onnx.ModelProto.FromString(model.SerializeToString())
    inferred = onnx.shape_inference.infer_shapes(probe).graph
    known = {v.name: v for v in [*inferred.value_info, *inferred.input, *inferred.output]}
    outputs = {o.name for o in probe.graph.output}
    probe.graph.output.extend(known.get(t) or helper.make_tensor_value_info(t, TensorProto.FLOAT,
                                                                             None)
                              for t in tensors if t not in outputs)
    session = cpu_session(probe.SerializeToString())
    amax = dict.fromkeys(tensors, 0.0)
    samples: dict[str, list[np.ndarray]] = {t: [] for t in tensors}
    for i in range(0, len(data), batch):
        values = session.run(tensors, {input_name: np.ascontiguousarray(data[i:i + batch])})
        for name, v in zip(tensors, values, strict=True):
            a = np.abs(v.astype(np.float32, copy=False)).reshape(-1)
            amax[name] = max(amax[name], float(a.max()))
            if method == "percentile":
                samples[name].append(a[:: max(1, a.size // _SAMPLE)])
    if method == "percentile":
        amax = {t: float(np.percentile(np.concatenate(samples[t]), percentile)) for t in tensors}
    return amax


def _scale(amax: np.ndarray) -> np.ndarray:
    """Symmetric int8 scale: amax maps to 127 (a zero range gets scale 1)."""
    return np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)


def insert_qdq(model: onnx.ModelProto, amax: dict[str, float]) -> onnx.ModelProto:
    """Q/DQ on the weight and activation inputs of every constant-weight MatMul/Gemm/Conv."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    new_inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []
    act_dq: dict[str, str] = {}
    targets = {n.name for n in weight_nodes(g)}
    for node in g.node:
        if node.name in targets:
            x, w = node.input[0], node.input[1]
            if x not in act_dq:
                q, dq = f"{x}__q", f"{x}__dq"
                new_inits += [numpy_helper.from_array(_scale(np.array(amax[x], np.float32)),
                                                      f"{x}__scale"),
                              numpy_helper.from_array(np.array(0, np.int8), f"{x}__zero")]
                nodes += [helper.make_node("QuantizeLinear", [x, f"{x}__scale", f"{x}__zero"],
                                           [q], name=f"{x}__quantize"),
                          helper.make_node("DequantizeLinear", [q, f"{x}__scale", f"{x}__zero"],
                                           [dq], name=f"{x}__dequantize")]
                act_dq[x] = dq
            weight = numpy_helper.to_array(inits[w])
            axis = weight_axis(node, weight.ndim)
            reduce = tuple(a for a in range(weight.ndim) if a != axis)
            scale = _scale(np.abs(weight).max(axis=reduce))
            shape = [-1 if a == axis else 1 for a in range(weight.ndim)]
            wq = np.clip(np.rint(weight / scale.reshape(shape)), -127, 127).astype(np.int8)
            base = f"{node.name}__w"
            new_inits += [numpy_helper.from_array(wq, f"{base}_int8"),
                          numpy_helper.from_array(scale, f"{base}_scale"),
                          numpy_helper.from_array(np.zeros_like(scale, np.int8), f"{base}_zero")]
            nodes.append(helper.make_node(
                "DequantizeLinear", [f"{base}_int8", f"{base}_scale", f"{base}_zero"],
                [f"{base}_dq"], name=f"{base}_dequantize", axis=axis))
            node.input[0], node.input[1] = act_dq[x], f"{base}_dq"
        nodes.append(node)
    del g.node[:]
    g.node.extend(nodes)
    g.initializer.extend(new_inits)
    used = {i for n in g.node for i in n.input}
    kept = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(kept)
    return model


def settings(method: str, percentile: float) -> dict[str, Any]:
    """The quantization settings recorded in the manifest."""
    return {"weights": "int8 symmetric, per output channel",
            "activations": f"int8 symmetric, per tensor, calibration '{method}'"
                           + (f" ({percentile} percentile of |x|)" if method == "percentile"
                              else " (max |x|)"),
            "quantized": "inputs of MatMul/Gemm/Conv with a constant weight", "bias": "float",
            "not_quantized": "fp16 with fp32 islands", "opset": QDQ_OPSET}


def quantize_int8(model: onnx.ModelProto, input_name: str, data: np.ndarray,
                  method: str = "max", percentile: float = 99.99,
                  fp16_rest: bool = True) -> onnx.ModelProto:
    """INT8 Q/DQ version of the fp32 ``model`` calibrated on ``data`` (fed as ``input_name``).

    ``fp16_rest=False`` keeps the part that is not INT8 in fp32 (for comparisons).
    """
    activations = [n.input[0] for n in weight_nodes(model.graph)]
    amax = calibrate(model, activations, input_name, data, method, percentile)
    quantized = insert_qdq(model, amax)
    for imp in quantized.opset_import:  # nothing these graphs use changes meaning 18 -> 19
        if imp.domain in ("", "ai.onnx") and imp.version < QDQ_OPSET:
            imp.version = QDQ_OPSET
    return convert_fp16(quantized) if fp16_rest else quantized
