"""TensorRT backend: cached plans, one CUDA stream, pinned host buffers, async copies."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from pig.engine import gpu as gpu_probe
from pig.engine.backends.base import INPUT_NAMES, OUTPUT_NAME, Branch, run_in_chunks
from pig.engine.trt.build import DEFAULT_WORKSPACE, ensure_plan, import_tensorrt
from pig.engine.trt.cuda import Cuda, DeviceBuffer, PinnedBuffer, import_cudart
from pig.engine.trt.profiles import BatchProfile
from pig.errors import BackendUnavailable

if TYPE_CHECKING:
    from pig.engine.bundle import Bundle


class _Engine:
    """One deserialized engine with I/O buffers sized for the profile's max batch."""

    def __init__(self, trt: Any, cuda: Cuda, stream: Any, plan: bytes, branch: Branch) -> None:
        self.cuda, self.stream = cuda, stream
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(plan)
        if self.engine is None:
            raise BackendUnavailable(f"TensorRT could not deserialize the {branch} plan")
        self.context = self.engine.create_execution_context()
        self.input_name, self.output_name = INPUT_NAMES[branch], OUTPUT_NAME
        io = {self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)}
        if io != {self.input_name, self.output_name}:
            raise BackendUnavailable(f"{branch} plan has I/O tensors {sorted(io)}")
        min_shape, _, max_shape = self.engine.get_tensor_profile_shape(self.input_name, 0)
        self.min_batch, self.max_batch = int(min_shape[0]), int(max_shape[0])
        self.in_shape = tuple(int(d) for d in max_shape)
        out_dim = int(self.engine.get_tensor_shape(self.output_name)[-1])
        self.in_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self.input_name)))
        out_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self.output_name)))
        self.host_in = PinnedBuffer(cuda, self.in_shape, self.in_dtype)
        self.host_out = PinnedBuffer(cuda, (self.max_batch, out_dim), out_dtype)
        self.dev_in = DeviceBuffer(cuda, self.host_in.nbytes)
        self.dev_out = DeviceBuffer(cuda, self.host_out.nbytes)
        self.context.set_tensor_address(self.input_name, self.dev_in.ptr)
        self.context.set_tensor_address(self.output_name, self.dev_out.ptr)

    def _in_place(self, x: np.ndarray) -> bool:
        """Is ``x`` the leading rows of the pinned input buffer (frames written in place)?"""
        return (x.dtype == self.in_dtype and x.flags.c_contiguous
                and x.__array_interface__["data"][0] == self.host_in.ptr)

    def run(self, x: np.ndarray) -> np.ndarray:
        """``x`` has at most ``max_batch`` rows; it may already be a view of ``host_in``.
        Fewer rows than the profile's min are padded with copies of the first row."""
        if x.shape[1:] != self.in_shape[1:]:
            raise ValueError(f"{self.input_name}: got shape {x.shape}, engine expects "
                             f"[B, {', '.join(map(str, self.in_shape[1:]))}]")
        n = x.shape[0]
        if not self._in_place(x):
            np.copyto(self.host_in.array[:n], x, casting="same_kind")
        b = max(n, self.min_batch)
        self.host_in.array[n:b] = self.host_in.array[0]
        n_in = self.host_in.array[:b].nbytes
        n_out = self.host_out.array[:b].nbytes
        self.context.set_input_shape(self.input_name, (b, *self.in_shape[1:]))
        self.cuda.copy_async(self.dev_in.ptr, self.host_in.ptr, n_in, "h2d", self.stream)
        if not self.context.execute_async_v3(int(self.stream)):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        self.cuda.copy_async(self.host_out.ptr, self.dev_out.ptr, n_out, "d2h", self.stream)
        self.cuda.synchronize(self.stream)
        return self.host_out.array[:n].astype(np.float32, copy=True)

    def close(self) -> None:
        for buf in (self.host_in, self.host_out, self.dev_in, self.dev_out):
            buf.close()


class TrtBackend:
    """Backend over TensorRT plans built (or loaded from the cache) for this GPU."""

    name = "tensorrt"

    def __init__(
        self,
        bundle: Bundle,
        precision: str = "fp16",
        branches: Sequence[Branch] = ("video", "text"),
        profile: BatchProfile | None = None,
        workspace_bytes: int = DEFAULT_WORKSPACE,
    ) -> None:
        gpu_probe.probe_gpu()  # before any CUDA / TensorRT import
        import_cudart()  # refuse early, before a long engine build, if cuda-python is missing
        trt = import_tensorrt()
        self.precision = precision
        plans = {b: ensure_plan(bundle, b, precision, profile, workspace_bytes)[0]
                 for b in branches}
        self._cuda = Cuda()
        self._stream = self._cuda.stream()
        self._engines = {b: _Engine(trt, self._cuda, self._stream, p, b) for b, p in plans.items()}
        self.device = f"{self._cuda.device_name()} TensorRT {trt.__version__}"

    def _engine(self, branch: Branch) -> _Engine:
        if branch not in self._engines:
            raise BackendUnavailable(f"this backend was opened without the {branch} graph")
        return self._engines[branch]

    def encode_video(self, pixel_values: np.ndarray) -> np.ndarray:
        e = self._engine("video")
        return run_in_chunks(e.run, pixel_values, e.max_batch)

    def encode_text(self, input_ids: np.ndarray) -> np.ndarray:
        e = self._engine("text")
        return run_in_chunks(e.run, input_ids, e.max_batch)

    def video_input_buffer(self, batch: int) -> np.ndarray:
        e = self._engine("video")
        if batch > e.max_batch:
            raise ValueError(f"batch {batch} exceeds the engine profile's max {e.max_batch}")
        return e.host_in.array[:batch]

    def close(self) -> None:
        for e in self._engines.values():
            e.close()
        self._engines.clear()
        if self._stream is not None:
            self._cuda.check(self._cuda.rt.cudaStreamDestroy(self._stream))
            self._stream = None
