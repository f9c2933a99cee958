"""A video graph that takes uint8 frames: ``pixel_values`` uint8 ``[B, T, 3, S, S]``, the
normalisation inside.

What "uint8 input" means here, precisely: the frames after the recipe's resize (bicubic on
the 0..255 values, as the official float pipeline does before ``/255``), rounded half to
even and clamped to 0..255, channel-first. ``pig.engine.media.preprocess.preprocess_frames(
..., dtype=np.uint8)`` writes exactly that in one pass. Versus the official float
preprocessing the input then differs by the rounding (at most 0.5 level, i.e.
``0.5 / 255 / std`` <= 0.0076 in normalised units) and by the clamping of bicubic overshoot
at sharp edges; :func:`u8_error` measures both on given frames and tests/test_uint8_input.py
bounds the embedding difference. The payoff: a quarter of the bytes across PCIe and into
pinned memory, and no float conversion on the CPU.

The normalisation ``(x / 255 - mean_c) / std_c`` is folded into the patch-embedding
convolution where that is exact (a Conv with no padding and one group, reached from the input
through reshapes only, weights stored as an initializer): ``W'[o, c] = W[o, c] / (255 std_c)``
and bias ``b'[o] = b[o] - sum_{c,kh,kw} W[o, c, kh, kw] mean_c / std_c``, computed in float64.
Elsewhere (e.g. Q/DQ weights) a Cast, Mul and Add are inserted after the input instead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from pig.engine.graphs import INPUT_NAMES
from pig.engine.recipe import PreprocessRecipe

INPUT = INPUT_NAMES["video"]
_SHAPE_ONLY = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"}


def _consumers(graph: onnx.GraphProto, name: str) -> list[onnx.NodeProto]:
    return [n for n in graph.node if name in n.input]


def _foldable_conv(graph: onnx.GraphProto) -> tuple[onnx.NodeProto, list[str]] | None:
    """The Conv the input reaches through reshapes only (other users: Shape nodes), and the
    tensors from the input to the one it reads, when folding the normalisation into it is
    exact; else None."""
    inits = {i.name for i in graph.initializer}
    name = INPUT
    chain = [name]
    for _ in range(8):
        users = [n for n in _consumers(graph, name) if n.op_type != "Shape"]
        if len(users) != 1:
            return None
        node = users[0]
        if node.op_type in _SHAPE_ONLY and node.input[0] == name:
            name = node.output[0]
            chain.append(name)
            continue
        if node.op_type != "Conv" or node.input[0] != name or node.input[1] not in inits:
            return None
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("group", 1) != 1 or any(attrs.get("pads", [0])) or \
                attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID"):
            return None
        return node, chain
    return None


def _set_input_uint8(graph: onnx.GraphProto) -> None:
    (inp,) = [i for i in graph.input if i.name == INPUT]
    inp.type.tensor_type.elem_type = TensorProto.UINT8


def _fold(graph: onnx.GraphProto, conv: onnx.NodeProto, chain: list[str],
          mean: np.ndarray, std: np.ndarray) -> None:
    reads = chain[-1]
    # the reshapes now carry uint8: drop their recorded (float) types
    kept = [v for v in graph.value_info if v.name not in chain]
    del graph.value_info[:]
    graph.value_info.extend(kept)
    inits = {i.name: i for i in graph.initializer}
    w_init = inits[conv.input[1]]
    w = numpy_helper.to_array(w_init).astype(np.float64)  # [O, 3, kh, kw]
    dtype = numpy_helper.to_array(w_init).dtype
    bias = np.zeros(w.shape[0])
    if len(conv.input) > 2 and conv.input[2]:
        bias = numpy_helper.to_array(inits[conv.input[2]]).astype(np.float64)
    folded_w = w / (255.0 * std)[None, :, None, None]
    folded_b = bias - np.einsum("ochw,c->o", w, mean / std)
    w_name, b_name, cast_out = f"{conv.name}_u8_weight", f"{conv.name}_u8_bias", f"{reads}_float"
    graph.initializer.extend([numpy_helper.from_array(folded_w.astype(dtype), w_name),
                              numpy_helper.from_array(folded_b.astype(dtype), b_name)])
    elem = helper.np_dtype_to_tensor_dtype(dtype)
    cast = helper.make_node("Cast", [reads], [cast_out], name=f"{conv.name}_u8_cast", to=elem)
    conv.input[:] = [cast_out, w_name, b_name]
    index = list(graph.node).index(conv)
    graph.node.insert(index, cast)


def _explicit(graph: onnx.GraphProto, mean: np.ndarray, std: np.ndarray) -> None:
    """Cast, then ``x * (1 / (255 std)) + (-mean / std)``, in front of every user."""
    names = ("u8_cast", "u8_scaled", "u8_normalised")
    scale = (1.0 / (255.0 * std)).astype(np.float32).reshape(1, 1, 3, 1, 1)
    shift = (-mean / std).astype(np.float32).reshape(1, 1, 3, 1, 1)
    for node in graph.node:
        node.input[:] = [names[2] if i == INPUT else i for i in node.input]
    graph.initializer.extend([numpy_helper.from_array(scale, "u8_scale"),
                              numpy_helper.from_array(shift, "u8_shift")])
    nodes = [helper.make_node("Cast", [INPUT], [names[0]], name=names[0], to=TensorProto.FLOAT),
             helper.make_node("Mul", [names[0], "u8_scale"], [names[1]], name=names[1]),
             helper.make_node("Add", [names[1], "u8_shift"], [names[2]], name=names[2])]
    for k, n in enumerate(nodes):
        graph.node.insert(k, n)


def uint8_video_graph(src: str | Path, dst: str | Path, recipe: PreprocessRecipe) -> str:
    """Write ``src`` (a video graph with float ``pixel_values``) as a graph with uint8
    ``pixel_values`` to ``dst``; returns how the normalisation went in: "folded" or
    "explicit"."""
    model = onnx.load(str(src))
    graph = model.graph
    mean = np.asarray(recipe.mean, np.float64)
    std = np.asarray(recipe.std, np.float64)
    found = _foldable_conv(graph)
    if found is not None:
        _fold(graph, found[0], found[1], mean, std)
        how = "folded"
    else:
        _explicit(graph, mean, std)
        how = "explicit"
    _set_input_uint8(graph)
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    return how


def u8_error(frames: np.ndarray, recipe: PreprocessRecipe) -> dict[str, float]:
    """How far the uint8 input is from the official float preprocessing on ``frames``
    (uint8 ``[N, H, W, 3]``), in normalised units: max and mean |difference|, and the
    fraction of values off by more than the rounding (clamped bicubic overshoot)."""
    from pig.engine.media.preprocess import preprocess_frames

    official = preprocess_frames(frames, recipe)
    u8 = preprocess_frames(frames, recipe, dtype=np.uint8).astype(np.float64)
    mean = np.asarray(recipe.mean).reshape(1, 3, 1, 1)
    std = np.asarray(recipe.std).reshape(1, 3, 1, 1)
    diff = np.abs((u8 / 255.0 - mean) / std - official)
    rounding = 0.5 / 255.0 / std + 1e-5
    return {"max": float(diff.max()), "mean": float(diff.mean()),
            "beyond_rounding": float((diff > rounding).mean())}
