"""uint8 frames vs float frames on the CPU with ONNX Runtime, same run: preprocessing (the C++
pass writing float32 vs resized uint8), the bytes a batch takes (what crosses PCIe to a GPU),
and preprocessing + inference per video, as ratios float/uint8.

Bundle: ``$PIG_BENCH_BUNDLE`` if set, else a synthetic bundle at the real input sizes
(12 x 224 x 224 frames; tests/fake_bundle.py). Frames: 640x480 synthetic RGB.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.bench_backends import _bundle
from pig.calibration.uint8_input import uint8_video_graph
from pig.engine.backends.onnxruntime import cpu_session
from pig.engine.media.preprocess import preprocess_frames
from tests.clipgen import synth_frame

BATCH = 4  # videos
BUDGET_S = 1.5




def _rate(fn: Callable[[], object]) -> float:
    """Calls per second (one warm-up, then until the budget is spent)."""
    fn()
    n, t0 = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < BUDGET_S or n < 3:
        fn()
        n += 1
    return n / elapsed


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        bundle = _bundle(Path(tmp) / "bundle")
        r = bundle.recipe
        t, s = r.num_frames, r.size
        u8_path = Path(tmp) / "video.u8.onnx"
        how = uint8_video_graph(bundle.graph_path("video", "fp32"), u8_path, r)
        frames = np.stack([synth_frame(i, 640, 480) for i in range(BATCH * t)])
        f32 = np.empty((BATCH * t, 3, s, s), np.float32)
        u8 = np.empty((BATCH * t, 3, s, s), np.uint8)
        float_sess = cpu_session(str(bundle.graph_path("video", "fp32")))
        u8_sess = cpu_session(str(u8_path))

        def pre_f32() -> object:
            return preprocess_frames(frames, r, out=f32)

        def pre_u8() -> object:
            return preprocess_frames(frames, r, out=u8)

        def full_f32() -> object:
            pre_f32()
            return float_sess.run(["embeddings"], {"pixel_values": f32.reshape(BATCH, t, 3, s, s)})

        def full_u8() -> object:
            pre_u8()
            return u8_sess.run(["embeddings"], {"pixel_values": u8.reshape(BATCH, t, 3, s, s)})

        rows = [("preprocess", pre_f32, pre_u8), ("preprocess + inference", full_f32, full_u8)]
        print(f"bundle: {bundle.dir}; uint8 graph: normalisation {how}; batch {BATCH} x {t} "
              f"frames 640x480 -> {s}x{s}")
        print(f"bytes per batch: float32 {f32.nbytes / 2**20:.1f} MiB, uint8 "
              f"{u8.nbytes / 2**20:.1f} MiB ({f32.nbytes / u8.nbytes:.0f}x less to copy)")
        for label, fa, fb in rows:
            a, b = _rate(fa) * BATCH, _rate(fb) * BATCH
            print(f"{label:24s} float32 {a:8.1f} videos/s   uint8 {b:8.1f} videos/s   "
                  f"uint8/float32 {b / a:.2f}x")


if __name__ == "__main__":
    main()
