"""Minimal cuda-python runtime helpers: pinned host / device buffers, a stream, async copies.

Imports ``cuda.bindings.runtime`` (cuda-python >= 12.6) or the older ``cuda.cudart``. Call
only after :func:`pig.engine.host.gpu.probe_gpu` succeeded.
"""

from __future__ import annotations

import ctypes
import importlib
from typing import Any

import numpy as np

from pig.errors import DriverUnavailable


def import_cudart() -> Any:
    """The cuda-python runtime module, new or old import path."""
    for name in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise DriverUnavailable(
        "TensorRT backend needs cuda-python (pip install cuda-python); not importable here"
    )


class Cuda:
    """Checked calls into the CUDA runtime on device 0 of the visible devices."""

    def __init__(self) -> None:
        self.rt = import_cudart()
        self.check(self.rt.cudaSetDevice(0))

    def check(self, result: Any) -> Any:
        """Unpack cuda-python's ``(err, *values)`` tuples, raising on a CUDA error."""
        err, *values = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            _, msg = self.rt.cudaGetErrorString(err)
            raise RuntimeError(f"CUDA error {int(err)}: {msg.decode(errors='replace')}")
        return values[0] if len(values) == 1 else tuple(values)

    def device_name(self) -> str:
        props = self.check(self.rt.cudaGetDeviceProperties(0))
        name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
        return f"{name.rstrip(chr(0))} (sm_{props.major}{props.minor})"

    def stream(self) -> Any:
        return self.check(self.rt.cudaStreamCreate())

    def destroy_stream(self, stream: Any) -> None:
        self.check(self.rt.cudaStreamDestroy(stream))

    def synchronize(self, stream: Any) -> None:
        self.check(self.rt.cudaStreamSynchronize(stream))

    def copy_async(self, dst: int, src: int, nbytes: int, kind: str, stream: Any) -> None:
        """``kind``: "h2d" or "d2h"."""
        k = {
            "h2d": self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice,
            "d2h": self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost,
        }[kind]
        self.check(self.rt.cudaMemcpyAsync(dst, src, nbytes, k, stream))


class PinnedBuffer:
    """Page-locked host memory exposed as a numpy array (freed on close)."""

    def __init__(self, cuda: Cuda, shape: tuple[int, ...], dtype: Any) -> None:
        self.cuda = cuda
        self.dtype = np.dtype(dtype)
        self.nbytes = int(np.prod(shape)) * self.dtype.itemsize
        self.ptr: int = int(cuda.check(cuda.rt.cudaMallocHost(self.nbytes)))
        raw = (ctypes.c_byte * self.nbytes).from_address(self.ptr)
        self.array = np.frombuffer(raw, dtype=self.dtype).reshape(shape)

    def close(self) -> None:
        if self.ptr:
            self.cuda.check(self.cuda.rt.cudaFreeHost(self.ptr))
            self.ptr = 0


class DeviceBuffer:
    """Device memory of a fixed byte size (freed on close)."""

    def __init__(self, cuda: Cuda, nbytes: int) -> None:
        self.cuda = cuda
        self.nbytes = nbytes
        self.ptr: int = int(cuda.check(cuda.rt.cudaMalloc(nbytes)))

    def close(self) -> None:
        if self.ptr:
            self.cuda.check(self.cuda.rt.cudaFree(self.ptr))
            self.ptr = 0
