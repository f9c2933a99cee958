"""The backend interface shared by ONNX Runtime and TensorRT, the row that registers a
backend on a device (:class:`Row`), batch splitting, and the text batches cut to their
tokens."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, Self, TypeVar, runtime_checkable

import numpy as np

from pig.engine.graphs import Branch
from pig.errors import BackendUnavailable

if TYPE_CHECKING:
    from pig.engine.bundle import Bundle

_Options = TypeVar("_Options")


@runtime_checkable
class Backend(Protocol):
    """Encodes preprocessed batches into unit vectors ``[B, D]`` float32."""

    name: str  # "onnxruntime" | "tensorrt"
    device: str  # what is actually in use, e.g. "CPUExecutionProvider", "NVIDIA H100 (sm_90)"
    precision: str  # one of pig.engine.graphs.PRECISIONS

    def encode_video(self, pixel_values: np.ndarray) -> np.ndarray:
        """``[B, T, 3, S, S]`` float32 (or the graph's input dtype) -> ``[B, D]`` float32."""
        ...

    def encode_text(self, input_ids: np.ndarray) -> np.ndarray:
        """``[B, L]`` int64 -> ``[B, D]`` float32."""
        ...

    def video_input_buffers(self, count: int, batch: int) -> list[np.ndarray]:
        """``count`` new ``[batch, T, 3, S, S]`` arrays in the input dtype, for a caller that
        keeps ``count`` batches in flight to preprocess frames into; ``encode_video`` of one
        of them (or of its leading rows) reads it where it is.

        TensorRT hands out pinned (page-locked) host memory: the async copy to the GPU reads
        the frames straight from there, with no host-side copy into a staging buffer.
        ``encode_video`` is synchronous (copy in, run, copy out on one stream), so a copy
        overlaps the decoding and preprocessing of the next batches, not the inference of
        the previous one. ONNX Runtime hands out ordinary arrays. They stay valid until
        :meth:`close`.
        """
        ...

    def close(self) -> None:
        """Free what the backend holds (sessions, GPU and pinned memory). A second call does
        nothing; any other use afterwards raises RuntimeError."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None: ...


@dataclass(frozen=True)
class Settings:
    """What every opener is handed. ``threads``: CPU threads an encoder may use (0: one per
    core), the one knob every backend understands. ``options``: backend-specific option
    objects (e.g. ``OrtOptions``, ``TrtOptions``); each backend takes the one of its own type
    and ignores the others, so a caller can pass several without knowing which will run."""

    threads: int = 0
    options: tuple[object, ...] = ()

    def find(self, kind: type[_Options]) -> _Options | None:
        """The option object of type ``kind``, if one was given."""
        return next((o for o in self.options if isinstance(o, kind)), None)


PickPrecision = Callable[["Bundle", Sequence[str]], tuple[str, str]]
"""``(bundle, precisions present) -> (precision auto takes, why)``."""
Opener = Callable[["Bundle", str, Sequence[Branch], Settings], Backend]
"""``(bundle, precision, branches, settings) -> opened backend``."""


@dataclass(frozen=True)
class Row:
    """One backend on one device, as :mod:`pig.engine.backends.select` lists them.

    ``missing``: why it cannot run here ("" if it can), decided without importing TensorRT or
    CUDA before a GPU was found. ``pick``: the precision ``auto`` takes on it. ``options``:
    the type of its option objects (see :class:`Settings`). ``fallback``: runs on every host;
    ``auto`` ends with it.
    """

    backend: str  # the --backend value
    device: str  # "cuda" | "cpu"
    missing: Callable[[], str]
    pick: PickPrecision
    open: Opener
    options: type
    fallback: bool = False
    label: str = ""  # how errors name it (default backend/device)

    @property
    def name(self) -> str:
        return self.label or f"{self.backend}/{self.device}"


def fastest(*order: str) -> PickPrecision:
    """A :data:`PickPrecision` that takes the first of ``order`` the bundle has."""
    def pick(bundle: Bundle, available: Sequence[str]) -> tuple[str, str]:
        for p in order:
            if p in available:
                return p, ("fastest precision in the bundle for this device "
                           f"({'/'.join(available)})")
        raise BackendUnavailable(f"{bundle.dir}: no graph for the requested branches")

    return pick


class Closable:
    """The close-once lifecycle of a backend: :meth:`close` calls ``_release`` the first
    time only, ``_check_open`` refuses use afterwards, and ``with`` closes on exit."""

    name: str
    _closed = False

    def _release(self) -> None:
        """Free what the backend holds; may run on a partly set-up backend."""
        raise NotImplementedError

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"this {self.name} backend is closed; open a new one")

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._release()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def chunks(n: int, max_batch: int) -> Iterator[slice]:
    """Consecutive slices of at most ``max_batch`` rows covering ``range(n)``."""
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    for start in range(0, n, max_batch):
        yield slice(start, min(start + max_batch, n))


def run_in_chunks(
    fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray, max_batch: int
) -> np.ndarray:
    """``fn`` over row chunks of ``x`` of at most ``max_batch`` rows, concatenated."""
    if x.shape[0] <= max_batch:
        return fn(x)
    return np.concatenate([fn(x[s]) for s in chunks(x.shape[0], max_batch)], axis=0)


TEXT_BUCKET = 4  # rows whose lengths fall in one 4-token band share an encoder call


def text_lengths(input_ids: np.ndarray, eos_id: int) -> np.ndarray:
    """Per row of ``input_ids [B, L]``, the columns up to and including its first EOS (all
    ``L`` for a row without one)."""
    is_eos = input_ids == eos_id
    return np.where(is_eos.any(axis=1), is_eos.argmax(axis=1) + 1, input_ids.shape[1])


def encode_cut_text(run: Callable[[np.ndarray], np.ndarray], input_ids: np.ndarray,
                    eos_id: int, min_length: int, max_batch: int,
                    bucket: int = TEXT_BUCKET) -> np.ndarray:
    """``run`` (a text graph with a dynamic sequence axis) over ``input_ids [B, L]`` with the
    padding cut off: rows are grouped by length in ``bucket``-token bands, and each group is
    cut after its longest row's first EOS (no shorter than ``min_length``; at most
    ``max_batch`` rows a call). Exact for the CLIP text tower: causal, pooled at the first EOS,
    padded with EOS, so no output depends on a column after it. Rows come back in order."""
    n = len(input_ids)
    if n == 0:
        return run(input_ids)
    lengths = np.maximum(text_lengths(input_ids, eos_id), min(min_length, input_ids.shape[1]))
    order = np.argsort(lengths, kind="stable")
    band = (lengths[order] - 1) // bucket
    starts = np.flatnonzero(np.diff(band, prepend=-1))
    out: np.ndarray | None = None
    for lo, hi in itertools.pairwise([*starts.tolist(), n]):
        for part in chunks(hi - lo, max_batch):
            rows = order[lo + part.start:lo + part.stop]
            got = run(np.ascontiguousarray(input_ids[rows, :int(lengths[rows].max())]))
            if out is None:
                out = np.empty((n, *got.shape[1:]), got.dtype)
            out[rows] = got
    assert out is not None
    return out
