"""TensorRT without a GPU: GPU probing, profiles, plan cache keys and invalidation, TensorRT
flavours, real engine builds through TensorRT-RTX's CPU-only AOT builder (``pig-export
--trt`` on the demo and the full B/32 bundle), and, through a stand-in ``tensorrt`` module,
what needs a GPU: executing engines (the backend's data path and buffer lifetimes) and the
TensorRT 10/11 builder paths (timing cache, TensorRT 11 flags) that TensorRT-RTX lacks."""

from __future__ import annotations

import ctypes
import importlib.machinery
import json
import os
import subprocess
import sys
import types
import weakref
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest

from pig.engine.bundle import Bundle
from pig.engine.graphs import CPU_ONLY_PRECISIONS
from pig.engine.host import gpu
from pig.engine.trt import build, flavour
from pig.engine.trt import cuda as cuda_mod
from pig.engine.trt.cache import PlanCache, PlanKey, Target, timing_cache_path
from pig.engine.trt.profiles import (
    TEXT_OPT_LENGTH,
    BatchProfile,
    profile_shapes,
    static_dims,
    text_length_range,
)
from pig.errors import BackendUnavailable, BundleError
from tests.fake_bundle import FakeSizes, reference_text, reference_video, write_bundle

SIZES = FakeSizes()
H100 = gpu.GpuInfo("NVIDIA H100 80GB HBM3", (9, 0), 80 << 30, "580.1", "nvml")
_REAL_PROBE = gpu.probe_gpu


@pytest.fixture(autouse=True)
def _fresh_probe(monkeypatch):
    gpu.clear_probe_cache()
    # stand-in handles must never reach the real driver library (tests/test_gpu_hosts.py
    # checks the driver wait itself)
    monkeypatch.setattr(cuda_mod, "_driver_sync", lambda: None)
    yield
    gpu.clear_probe_cache()


# --- GPU probing -------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["", "-1", "NoDevFiles"])
def test_hidden_devices_mean_no_gpu(monkeypatch, value) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", value)
    found, why = gpu.gpu_or_none()
    assert found is None and "hides every device" in why


def test_missing_device_nodes_mean_no_gpu(monkeypatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(gpu.os.path, "exists", lambda p: False)
    monkeypatch.setattr(gpu, "_nvml", lambda sel: pytest.fail("NVML must not be reached"))
    with pytest.raises(BackendUnavailable, match="no NVIDIA device nodes"):
        gpu.probe_gpu()


def test_nvidia_smi_fallback_parses_and_selects(monkeypatch, tmp_path) -> None:
    smi = tmp_path / "nvidia-smi"
    smi.write_text(
        "#!/bin/sh\n"
        "echo '0, GPU-aaa, NVIDIA A10, 8.6, 23028, 550.54, 00000000:17:00.0'\n"
        "echo '1, GPU-bbb, NVIDIA H100 80GB HBM3, 9.0, 81559, 550.54, 00000000:B3:00.0'\n"
    )
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path), prepend=os.pathsep)
    monkeypatch.setattr(gpu, "_check_device_nodes", lambda: None)

    def no_nvml(sel):
        raise OSError("libnvidia-ml.so.1: cannot open shared object file")

    monkeypatch.setattr(gpu, "_nvml", no_nvml)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-bbb")
    info = gpu.probe_gpu()
    assert (info.name, info.sm) == ("NVIDIA H100 80GB HBM3", "sm_90")
    assert info.memory_bytes == 81559 << 20 and info.source == "nvidia-smi"
    assert (info.uuid, info.pci_bus_id) == ("GPU-bbb", "0000:b3:00.0")  # as CUDA writes it
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")  # another selection is probed afresh
    assert str(gpu.probe_gpu()) == "NVIDIA A10 (sm_86)"


