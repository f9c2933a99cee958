"""TensorRT engine build time and engine size per graph and precision (``make bench BENCH=trt``).

Builds with whatever TensorRT is installed, as ``pig-export --trt`` does: on a machine without
a GPU, TensorRT-RTX's CPU-only AOT build for its default portable set. Bundle: the demo model
(``models/pig-tiny``) exported and calibrated; ``PIG_BENCH_TRT_FULL=1`` adds the full B/32
bundle regenerated from tests/reference/weights_spec.json (export + calibration + 6 builds:
several minutes on 2 cores). Ratios are against the same graph's fp32 build in this run.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from pig.calibration.calibrate import calibrate_bundle
from pig.demo.dataset import DemoClips
from pig.engine.bundle import Bundle
from pig.engine.graphs import BRANCHES
from pig.engine.trt.build import ensure_plan

SPEC = Path(__file__).resolve().parent.parent / "tests" / "reference" / "weights_spec.json"


def _demo(out: Path) -> Path:
    from pig.demo import steps

    checkpoint, config = steps.model_files()
    return Path(steps.ensure_bundle(checkpoint, config, out).dir)


def _full(out: Path) -> Path:
    import torch

    from pig.export.checkpoint import LoadedCheckpoint
    from pig.export.config import infer_from_shapes
    from pig.export.model import PigModel
    from pig.export.onnx_export import export_bundle
    from pig.export.spec_weights import generate, load_spec

    weights = generate(load_spec(SPEC), "full")
    cfg = infer_from_shapes({k: v.shape for k, v in weights.items()})
    model = PigModel(cfg).eval()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=True)
    export_bundle(LoadedCheckpoint(model, cfg, SPEC, ""), out)
    return out


def _report(name: str, root: Path, cache: Path) -> None:
    calibrate_bundle(root, DemoClips("train", 32), DemoClips("heldout", 4), max_videos=4,
                     max_captions=32, log=lambda _: None)
    bundle = Bundle.load(root)
    print(f"\n{name}: {'graph':<6} {'prec':<5} {'build s':>8} {'x fp32':>7} {'ONNX MiB':>9} "
          f"{'engine MiB':>11} {'x fp32':>7}")
    for branch in BRANCHES:
        base: tuple[float, int] | None = None
        for precision in bundle.precisions(branch):
            t0 = time.perf_counter()
            _, plan = ensure_plan(bundle, branch, precision, cache_dir=cache, log=lambda _: None)
            secs, size = time.perf_counter() - t0, plan.stat().st_size
            base = base or (secs, size)
            onnx_mib = Path(bundle.graph_path(branch, precision)).stat().st_size / 2**20
            print(f"{'':<{len(name) + 2}}{branch:<6} {precision:<5} {secs:8.1f} "
                  f"{secs / base[0]:7.2f} {onnx_mib:9.1f} {size / 2**20:11.1f} "
                  f"{size / base[1]:7.2f}", flush=True)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="pig-bench-trt-") as tmp:
        t = Path(tmp)
        _report("demo (pig-tiny)", _demo(t / "demo"), t / "trt-demo")
        if os.environ.get("PIG_BENCH_TRT_FULL") == "1":
            _report("full B/32", _full(t / "full"), t / "trt-full")
        else:
            print("\n(PIG_BENCH_TRT_FULL=1 adds the full B/32 bundle)")


if __name__ == "__main__":
    main()
