"""ONNX Runtime session options, measured: videos/s and queries/s per setting, as ratios
against ONNX Runtime's own defaults measured in the same run.

Bundle: ``$PIG_BENCH_BUNDLE`` if set (e.g. a bundle exported from the reference "small"
config), else a synthetic bundle at the real input sizes (tests/fake_bundle.py).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from pig.engine.backends.onnxruntime import OrtOptions, session_options
from pig.engine.bundle import Bundle
from tests.fake_bundle import FakeSizes, token_ids, write_bundle

VIDEO_BATCH, TEXT_BATCH = 4, 64
BUDGET_S = 1.0


def _bundle(scratch: Path) -> Bundle:
    path = os.environ.get("PIG_BENCH_BUNDLE")
    if path:
        return Bundle.load(path)
    sizes = FakeSizes(frames=12, size=224, patch=32, width=256, dim=512, vocab=49408, length=50)
    return Bundle.load(write_bundle(scratch, sizes))


def _variants() -> dict[str, Callable[[], Any]]:
    """Name -> SessionOptions factory. 'ort defaults' is the baseline."""
    def chosen(**kw: Any) -> Callable[[], Any]:
        return lambda: session_options(OrtOptions(**kw))

    def tweak(fn: Callable[[Any], None]) -> Callable[[], Any]:
        def make() -> Any:
            so = session_options(OrtOptions())
            fn(so)
            return so
        return make

    return {
        "ort defaults": ort.SessionOptions,
        "pig default (threads=0, no spin)": chosen(),
        "threads=1": chosen(threads=1),
        "spin on": chosen(spin=True),
        "graph opt: extended": tweak(lambda so: setattr(
            so, "graph_optimization_level", ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED)),
        "graph opt: basic": tweak(lambda so: setattr(
            so, "graph_optimization_level", ort.GraphOptimizationLevel.ORT_ENABLE_BASIC)),
        "parallel execution": tweak(lambda so: setattr(
            so, "execution_mode", ort.ExecutionMode.ORT_PARALLEL)),
        "no mem pattern / arena": tweak(lambda so: (setattr(so, "enable_mem_pattern", False),
                                                    setattr(so, "enable_cpu_mem_arena", False))),
        "ort defaults (again: noise)": ort.SessionOptions,
    }


def _rate(session: Any, name: str, x: np.ndarray) -> float:
    """Items/s from the median call time (robust to other load on the machine)."""
    session.run(["embeddings"], {name: x})
    times: list[float] = []
    t_end = time.perf_counter() + BUDGET_S
    while time.perf_counter() < t_end or len(times) < 3:
        t0 = time.perf_counter()
        session.run(["embeddings"], {name: x})
        times.append(time.perf_counter() - t0)
    return x.shape[0] / float(np.median(times))


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="pig-bench-") as scratch:
        _run(_bundle(Path(scratch)))


def _run(bundle: Bundle) -> None:
    r, spec = bundle.recipe, bundle.tokenizer_spec
    rng = np.random.default_rng(0)
    px = rng.standard_normal((VIDEO_BATCH, r.num_frames, 3, r.size, r.size), dtype=np.float32)
    ids = token_ids(spec, TEXT_BATCH)
    print(f"bundle {bundle.dir}; {os.cpu_count()} CPUs; video batch {VIDEO_BATCH}, "
          f"text batch {TEXT_BATCH}; {BUDGET_S:.0f}s per cell")
    rows = []
    for label, make in _variants().items():
        cells = []
        for branch, name, x in (("video", "pixel_values", px), ("text", "input_ids", ids)):
            path = str(bundle.graph_path(branch, "fp32"))
            t0 = time.perf_counter()
            session = ort.InferenceSession(path, make(), providers=["CPUExecutionProvider"])
            load_s = time.perf_counter() - t0
            cells += [_rate(session, name, x), load_s]
        rows.append((label, *cells))
    base = rows[0]
    print(f"{'setting':34s} {'videos/s':>9s} {'ratio':>6s} {'load s':>7s} "
          f"{'queries/s':>10s} {'ratio':>6s} {'load s':>7s}")
    for label, v, vl, t, tl in rows:
        print(f"{label:34s} {v:9.2f} {v / base[1]:6.2f} {vl:7.2f} "
              f"{t:10.1f} {t / base[3]:6.2f} {tl:7.2f}")


if __name__ == "__main__":
    main()
