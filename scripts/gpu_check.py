"""One-shot GPU check for a bare single-GPU host (run via scripts/gpu_check.sh; < 8 minutes).

Sections, each recorded in the JSON results (an error or a skip is a result, never a crash),
each started only while the time budget lasts:

* ``host``: the GPU probe (name, compute capability, UUID, PCI bus id, driver) and whether
  CUDA, opened on the probe's PCI bus id, sees the same card; package versions.
* ``cuda``: the cuda-python path of the TensorRT backend: pinned buffer -> device -> pinned
  round trip on a stream (equal, GB/s pinned vs pageable), and the GIL while waiting: a
  Python thread counts while the main thread waits on the GPU through
  :meth:`pig.engine.trt.cuda.Cuda.wait` (driver call, GIL released) and through cuda-python's
  ``cudaEventSynchronize``.
* ``nvdec``: clips made here (BT.709/BT.601 tagged, untagged, full range; mp4 with B-frames,
  mkv, webm, mov) decoded by :func:`pig.engine.media.nvdec.read_video_nvdec` against PyAV's
  :func:`read_video` (the reference): which decoder ran and why, indices, pixel difference;
  all frames (end-of-file case) and 12 sampled; the raw timestamps NVDEC returns for the last
  frames against the demux pts.
* ``torch``: the PIG video tower (released B/32 config, random weights) in torch on the GPU:
  fp32, TF32, fp16 and bf16 (autocast, fp32 islands) against fp32 without TF32, each judged
  by its own cosine threshold (:data:`THRESHOLDS`) and top-16 agreement; videos/s at batch
  1-64 eager and with CUDA graphs: the speed a TensorRT engine must beat.
* ``backends``: ONNX Runtime CPU fp32 vs ONNX Runtime CUDA and TensorRT where installed, on
  the demo model exported here (needs onnx).

``--dry-run`` runs what needs no GPU (clip making, the PyAV reference, the JSON, the verdicts)
and marks the GPU parts skipped: tests/test_gpu_hosts.py runs it in CI.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pig.engine.host import gpu as gpu_probe  # noqa: E402

# cosine (min over the batch) against fp32 without TF32, per precision
THRESHOLDS = {"fp32": 0.99999, "tf32": 0.9995, "fp16": 0.999, "bf16": 0.99}
BATCHES = (1, 8, 16, 32, 64)
BUDGET_S = 450.0  # the whole run; gpu_check.sh kills at 480 s
PACKAGES = ("torch", "onnxruntime", "onnxruntime-gpu", "cuda-python", "cuda-bindings", "cupy",
            "cupy-cuda12x", "cupy-cuda13x", "av", "usearch", "pynvvideocodec", "tensorrt",
            "numpy")


class Skip(Exception):
    """A section that cannot run here; the message says why."""


def _versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def _rate(fn: Callable[[], Any], sync: Callable[[], None], items: int,
          budget_s: float = 0.6) -> float:
    """items/s of ``fn`` (two warm-up calls, then until ``budget_s``)."""
    fn()
    fn()
    sync()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < budget_s or n < 3:
        fn()
        n += 1
        if n % 4 == 0:
            sync()
    sync()
    return n * items / (time.perf_counter() - t0)


# --- host --------------------------------------------------------------------------------------

def check_host(dry_run: bool) -> dict[str, Any]:
    found, why = gpu_probe.gpu_or_none()
    out: dict[str, Any] = {"versions": _versions()}
    if found is None:
        out["gpu"] = None
        out["why"] = why
        return out
    out["gpu"] = {"name": found.name, "sm": found.sm, "uuid": found.uuid,
                  "pci_bus_id": found.pci_bus_id, "driver": found.driver_version,
                  "memory_gib": round(found.memory_bytes / 2**30, 1), "source": found.source}
    if not dry_run:
        from pig.engine.trt.cuda import Cuda

        cuda = Cuda(found)
        out["cuda_device"] = {"ordinal": cuda.device, "name": cuda.device_name(),
                              "pci_bus_id": cuda.pci_bus_id()}
        out["same_card"] = cuda.pci_bus_id() == found.pci_bus_id
    return out


# --- cuda-python -------------------------------------------------------------------------------

def _count_while(wait: Callable[[], None]) -> tuple[int, float]:
    """How often a Python thread advanced while ``wait()`` blocked, and the wait's seconds."""
    count = [0]
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            count[0] += 1

    t = threading.Thread(target=spin)
    t.start()
    t0 = time.perf_counter()
    wait()
    took = time.perf_counter() - t0
    stop.set()
    t.join()
    return count[0], took


