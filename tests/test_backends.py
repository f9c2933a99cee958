"""Backends: ONNX Runtime numerics, batch splitting, provider check, selection and fallback."""

from __future__ import annotations

import sys
import types
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from pig.engine.backends import select
from pig.engine.backends.base import Row, Settings, chunks, fastest
from pig.engine.backends.onnxruntime import OrtBackend, OrtOptions
from pig.engine.bundle import Bundle
from pig.engine.display import Detail
from pig.engine.host import gpu
from pig.engine.trt import flavour
from pig.errors import BackendUnavailable, BundleError
from tests.fake_bundle import FakeSizes, reference_text, reference_video, rehash, write_bundle

SIZES = FakeSizes()
FAKE_GPU = gpu.GpuInfo("NVIDIA Fake 80GB", (9, 0), 80 << 30, "580.1", "nvml")
TOL = 1e-5  # fp32 graph vs float64 numpy on unit vectors of dim 8


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory):
    return Bundle.load(write_bundle(tmp_path_factory.mktemp("bundle"), SIZES, precisions=("fp32",)))


@pytest.fixture(scope="module")
def bundle_fp16(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("bundle16")
    return Bundle.load(write_bundle(root, SIZES, precisions=("fp32", "fp16", "int8")))


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")  # hides every device before any probe


@pytest.fixture
def fake_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu, "probe_gpu", lambda: FAKE_GPU)


def _pixels(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, SIZES.frames, 3, SIZES.size, SIZES.size)).astype(np.float32)


def _ids(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, SIZES.vocab, (n, SIZES.length), dtype=np.int64)


# --- ONNX Runtime ------------------------------------------------------------------------------

def test_ort_cpu_matches_reference(bundle) -> None:
    be = OrtBackend(bundle)
    px, ids = _pixels(5), _ids(7)
    v, t = be.encode_video(px), be.encode_text(ids)
    assert be.device == "CPUExecutionProvider" and be.name == "onnxruntime"
    assert v.dtype == np.float32 and v.shape == (5, SIZES.dim) and t.shape == (7, SIZES.dim)
    np.testing.assert_allclose(v, reference_video(px, SIZES), atol=TOL)
    np.testing.assert_allclose(t, reference_text(ids, SIZES), atol=TOL)


def test_chunks_cover_range_exactly() -> None:
    assert [(s.start, s.stop) for s in chunks(7, 3)] == [(0, 3), (3, 6), (6, 7)]
    assert list(chunks(0, 4)) == []
    with pytest.raises(ValueError):
        list(chunks(3, 0))


def test_ort_splits_batches_beyond_max(bundle) -> None:
    be = OrtBackend(bundle, options=OrtOptions(max_batch=2))
    seen: list[int] = []
    session = be._sessions["video"]

    class Spy:
        def run(self, names, feed):
            seen.append(next(iter(feed.values())).shape[0])
            return session.run(names, feed)

    be._sessions["video"] = Spy()
    px = _pixels(5, seed=3)
    np.testing.assert_allclose(be.encode_video(px), reference_video(px, SIZES), atol=TOL)
    assert seen == [2, 2, 1]


def test_video_input_buffers_are_distinct_and_encodable(bundle) -> None:
    be = OrtBackend(bundle, branches=("video",))
    bufs = be.video_input_buffers(3, 4)
    assert len(bufs) == 3 and not np.shares_memory(bufs[0], bufs[1])
    for buf in bufs:
        assert buf.shape == (4, SIZES.frames, 3, SIZES.size, SIZES.size)
        assert buf.dtype == np.float32
    buf = bufs[1]
    buf[:] = _pixels(4, seed=5)
    np.testing.assert_allclose(be.encode_video(buf[:3]), reference_video(buf[:3], SIZES),
                               atol=TOL)
    with pytest.raises(BackendUnavailable, match="without the text graph"):
        be.encode_text(_ids(1))


def test_ort_close_drops_sessions_and_refuses_use(bundle) -> None:
    with OrtBackend(bundle) as be:
        assert set(be._sessions) == {"video", "text"}
        be.video_input_buffers(2, 2)
    assert be._sessions == {}
    be.close()  # a second close is a no-op
    for use in (lambda: be.encode_text(_ids(1)), lambda: be.encode_video(_pixels(1)),
                lambda: be.video_input_buffers(1, 1)):
        with pytest.raises(RuntimeError, match="this onnxruntime backend is closed"):
            use()


