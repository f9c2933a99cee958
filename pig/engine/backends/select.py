"""``--backend auto|onnxruntime|tensorrt`` x ``--precision fp32|fp16|int8``.

``auto`` prefers, in order: TensorRT (GPU + ``tensorrt`` + cuda-python), ONNX Runtime on
CUDA (GPU + a CUDA-enabled onnxruntime), ONNX Runtime on CPU. Without ``--precision`` it
takes fp16 on a GPU when the bundle has it (tensor cores; fp16 R@1 is held within 0.5
points of fp32) and fp32 on CPU (the CPU provider has few fp16 kernels, so fp16 is slower
there). INT8 costs up to 2 points of R@1, so it is used only when asked for.
Availability is decided without importing TensorRT or CUDA (:mod:`pig.engine.gpu`).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pig.engine import gpu as gpu_probe
from pig.engine.backends.base import Backend, log_stderr
from pig.engine.graphs import PRECISIONS, Branch
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
    """Precisions present for every branch, in fp32, fp16, int8 order."""
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
        raise BackendUnavailable(f"unknown precision {precision!r} (choose from fp32, fp16, int8)")
    available = bundle_precisions(bundle, branches)
    if backend == "tensorrt":
        why = trt_missing()
        if why:
            raise BackendUnavailable(f"TensorRT unavailable: {why}")
        p, pwhy = _pick_precision(available, precision, _GPU_PREFERENCE, bundle)
        return [Choice("tensorrt", "cuda", p, f"requested; precision {pwhy}")]
    if backend == "onnxruntime":
        prefs = _GPU_PREFERENCE if ort_device == "cuda" else _CPU_PREFERENCE
        p, pwhy = _pick_precision(available, precision, prefs, bundle)
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
        p, pwhy = _pick_precision(available, precision, _GPU_PREFERENCE, bundle)
        choices.append(Choice(name, device, p, f"auto: fastest available; precision {pwhy}"))
    p, pwhy = _pick_precision(available, precision, _CPU_PREFERENCE, bundle)
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
