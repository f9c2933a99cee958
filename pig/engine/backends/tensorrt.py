"""TensorRT backend (TensorRT 10/11 or TensorRT-RTX): cached plans, one CUDA stream, pinned
host buffers handed to the caller, async copies."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from pig.engine.backends.base import Closable, Row, Settings, fastest, run_in_chunks
from pig.engine.graphs import INPUT_NAMES, OUTPUT_NAME, Branch
from pig.engine.host import gpu as gpu_probe
from pig.engine.host.fsutil import write_atomic
from pig.engine.trt import flavour as flavours
from pig.engine.trt.build import DEFAULT_WORKSPACE, ensure_plan, import_tensorrt
from pig.engine.trt.cache import Target
from pig.engine.trt.cuda import Cuda, DeviceBuffer, PinnedBuffer, import_cudart
from pig.engine.trt.profiles import BatchProfile
from pig.errors import BackendUnavailable

if TYPE_CHECKING:
    from pig.engine.bundle import Bundle

_Buffer = TypeVar("_Buffer", PinnedBuffer, DeviceBuffer)


@dataclass(frozen=True)
class TrtOptions:
    """Which plan to run: built for ``profile`` (default: ``BatchProfile()``, what
    ``pig-export --trt`` builds) with a builder workspace of ``workspace_bytes``."""

    profile: BatchProfile | None = None
    workspace_bytes: int = DEFAULT_WORKSPACE


class _Engine:
    """One deserialized engine with I/O buffers sized for the profile's max batch."""

    def __init__(self, trt: Any, cuda: Cuda, stream: Any, plan: bytes, branch: Branch,
                 jit_cache: Path) -> None:
        """Everything set up here is released again if a later step fails. ``jit_cache``:
        where TensorRT-RTX keeps the kernels it compiles for this GPU (its runtime cache)."""
        self.cuda, self.stream = cuda, stream
        self._jit: tuple[Any, Path] | None = None
        self._runtime_config: Any = None
        with ExitStack() as held:
            held.callback(self._drop_trt_objects)
            self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
            self.engine = self.runtime.deserialize_cuda_engine(plan)
            if self.engine is None:
                raise BackendUnavailable(f"TensorRT could not deserialize the {branch} plan")
            self.context = self._create_context(jit_cache)
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
            self.handed_out: list[PinnedBuffer] = []
            self._held = held.pop_all()

    def _create_context(self, jit_cache: Path) -> Any:
        """The execution context; with TensorRT-RTX (feature: ``create_runtime_config``) one
        whose runtime cache starts from ``jit_cache``, so kernels JIT-compiled for this GPU
        by an earlier process are reused (a stale or foreign cache is rejected by TensorRT
        and rewritten on close)."""
        make_config = getattr(self.engine, "create_runtime_config", None)
        if make_config is None:  # TensorRT 10/11: kernels were chosen at build time
            return self.engine.create_execution_context()
        self._runtime_config = make_config()
        cache = self._runtime_config.create_runtime_cache()
        if jit_cache.is_file():
            cache.deserialize(jit_cache.read_bytes())
        self._runtime_config.set_runtime_cache(cache)
        self._jit = (cache, jit_cache)
        return self.engine.create_execution_context(self._runtime_config)

    def _drop_trt_objects(self) -> None:
        """TensorRT frees an object with its last reference: context, then runtime config
        and cache, engine, runtime (each needs the next one alive)."""
        self.context = None
        self._jit = self._runtime_config = None
        self.engine = self.runtime = None

    def pinned_inputs(self, count: int, batch: int) -> list[np.ndarray]:
        """``count`` more pinned ``[batch, ...]`` input arrays (freed with the engine); a
        batch above the profile's max runs in chunks, each read in place."""
        made = []
        for _ in range(count):
            buf = PinnedBuffer(self.cuda, (batch, *self.in_shape[1:]), self.in_dtype)
            self._held.callback(buf.close)
            made.append(buf)
        self.handed_out.extend(made)
        return [b.array for b in made]

    def _pinned_source(self, x: np.ndarray, rows: int) -> np.ndarray | None:
        """The pinned array starting at ``x``'s first row, if ``x`` lies in one of the pinned
        arrays with ``rows`` rows there (frames written in place), else None."""
        if x.dtype != self.in_dtype or not x.flags.c_contiguous or x.shape[0] == 0:
            return None
        ptr, row_bytes = x.__array_interface__["data"][0], x[0].nbytes
        for buf in (self.host_in, *self.handed_out):
            offset = ptr - buf.ptr
            if offset >= 0 and offset % row_bytes == 0:
                start = offset // row_bytes
                if start + rows <= buf.array.shape[0]:
                    return buf.array[start:]
        return None

    def run(self, x: np.ndarray) -> np.ndarray:
        """``x`` has at most ``max_batch`` rows; it may already be (the leading rows of) a
        pinned input array, then the copy to the GPU reads it in place. Fewer rows than the
        profile's min are padded with copies of the first row."""
        if x.shape[1:] != self.in_shape[1:]:
            raise ValueError(f"{self.input_name}: got shape {x.shape}, engine expects "
                             f"[B, {', '.join(map(str, self.in_shape[1:]))}]")
        n = x.shape[0]
        b = max(n, self.min_batch)
        src = self._pinned_source(x, b)
        if src is None:
            src = self.host_in.array
            np.copyto(src[:n], x, casting="same_kind")
        src[n:b] = src[0]
        n_in = src[:b].nbytes
        n_out = self.host_out.array[:b].nbytes
        self.context.set_input_shape(self.input_name, (b, *self.in_shape[1:]))
        self.cuda.copy_async(self.dev_in.ptr, src.ctypes.data, n_in, "h2d", self.stream)
        if not self.context.execute_async_v3(int(self.stream)):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        self.cuda.copy_async(self.host_out.ptr, self.dev_out.ptr, n_out, "d2h", self.stream)
        self.cuda.synchronize(self.stream)
        return self.host_out.array[:n].astype(np.float32, copy=True)

    def close(self) -> None:
        """Save the runtime cache (best effort), free the I/O buffers, then the context,
        engine and runtime."""
        if self._jit is not None:
            cache, path = self._jit
            with contextlib.suppress(OSError):  # an optimisation: a read-only folder is fine
                write_atomic(path, bytes(cache.serialize()))
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
        gpu = gpu_probe.probe_gpu()  # before any CUDA / TensorRT import
        import_cudart()  # refuse early, before a long engine build, if cuda-python is missing
        flavour = import_tensorrt(gpu)
        flavour.check_runs_on(gpu)  # e.g. TensorRT-RTX on a Hopper GPU: refused, named
        trt = flavour.module
        self.precision = precision
        self.flavour = flavour.label  # "TensorRT 10.9.0" / "TensorRT-RTX 1.7.1.116"
        plans = {b: ensure_plan(bundle, b, precision, profile, workspace_bytes,
                                gpu_required=True)
                 for b in branches}
        gpu_tag = Target.device(gpu).slug()
        self._engines: dict[Branch, _Engine] = {}
        self._held = ExitStack()  # released in reverse order of setup by close()
        try:
            self._cuda = Cuda()
            stream = self._cuda.stream()
            self._held.callback(self._cuda.destroy_stream, stream)
            for b, (plan, path) in plans.items():
                jit = path.with_name(f"{path.stem}.{gpu_tag}.runtime.cache")
                self._engines[b] = engine = _Engine(trt, self._cuda, stream, plan, b, jit)
                self._held.callback(engine.close)
            self.device = f"{self._cuda.device_name()} {flavour.label}"
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

    def video_input_buffers(self, count: int, batch: int) -> list[np.ndarray]:
        return self._engine("video").pinned_inputs(count, batch)

    def _release(self) -> None:
        self._engines.clear()
        self._held.close()


def missing() -> str:
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


def _open(bundle: Bundle, precision: str, branches: Sequence[Branch], settings: Settings
          ) -> TrtBackend:
    options = settings.find(TrtOptions) or TrtOptions()
    return TrtBackend(bundle, precision, branches, options.profile, options.workspace_bytes)


# fp16 on tensor cores; int8 costs up to 2 points of R@1, so only when asked for
ROWS = (Row("tensorrt", "cuda", missing, fastest("fp16", "fp32"), _open, TrtOptions,
            label="TensorRT"),)
