"""``--backend auto|onnxruntime|tensorrt`` x ``--precision fp32|fp16|int8``.

The backends are the rows of :data:`ROWS`, one per (backend, device): how to tell whether it
can run here, which precisions ``auto`` prefers on it, and how to open it. Adding a backend
is adding a row. ``auto`` tries the rows in order and ends with ONNX Runtime on CPU:
TensorRT (GPU + TensorRT 10/11 or TensorRT-RTX on a GPU it supports + cuda-python), ONNX
Runtime on CUDA (GPU + a CUDA-enabled onnxruntime), ONNX Runtime on CPU. Without
``--precision`` it takes fp16 on a GPU when the bundle has it (tensor cores; fp16 R@1 is
held within 0.5 points of fp32) and fp32 on CPU (the CPU provider has few fp16 kernels, so
fp16 is slower there). INT8 for TensorRT costs up to 2 points of R@1, so it is used only when
asked for. On a CPU, ``auto`` takes the bundle's ``int8-cpu`` graphs when its accuracy report
shows their demo R@1 within 1 point of fp32 (:mod:`pig.engine.backends.accuracy`), else fp32
with the reason; ``int8-cpu`` never runs on a GPU row.
Availability is decided without importing TensorRT or CUDA before a GPU was found
(:mod:`pig.engine.host.gpu`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pig.engine.backends.accuracy import INT8_CPU, int8_cpu_verdict
from pig.engine.backends.base import Backend, log_stderr
from pig.engine.display import Detail
from pig.engine.graphs import CALIBRATED_PRECISIONS, PRECISIONS, Branch
from pig.engine.host import gpu as gpu_probe
from pig.engine.trt import flavour as flavours
from pig.errors import BackendUnavailable

if TYPE_CHECKING:
    from pig.engine.backends.onnxruntime import OrtOptions
    from pig.engine.bundle import Bundle
    from pig.engine.trt.profiles import BatchProfile

GPU_PREFERENCE = ("fp16", "fp32")  # int8 only on request
CPU_PREFERENCE = ("fp32",)


@dataclass(frozen=True)
class OpenOptions:
    """Per-backend settings an opener may use."""

    ort: OrtOptions | None = None
    trt_profile: BatchProfile | None = None


Opener = Callable[["Bundle", str, Sequence[Branch], OpenOptions], Backend]


@dataclass(frozen=True)
class Row:
    """One backend on one device."""

    backend: str  # the --backend value
    device: str  # "cuda" | "cpu"
    missing: Callable[[], str]  # why it cannot run here, "" if it can
    preferred: Callable[[Bundle], Sequence[str]]  # precisions auto takes, best first
    open: Opener


def trt_missing() -> str:
    """Why TensorRT cannot run here ("" if it can); imports no TensorRT without a GPU."""
    gpu, why = gpu_probe.gpu_or_none()
    if gpu is None:
        return why
    why = flavours.missing(gpu)
    if why:
        return why
    if not (flavours.module_present("cuda.bindings") or flavours.module_present("cuda.cudart")):
        return "cuda-python is not installed (needed for TensorRT buffers)"
    return ""


def ort_cuda_missing() -> str:
    """Why ONNX Runtime cannot use CUDA here ("" if its CUDA provider is available)."""
    gpu, why = gpu_probe.gpu_or_none()
    if gpu is None:
        return why
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return f"onnxruntime {ort.__version__} has no CUDA provider{_ort_shadowed()}"
    return ""


def _ort_shadowed() -> str:
    """Why the CUDA provider may be missing: onnxruntime and onnxruntime-gpu both installed
    (they write the same ``onnxruntime`` module; whichever came last won)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        cpu, gpu = version("onnxruntime"), version("onnxruntime-gpu")
    except PackageNotFoundError:
        return ""
    return (f" (onnxruntime {cpu} and onnxruntime-gpu {gpu} are both installed and share one "
            "module: pip uninstall -y onnxruntime onnxruntime-gpu, then reinstall "
            "onnxruntime-gpu alone; docs/gpu.md)")


def _open_trt(bundle: Bundle, precision: str, branches: Sequence[Branch],
              opts: OpenOptions) -> Backend:
    from pig.engine.backends.tensorrt import TrtBackend

    return TrtBackend(bundle, precision, branches, opts.trt_profile)


def _ort_opener(device: str) -> Opener:
    def open_ort(bundle: Bundle, precision: str, branches: Sequence[Branch],
                 opts: OpenOptions) -> Backend:
        from pig.engine.backends.onnxruntime import OrtBackend

        return OrtBackend(bundle, precision, device, branches, opts.ort)  # type: ignore[arg-type]

    return open_ort


ROWS: tuple[Row, ...] = (
    Row("tensorrt", "cuda", trt_missing, lambda b: GPU_PREFERENCE, _open_trt),
    Row("onnxruntime", "cuda", ort_cuda_missing, lambda b: GPU_PREFERENCE, _ort_opener("cuda")),
    Row("onnxruntime", "cpu", lambda: "", lambda b: CPU_PREFERENCE, _ort_opener("cpu")),
)
BACKENDS = ("auto", *dict.fromkeys(r.backend for r in ROWS))


