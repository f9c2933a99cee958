"""Minimal cuda-python runtime helpers: the GPU the probe found, pinned host / device buffers,
streams, events, async copies, and waits that release the GIL.

Imports ``cuda.bindings.runtime`` (cuda-python >= 12.6) or the older ``cuda.cudart``. Call
only after :func:`pig.engine.host.gpu.probe_gpu` succeeded. Every failure is a
:class:`~pig.errors.GpuFault` (a :class:`~pig.errors.BackendUnavailable`) with the CUDA error
named, so ``auto`` falls back and an explicit ``--backend tensorrt`` refuses in one line.

Waiting: cuda-python 12.x holds the GIL through ``cudaStreamSynchronize``, which stalls the
decode and preprocessing threads for a whole inference. :meth:`Cuda.wait` therefore waits on
an event through the driver library (``libcuda.so.1``, present wherever a GPU is) with
``ctypes``, which releases the GIL for the call; cuda-python's own call is the fallback.
"""

from __future__ import annotations

import ctypes
import importlib
from typing import Any

import numpy as np

from pig.engine.host.gpu import GpuInfo, normal_bus_id
from pig.errors import BackendUnavailable, GpuFault

# cudaError_t values that mean "this driver/host cannot run this CUDA", with what to do
_HINTS = {
    35: "the NVIDIA driver is older than this cuda-python/TensorRT's CUDA: install the "
        "gpu-cu12 extra on drivers before R580, or update the driver",
    100: "no CUDA-capable device is visible",
    999: "unknown CUDA error (driver or container set-up)",
}


def import_cudart() -> Any:
    """The cuda-python runtime module, new or old import path."""
    failed = []
    for name in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            return importlib.import_module(name)
        except ImportError as err:
            failed.append(f"{name}: {err}")
        except Exception as err:  # a broken install (missing shared library, ABI)
            raise GpuFault(f"cuda-python cannot be imported ({name}: "
                           f"{type(err).__name__}: {err})") from err
    raise BackendUnavailable(
        "TensorRT backend needs cuda-python (pip install 'pig-engine[gpu-cu12]' or "
        "'[gpu-cu13]'); not importable here"
    )


def _driver_sync() -> Any | None:
    """``cuEventSynchronize`` of the driver library as a ctypes function (the GIL is released
    while it blocks), or None where the library cannot be loaded."""
    try:
        fn = ctypes.CDLL("libcuda.so.1").cuEventSynchronize
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_void_p], ctypes.c_int
    return fn


