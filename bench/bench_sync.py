"""``sync`` after a library moved vs indexing it again: moved files are found by their content
digest (each file hashed once, nothing decoded or encoded).

A folder of the 320x240 10 s clips of ``bench_pipeline`` (hard links to its cache) is indexed
with the demo bundle; the folder is renamed; ``sync`` finds every file at its new path and
removes nothing; then an unchanged ``sync`` (a stat per file). Every figure is from the same
run, and the ratio is index / sync. Each includes opening the encoder, as a user's run does.

Environment: ``PIG_BENCH_SYNC_CLIPS`` (default 120).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from bench.bench_pipeline import CACHE, bundle, generated_clips
from pig.engine.ingest.run import index_videos
from pig.engine.media.walk import discover


def main() -> None:
    n = int(os.environ.get("PIG_BENCH_SYNC_CLIPS", "120"))
    CACHE.mkdir(parents=True, exist_ok=True)
    clips = discover([generated_clips(n)])[:n]
    b = bundle("demo")
    quiet = {"log": lambda _: None}
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        root = Path(tmp) / "library"
        lib = root / "2025"
        lib.mkdir(parents=True)
        for c in clips:
            os.link(c, lib / c.name)
        idx = Path(tmp) / "index"
        t0 = time.perf_counter()
        first = index_videos([root], b, idx, **quiet)
        full = time.perf_counter() - t0
        assert first.indexed == n and not first.failed, first.summary()
        lib.rename(root / "archive-2025")
        t0 = time.perf_counter()
        moved = index_videos([root], b, idx, sync=True, **quiet)
        resync = time.perf_counter() - t0
        assert (moved.moved, moved.indexed, moved.removed) == (n, 0, 0), moved.summary()
        t0 = time.perf_counter()
        same = index_videos([root], b, idx, sync=True, **quiet)
        unchanged = time.perf_counter() - t0
        assert same.skipped["unchanged"] == n, same.summary()
    size = sum(c.stat().st_size for c in clips) / 2**20
    print(f"{n} clips ({size:.0f} MiB): index {full:.2f} s ({n / full:.1f} clips/s); sync after "
          f"the folder was renamed {resync:.2f} s ({n} moved, 0 encoded): {full / resync:.1f}x "
          f"less time; unchanged sync {unchanged:.2f} s")
