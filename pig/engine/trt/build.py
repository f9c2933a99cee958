"""Build TensorRT engines from a bundle's ONNX graphs (TensorRT 10/11 and TensorRT-RTX).

Precision lives in the ONNX graph (fp16 with fp32 islands, INT8 Q/DQ from ``calibration/``),
so networks are strongly typed and no FP16/INT8 builder flag is ever set: TensorRT 11
removed them and TensorRT 10's weakly typed mode would override the graph's fp32 islands.
Engines are built with one optimisation profile (dynamic batch, and the text length range
of a text graph with a dynamic sequence axis; everything else static).

Target: with a GPU, the GPU present (TensorRT 10/11 tunes on it; TensorRT-RTX is given its
compute capability, never ``CURRENT``, which opens CUDA). Without a GPU, TensorRT-RTX
compiles ahead of time for a set of compute capabilities (``--compute-capability``, default
:data:`~pig.engine.trt.flavour.RTX_DEFAULT_TARGETS`). TensorRT 10/11 builds share a timing
cache per GPU model and version; TensorRT-RTX's timing cache calls are no-ops (deprecated
in 1.2), so it gets none.

The engine's I/O (names, dtypes, shapes, profile) is recorded from the built network in the
plan's sidecar: inspecting the engine itself needs deserialising it, which needs a GPU.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pig.engine.display import log_stderr
from pig.engine.graphs import BRANCHES, OUTPUT_NAME, Branch
from pig.engine.host import gpu as gpu_probe
from pig.engine.host.fsutil import write_atomic
from pig.engine.host.gpu import GpuInfo
from pig.engine.trt import flavour as flavours
from pig.engine.trt.cache import PlanCache, PlanKey, Target, timing_cache_path
from pig.engine.trt.flavour import Flavour
from pig.engine.trt.profiles import BatchProfile, profile_shapes, static_dims, text_length_range
from pig.errors import BackendUnavailable, BundleError

if TYPE_CHECKING:
    from pig.engine.bundle import Bundle

DEFAULT_WORKSPACE = 4 << 30
Log = Callable[[str], None]


def import_tensorrt(gpu: GpuInfo | None = None, no_gpu: str = "no GPU") -> Flavour:
    """The TensorRT to build and run with (see :mod:`pig.engine.trt.flavour`); ``gpu``:
    what :func:`pig.engine.host.gpu.probe_gpu` found (None: none, ``no_gpu`` says why)."""
    return flavours.load(gpu, no_gpu)


def resolve_target(flavour: Flavour, gpu: GpuInfo | None,
                   requested: Sequence[str] | None = None) -> Target:
    """What to build for: ``requested`` compute capabilities (TensorRT-RTX only), else the
    GPU present, else TensorRT-RTX's default portable set."""
    if requested:
        if not flavour.aot:
            raise BackendUnavailable(
                f"--compute-capability needs TensorRT-RTX; {flavour.label} builds for the "
                "GPU present only"
            )
        unknown = [cc for cc in requested if cc not in (flavour.targets or ())]
        if unknown:
            raise BackendUnavailable(
                f"{flavour.label} cannot target compute capability {', '.join(unknown)} "
                f"(it supports {', '.join(flavour.targets or ())})"
            )
        ordered = sorted(set(requested), key=lambda cc: tuple(map(int, cc.split("."))))
        return Target("", tuple(ordered))
    if gpu is not None:
        flavour.check_runs_on(gpu)
        return Target.device(gpu)
    default = tuple(cc for cc in flavours.RTX_DEFAULT_TARGETS if cc in (flavour.targets or ()))
    return Target("", default)


