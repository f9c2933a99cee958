"""calibration/: fp16 graphs with fp32 islands, INT8 Q/DQ graphs, manifest provenance and the
accuracy report, on the small official-reference random-weight bundle (ONNX Runtime, CPU).

Tolerances. fp16: cosine >= 0.999 against fp32 and against the official reference outputs (the
issue's target; measured >= 0.99999) and identical top-k on the reference inputs (measured:
identical). INT8: calibrated on 4 demo training clips and evaluated on 6 demo held-out clips, both
through the engine's decode + preprocess path; measured video cosine mean 0.9991-0.9993 (min
>= 0.997) and text 0.9988-0.9991 (min >= 0.998) across the two calibration methods, so the test
asks mean >= 0.997 and min >= 0.99: a few times the measured error, while a misplaced Q/DQ (on the
residual stream, a LayerNorm or the selector) or a per-tensor weight scale costs more than that.
int8-cpu (dynamic, no calibration set): measured video cosine mean 0.99969 (min 0.99950), text
0.99907 (0.99892); asked mean >= 0.998, min >= 0.995. INT8 top-k agreement is reported, not
asserted here (the demo-model test asserts it for int8-cpu): with random weights the selector's
scores are near ties (the reference's 16th/17th score margin is ~1e-3 of the score), below INT8
resolution.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from conftest import reference_outputs
from onnx import numpy_helper
from test_onnx_export import CONSTANT_INPUTS, TRT_SUPPORTED_OPS

from pig.calibration.calibrate import calibrate_bundle
from pig.calibration.data import CaptionedFolder
from pig.calibration.fp16 import fp32_islands
from pig.calibration.int8 import weight_axis, weight_nodes
from pig.calibration.int8_cpu import INT8_CPU_OPS
from pig.calibration.report import REPORT, cosine, format_report, run_graph
from pig.demo import synth
from pig.demo.dataset import DemoClips
from pig.engine.bundle import MANIFEST, Bundle, sha256_file
from pig.errors import PigError

# QuantizeLinear / DequantizeLinear: "Y" in the same onnx-tensorrt support matrix as
# TRT_SUPPORTED_OPS (test_onnx_export.py), which lists the ops an fp32 export produces
TRT_OPS = TRT_SUPPORTED_OPS | {"QuantizeLinear", "DequantizeLinear"}
FLOAT, HALF = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16


@pytest.fixture(scope="module")
def calib_inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """4 demo training clips (+ one undecodable file) and their video,caption CSV."""
    root = tmp_path_factory.mktemp("calib")
    videos, captions = root / "videos", root / "captions.csv"
    settings = synth.RenderSettings()
    lines = ["video,caption"]
    for i in range(4):
        clip, frames = synth.make_clip(0, "train", i)
        synth.write_mp4(videos / f"clip{i}.mp4", frames, settings.fps, settings.crf)
        lines.append(f'clip{i}.mp4,"{clip.caption}"')
    (videos / "broken.mp4").write_bytes(b"not a video")
    captions.write_text("\n".join([*lines, "", "broken.mp4,a red circle moves left"]) + "\n")
    return videos, captions


@pytest.fixture(scope="module")
def calibrated(small_bundle: Path, calib_inputs: tuple[Path, Path],
               tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], str]:
    """A copy of the small bundle after calibrate_bundle; its report and console output."""
    root = tmp_path_factory.mktemp("calibrated") / "bundle"
    root.mkdir()
    shutil.copy(small_bundle / MANIFEST, root)
    for name in ("video.onnx", "text.onnx"):
        os.link(small_bundle / name, root / name)  # graphs must lie inside the bundle
    log: list[str] = []
    videos, captions = calib_inputs
    report = calibrate_bundle(root, CaptionedFolder(videos, captions), DemoClips("heldout", 6),
                              max_videos=8, log=log.append)
    return root, report, "\n".join(log)


def _types(model: onnx.ModelProto) -> dict[str, int]:
    g = onnx.shape_inference.infer_shapes(model).graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.input, *g.value_info, *g.output]}
    types.update({t.name: t.data_type for t in g.initializer})
    return types


def _load(root: Path, branch: str, precision: str) -> onnx.ModelProto:
    return onnx.load(str(Bundle.load(root).graph_path(branch, precision)))


@pytest.mark.parametrize("precision", ["fp16", "int8"])
@pytest.mark.parametrize("branch", ["video", "text"])
def test_graphs_pass_checker_and_only_use_tensorrt_ops(calibrated: tuple[Path, Any, str],
                                                       branch: str, precision: str) -> None:
    model = _load(calibrated[0], branch, precision)
    onnx.checker.check_model(model, full_check=True)
    g = model.graph
    ops = {n.op_type for n in g.node}
    assert ops <= TRT_OPS, f"not TensorRT-parsable: {sorted(ops - TRT_OPS)}"
    inits = {t.name for t in g.initializer}
    for n in g.node:
        if n.op_type in CONSTANT_INPUTS:
            assert n.input[CONSTANT_INPUTS[n.op_type]] in inits, f"{n.op_type} input"
    assert {i.type.tensor_type.elem_type for i in g.input} <= {FLOAT, onnx.TensorProto.INT64}
    types = _types(model)
    assert types[g.output[0].name] == FLOAT  # embeddings stay float32 at every precision
    floats = Counter(types.get(o) for n in g.node if n.op_type == "MatMul" for o in n.output)
    assert floats[HALF] > floats[FLOAT], "most of the graph should compute in fp16"


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_fp32_islands_are_fp32(calibrated: tuple[Path, Any, str], small_bundle: Path,
                               precision: str) -> None:
    fp32 = onnx.load(str(small_bundle / "video.onnx"))
    islands = fp32_islands(fp32.graph)
    reasons = Counter(islands.values())
    assert reasons["LayerNormalization"] > 0 and reasons["Softmax"] > 0
    assert reasons["token selector"] >= 2 and reasons["L2 normalisation"] >= 2
    model = _load(calibrated[0], "video", precision)
    types = _types(model)
    checked = Counter()
    for n in model.graph.node:
        if n.name in islands:
            tensors = [t for t in [*n.input, *n.output] if types.get(t) in (FLOAT, HALF)]
            assert all(types[t] == FLOAT for t in tensors), f"{n.name} ({n.op_type}) not fp32"
            checked[n.op_type] += 1
    for op in ("LayerNormalization", "Softmax", "TopK", "ReduceL2", "ReduceMax"):
        assert checked[op] > 0, op


def test_fp16_matches_fp32_and_official_reference(calibrated: tuple[Path, Any, str],
                                                  spec_inputs: tuple[np.ndarray, np.ndarray]
                                                  ) -> None:
    bundle = Bundle.load(calibrated[0])
    pixels, ids = spec_inputs
    ref = reference_outputs("small")
    v32, v16 = (run_graph(bundle.graph_path("video", p), "pixel_values", pixels)
                for p in ("fp32", "fp16"))
    t32, t16 = (run_graph(bundle.graph_path("text", p), "input_ids", ids)["embeddings"]
                for p in ("fp32", "fp16"))
    assert v16["embeddings"].dtype == np.float32 and t16.dtype == np.float32
    for got, want in ((v16["embeddings"], v32["embeddings"]),
                      (v16["embeddings"], ref["video_embed_norm"]),
                      (v16["clip_embeddings"], ref["clip_video_embed_norm"]), (t16, t32),
                      (t16, ref["text_embed_norm"])):
        assert cosine(got, want).min() >= 0.999
    np.testing.assert_array_equal(v16["topk_indices"], ref["topk_token_indices"])


def test_int8_qdq_placement(calibrated: tuple[Path, Any, str]) -> None:
    for branch in ("video", "text"):
        model = _load(calibrated[0], branch, "int8")
        g = model.graph
        inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
        producer = {o: n for n in g.node for o in n.output}
        consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in g.node:
            for i in n.input:
                consumers.setdefault(i, []).append(n)
        gemms = [n for n in g.node if n.op_type in ("MatMul", "Gemm", "Conv")
                 and producer.get(n.input[1]) is not None
                 and producer[n.input[1]].op_type == "DequantizeLinear"]
        assert gemms, branch
        for n in gemms:
            wdq = producer[n.input[1]]
            w, scale, zero = (inits[i] for i in wdq.input)
            assert w.dtype == np.int8 and np.abs(w).max() <= 127
            axis = next(a.i for a in wdq.attribute if a.name == "axis")
            assert axis == weight_axis(n, w.ndim)
            assert scale.shape == (w.shape[axis],) and not zero.any() and zero.dtype == np.int8
            adq = producer[n.input[0]]  # activation: Q -> DQ, per tensor, symmetric
            assert adq.op_type == "DequantizeLinear"
            q = producer[adq.input[0]]
            assert q.op_type == "QuantizeLinear" and q.input[1:] == adq.input[1:]
            assert inits[adq.input[1]].shape == () and inits[adq.input[2]] == 0
            assert inits[adq.input[2]].dtype == np.int8
        # a dequantized tensor feeds only GEMMs (never LayerNorm, Softmax, Add, the selector)
        for n in g.node:
            if n.op_type == "DequantizeLinear":
                users = {u.op_type for u in consumers[n.output[0]]}
                assert users <= {"MatMul", "Gemm", "Conv"}, (n.name, users)
        quantized = {n.name for n in gemms}
        for n in g.node:  # no float weight left behind a quantizable op
            if n.op_type in ("MatMul", "Gemm", "Conv") and n.name not in quantized:
                assert n.input[1] not in inits, n.name


def test_int8_accuracy_and_report(calibrated: tuple[Path, dict[str, Any], str]) -> None:
    root, report, _ = calibrated
    assert json.loads((root / REPORT).read_text()) == report
    assert report["videos"] == 6 and report["runtime"].startswith("onnxruntime")
    int8, fp16 = report["precisions"]["int8"], report["precisions"]["fp16"]
    cpu = report["precisions"]["int8-cpu"]
    assert int8["video_cosine_mean"] >= 0.997 and int8["video_cosine_min"] >= 0.99
    assert int8["text_cosine_mean"] >= 0.997 and int8["text_cosine_min"] >= 0.99
    assert cpu["video_cosine_mean"] >= 0.998 and cpu["video_cosine_min"] >= 0.995
    assert cpu["text_cosine_mean"] >= 0.998 and cpu["text_cosine_min"] >= 0.995
    assert cpu["sha256_video"] == Bundle.load(root).graph_sha256("video", "int8-cpu")
    assert fp16["video_cosine_min"] >= 0.999 and fp16["text_cosine_min"] >= 0.999
    for entry in (int8, fp16, cpu):
        assert 0.0 <= entry["topk_same_order"] <= entry["topk_same_set"] <= 1.0
        assert {"R@1", "R@5", "R@10", "dR@1"} <= entry.keys()
    assert "R@1" in report["fp32"]
    table = format_report(report).splitlines()
    header = next(line for line in table if line.startswith("precision"))
    assert header.split()[:3] == ["precision", "vid", "cos"] and header.split()[-1] == "MdR"
    assert any(line.startswith("int8 ") for line in table)


def test_int8_cpu_quantizes_only_weight_gemms_and_runs_integer_kernels(
        calibrated: tuple[Path, Any, str], small_bundle: Path, tmp_path: Path) -> None:
    import onnxruntime as ort

    for branch in ("video", "text"):
        fp32 = onnx.load(str(small_bundle / f"{branch}.onnx"))
        gemms = [n for n in weight_nodes(fp32.graph) if n.op_type in INT8_CPU_OPS]
        model = _load(calibrated[0], branch, "int8-cpu")
        onnx.checker.check_model(model, full_check=True)
        g = model.graph
        inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
        consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in g.node:
            for i in n.input:
                consumers.setdefault(i, []).append(n)
        integer = [n for n in g.node if n.op_type == "MatMulInteger"]
        assert len(integer) == len(gemms), branch  # every constant-weight GEMM, nothing else
        for n in integer:
            w = inits[n.input[1]]
            assert w.dtype == np.int8 and w.ndim == 2
            assert inits[n.input[3]].shape == (w.shape[1],)  # per-channel weight zero points
        for n in g.node:  # a quantized activation feeds only the integer GEMMs
            if n.op_type == "DynamicQuantizeLinear":
                assert {u.op_type for u in consumers[n.output[0]]} == {"MatMulInteger"}
        types = _types(model)
        islands = fp32_islands(fp32.graph)
        kept = {n.name: n for n in g.node}
        for name, why in islands.items():  # LayerNorm, Softmax, selector, normalisation: fp32
            node = kept[name]
            assert all(types[t] == FLOAT for t in [*node.input, *node.output]
                       if types.get(t) not in (None, onnx.TensorProto.INT64)), (name, why)
        so = ort.SessionOptions()
        so.optimized_model_filepath = str(tmp_path / f"{branch}.opt.onnx")
        ort.InferenceSession(str(Bundle.load(calibrated[0]).graph_path(branch, "int8-cpu")), so,
                             providers=["CPUExecutionProvider"])
        ran = Counter(n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node)
        assert ran["DynamicQuantizeMatMul"] + ran["MatMulIntegerToFloat"] == len(gemms), ran


def test_manifest_records_graphs_and_provenance(calibrated: tuple[Path, Any, str],
                                                small_bundle: Path) -> None:
    root, _, log = calibrated
    bundle = Bundle.load(root)
    bundle.verify()
    assert bundle.fingerprint == Bundle.load(small_bundle).fingerprint
    for branch in ("video", "text"):
        assert bundle.precisions(branch) == ["fp32", "fp16", "int8", "int8-cpu"]
        for precision in ("fp16", "int8", "int8-cpu"):
            e = bundle.graph_entry(branch, precision)
            assert e["file"] == f"{branch}.{precision}.onnx"
            assert e["sha256"] == sha256_file(root / e["file"])
            assert e["created"] and {"onnx", "onnxruntime"} <= e["versions"].keys()
        cal = bundle.graph_entry(branch, "int8")["calibration"]
        assert cal["videos"] == 4 and cal["videos_skipped"] == 1 and cal["captions"] == 5
        assert cal["source"].endswith("captions.csv") and "max |x|" in cal["activations"]
        assert "per output channel" in cal["weights"]
        assert bundle.graph_entry(branch, "fp16")["fp32_islands"]["LayerNormalization"] > 0
        cpu = bundle.graph_entry(branch, "int8-cpu")
        assert cpu["method"].startswith("int8 dynamic") and "per output channel" in \
            cpu["quantization"]["weights"]
    assert "calibration video skipped" in log and "broken.mp4" in log


def test_user_errors_name_the_file(small_bundle: Path, calib_inputs: tuple[Path, Path],
                                   tmp_path: Path) -> None:
    videos, captions = calib_inputs
    (tmp_path / "empty.txt").write_text("\n \n")
    (tmp_path / "novideo").mkdir()
    (tmp_path / "novideo" / "x.mp4").write_bytes(b"junk")
    (tmp_path / "novideo.csv").write_text("video,caption\nx.mp4,a clip\n")
    cases = [((videos, tmp_path / "missing.txt"), "missing.txt: cannot read captions"),
             ((videos, tmp_path / "empty.txt"), "empty.txt:1: expected a header"),
             ((tmp_path / "novideo", tmp_path / "novideo.csv"), "novideo.csv: no readable video"),
             ((captions, captions), "not a folder of videos")]
    for (v, c), match in cases:
        with pytest.raises(PigError, match=match):
            data = CaptionedFolder(v, c)
            calibrate_bundle(small_bundle, data, data, precisions=["int8"], log=lambda _: None)
    with pytest.raises(PigError, match="unknown precision 'int4'"):
        calibrate_bundle(small_bundle, DemoClips("train", 1), DemoClips("heldout", 1),
                         precisions=["int4"])
    assert sorted(p.name for p in small_bundle.iterdir()) == [MANIFEST, "text.onnx",
                                                              "video.onnx"]


def test_pig_export_calibrate_cli(small_bundle: Path, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    from pig.cli.export import main

    root = tmp_path / "bundle"
    root.mkdir()
    shutil.copy(small_bundle / MANIFEST, root)
    for name in ("video.onnx", "text.onnx"):
        os.link(small_bundle / name, root / name)  # graphs must lie inside the bundle
    synth.generate(tmp_path / "synth", num_train=0, num_heldout=4)
    with pytest.raises(SystemExit) as stop:
        main(["--out", str(root), "--calibrate", "--precision", "fp16",
              "--eval-data", str(tmp_path / "synth")])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert "wrote video.fp16.onnx" in out and "accuracy vs fp32" in out
    assert Bundle.load(root).precisions("text") == ["fp32", "fp16"]
    assert json.loads((root / REPORT).read_text())["videos"] == 4
    with pytest.raises(SystemExit) as stop:
        main(["--out", str(root), "--calibrate", "--calib-data", str(tmp_path)])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "needs both --calib-data and --calib-captions" in err


@pytest.mark.slow
def test_int8_cpu_on_the_demo_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo model's int8-cpu graphs against fp32 on 120 held-out clips. Measured on all
    600: video cosine mean 0.99995 (min 0.99965), text 0.99998 (0.99994), selector same set
    0.862, R@1 80.3 = fp32. Asked: a few times those errors, and R@1 within the 1 point that
    ``auto`` requires, which ``auto`` then confirms from the written report."""
    from pig.demo import steps
    from pig.engine.backends import select

    checkpoint, config = steps.model_files()
    bundle = steps.ensure_bundle(checkpoint, config, tmp_path / "demo")
    report = calibrate_bundle(bundle.dir, DemoClips("train", 1), DemoClips("heldout", 120),
                              precisions=["int8-cpu"], log=lambda _: None)
    cpu = report["precisions"]["int8-cpu"]
    assert cpu["video_cosine_mean"] >= 0.9995 and cpu["video_cosine_min"] >= 0.998
    assert cpu["text_cosine_mean"] >= 0.9995 and cpu["text_cosine_min"] >= 0.998
    assert cpu["topk_same_set"] >= 0.7
    assert cpu["dR@1"] >= -1.0, cpu
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    choice = select.choose(Bundle.load(bundle.dir), "auto")[-1]
    assert choice.precision == "int8-cpu", choice