def test_ort_cuda_without_gpu_is_refused(bundle, no_gpu) -> None:
    with pytest.raises(BackendUnavailable, match="no GPU: CUDA_VISIBLE_DEVICES"):
        OrtBackend(bundle, device="cuda")


def test_ort_without_cuda_provider_is_refused(bundle, fake_gpu) -> None:
    with pytest.raises(BackendUnavailable, match=r"has no CUDA provider.*onnxruntime-gpu"):
        OrtBackend(bundle, device="cuda")


@pytest.mark.filterwarnings("ignore:Specified provider")
def test_ort_silent_cpu_fallback_is_refused(bundle, fake_gpu, monkeypatch) -> None:
    """An onnxruntime that lists CUDA but cannot load it runs on CPU: must be an error."""
    import onnxruntime as ort

    real = ort.get_available_providers()
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", *real])
    with pytest.raises(BackendUnavailable, match=r"runs on CPUExecutionProvider.*silent fallback"):
        OrtBackend(bundle, device="cuda", branches=("text",))


def test_unloadable_graph_is_a_clear_error(tmp_path) -> None:
    root = write_bundle(tmp_path / "b", SIZES)
    (root / "text.onnx").write_bytes(b"not an onnx file")
    with pytest.raises(BundleError, match=r"text\.onnx: sha256 differs from the manifest"):
        OrtBackend(Bundle.load(root), branches=("text",))
    rehash(root, "text")  # a manifest that vouches for the broken file: ORT refuses it
    with pytest.raises(BackendUnavailable, match=r"text\.onnx: onnxruntime cannot load"):
        OrtBackend(Bundle.load(root), branches=("text",))


# --- selection ---------------------------------------------------------------------------------

def test_auto_without_gpu_is_ort_cpu_fp32(bundle_fp16, no_gpu) -> None:
    (c,) = select.choose(bundle_fp16)
    assert (c.backend, c.device, c.precision) == ("onnxruntime", "cpu", "fp32")
    assert "no GPU" in c.reason


def test_auto_prefers_tensorrt_fp16_on_gpu(bundle_fp16, fake_gpu, monkeypatch) -> None:
    monkeypatch.setattr(flavour, "module_present", lambda name: True)
    first, *rest = select.choose(bundle_fp16)
    assert (first.backend, first.device, first.precision) == ("tensorrt", "cuda", "fp16")
    assert rest[-1].backend == "onnxruntime" and rest[-1].device == "cpu"
    assert rest[-1].precision == "fp32"


def test_auto_takes_fp32_when_bundle_has_no_fp16(bundle, fake_gpu, monkeypatch) -> None:
    monkeypatch.setattr(flavour, "module_present", lambda name: True)
    assert select.choose(bundle)[0].precision == "fp32"


def test_explicit_precision_and_missing_precision(bundle, bundle_fp16, no_gpu) -> None:
    assert select.choose(bundle_fp16, "onnxruntime", "int8")[0].precision == "int8"
    with pytest.raises(BackendUnavailable, match=r"no fp16 graphs \(bundle has fp32\); make "
                       r"them with pig-export --calibrate --precision fp16"):
        select.choose(bundle, "onnxruntime", "fp16")
    with pytest.raises(BackendUnavailable, match="unknown backend"):
        select.choose(bundle, "tvm")


def test_tensorrt_requested_without_gpu_or_module(bundle, no_gpu, monkeypatch) -> None:
    with pytest.raises(BackendUnavailable, match="TensorRT unavailable: no GPU"):
        select.choose(bundle, "tensorrt")
    monkeypatch.setattr(gpu, "probe_gpu", lambda: FAKE_GPU)
    monkeypatch.setattr(flavour, "module_present", lambda name: "tensorrt" not in name)
    with pytest.raises(BackendUnavailable, match="no TensorRT Python package is installed"):
        select.choose(bundle, "tensorrt")


