"""``--backend auto|onnxruntime|tensorrt`` x ``--precision fp32|fp16|int8``.

``auto`` prefers, in order: TensorRT (GPU + ``tensorrt`` + cuda-python), ONNX Runtime on
CUDA (GPU + a CUDA-enabled onnxruntime), ONNX Runtime on CPU. Without ``--precision`` it
takes fp16 on a GPU when the bundle has it (tensor cores; fp16 R@1 is held within 0.5
points of fp32) and fp32 on CPU (the CPU provider has few fp16 kernels, so fp16 is slower
there). INT8 for TensorRT costs up to 2 points of R@1, so it is used only when asked for. On
a CPU, ``auto`` takes the bundle's ``int8-cpu`` graphs when its accuracy report shows their
demo R@1 within 1 point of fp32 (:mod:`pig.engine.backends.accuracy`), else fp32 with the
reason; ``int8-cpu`` never runs on a GPU.
Availability is decided without importing TensorRT or CUDA (:mod:`pig.engine.gpu`).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pig.engine import gpu as gpu_probe
from pig.engine.backends.accuracy import INT8_CPU, int8_cpu_verdict
from pig.engine.backends.base import PRECISIONS, Backend, Branch, log_stderr
from pig.errors import BackendUnavailable

if TYPE_CHECKING:
    from pig.engine.backends.onnxruntime import OrtOptions
    from pig.engine.bundle import Bundle
    from pig.engine.trt.profiles import BatchProfile

BACKENDS = ("auto", "onnxruntime", "tensorrt")
_GPU_PREFERENCE = ("fp16", "fp32")  # int8 only on request
_CPU_PREFERENCE = ("fp32",)


@dataclass(frozen=True)
class Choice:
    """What will run, and why (printed by the CLI)."""

    backend: str  # "tensorrt" | "onnxruntime"
    device: str  # "cuda" | "cpu"
    precision: str
    reason: str

    def __str__(self) -> str:
        return f"{self.backend} ({self.device}, {self.precision}): {self.reason}"


def _module_present(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def trt_missing() -> str:
    """Why TensorRT cannot run here ("" if it can), without importing it or CUDA."""
    gpu, why = gpu_probe.gpu_or_none()
    if gpu is None:
        return why
    if not _module_present("tensorrt"):
        return "the tensorrt Python package is not installed"
    if not (_module_present("cuda.bindings") or _module_present("cuda.cudart")):
        return "cuda-python is not installed (needed for TensorRT buffers)"
    return ""


def ort_cuda_missing() -> str:
    """Why ONNX Runtime cannot use CUDA here ("" if its CUDA provider is available)."""
    gpu, why = gpu_probe.gpu_or_none()
    if gpu is None:
        return why
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return f"onnxruntime {ort.__version__} has no CUDA provider"
    return ""


def bundle_precisions(bundle: Bundle, branches: Sequence[Branch]) -> list[str]:
    """Precisions present for every branch, in PRECISIONS order."""
    have = [set(bundle.precisions(b)) for b in branches]
    return [p for p in PRECISIONS if all(p in h for h in have)]


def _pick_precision(available: list[str], requested: str | None, preference: tuple[str, ...],
                    bundle: Bundle) -> tuple[str, str]:
    if requested is not None:
        if requested not in available:
            raise BackendUnavailable(
                f"{bundle.dir}: no {requested} graphs (bundle has {', '.join(available) or 'none'})"
            )
        return requested, "as requested"
    for p in preference:
        if p in available:
            return p, f"fastest precision in the bundle for this device ({'/'.join(available)})"
    raise BackendUnavailable(f"{bundle.dir}: no graph for the requested branches")


def _cpu_precision(available: list[str], requested: str | None, bundle: Bundle
                   ) -> tuple[str, str]:
    """fp32, or int8-cpu when the bundle has it and its accuracy report allows it."""
    if requested is not None or INT8_CPU not in available:
        return _pick_precision(available, requested, _CPU_PREFERENCE, bundle)
    use, why = int8_cpu_verdict(bundle)
    if use:
        return INT8_CPU, f"{INT8_CPU} ({why})"
    return _pick_precision(available, None, _CPU_PREFERENCE, bundle)[0], \
        f"fp32, {INT8_CPU} not used: {why}"


def _gpu_only(precision: str, backend: str) -> None:
    if precision == INT8_CPU:
        raise BackendUnavailable(f"{INT8_CPU} graphs are made for ONNX Runtime on CPU, not "
                                 f"{backend}; use --precision int8 (Q/DQ) on a GPU")


def choose(
    bundle: Bundle,
    backend: str = "auto",
    precision: str | None = None,
    branches: Sequence[Branch] = ("video", "text"),
    ort_device: str = "cpu",
) -> list[Choice]:
    """Candidates to try, best first (one unless ``backend="auto"``)."""
    if backend not in BACKENDS:
        raise BackendUnavailable(f"unknown backend {backend!r} (choose from {', '.join(BACKENDS)})")
    if precision is not None and precision not in PRECISIONS:
        raise BackendUnavailable(
            f"unknown precision {precision!r} (choose from {', '.join(PRECISIONS)})")
    available = bundle_precisions(bundle, branches)
    if backend == "tensorrt":
        why = trt_missing()
        if why:
            raise BackendUnavailable(f"TensorRT unavailable: {why}")
        p, pwhy = _pick_precision(available, precision, _GPU_PREFERENCE, bundle)
        _gpu_only(p, "TensorRT")
        return [Choice("tensorrt", "cuda", p, f"requested; precision {pwhy}")]
    if backend == "onnxruntime":
        if ort_device == "cuda":
            p, pwhy = _pick_precision(available, precision, _GPU_PREFERENCE, bundle)
            _gpu_only(p, "the CUDA provider")
        else:
            p, pwhy = _cpu_precision(available, precision, bundle)
        return [Choice("onnxruntime", ort_device, p, f"requested; precision {pwhy}")]

    choices: list[Choice] = []
    skipped: list[str] = []
    for name, device, why in (
        ("tensorrt", "cuda", trt_missing()),
        ("onnxruntime", "cuda", ort_cuda_missing()),
    ):
        if why:
            skipped.append(f"{name}/{device}: {why}")
            continue
        if precision == INT8_CPU:
            skipped.append(f"{name}/{device}: {INT8_CPU} runs on CPU only")
            continue
        p, pwhy = _pick_precision(available, precision, _GPU_PREFERENCE, bundle)
        choices.append(Choice(name, device, p, f"auto: fastest available; precision {pwhy}"))
    p, pwhy = _cpu_precision(available, precision, bundle)
    note = f" (skipped {'; '.join(skipped)})" if skipped else ""
    choices.append(Choice("onnxruntime", "cpu", p, f"auto: precision {pwhy}{note}"))
    return choices


def open_backend(
    bundle: Bundle,
    backend: str = "auto",
    precision: str | None = None,
    branches: Sequence[Branch] = ("video", "text"),
    ort_device: str = "cpu",
    ort_options: OrtOptions | None = None,
    trt_profile: BatchProfile | None = None,
    log: Callable[[str], None] = log_stderr,
) -> Backend:
    """The first candidate of :func:`choose` that opens; logs which one and why."""

    def open_one(c: Choice) -> Backend:
        if c.backend == "tensorrt":
            from pig.engine.backends.tensorrt import TrtBackend

            opened: Backend = TrtBackend(bundle, c.precision, branches, trt_profile)
        else:
            from pig.engine.backends.onnxruntime import OrtBackend

            opened = OrtBackend(bundle, c.precision, c.device, branches, ort_options)  # type: ignore[arg-type]
        log(f"backend: {c} [device in use: {opened.device}]")
        return opened

    *fallible, last = choose(bundle, backend, precision, branches, ort_device)
    for c in fallible:
        try:
            return open_one(c)
        except BackendUnavailable as err:
            log(f"backend {c.backend}/{c.device} unavailable ({err}); trying the next")
    return open_one(last)
