"""ONNX Runtime backend: CPU by default, CUDA when asked, never a silent CPU fallback."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from pig.engine.backends.accuracy import pick_on_cpu
from pig.engine.backends.base import (
    Closable,
    Row,
    Settings,
    encode_cut_text,
    fastest,
    run_in_chunks,
)
from pig.engine.graphs import BRANCHES, INPUT_NAMES, MIN_TEXT_LENGTH, OUTPUT_NAME, Branch
from pig.engine.host import gpu as gpu_probe
from pig.errors import BackendUnavailable, GpuFault

if TYPE_CHECKING:
    from pig.engine.bundle import Bundle

Device = Literal["cpu", "cuda"]
_PROVIDER = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
_NP_DTYPE = {"tensor(float)": np.float32, "tensor(float16)": np.float16,
             "tensor(int64)": np.int64, "tensor(int32)": np.int32}


@dataclass(frozen=True)
class OrtOptions:
    """Session settings, chosen by measurement (bench/bench_backends.py, reference "small"
    PIG export, 16-core host, ratios to ORT defaults): full graph optimisation (extended 0.67x,
    basic 0.49x on video), sequential execution (parallel 0.20x), memory pattern + arena on
    (off 0.78x), ``threads=0`` = one intra-op thread per physical core (1 thread 0.09x).
    ``spin=False`` keeps idle intra-op threads from busy-waiting: no measurable cost to
    encoding alone (within the +-7% run-to-run noise), and in ``pig-engine index`` it leaves
    the cores to the decode and preprocess workers between batches.
    """

    threads: int = 0
    spin: bool = False
    max_batch: int = 64
    device_id: int = 0


def session_options(opts: OrtOptions) -> Any:
    """``onnxruntime.SessionOptions`` for ``opts``."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.intra_op_num_threads = opts.threads
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if opts.spin else "0")
    so.log_severity_level = 3  # errors only: the provider check below reports fallbacks
    return so


def cpu_session(model: str | Path | bytes, threads: int = 0) -> Any:
    """A plain ONNX Runtime CPU session with the engine's options, for the offline tools that
    run graphs outside a backend: export parity, INT8 calibration, accuracy reports.
    ``model``: a file or a serialized ModelProto."""
    import onnxruntime as ort

    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, session_options(OrtOptions(threads=threads)),
                                providers=[_PROVIDER["cpu"]])


def create_session(path: str, device: Device, opts: OrtOptions) -> Any:
    """An InferenceSession on ``device``; raises BackendUnavailable if ORT fell back to CPU."""
    import onnxruntime as ort

    wanted = _PROVIDER[device]
    if device == "cuda":
        gpu = gpu_probe.probe_gpu()  # no GPU -> BackendUnavailable before ORT touches CUDA
        if wanted not in ort.get_available_providers():
            raise BackendUnavailable(
                f"onnxruntime {ort.__version__} has no CUDA provider (GPU: {gpu}); "
                "install onnxruntime-gpu matching the CUDA driver, or use --device cpu"
            )
        providers: list[Any] = [(wanted, {"device_id": opts.device_id}), _PROVIDER["cpu"]]
    else:
        providers = [wanted]
    try:
        session = ort.InferenceSession(path, session_options(opts), providers=providers)
    except Exception as err:  # ORT raises its own Fail/InvalidGraph types for bad files
        raise BackendUnavailable(f"{path}: onnxruntime cannot load the graph: {err}") from None
    used = session.get_providers()
    if used[0] != wanted:
        raise GpuFault(
            f"{path}: asked onnxruntime for {wanted} but it runs on {used[0]} "
            "(CUDA/cuDNN libraries missing or incompatible?); refusing a silent fallback"
        )
    return session