@dataclass(frozen=True)
class Choice:
    """What will run, and why (printed by the CLI)."""

    backend: str  # "tensorrt" | "onnxruntime"
    device: str  # "cuda" | "cpu"
    precision: str
    reason: str

    def __str__(self) -> str:
        return f"{self.backend} ({self.device}, {self.precision}): {self.reason}"


def bundle_precisions(bundle: Bundle, branches: Sequence[Branch]) -> list[str]:
    """Precisions present for every branch, in PRECISIONS order."""
    have = [set(bundle.precisions(b)) for b in branches]
    return [p for p in PRECISIONS if all(p in h for h in have)]


def _pick_precision(available: list[str], requested: str | None, preference: Sequence[str],
                    bundle: Bundle) -> tuple[str, str]:
    if requested is not None:
        if requested not in available:
            raise BackendUnavailable(
                f"{bundle.dir}: no {requested} graphs (bundle has {', '.join(available) or 'none'})"
                + (f"; make them with pig-export --calibrate --precision {requested} --out "
                   f"{bundle.dir}" if requested in CALIBRATED_PRECISIONS else "")
            )
        return requested, "as requested"
    for p in preference:
        if p in available:
            return p, f"fastest precision in the bundle for this device ({'/'.join(available)})"
    raise BackendUnavailable(f"{bundle.dir}: no graph for the requested branches")


def _row(backend: str, device: str) -> Row:
    rows = [r for r in ROWS if r.backend == backend]
    return next((r for r in rows if r.device == device), rows[0])


def _precision_for(row: Row, available: list[str], requested: str | None, bundle: Bundle
                   ) -> tuple[str, str]:
    """The precision ``row`` runs, and why: on a CPU fp32, or int8-cpu when the bundle has it
    and its accuracy report allows it; int8-cpu is refused on a GPU row."""
    if row.device != "cpu":
        p, why = _pick_precision(available, requested, row.preferred(bundle), bundle)
        if p == INT8_CPU:
            raise BackendUnavailable(f"{INT8_CPU} graphs are made for ONNX Runtime on CPU, not "
                                     f"{row.backend}/{row.device}; use --precision int8 (Q/DQ)")
        return p, why
    if requested is not None or INT8_CPU not in available:
        return _pick_precision(available, requested, row.preferred(bundle), bundle)
    use, why = int8_cpu_verdict(bundle)
    if use:
        return INT8_CPU, f"{INT8_CPU} ({why})"
    return _pick_precision(available, None, row.preferred(bundle), bundle)[0], \
        f"fp32, {INT8_CPU} not used: {why}"


def choose(
    bundle: Bundle,
    backend: str = "auto",
    precision: str | None = None,
    branches: Sequence[Branch] = ("video", "text"),
    ort_device: str = "cpu",
) -> list[Choice]:
    """Candidates to try, best first (one unless ``backend="auto"``). ``ort_device``: the
    device of an explicitly requested backend that has several."""
    if backend not in BACKENDS:
        raise BackendUnavailable(f"unknown backend {backend!r} (choose from {', '.join(BACKENDS)})")
    if precision is not None and precision not in PRECISIONS:
        raise BackendUnavailable(
            f"unknown precision {precision!r} (choose from {', '.join(PRECISIONS)})")
    available = bundle_precisions(bundle, branches)
    if backend != "auto":
        row = _row(backend, ort_device)
        if row.device != "cpu":
            why = row.missing()
            if why:
                name = "TensorRT" if row.backend == "tensorrt" else f"{row.backend}/{row.device}"
                raise BackendUnavailable(f"{name} unavailable: {why}")
        p, pwhy = _precision_for(row, available, precision, bundle)
        return [Choice(row.backend, row.device, p, f"requested; precision {pwhy}")]

    choices: list[Choice] = []
    skipped: list[str] = []
    *gpu_rows, last = ROWS
    for row in gpu_rows:
        why = row.missing()
        if why:
            skipped.append(f"{row.backend}/{row.device}: {why}")
            continue
        if precision == INT8_CPU:
            skipped.append(f"{row.backend}/{row.device}: {INT8_CPU} runs on CPU only")
            continue
        p, pwhy = _precision_for(row, available, precision, bundle)
        choices.append(Choice(row.backend, row.device, p,
                              f"auto: fastest available; precision {pwhy}"))
    p, pwhy = _precision_for(last, available, precision, bundle)
    note = f" (skipped {'; '.join(skipped)})" if skipped else ""
    choices.append(Choice(last.backend, last.device, p, f"auto: precision {pwhy}{note}"))
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
    opts = OpenOptions(ort_options, trt_profile)

    def open_one(c: Choice) -> Backend:
        opened = _row(c.backend, c.device).open(bundle, c.precision, branches, opts)
        log(f"backend: {c.backend} {c.device} {c.precision} ({opened.device})")
        log(Detail(f"  why: {c.reason}"))
        return opened

    *fallible, last = choose(bundle, backend, precision, branches, ort_device)
    for c in fallible:
        try:
            return open_one(c)
        except BackendUnavailable as err:
            log(f"backend {c.backend}/{c.device} unavailable ({err}); trying the next")
    return open_one(last)
