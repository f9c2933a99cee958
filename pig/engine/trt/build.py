"""Build TensorRT engines from a bundle's ONNX graphs (TensorRT 10 and 11 Python APIs).

Precision lives in the ONNX graph (fp16 with fp32 islands, INT8 Q/DQ from ``calibration/``),
so networks are strongly typed and no FP16/INT8 builder flag is ever set: TensorRT 11
removed them and TensorRT 10's weakly typed mode would override the graph's fp32 islands.
Engines are built with one optimisation profile (dynamic batch, everything else static) and
a timing cache shared by all builds on the same GPU model and TensorRT version.
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pig.engine import gpu as gpu_probe
from pig.engine.backends.base import log_stderr
from pig.engine.bundle import sha256_file
from pig.engine.fsutil import write_atomic
from pig.engine.gpu import GpuInfo
from pig.engine.graphs import BRANCHES, OUTPUT_NAME, Branch
from pig.engine.trt.cache import PlanCache, PlanKey, timing_cache_path
from pig.engine.trt.profiles import BatchProfile, profile_shapes, static_dims
from pig.errors import BackendUnavailable, BundleError

if TYPE_CHECKING:
    from pig.engine.bundle import Bundle

DEFAULT_WORKSPACE = 4 << 30
Log = Callable[[str], None]


def import_tensorrt() -> Any:
    """The ``tensorrt`` module, only after a GPU was found (a runtime without one can abort)."""
    gpu_probe.probe_gpu()
    try:
        return importlib.import_module("tensorrt")
    except ImportError:
        raise BackendUnavailable(
            "TensorRT is not installed (pip install tensorrt); use --backend onnxruntime"
        ) from None


def _network_flags(trt: Any) -> tuple[int, bool]:
    """(create_network flags, strongly typed?). TRT 11 is always strongly typed and 10 needs
    the flag; EXPLICIT_BATCH is the default since 10 and is not passed."""
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if flag is not None:
        return 1 << int(flag), True
    major = int(trt.__version__.split(".")[0])
    return 0, major >= 11


def _progress_monitor(trt: Any, log: Log) -> Any | None:
    """An IProgressMonitor printing phase starts/ends (TensorRT >= 10), else None."""
    base = getattr(trt, "IProgressMonitor", None)
    if base is None:
        return None

    class StageLines(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            base.__init__(self)
            self.started: dict[str, float] = {}

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            self.started[phase_name] = time.perf_counter()
            if parent_phase is None:
                log(f"  [trt] {phase_name} ({num_steps} steps)")

        def step_complete(self, phase_name: str, step: int) -> bool:
            return True  # never cancel

        def phase_finish(self, phase_name: str) -> None:
            t = time.perf_counter() - self.started.pop(phase_name, time.perf_counter())
            if t >= 1.0:
                log(f"  [trt] {phase_name} done in {t:.1f}s")

    return StageLines()


def _parse(trt: Any, logger: Any, network: Any, onnx_path: Path) -> None:
    """Parse the graph and keep only the ``embeddings`` output, so TensorRT prunes what only
    the other outputs need (the video graph also exports the CLIP-ViP vector and the
    token-selector indices, for parity checks)."""
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BundleError(f"{onnx_path}: TensorRT cannot parse the graph: {errors}")
    outputs = [network.get_output(i) for i in range(network.num_outputs)]
    if OUTPUT_NAME not in {t.name for t in outputs}:
        raise BundleError(f"{onnx_path}: graph has no {OUTPUT_NAME!r} output")
    for t in outputs:
        if t.name != OUTPUT_NAME:
            network.unmark_output(t)


def build_plan(
    trt: Any,
    bundle: Bundle,
    branch: Branch,
    precision: str,
    profile: BatchProfile,
    workspace_bytes: int,
    timing_cache: Path | None,
    log: Log,
) -> bytes:
    """Serialized engine for one graph; updates ``timing_cache`` when given."""
    onnx_path = Path(bundle.graph_path(branch, precision))
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags, _ = _network_flags(trt)
    network = builder.create_network(flags)
    _parse(trt, logger, network, onnx_path)
    inputs = {network.get_input(i).name: tuple(network.get_input(i).shape)
              for i in range(network.num_inputs)}
    try:
        name, (lo, opt, hi) = profile_shapes(branch, inputs, static_dims(bundle, branch), profile)
    except ValueError as err:
        raise BundleError(f"{onnx_path}: {err}") from None

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    opt_profile = builder.create_optimization_profile()
    opt_profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(opt_profile)
    monitor = _progress_monitor(trt, log)
    if monitor is not None:
        config.progress_monitor = monitor
    if timing_cache is not None:
        blob = timing_cache.read_bytes() if timing_cache.exists() else b""
        config.set_timing_cache(config.create_timing_cache(blob), ignore_mismatch=False)

    t0 = time.perf_counter()
    log(f"building TensorRT engine {branch}/{precision} {profile.tag()} from {onnx_path.name}")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendUnavailable(f"{onnx_path}: TensorRT engine build failed (see log above)")
    log(f"built {branch}/{precision} in {time.perf_counter() - t0:.1f}s")
    if timing_cache is not None:
        write_atomic(timing_cache, bytes(config.get_timing_cache().serialize()))
    return bytes(serialized)


def ensure_plan(
    bundle: Bundle,
    branch: Branch,
    precision: str,
    profile: BatchProfile | None = None,
    workspace_bytes: int = DEFAULT_WORKSPACE,
    timing_cache: bool = True,
    cache_dir: str | Path | None = None,
    log: Log = log_stderr,
) -> tuple[bytes, Path]:
    """A verified cached plan for this GPU/TensorRT/graph/profile, built if missing or stale.

    Plans live in ``cache_dir``, else ``$PIG_TRT_CACHE``, else ``<bundle>/trt/`` (keys carry
    the ONNX sha256, so one folder can serve several bundles).
    """
    gpu: GpuInfo = gpu_probe.probe_gpu()
    trt = import_tensorrt()
    profile = profile or BatchProfile()
    cache = PlanCache(cache_dir or os.environ.get("PIG_TRT_CACHE") or Path(bundle.dir) / "trt")
    onnx_path = bundle.graph_path(branch, precision)
    onnx_sha = sha256_file(onnx_path)  # the file itself, not only what the manifest says
    if onnx_sha != bundle.graph_sha256(branch, precision):
        raise BundleError(f"{onnx_path}: sha256 differs from the manifest (modified or corrupt)")
    key = PlanKey.make(
        branch, precision, onnx_sha, trt.__version__, gpu,
        profile, workspace_bytes, _network_flags(trt)[1],
    )
    plan, why = cache.load(key)
    if plan is not None:
        return plan, cache.paths(key)[0]
    log(f"TensorRT plan for {branch}/{precision} on {gpu}: {why}; building")
    tc = timing_cache_path(cache.dir, trt.__version__, gpu) if timing_cache else None
    try:
        cache.dir.mkdir(parents=True, exist_ok=True)
        plan = build_plan(trt, bundle, branch, precision, profile, workspace_bytes, tc, log)
        return plan, cache.store(key, plan)
    except PermissionError as err:
        raise BackendUnavailable(
            f"{cache.dir}: cannot write TensorRT plans ({err.strerror}); "
            "set PIG_TRT_CACHE to a writable folder"
        ) from None


def build_engines(
    bundle: Bundle,
    precision: str,
    profile: BatchProfile | None = None,
    workspace: int = DEFAULT_WORKSPACE,
    timing_cache: bool = True,
    log: Log = log_stderr,
) -> dict[str, Path]:
    """``pig-export --trt``: the plan of every branch the bundle has at ``precision``."""
    branches = [b for b in BRANCHES if precision in bundle.precisions(b)]
    if not branches:
        raise BundleError(f"{bundle.dir}: no {precision} graphs in the bundle")
    return {
        b: ensure_plan(bundle, b, precision, profile, workspace, timing_cache, log=log)[1]
        for b in branches
    }
