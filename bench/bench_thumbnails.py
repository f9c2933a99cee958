"""Thumbnails (one JPEG per segment, made at index time): their size on disk and their time
against decoding the segments they come from.

The video is bench_long's 720p H.264 one (``PIG_BENCH_THUMB_MINUTES``, default 1 minute),
cut into 10 s windows and sampled 12 frames per window (the demo's recipe) by
``read_segments``, the way an indexing worker reads it. Decoding is a lower bound of what
indexing a segment costs (the encoder comes on top), so the share printed is an upper bound
of the thumbnails' share of indexing time.
"""

from __future__ import annotations

import os
import time

import numpy as np

from bench.bench_long import long_video
from pig.engine.media.segments import Segmenting
from pig.engine.media.thumbnails import thumbnail
from pig.engine.media.video import read_segments

FRAMES = 12


def main() -> None:
    minutes = float(os.environ.get("PIG_BENCH_THUMB_MINUTES", "1"))
    path = long_video(minutes)
    setting = Segmenting(mode="fixed", seconds=10)
    best_decode, sizes, thumb_s = float("inf"), [], []
    for _ in range(3):  # best of three: the host is shared
        t0 = time.perf_counter()
        segments = list(read_segments(path, FRAMES, setting, threads=1))
        best_decode = min(best_decode, time.perf_counter() - t0)
        run = []
        for seg in segments:
            t1 = time.perf_counter()
            sizes.append(len(thumbnail(seg.frames)))
            run.append(time.perf_counter() - t1)
        thumb_s.append(sum(run))
    n = len(segments)
    thumbs = min(thumb_s)
    print(f"{path.name}: {n} segments of 10 s, 720p")
    print(f"decode (1 thread): {best_decode * 1e3 / n:.1f} ms per segment; thumbnail: "
          f"{thumbs * 1e3 / n:.2f} ms per segment ({thumbs / best_decode:.1%} of decoding)")
    print(f"thumbnail size: mean {np.mean(sizes) / 1024:.1f} KiB, max "
          f"{max(sizes) / 1024:.1f} KiB per segment ({np.mean(sizes) * 1e6 / 2**30:.2f} GiB "
          "per million segments, in the catalog)")
