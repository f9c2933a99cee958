"""``pig.engine.media.preprocess`` (C++ ``pig._preprocess``) against the torch reference pipelines.

References: ``squash_bicubic`` = ``F.interpolate(x / 255, (S, S), bicubic, align_corners=False)``
then ``(y - mean) / std``; ``shorter_side_center_crop`` = torchvision ``Resize(S)`` (antialiased
bicubic, long side ``int(S * long / short)``) + ``CenterCrop(S)`` (offsets with Python's
``round``) written out in torch. Tolerance: 1e-5 max abs at float32 (observed ~5e-6 at worst);
float16 output must equal our float32 output rounded to nearest-even, and be within 1 ulp of
the torch reference rounded to float16 (or within 1e-5 near 0, where an ulp is smaller).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pig.engine.media.preprocess import preprocess_frames
from pig.engine.recipe import PreprocessRecipe
from tests.clipgen import make_clip

TOL = 1e-5
SQUASH = PreprocessRecipe()
CROP = PreprocessRecipe(mode="shorter_side_center_crop")

# (height, width): video sizes, odd sizes, crops with .5 offsets (225x299 -> 297 wide: offset
# 36.5 rounds to 36; 225x301 -> 299 wide: 37.5 rounds to 38), portrait, tiny upscales, identity.
SIZES = [
    (1080, 1920),
    (720, 1280),
    (360, 640),
    (240, 320),
    (187, 321),
    (223, 225),
    (225, 299),
    (225, 301),
    (301, 225),
    (5, 7),
    (1, 1),
    (1, 9),
    (224, 224),
]


def real_looking(n: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth colour gradients, hard edges and sensor-like noise (uint8 RGB)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    out = []
    for _ in range(n):
        fx, fy = rng.uniform(0.5, 3, 2)
        wave = [np.sin(fx * np.pi * xx / width + c) * np.cos(fy * yy / height) for c in range(3)]
        img = 127 + 120 * np.stack(wave, axis=-1)
        img[(xx // 17 + yy // 13) % 3 == 0] = rng.uniform(0, 255, 3)
        out.append(np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8))
    return np.stack(out)


def random_frames(n: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, height, width, 3), dtype=np.uint8)


def torch_reference(frames: np.ndarray, recipe: PreprocessRecipe) -> np.ndarray:
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    s = recipe.size
    if recipe.mode == "squash_bicubic":
        y = F.interpolate(x, size=(s, s), mode="bicubic", align_corners=False)
    else:
        h, w = x.shape[-2:]
        rh, rw = (int(s * h / w), s) if w <= h else (s, int(s * w / h))
        y = F.interpolate(x, size=(rh, rw), mode="bicubic", align_corners=False, antialias=True)
        top, left = round((rh - s) / 2), round((rw - s) / 2)
        y = y[..., top : top + s, left : left + s]
    mean = torch.tensor(recipe.mean).view(1, 3, 1, 1)
    std = torch.tensor(recipe.std).view(1, 3, 1, 1)
    return ((y - mean) / std).numpy()


@pytest.mark.parametrize("recipe", [SQUASH, CROP], ids=lambda r: r.mode)
@pytest.mark.parametrize("hw", SIZES, ids=lambda hw: f"{hw[0]}x{hw[1]}")
def test_matches_torch(hw: tuple[int, int], recipe: PreprocessRecipe) -> None:
    frames = np.concatenate([random_frames(1, *hw), real_looking(1, *hw)])
    got = preprocess_frames(frames, recipe, threads=2)
    assert got.shape == (2, 3, recipe.size, recipe.size) and got.dtype == np.float32
    np.testing.assert_allclose(got, torch_reference(frames, recipe), rtol=0, atol=TOL)


@pytest.mark.parametrize("recipe", [SQUASH, CROP], ids=lambda r: r.mode)
def test_other_size_and_stats(recipe: PreprocessRecipe) -> None:
    small = PreprocessRecipe(size=33, mode=recipe.mode, mean=(0.5, 0.25, 0.0),
                             std=(0.5, 2.0, 0.125))
    frames = real_looking(3, 97, 130, seed=3)
    got = preprocess_frames(frames, small)
    np.testing.assert_allclose(got, torch_reference(frames, small), rtol=0, atol=TOL)


@pytest.mark.parametrize("recipe", [SQUASH, CROP], ids=lambda r: r.mode)
def test_list_of_mixed_sizes(recipe: PreprocessRecipe) -> None:
    frames = [real_looking(1, h, w, seed=i)[0] for i, (h, w) in enumerate(SIZES[3:9])]
    got = preprocess_frames(frames, recipe)
    for frame, plane in zip(frames, got, strict=True):
        np.testing.assert_array_equal(plane, preprocess_frames(frame[None], recipe)[0])
        np.testing.assert_allclose(plane, torch_reference(frame[None], recipe)[0], rtol=0,
                                   atol=TOL)


@pytest.mark.parametrize("recipe", [SQUASH, CROP], ids=lambda r: r.mode)
def test_decoded_video_frames(tmp_path: Path, recipe: PreprocessRecipe) -> None:
    """Frames as PyAV hands them over (H.264, yuv420p -> rgb24), used as they come."""
    clip = make_clip(tmp_path / "clip.mp4", size=(482, 270), n_frames=3)
    with av.open(str(clip)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    got = preprocess_frames(frames, recipe)
    np.testing.assert_allclose(got, torch_reference(np.stack(frames), recipe), rtol=0, atol=TOL)


def test_strided_frames_need_no_copy() -> None:
    """Padded rows (decoder line sizes), flips, batch slices and broadcasts are read in place."""
    padded = real_looking(3, 41, 64)[:, :, :50]  # rows of 64 pixels, 50 used
    assert not padded.flags.c_contiguous
    views = [padded, padded[:, ::-1], padded[::2], np.broadcast_to(padded[0], padded.shape)]
    for view in views:
        expected = preprocess_frames(np.ascontiguousarray(view), SQUASH)
        np.testing.assert_array_equal(preprocess_frames(view, SQUASH), expected)
        np.testing.assert_array_equal(preprocess_frames(list(view), SQUASH), expected)


def test_thread_count_does_not_change_result() -> None:
    frames = real_looking(3, 130, 171)
    one = preprocess_frames(frames, SQUASH, threads=1)
    for threads in (2, 5, 64):  # more threads than frames: rows are split into bands
        np.testing.assert_array_equal(preprocess_frames(frames, SQUASH, threads=threads), one)


@pytest.mark.parametrize("recipe", [SQUASH, CROP], ids=lambda r: r.mode)
def test_float16(recipe: PreprocessRecipe) -> None:
    frames = np.concatenate([random_frames(2, 120, 161), real_looking(2, 120, 161)])
    half = preprocess_frames(frames, recipe, dtype=np.float16)
    assert half.dtype == np.float16
    full = preprocess_frames(frames, recipe)
    np.testing.assert_array_equal(half, full.astype(np.float16))
    ref = torch_reference(frames, recipe).astype(np.float16)
    # 1 ulp, or the float32 tolerance where an ulp is smaller (values near 0).
    allowed = np.maximum(np.spacing(np.abs(ref)).astype(np.float32), TOL)
    assert (np.abs(half.astype(np.float32) - ref.astype(np.float32)) <= allowed).all()


def test_float16_rounding_extremes() -> None:
    """Overflow to inf, large, subnormal and tiny values round exactly as numpy does."""
    recipe = PreprocessRecipe(mean=(0.5, 0.5, 0.5), std=(1e-5, 1e-3, 3e3))
    frames = np.concatenate([random_frames(2, 50, 61), real_looking(2, 50, 61)])
    half = preprocess_frames(frames, recipe, dtype=np.float16)
    full = preprocess_frames(frames, recipe)
    assert np.isinf(half[:, 0]).any() and (np.abs(half[:, 2]) < 6.1e-5).any()
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(half, full.astype(np.float16))


def test_writes_into_engine_buffer() -> None:
    """Frames land in a slice of a [B, T, 3, S, S] input; the rest is untouched."""
    frames = real_looking(4, 90, 160)
    buf = np.full((3, 4, 3, SQUASH.size, SQUASH.size), 7.0, np.float32)
    got = preprocess_frames(frames, SQUASH, out=buf[1])
    assert np.shares_memory(got, buf)
    np.testing.assert_array_equal(buf[1], preprocess_frames(frames, SQUASH))
    assert (buf[0] == 7).all() and (buf[2] == 7).all()


def _out(n: int = 2, dtype: type = np.float32) -> np.ndarray:
    return np.empty((n, 3, SQUASH.size, SQUASH.size), dtype)


GOOD = random_frames(2, 12, 16)


@pytest.mark.parametrize(
    ("frames", "kwargs", "error", "match"),
    [
        (GOOD.astype(np.float32), {}, TypeError, r"frames: expected dtype uint8, got float32"),
        (random_frames(2, 8, 8)[..., :2].copy(), {}, ValueError, r"frames: expected shape"),
        (np.zeros((2, 8, 8, 4), np.uint8), {}, ValueError, r"\(2, 8, 8, 4\)"),
        (GOOD[0], {}, ValueError, r"frames: expected shape \(N, H, W, 3\)"),
        (GOOD[:, :, ::2], {}, ValueError, r"frames: pixels .* strides \(576, 48, 6, 1\)"),
        (GOOD[..., ::-1], {}, ValueError, r"frames: pixels must be packed RGB"),
        (np.zeros((0, 8, 8, 3), np.uint8), {}, ValueError, r"frames: empty batch"),
        ([], {}, ValueError, r"frames: empty batch"),
        (np.zeros((1, 0, 8, 3), np.uint8), {}, ValueError, r"frames: empty frame"),
        ([GOOD[0], GOOD[1].astype(np.int16)], {}, TypeError, r"frames\[1\]: expected dtype uint8"),
        ([GOOD[0], GOOD[1][..., ::-1]], {}, ValueError, r"frames\[1\]: pixels must be packed"),
        ([GOOD[0], GOOD], {}, ValueError, r"frames\[1\]: expected shape \(H, W, 3\)"),
        ([GOOD[0], "x.jpg"], {}, TypeError, r"frames\[1\]: expected a numpy array, got str"),
        ("x.jpg", {}, TypeError, r"frames: expected a uint8 array"),
        (GOOD, {"out": _out(3)}, ValueError, r"out: expected shape \(2, 3, 224, 224\), got \(3,"),
        (GOOD, {"out": _out(dtype=np.float64)}, TypeError, r"out: expected dtype float32, f"),
        (GOOD, {"out": _out()[:, ::-1]}, ValueError, r"out: must be C-contiguous"),
        (GOOD, {"out": [0.0]}, TypeError, r"out: expected a numpy array, got list"),
        (GOOD, {"out": _out(), "dtype": np.float16}, TypeError, r"does not match dtype"),
        (GOOD, {"dtype": np.int8}, TypeError, r"dtype must be float32, float16 or uint8, got int8"),
        (GOOD, {"threads": -1}, ValueError, r"threads must be >= 0"),
    ],
)
def test_invalid_input(frames: object, kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        preprocess_frames(frames, SQUASH, **kwargs)  # type: ignore[arg-type]


def test_read_only_out() -> None:
    out = _out()
    out.flags.writeable = False
    with pytest.raises(ValueError, match="out: array is read-only"):
        preprocess_frames(GOOD, SQUASH, out=out)


@pytest.mark.parametrize(
    ("recipe", "match"),
    [
        (PreprocessRecipe(mode="center_crop"), r"unknown resize mode 'center_crop'"),  # type: ignore[arg-type]
        (PreprocessRecipe(size=0), r"size must be in \[1, "),
        (PreprocessRecipe(std=(0.2, 0.0, 0.2)), r"std must be non-zero"),
        (PreprocessRecipe(mean=(0.5, 0.5)), r"mean must be 3 finite floats"),  # type: ignore[arg-type]
        (PreprocessRecipe(std=(0.5, float("nan"), 1)), r"std must be 3 finite floats"),
    ],
)
def test_invalid_recipe(recipe: PreprocessRecipe, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        preprocess_frames(GOOD, recipe)


def test_runtime_import_is_torch_free() -> None:
    code = "import sys, pig.engine.media.preprocess; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
