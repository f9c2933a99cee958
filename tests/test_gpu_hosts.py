"""GPU hosts on first contact, without a GPU: every failure of opening the TensorRT backend
(cuda-python import, CUDA initialisation, the probe's card not visible or another card,
TensorRT import, deserialising, execution context, enqueue) is a BackendUnavailable that
``auto`` falls back from and an explicit request reports in one line (GpuFault: exit 3);
CUDA is initialised before any engine build; the two-slot copy/compute overlap; the GIL is
released while waiting on the GPU; the GPU extras' CUDA-major check."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import types
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from pig.engine.backends import select
from pig.engine.backends import tensorrt as tensorrt_backend
from pig.engine.backends.tensorrt import TrtOptions
from pig.engine.bundle import Bundle
from pig.engine.host import gpu
from pig.engine.trt import cuda as cuda_mod
from pig.engine.trt.profiles import BatchProfile
from pig.errors import EXIT_ENVIRONMENT, BackendUnavailable, GpuFault
from tests.fake_bundle import reference_video
from tests.test_trt import SIZES, _fake_cudart, _fake_tensorrt, trt_env  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
H100 = gpu.GpuInfo("NVIDIA H100 80GB HBM3", (9, 0), 80 << 30, "580.1", "nvml",
                   "GPU-8c0f1a2b-0000-1111-2222-333344445555", "0000:17:00.0")


@pytest.fixture(autouse=True)
def _no_driver_library(monkeypatch):
    """Stand-in handles never reach a real libcuda (the GIL test below uses its own)."""
    monkeypatch.setattr(cuda_mod, "_driver_sync", lambda: None)
    gpu.clear_probe_cache()
    yield
    gpu.clear_probe_cache()


@pytest.fixture
def rt(trt_env, monkeypatch):  # noqa: F811
    """A stand-in cudart that logs the order of what it is asked, on the probe's H100."""
    monkeypatch.setattr(gpu, "probe_gpu", lambda: H100)
    monkeypatch.setattr(tensorrt_backend.flavours, "module_present",  # TensorRT looks installed
                        lambda name: name in ("tensorrt", "cuda.bindings"))
    fake = _fake_cudart()
    fake.log = []
    for name in ("cudaFree", "cudaMemcpyAsync", "cudaEventRecord", "cudaStreamWaitEvent",
                 "cudaEventSynchronize", "cudaDeviceGetByPCIBusId"):
        fn = getattr(fake, name)

        def logged(*args, _fn=fn, _name=name):
            fake.log.append((_name, *args))
            return _fn(*args)

        setattr(fake, name, logged)
    uuid = bytes.fromhex(H100.uuid.removeprefix("GPU-").replace("-", ""))
    fake.cudaGetDeviceProperties = lambda dev: (0, SimpleNamespace(
        name=b"NVIDIA H100 80GB HBM3", major=9, minor=0, uuid=SimpleNamespace(bytes=uuid)))
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", fake)
    return fake


def _open(root: Path, backend: str = "tensorrt", lines: list[str] | None = None):
    return select.open_backend(Bundle.load(root), backend, "fp32",
                               options=[TrtOptions(BatchProfile(1, 2, 2))],
                               log=(lines.append if lines is not None else lambda _: None))


def _failing(rt, trt, monkeypatch, step: str) -> str:
    """Make ``step`` fail; returns what the error must say."""
    if step == "cudart import":
        real = cuda_mod.importlib.import_module

        def broken(name):
            if name.startswith("cuda."):
                raise OSError("libcudart.so.12: cannot open shared object file")
            return real(name)

        monkeypatch.setattr(cuda_mod.importlib, "import_module", broken)
        return "cuda-python cannot be imported"
    if step == "driver too old":
        rt.cudaFree = lambda ptr: (35, None)
        rt.cudaGetErrorString = lambda err: (0, b"CUDA driver version is insufficient")
        return "CUDA error 35 (CUDA driver version is insufficient); the NVIDIA driver is older"
    if step == "card not visible":
        rt.cudaDeviceGetByPCIBusId = lambda bus: (101, None)
        return "at PCI 0000:17:00.0 is not visible to CUDA"
    if step == "another card":
        rt.cudaGetDeviceProperties = lambda dev: (0, SimpleNamespace(
            name=b"NVIDIA A10", major=8, minor=6, uuid=SimpleNamespace(bytes=b"\1" * 16)))
        return "the GPU probe and CUDA disagree on the card"
    if step == "tensorrt import":
        monkeypatch.setitem(sys.modules, "tensorrt", None)
        return "TensorRT cannot be imported"
    if step == "deserialise":
        def boom(self, plan):
            raise RuntimeError("Serialization assertion magicTagRead failed")

        monkeypatch.setattr(trt.Runtime, "deserialize_cuda_engine", boom)
        return "deserialising the video plan failed: RuntimeError: Serialization assertion"
    if step == "context":
        monkeypatch.setattr(trt.Engine, "create_execution_context", lambda self: None)
        return "could not create an execution context for the video plan"
    raise AssertionError(step)


