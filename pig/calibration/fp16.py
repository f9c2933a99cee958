"""fp16 graphs with fp32 islands, for TensorRT's strongly typed networks.

Every float tensor is fp16 except in the islands, where precision decides the result:
``LayerNormalization`` and ``Softmax`` (every instance), the token selector (every node on a
path from a ``Softmax`` to a ``TopK``: head reduction, masking, top-k) and the final
L2 normalisation (``ReduceL2`` and what follows it up to a graph output). Graph inputs and
outputs stay float32, so the runtime feeds and reads the same dtypes at every precision.

The pass is our own rather than ``onnxconverter-common``'s ``convert_float_to_float16``:
with a block list that converter casts a blocked node's output to fp16 and back to fp32 before
the next blocked node when the tensor has more than one consumer (its cast-pair removal only
handles single consumers), which rounds the selector scores to fp16 exactly where they must
stay fp32 (the last layer's attention probabilities feed both the selector and the P.V
product). Here each node gets one precision and one ``Cast`` is inserted per tensor and
precision boundary, shared by all consumers.

Measured, not added: keeping the last layer's attention-score ``MatMul`` (Q.K^T feeding the
selector's softmax) in fp32 too changed no selected token on the demo held-out clips; the rare
fp16 top-k differences there are near-ties decided upstream of the selector.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16
ALWAYS_FP32_OPS = frozenset({"LayerNormalization", "Softmax"})
_TYPE_AGNOSTIC = frozenset({"Shape", "Size"})  # read metadata only: never cast their inputs
_FP16_MAX = float(np.finfo(np.float16).max)


def _consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    out: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            out[name].append(node)
    return out


def _producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {o: node for node in graph.node for o in node.output}


def _ancestors(start: Iterable[str], producers: dict[str, onnx.NodeProto],
               stop_ops: frozenset[str]) -> list[onnx.NodeProto]:
    """Nodes reachable backwards from tensors ``start``; a node of ``stop_ops`` is included
    but not walked through."""
    seen: dict[str, onnx.NodeProto] = {}
    todo = list(start)
    while todo:
        node = producers.get(todo.pop())
        if node is None or node.name in seen:
            continue
        seen[node.name] = node
        if node.op_type not in stop_ops:
            todo.extend(node.input)
    return list(seen.values())


def _descendants(start: Iterable[str], consumers: dict[str, list[onnx.NodeProto]]
                 ) -> dict[str, onnx.NodeProto]:
    seen: dict[str, onnx.NodeProto] = {}
    todo = list(start)
    while todo:
        for node in consumers.get(todo.pop(), []):
            if node.name not in seen:
                seen[node.name] = node
                todo.extend(node.output)
    return seen


def fp32_islands(graph: onnx.GraphProto) -> dict[str, str]:
    """``{node name: reason}`` of the nodes kept in fp32."""
    producers, consumers = _producers(graph), _consumers(graph)
    islands = {n.name: n.op_type for n in graph.node if n.op_type in ALWAYS_FP32_OPS}
    for topk in (n for n in graph.node if n.op_type == "TopK"):
        path = _ancestors([topk.input[0]], producers, frozenset({"Softmax"}))
        softmaxes = [n for n in path if n.op_type == "Softmax"]
        islands[topk.name] = "token selector"
        downstream = _descendants([o for s in softmaxes for o in s.output], consumers)
        for n in path:
            if n.op_type == "Softmax" or n.name in downstream:
                islands.setdefault(n.name, "token selector")
    feeds_output = {n.name for n in _ancestors([o.name for o in graph.output], producers,
                                               frozenset())}
    for norm in (n for n in graph.node if n.op_type == "ReduceL2"):
        islands.setdefault(norm.name, "L2 normalisation")
        for name in _descendants(norm.output, consumers).keys() & feeds_output:
            islands.setdefault(name, "L2 normalisation")
    return islands


def _float_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every float tensor (inputs, value_info, outputs, initializers)."""
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.input, *g.value_info, *g.output]}
    types.update({t.name: t.data_type for t in g.initializer})
    return {k: t for k, t in types.items() if t == FLOAT}


