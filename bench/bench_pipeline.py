"""End-to-end ``pig-engine index`` throughput, pipeline efficiency and search latency.

Throughput (videos/s) of :func:`pig.engine.ingest.run.index_videos` into a fresh index, against
two baselines measured right before it on the same clips (the host is shared): *encoder only*
(``encode_video`` on pre-decoded, preprocessed batches: the ceiling) and *decode only* (the
worker threads' decode + preprocess alone, no encoder). Pipeline efficiency = end-to-end /
encoder only (target >= 0.85); when decode-only is below encoder-only, decoding is the bound
instead, and end-to-end / min(encoder, decode) shows how much of that the pipeline keeps.

Clips: the demo's held-out synthetic clips (64x64 model input) and 1,000 generated 320x240
10-second H.264 clips (GOP 50), both cached under ``.cache/bench/pipeline/``. Models: the
demo bundle (``bundles/pig-tiny``) and the reference ``small`` config (official widths, 12 x
224^2 frames, 2 layers per tower), exported once into the cache.

Search latency: one query per call, tokenise + text encode (the ``small`` bundle's 512-d text
tower) + HNSW search of the cached ``bench_search`` indexes of 10k and 100k structured vectors.

Environment: ``PIG_BENCH_PIPELINE_CLIPS`` (default 1000), ``PIG_BENCH_PIPELINE_BUNDLES``
(default ``demo,small``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import av
import numpy as np

from bench import results
from bench.bench_search import _build as cached_search_index
from pig.demo import steps as demo
from pig.engine.backends import open_backend
from pig.engine.bundle import Bundle
from pig.engine.index import VideoIndex
from pig.engine.ingest.options import PipelineOptions
from pig.engine.ingest.run import index_videos
from pig.engine.media.preprocess import preprocess_frames
from pig.engine.media.video import read_video
from pig.engine.media.walk import discover
from pig.engine.tokenizer import ClipTokenizer
from tests.clipgen import synth_frame

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".cache" / "bench" / "pipeline"
SPEC = REPO / "tests" / "reference" / "weights_spec.json"
CLIP_SIZE, CLIP_FRAMES, FPS, GOP = (320, 240), 250, 25, 50
SWEEP_CLIPS = {"demo": 200, "small": 48}  # clips per thread setting in the sweep
QUERIES = ["a small red circle moves to the left on a white background",
           "people dancing at a wedding", "a dog catches a frisbee in the park",
           "on black, a big blue square spins"]


def generated_clips(n: int) -> Path:
    """``n`` distinct 320x240 10 s clips (each a shifted copy of one animated scene)."""
    folder = CACHE / f"clips_{CLIP_SIZE[0]}x{CLIP_SIZE[1]}_{CLIP_FRAMES}f"
    folder.mkdir(parents=True, exist_ok=True)
    missing = [i for i in range(n) if not (folder / f"clip{i:05d}.mp4").is_file()]
    if missing:
        t0 = time.perf_counter()
        base = [synth_frame(i, *CLIP_SIZE) for i in range(CLIP_FRAMES)]
        for i in missing:
            tmp = folder / f".clip{i:05d}.mp4"
            with av.open(str(tmp), "w") as out:
                s = out.add_stream("libx264", rate=FPS)
                s.width, s.height, s.pix_fmt = *CLIP_SIZE, "yuv420p"
                s.codec_context.gop_size = GOP
                s.options = {"preset": "ultrafast", "crf": "26"}
                for j, frame in enumerate(base):
                    vf = av.VideoFrame.from_ndarray(np.roll(frame, 3 * i, axis=1), format="rgb24")
                    vf.pts = j
                    out.mux(s.encode(vf))
                out.mux(s.encode(None))
            tmp.rename(folder / f"clip{i:05d}.mp4")
        print(f"generated {len(missing)} clips in {time.perf_counter() - t0:.0f} s", flush=True)
    return folder


def bundle(name: str) -> Bundle:
    """The demo bundle or the reference ``small`` config's bundle (exported once)."""
    if name == "demo":
        checkpoint, config = demo.model_files()
        return demo.ensure_bundle(checkpoint, config, demo.BUNDLE)
    out = CACHE / f"bundle-{name}"
    if not (out / "manifest.json").is_file():
        ckpt = CACHE / f"spec-{name}.pt"
        py = [sys.executable, "-m"]
        subprocess.run([*py, "pig.export.spec_weights", str(SPEC), name, str(ckpt)], check=True,
                       capture_output=True)
        shutil.rmtree(out, ignore_errors=True)
        subprocess.run([*py, "pig.cli.export", "--onnx", "--checkpoint", str(ckpt),
                        "--assume-released-b32", "--out",
                        str(out)], check=True, capture_output=True)
        ckpt.unlink()
    return Bundle.load(out)


def _rate(fn: Callable[[], int], min_seconds: float = 3.0) -> float:
    """Items per second of repeated ``fn()`` calls (each returns its item count)."""
    fn()  # warm-up
    done, t0 = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < min_seconds:
        done += fn()
    return done / elapsed