STEPS = ["cudart import", "driver too old", "card not visible", "another card",
         "tensorrt import", "deserialise", "context"]


@pytest.mark.parametrize("step", STEPS)
def test_each_failure_is_a_fallback_or_one_line(rt, trt_env, monkeypatch, step) -> None:  # noqa: F811
    trt, root = trt_env
    want = _failing(rt, trt, monkeypatch, step)
    with pytest.raises(BackendUnavailable) as err:
        _open(root)
    assert want in str(err.value) and "\n" not in str(err.value), str(err.value)
    if step not in ("tensorrt import",):
        assert isinstance(err.value, GpuFault) and err.value.exit_code == EXIT_ENVIRONMENT
    lines: list[str] = []
    with _open(root, "auto", lines) as be:  # auto: says why, then ONNX Runtime on the CPU
        assert be.name == "onnxruntime"
    assert want in lines[0] and "trying the next" in lines[0], lines
    assert any(str(line).startswith("backend: onnxruntime cpu fp32") for line in lines), lines


@pytest.mark.parametrize("step", ["driver too old", "card not visible"])
def test_cuda_is_checked_before_any_engine_build(rt, trt_env, monkeypatch, step) -> None:  # noqa: F811
    trt, root = trt_env
    _failing(rt, trt, monkeypatch, step)
    with pytest.raises(GpuFault):
        _open(root)
    assert trt.calls["builds"] == 0 and not list(root.glob("trt/*.plan"))


def test_cuda_selects_the_probed_card_by_bus_id(rt, trt_env) -> None:  # noqa: F811
    _, root = trt_env
    rt.cudaDeviceGetByPCIBusId = lambda bus: (0, 3)
    with _open(root) as be:
        assert be._cuda.device == 3
    assert ("cudaFree", 0) in rt.log  # the context was made at open


def test_enqueue_failure_is_one_line(rt, trt_env, monkeypatch) -> None:  # noqa: F811
    _, root = trt_env
    with _open(root) as be:
        ctx = be._engines["video"].context
        monkeypatch.setattr(type(ctx), "execute_async_v3", lambda self, stream: False)
        x = np.random.default_rng(2).standard_normal(
            (3, SIZES.frames, 3, SIZES.size, SIZES.size), dtype=np.float32)
        with pytest.raises(GpuFault, match="execute_async_v3 failed"):
            be.encode_video(x)
        monkeypatch.undo()
        monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", rt)
        # no slot stays in flight after the failure: the backend still works
        np.testing.assert_allclose(be.encode_video(x), reference_video(x, SIZES), atol=1e-5)


def _transfers(eng, log: list[tuple]) -> tuple[list[str], dict[str, set]]:
    """The backend's own copies ("h2d" into a slot's input, "d2h" out of a slot's output) and
    host waits, in order, and the streams of each copy kind (the stand-in engine's copies
    inside ``execute_async_v3`` are left out)."""
    dev_in = {s.dev_in.ptr for s in eng._slots}
    dev_out = {s.dev_out.ptr for s in eng._slots}
    kinds, streams = [], {}
    for op in log:
        if op[0] == "cudaEventSynchronize":
            kinds.append("wait")
        elif op[0] == "cudaMemcpyAsync":
            dst, src, stream = op[1], op[2], op[5]
            kind = "h2d" if dst in dev_in else "d2h" if src in dev_out else None
            if kind:
                kinds.append(kind)
                streams.setdefault(kind, set()).add(stream)
    return kinds, streams


