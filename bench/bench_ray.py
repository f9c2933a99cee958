"""``--runner ray`` vs the local pipeline: Ray's overhead at 2 CPUs (target >= 0.8 of local).

Both index the same clips into a fresh index with the demo bundle (``bundles/pig-tiny``,
ONNX Runtime CPU fp32) and batch 8: local with its defaults (2 decode threads + the encoder),
Ray on a local Ray of 2 CPUs (2 decode tasks at once, one encoder actor). Ray starts once,
before the timed runs (its start-up is printed apart: a cluster pays it once, not per run).
Runs alternate local, ray, local, ray and each figure is the best of its two (the host is
shared). Clips: the 320x240 10 s H.264 clips of ``bench_pipeline`` (cached).

Environment: ``PIG_BENCH_RAY_CLIPS`` (default 480: about 13 s of local work here; at 120
the per-run start of the encoder actor weighs on a 3 s run).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

from bench.bench_pipeline import CACHE, bundle, generated_clips
from pig.engine.bundle import Bundle
from pig.engine.ingest.options import PipelineOptions
from pig.engine.ingest.run import index_videos
from pig.engine.media.walk import discover

RAY_CPUS = 2


def _rate(b: Bundle, files: list[Path], runner: object | None) -> float:
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        report = index_videos(files, b, Path(tmp) / "index", options=PipelineOptions(),
                              log=lambda _: None, runner=runner)  # type: ignore[arg-type]
    assert not report.failed and report.indexed == len(files), report.summary()
    return report.videos_per_second


def main() -> None:
    import ray

    from pig.engine.ingest.ray_runner import RayRunner

    n = int(os.environ.get("PIG_BENCH_RAY_CLIPS", "480"))
    CACHE.mkdir(parents=True, exist_ok=True)
    files = discover([generated_clips(n)])[:n]
    b = bundle("demo")
    temp = tempfile.mkdtemp(prefix="pigray-bench-", dir="/tmp")
    t0 = time.perf_counter()
    ray.init(num_cpus=RAY_CPUS, include_dashboard=False, log_to_driver=False, _temp_dir=temp,
             object_store_memory=512 * 2**20, logging_level="warning")
    startup = time.perf_counter() - t0
    try:
        local, remote = [], []
        for _ in range(2):
            local.append(_rate(b, files, None))
            remote.append(_rate(b, files, RayRunner()))
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
    print(f"{os.cpu_count()} CPUs; {n} clips 320x240 10 s; demo bundle, batch 8; Ray of "
          f"{RAY_CPUS} CPUs started in {startup:.1f} s (not in the figures)")
    print(f"{'runner':<8} {'v/s runs':>16} {'best v/s':>9}")
    for name, rates in (("local", local), ("ray", remote)):
        print(f"{name:<8} {' '.join(f'{r:7.1f}' for r in rates):>16} {max(rates):>9.1f}")
    print(f"ray / local: {max(remote) / max(local):.2f} (target >= 0.8)", flush=True)


if __name__ == "__main__":
    main()