@pytest.mark.parametrize("smi_works", [True, False])
def test_probe_runs_nvidia_smi_once_per_process(monkeypatch, smi_works) -> None:
    calls: list[list[str]] = []

    def run(cmd, **kwargs):
        calls.append(cmd)
        if not smi_works:
            raise subprocess.CalledProcessError(9, cmd)
        return SimpleNamespace(stdout="0, GPU-aaa, NVIDIA A10, 8.6, 23028, 550.54, "
                                      "00000000:17:00.0\n")

    def no_nvml(sel):
        raise OSError("libnvidia-ml.so.1: cannot open shared object file")

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(gpu, "_check_device_nodes", lambda: None)
    monkeypatch.setattr(gpu, "_nvml", no_nvml)
    monkeypatch.setattr(gpu.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(gpu.subprocess, "run", run)
    found = [gpu.gpu_or_none(), gpu.gpu_or_none()]
    assert len(calls) == 1 and calls[0][0] == "/usr/bin/nvidia-smi"
    if smi_works:
        assert [str(g) for g, _ in found] == ["NVIDIA A10 (sm_86)"] * 2
    else:
        assert [g for g, _ in found] == [None, None]
        assert found[0][1] == found[1][1] and "nvidia-smi failed" in found[0][1]
    gpu.clear_probe_cache()
    gpu.gpu_or_none()
    assert len(calls) == 2


# --- profiles ----------------------------------------------------------------------------------

def test_batch_profile_parse_and_validation() -> None:
    assert BatchProfile.parse("1,8,64") == BatchProfile(1, 8, 64)
    assert BatchProfile.parse("32") == BatchProfile(1, 32, 32)
    assert BatchProfile(2, 4, 16).tag() == "b2-4-16"
    for bad in ("8,4,16", "0,1,2", "a,b,c", "1,2"):
        with pytest.raises(ValueError):
            BatchProfile.parse(bad)


def test_profile_shapes_fill_dynamic_dims_from_bundle() -> None:
    bundle = SimpleNamespace(recipe=SimpleNamespace(num_frames=12, size=224),
                             tokenizer_spec=SimpleNamespace(max_length=50))
    dims = static_dims(bundle, "video")
    assert dims == (12, 3, 224, 224) and static_dims(bundle, "text") == (50,)
    name, (lo, opt, hi) = profile_shapes(
        "video", {"pixel_values": (-1, -1, 3, 224, 224)}, dims, BatchProfile(1, 8, 64))
    assert name == "pixel_values"
    assert (lo, opt, hi) == ((1, 12, 3, 224, 224), (8, 12, 3, 224, 224), (64, 12, 3, 224, 224))
    _, shapes = profile_shapes("text", {"input_ids": (-1, 50)}, (50,), BatchProfile(4, 4, 4))
    assert shapes == ((4, 50), (4, 50), (4, 50))


def test_text_profile_spans_the_lengths_of_a_dynamic_text_graph() -> None:
    def bundle(shape):
        return SimpleNamespace(tokenizer_spec=SimpleNamespace(max_length=50),
                               graph_entry=lambda *_: {"inputs": {"input_ids": {"shape": shape}}})

    assert text_length_range(bundle(["batch", "seq"])) == (2, TEXT_OPT_LENGTH, 50)
    assert text_length_range(bundle(["batch", 50])) is None  # exported before: fixed length
    _, shapes = profile_shapes("text", {"input_ids": (-1, -1)}, (50,), BatchProfile(1, 8, 64),
                               (2, 20, 50))
    assert shapes == ((1, 2), (8, 20), (64, 50))
    with pytest.raises(ValueError, match="dim 1 is fixed at 50, cannot profile text lengths"):
        profile_shapes("text", {"input_ids": (-1, 50)}, (50,), BatchProfile(), (2, 20, 50))
    key = _key(branch="text", lengths=(2, 20, 50))
    assert key.stem().startswith("text.fp16.b1-8-64.s2-20-50.") and key != _key(branch="text")
    assert PlanKey.from_dict(key.to_dict()) == key


@pytest.mark.parametrize(("inputs", "match"), [
    ({"pixel_values": (-1, 8, 3, 224, 224)}, "dim 1 is 8, bundle says 12"),
    ({"pixel_values": (-1, 3, 224, 224)}, "rank 4"),
    ({"pixel_values": (1, 12, 3, 224, 224)}, "batch dim is fixed at 1"),
    ({"images": (-1, 12, 3, 224, 224)}, "expected \\['pixel_values'\\]"),
])
def test_profile_shapes_reject_mismatches(inputs, match) -> None:
    with pytest.raises(ValueError, match=match):
        profile_shapes("video", inputs, (12, 3, 224, 224), BatchProfile())


# --- plan cache --------------------------------------------------------------------------------

def _key(**change) -> PlanKey:
    base = dict(branch="video", precision="fp16", onnx_sha256="a" * 64, flavour="tensorrt",
                trt_version="10.9.0", target=Target.device(H100),
                profile=BatchProfile(1, 8, 64), workspace_bytes=1 << 30, strongly_typed=True)
    return PlanKey.make(**{**base, **change})


RTX4090 = gpu.GpuInfo("NVIDIA GeForce RTX 4090", (8, 9), 24 << 30, "580.1", "nvml")
KEY_CHANGES = {
    "flavour": {"flavour": "tensorrt-rtx"},
    "trt_version": {"trt_version": "10.10.0"},
    "gpu_name": {"target": Target.device(
        gpu.GpuInfo("NVIDIA H200", (9, 0), 141 << 30, "580.1", "nvml"))},
    "compute_capability": {"target": Target.device(
        gpu.GpuInfo(H100.name, (8, 9), 80 << 30, "580.1", "nvml"))},
    "portable targets": {"target": Target("", ("8.6", "8.9"))},
    "precision": {"precision": "int8"},
    "profile": {"profile": BatchProfile(1, 16, 64)},
    "onnx_sha256": {"onnx_sha256": "b" * 64},
    "workspace": {"workspace_bytes": 2 << 30},
    "strongly_typed": {"strongly_typed": False},
    "branch": {"branch": "text"},
}


def test_key_is_stable_and_readable() -> None:
    assert _key() == _key() and _key().digest() == _key().digest()
    assert _key().stem().startswith("video.fp16.b1-8-64.nvidia-h100-80gb-hbm3-sm90.trt10.9.0.")
    aot = _key(flavour="tensorrt-rtx", trt_version="1.7.1.116", target=Target("", ("8.6", "12.0")))
    assert aot.stem().startswith("video.fp16.b1-8-64.aot-sm86-sm120.trtrtx1.7.1.116.")
    assert PlanKey.from_dict(aot.to_dict()) == aot


def test_portable_plans_cover_the_gpus_they_list(tmp_path) -> None:
    """On a GPU, a cached TensorRT-RTX AOT plan listing its compute capability is found;
    one built for another set, another key, or a damaged sidecar is not."""
    cache = PlanCache(tmp_path)
    rtx = dict(flavour="tensorrt-rtx", trt_version="1.7.1.116")
    wanted = _key(**rtx, target=Target.device(RTX4090))
    portable = _key(**rtx, target=Target("", ("8.6", "8.9", "12.0")))
    cache.store(portable, b"aot")
    cache.store(_key(**rtx, target=Target("", ("8.6", "12.0"))), b"other-set")
    cache.store(_key(**rtx, target=Target("", ("8.9",)), precision="int8"), b"other-key")
    (tmp_path / "video.fp16.broken.json").write_text("{")
    assert cache.covering(wanted, RTX4090) == [portable]
    assert cache.covering(wanted, H100) == []
    assert Target.device(RTX4090).covers(RTX4090) and not Target.device(RTX4090).covers(H100)


@pytest.mark.parametrize("component", sorted(KEY_CHANGES))
def test_changing_any_key_component_misses_the_cache(tmp_path, component) -> None:
    cache = PlanCache(tmp_path)
    cache.store(_key(), b"plan-bytes")
    assert cache.load(_key()) == (b"plan-bytes", "")
    plan, why = cache.load(_key(**KEY_CHANGES[component]))
    assert plan is None and "no cached plan" in why


def test_foreign_or_damaged_plans_are_never_loaded(tmp_path) -> None:
    cache = PlanCache(tmp_path)
    old, new = _key(trt_version="10.1.0"), _key()
    cache.store(old, b"old-plan")
    for src, dst in zip(cache.paths(old), cache.paths(new), strict=True):
        dst.write_bytes(src.read_bytes())  # a plan copied under the current key's name
    plan, why = cache.load(new)
    assert plan is None and "built for different trt_version" in why

    cache.store(new, b"good-plan")
    cache.paths(new)[0].write_bytes(b"good-")  # truncated
    plan, why = cache.load(new)
    assert plan is None and "sha256" in why

    cache.paths(new)[1].write_text("{not json")
    assert cache.load(new)[0] is None


def test_timing_cache_is_per_gpu_and_trt_version(tmp_path) -> None:
    a = timing_cache_path(tmp_path, "10.9.0", H100)
    assert a.name == "timing.nvidia-h100-80gb-hbm3-sm_90.trt10.9.0.cache"
    assert timing_cache_path(tmp_path, "11.0.0", H100) != a


# --- builder through a stand-in tensorrt module ------------------------------------------------

def _fake_tensorrt(version: str, strongly_typed_flag: bool) -> types.ModuleType:
    """Just enough of the TensorRT Python API for build.py, recording what it is asked."""
    trt = types.ModuleType("tensorrt")
    trt.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)  # "installed"
    trt.__version__ = version
    trt.calls = {"builds": 0, "flags": [], "shapes": [], "workspace": [], "timing_in": [],
                 "outputs": []}
    trt.NetworkDefinitionCreationFlag = SimpleNamespace(
        **({"STRONGLY_TYPED": 1} if strongly_typed_flag else {}))
    trt.MemoryPoolType = SimpleNamespace(WORKSPACE="workspace")

    class Logger:
        WARNING = 2

        def __init__(self, level):
            pass

    class ILogger:
        Severity = SimpleNamespace(INTERNAL_ERROR=0, ERROR=1, WARNING=2)

        def __init__(self):
            pass

    class IProgressMonitor:
        def __init__(self):
            pass

    class Network:
        def __init__(self):
            self.inputs, self.outputs = [], []

        @property
        def num_inputs(self):
            return len(self.inputs)

        def get_input(self, i):
            return self.inputs[i]

        @property
        def num_outputs(self):
            return len(self.outputs)

        def get_output(self, i):
            return self.outputs[i]

        def unmark_output(self, t):
            self.outputs.remove(t)

    class OnnxParser:
        def __init__(self, network, logger):
            self.network = network
            self.num_errors = 0

        def parse_from_file(self, path):
            graph = onnx.load(path).graph
            for vi, into in [(v, self.network.inputs) for v in graph.input] + [
                    (v, self.network.outputs) for v in graph.output]:
                tt = vi.type.tensor_type
                dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim]
                dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).name
                into.append(SimpleNamespace(name=vi.name, shape=dims, dtype=dtype))
            return True

    class TimingCache:
        def __init__(self, blob):
            self.blob = bytes(blob)

        def serialize(self):
            return self.blob + b"+"

    class Config:
        progress_monitor = None

        def set_memory_pool_limit(self, pool, size):
            trt.calls["workspace"].append((pool, size))

        def add_optimization_profile(self, profile):
            trt.calls["shapes"].append(profile.shapes)
            self.profile = profile

        def create_timing_cache(self, blob):
            trt.calls["timing_in"].append(bytes(blob))
            return TimingCache(blob)

        def set_timing_cache(self, cache, ignore_mismatch):
            self.cache = cache

        def get_timing_cache(self):
            return self.cache

    class Profile:
        def set_shape(self, name, lo, opt, hi):
            self.shapes = (name, lo, opt, hi)

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            trt.calls["flags"].append(flags)
            return Network()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            trt.calls["builds"] += 1
            trt.calls["outputs"].append([t.name for t in network.outputs])
            config.progress_monitor.phase_start("Building engine", None, 3)
            config.progress_monitor.phase_finish("Building engine")
            name, *shapes = config.profile.shapes
            return f"plan#{trt.calls['builds']}:".encode() + json.dumps([name, shapes]).encode()

    trt.Logger, trt.ILogger, trt.IProgressMonitor = Logger, ILogger, IProgressMonitor
    trt.OnnxParser = OnnxParser
    trt.Builder = Builder
    _add_fake_runtime(trt)
    return trt


