"""TensorRT backend (TensorRT 10/11 or TensorRT-RTX): cached plans, a copy stream and a
compute stream, pinned host buffers handed to the caller, double-buffered async copies, waits
that release the GIL. Every failure while opening it is a BackendUnavailable (GpuFault for
the GPU's own), so ``--backend auto`` falls back to the next backend."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pig.engine.backends.base import Closable, Row, Settings, chunks, encode_cut_text, fastest
from pig.engine.graphs import INPUT_NAMES, OUTPUT_NAME, Branch
from pig.engine.host import gpu as gpu_probe
from pig.engine.host.fsutil import write_atomic
from pig.engine.trt import flavour as flavours
from pig.engine.trt.build import DEFAULT_WORKSPACE, ensure_plan, import_tensorrt
from pig.engine.trt.cache import Target
from pig.engine.trt.cuda import Cuda, DeviceBuffer, PinnedBuffer, import_cudart
from pig.engine.trt.profiles import BatchProfile
from pig.errors import BackendUnavailable, GpuFault, PigError

if TYPE_CHECKING:
    from pig.engine.bundle import Bundle

_SLOTS = 2  # batches in flight: the copy of one overlaps the inference of the other


@contextlib.contextmanager
def _step(what: str) -> Iterator[None]:
    """A TensorRT or CUDA call that fails in its own way (RuntimeError, TypeError, a None
    result turned into an error) becomes a GpuFault naming the step, so ``auto`` falls back."""
    try:
        yield
    except PigError:
        raise
    except Exception as exc:
        raise GpuFault(f"{what} failed: {type(exc).__name__}: {exc}") from exc


class _Slot:
    """One batch in flight: its device input and output, pinned output, and events."""

    def __init__(self, cuda: Cuda, held: ExitStack, in_bytes: int, out_shape: tuple[int, int],
                 out_dtype: np.dtype) -> None:
        self.dev_in = DeviceBuffer(cuda, in_bytes)
        held.callback(self.dev_in.close)
        self.host_out = PinnedBuffer(cuda, out_shape, out_dtype)
        held.callback(self.host_out.close)
        self.dev_out = DeviceBuffer(cuda, self.host_out.nbytes)
        held.callback(self.dev_out.close)
        # copied: input on the GPU; consumed: the inference read it; done: output on the host
        self.copied, self.consumed, self.done = cuda.event(), cuda.event(), cuda.event()
        for e in (self.copied, self.consumed, self.done):
            held.callback(cuda.destroy_event, e)
        self.rows: int | None = None  # rows of the batch in flight, None when free


@dataclass(frozen=True)
class TrtOptions:
    """Which plan to run: built for ``profile`` (default: ``BatchProfile()``, what
    ``pig-export --trt`` builds) with a builder workspace of ``workspace_bytes``."""

    profile: BatchProfile | None = None
    workspace_bytes: int = DEFAULT_WORKSPACE


class _Engine:
    """One deserialized engine with two slots of I/O buffers sized for the profile's max batch.

    :meth:`submit` queues a batch (copy on the copy stream, inference and read-back on the
    compute stream, ordered by events) and returns at once; :meth:`collect` waits for it with
    the GIL released. With two slots the copy of batch k+1 runs while batch k computes.
    """

    def __init__(self, trt: Any, cuda: Cuda, streams: tuple[Any, Any], plan: bytes,
                 branch: Branch, jit_cache: Path) -> None:
        """Everything set up here is released again if a later step fails. ``streams``:
        (copy, compute). ``jit_cache``: where TensorRT-RTX keeps the kernels it compiles for
        this GPU (its runtime cache)."""
        self.cuda = cuda
        self.copy_stream, self.stream = streams
        self._jit: tuple[Any, Path] | None = None
        self._runtime_config: Any = None
        with ExitStack() as held:
            held.callback(self._drop_trt_objects)
            with _step(f"TensorRT runtime for the {branch} plan"):
                self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
            with _step(f"deserialising the {branch} plan"):
                self.engine = self.runtime.deserialize_cuda_engine(plan)
            if self.engine is None:
                raise GpuFault(f"TensorRT could not deserialize the {branch} plan (built by "
                               "another TensorRT version or for another GPU?)")
            with _step(f"TensorRT execution context of the {branch} plan"):
                self.context = self._create_context(jit_cache)
            if self.context is None:
                raise GpuFault(f"TensorRT could not create an execution context for the "
                               f"{branch} plan (out of GPU memory?)")
            self.input_name, self.output_name = INPUT_NAMES[branch], OUTPUT_NAME
            with _step(f"reading the {branch} engine's I/O"):
                io = {self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)}
                if io != {self.input_name, self.output_name}:
                    raise GpuFault(f"{branch} plan has I/O tensors {sorted(io)}")
                min_shape, _, max_shape = self.engine.get_tensor_profile_shape(self.input_name, 0)
                self.min_batch, self.max_batch = int(min_shape[0]), int(max_shape[0])
                self.in_shape = tuple(int(d) for d in max_shape)
                # a text engine whose profile spans text lengths: (min, max) of dim 1
                self.lengths = ((int(min_shape[1]), int(max_shape[1]))
                                if branch == "text" and int(min_shape[1]) < int(max_shape[1])
                                else None)
                out_dim = int(self.engine.get_tensor_shape(self.output_name)[-1])
                self.in_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self.input_name)))
                out_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self.output_name)))
            self.host_in = PinnedBuffer(cuda, self.in_shape, self.in_dtype)  # staging
            held.callback(self.host_in.close)
            self._staged: Any = None  # event after which the staging buffer may be rewritten
            self._slots = [_Slot(cuda, held, self.host_in.nbytes, (self.max_batch, out_dim),
                                 out_dtype) for _ in range(_SLOTS)]
            self._next = 0
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
        """The pinned array starting at ``x``'s first row, if ``x`` lies in one of the handed
        out pinned arrays with ``rows`` rows there (frames written in place), else None."""
        if x.dtype != self.in_dtype or not x.flags.c_contiguous or x.shape[0] == 0:
            return None
        ptr, row_bytes = x.__array_interface__["data"][0], x[0].nbytes
        for buf in self.handed_out:
            offset = ptr - buf.ptr
            if offset >= 0 and offset % row_bytes == 0:
                start = offset // row_bytes
                if start + rows <= buf.array.shape[0]:
                    return buf.array[start:]
        return None

    def submit(self, x: np.ndarray) -> _Slot:
        """Queue ``x`` (at most ``max_batch`` rows) and return its slot for :meth:`collect`.
        ``x`` may be (rows of) a handed-out pinned array, then the copy reads it in place and
        it must stay unchanged until collected; else it is staged in pinned memory. Fewer
        rows than the profile's min are padded with copies of the first row. A text engine
        with a length range takes any length in it (rows packed at the start of the staging
        buffer)."""
        shape = self.in_shape[1:]
        if self.lengths is not None and self.lengths[0] <= x.shape[-1] <= self.lengths[1]:
            shape = x.shape[1:]
        if x.shape[1:] != shape:
            want = (f"{self.lengths[0]}..{self.lengths[1]}" if self.lengths else
                    ", ".join(map(str, self.in_shape[1:])))
            raise ValueError(f"{self.input_name}: got shape {x.shape}, engine expects "
                             f"[B, {want}]")
        slot = self._slots[self._next]
        if slot.rows is not None:
            raise RuntimeError("both TensorRT slots are in flight: collect one first")
        n = x.shape[0]
        b = max(n, self.min_batch)
        cuda = self.cuda
        cuda.bind()
        src = self._pinned_source(x, b) if shape == self.in_shape[1:] else None
        if src is None:
            if self._staged is not None:
                cuda.wait(self._staged)  # the previous copy out of the staging buffer
            # the leading bytes of the staging buffer, as a [b, *shape] array
            src = self.host_in.array.reshape(-1)[:b * int(np.prod(shape))].reshape(b, *shape)
            np.copyto(src[:n], x, casting="same_kind")
            self._staged = slot.copied
        src[n:b] = src[0]
        cuda.stream_wait(self.copy_stream, slot.consumed)  # the last inference read dev_in
        cuda.copy_async(slot.dev_in.ptr, src.ctypes.data, src[:b].nbytes, "h2d",
                        self.copy_stream)
        cuda.record(slot.copied, self.copy_stream)
        cuda.stream_wait(self.stream, slot.copied)
        with _step("TensorRT enqueue"):
            self.context.set_input_shape(self.input_name, (b, *shape))
            self.context.set_tensor_address(self.input_name, slot.dev_in.ptr)
            self.context.set_tensor_address(self.output_name, slot.dev_out.ptr)
            queued = self.context.execute_async_v3(int(self.stream))
        if not queued:
            raise GpuFault("TensorRT execute_async_v3 failed (see TensorRT's log above)")
        cuda.record(slot.consumed, self.stream)
        cuda.copy_async(slot.host_out.ptr, slot.dev_out.ptr, slot.host_out.array[:b].nbytes,
                        "d2h", self.stream)
        cuda.record(slot.done, self.stream)
        slot.rows = n
        self._next = (self._next + 1) % _SLOTS
        return slot

    def collect(self, slot: _Slot) -> np.ndarray:
        """The float32 output of a submitted batch (waits with the GIL released)."""
        if slot.rows is None:
            raise RuntimeError("this TensorRT slot holds no batch")
        n, slot.rows = slot.rows, None
        self.cuda.wait(slot.done)
        return slot.host_out.array[:n].astype(np.float32, copy=True)

    def run(self, x: np.ndarray) -> np.ndarray:
        """Every row of ``x``, in chunks of at most ``max_batch`` rows; the copy of each
        chunk overlaps the inference of the one before."""
        if x.shape[0] == 0:
            dim = self._slots[0].host_out.array.shape[1]
            return np.zeros((0, dim), np.float32)
        outputs: list[np.ndarray] = []
        pending: _Slot | None = None
        try:
            for rows in chunks(x.shape[0], self.max_batch):
                slot = self.submit(x[rows])
                if pending is not None:
                    outputs.append(self.collect(pending))
                pending = slot
            if pending is not None:
                outputs.append(self.collect(pending))
                pending = None
        finally:
            if pending is not None:  # a later submit failed: leave no slot in flight
                with contextlib.suppress(PigError):
                    self.collect(pending)
        return np.concatenate(outputs, axis=0) if len(outputs) > 1 else outputs[0]

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
        self._engines: dict[Branch, _Engine] = {}
        self._held = ExitStack()  # released in reverse order of setup by close()
        try:
            import_cudart()  # a missing cuda-python is named before TensorRT's questions
            with _step("importing TensorRT"):
                flavour = import_tensorrt(gpu)
            flavour.check_runs_on(gpu)  # e.g. TensorRT-RTX on a Hopper GPU: refused, named
            # CUDA before any build: a driver too old for this CUDA, or a GPU CUDA cannot
            # open, is refused here in a second, not after a long engine build
            with _step("opening CUDA"):
                self._cuda = Cuda(gpu)
            self.precision = precision
            self._eos = bundle.tokenizer_spec.eos_id
            self.flavour = flavour.label  # "TensorRT 10.9.0" / "TensorRT-RTX 1.7.1.116"
            with _step("building the TensorRT engines"):
                plans = {b: ensure_plan(bundle, b, precision, profile, workspace_bytes,
                                        gpu_required=True)
                         for b in branches}
            gpu_tag = Target.device(gpu).slug()
            streams = []
            for _ in range(2):  # copy, compute
                streams.append(stream := self._cuda.stream())
                self._held.callback(self._cuda.destroy_stream, stream)
            for b, (plan, path) in plans.items():
                jit = path.with_name(f"{path.stem}.{gpu_tag}.runtime.cache")
                engine = _Engine(flavour.module, self._cuda, (streams[0], streams[1]), plan,
                                 b, jit)
                self._engines[b] = engine
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
        return self._engine("video").run(pixel_values)

    def encode_text(self, input_ids: np.ndarray) -> np.ndarray:
        e = self._engine("text")
        if e.lengths is None:  # a fixed-length text engine (bundles exported before)
            return e.run(input_ids)
        return encode_cut_text(e.run, np.asarray(input_ids), self._eos, e.lengths[0],
                               e.max_batch)

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
