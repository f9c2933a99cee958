"""Decode + sample time per video: pig.engine.media.video (PyAV) against decord (official reader).

Both read the same H.264 clips (x264 veryfast, 3 B-frames, keyframe every 2 s, 25 fps) and
return the official T=12 ``linspace`` frames as uint8 RGB; decord is timed the way the
official pipeline calls it (``VideoReader`` + ``len`` + ``get_batch``). Runs are interleaved;
reported per video: best-of-``REPEATS`` wall time (latency; the minimum is the least disturbed
by other load on the machine) and median process CPU time, all threads (the throughput cost
when many videos are decoded in parallel). Ratios are decord / ours (> 1: ours is faster).
Clips are encoded once into a cache folder under the system temp dir.

Per clip, also: frames the decoder produced per frame sampled (``SampledFrames.frames_decoded``
over the distinct sampled frames; non-reference frames nobody asked for are skipped, not
decoded) beside the minimum the GOP structure allows when every sample is decoded from the last
keyframe before it (the union of those keyframe-to-sample runs, every frame counted), so the
remaining gap is visible.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np

from pig.engine.media.video import read_video, sample_indices
from tests.clipgen import make_clip

NUM_FRAMES = 12
REPEATS = 7
FPS = 25
# (width, height, seconds)
CLIPS = [(320, 240, 10), (640, 360, 10), (1280, 720, 10), (320, 240, 60)]


def _clip(cache: Path, width: int, height: int, seconds: int) -> Path:
    path = cache / f"h264_{width}x{height}_{seconds}s.mp4"
    if not path.exists():
        tmp = path.with_suffix(".part.mp4")
        make_clip(tmp, "libx264", (width, height), FPS * seconds, FPS, gop=2 * FPS, bframes=3,
                  options={"preset": "veryfast", "crf": "23"})
        tmp.rename(path)
    return path


def _decord_sample(path: Path, threads: int) -> np.ndarray:
    import decord  # after av (imported by pig.engine.media.video): see tests/clipgen.py

    vr = decord.VideoReader(str(path), num_threads=threads)
    idx = np.linspace(0, len(vr) - 1, NUM_FRAMES).astype(int)
    return vr.get_batch(idx).asnumpy()


def _gop_minimum(path: Path) -> tuple[int, int]:
    """(frames in the union of keyframe-to-sample runs, distinct samples), presentation order."""
    with av.open(str(path)) as c:
        packets = [(p.pts, p.is_keyframe) for p in c.demux(video=0) if p.size]
    order = sorted(range(len(packets)), key=lambda i: packets[i][0])
    keys = [r for r, i in enumerate(order) if packets[i][1]]
    targets = np.unique(sample_indices(len(packets), NUM_FRAMES))
    needed: set[int] = set()
    for t in targets.tolist():
        start = max((k for k in keys if k <= t), default=0)
        needed.update(range(start, t + 1))
    return len(needed), len(targets)


def _timed(fn: Callable[[], object], wall: list[float], cpu: list[float]) -> None:
    c0, t0 = time.process_time(), time.perf_counter()
    fn()
    wall.append(1000 * (time.perf_counter() - t0))
    cpu.append(1000 * (time.process_time() - c0))


def main() -> None:
    cache = Path(tempfile.gettempdir()) / "pig_bench_decode"
    cache.mkdir(exist_ok=True)
    paths = [(f"{w}x{h} {s}s", _clip(cache, w, h, s)) for w, h, s in CLIPS]
    print(f"decode + sample T={NUM_FRAMES}: wall = best of {REPEATS}, cpu = median (ms); "
          f"clips in {cache}")
    print(f"{'clip':>14} {'threads':>7} {'frames':>6} | {'ours':>7} {'decord':>7} {'ratio':>6} "
          f"| {'ours cpu':>8} {'decord cpu':>10} {'ratio':>6} | {'max|diff|':>9} "
          f"| {'decoded/sample':>14} {'GOP min':>7}")
    for threads in (0, 1):  # 0: FFmpeg picks (one per core), as the official pipeline runs
        for name, path in paths:
            times: dict[str, tuple[list[float], list[float]]] = {"ours": ([], []), "ref": ([], [])}
            for _ in range(REPEATS):
                _timed(lambda p=path, t=threads: read_video(p, NUM_FRAMES, t), *times["ours"])
                _timed(lambda p=path, t=threads: _decord_sample(p, t), *times["ref"])
            ours, ref = read_video(path, NUM_FRAMES, threads), _decord_sample(path, threads)
            diff = int(np.abs(ours.frames.astype(np.int16) - ref).max())
            minimum, samples = _gop_minimum(path)
            wo, wd = min(times["ours"][0]), min(times["ref"][0])
            co, cd = statistics.median(times["ours"][1]), statistics.median(times["ref"][1])
            print(f"{name:>14} {threads or 'auto':>7} {ours.frame_count:>6} | {wo:>7.1f} "
                  f"{wd:>7.1f} {wd / wo:>5.2f}x | {co:>8.1f} {cd:>10.1f} {cd / co:>5.2f}x "
                  f"| {diff:>9} | {ours.frames_decoded / samples:>14.1f} "
                  f"{minimum / samples:>7.1f}")

if __name__ == "__main__":
    main()