def _add_fake_runtime(trt: types.ModuleType) -> None:
    """A runtime whose engines compute the fake bundle's numpy reference on host memory
    addresses (the stand-in cudart below makes "device" pointers plain host memory).
    ``trt.live`` holds the runtimes, engines and contexts not yet freed."""
    trt.nptype = np.dtype
    trt.live = weakref.WeakSet()

    class Engine:
        def __init__(self, plan: bytes):
            trt.live.add(self)
            name, (lo, _, hi) = json.loads(plan.split(b":", 1)[1])
            self.input, self.min_shape, self.max_shape = name, tuple(lo), tuple(hi)
            self.num_io_tensors = 2

        def get_tensor_name(self, i):
            return (self.input, "embeddings")[i]

        def get_tensor_profile_shape(self, name, index):
            return self.min_shape, None, self.max_shape

        def get_tensor_shape(self, name):
            return (-1, SIZES.dim)

        def get_tensor_dtype(self, name):
            return "float32" if name != "input_ids" else "int64"

        def create_execution_context(self):
            return Context(self)

    class Context:
        def __init__(self, engine):
            trt.live.add(self)
            self.engine, self.addr, self.shape = engine, {}, None

        def set_input_shape(self, name, shape):
            self.shape = tuple(shape)

        def set_tensor_address(self, name, ptr):
            self.addr[name] = ptr

        def execute_async_v3(self, stream):
            dtype = np.int64 if self.engine.input == "input_ids" else np.float32
            ref = reference_text if dtype == np.int64 else reference_video
            x = np.empty(self.shape, dtype)
            _copy(x.ctypes.data, self.addr[self.engine.input], x.nbytes, "d2h", stream)
            y = ref(x, SIZES).astype(np.float32)
            _copy(self.addr["embeddings"], y.ctypes.data, y.nbytes, "h2d", stream)
            trt.calls.setdefault("executed", []).append(self.shape[0])
            return True

    class Runtime:
        def __init__(self, logger):
            trt.live.add(self)

        def deserialize_cuda_engine(self, plan):
            return Engine(plan)

    trt.Runtime, trt.Engine = Runtime, Engine


def _copy(dst: int, src: int, nbytes: int, kind: str, stream: int) -> None:
    """Synchronous copy through whichever cudart is installed (real or stand-in)."""
    from pig.engine.trt.cuda import Cuda

    cuda = Cuda()
    cuda.copy_async(dst, src, nbytes, kind, stream)
    cuda.synchronize(stream)


def _fake_cudart(fail: dict[str, int] | None = None) -> types.ModuleType:
    """cuda-python's runtime API over host memory: (err, value) tuples, memmove copies.
    ``rt.calls`` counts the successful allocations, frees and stream creations/destructions;
    ``fail`` maps one of those functions to the call number that returns an error instead."""
    rt = types.ModuleType("cuda.bindings.runtime")
    rt.blocks = {}
    rt.calls = Counter()

    def counted(name, fn):
        def call(*args):
            if name == "cudaFree" and args == (0,):  # CUDA's idiom to initialise: no block
                return (0,)
            if (fail or {}).get(name) == rt.calls[name] + 1:
                return 2, None  # cudaErrorMemoryAllocation
            rt.calls[name] += 1
            return fn(*args)

        return call
    rt.cudaMemcpyKind = SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)

    def alloc(nbytes):
        block = np.zeros(nbytes, np.uint8)
        rt.blocks[block.ctypes.data] = block
        return 0, block.ctypes.data

    def free(ptr):
        del rt.blocks[ptr]
        return (0,)

    def event_sync(event):
        rt.waited.append(event)
        return (0,)

    def memcpy(dst, src, nbytes, kind, stream):
        ctypes.memmove(dst, src, nbytes)
        return (0,)

    for name, fn in (("cudaMallocHost", alloc), ("cudaMalloc", alloc), ("cudaFreeHost", free),
                     ("cudaFree", free), ("cudaStreamCreate", lambda: (0, 7 + rt.calls[
                         "cudaStreamCreate"])),
                     ("cudaStreamDestroy", lambda stream: (0,))):
        setattr(rt, name, counted(name, fn))
    rt.cudaMemcpyAsync = memcpy
    rt.cudaSetDevice = lambda dev: (0,)
    rt.cudaDeviceGetByPCIBusId = lambda bus: (0, 0)
    rt.cudaEventDisableTiming = 2
    rt.events = iter(range(100, 10**6))
    rt.cudaEventCreateWithFlags = lambda flags: (0, next(rt.events))
    rt.cudaEventDestroy = lambda event: (0,)
    rt.cudaEventRecord = lambda event, stream: (0,)
    rt.cudaStreamWaitEvent = lambda stream, event, flags: (0,)
    rt.waited = []
    rt.cudaEventSynchronize = event_sync
    rt.cudaStreamSynchronize = lambda stream: (0,)
    rt.cudaGetErrorString = lambda err: (0, b"fake error")
    rt.cudaGetDeviceProperties = lambda dev: (0, SimpleNamespace(name=b"NVIDIA H100", major=9,
                                                                 minor=0))
    return rt


@pytest.fixture
def trt_env(monkeypatch, tmp_path):
    monkeypatch.setattr(gpu, "probe_gpu", lambda: H100)
    monkeypatch.delenv("PIG_TRT_CACHE", raising=False)
    fake = _fake_tensorrt("10.9.0", strongly_typed_flag=True)
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    root = write_bundle(tmp_path / "bundle", SIZES, precisions=("fp32", "fp16"))
    return fake, root