def check_cuda(dry_run: bool) -> dict[str, Any]:
    if dry_run:
        raise Skip("dry run")
    from pig.engine.trt.cuda import Cuda, DeviceBuffer, PinnedBuffer

    cuda = Cuda(gpu_probe.probe_gpu())
    shape = (64, 12, 3, 224, 224)  # one batch-64 float32 video input, 462 MB
    pinned = PinnedBuffer(cuda, shape, np.float32)
    back = PinnedBuffer(cuda, shape, np.float32)
    dev = DeviceBuffer(cuda, pinned.nbytes)
    stream, event = cuda.stream(), cuda.event()
    out: dict[str, Any] = {"cudart": cuda.rt.__name__, "driver_wait": cuda._sync is not None}
    try:
        pinned.array[:] = np.random.default_rng(1).standard_normal(shape, dtype=np.float32)
        t0 = time.perf_counter()
        cuda.copy_async(dev.ptr, pinned.ptr, pinned.nbytes, "h2d", stream)
        cuda.synchronize(stream)
        out["h2d_pinned_GBps"] = round(pinned.nbytes / (time.perf_counter() - t0) / 1e9, 1)
        cuda.copy_async(back.ptr, dev.ptr, pinned.nbytes, "d2h", stream)
        cuda.synchronize(stream)
        out["round_trip_equal"] = bool(np.array_equal(back.array, pinned.array))
        pageable = np.array(pinned.array)
        t0 = time.perf_counter()
        cuda.copy_async(dev.ptr, pageable.ctypes.data, pageable.nbytes, "h2d", stream)
        cuda.synchronize(stream)
        out["h2d_pageable_GBps"] = round(pageable.nbytes / (time.perf_counter() - t0) / 1e9, 1)

        def queue() -> None:  # ~20 copies of 462 MB: long enough to see the thread run
            for _ in range(20):
                cuda.copy_async(dev.ptr, pinned.ptr, pinned.nbytes, "h2d", stream)
            cuda.record(event, stream)

        queue()
        n, s = _count_while(lambda: cuda.wait(event))
        out["gil_driver_wait"] = {"python_steps": n, "wait_s": round(s, 3)}
        queue()
        n, s = _count_while(lambda: cuda.check(cuda.rt.cudaEventSynchronize(event)))
        out["gil_cudart_wait"] = {"python_steps": n, "wait_s": round(s, 3)}
        out["gil_released"] = out["gil_driver_wait"]["python_steps"] > 1000
    finally:
        for buf in (pinned, back, dev):
            buf.close()
        cuda.destroy_event(event)
        cuda.destroy_stream(stream)
    return out


# --- NVDEC -------------------------------------------------------------------------------------

BT709 = {"colorspace": 1, "color_range": 1, "color_primaries": 1, "color_trc": 1}
BT601 = {"colorspace": 6, "color_range": 1, "color_primaries": 6, "color_trc": 6}
CLIPS: dict[str, dict[str, Any]] = {
    "h264_bt709_bframes.mp4": {"n_frames": 61, "gop": 12, "bframes": 3, "color": BT709},
    "h264_bt601.mkv": {"n_frames": 47, "gop": 10, "color": BT601},
    "vp9_bt709.webm": {"codec": "libvpx-vp9", "n_frames": 33, "gop": 10, "color": BT709},
    "h264_bt709.mov": {"n_frames": 41, "gop": 15, "bframes": 2, "color": BT709},
    "h264_untagged.mp4": {"n_frames": 20},
    "h264_full_range.mp4": {"n_frames": 20, "color": {**BT709, "color_range": 2}},
}


def _clips(folder: Path) -> dict[str, Path]:
    from tests.clipgen import make_clip

    return {name: make_clip(folder / name, size=(320, 240), **spec)
            for name, spec in CLIPS.items()}