def test_auto_falls_back_to_ort_when_tensorrt_fails(bundle_fp16, fake_gpu, monkeypatch) -> None:
    """TensorRT looks present but cannot be imported: auto logs why and opens ONNX Runtime."""
    monkeypatch.setattr(flavour, "module_present", lambda name: name != "cuda.bindings")
    for name in ("tensorrt", *flavour.RTX_MODULES):  # import -> ImportError
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "cuda", types.ModuleType("cuda"))
    monkeypatch.setitem(sys.modules, "cuda.cudart", types.ModuleType("cuda.cudart"))
    lines: list[str] = []
    be = select.open_backend(bundle_fp16, log=lines.append)
    assert be.name == "onnxruntime" and be.device == "CPUExecutionProvider"
    assert be.precision == "fp32"
    assert "TensorRT cannot be imported" in lines[0]
    assert lines[-2] == "backend: onnxruntime cpu fp32 (CPUExecutionProvider)"
    assert lines[-1].startswith("  why: auto") and isinstance(lines[-1], Detail)


def test_explicit_tensorrt_failure_is_not_swallowed(bundle, fake_gpu, monkeypatch) -> None:
    monkeypatch.setattr(flavour, "module_present", lambda name: True)
    monkeypatch.setitem(sys.modules, "cuda.bindings", None)
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", None)
    monkeypatch.setitem(sys.modules, "cuda.cudart", None)
    with pytest.raises(BackendUnavailable, match="needs cuda-python"):
        select.open_backend(bundle, "tensorrt", log=lambda _: None)


@dataclass(frozen=True)
class _FakeOptions:
    level: int = 0


class _FakeBackend(OrtBackend):
    """A CPU backend registered by one row, as an OpenVINO backend would be."""

    name = "fake"

    def __init__(self, bundle: Bundle, precision: str, branches: Sequence[str],
                 settings: Settings) -> None:
        super().__init__(bundle, precision, "cpu", branches)  # type: ignore[arg-type]
        self.settings = settings


def test_a_backend_is_one_row(bundle: Bundle, no_gpu: None,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A new row (anywhere, even after the fallback) is chosen by auto before the fallback,
    opens with its own options object, and the fallback is the row marked so."""
    row = Row("fake", "cpu", lambda: "", fastest("fp32"), _FakeBackend, _FakeOptions)
    monkeypatch.setattr(select, "ROWS", (*select.ROWS, row))
    choices = select.choose(bundle)
    assert [(c.backend, c.device) for c in choices] == [("fake", "cpu"),
                                                        ("onnxruntime", "cpu")]
    (explicit,) = select.choose(bundle, "fake")
    assert (explicit.backend, explicit.precision) == ("fake", "fp32")
    mine, ort = _FakeOptions(level=3), OrtOptions(max_batch=2)
    with select.open_backend(bundle, threads=2, options=[ort, mine], log=lambda _: None) as be:
        assert isinstance(be, _FakeBackend)
        assert be.settings.find(_FakeOptions) is mine and be.settings.threads == 2
    with select.open_backend(bundle, "onnxruntime", options=[ort, mine],
                             log=lambda _: None) as be:
        assert isinstance(be, OrtBackend) and be.options is ort  # each takes its own
    with select.open_backend(bundle, "onnxruntime", threads=3, log=lambda _: None) as be:
        assert isinstance(be, OrtBackend) and be.options.threads == 3
    monkeypatch.setattr(select, "ROWS", tuple(reversed(select.ROWS)))  # order is preference
    assert select.choose(bundle)[-1].backend == "onnxruntime"


def test_options_and_devices_are_checked(bundle: Bundle, no_gpu: None) -> None:
    with pytest.raises(TypeError, match="dict is no backend's options"):
        select.open_backend(bundle, options=[{"threads": 2}], log=lambda _: None)
    with pytest.raises(BackendUnavailable, match="tensorrt has no cpu device"):
        select.choose(bundle, "tensorrt", device="cpu")
    assert Settings().find(OrtOptions) is None


def test_runtime_modules_do_not_import_torch(tmp_path: Path) -> None:
    import subprocess

    code = (
        "import sys; import pig.engine.backends.select, pig.engine.backends.onnxruntime, "
        "pig.engine.backends.tensorrt, pig.engine.trt.build, pig.engine.host.gpu; "
        "bad = [m for m in ('torch', 'tensorrt', 'cuda') if m in sys.modules]; "
        "assert not bad, bad"
    )
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root,
                   env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})