class Cuda:
    """Checked calls into the CUDA runtime, on the GPU :mod:`pig.engine.host.gpu` described.

    Opening it initialises CUDA (the primary context) and checks it at once: a driver too
    old for the installed CUDA (error 35), a GPU that CUDA does not see under the probe's
    PCI bus id, or another card behind that id (UUID) is a :class:`GpuFault` here, before
    any engine is built.
    """

    def __init__(self, gpu: GpuInfo | None = None) -> None:
        self.rt = import_cudart()
        self.device = self._device_of(gpu)
        self.check(self.rt.cudaSetDevice(self.device), "cudaSetDevice")
        self.check(self.rt.cudaFree(0), "CUDA initialisation")  # creates the context now
        if gpu is not None and gpu.uuid.startswith("GPU-"):  # not for MIG instances
            self._check_uuid(gpu)
        self._sync = _driver_sync()

    def _device_of(self, gpu: GpuInfo | None) -> int:
        """CUDA's ordinal of the probed card (by PCI bus id), else 0."""
        if gpu is None or not gpu.pci_bus_id:
            return 0
        try:
            return int(self.check(self.rt.cudaDeviceGetByPCIBusId(gpu.pci_bus_id.encode()),
                                  f"cudaDeviceGetByPCIBusId({gpu.pci_bus_id})"))
        except GpuFault as err:
            raise GpuFault(f"{gpu} at PCI {gpu.pci_bus_id} is not visible to CUDA ({err}); "
                           "with CUDA_VISIBLE_DEVICES as indices also set "
                           "CUDA_DEVICE_ORDER=PCI_BUS_ID, or select the GPU by UUID") from None

    def _check_uuid(self, gpu: GpuInfo) -> None:
        props = self.check(self.rt.cudaGetDeviceProperties(self.device), "device properties")
        raw = getattr(getattr(props, "uuid", None), "bytes", None)
        try:  # bytes, or a sequence of (signed) chars
            uuid = bytes(int(b) & 0xFF for b in raw[:16]).hex() if raw is not None else ""
        except (TypeError, ValueError):
            uuid = ""
        want = gpu.uuid.removeprefix("GPU-").replace("-", "").lower()
        if len(uuid) == 32 and uuid != want:
            raise GpuFault(f"CUDA device {self.device} is not {gpu} ({gpu.uuid}): the GPU "
                           "probe and CUDA disagree on the card")

    def check(self, result: Any, what: str = "CUDA call") -> Any:
        """Unpack cuda-python's ``(err, *values)`` tuples; a CUDA error is a GpuFault."""
        err, *values = result if isinstance(result, tuple) else (result,)
        code = int(err)
        if code != 0:
            try:
                _, msg = self.rt.cudaGetErrorString(err)
                text = msg.decode(errors="replace") if isinstance(msg, bytes) else str(msg)
            except Exception:  # the error string is a courtesy
                text = "?"
            hint = f"; {_HINTS[code]}" if code in _HINTS else ""
            raise GpuFault(f"{what} failed: CUDA error {code} ({text}){hint}")
        return values[0] if len(values) == 1 else tuple(values)

    def device_name(self) -> str:
        props = self.check(self.rt.cudaGetDeviceProperties(self.device), "device properties")
        name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
        return f"{name.rstrip(chr(0))} (sm_{props.major}{props.minor})"

    def bind(self) -> None:
        """Make this device current on the calling thread (CUDA keeps it per thread; the
        backend may be opened on one thread and run on another)."""
        self.check(self.rt.cudaSetDevice(self.device), "cudaSetDevice")

    def pci_bus_id(self) -> str:
        """The PCI bus id of the device in use, as :func:`pig.engine.host.gpu.bus_id`."""
        raw = self.check(self.rt.cudaDeviceGetPCIBusId(16, self.device), "PCI bus id")
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        return normal_bus_id(text.rstrip("\0"))

    def stream(self) -> Any:
        return self.check(self.rt.cudaStreamCreate(), "cudaStreamCreate")

    def destroy_stream(self, stream: Any) -> None:
        self.check(self.rt.cudaStreamDestroy(stream), "cudaStreamDestroy")

    def synchronize(self, stream: Any) -> None:
        self.check(self.rt.cudaStreamSynchronize(stream), "cudaStreamSynchronize")

    def event(self) -> Any:
        """An event without timing (cheapest to record and wait on)."""
        flags = getattr(self.rt, "cudaEventDisableTiming", 2)
        return self.check(self.rt.cudaEventCreateWithFlags(flags), "cudaEventCreate")

    def destroy_event(self, event: Any) -> None:
        self.check(self.rt.cudaEventDestroy(event), "cudaEventDestroy")

    def record(self, event: Any, stream: Any) -> None:
        self.check(self.rt.cudaEventRecord(event, stream), "cudaEventRecord")

    def stream_wait(self, stream: Any, event: Any) -> None:
        """Work queued on ``stream`` after this starts once ``event`` completed (no host wait)."""
        self.check(self.rt.cudaStreamWaitEvent(stream, event, 0), "cudaStreamWaitEvent")

    def wait(self, event: Any) -> None:
        """Block until ``event`` completed, with the GIL released (driver call via ctypes)."""
        if self._sync is None:
            self.check(self.rt.cudaEventSynchronize(event), "cudaEventSynchronize")
            return
        code = self._sync(int(event))
        if code != 0:
            raise GpuFault(f"cuEventSynchronize failed: CUDA driver error {code}")

    def copy_async(self, dst: int, src: int, nbytes: int, kind: str, stream: Any) -> None:
        """``kind``: "h2d" or "d2h"."""
        k = {
            "h2d": self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice,
            "d2h": self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost,
        }[kind]
        self.check(self.rt.cudaMemcpyAsync(dst, src, nbytes, k, stream), f"copy {kind}")


class PinnedBuffer:
    """Page-locked host memory exposed as a numpy array (freed on close)."""

    def __init__(self, cuda: Cuda, shape: tuple[int, ...], dtype: Any) -> None:
        self.cuda = cuda
        self.dtype = np.dtype(dtype)
        self.nbytes = int(np.prod(shape)) * self.dtype.itemsize
        self.ptr: int = int(cuda.check(cuda.rt.cudaMallocHost(self.nbytes),
                                       f"cudaMallocHost({self.nbytes})"))
        raw = (ctypes.c_byte * self.nbytes).from_address(self.ptr)
        self.array = np.frombuffer(raw, dtype=self.dtype).reshape(shape)

    def close(self) -> None:
        if self.ptr:
            self.cuda.check(self.cuda.rt.cudaFreeHost(self.ptr), "cudaFreeHost")
            self.ptr = 0


class DeviceBuffer:
    """Device memory of a fixed byte size (freed on close)."""

    def __init__(self, cuda: Cuda, nbytes: int) -> None:
        self.cuda = cuda
        self.nbytes = nbytes
        self.ptr: int = int(cuda.check(cuda.rt.cudaMalloc(nbytes), f"cudaMalloc({nbytes})"))

    def close(self) -> None:
        if self.ptr:
            self.cuda.check(self.cuda.rt.cudaFree(self.ptr), "cudaFree")
            self.ptr = 0

