"""uint8 frames to the device: the C++ resize-only uint8 output, the uint8-input video graph
(normalisation folded into the patch-embedding convolution, or explicit), equal to the float
graph on the same pixels, and close to the official float preprocessing, on ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from pig.calibration.uint8_input import u8_error, uint8_video_graph
from pig.engine.backends.onnxruntime import cpu_session
from pig.engine.bundle import Bundle
from pig.engine.media.preprocess import preprocess_frames
from pig.engine.recipe import PreprocessRecipe
from tests.clipgen import synth_frame
from tests.fake_bundle import FakeSizes, video_model

SIZES = FakeSizes()


def _frames(n: int, h: int = 120, w: int = 160) -> np.ndarray:
    """Natural-looking synthetic frames (gradients, shapes, text-like edges)."""
    return np.stack([synth_frame(i, w, h) for i in range(n)])


def _normalised(u8: np.ndarray, recipe: PreprocessRecipe) -> np.ndarray:
    mean = np.asarray(recipe.mean, np.float64).reshape(1, 3, 1, 1)
    std = np.asarray(recipe.std, np.float64).reshape(1, 3, 1, 1)
    return ((u8.astype(np.float64) / 255.0 - mean) / std).astype(np.float32)


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    session = cpu_session(str(path))
    return session.run(["embeddings"], {"pixel_values": x})[0]


def test_uint8_resize_is_the_rounded_bicubic() -> None:
    """dtype=uint8: the recipe's resize of the 0..255 values, rounded half to even and
    clamped; torch's bicubic in float64 as the reference: within 1 level, and off by that
    level in under 0.1 % of the values (float32 accumulation at exact .5 ties)."""
    torch = pytest.importorskip("torch")
    recipe = PreprocessRecipe(size=64)
    frames = np.random.default_rng(0).integers(0, 256, (3, 90, 70, 3), dtype=np.uint8)
    u8 = preprocess_frames(frames, recipe, dtype=np.uint8)
    assert u8.dtype == np.uint8 and u8.shape == (3, 3, 64, 64)
    ref = torch.nn.functional.interpolate(
        torch.from_numpy(frames).permute(0, 3, 1, 2).double(), size=(64, 64), mode="bicubic",
        align_corners=False).numpy()
    ref = np.clip(np.rint(ref), 0, 255)
    diff = np.abs(u8.astype(np.float64) - ref)
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
    out = np.empty_like(u8)
    assert preprocess_frames(frames, recipe, out=out) is out
    np.testing.assert_array_equal(out, u8)


def test_uint8_input_error_against_official_preprocessing() -> None:
    """On natural frames the uint8 input is the official float input up to rounding (0.5
    level = 0.0076 normalised) plus clamped bicubic overshoot at sharp edges."""
    recipe = PreprocessRecipe(size=224)
    up = u8_error(_frames(4), recipe)  # 160x120 upscaled: the worst case for overshoot
    assert up["mean"] <= 0.006 and up["beyond_rounding"] <= 0.025, up  # 0.0045, 1.6 %
    assert up["max"] <= 0.7, up  # 0.58: overshoot clamped at saturated hard edges
    down = u8_error(_frames(4, 480, 640), recipe)  # 640x480 downscaled, the usual case
    assert down["mean"] <= 0.003 and down["beyond_rounding"] <= 0.01, down  # 0.0021, 0.7 %
    assert down["max"] <= 0.35, down  # 0.27


@pytest.mark.parametrize("padded", [False, True])
def test_uint8_graph_equals_float_graph_on_the_same_pixels(tmp_path: Path, padded: bool) -> None:
    """The fake bundle's graph: folded into its Conv (no padding), or with a padded Conv
    the explicit Cast/Mul/Add; both equal the float graph fed (u8 / 255 - mean) / std."""
    model = video_model(SIZES)
    if padded:
        conv = next(n for n in model.graph.node if n.op_type == "Conv")
        conv.attribute.append(onnx.helper.make_attribute("pads", [0, 0, 0, 0]))
        conv.attribute.append(onnx.helper.make_attribute("group", 1))
        conv.attribute[-2].ints[:] = [1, 1, 1, 1]  # padding: folding would not be exact
        conv.attribute[0].ints[:] = [SIZES.patch + 2, SIZES.patch + 2]  # kernel_shape
        w = next(i for i in model.graph.initializer if i.name == "conv_w")
        arr = onnx.numpy_helper.to_array(w)
        grown = np.pad(arr, ((0, 0), (0, 0), (1, 1), (1, 1)))
        w.CopyFrom(onnx.numpy_helper.from_array(grown, "conv_w"))
    src, dst = tmp_path / "video.onnx", tmp_path / "video.u8.onnx"
    onnx.save(model, src)
    recipe = PreprocessRecipe(num_frames=SIZES.frames, size=SIZES.size)
    how = uint8_video_graph(src, dst, recipe)
    assert how == ("explicit" if padded else "folded")
    g = onnx.load(str(dst)).graph
    assert g.input[0].type.tensor_type.elem_type == TensorProto.UINT8
    frames = _frames(2 * SIZES.frames, 48, 40)
    u8 = preprocess_frames(frames, recipe, dtype=np.uint8)
    u8 = u8.reshape(2, SIZES.frames, 3, SIZES.size, SIZES.size)
    want = _run(src, _normalised(u8.reshape(-1, 3, SIZES.size, SIZES.size), recipe)
                .reshape(u8.shape))
    got = _run(dst, u8)
    np.testing.assert_allclose(got, want, atol=2e-6)


def test_exported_pig_graph_folds_and_matches(small_bundle: Path, tmp_path: Path) -> None:
    """The real exported video graph (Reshape -> patch-embedding Conv): folded; equal to the
    float graph on the same pixels (float32 rounding only) and within the stated tolerance of
    the official float preprocessing of the same frames."""
    bundle = Bundle.load(small_bundle)
    recipe = bundle.recipe
    dst = tmp_path / "video.u8.onnx"
    assert uint8_video_graph(bundle.graph_path("video", "fp32"), dst, recipe) == "folded"
    t, s = recipe.num_frames, recipe.size
    frames = _frames(2 * t, 480, 640)
    u8 = preprocess_frames(frames, recipe, dtype=np.uint8).reshape(2, t, 3, s, s)
    src = bundle.graph_path("video", "fp32")
    same_pixels = _run(src, _normalised(u8.reshape(-1, 3, s, s), recipe).reshape(u8.shape))
    got = _run(dst, u8)
    np.testing.assert_allclose(got, same_pixels, atol=1e-5)
    official = _run(src, preprocess_frames(frames, recipe).reshape(2, t, 3, s, s))
    cos = np.sum(got * official, axis=1) / (np.linalg.norm(got, axis=1)
                                            * np.linalg.norm(official, axis=1))
    # the uint8 input's rounding and clamping through the (random-weight) model
    assert cos.min() >= 0.999, cos