def test_build_then_reuse_then_rebuild_on_change(trt_env, monkeypatch) -> None:
    fake, root = trt_env
    bundle = Bundle.load(root)
    lines: list[str] = []
    plans = build.build_engines(bundle, "fp16", BatchProfile(1, 8, 64), 1 << 30, log=lines.append)
    assert set(plans) == {"video", "text"} and fake.calls["builds"] == 2
    assert all(p.parent == root / "trt" and p.exists() for p in plans.values())
    assert fake.calls["flags"] == [1 << 1, 1 << 1]  # STRONGLY_TYPED, no EXPLICIT_BATCH
    assert fake.calls["workspace"] == [("workspace", 1 << 30)] * 2
    t, s = SIZES.frames, SIZES.size
    assert fake.calls["shapes"][0] == (
        "pixel_values", (1, t, 3, s, s), (8, t, 3, s, s), (64, t, 3, s, s))
    assert fake.calls["shapes"][1] == (
        "input_ids", (1, SIZES.length), (8, SIZES.length), (64, SIZES.length))
    assert any("[trt] Building engine" in ln for ln in lines)
    assert fake.calls["outputs"] == [["embeddings"]] * 2  # clip_embeddings unmarked
    # the timing cache persisted by the first build is fed to the second
    assert fake.calls["timing_in"] == [b"", b"+"]
    sidecar = json.loads(plans["video"].with_suffix(".json").read_text())
    assert sidecar["key"]["gpu_name"] == H100.name and sidecar["key"]["profile"] == [1, 8, 64]

    build.build_engines(bundle, "fp16", BatchProfile(1, 8, 64), 1 << 30, log=lines.append)
    assert fake.calls["builds"] == 2  # both reused from the cache

    plan, _ = build.ensure_plan(bundle, "video", "fp16", BatchProfile(1, 8, 64), 2 << 30,
                                log=lines.append)
    assert fake.calls["builds"] == 3 and plan.startswith(b"plan#3:")  # workspace is in the key
    fake.__version__ = "10.10.0"
    build.ensure_plan(bundle, "video", "fp16", BatchProfile(1, 8, 64), 1 << 30, log=lines.append)
    assert fake.calls["builds"] == 4  # new TensorRT version


def test_changed_onnx_graph_is_rebuilt(trt_env) -> None:
    fake, root = trt_env
    build.ensure_plan(Bundle.load(root), "text", "fp32", log=lambda _: None)
    write_bundle(root, SIZES, seed=1, precisions=("fp32", "fp16"))  # re-exported, trt/ kept
    build.ensure_plan(Bundle.load(root), "text", "fp32", log=lambda _: None)
    assert fake.calls["builds"] == 2
    assert len(list((root / "trt").glob("text.fp32.*.plan"))) == 2


def test_modified_onnx_file_is_refused(trt_env) -> None:
    fake, root = trt_env
    with (root / "text.onnx").open("ab") as f:
        f.write(b"\0")
    with pytest.raises(BundleError, match=r"text\.onnx: sha256 differs from the manifest"):
        build.ensure_plan(Bundle.load(root), "text", "fp32", log=lambda _: None)
    assert fake.calls["builds"] == 0


def test_plan_cache_folder_from_environment(trt_env, monkeypatch, tmp_path) -> None:
    _, root = trt_env
    monkeypatch.setenv("PIG_TRT_CACHE", str(tmp_path / "plans"))
    _, path = build.ensure_plan(Bundle.load(root), "text", "fp32", log=lambda _: None)
    assert path.parent == tmp_path / "plans" and not (root / "trt").exists()


def test_tensorrt_11_without_strongly_typed_flag(trt_env, monkeypatch) -> None:
    _, root = trt_env
    fake = _fake_tensorrt("11.0.0", strongly_typed_flag=False)
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    _, path = build.ensure_plan(Bundle.load(root), "text", "fp32", log=lambda _: None)
    assert fake.calls["flags"] == [0]
    assert json.loads(path.with_suffix(".json").read_text())["key"]["strongly_typed"] is True


def test_compute_capability_targets_need_tensorrt_rtx(trt_env) -> None:
    fake, root = trt_env
    with pytest.raises(BackendUnavailable, match=r"--compute-capability needs TensorRT-RTX; "
                                                 r"TensorRT 10\.9\.0 builds for the GPU present"):
        build.ensure_plan(Bundle.load(root), "text", "fp32", targets=["8.6"])
    assert fake.calls["builds"] == 0


def test_bundle_without_precision_is_a_clear_error(trt_env) -> None:
    _, root = trt_env
    with pytest.raises(BundleError, match="no int8 graphs"):
        build.build_engines(Bundle.load(root), "int8")


def test_no_gpu_refuses_before_touching_tensorrt(monkeypatch, tmp_path) -> None:
    """Without a GPU, ``tensorrt`` (10/11) is never imported: the runtime refuses, and only
    TensorRT-RTX may build (ahead of time)."""
    touched: list[str] = []

    class Tripwire(types.ModuleType):
        def __getattr__(self, name):
            touched.append(name)
            raise AttributeError(name)

    monkeypatch.setitem(sys.modules, "tensorrt", Tripwire("tensorrt"))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    bundle = Bundle.load(write_bundle(tmp_path / "b", SIZES))
    with pytest.raises(BackendUnavailable, match="no GPU"):
        build.ensure_plan(bundle, "text", "fp32", gpu_required=True)
    from pig.engine.backends.tensorrt import TrtBackend

    with pytest.raises(BackendUnavailable, match="no GPU"):
        TrtBackend(bundle, "fp32")
    assert flavour.installed_names(None) == [n for n in flavour.RTX_MODULES
                                             if flavour.module_present(n)]
    assert touched == []


def test_no_tensorrt_module_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.setattr(flavour, "module_present", lambda name: False)
    with pytest.raises(BackendUnavailable, match="no TensorRT Python package is installed"):
        build.import_tensorrt(H100)
    with pytest.raises(BackendUnavailable, match="no GPU: test; and TensorRT-RTX"):
        build.import_tensorrt(None, "no GPU: test")


def test_pinned_source_uses_buffer_identity() -> None:
    """The in-place path of the TensorRT engine is taken only for rows of one of the pinned
    arrays it handed out, when the array holds the rows the run needs from there."""
    from pig.engine.backends.tensorrt import _Engine

    host, handed = np.zeros((4, 3), np.float32), np.zeros((2, 3), np.float32)
    eng = _Engine.__new__(_Engine)
    eng.handed_out = [SimpleNamespace(array=a, ptr=a.ctypes.data) for a in (host, handed)]
    eng.in_dtype = np.dtype(np.float32)
    assert eng._pinned_source(host[:2], 2).ctypes.data == host.ctypes.data
    assert eng._pinned_source(handed[:1], 2).ctypes.data == handed.ctypes.data
    assert eng._pinned_source(handed[:1], 3) is None  # padding to 3 rows would overflow
    later = eng._pinned_source(host[1:3], 2)  # a later chunk of a larger batch
    assert later.ctypes.data == host[1:].ctypes.data and later.shape == (3, 3)
    assert eng._pinned_source(host[3:], 2) is None
    assert eng._pinned_source(host.copy(), 4) is None
    assert eng._pinned_source(host.astype(np.float16), 4) is None