def _constants_to_initializers(graph: onnx.GraphProto) -> None:
    keep = []
    for node in graph.node:
        value = [a for a in node.attribute if a.name == "value"]
        if node.op_type == "Constant" and value:
            t = numpy_helper.to_array(value[0].t)
            graph.initializer.append(numpy_helper.from_array(t, node.output[0]))
        else:
            keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)


def _to_half(tensor: onnx.TensorProto, name: str) -> onnx.TensorProto:
    arr = numpy_helper.to_array(tensor)
    return numpy_helper.from_array(
        np.clip(arr, -_FP16_MAX, _FP16_MAX).astype(np.float16), name)


def convert_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """fp16 copy of ``model`` with the :func:`fp32_islands` kept fp32 and float32 IO."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = model.graph
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
           for n in g.node for a in n.attribute):
        raise ValueError("graphs with subgraphs (If/Loop/Scan) are not supported")
    for i, node in enumerate(g.node):
        if not node.name:
            node.name = f"_node_{i}"
    _constants_to_initializers(g)
    floats = _float_types(model)
    islands = fp32_islands(g)
    consumers = _consumers(g)

    # initializers: converted in place, or duplicated when fp32 and fp16 nodes share one
    inits = {t.name: t for t in g.initializer}
    half_name: dict[str, str] = {}
    for name, t in inits.items():
        if t.data_type != FLOAT:
            continue
        users = [n for n in consumers.get(name, []) if n.op_type not in _TYPE_AGNOSTIC]
        fp16_users = [n for n in users if n.name not in islands]
        if not fp16_users:
            continue
        if len(fp16_users) == len(users):
            t.CopyFrom(_to_half(t, name))
            half_name[name] = name
        else:
            half_name[name] = f"{name}__fp16"
            g.initializer.append(_to_half(t, half_name[name]))

    # where each float activation lives: graph inputs fp32, node outputs per node precision
    precision = {i.name: FLOAT for i in g.input}
    for node in g.node:
        for o in node.output:
            precision[o] = FLOAT if node.name in islands else HALF
    casts: dict[tuple[str, int], str] = {}
    new_nodes: list[onnx.NodeProto] = []

    def cast(name: str, to: int) -> str:
        key = (name, to)
        if key not in casts:
            casts[key] = f"{name}__to_{'fp32' if to == FLOAT else 'fp16'}"
            new_nodes.append(helper.make_node("Cast", [name], [casts[key]], to=to,
                                              name=f"{casts[key]}_cast"))
        return casts[key]

    for node in g.node:
        want = FLOAT if node.name in islands else HALF
        if node.op_type not in _TYPE_AGNOSTIC:
            for i, name in enumerate(node.input):
                if name in half_name and want == HALF:
                    node.input[i] = half_name[name]
                elif name in floats and name not in inits and precision[name] != want:
                    node.input[i] = cast(name, want)
        if want == HALF:
            for a in node.attribute:
                if node.op_type == "Cast" and a.name == "to" and a.i == FLOAT:
                    a.i = HALF
                elif a.type == onnx.AttributeProto.TENSOR and a.t.data_type == FLOAT:
                    a.t.CopyFrom(_to_half(a.t, a.t.name))
        new_nodes.append(node)

    # graph outputs stay float32: an fp16 producer writes "<name>__fp16", a Cast the output
    out_names = {o.name for o in g.output if o.type.tensor_type.elem_type == FLOAT}
    renamed = {o: f"{o}__fp16" for o in out_names if precision[o] == HALF}
    for node in new_nodes:
        node.input[:] = [renamed.get(i, i) for i in node.input]
        node.output[:] = [renamed.get(o, o) for o in node.output]
    new_nodes += [helper.make_node("Cast", [half], [o], to=FLOAT, name=f"{o}__to_fp32_cast")
                  for o, half in renamed.items()]
    del g.node[:]
    g.node.extend(new_nodes)  # casts sit right before their consumers: still topological
    del g.value_info[:]
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)
