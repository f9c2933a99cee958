"""Frame preprocessing throughput: ``pig._preprocess`` vs torch and OpenCV pipelines.

The official recipe (squash to 224x224, bicubic a=-0.75, /255, CLIP mean/std, CHW) on a batch
of 96 uint8 RGB frames at 320x240 ... 1920x1080, with 1 and 2 threads for every contender:
  ours   ``preprocess_frames`` (one fused C++ pass, float32 out);
  torch  ``F.interpolate(x / 255, bicubic)`` then ``(y - mean) / std`` on a batch tensor, in
         chunks of 24 frames to bound memory (the exact reference of the parity tests);
  cv2    ``cv2.resize(INTER_CUBIC)`` per frame on uint8 (not parity-exact: rounds and
         saturates), then numpy scale/shift and HWC->CHW into the batch buffer.
Frames/s: best and median of ``REPEATS`` timed passes after a warm-up.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from pig.engine.media.preprocess import preprocess_frames
from pig.engine.recipe import PreprocessRecipe

SIZES = ((320, 240), (640, 360), (1280, 720), (1920, 1080))  # width x height
BATCH = 96
THREADS = (1, 2)
REPEATS = 3
TORCH_CHUNK = 24


def _frames(width: int, height: int) -> np.ndarray:
    """``BATCH`` real-looking frames: smooth colour gradients, edges and mild noise."""
    rng = np.random.default_rng(width * height)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([xx / width, yy / height, (xx + yy) / (width + height)], axis=-1) * 200
    base[(xx // 40 + yy // 40) % 2 == 0] += 40
    distinct = [
        np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8) for _ in range(4)
    ]
    return np.ascontiguousarray(np.stack(distinct * (BATCH // 4)))


def _torch(frames: np.ndarray, out: np.ndarray, recipe: PreprocessRecipe) -> None:
    size = (recipe.size, recipe.size)
    mean = torch.tensor(recipe.mean).view(1, 3, 1, 1)
    std = torch.tensor(recipe.std).view(1, 3, 1, 1)
    out_t = torch.from_numpy(out)
    for i in range(0, len(frames), TORCH_CHUNK):
        x = torch.from_numpy(frames[i : i + TORCH_CHUNK]).permute(0, 3, 1, 2).float() / 255
        y = F.interpolate(x, size=size, mode="bicubic", align_corners=False)
        out_t[i : i + TORCH_CHUNK] = (y - mean) / std


def _cv2(frames: np.ndarray, out: np.ndarray, recipe: PreprocessRecipe) -> None:
    std = np.asarray(recipe.std, np.float32)
    scale = 1.0 / (255.0 * std)
    shift = np.asarray(recipe.mean, np.float32) / std
    size = (recipe.size, recipe.size)
    for i, frame in enumerate(frames):
        resized = cv2.resize(frame, size, interpolation=cv2.INTER_CUBIC)
        out[i] = (resized.astype(np.float32) * scale - shift).transpose(2, 0, 1)


def _fps(run: Callable[[], None]) -> tuple[float, float]:
    """(best, median) frames/s over ``REPEATS`` passes after one warm-up."""
    run()
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return BATCH / min(times), BATCH / statistics.median(times)


def main() -> None:
    recipe = PreprocessRecipe()
    torch_threads, cv2_threads = torch.get_num_threads(), cv2.getNumThreads()
    out = np.empty((BATCH, 3, recipe.size, recipe.size), np.float32)
    print(f"batch {BATCH}, {recipe.mode} -> {recipe.size}x{recipe.size} float32; frames/s as "
          f"best (median) of {REPEATS}")
    header = (f"{'input':>10} {'thr':>3} | {'ours':>15} | {'torch':>13} | {'cv2+numpy':>13} | "
              f"{'x torch':>7} {'x cv2':>6}")
    print(header)
    print("-" * len(header))
    try:
        for width, height in SIZES:
            frames = _frames(width, height)
            for threads in THREADS:
                torch.set_num_threads(threads)
                cv2.setNumThreads(threads)
                ours = _fps(lambda f=frames, t=threads: preprocess_frames(f, recipe, out,
                                                                          threads=t))
                ref = _fps(lambda f=frames: _torch(f, out, recipe))
                ocv = _fps(lambda f=frames: _cv2(f, out, recipe))
                print(f"{width:>5}x{height:<4} {threads:>3} | {ours[0]:7.0f} ({ours[1]:5.0f}) | "
                      f"{ref[0]:5.0f} ({ref[1]:5.0f}) | {ocv[0]:5.0f} ({ocv[1]:5.0f}) | "
                      f"{ours[0] / ref[0]:6.1f}x {ours[0] / ocv[0]:5.2f}x", flush=True)
            del frames
    finally:
        torch.set_num_threads(torch_threads)
        cv2.setNumThreads(cv2_threads)


if __name__ == "__main__":
    main()