def _real_cudart() -> types.ModuleType | None:
    """cuda-python's runtime when this machine has a GPU and cuda-python, else None."""
    from pig.engine.trt.cuda import import_cudart

    try:
        _REAL_PROBE()
        return import_cudart()
    except BackendUnavailable:
        return None


@pytest.mark.parametrize("cudart", ["stand-in", "real"])
def test_trt_backend_data_path(trt_env, monkeypatch, cudart) -> None:
    """TrtBackend with a stand-in TensorRT whose engine runs the numpy reference: batch
    splitting at the profile max, the pinned-buffer in-place path, output slicing, and every
    buffer freed on close. With "real", cuda-python moves the data (runs on GPU machines)."""
    from pig.engine.backends.tensorrt import TrtBackend

    fake, root = trt_env
    if cudart == "real":
        rt = _real_cudart()
        if rt is None:
            pytest.skip("needs a GPU and cuda-python")
    else:
        rt = _fake_cudart()
        monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", rt)
    be = TrtBackend(Bundle.load(root), "fp32", profile=BatchProfile(2, 2, 4))
    assert be.name == "tensorrt" and "(sm_" in be.device and "TensorRT 10.9.0" in be.device
    rng = np.random.default_rng(0)
    px = rng.standard_normal((6, SIZES.frames, 3, SIZES.size, SIZES.size), dtype=np.float32)
    np.testing.assert_allclose(be.encode_video(px), reference_video(px, SIZES), atol=1e-5)
    assert fake.calls["executed"] == [4, 2]

    bufs = be.video_input_buffers(2, 3)  # what the pipeline keeps in flight
    copies: list[int] = []
    real_copyto = np.copyto
    monkeypatch.setattr(np, "copyto", lambda *a, **k: (copies.append(1), real_copyto(*a, **k)))
    for i, buf in enumerate(bufs):
        buf[:] = px[i: i + 3]
        out = be.encode_video(buf)
        np.testing.assert_allclose(out, reference_video(px[i: i + 3], SIZES), atol=1e-5)
    (big,) = be.video_input_buffers(1, 6)  # above the profile max 4: two chunks, in place
    big[:] = px
    np.testing.assert_allclose(be.encode_video(big), reference_video(px, SIZES), atol=1e-5)
    assert copies == []  # frames written into pinned memory: no host-side copy
    monkeypatch.setattr(np, "copyto", real_copyto)

    ids = rng.integers(0, SIZES.vocab, (5, SIZES.length))
    np.testing.assert_allclose(be.encode_text(ids), reference_text(ids, SIZES), atol=1e-5)
    assert fake.calls["executed"][-2:] == [4, 2]  # 5 rows: 4 + 1 padded to the profile min 2
    with pytest.raises(ValueError, match="engine expects"):
        be.encode_text(ids[:, :-1])
    be.close()
    if cudart == "stand-in":
        _assert_all_freed(fake, rt, pinned=9, device=8)


def _assert_all_freed(fake: types.ModuleType, rt: types.ModuleType, pinned: int,
                      device: int) -> None:
    """``pinned``/``device`` buffers were allocated, and every one of them was freed, as were
    the stream and every TensorRT runtime, engine and context."""
    assert rt.blocks == {} and not fake.live
    assert rt.calls["cudaMallocHost"] == rt.calls["cudaFreeHost"] == pinned
    assert rt.calls["cudaMalloc"] == rt.calls["cudaFree"] == device
    assert rt.calls["cudaStreamCreate"] == rt.calls["cudaStreamDestroy"] == 2  # copy, compute


def test_trt_backend_close_frees_everything_once(trt_env, monkeypatch) -> None:
    from pig.engine.backends.tensorrt import TrtBackend

    fake, root = trt_env
    rt = _fake_cudart()
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", rt)
    ids = np.random.default_rng(1).integers(0, SIZES.vocab, (3, SIZES.length))
    with TrtBackend(Bundle.load(root), "fp32", profile=BatchProfile(1, 2, 4)) as be:
        np.testing.assert_allclose(be.encode_text(ids), reference_text(ids, SIZES), atol=1e-5)
        assert len(rt.blocks) == 14 and len(fake.live) == 6  # 2 x (runtime, engine, context)
        assert rt.calls["cudaFree"] == rt.calls["cudaFreeHost"] == 0
        engines = list(be._engines.values())  # freed by close(), not by garbage collection
    _assert_all_freed(fake, rt, pinned=6, device=8)
    assert len(engines) == 2
    be.close()  # a second close frees nothing twice
    _assert_all_freed(fake, rt, pinned=6, device=8)
    for use in (lambda: be.encode_text(ids), lambda: be.encode_video(np.zeros(1)),
                lambda: be.video_input_buffers(1, 1)):
        with pytest.raises(RuntimeError, match="this tensorrt backend is closed"):
            use()


def test_tensorrt_rtx_runtime_cache_is_kept_across_processes(trt_env, monkeypatch) -> None:
    """An engine with a runtime config (TensorRT-RTX) gets a runtime cache started from the
    file the previous backend saved on close; TensorRT 10/11 engines get none."""
    from pig.engine.backends.tensorrt import TrtBackend

    fake, root = trt_env
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", _fake_cudart())
    loaded: list[bytes] = []

    class RuntimeCache:
        def deserialize(self, blob):
            loaded.append(bytes(blob))
            return True

        def serialize(self):
            return b"kernels-for-this-gpu"

    class RuntimeConfig:
        def create_runtime_cache(self):
            return RuntimeCache()

        def set_runtime_cache(self, cache):
            self.cache = cache
            return True

    class JitEngine(fake.Engine):
        def create_runtime_config(self):
            return RuntimeConfig()

        def create_execution_context(self, config=None):
            assert isinstance(config.cache, RuntimeCache)
            return super().create_execution_context()

    with TrtBackend(Bundle.load(root), "fp32", ("text",), BatchProfile(1, 2, 4)):
        pass
    assert not list((root / "trt").glob("*.runtime.cache"))  # TensorRT 10/11: no JIT cache
    monkeypatch.setattr(fake.Runtime, "deserialize_cuda_engine", lambda self, p: JitEngine(p))
    for _ in range(2):
        with TrtBackend(Bundle.load(root), "fp32", ("text",), BatchProfile(1, 2, 4)) as be:
            ids = np.zeros((1, SIZES.length), np.int64)
            np.testing.assert_allclose(be.encode_text(ids), reference_text(ids, SIZES), atol=1e-5)
    (saved,) = (root / "trt").glob("text.fp32.*.nvidia-h100-80gb-hbm3-sm90.runtime.cache")
    assert saved.read_bytes() == b"kernels-for-this-gpu"
    assert loaded == [b"kernels-for-this-gpu"]  # the second backend started from it