def test_copy_of_next_batch_is_queued_before_waiting_on_the_previous(rt, trt_env) -> None:  # noqa: F811
    """5 rows at max batch 2: three chunks through two slots. Chunk k+1's copy is queued on
    the copy stream before the host waits for chunk k; each copy waits (on the GPU) until the
    inference that last read its slot finished; results are in order."""
    _, root = trt_env
    with _open(root) as be:
        eng = be._engines["video"]
        rng = np.random.default_rng(3)
        x = rng.standard_normal((5, SIZES.frames, 3, SIZES.size, SIZES.size), dtype=np.float32)
        rt.log.clear()
        np.testing.assert_allclose(be.encode_video(x), reference_video(x, SIZES), atol=1e-5)
        kinds, streams = _transfers(eng, rt.log)
    # submit 0 | wait for copy 0 out of the staging buffer, submit 1 | collect 0 |
    # wait for copy 1 out of staging, submit 2 | collect 1 | collect 2
    assert kinds == ["h2d", "d2h", "wait", "h2d", "d2h", "wait",
                     "wait", "h2d", "d2h", "wait", "wait"], kinds
    copy_stream, compute_stream = eng.copy_stream, eng.stream
    assert streams == {"h2d": {copy_stream}, "d2h": {compute_stream}}
    assert copy_stream != compute_stream
    waits = [op for op in rt.log if op[0] == "cudaStreamWaitEvent"]
    assert {w[1] for w in waits} == {copy_stream, compute_stream}


def test_pinned_inputs_overlap_without_staging(rt, trt_env) -> None:  # noqa: F811
    """Frames written into a handed-out pinned array: chunk 2's copy is queued before the
    host waits at all (no staging buffer to wait for)."""
    _, root = trt_env
    with _open(root) as be:
        (buf,) = be.video_input_buffers(1, 4)
        buf[:] = np.random.default_rng(4).standard_normal(buf.shape, dtype=np.float32)
        rt.log.clear()
        np.testing.assert_allclose(be.encode_video(buf), reference_video(buf, SIZES), atol=1e-5)
        kinds, _ = _transfers(be._engines["video"], rt.log)
    assert kinds == ["h2d", "d2h", "h2d", "d2h", "wait", "wait"], kinds


