"""The backend interface shared by ONNX Runtime and TensorRT, and batch splitting."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

import numpy as np


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