def encoder_only(b: Bundle, files: list[Path], batch: int, threads: int) -> float:
    x = np.stack([preprocess_frames(read_video(f, b.recipe.num_frames).frames, b.recipe)
                  for f in files[:batch]])
    with open_backend(b, "onnxruntime", "fp32", branches=("video",),
                      threads=threads, log=lambda _: None) as enc:
        return _rate(lambda: len(enc.encode_video(x)))


def decode_only(b: Bundle, files: list[Path], workers: int) -> float:
    out = np.empty((b.recipe.num_frames, 3, b.recipe.size, b.recipe.size), np.float32)

    def one(f: Path) -> None:
        preprocess_frames(read_video(f, b.recipe.num_frames, threads=1).frames, b.recipe,
                          out=out, threads=1)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, files))
    return len(files) / (time.perf_counter() - t0)


def end_to_end(b: Bundle, files: list[Path], options: PipelineOptions) -> float:
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        report = index_videos(files, b, Path(tmp) / "index", options=options,
                              log=lambda _: None)
    assert not report.failed, report.failed[:3]
    return report.videos_per_second


def throughput_table(bundles: list[str], n_clips: int) -> None:
    """Thread settings swept on a subset of each clip set, then the default on all clips."""
    demo.ensure_clips(CACHE / "demo", 600)
    sets = {"demo held-out": discover([CACHE / "demo"]),
            "320x240 10 s": discover([generated_clips(n_clips)])[:n_clips]}
    print(f"{'clips':<14} {'n':>5} {'bundle':<6} {'workers':>7} {'ort thr':>7} {'e2e v/s':>8} "
          f"{'enc v/s':>8} {'dec v/s':>8} {'e2e/enc':>8} {'e2e/min':>8}")
    points: list[dict[str, object]] = []
    for name in bundles:
        b = bundle(name)
        sweep_n = SWEEP_CLIPS[name]
        for set_name, files in sets.items():
            runs = [(files[:sweep_n], PipelineOptions(workers=w, encoder_threads=t))
                    for w, t in ((1, 0), (2, 0), (2, 1), (3, 1))] + [(files, PipelineOptions())]
            for subset, opts in runs:
                # the host is shared: each baseline is measured right before its e2e run
                enc = encoder_only(b, files, opts.batch_size, 0)
                dec = decode_only(b, subset[:100], opts.workers)
                e2e = end_to_end(b, subset, opts)
                print(f"{set_name:<14} {len(subset):>5} {name:<6} {opts.workers:>7} "
                      f"{opts.encoder_threads or 'all':>7} {e2e:>8.1f} {enc:>8.1f} {dec:>8.1f} "
                      f"{e2e / enc:>8.2f} {e2e / min(enc, dec):>8.2f}", flush=True)
                points.append({"bundle": name, "clips": set_name, "n": len(subset),
                               "workers": opts.workers,
                               "ort_threads": opts.encoder_threads or "all", "e2e": e2e,
                               "enc": enc, "dec": dec, "default": subset is files})
    results.record("indexing", points)


def search_latency(b: Bundle) -> None:
    tok = ClipTokenizer(b.tokenizer_spec)
    print(f"\nsearch latency, one query per call ({b.dir.name}: {b.embedding_dim}-d text tower)")
    print(f"{'n':>8} {'p50 ms':>8} {'p99 ms':>8} {'encode p50':>11} {'search p50':>11}")
    with open_backend(b, "onnxruntime", "fp32", branches=("text",), log=lambda _: None) as enc:
        for n in (10_000, 100_000):
            with VideoIndex.open(cached_search_index(n, "f16")[0], view=True) as idx:
                total, encode, search = [], [], []
                for i in range(200):
                    t0 = time.perf_counter()
                    q = enc.encode_text(tok.encode([QUERIES[i % len(QUERIES)]]))
                    t1 = time.perf_counter()
                    idx.search(q, 10)
                    t2 = time.perf_counter()
                    total.append(t2 - t0)
                    encode.append(t1 - t0)
                    search.append(t2 - t1)
            ms = {k: 1e3 * np.asarray(v) for k, v in
                  {"total": total, "encode": encode, "search": search}.items()}
            print(f"{n:>8} {np.percentile(ms['total'], 50):>8.2f} "
                  f"{np.percentile(ms['total'], 99):>8.2f} "
                  f"{np.percentile(ms['encode'], 50):>11.2f} "
                  f"{np.percentile(ms['search'], 50):>11.3f}", flush=True)


def main() -> None:
    n_clips = int(os.environ.get("PIG_BENCH_PIPELINE_CLIPS", "1000"))
    bundles = os.environ.get("PIG_BENCH_PIPELINE_BUNDLES", "demo,small").split(",")
    CACHE.mkdir(parents=True, exist_ok=True)
    print(f"{os.cpu_count()} CPUs; batch {PipelineOptions().batch_size}; e2e = index_videos "
          "into a fresh index (plan + hash + decode + preprocess + encode + add + commits); "
          "enc = encoder only on pre-decoded batches; dec = decode + preprocess only")
    throughput_table(bundles, n_clips)
    b = bundle("small")
    if b.embedding_dim == 512:
        search_latency(b)


if __name__ == "__main__":
    main()