@pytest.mark.parametrize("failure", ["deserialize", "cudaMalloc"])
def test_trt_setup_failure_frees_earlier_branches(trt_env, monkeypatch, failure) -> None:
    """The text engine (second branch) fails to set up: the video engine's buffers, the
    stream and the text engine's partial allocations are all freed before the error."""
    from pig.engine.backends.tensorrt import TrtBackend

    fake, root = trt_env
    rt = _fake_cudart(fail={"cudaMalloc": 6} if failure == "cudaMalloc" else None)
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", rt)
    if failure == "deserialize":
        real = fake.Runtime.deserialize_cuda_engine
        monkeypatch.setattr(fake.Runtime, "deserialize_cuda_engine",
                            lambda self, plan: None if b"input_ids" in plan else real(self, plan))
    match = {"deserialize": "could not deserialize the text plan", "cudaMalloc": "CUDA error 2"}
    with pytest.raises((BackendUnavailable, RuntimeError), match=match[failure]) as err:
        TrtBackend(Bundle.load(root), "fp32", profile=BatchProfile(1, 2, 4))
    assert err.tb is not None  # the kept traceback still reaches the half-built engine
    if failure == "deserialize":  # video: 3 pinned + 4 device buffers, then text fails
        _assert_all_freed(fake, rt, pinned=3, device=4)
    else:  # text got its staging, slot 0's input and output before slot 0's dev_out failed
        _assert_all_freed(fake, rt, pinned=5, device=5)