def _logger(trt: Any, log: Log) -> Any:
    """A TensorRT ``ILogger`` forwarding warnings and errors to ``log``; it keeps the errors
    (``.errors``) so that a failed build names what TensorRT rejected."""
    base = trt.ILogger
    severity = base.Severity
    errors = (severity.ERROR, severity.INTERNAL_ERROR)

    class Lines(base):  # type: ignore[misc, valid-type]  # a class found at run time
        def __init__(self) -> None:
            base.__init__(self)
            self.errors: list[str] = []

        def log(self, level: Any, msg: str) -> None:
            if level in errors:
                self.errors.append(msg)
            if level in errors or level == severity.WARNING:
                log(f"  [trt] {msg}")

    return Lines()


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

    class StageLines(base):  # type: ignore[misc, valid-type]  # a class found at run time
        def __init__(self) -> None:
            super().__init__()
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
    token-selector indices, for parity checks). A rejected graph names the node."""
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(_parser_error(parser.get_error(i)) for i in range(parser.num_errors))
        raise BundleError(f"{onnx_path}: TensorRT cannot parse the graph: {errors}")
    outputs = [network.get_output(i) for i in range(network.num_outputs)]
    if OUTPUT_NAME not in {t.name for t in outputs}:
        raise BundleError(f"{onnx_path}: graph has no {OUTPUT_NAME!r} output")
    for t in outputs:
        if t.name != OUTPUT_NAME:
            network.unmark_output(t)


def _parser_error(err: Any) -> str:
    """``node NAME (OP): description`` of one ONNX parser error."""
    name = getattr(err, "node_name", None)
    if name is None:
        return str(err)
    return f"node {name() or '#' + str(err.node())} ({err.node_operator()}): {err.desc()}"


def _io(trt: Any, network: Any, name: str, shapes: tuple[Any, Any, Any]) -> dict[str, Any]:
    """The engine's I/O as the network defines it: ``{inputs, outputs: {name: {dtype,
    shape}}, profile: {name: [min, opt, max]}}`` (-1 = dynamic dim)."""

    def tensors(n: int, get: Callable[[int], Any]) -> dict[str, Any]:
        return {t.name: {"dtype": np.dtype(trt.nptype(t.dtype)).name,
                         "shape": [int(d) for d in t.shape]}
                for t in (get(i) for i in range(n))}

    return {"inputs": tensors(network.num_inputs, network.get_input),
            "outputs": tensors(network.num_outputs, network.get_output),
            "profile": {name: [list(s) for s in shapes]}}


def build_plan(
    flavour: Flavour,
    bundle: Bundle,
    branch: Branch,
    precision: str,
    profile: BatchProfile,
    workspace_bytes: int,
    target: Target,
    timing_cache: Path | None,
    log: Log,
) -> tuple[bytes, dict[str, Any]]:
    """(serialized engine, its I/O) for one graph; updates ``timing_cache`` when given."""
    trt = flavour.module
    onnx_path = Path(bundle.graph_path(branch, precision))
    logger = _logger(trt, log)
    builder = trt.Builder(logger)
    flags, _ = _network_flags(trt)
    network = builder.create_network(flags)
    _parse(trt, logger, network, onnx_path)
    inputs = {network.get_input(i).name: tuple(network.get_input(i).shape)
              for i in range(network.num_inputs)}
    try:
        name, shapes = profile_shapes(branch, inputs, static_dims(bundle, branch), profile,
                                      text_length_range(bundle) if branch == "text" else None)
    except ValueError as err:
        raise BundleError(f"{onnx_path}: {err}") from None

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    opt_profile = builder.create_optimization_profile()
    opt_profile.set_shape(name, *shapes)
    config.add_optimization_profile(opt_profile)
    if flavour.aot:
        config.num_compute_capabilities = len(target.compute_capabilities)
        for i, cc in enumerate(target.compute_capabilities):
            config.set_compute_capability(flavour.enum_target(cc), i)
    monitor = _progress_monitor(trt, log)
    if monitor is not None:
        config.progress_monitor = monitor
    if timing_cache is not None:
        blob = timing_cache.read_bytes() if timing_cache.exists() else b""
        config.set_timing_cache(config.create_timing_cache(blob), ignore_mismatch=False)

    t0 = time.perf_counter()
    log(f"building {flavour.label} engine {branch}/{precision} {profile.tag()} for {target} "
        f"from {onnx_path.name}")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        why = "; ".join(logger.errors) or "see the log above"
        raise BackendUnavailable(f"{onnx_path}: TensorRT engine build failed: {why}")
    log(f"built {branch}/{precision} in {time.perf_counter() - t0:.1f}s")
    if timing_cache is not None:
        write_atomic(timing_cache, bytes(config.get_timing_cache().serialize()))
    return bytes(serialized), _io(trt, network, name, shapes)


def ensure_plan(
    bundle: Bundle,
    branch: Branch,
    precision: str,
    profile: BatchProfile | None = None,
    workspace_bytes: int = DEFAULT_WORKSPACE,
    timing_cache: bool = True,
    cache_dir: str | Path | None = None,
    log: Log = log_stderr,
    targets: Sequence[str] | None = None,
    gpu_required: bool = False,
) -> tuple[bytes, Path]:
    """A verified cached plan for this TensorRT/target/graph/profile, built if missing or
    stale. Target: see :func:`resolve_target`; on a GPU a cached portable TensorRT-RTX plan
    listing its compute capability is used too. ``gpu_required``: refuse without a GPU
    (the runtime) instead of compiling ahead of time.

    Plans live in ``cache_dir``, else ``$PIG_TRT_CACHE``, else ``<bundle>/trt/`` (keys carry
    the ONNX sha256, so one folder can serve several bundles).
    """
    gpu, no_gpu = gpu_probe.gpu_or_none()  # first: nothing of TensorRT before this
    if gpu is None and gpu_required:
        raise BackendUnavailable(no_gpu)
    flavour = import_tensorrt(gpu, no_gpu)
    target = resolve_target(flavour, gpu, targets)
    profile = profile or BatchProfile()
    cache = PlanCache(cache_dir or os.environ.get("PIG_TRT_CACHE") or Path(bundle.dir) / "trt")
    bundle.graph_path(branch, precision)  # verifies the file against the manifest's sha256
    onnx_sha = bundle.graph_sha256(branch, precision)
    key = PlanKey.make(
        branch, precision, onnx_sha, flavour.name, flavour.version, target,
        profile, workspace_bytes, _network_flags(flavour.module)[1],
        text_length_range(bundle) if branch == "text" else None,
    )
    plan, why = cache.load(key)
    if plan is not None:
        return plan, cache.paths(key)[0]
    if gpu is not None and not targets:
        for other in cache.covering(key, gpu):
            plan, _ = cache.load(other)
            if plan is not None:
                log(f"TensorRT plan for {branch}/{precision}: {other.target} covers {gpu}")
                return plan, cache.paths(other)[0]
    log(f"{flavour.label} plan for {branch}/{precision} for {target}: {why}; building")
    tc = None
    if timing_cache and gpu is not None and not flavour.aot:
        tc = timing_cache_path(cache.dir, flavour.version, gpu)
    try:
        cache.dir.mkdir(parents=True, exist_ok=True)
        plan, io = build_plan(flavour, bundle, branch, precision, profile, workspace_bytes,
                              target, tc, log)
        return plan, cache.store(key, plan, io)
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
    targets: Sequence[str] | None = None,
) -> dict[str, Path]:
    """``pig-export --trt``: the plan of every branch the bundle has at ``precision``."""
    branches = [b for b in BRANCHES if precision in bundle.precisions(b)]
    if not branches:
        raise BundleError(f"{bundle.dir}: no {precision} graphs in the bundle; make them with "
                          f"pig-export --calibrate --precision {precision} --out {bundle.dir}")
    return {
        b: ensure_plan(bundle, b, precision, profile, workspace, timing_cache, log=log,
                       targets=targets)[1]
        for b in branches
    }