def _compare(got: Any, want: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"decoder": got.decoder,
                           "indices_equal": bool(np.array_equal(got.indices, want.indices))}
    if got.frames.shape == want.frames.shape:
        d = np.abs(got.frames.astype(np.int16) - want.frames.astype(np.int16))
        row.update(mean_levels=round(float(d.mean()), 3), p99_levels=float(np.percentile(d, 99)),
                   max_levels=int(d.max()))
    else:
        row["shapes"] = [list(got.frames.shape), list(want.frames.shape)]
    return row


def _raw_last_timestamps(path: Path, info: Any) -> dict[str, Any]:
    """NVDEC's own answer for the last three frames: the timestamps it returns vs the pts."""
    import PyNvVideoCodec as nvc

    dec = nvc.SimpleDecoder(str(path), gpu_id=0, use_device_memory=False,
                            output_color_type=nvc.OutputColorType.RGB)
    n = info.frame_count
    want = list(range(max(0, n - 3), n))
    frames = dec.get_batch_frames_by_index(want)
    return {"len": len(dec), "asked": want,
            "got_timestamps": [getattr(f, "timestamp", None) for f in frames],
            "demux_pts": [info.pts[i] for i in want] if info.pts else None}


def check_nvdec(dry_run: bool, folder: Path) -> dict[str, Any]:
    from pig.engine.media import nvdec, video

    clips = _clips(folder)
    out: dict[str, Any] = {}
    why = "dry run" if dry_run else nvdec.missing()
    out["missing"] = why
    for name, path in clips.items():
        info = video.probe(path)
        row: dict[str, Any] = {"frames": info.frame_count, "colorspace": info.colorspace,
                               "color_range": info.color_range,
                               "unsupported": nvdec.unsupported(info)}
        for label, t in (("all_frames", info.frame_count), ("T12", 12)):
            want = video.read_video(path, t)
            if why:
                row[label] = {"reference_frames": int(want.frames.shape[0])}
                continue
            t0 = time.perf_counter()
            got = nvdec.read_video_nvdec(path, t)
            row[label] = {**_compare(got, want), "s": round(time.perf_counter() - t0, 3)}
        if not why and not row["unsupported"]:
            try:
                row["raw_last"] = _raw_last_timestamps(path, info)
            except Exception as exc:
                row["raw_last"] = f"{type(exc).__name__}: {exc}"
        out[name] = row
    return out


# --- the model in torch ------------------------------------------------------------------------

def _video_fn(model: Any, special: Any) -> Callable[[Any], tuple[Any, Any]]:
    def run(px: Any) -> tuple[Any, Any]:
        o = model.encode_video(px, special)
        return model.retrieval_vector(o), o.topk_indices

    return run


def check_torch(dry_run: bool, batches: tuple[int, ...] = BATCHES) -> dict[str, Any]:
    if dry_run:
        raise Skip("dry run")
    import torch

    from pig.export.config import PigConfig
    from pig.export.model import PigModel

    if not torch.cuda.is_available():
        raise Skip("torch sees no CUDA device")
    dev = torch.device("cuda")
    torch.manual_seed(0)
    cfg = PigConfig()
    model = PigModel(cfg).eval().to(dev)
    with torch.no_grad():  # non-trivial temporal embeddings (zero-initialised in the model)
        for p in model.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.02)
    special = model.generator.clip_reconstructor.special_tokens().clone().to(dev)
    run = _video_fn(model, special)
    r = cfg.recipe
    gen = torch.Generator(device=dev).manual_seed(1)
    px = torch.randn((16, r.num_frames, 3, r.size, r.size), device=dev, generator=gen)
    out: dict[str, Any] = {"config": "released B/32 (random weights)", "gpu":
                           torch.cuda.get_device_name(), "thresholds": THRESHOLDS}

    def mode(name: str) -> Any:
        torch.backends.cuda.matmul.allow_tf32 = name == "tf32"
        torch.backends.cudnn.allow_tf32 = name == "tf32"
        if name in ("fp16", "bf16"):
            dtype = torch.float16 if name == "fp16" else torch.bfloat16
            return torch.autocast("cuda", dtype=dtype, cache_enabled=False)
        return torch.autocast("cuda", enabled=False)

    with torch.inference_mode():
        with mode("fp32"):
            ref, ref_top = run(px)
        ref = ref.double()
        parity = {}
        for name in THRESHOLDS:
            with mode(name):
                v, top = run(px)
            v = v.double()
            cos = (v * ref).sum(1) / (v.norm(dim=1) * ref.norm(dim=1))
            parity[name] = {"cos_min": float(cos.min()), "cos_mean": float(cos.mean()),
                            "topk_equal": float((top == ref_top).float().mean()),
                            "pass": bool(cos.min() >= THRESHOLDS[name])}
        out["parity"] = parity
        speed: dict[str, dict[str, float]] = {}
        for name in THRESHOLDS:
            with mode(name):
                speed[name] = {}
                for b in batches:
                    x = px[:1].expand(b, *px.shape[1:]).contiguous()
                    speed[name][str(b)] = round(_rate(lambda x=x: run(x), torch.cuda.synchronize,
                                                      b), 1)
        out["videos_per_s_eager"] = speed
        graphs: dict[str, float] = {}
        for b in batches:  # fp16 with CUDA graphs: launch overhead gone
            static = px[:1].expand(b, *px.shape[1:]).contiguous()
            with mode("fp16"):
                s = torch.cuda.Stream()
                s.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(s):
                    for _ in range(2):
                        run(static)
                torch.cuda.current_stream().wait_stream(s)
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g):
                    run(static)
            graphs[str(b)] = round(_rate(g.replay, torch.cuda.synchronize, b), 1)
        out["videos_per_s_fp16_cuda_graphs"] = graphs
        out["text"] = _text_lengths(model, cfg, dev, mode)
    out["pass"] = all(p["pass"] for p in parity.values()) and out["text"]["cut_equals_padded"]
    return out