def test_wait_releases_the_gil() -> None:
    """Cuda.wait blocks in a ctypes call (the driver's cuEventSynchronize on a GPU), which
    releases the GIL: here a stand-in blocks in libc's sem_wait until a Python thread posts
    the semaphore, which that thread can only do while the GIL is free. Run in a child
    process: a held GIL would deadlock it, and the timeout turns that into a failure."""
    code = textwrap.dedent("""
        import ctypes, threading
        from pig.engine.trt import cuda as c
        libc = ctypes.CDLL(None)
        sem = ctypes.create_string_buffer(64)
        assert libc.sem_init(sem, 0, 0) == 0
        fn = libc.sem_wait
        fn.argtypes, fn.restype = [ctypes.c_void_p], ctypes.c_int
        cu = c.Cuda.__new__(c.Cuda)
        cu._sync = fn
        seen = []
        def poster():
            seen.append("python ran while the main thread waited")
            libc.sem_post(sem)
        t = threading.Thread(target=poster)
        t.start()
        cu.wait(ctypes.addressof(sem))
        t.join()
        print(seen[0])
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, env={"PYTHONPATH": str(ROOT),
                                                      "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert "python ran while the main thread waited" in done.stdout


def test_waits_use_the_driver_library_when_present(monkeypatch) -> None:
    calls: list[int] = []
    cu = cuda_mod.Cuda.__new__(cuda_mod.Cuda)
    cu._sync = lambda event: calls.append(event) or 0
    cu.wait(1234)
    assert calls == [1234]
    cu._sync = lambda event: 700  # CUDA_ERROR_ILLEGAL_ADDRESS
    with pytest.raises(GpuFault, match="driver error 700"):
        cu.wait(1234)


# --- extras per CUDA major ---------------------------------------------------------------------

def _checker() -> types.ModuleType:
    import importlib.util

    spec = importlib.util.spec_from_file_location("check_gpu_extras",
                                                  ROOT / "scripts" / "check_gpu_extras.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_extras_name_one_cuda_major_each() -> None:
    chk = _checker()
    extras = chk.gpu_extras()
    assert set(extras) == set(chk.EXTRAS) >= {"gpu-cu12", "gpu-cu13"}
    for name in ("gpu-cu12", "gpu-cu13"):
        heads = {r.split("[")[0].split(">")[0].split("<")[0] for r in extras[name]}
        assert heads == {f"tensorrt-cu{name[-2:]}", "cuda-python", "onnxruntime-gpu"}
        assert all("<" in r for r in extras[name]), "every pin has an upper bound"


@pytest.mark.parametrize(("name", "version", "reqs", "majors"), [
    ("tensorrt_cu12", "11.4.0.106", ["tensorrt_cu12_libs==11.4.0.106"], {12}),
    ("cuda-python", "13.4.4", ["cuda-bindings~=13.4.4", "cuda-core~=1.2.0"], {13}),
    ("onnxruntime-gpu", "1.26.0", ['nvidia-cuda-runtime-cu12~=12.0; extra == "cuda"'], {12}),
    ("onnxruntime-gpu", "1.31.1", ['nvidia-cuda-runtime~=13.0; extra == "cuda"',
                                   'nvidia-cudnn-cu13~=9.0; extra == "cudnn"'], {13}),
    ("onnxruntime", "1.31.1", ["numpy"], set()),
])
def test_cuda_major_evidence(name, version, reqs, majors) -> None:
    assert _checker().cuda_majors(name, version, reqs) == majors


def test_a_pin_of_another_cuda_fails_the_check() -> None:
    report = {"install": [{"metadata": {"name": "onnxruntime-gpu", "version": "1.31.1",
                                        "requires_dist": ['nvidia-cuda-runtime~=13.0']}}]}
    chk = _checker()
    assert chk.problems("gpu-cu12", 12, report) == [
        "gpu-cu12: onnxruntime-gpu 1.31.1 is built for CUDA [13], not 12"]
    assert chk.problems("gpu-cu13", 13, report) == []


# --- the GPU check script's CPU-runnable parts -------------------------------------------------

def _gpu_check() -> types.ModuleType:
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_check_dry_run_writes_json(tmp_path: Path) -> None:
    """--dry-run: clips made and decoded by the PyAV reference, GPU parts skipped, JSON
    written, exit 0; the colour cases are told apart by the stream facts."""
    out = tmp_path / "gpu_check.json"
    done = subprocess.run(
        [sys.executable, "scripts/gpu_check.py", "--dry-run", "--json", str(out),
         "--only", "host", "cuda", "nvdec", "torch"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "CUDA_VISIBLE_DEVICES": "-1"})
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads(out.read_text())
    assert results["failures"] == [] and results["host"]["gpu"] is None
    assert results["cuda"]["skipped"] == results["torch"]["skipped"] == "dry run"
    nv = results["nvdec"]
    assert nv["h264_bt709_bframes.mp4"]["unsupported"] == ""
    assert nv["h264_bt709_bframes.mp4"]["all_frames"] == {"reference_frames": 61}
    assert nv["h264_untagged.mp4"]["unsupported"].startswith("colour matrix 2")
    assert nv["h264_full_range.mp4"]["unsupported"].startswith("pixel format 'yuvj420p'")


def test_gpu_check_verdict_and_budget() -> None:
    gc = _gpu_check()
    results = {
        "torch": {"parity": {"fp16": {"pass": False, "cos_min": 0.99, "cos_mean": 0.995},
                             "bf16": {"pass": True, "cos_min": 0.995}}},
        "nvdec": {"missing": "", "a.mp4": {"T12": {"decoder": "nvdec", "indices_equal": True,
                                                   "mean_levels": 7.5}},
                  "b.mp4": {"T12": {"decoder": "pyav (nvdec: colour ...)"}}},
        "cuda": {"error": "GpuFault: CUDA error 35"},
    }
    bad = gc.verdict(results)
    assert len(bad) == 3 and bad[0].startswith("cuda: GpuFault")
    assert "torch fp16: cosine 0.990000 < 0.999" in bad
    assert bad[2].startswith("nvdec a.mp4 T12")
    assert set(gc.THRESHOLDS) == {"fp32", "tf32", "fp16", "bf16"}
    assert gc.THRESHOLDS["fp32"] > gc.THRESHOLDS["tf32"] > gc.THRESHOLDS["fp16"] \
        > gc.THRESHOLDS["bf16"]

    def boom() -> dict:
        raise RuntimeError("no NVDEC")

    ran = gc.run_sections([("a", lambda: {"x": 1}), ("b", boom), ("c", lambda: {})], 1e9)
    assert ran["a"]["x"] == 1 and ran["b"]["error"] == "RuntimeError: no NVDEC"
    late = gc.run_sections([("a", lambda: {})], -1.0)
    assert late["a"]["skipped"].startswith("time budget")


def test_uuid_as_signed_chars_is_the_same_card(rt, trt_env) -> None:  # noqa: F811
    """cuda-python may give ``cudaUUID_t.bytes`` as signed chars: still the probed card."""
    _, root = trt_env
    raw = bytes.fromhex(H100.uuid.removeprefix("GPU-").replace("-", ""))
    signed = [b - 256 if b > 127 else b for b in raw]
    rt.cudaGetDeviceProperties = lambda dev: (0, SimpleNamespace(
        name=b"NVIDIA H100 80GB HBM3", major=9, minor=0, uuid=SimpleNamespace(bytes=signed)))
    with _open(root) as be:
        assert be.name == "tensorrt"
