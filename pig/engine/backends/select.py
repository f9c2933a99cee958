"""``--backend auto|onnxruntime|tensorrt`` x ``--precision fp32|fp16|int8|int8-cpu``.

The backends are the rows of :data:`ROWS`, one per (backend, device), each defined in its
backend's module (:class:`~pig.engine.backends.base.Row`: how to tell whether it can run
here, which precision ``auto`` takes on it, how to open it, the type of its options). Adding
a backend is adding its module and its rows here. ``auto`` tries the rows in order and ends
with the row marked ``fallback`` (ONNX Runtime on CPU): TensorRT (GPU + TensorRT 10/11 or
TensorRT-RTX on a GPU it supports + cuda-python), ONNX Runtime on CUDA (GPU + a
CUDA-enabled onnxruntime), ONNX Runtime on CPU. Without ``--precision`` it takes fp16 on a
GPU when the bundle has it (tensor cores; fp16 R@1 is held within 0.5 points of fp32) and
fp32 on CPU (the CPU provider has few fp16 kernels, so fp16 is slower there). INT8 for
TensorRT costs up to 2 points of R@1, so it is used only when asked for. On a CPU, ``auto``
takes the bundle's ``int8-cpu`` graphs when its accuracy report shows their R@1 within 1
point of fp32 (:mod:`pig.engine.backends.accuracy`), else fp32 with the reason; a CPU-only
precision never runs on a GPU row. Availability is decided without importing TensorRT or
CUDA before a GPU was found (:mod:`pig.engine.host.gpu`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pig.engine.backends import onnxruntime, tensorrt
from pig.engine.backends.base import Backend, Row, Settings
from pig.engine.display import Detail, log_stderr
from pig.engine.graphs import CALIBRATED_PRECISIONS, CPU_ONLY_PRECISIONS, PRECISIONS, Branch
from pig.errors import BackendUnavailable

if TYPE_CHECKING:
    from pig.engine.bundle import Bundle

ROWS: tuple[Row, ...] = (*tensorrt.ROWS, *onnxruntime.ROWS)
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


def _fallback() -> Row:
    return next(r for r in ROWS if r.fallback)


def _row(backend: str, device: str | None) -> Row:
    """The row of ``backend`` on ``device`` (default: its fallback row, else its first)."""
    rows = [r for r in ROWS if r.backend == backend]
    if device is None:
        return next((r for r in rows if r.fallback), rows[0])
    for r in rows:
        if r.device == device:
            return r
    raise BackendUnavailable(f"{backend} has no {device} device (it has "
                             f"{', '.join(r.device for r in rows)})")


def _precision_for(row: Row, available: list[str], requested: str | None, bundle: Bundle
                   ) -> tuple[str, str]:
    """The precision ``row`` runs, and why: the requested one, or the row's pick."""
    if requested is None:
        return row.pick(bundle, available)
    if requested in CPU_ONLY_PRECISIONS and row.device != "cpu":
        raise BackendUnavailable(f"{requested} graphs are made for ONNX Runtime on CPU, not "
                                 f"{row.name}; use --precision int8 (Q/DQ)")
    if requested not in available:
        raise BackendUnavailable(
            f"{bundle.dir}: no {requested} graphs (bundle has {', '.join(available) or 'none'})"
            + (f"; make them with pig-export --calibrate --precision {requested} --out "
               f"{bundle.dir}" if requested in CALIBRATED_PRECISIONS else ""))
    return requested, "as requested"


def choose(
    bundle: Bundle,
    backend: str = "auto",
    precision: str | None = None,
    branches: Sequence[Branch] = ("video", "text"),
    device: str | None = None,
) -> list[Choice]:
    """Candidates to try, best first (one unless ``backend="auto"``). ``device``: the
    device of an explicitly requested backend that has several (default: its CPU row)."""
    names = ("auto", *dict.fromkeys(r.backend for r in ROWS))
    if backend not in names:
        raise BackendUnavailable(f"unknown backend {backend!r} (choose from {', '.join(names)})")
    if precision is not None and precision not in PRECISIONS:
        raise BackendUnavailable(
            f"unknown precision {precision!r} (choose from {', '.join(PRECISIONS)})")
    available = bundle_precisions(bundle, branches)
    if backend != "auto":
        row = _row(backend, device)
        why = row.missing()
        if why:
            raise BackendUnavailable(f"{row.name} unavailable: {why}")
        p, pwhy = _precision_for(row, available, precision, bundle)
        return [Choice(row.backend, row.device, p, f"requested; precision {pwhy}")]

    choices: list[Choice] = []
    skipped: list[str] = []
    last = _fallback()
    for row in ROWS:
        if row is last:
            continue
        why = row.missing()
        if why:
            skipped.append(f"{row.backend}/{row.device}: {why}")
            continue
        if precision in CPU_ONLY_PRECISIONS:
            skipped.append(f"{row.backend}/{row.device}: {precision} runs on CPU only")
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
    device: str | None = None,
    threads: int = 0,
    options: Iterable[object] = (),
    log: Callable[[str], None] = log_stderr,
) -> Backend:
    """The first candidate of :func:`choose` that opens; logs which one and why.

    ``threads``: CPU threads the encoder may use (0: one per core). ``options``: option
    objects of particular backends (``OrtOptions``, ``TrtOptions``); each backend takes
    its own, so they may be given whichever backend ``auto`` ends up opening.
    """
    settings = Settings(threads, tuple(options))
    known = tuple(r.options for r in ROWS)
    for o in settings.options:
        if not isinstance(o, known):
            raise TypeError(f"{type(o).__name__} is no backend's options")

    def open_one(c: Choice) -> Backend:
        opened = _row(c.backend, c.device).open(bundle, c.precision, branches, settings)
        log(f"backend: {c.backend} {c.device} {c.precision} ({opened.device})")
        log(Detail(f"  why: {c.reason}"))
        return opened

    *fallible, last = choose(bundle, backend, precision, branches, device)
    for c in fallible:
        try:
            return open_one(c)
        except BackendUnavailable as err:
            log(f"backend {c.backend}/{c.device} unavailable ({err}); trying the next")
    return open_one(last)