def _text_lengths(model: Any, cfg: Any, dev: Any, mode: Callable[[str], Any],
                  cut: int = 20) -> dict[str, Any]:
    """The text tower on queries of ``cut - 2`` words padded to the model's length against
    the same queries cut after their EOS (what the runtime runs): the vectors must agree
    (causal tower, first-EOS pooling) and the cut must be faster; queries/s at batch 1 and 64."""
    import torch

    full = cfg.text_max_length
    gen = torch.Generator(device=dev).manual_seed(2)
    ids = torch.full((64, full), 49407, dtype=torch.int64, device=dev)
    ids[:, 0] = 49406
    ids[:, 1:cut - 1] = torch.randint(1, 49000, (64, cut - 2), device=dev, generator=gen)
    with mode("fp32"):
        padded = model.encode_text(ids).embed_norm.double()
        short = model.encode_text(ids[:, :cut].contiguous()).embed_norm.double()
    out: dict[str, Any] = {"lengths": {"padded": full, "cut": cut},
                           "max_abs_cut_vs_padded": float((padded - short).abs().max())}
    out["cut_equals_padded"] = out["max_abs_cut_vs_padded"] <= 1e-5
    for name in ("fp32", "fp16"):
        with mode(name):
            for b in (1, 64):
                rates = {}
                for label, x in (("padded", ids[:b].contiguous()),
                                 ("cut", ids[:b, :cut].contiguous())):
                    rates[label] = round(_rate(lambda x=x: model.encode_text(x),
                                               torch.cuda.synchronize, b), 1)
                rates["cut_over_padded"] = round(rates["cut"] / rates["padded"], 2)
                out[f"queries_per_s_{name}_batch{b}"] = rates
    return out


# --- backends ----------------------------------------------------------------------------------

