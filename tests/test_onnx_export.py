"""`pig-export --onnx`: bundle contents, ONNX Runtime against the official reference outputs,
TensorRT-parsable graphs, and the Bundle API (torch-free runtime side)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import reference_outputs
from onnx import numpy_helper

from pig.engine.bundle import MANIFEST, Bundle, sha256_file
from pig.errors import BundleError, PigError
from pig.export import onnx_export
from pig.export.checkpoint import LoadedCheckpoint
from pig.export.model import PigModel

# Operators that TensorRT's ONNX parser supports ("Y" rows) among those a transformer export
# can produce. Source: onnx/onnx-tensorrt, docs/operators.md (Operator Support Matrix; commit
# 6d0ab7be, TensorRT 8.5, opset 17), plus LayerNormalization, which that table lists as "N"
# for 8.5 and which the parser supports natively from TensorRT 8.6 on (same file in later
# releases; TensorRT 10 is what pig-engine targets).
TRT_SUPPORTED_OPS = {
    "Abs", "Add", "And", "ArgMax", "Cast", "Clip", "Concat", "Constant", "ConstantOfShape",
    "Conv", "CumSum", "Div", "Einsum", "Equal", "Erf", "Exp", "Expand", "Flatten", "Gather",
    "GatherElements", "GatherND", "Gemm", "Greater", "GreaterOrEqual", "Identity",
    "LayerNormalization", "Less", "LessOrEqual", "Log", "MatMul", "Max", "Min", "Mul", "Neg",
    "Not", "Or", "Pow", "Range", "Reciprocal", "ReduceL2", "ReduceMax", "ReduceMean",
    "ReduceSum", "Relu", "Reshape", "Shape", "Sigmoid", "Slice", "Softmax", "Split", "Sqrt",
    "Squeeze", "Sub", "Tanh", "Tile", "TopK", "Transpose", "Trilu", "Unsqueeze", "Where",
}
# inputs the parser requires to be constants (same table's Restrictions column)
CONSTANT_INPUTS = {"TopK": 1, "CumSum": 1}


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _assert_rel(got: np.ndarray, ref: np.ndarray, name: str) -> None:
    err, rel = onnx_export.max_rel_diff(got, ref)
    assert rel <= onnx_export.REL_TOL, f"{name}: max abs diff {err:.3g} ({rel:.3g} of max)"


def check_bundle_against_reference(bundle_dir: Path, inputs: tuple[np.ndarray, np.ndarray],
                                   ref: dict[str, np.ndarray], batch: int) -> None:
    bundle = Bundle.load(bundle_dir)
    pixels, ids = inputs
    video = _session(bundle.graph_path("video", "fp32"))
    emb, clip, topk = video.run(None, {"pixel_values": pixels[:batch]})
    _assert_rel(emb, ref["video_embed_norm"][:batch], "video embeddings")
    _assert_rel(clip, ref["clip_video_embed_norm"][:batch], "clip embeddings")
    np.testing.assert_array_equal(topk, ref["topk_token_indices"][:batch])
    (text,) = _session(bundle.graph_path("text", "fp32")).run(None, {"input_ids": ids[:batch]})
    _assert_rel(text, ref["text_embed_norm"][:batch], "text embeddings")
    _assert_rel(text @ emb.T, ref["sim_text_video"][:batch, :batch], "similarity")


def test_export_prints_stages_config_and_summary(small_bundle: Path) -> None:
    log = (small_bundle.parent / "pig-export.log").read_text()
    for line in ("[stage] load checkpoint", "[stage] export video.onnx", "[stage] export text.onnx",
                 "[stage] parity: ONNX Runtime vs PyTorch", "resolved config",
                 "vision   : width 768, 2 layers, 12 heads", "video.onnx", "text.onnx",
                 "top-k indices identical"):
        assert line in log
    assert sorted(p.name for p in small_bundle.iterdir()) == [MANIFEST, "text.onnx", "video.onnx"]


def test_manifest_records_model_graphs_and_provenance(small_bundle: Path,
                                                      small_checkpoint: Path) -> None:
    bundle = Bundle.load(small_bundle)
    bundle.verify()
    m = bundle.manifest
    assert m["opset"] >= 17 and bundle.embedding_dim == 512
    assert m["model"]["vision_layers"] == 2 and m["model"]["top_k"] == 16
    assert m["source_checkpoint"]["sha256"] == sha256_file(small_checkpoint)
    assert set(m["versions"]) == {"pig-engine", "torch", "onnx", "onnxruntime"}
    assert bundle.recipe.num_frames == 12 and bundle.recipe.size == 224
    assert bundle.tokenizer_spec.max_length == 50 and bundle.tokenizer_spec.pad_id == 49407
    assert max(v for k, v in m["parity"].items() if k.endswith("max_abs")) < 1e-5
    video, text = m["graphs"]["video"]["fp32"], m["graphs"]["text"]["fp32"]
    assert video["inputs"] == {"pixel_values": {"dtype": "float32",
                                                "shape": ["batch", 12, 3, 224, 224]}}
    assert next(iter(video["outputs"])) == "embeddings"
    assert video["outputs"]["embeddings"] == {"dtype": "float32", "shape": ["batch", 512]}
    assert text["inputs"] == {"input_ids": {"dtype": "int64", "shape": ["batch", "seq"]}}
    assert text["outputs"] == {"embeddings": {"dtype": "float32", "shape": ["batch", 512]}}
    for spec in [*video["inputs"].values(), *video["outputs"].values(),
                 *text["outputs"].values()]:  # dynamic batch only (and the text length)
        assert all(isinstance(d, int) for d in spec["shape"][1:])


@pytest.mark.parametrize("batch", [1, 3])
def test_onnx_runtime_matches_official_reference(small_bundle: Path, batch: int,
                                                 spec_inputs: tuple[np.ndarray, np.ndarray]
                                                 ) -> None:
    check_bundle_against_reference(small_bundle, spec_inputs, reference_outputs("small"), batch)


@pytest.mark.parametrize("branch", ["video", "text"])
def test_graph_is_tensorrt_parsable(small_bundle: Path, branch: str) -> None:
    model = onnx.load(str(small_bundle / f"{branch}.onnx"))
    g = model.graph
    assert not model.functions and {o.domain for o in model.opset_import} == {""}
    ops = {n.op_type for n in g.node}
    assert ops <= TRT_SUPPORTED_OPS, f"not TensorRT-parsable: {sorted(ops - TRT_SUPPORTED_OPS)}"
    constants = {i.name for i in g.initializer} | {
        o for n in g.node if n.op_type == "Constant" for o in n.output}
    for n in g.node:
        if n.op_type in CONSTANT_INPUTS:
            assert n.input[CONSTANT_INPUTS[n.op_type]] in constants, f"{n.op_type} input"
    tensors = [numpy_helper.to_array(t) for t in g.initializer] + [
        numpy_helper.to_array(a.t) for n in g.node if n.op_type == "Constant"
        for a in n.attribute if a.name == "value"]
    assert all(np.isfinite(t).all() for t in tensors if t.dtype.kind == "f"), "non-finite const"


def test_bundle_precision_entries_and_verify(small_bundle: Path, tmp_path: Path) -> None:
    root = tmp_path / "bundle"
    root.mkdir()
    shutil.copy(small_bundle / MANIFEST, root)
    for name in ("video.onnx", "text.onnx"):
        os.link(small_bundle / name, root / name)  # graphs must lie inside the bundle
    (root / "video.fp16.onnx").write_bytes(b"stand-in graph bytes")
    bundle = Bundle.load(root)
    bundle.set_graph("video", "fp16", "video.fp16.onnx", calibration={"frames": 0})
    again = Bundle.load(root)
    assert again.precisions("video") == ["fp32", "fp16"] and again.precisions("text") == ["fp32"]
    assert again.fingerprint == bundle.fingerprint
    assert again.graph_sha256("video", "fp16") == sha256_file(root / "video.fp16.onnx")
    assert again.graph_entry("video", "fp16")["calibration"] == {"frames": 0}
    again.verify()
    (root / "video.fp16.onnx").write_bytes(b"tampered")
    with pytest.raises(BundleError, match=r"video\.fp16\.onnx: sha256 differs"):
        again.verify()
    with pytest.raises(BundleError, match="no int8 text graph \\(has: fp32\\)"):
        again.graph_path("text", "int8")
    with pytest.raises(BundleError, match="written by pig-export only"):
        again.set_graph("video", "fp32", "video.fp16.onnx")


def test_bundle_module_needs_no_torch(small_bundle: Path) -> None:
    code = ("import sys; sys.modules['torch'] = None; from pig.engine.bundle import Bundle; "
            f"b = Bundle.load({str(small_bundle)!r}); b.verify(); print(b.embedding_dim)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).parent.parent, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "512"


def test_bundle_load_errors(small_bundle: Path, tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="not a bundle directory"):
        Bundle.load(tmp_path)
    manifest: dict[str, Any] = json.loads((small_bundle / MANIFEST).read_text())
    for change, match in ((("format_version", 9), "format_version 9"),
                          (("preprocess", {**manifest["preprocess"], "size": 112}),
                           "fingerprint does not match")):
        (tmp_path / MANIFEST).write_text(json.dumps(dict(manifest, **dict([change]))))
        with pytest.raises(BundleError, match=match):
            Bundle.load(tmp_path)
    (tmp_path / MANIFEST).write_text("{not json")
    with pytest.raises(BundleError, match="unreadable manifest"):
        Bundle.load(tmp_path)


def test_export_fails_beyond_tolerance_and_leaves_nothing(
        tiny_model: PigModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt = LoadedCheckpoint(tiny_model, tiny_model.cfg, tmp_path / "tiny.pt", "0" * 64)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file").touch()
    with pytest.raises(PigError, match="not an empty directory"):
        onnx_export.export_bundle(ckpt, tmp_path / "busy")
    monkeypatch.setattr(onnx_export, "REL_TOL", -1.0)
    with pytest.raises(onnx_export.ExportError, match="ONNX Runtime differs from PyTorch"):
        onnx_export.export_bundle(ckpt, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy"]


@pytest.mark.slow
@pytest.mark.parametrize("batch", [1, 3])
def test_full_onnx_matches_official_reference(
        batch: int, full_bundle: Path, spec_inputs: tuple[np.ndarray, np.ndarray]) -> None:
    check_bundle_against_reference(full_bundle, spec_inputs, reference_outputs("full"), batch)