def test_pig_export_trt_without_gpu_is_one_line_exit_2(monkeypatch, tmp_path, capsys) -> None:
    """`pig-export --trt` without a GPU nor TensorRT-RTX: one clear line, exit 2, no plan."""
    from pig.cli.export import main

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    monkeypatch.setattr(flavour, "module_present", lambda name: False)
    root = write_bundle(tmp_path / "b", SIZES)
    with pytest.raises(SystemExit) as exc:
        main(["--out", str(root), "--trt", "--precision", "fp32", "--batch-profile", "1,4,8"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no GPU" in err[0] and "TensorRT-RTX" in err[0], err
    assert not list(root.glob("trt/*.plan"))


@pytest.mark.parametrize(("argv", "message"), [
    (["--trt", "--batch-profile", "8,4,1"], "min <= opt <= max"),
    (["--calibrate", "--precision", "fp32"], "has none"),
])
def test_pig_export_refuses_bad_trt_and_precision_options(tmp_path, capsys, argv, message) -> None:
    from pig.cli.export import main

    root = write_bundle(tmp_path / "b", SIZES)
    with pytest.raises(SystemExit) as exc:
        main(["--out", str(root), *argv])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


# --- real builds: TensorRT-RTX, CPU-only AOT (no stand-in) --------------------------------------

AOT = ("8.6", "8.9", "12.0")


@pytest.fixture
def no_gpu(monkeypatch):
    """No GPU, whatever this machine has: builds take TensorRT-RTX's CPU-only AOT path."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    monkeypatch.delenv("PIG_TRT_CACHE", raising=False)


def _export_trt(root, capsys, *args: str) -> str:
    """``pig-export --out ROOT --trt ARGS``; its stdout + stderr (asserted exit 0)."""
    from pig.cli.export import main

    with pytest.raises(SystemExit) as stop:
        main(["--out", str(root), "--trt", *args])
    out = capsys.readouterr()
    if stop.value.code != 0:
        pytest.fail(f"pig-export exited {stop.value.code}: {out.err}")
    return out.out + out.err


def _plans(root) -> dict[str, float]:
    return {p.name: p.stat().st_mtime_ns for p in (root / "trt").glob("*.plan")}


def _check_io(bundle: Bundle, plan, branch: str, precision: str, profile: BatchProfile) -> None:
    """The engine's recorded I/O (from the built network) is what the bundle says: the one
    input with its dtype and static dims, a dynamic batch, the profile, one output."""
    from pig.engine.trt.cache import read_io
    from pig.engine.trt.profiles import static_dims

    io = read_io(plan)
    name = {"video": "pixel_values", "text": "input_ids"}[branch]
    dims = list(static_dims(bundle, branch))
    lengths = text_length_range(bundle) if branch == "text" else None
    ends = [[n] for n in lengths] if lengths else [dims] * 3
    if lengths:
        dims = [-1]  # the text length is dynamic: the profile spans it
    fp32 = bundle.graph_entry(branch, "fp32")
    if "inputs" in fp32:  # exported bundles list their I/O; fp16/int8 keep fp32 I/O
        want = fp32["inputs"][name]
        assert [-1 if isinstance(d, str) else d for d in want["shape"]] == [-1, *dims]
        dtype = want["dtype"]
        assert io["outputs"]["embeddings"]["dtype"] == fp32["outputs"]["embeddings"]["dtype"]
    else:
        dtype = "float32" if branch == "video" else "int64"
    assert io["inputs"] == {name: {"dtype": dtype, "shape": [-1, *dims]}}, (precision, io)
    assert set(io["outputs"]) == {"embeddings"}
    assert io["outputs"]["embeddings"]["shape"] == [-1, bundle.embedding_dim]
    assert io["profile"] == {name: [[b, *e] for b, e in zip(
        (profile.min, profile.opt, profile.max), ends, strict=True)]}


def test_tensorrt_rtx_is_feature_detected() -> None:
    f = flavour.load(None)
    assert f.name == "tensorrt-rtx" and f.aot and f.label.startswith("TensorRT-RTX 1.")
    assert {"7.5", "8.0", "8.6", "8.9", "12.0"} <= set(f.targets) and "9.0" not in f.targets
    assert f.runs_on(RTX4090) and not f.runs_on(H100)
    assert build.resolve_target(f, None) == Target("", flavour.RTX_DEFAULT_TARGETS)
    assert build.resolve_target(f, RTX4090) == Target(RTX4090.name, ("8.9",))
    assert build.resolve_target(f, None, ["12.0", "8.6"]) == Target("", ("8.6", "12.0"))


def test_pig_export_trt_aot_builds_caches_and_rebuilds(tmp_path, capsys, no_gpu) -> None:
    """Real engines without a GPU: built once, loaded from the cache, rebuilt when an option,
    the graph or the plan file changes; the recorded I/O matches the bundle."""
    root = write_bundle(tmp_path / "b", SIZES, precisions=("fp32", "fp16"))
    ccs = ["--compute-capability", ",".join(AOT)]
    out = _export_trt(root, capsys, "--precision", "fp32", *ccs)
    first = _plans(root)
    assert out.count("building TensorRT-RTX") == 2 and len(first) == 2, out
    assert all(".fp32.b1-8-64.aot-sm86-sm89-sm120.trtrtx" in n for n in first)
    bundle = Bundle.load(root)
    for plan in (root / "trt").glob("*.plan"):
        branch = plan.name.split(".")[0]
        _check_io(bundle, plan, branch, "fp32", BatchProfile(1, 8, 64))
        assert plan.stat().st_size > 10_000  # a real engine, not a token

    out = _export_trt(root, capsys, "--precision", "fp32", *ccs)
    assert "building" not in out and _plans(root) == first  # from the cache

    out = _export_trt(root, capsys, "--precision", "fp32", *ccs, "--batch-profile", "1,4,16")
    # the profile is in the key, and so are the targets
    assert out.count("building TensorRT-RTX") == 2 and len(_plans(root)) == 4
    out = _export_trt(root, capsys, "--precision", "fp32", "--compute-capability", "8.9")
    assert out.count("building TensorRT-RTX") == 2 and len(_plans(root)) == 6

    video = next(root.glob("trt/video.fp32.b1-8-64.aot-sm86-sm89-sm120.*.plan"))
    video.write_bytes(video.read_bytes()[:1000])  # truncated
    out = _export_trt(root, capsys, "--precision", "fp32", *ccs)
    assert "does not match its recorded sha256" in out and out.count("building TensorRT-RTX") == 1
    assert video.stat().st_size == len(video.read_bytes()) > 10_000

    write_bundle(root, SIZES, seed=1, precisions=("fp32", "fp16"))  # re-exported, trt/ kept
    out = _export_trt(root, capsys, "--precision", "fp32", *ccs)
    assert out.count("building TensorRT-RTX") == 2 and len(_plans(root)) == 8


def test_parser_rejection_names_the_node(tmp_path, no_gpu) -> None:
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("NoSuchOp", ["x"], ["embeddings"], name="mystery_node",
                               domain="pig.test")],
        "g", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [-1, 4])],
        [onnx.helper.make_tensor_value_info("embeddings", onnx.TensorProto.FLOAT, [-1, 4])])
    path = tmp_path / "bad.onnx"
    onnx.save(onnx.helper.make_model(graph, opset_imports=[
        onnx.helper.make_opsetid("", 17), onnx.helper.make_opsetid("pig.test", 1)]), path)
    trt = flavour.load(None).module
    logger = build._logger(trt, lambda _: None)
    network = trt.Builder(logger).create_network(0)
    with pytest.raises(BundleError, match=r"bad\.onnx: TensorRT cannot parse the graph: node "
                                          r"mystery_node \(NoSuchOp\)"):
        build._parse(trt, logger, network, path)


@pytest.mark.parametrize(("ccs", "message"), [
    ("9.0", "cannot target compute capability 9.0 (it supports 7.5, 8.0"),
    ("8", "'8' is not a compute capability like 8.6"),
])
def test_pig_export_refuses_bad_compute_capability(tmp_path, capsys, no_gpu, ccs,
                                                   message) -> None:
    from pig.cli.export import main

    root = write_bundle(tmp_path / "b", SIZES)
    with pytest.raises(SystemExit) as exc:
        main(["--out", str(root), "--trt", "--precision", "fp32", "--compute-capability", ccs])
    assert exc.value.code == 2 and message in capsys.readouterr().err
    assert not list(root.glob("trt/*.plan"))


def test_portable_plan_is_taken_on_a_supported_gpu(tmp_path, capsys, no_gpu,
                                                   monkeypatch) -> None:
    """An AOT plan built without a GPU is what the runtime takes on an RTX 4090 (8.9), with
    no rebuild; without one, the build targets that GPU's compute capability."""
    root = write_bundle(tmp_path / "b", SIZES)
    _export_trt(root, capsys, "--precision", "fp32")  # default portable set
    built = _plans(root)
    monkeypatch.setattr(gpu, "probe_gpu", lambda: RTX4090)
    monkeypatch.setattr(flavour, "module_present",
                        lambda name: name != "tensorrt" and _REAL_PRESENT(name))
    lines: list[str] = []
    _, path = build.ensure_plan(Bundle.load(root), "text", "fp32", log=lines.append,
                                gpu_required=True)
    assert path.name in built and _plans(root) == built
    assert any("(portable) covers NVIDIA GeForce RTX 4090" in ln for ln in lines), lines
    _, path = build.ensure_plan(Bundle.load(root), "text", "fp32", BatchProfile(1, 2, 4),
                                log=lines.append, gpu_required=True)
    assert ".nvidia-geforce-rtx-4090-sm89.trtrtx" in path.name


_REAL_PRESENT = flavour.module_present


def test_tensorrt_rtx_on_hopper_is_refused_and_auto_falls_back(tmp_path, monkeypatch) -> None:
    from pig.engine.backends import select
    from pig.engine.backends.tensorrt import TrtBackend

    monkeypatch.setattr(gpu, "probe_gpu", lambda: H100)
    monkeypatch.setattr(flavour, "module_present",
                        lambda name: name != "tensorrt" and (name.startswith("cuda")
                                                             or _REAL_PRESENT(name)))
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", _fake_cudart())
    bundle = Bundle.load(write_bundle(tmp_path / "b", SIZES))
    refusal = (r"TensorRT-RTX 1\.[\d.]+ does not run on NVIDIA H100 80GB HBM3 \(sm_90\): it "
               r"supports compute capability 7\.5, 8\.0, 8\.6, 8\.9, 12\.0")
    with pytest.raises(BackendUnavailable, match=refusal):
        TrtBackend(bundle, "fp32")
    with pytest.raises(BackendUnavailable, match="TensorRT unavailable: " + refusal):
        select.choose(bundle, "tensorrt")
    lines: list[str] = []
    with select.open_backend(bundle, log=lines.append) as be:
        assert be.name == "onnxruntime" and be.device == "CPUExecutionProvider"
    assert "tensorrt/cuda: TensorRT-RTX" in lines[-1] and "does not run on" in lines[-1]
    assert not (tmp_path / "b" / "trt").exists()  # nothing built for a GPU it cannot run on


def _calibrated_copy(src, dest, max_videos: int, max_captions: int, evals: int):
    """``src`` (an fp32 bundle) linked into ``dest`` plus the fp16 and INT8 graphs that
    ``pig-export --calibrate`` writes (demo calibration clips, a small accuracy report)."""
    import shutil

    from pig.calibration.calibrate import calibrate_bundle
    from pig.demo.dataset import DemoClips
    from pig.engine.bundle import MANIFEST

    dest.mkdir(parents=True)
    shutil.copy(src / MANIFEST, dest)
    for name in ("video.onnx", "text.onnx"):
        (dest / name).hardlink_to(src / name)  # a symlink would leave the bundle
    calibrate_bundle(dest, DemoClips("train", max(max_videos, max_captions)),
                     DemoClips("heldout", evals), max_videos=max_videos,
                     max_captions=max_captions, log=lambda _: None)
    return dest


@pytest.fixture(scope="module")
def demo_bundle(tmp_path_factory):
    """The shipped demo model (models/pig-tiny) exported by pig-export --onnx, with every
    precision graph calibration writes."""
    from pig.demo import steps

    tmp = tmp_path_factory.mktemp("demo")
    checkpoint, config = steps.model_files()
    fp32 = steps.ensure_bundle(checkpoint, config, tmp / "fp32")
    return _calibrated_copy(Path(fp32.dir), tmp / "bundle", 4, 32, 4)


@pytest.fixture(scope="module")
def full_calibrated(full_bundle, tmp_path_factory):
    """The full B/32 reference bundle (conftest's, exported once a session) + fp16/INT8."""
    return _calibrated_copy(full_bundle, tmp_path_factory.mktemp("full-trt") / "bundle", 2, 8, 2)


def _every_precision_compiles(root, capsys) -> dict[tuple[str, str], int]:
    """``pig-export --trt --precision all`` builds every graph of the bundle (a parser or
    builder rejection fails here, naming the graph and node); a second run builds nothing.
    Returns the engine size per (branch, precision)."""
    from pig.engine.trt.cache import read_io

    bundle = Bundle.load(root)
    out = _export_trt(root, capsys, "--precision", "all")
    plans = _plans(root)
    graphs = [(b, p) for b in ("video", "text") for p in bundle.precisions(b)
              if p not in CPU_ONLY_PRECISIONS]  # int8-cpu is for ONNX Runtime, refused here
    assert len(graphs) == 6 and out.count("building TensorRT-RTX") == 6 == len(plans), out
    sizes = {}
    for plan in (root / "trt").glob("*.plan"):
        branch, precision = plan.name.split(".")[:2]
        _check_io(bundle, plan, branch, precision, BatchProfile(1, 8, 64))
        assert read_io(plan) is not None
        sizes[branch, precision] = plan.stat().st_size
    assert set(sizes) == set(graphs)
    out = _export_trt(root, capsys, "--precision", "all")
    assert "building" not in out and _plans(root) == plans
    return sizes


@pytest.mark.slow
def test_demo_bundle_every_precision_compiles(demo_bundle, capsys, no_gpu) -> None:
    sizes = _every_precision_compiles(demo_bundle, capsys)
    assert sizes["video", "int8"] < sizes["video", "fp32"]


@pytest.mark.slow
def test_full_b32_every_precision_compiles(full_calibrated, capsys, no_gpu) -> None:
    """B/32 at full size: the engine stores the precision the graph asks for."""
    sizes = _every_precision_compiles(full_calibrated, capsys)
    assert sizes["video", "int8"] < 0.7 * sizes["video", "fp16"] < 0.7 * sizes["video", "fp32"]


# --- the pipeline writes frames straight into the backend's input arrays -------------------------

def _index_through_spy(encoder, tmp_path, n_clips: int = 5) -> tuple[list, list]:
    """Index ``n_clips`` clips with ``encoder`` (batch 2, 3 buffers in flight); returns the
    arrays the encoder handed out and, per encode call, (input address, a copy of the input,
    the output)."""
    from pig.engine.index import VideoIndex
    from pig.engine.ingest.local_runner import Pipeline
    from pig.engine.ingest.options import PipelineOptions
    from tests import clipgen

    (tmp_path / "clips").mkdir()
    clips = [clipgen.make_clip(tmp_path / "clips" / f"c{i}.mp4", size=(40 + 8 * i, 32),
                               n_frames=6 + i) for i in range(n_clips)]
    handed: list[np.ndarray] = []
    calls: list[tuple[int, np.ndarray, np.ndarray]] = []
    inner_buffers, inner_encode = encoder.video_input_buffers, encoder.encode_video

    def buffers(count: int, batch: int) -> list[np.ndarray]:
        assert (count, batch) == (3, 2)
        handed.extend(inner_buffers(count, batch))
        return handed

    def encode(x: np.ndarray) -> np.ndarray:
        frames = x.copy()
        out = inner_encode(x)
        calls.append((x.ctypes.data, frames, out))
        return out

    encoder.video_input_buffers, encoder.encode_video = buffers, encode
    bundle = Bundle.load(tmp_path / "bundle")
    with VideoIndex.open_or_create(tmp_path / "idx", fingerprint=bundle.fingerprint,
                                   dim=bundle.embedding_dim, bundle_info={}) as index:
        report = Pipeline(encoder, bundle.recipe, PipelineOptions(batch_size=2, buffers=3)).run(
            index, clips)
    assert report.indexed == n_clips and not report.failed
    return handed, calls


def _assert_encoded_in_place(handed, calls) -> None:
    """Every batch was the leading rows of one of the handed-out arrays."""
    assert sum(len(x) for _, x, _ in calls) == 5 and len(handed) == 3
    for ptr, _, _ in calls:
        assert any(ptr == h.ctypes.data for h in handed)


def test_pipeline_preprocesses_into_the_ort_backends_arrays(tmp_path) -> None:
    from pig.engine.backends.onnxruntime import OrtBackend

    root = write_bundle(tmp_path / "bundle", SIZES)
    with OrtBackend(Bundle.load(root), branches=("video",)) as be:
        handed, calls = _index_through_spy(be, tmp_path)
    _assert_encoded_in_place(handed, calls)


def test_pipeline_preprocesses_into_pinned_memory(trt_env, monkeypatch, tmp_path) -> None:
    """TensorRT (stand-in engine, stand-in cudart): the pipeline's batches are the pinned
    arrays themselves, the host->device copy reads them with no staging copy, and the
    engine computes the reference on exactly those frames."""
    from pig.engine.backends.tensorrt import TrtBackend, _Engine

    fake, root = trt_env
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", _fake_cudart())
    staged: list[bool] = []
    real_source = _Engine._pinned_source

    def source(self, x, rows):
        found = real_source(self, x, rows)
        staging = self.host_in.ptr <= (found.ctypes.data if found is not None else -1) < (
            self.host_in.ptr + self.host_in.nbytes)
        staged.append(found is None or staging)
        return found

    monkeypatch.setattr(_Engine, "_pinned_source", source)
    with TrtBackend(Bundle.load(root), "fp32", ("video",), BatchProfile(1, 2, 4)) as be:
        handed, calls = _index_through_spy(be, tmp_path)
    assert staged == [False] * len(calls) and sorted(fake.calls["executed"]) == [1, 2, 2]
    _assert_encoded_in_place(handed, calls)
    for _, frames, out in calls:
        np.testing.assert_allclose(out, reference_video(frames, SIZES), atol=1e-5)


# --- text engines whose profile spans text lengths ----------------------------------------------

def test_trt_text_engine_with_a_length_range_takes_batches_cut_to_their_tokens(
        trt_env, monkeypatch, tmp_path) -> None:
    """A length-range text engine (stand-in: the fake reference is a mean over the columns
    it is given, so the output shows the cut): each call is cut after its longest row's
    first EOS and packed at the start of the staging buffer."""
    from pig.engine.backends import tensorrt as trt_backend

    _, root = trt_env
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", _fake_cudart())
    plan = b"plan#1:" + json.dumps(["input_ids", [[1, 2], [2, 6], [4, 6]]]).encode()
    monkeypatch.setattr(trt_backend, "ensure_plan", lambda *a, **k: (plan, tmp_path / "t.plan"))
    bundle = Bundle.load(root)
    spec = bundle.tokenizer_spec
    ids = np.full((6, SIZES.length), spec.eos_id, np.int64)
    ids[:, 0] = spec.bos_id
    ids[:, 1:3] = np.random.default_rng(0).integers(1, SIZES.vocab - 2, (6, 2))  # 4 tokens
    with trt_backend.TrtBackend(bundle, "fp32", branches=("text",)) as be:
        assert be._engines["text"].lengths == (2, 6)
        np.testing.assert_allclose(be.encode_text(ids), reference_text(ids[:, :4], SIZES),
                                   atol=1e-5)
        np.testing.assert_allclose(be.encode_text(ids[:1, :4]),  # already cut
                                   reference_text(ids[:1, :4], SIZES), atol=1e-5)
        with pytest.raises(ValueError, match=r"engine expects \[B, 2\.\.6\]"):
            be._engines["text"].run(ids[:, :1])


def test_dynamic_text_graph_compiles_with_a_length_profile(small_bundle, tmp_path,
                                                           no_gpu) -> None:
    """A real TensorRT-RTX build (ahead of time, no GPU) of an exported ``[batch, seq]`` text
    graph: the profile spans 2..50 tokens, and it is part of the plan's key."""
    bundle = Bundle.load(small_bundle)
    _, path = build.ensure_plan(bundle, "text", "fp32", cache_dir=tmp_path, targets=["8.9"],
                                log=lambda _: None)
    assert f".s2-{TEXT_OPT_LENGTH}-50." in path.name
    _check_io(bundle, path, "text", "fp32", BatchProfile(1, 8, 64))
