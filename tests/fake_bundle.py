"""Small synthetic bundles (real ONNX graphs + manifest) for backend tests, benches and
scripts/gpu_check.py, with numpy references of what the graphs compute.

video.onnx: pixel_values [B,T,3,S,S] -> per-frame patchify Conv (kernel = stride = P) ->
token MLP (MatMul, Relu, MatMul, residual) -> mean over frames and patches -> MatMul -> L2
= embeddings; like the real graph it has a second output (clip_embeddings, no MLP).
text.onnx:  input_ids [B,L] -> Gather -> mean over L -> MatMul -> L2.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from pig.engine.bundle import fingerprint, sha256_file
from pig.engine.recipe import PreprocessRecipe, TokenizerSpec

OPSET = 17
IR = 8  # the IR version of opset 17; older onnxruntime builds refuse newer IRs


@dataclass(frozen=True)
class FakeSizes:
    frames: int = 2
    size: int = 16
    patch: int = 8
    width: int = 16
    dim: int = 8
    vocab: int = 64
    length: int = 6


def _weights(s: FakeSizes, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32)

    return {
        "conv": w(s.width, 3, s.patch, s.patch) / s.patch,
        "mlp1": w(s.width, 4 * s.width),
        "mlp2": w(4 * s.width, s.width),
        "vproj": w(s.width, s.dim),
        "embed": w(s.vocab, s.width),
        "tproj": w(s.width, s.dim),
    }


def _l2(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def reference_video(px: np.ndarray, s: FakeSizes, seed: int = 0) -> np.ndarray:
    """What video.onnx computes, in float64 numpy."""
    w = {k: v.astype(np.float64) for k, v in _weights(s, seed).items()}
    b, t = px.shape[:2]
    g = s.size // s.patch
    x = px.astype(np.float64).reshape(b * t, 3, g, s.patch, g, s.patch)
    tok = np.einsum("ncipjq,ocpq->nijo", x, w["conv"]).reshape(b, t * g * g, s.width)
    tok = tok + np.maximum(tok @ w["mlp1"], 0) @ w["mlp2"]
    return _l2(tok.mean(axis=1) @ w["vproj"])


def reference_text(ids: np.ndarray, s: FakeSizes, seed: int = 0) -> np.ndarray:
    """What text.onnx computes, in float64 numpy."""
    w = {k: v.astype(np.float64) for k, v in _weights(s, seed).items()}
    return _l2(w["embed"][ids].mean(axis=1) @ w["tproj"])


def token_ids(spec: TokenizerSpec, n: int, seed: int = 0) -> np.ndarray:
    """``[n, L]`` int64 shaped like tokenizer output: BOS, 1..L-2 random tokens, EOS, pad."""
    rng = np.random.default_rng(seed)
    ids = np.full((n, spec.max_length), spec.pad_id, dtype=np.int64)
    ids[:, 0] = spec.bos_id
    for row, k in zip(ids, rng.integers(1, spec.max_length - 1, n), strict=True):
        row[1:1 + k] = rng.integers(0, min(spec.bos_id, spec.eos_id), k)
        row[1 + k] = spec.eos_id
    return ids


def _normalise(x: str, out: str) -> list[onnx.NodeProto]:
    return [
        helper.make_node("ReduceL2", [x], [f"{x}_norm"], axes=[1], keepdims=1),
        helper.make_node("Div", [x, f"{x}_norm"], [out]),
    ]


def video_model(s: FakeSizes, seed: int = 0) -> onnx.ModelProto:
    w = _weights(s, seed)
    g = s.size // s.patch
    inits = [
        numpy_helper.from_array(w["conv"], "conv_w"),
        numpy_helper.from_array(w["mlp1"], "mlp1"),
        numpy_helper.from_array(w["mlp2"], "mlp2"),
        numpy_helper.from_array(w["vproj"], "vproj"),
        numpy_helper.from_array(np.array([-1, 3, s.size, s.size], np.int64), "frames_shape"),
        numpy_helper.from_array(np.array([-1, s.frames * g * g, s.width], np.int64), "tok_shape"),
    ]
    nodes = [
        helper.make_node("Reshape", ["pixel_values", "frames_shape"], ["frames"]),
        helper.make_node("Conv", ["frames", "conv_w"], ["patches"],
                         kernel_shape=[s.patch, s.patch], strides=[s.patch, s.patch]),
        helper.make_node("Transpose", ["patches"], ["patches_t"], perm=[0, 2, 3, 1]),
        helper.make_node("Reshape", ["patches_t", "tok_shape"], ["tok"]),
        helper.make_node("MatMul", ["tok", "mlp1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h1r"]),
        helper.make_node("MatMul", ["h1r", "mlp2"], ["h2"]),
        helper.make_node("Add", ["tok", "h2"], ["tok2"]),
        helper.make_node("ReduceMean", ["tok2"], ["pooled"], axes=[1], keepdims=0),
        helper.make_node("MatMul", ["pooled", "vproj"], ["proj"]),
        *_normalise("proj", "embeddings"),
        # a second output, as the real video graph has (pruned by the TensorRT builder)
        helper.make_node("ReduceMean", ["tok"], ["pooled0"], axes=[1], keepdims=0),
        helper.make_node("MatMul", ["pooled0", "vproj"], ["proj0"]),
        *_normalise("proj0", "clip_embeddings"),
    ]
    graph = helper.make_graph(
        nodes, "fake_video",
        [helper.make_tensor_value_info(
            "pixel_values", TensorProto.FLOAT, ["B", s.frames, 3, s.size, s.size])],
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["B", s.dim]),
         helper.make_tensor_value_info("clip_embeddings", TensorProto.FLOAT, ["B", s.dim])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR)


def text_model(s: FakeSizes, seed: int = 0) -> onnx.ModelProto:
    w = _weights(s, seed)
    nodes = [
        helper.make_node("Gather", ["embed", "input_ids"], ["tok"]),
        helper.make_node("ReduceMean", ["tok"], ["pooled"], axes=[1], keepdims=0),
        helper.make_node("MatMul", ["pooled", "tproj"], ["proj"]),
        *_normalise("proj", "embeddings"),
    ]
    graph = helper.make_graph(
        nodes, "fake_text",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["B", s.length])],
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["B", s.dim])],
        [numpy_helper.from_array(w["embed"], "embed"),
         numpy_helper.from_array(w["tproj"], "tproj")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR)


def write_bundle(
    root: Path, s: FakeSizes = FakeSizes(), seed: int = 0, precisions: tuple[str, ...] = ("fp32",)
) -> Path:
    """A bundle directory with the manifest of docs/architecture.md.

    Extra precisions reuse the fp32 graph under another file name: enough to exercise
    selection and caching (their numerics are calibration's business).
    """
    root.mkdir(parents=True, exist_ok=True)
    recipe = PreprocessRecipe(num_frames=s.frames, size=s.size)
    spec = TokenizerSpec(max_length=s.length, vocab_size=s.vocab, bos_id=s.vocab - 2,
                         eos_id=s.vocab - 1, pad_id=s.vocab - 1)
    graphs: dict[str, dict[str, Any]] = {"video": {}, "text": {}}
    for branch, model in (("video", video_model(s, seed)), ("text", text_model(s, seed))):
        for p in precisions:
            name = f"{branch}.onnx" if p == "fp32" else f"{branch}.{p}.onnx"
            onnx.save(model, root / name)
            graphs[branch][p] = {"file": name, "sha256": sha256_file(root / name)}
    manifest: dict[str, Any] = {
        "format": "pig-bundle", "format_version": 1,
        "model": {"fake": True, **s.__dict__},
        "embedding_dim": s.dim,
        "preprocess": recipe.to_dict(),
        "tokenizer": spec.to_dict(),
        "graphs": graphs,
        "source_checkpoint": {"path": "synthetic", "sha256": ""},
        "opset": OPSET,
        "versions": {"pig-engine": "test", "onnx": onnx.__version__},
        "parity": {"video_max_abs": 0.0, "text_max_abs": 0.0},
    }
    manifest["fingerprint"] = fingerprint(manifest)
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return root


def rehash(root: Path, branch: str, precision: str = "fp32") -> None:
    """Make the manifest vouch for the graph file as it is now (new sha256 and fingerprint):
    what a forger, or a re-export of another model, would write."""
    path = root / "manifest.json"
    manifest = json.loads(path.read_text())
    entry = manifest["graphs"][branch][precision]
    entry["sha256"] = sha256_file(root / entry["file"])
    manifest["fingerprint"] = fingerprint(manifest)
    path.write_text(json.dumps(manifest, indent=2))


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another filesystem
        shutil.copy2(src, dst)


def with_fixed_text_length(src: Path, dst: Path) -> Path:
    """A copy of the exported bundle ``src`` at ``dst`` (made once) whose ``text.onnx`` takes
    ``[batch, L]``, L the model's text length: a bundle as exported before the dynamic text
    axis (every query padded to L). Other files are hard links; the manifest is rehashed."""
    if (dst / "manifest.json").is_file():
        return dst
    tmp = dst.with_name(f"{dst.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, copy_function=_link_or_copy, ignore=shutil.ignore_patterns("trt"))
    manifest = json.loads((src / "manifest.json").read_text())
    length = manifest["tokenizer"]["max_length"]
    model = onnx.load(str(src / "text.onnx"))
    dim = model.graph.input[0].type.tensor_type.shape.dim[1]
    dim.ClearField("dim_param")
    dim.dim_value = length
    for name in ("text.onnx", "manifest.json"):  # new files, not writes through the links
        (tmp / name).unlink()
    onnx.save(model, str(tmp / "text.onnx"))
    manifest["graphs"]["text"]["fp32"]["inputs"]["input_ids"]["shape"] = ["batch", length]
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
    rehash(tmp, "text")
    tmp.rename(dst)
    return dst