def check_backends(dry_run: bool, folder: Path) -> dict[str, Any]:
    try:
        import onnx  # noqa: F401
    except ImportError as exc:
        raise Skip(f"onnx not installed ({exc}): the demo model cannot be exported") from None
    from pig.demo import steps as demo
    from pig.engine.backends.onnxruntime import OrtBackend
    from pig.engine.backends.onnxruntime import cuda_missing as ort_cuda_missing
    from pig.engine.backends.tensorrt import missing as trt_missing
    from pig.errors import PigError
    from tests.fake_bundle import token_ids

    bundle = demo.ensure_bundle(*demo.model_files(), folder / "bundle")
    r = bundle.recipe
    rng = np.random.default_rng(0)
    px = rng.standard_normal((16, r.num_frames, 3, r.size, r.size), dtype=np.float32)
    ids = token_ids(bundle.tokenizer_spec, 16)
    out: dict[str, Any] = {}
    with OrtBackend(bundle, "fp32", "cpu") as cpu:
        ref = cpu.encode_video(px)
        out["onnxruntime cpu fp32"] = {"videos/s@16": round(_rate(
            lambda: cpu.encode_video(px), lambda: None, 16), 1)}
        cpu.encode_text(ids)
    if dry_run:
        out["gpu rows"] = "dry run"
        return out
    rows: list[tuple[str, Callable[[], Any]]] = []
    if not ort_cuda_missing():
        rows.append(("onnxruntime cuda fp32", lambda: OrtBackend(bundle, "fp32", "cuda")))
    else:
        out["onnxruntime cuda"] = ort_cuda_missing()
    if not trt_missing():
        from pig.engine.backends.tensorrt import TrtBackend

        for p in ("fp32", "fp16"):
            if p in bundle.precisions("video"):
                rows.append((f"tensorrt {p}", lambda p=p: TrtBackend(bundle, p)))
    else:
        out["tensorrt"] = trt_missing()
    for label, opener in rows:
        try:
            with opener() as be:
                v = be.encode_video(px)
                cos = np.sum(v * ref, 1) / (np.linalg.norm(v, axis=1) * np.linalg.norm(ref, axis=1))
                out[label] = {"device": be.device, "cos_min": float(cos.min()),
                              "videos/s@16": round(_rate(lambda be=be: be.encode_video(px),
                                                         lambda: None, 16), 1)}
        except PigError as err:  # a refusal is a result
            out[label] = f"refused: {err}"
    return out


# --- driver ------------------------------------------------------------------------------------

def run_sections(sections: list[tuple[str, Callable[[], dict[str, Any]]]],
                 budget_s: float) -> dict[str, Any]:
    """Each section's result, error or skip, with its seconds; none starts after the budget."""
    results: dict[str, Any] = {}
    t_start = time.perf_counter()
    for name, fn in sections:
        if time.perf_counter() - t_start > budget_s:
            results[name] = {"skipped": f"time budget of {budget_s:.0f} s spent"}
            continue
        t0 = time.perf_counter()
        try:
            results[name] = fn()
        except Skip as why:
            results[name] = {"skipped": str(why)}
        except Exception as exc:  # a failing section is a result; the others still run
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
        results[name]["seconds"] = round(time.perf_counter() - t0, 1)
        print(f"{name}: {json.dumps(results[name])[:400]}", flush=True)
    return results


def verdict(results: dict[str, Any]) -> list[str]:
    """What failed: section errors, parity below its precision's threshold, NVDEC frames
    that differ from PyAV's while NVDEC ran."""
    bad = [f"{k}: {v['error']}" for k, v in results.items() if "error" in v]
    for name, p in results.get("torch", {}).get("parity", {}).items():
        if not p["pass"]:
            bad.append(f"torch {name}: cosine {p['cos_min']:.6f} < {THRESHOLDS[name]}")
    for clip, row in results.get("nvdec", {}).items():
        if not isinstance(row, dict):
            continue
        for label in ("all_frames", "T12"):
            r = row.get(label, {})
            if r.get("decoder") == "nvdec" and (not r.get("indices_equal") or
                                                r.get("mean_levels", 99) > 3.0):
                bad.append(f"nvdec {clip} {label}: {r}")
    return bad


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default="gpu_check.json", help="results file")
    ap.add_argument("--dry-run", action="store_true", help="no GPU parts (CI)")
    ap.add_argument("--only", nargs="*", help="sections to run (default: all)")
    ap.add_argument("--budget", type=float, default=BUDGET_S, help="seconds for all sections")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pig-gpucheck-") as tmp:
        scratch = Path(tmp)
        (scratch / "clips").mkdir()
        sections = [
            ("host", lambda: check_host(args.dry_run)),
            ("cuda", lambda: check_cuda(args.dry_run)),
            ("nvdec", lambda: check_nvdec(args.dry_run, scratch / "clips")),
            ("torch", lambda: check_torch(args.dry_run)),
            ("backends", lambda: check_backends(args.dry_run, scratch)),
        ]
        if args.only:
            sections = [s for s in sections if s[0] in args.only]
        results = run_sections(sections, args.budget)
    bad = verdict(results)
    results["failures"] = bad
    Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    print(f"results: {args.json}; {'FAIL: ' + '; '.join(bad) if bad else 'all checks passed'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
