"""Export time of the full-size (B/32) model, and ONNX Runtime CPU vs PyTorch eager throughput
of the video and text graphs at batch 1 and 8 (ratio measured in the same run).

Weights are regenerated from tests/reference/weights_spec.json (no download).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import onnxruntime as ort
import torch

from pig.export.checkpoint import LoadedCheckpoint
from pig.export.config import infer_from_shapes
from pig.export.model import PigModel
from pig.export.onnx_export import export_bundle, sample_inputs
from pig.export.spec_weights import generate, load_spec

SPEC = Path(__file__).resolve().parent.parent / "tests" / "reference" / "weights_spec.json"
BATCHES = (1, 8)


def _per_item(fn: Callable[[], object], batch: int, min_time: float = 3.0) -> float:
    """Seconds per item: one warm-up call, then repeat until ``min_time`` has passed."""
    fn()
    n, t0 = 0, time.perf_counter()
    while n < 1 or time.perf_counter() - t0 < min_time:
        fn()
        n += 1
    return (time.perf_counter() - t0) / (n * batch)


def main() -> None:
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    weights = generate(load_spec(SPEC), "full")
    cfg = infer_from_shapes({k: v.shape for k, v in weights.items()})
    model = PigModel(cfg).eval()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=True)
    del weights
    stages: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        yield
        stages[name] = time.perf_counter() - t0

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        export_bundle(LoadedCheckpoint(model, cfg, SPEC, ""), Path(tmp) / "b", stage)
        total = time.perf_counter() - t0
        print(f"export of the full B/32 model ({threads} threads): {total:.1f} s total")
        for name, secs in stages.items():
            print(f"  {name:<36} {secs:6.1f} s")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        # no busy-waiting between runs: it would steal the cores from the torch timings
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        sessions = {b: ort.InferenceSession(str(Path(tmp) / "b" / f"{b}.onnx"), opts,
                                            providers=["CPUExecutionProvider"])
                    for b in ("video", "text")}
        print(f"\n{'branch':<6} {'batch':>5} {'torch ms/item':>14} {'ORT ms/item':>12} "
              f"{'ORT speed-up':>13}")
        for batch in BATCHES:
            pixels, ids = sample_inputs(model, batch)
            runs = {
                "video": (lambda p=pixels: model.encode_video(p).embed_norm,
                          lambda p=pixels: sessions["video"].run(
                              ["embeddings"], {"pixel_values": p.numpy()})),
                "text": (lambda i=ids: model.encode_text(i).embed_norm,
                         lambda i=ids: sessions["text"].run(
                             ["embeddings"], {"input_ids": i.numpy()})),
            }
            for branch, (eager, onnx_run) in runs.items():
                with torch.inference_mode():
                    t_torch = _per_item(eager, batch)
                t_ort = _per_item(onnx_run, batch)
                print(f"{branch:<6} {batch:>5} {t_torch * 1e3:>14.2f} {t_ort * 1e3:>12.2f} "
                      f"{t_torch / t_ort:>12.2f}x")


if __name__ == "__main__":
    main()
