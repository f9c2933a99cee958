"""TensorRT backend: cached plans, one CUDA stream, pinned host buffers, async copies."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from pig.engine import gpu as gpu_probe
from pig.engine.backends.base import Closable, run_in_chunks
from pig.engine.graphs import INPUT_NAMES, OUTPUT_NAME, Branch
from pig.engine.trt.build import DEFAULT_WORKSPACE, ensure_plan, import_tensorrt
from pig.engine.trt.cuda import Cuda, DeviceBuffer, PinnedBuffer, import_cudart
from pig.engine.trt.profiles import BatchProfile
from pig.errors import BackendUnavailable

if TYPE_CHECKING:
    from pig.engine.bundle import Bundle

_Buffer = TypeVar("_Buffer", PinnedBuffer, DeviceBuffer)


class _Engine:
    """One deserialized engine with I/O buffers sized for the profile's max batch."""

    def __init__(self, trt: Any, cuda: Cuda, stream: Any, plan: bytes, branch: Branch) -> None:
        """Everything set up here is released again if a later step fails."""
        self.cuda, self.stream = cuda, stream
        with ExitStack() as held:
            held.callback(self._drop_trt_objects)
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

            def keep(buf: _Buffer) -> _Buffer:
                held.callback(buf.close)
                return buf

            self.host_in = keep(PinnedBuffer(cuda, self.in_shape, self.in_dtype))
            self.host_out = keep(PinnedBuffer(cuda, (self.max_batch, out_dim), out_dtype))
            self.dev_in = keep(DeviceBuffer(cuda, self.host_in.nbytes))
            self.dev_out = keep(DeviceBuffer(cuda, self.host_out.nbytes))
            self.context.set_tensor_address(self.input_name, self.dev_in.ptr)
            self.context.set_tensor_address(self.output_name, self.dev_out.ptr)
            self._held = held.pop_all()

    def _drop_trt_objects(self) -> None:
        """TensorRT frees an object with its last reference: context, then engine, then
        runtime (each needs the next one alive)."""
        self.context = self.engine = self.runtime = None

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
        """Free the I/O buffers, then the context, engine and runtime."""
        self._held.close()


class TrtBackend(Closable):
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
        self._engines: dict[Branch, _Engine] = {}
        self._held = ExitStack()  # released in reverse order of setup by close()
        try:
            self._cuda = Cuda()
            stream = self._cuda.stream()
            self._held.callback(self._cuda.destroy_stream, stream)
            for b, p in plans.items():
                self._engines[b] = engine = _Engine(trt, self._cuda, stream, p, b)
                self._held.callback(engine.close)
            self.device = f"{self._cuda.device_name()} TensorRT {trt.__version__}"
        except BaseException:
            self.close()  # what the branches before the failing one set up
            raise

    def _engine(self, branch: Branch) -> _Engine:
        self._check_open()
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

    def _release(self) -> None:
        self._engines.clear()
        self._held.close()
