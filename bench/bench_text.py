"""Text encoder with a dynamic text length: queries/s padded against cut, same run, and
``pig-engine serve`` of the full-size model with each.

Model: the full B/32 config with the official-reference random weights (speed does not depend
on the weights), exported once into ``.cache/bench/text/`` (a few minutes), or
``$PIG_BENCH_BUNDLE``; *padded* is the same bundle with its text graph fixed at the model's
text length (what bundles exported before the dynamic axis run: every query padded to 50
tokens), *cut* the bundle as exported (the backend cuts each call after its longest row's
first EOS, rows grouped in 4-token length bands; *cut-longest*: one group, cut to the
batch's longest row). Queries: the demo caption corpus (10-30 tokens with BOS/EOS, median 15).
Encoder alone: ONNX Runtime CPU, fp32, batch 1 and 64, interleaved, best of ``REPEATS``.
Serve: an index of ``CLIPS`` demo clips per bundle, ``pig-engine serve`` (fp32) at
concurrency 1 and 64 with batching on (``--max-batch 64``) and off (``--max-batch 1``),
``PIG_BENCH_SERVE_SECONDS`` (default 5) per point.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.bench_serve import load
from pig.demo import run as demo
from pig.demo.synth import captions
from pig.engine.backends.base import encode_cut_text
from pig.engine.backends.onnxruntime import OrtBackend
from pig.engine.bundle import Bundle
from pig.engine.graphs import MIN_TEXT_LENGTH
from pig.engine.tokenizer import ClipTokenizer
from pig.engine.trt.profiles import text_length_range
from tests.fake_bundle import with_fixed_text_length
from tests.serving import Server

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".cache" / "bench" / "text"
SPEC = REPO / "tests" / "reference" / "weights_spec.json"
CORPUS = 512
BATCHES = (1, 64)
REPEATS = 3
SECONDS = 2.0  # per measurement of the encoder alone
CLIPS = 16
MODES = {"on": ("--max-batch", 64), "off": ("--max-batch", 1)}


def full_bundle() -> Path:
    """The full-size bundle with a dynamic text axis (exported once)."""
    if env := os.environ.get("PIG_BENCH_BUNDLE"):
        return Path(env)
    out = CACHE / "bundle-full"
    if (out / "manifest.json").is_file() and text_length_range(Bundle.load(out)) is None:
        shutil.rmtree(out)  # exported before the dynamic text axis
    if not (out / "manifest.json").is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        ckpt = CACHE / "spec-full.pt"
        py = [sys.executable, "-m"]
        subprocess.run([*py, "pig.export.spec_weights", str(SPEC), "full", str(ckpt)],
                       check=True, capture_output=True)
        subprocess.run([*py, "pig.cli.export", "--onnx", "--checkpoint", str(ckpt),
                        "--assume-released-b32", "--out", str(out)], check=True,
                       capture_output=True)
        ckpt.unlink()
    return out


def _rate(fn: Callable[[], int]) -> float:
    fn()  # warm-up
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < SECONDS:
        done += fn()
    return done / (time.perf_counter() - t0)


def encoder_alone(cut: Bundle, padded: Bundle, ids: np.ndarray) -> dict[tuple[str, int], float]:
    """Queries/s per (variant, batch), best of REPEATS rounds of interleaved runs."""
    eos = cut.tokenizer_spec.eos_id
    with OrtBackend(cut, branches=("text",)) as dyn, OrtBackend(padded, branches=("text",)) as fix:
        run = dyn._runner("text")  # one session call, for the one-group variant
        variants = {
            "padded": fix.encode_text,
            "cut-longest": lambda x: encode_cut_text(run, x, eos, MIN_TEXT_LENGTH, 64,
                                                     bucket=x.shape[1]),
            "cut": dyn.encode_text,
        }
        best: dict[tuple[str, int], float] = {}
        for _ in range(REPEATS):
            for batch in BATCHES:
                parts = [ids[i:i + batch] for i in range(0, len(ids) - batch + 1, batch)]
                for name, encode in variants.items():
                    cycle = itertools.cycle(parts)
                    rate = _rate(lambda encode=encode, cycle=cycle, batch=batch:
                                 (encode(next(cycle)), batch)[1])
                    best[name, batch] = max(best.get((name, batch), 0.0), rate)
    return best


def main() -> None:
    cut_dir = full_bundle()
    padded_dir = CACHE / "bundle-full-padded"
    with_fixed_text_length(cut_dir, padded_dir)
    cut, padded = Bundle.load(cut_dir), Bundle.load(padded_dir)
    texts = captions(CORPUS)
    ids = ClipTokenizer(cut.tokenizer_spec).encode(texts)
    n = (ids == cut.tokenizer_spec.eos_id).argmax(axis=1) + 1
    print(f"full-size B/32, fp32, ONNX Runtime CPU, {os.cpu_count()} cores (shared hosts: "
          f"noisy); {CORPUS} demo captions: {n.min()}-{n.max()} tokens, median "
          f"{np.median(n):.0f}, text length {ids.shape[1]}")
    rates = encoder_alone(cut, padded, ids)
    for batch in BATCHES:
        row = "  ".join(f"{name} {rates[name, batch]:7.1f} q/s"
                        for name in ("padded", "cut-longest", "cut"))
        print(f"encoder alone, batch {batch:>2}: {row}  -> cut/padded "
              f"{rates['cut', batch] / rates['padded', batch]:.2f}x", flush=True)
    print(f"target: cut/padded at batch 64 >= 2.5x: "
          f"{rates['cut', 64] / rates['padded', 64]:.2f}x")

    clips = demo.ensure_clips(CACHE / "clips", CLIPS)
    results: dict[tuple[str, str, int], dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for variant, bundle in (("padded", padded_dir), ("cut", cut_dir)):
            index = CACHE / f"index-{variant}"
            demo.ensure_index(CACHE / "clips", clips, Bundle.load(bundle), index)
            for mode, flags in MODES.items():
                with Server("--index", index, "--bundle", bundle, "--precision", "fp32",
                            *flags, log=Path(tmp) / f"{variant}-{mode}.log") as server:
                    for c in (1, 64):
                        results[variant, mode, c] = r = load(server.url, texts, c)
                        print(f"serve {variant:>6}, batching {mode:>3}, concurrency {c:>2}: "
                              f"{r['qps']:6.1f} QPS  p50 {r['p50']:7.1f} ms  "
                              f"p99 {r['p99']:7.1f} ms  ({r['n']} requests)", flush=True)
    for mode in MODES:
        for c in (1, 64):
            print(f"serve batching {mode}, concurrency {c}: cut/padded "
                  f"{results['cut', mode, c]['qps'] / results['padded', mode, c]['qps']:.2f}x")


if __name__ == "__main__":
    main()