class OrtBackend(Closable):
    """Backend over one ONNX Runtime session per branch of a bundle."""

    name = "onnxruntime"

    def __init__(
        self,
        bundle: Bundle,
        precision: str = "fp32",
        device: Device = "cpu",
        branches: Sequence[Branch] = BRANCHES,
        options: OrtOptions | None = None,
    ) -> None:
        self.precision = precision
        self.options = options or OrtOptions()
        self._sessions: dict[str, Any] = {}
        self._dtypes: dict[str, Any] = {}
        for branch in branches:
            path = str(bundle.graph_path(branch, precision))
            session = create_session(path, device, self.options)
            inputs = {i.name: i.type for i in session.get_inputs()}
            name = INPUT_NAMES[branch]
            if name not in inputs or inputs[name] not in _NP_DTYPE:
                raise BackendUnavailable(f"{path}: graph inputs {inputs}, expected {name!r}")
            self._sessions[branch] = session
            self._dtypes[branch] = _NP_DTYPE[inputs[name]]
        # a text graph with a dynamic sequence axis ([batch, seq]) gets batches cut to their
        # tokens; one of fixed length (bundles exported before) gets them as they are
        text = self._sessions.get("text")
        dynamic = text is not None and not isinstance(text.get_inputs()[0].shape[1], int)
        self._eos = bundle.tokenizer_spec.eos_id if dynamic else None
        self.device = _PROVIDER[device]
        if device == "cuda":
            self.device += f" on {gpu_probe.probe_gpu()}"
        self._video_shape = (bundle.recipe.num_frames, 3, bundle.recipe.size, bundle.recipe.size)

    def _runner(self, branch: Branch) -> Callable[[np.ndarray], np.ndarray]:
        """One session call on at most ``max_batch`` rows."""
        self._check_open()
        if branch not in self._sessions:
            raise BackendUnavailable(f"this backend was opened without the {branch} graph")
        session, name = self._sessions[branch], INPUT_NAMES[branch]

        def run(chunk: np.ndarray) -> np.ndarray:
            out = session.run([OUTPUT_NAME], {name: chunk})[0]
            return np.asarray(out, dtype=np.float32)

        return run

    def _run(self, branch: Branch, x: np.ndarray) -> np.ndarray:
        run = self._runner(branch)
        x = np.ascontiguousarray(x, dtype=self._dtypes[branch])
        return run_in_chunks(run, x, self.options.max_batch)

    def encode_video(self, pixel_values: np.ndarray) -> np.ndarray:
        return self._run("video", pixel_values)

    def encode_text(self, input_ids: np.ndarray) -> np.ndarray:
        if self._eos is None:  # a fixed-length graph (bundles exported before): as it is
            return self._run("text", input_ids)
        x = np.asarray(input_ids, dtype=self._dtypes.get("text", np.int64))
        return encode_cut_text(self._runner("text"), x, self._eos, MIN_TEXT_LENGTH,
                               self.options.max_batch)

    def video_input_buffers(self, count: int, batch: int) -> list[np.ndarray]:
        self._check_open()
        dtype = self._dtypes.get("video", np.float32)
        return [np.empty((batch, *self._video_shape), dtype) for _ in range(count)]

    def _release(self) -> None:
        self._sessions.clear()  # ONNX Runtime frees a session with its last reference


def cuda_missing() -> str:
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


def _opener(device: Device) -> Callable[[Bundle, str, Sequence[Branch], Settings], OrtBackend]:
    def open_ort(bundle: Bundle, precision: str, branches: Sequence[Branch],
                 settings: Settings) -> OrtBackend:
        options = settings.find(OrtOptions) or OrtOptions(threads=settings.threads)
        return OrtBackend(bundle, precision, device, branches, options)

    return open_ort


ROWS = (
    Row("onnxruntime", "cuda", cuda_missing, fastest("fp16", "fp32"), _opener("cuda"),
        OrtOptions),
    # the fallback: fp32, or a CPU-only precision (int8-cpu) its accuracy report allows
    Row("onnxruntime", "cpu", lambda: "", pick_on_cpu, _opener("cpu"), OrtOptions,
        fallback=True),
)
