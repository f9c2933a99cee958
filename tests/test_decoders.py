"""Decoder registry and NVDEC: selection, refusal messages, the codec/container table and the
per-file fallback to PyAV (everything that needs no GPU), then NVDEC itself where a GPU and
PyNvVideoCodec are present (skipped elsewhere, with the reason).

The NVDEC plumbing (probe -> sampled indices -> ``get_batch_frames_by_index`` -> upright RGB
in sampling order) is exercised without a GPU through a stand-in ``PyNvVideoCodec`` module
whose ``SimpleDecoder`` decodes with PyAV; it must then give exactly ``read_video``'s frames.
"""

from __future__ import annotations

import sys
import threading
import types
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest

from pig.engine.host import gpu
from pig.engine.media import decoders, nvdec, video
from pig.engine.media.video import read_video
from pig.errors import PigError
from tests import clipgen

FAKE_GPU = gpu.GpuInfo("NVIDIA Fake 80GB", (9, 0), 80 << 30, "580.1", "nvml")
VERYFAST = {"preset": "veryfast"}
# AVCOL_* tags: BT.709 / BT.601 (SMPTE 170M) matrix, limited (1) or full (2) range
BT709 = dict(colorspace=1, color_range=1, color_primaries=1, color_trc=1)
BT601 = dict(colorspace=6, color_range=1, color_primaries=6, color_trc=6)
CLIPS = {
    "h264_bframes.mp4": dict(codec="libx264", n_frames=40, gop=12, bframes=3, options=VERYFAST,
                             color=BT709),
    "h264.mkv": dict(codec="libx264", n_frames=30, gop=10, color=BT601),
    "vp9.webm": dict(codec="libvpx-vp9", n_frames=20, gop=10, color=BT709),
    "rot90.mp4": dict(size=(96, 64), n_frames=20, rotation=90, color=BT709),
    "mpeg4.avi": dict(codec="mpeg4", n_frames=30, gop=10),
    "h264_444.mp4": dict(n_frames=15, pix_fmt="yuv444p", color=BT709),
    "untagged.mp4": dict(n_frames=10),
    "full_range.mp4": dict(n_frames=10, color={**BT709, "color_range": 2}),
}


@pytest.fixture(scope="module")
def make(tmp_path_factory: pytest.TempPathFactory):
    return clipgen.clip_maker(tmp_path_factory.mktemp("decoder-clips"), CLIPS)


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")


class _Frame(np.ndarray):
    """A decoded frame: RGB pixels (DLPack through numpy) and NVDEC's ``timestamp``."""

    timestamp: int


class _PyAvSimpleDecoder:
    """Stand-in for PyNvVideoCodec.SimpleDecoder: frames by presentation index, via PyAV,
    RGB in host memory, before rotation (NVDEC ignores the display matrix), with their pts
    as ``timestamp``. ``made``/``reconfigured`` count constructions and re-pointings."""

    count_offset = 0
    made = 0
    reconfigured = 0

    def __init__(self, path: str, **kwargs: object) -> None:
        assert kwargs["use_device_memory"] is False
        assert kwargs["output_color_type"] == "RGB"
        type(self).made += 1
        self._load(path)

    def _load(self, path: str) -> None:
        with av.open(path) as c:
            frames = sorted(c.decode(video=0), key=lambda f: f.pts)
        self.rgb = []
        for f in frames:
            rgb = f.to_ndarray(format="rgb24").view(_Frame)
            rgb.timestamp = f.pts
            self.rgb.append(rgb)

    def reconfigure_decoder(self, path: str) -> None:
        type(self).reconfigured += 1
        self._load(path)

    def __len__(self) -> int:
        return len(self.rgb) + self.count_offset

    def get_batch_frames_by_index(self, indices: list[int]) -> list[np.ndarray]:
        assert indices == sorted(set(indices)), "ask each frame once, in order"
        return [self.rgb[i] for i in indices]  # numpy arrays support DLPack on the CPU


@pytest.fixture
def fake_nvdec(monkeypatch: pytest.MonkeyPatch):
    module = types.ModuleType(nvdec.MODULE)
    module.SimpleDecoder = _PyAvSimpleDecoder  # type: ignore[attr-defined]
    module.OutputColorType = types.SimpleNamespace(RGB="RGB")  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, nvdec.MODULE, module)
    monkeypatch.setattr(gpu, "gpu_or_none", lambda: (FAKE_GPU, ""))
    monkeypatch.setattr(nvdec, "_driver_library", lambda: "")
    monkeypatch.setattr(_PyAvSimpleDecoder, "made", 0)
    monkeypatch.setattr(_PyAvSimpleDecoder, "reconfigured", 0)
    monkeypatch.setattr(nvdec, "_local", threading.local())
    nvdec.clear_availability_cache()
    yield module
    nvdec.clear_availability_cache()


# --- selection ---------------------------------------------------------------------------------

def test_registry_is_the_cli_choice() -> None:
    assert decoders.CHOICES == ("auto", "pyav", "nvdec")
    assert set(decoders.AUTO_ORDER) == set(decoders.DECODERS)


def test_auto_without_gpu_is_pyav_and_says_why(no_gpu: None) -> None:
    choice = decoders.choose_decoder("auto")
    assert choice.decoder.name == "pyav"
    assert "skipped nvdec: no GPU" in str(choice) and "CUDA_VISIBLE_DEVICES" in str(choice)


def test_nvdec_requested_without_gpu_or_package_is_refused(no_gpu: None,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    with pytest.raises(decoders.DecoderUnavailable, match="decoder nvdec unavailable: no GPU"):
        decoders.choose_decoder("nvdec")
    monkeypatch.setattr(gpu, "gpu_or_none", lambda: (FAKE_GPU, ""))
    monkeypatch.setattr(nvdec, "_installed", lambda: False)
    with pytest.raises(decoders.DecoderUnavailable, match=r"PyNvVideoCodec is not installed"):
        decoders.choose_decoder("nvdec")
    assert decoders.choose_decoder("auto").decoder.name == "pyav"
    with pytest.raises(PigError, match="unknown decoder 'cuvid'"):
        decoders.choose_decoder("cuvid")


def test_auto_takes_nvdec_on_a_gpu_host_with_the_package(fake_nvdec: object) -> None:
    assert decoders.choose_decoder("auto").decoder.name == "nvdec"
    assert decoders.choose_decoder("nvdec").reason == "as requested"


# --- codec / container table -------------------------------------------------------------------

@pytest.mark.parametrize(("name", "why"), [
    ("h264_bframes.mp4", ""), ("h264.mkv", ""), ("vp9.webm", ""), ("rot90.mp4", ""),
    ("mpeg4.avi", "codec 'mpeg4'"), ("h264_444.mp4", "pixel format 'yuv444p'"),
    ("untagged.mp4", "colour matrix 2 (unstated"), ("full_range.mp4", "pixel format 'yuvj420p'"),
])
def test_support_table(make, name: str, why: str) -> None:
    got = nvdec.unsupported(video.probe(make(name)))
    assert (got.startswith(why) if why else got == ""), got


def test_support_table_rejects_other_containers() -> None:
    info = video.VideoProbe("h264", "avi", "yuv420p", 64, 48, 10, True, 0.0, 25.0, 0.4)
    assert nvdec.unsupported(info).startswith("container 'avi'")
    assert "no usable pts" in nvdec.unsupported(
        video.VideoProbe("hevc", "matroska,webm", "yuv420p", 64, 48, 10, False, 0.0, None, None))
    assert set(nvdec.CODECS) == {"h264", "hevc", "vp9", "av1"}
    tagged = video.VideoProbe("h264", "matroska,webm", "yuv420p", 64, 48, 3, True, 0.0, None,
                              None, colorspace=1, color_range=1, pts=(0, 1, 2))
    assert nvdec.unsupported(tagged) == ""
    assert nvdec.unsupported(replace(tagged, color_range=2)).startswith("colour range 2")
    assert nvdec.unsupported(replace(tagged, colorspace=9)).startswith("colour matrix 9")


def test_probe_matches_read_video(make) -> None:
    path = make("h264_bframes.mp4")
    info, got = video.probe(path), read_video(path, 12)
    assert info.frame_count == got.frame_count == 40 and info.ordered_pts
    assert (info.width, info.height) == got.frames.shape[2:0:-1]
    assert info.fps == got.fps and info.duration == got.duration
    assert len(np.unique(got.indices)) <= got.frames_decoded < got.frame_count  # B-frames skipped


# --- NVDEC path through the stand-in decoder ---------------------------------------------------

@pytest.mark.parametrize("name", ["h264_bframes.mp4", "vp9.webm", "rot90.mp4"])
@pytest.mark.parametrize("num_frames", [12, 5])
def test_nvdec_path_gives_read_video_frames(fake_nvdec: object, make, name: str,
                                            num_frames: int) -> None:
    path = make(name)
    got = decoders.choose_decoder("nvdec").decoder.read(path, num_frames, 0)
    want = read_video(path, num_frames)
    assert got.decoder == "nvdec" and want.decoder == "pyav"
    np.testing.assert_array_equal(got.indices, want.indices)
    assert got.frames.flags.c_contiguous and got.frames.dtype == np.uint8
    np.testing.assert_array_equal(got.frames, want.frames)
    assert (got.frame_count, got.fps, got.duration) == (want.frame_count, want.fps,
                                                        want.duration)


def test_unsupported_file_falls_back_to_pyav(fake_nvdec: object, make) -> None:
    path = make("mpeg4.avi")
    got = nvdec.read_video_nvdec(path, 6)
    assert got.decoder.startswith("pyav (nvdec: codec 'mpeg4'")
    np.testing.assert_array_equal(got.frames, read_video(path, 6).frames)


def test_frame_count_disagreement_falls_back(fake_nvdec: object, make,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_PyAvSimpleDecoder, "count_offset", 1)
    path = make("h264.mkv")
    got = nvdec.read_video_nvdec(path, 4)
    assert got.decoder == "pyav (nvdec: NVDEC counts 31 frames, the stream has 30)"
    np.testing.assert_array_equal(got.frames, read_video(path, 4).frames)


def test_decoder_error_falls_back(fake_nvdec, make, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_a: object, **_k: object) -> None:
        raise RuntimeError("cuvidCreateDecoder failed")

    monkeypatch.setattr(fake_nvdec, "SimpleDecoder", broken)
    got = nvdec.read_video_nvdec(make("h264.mkv"), 4)
    assert got.decoder == "pyav (nvdec: NVDEC failed: RuntimeError: cuvidCreateDecoder failed)"


def test_cli_refuses_nvdec_without_gpu(no_gpu: None, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    from pig.cli.engine import main
    from tests.fake_bundle import write_bundle

    bundle = write_bundle(tmp_path / "bundle")
    with pytest.raises(SystemExit) as stop:
        main(["index", str(tmp_path), "--bundle", str(bundle), "--index",
              str(tmp_path / "idx"), "--decoder", "nvdec"])
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and err.count("\n") == 0, err
    assert "decoder nvdec unavailable: no GPU" in err
    assert not (tmp_path / "idx").exists()


# --- on a GPU host -----------------------------------------------------------------------------

@pytest.mark.skipif(bool(nvdec.missing()), reason=f"NVDEC not runnable here: {nvdec.missing()}")
def test_real_nvdec_matches_pyav_within_colour_tolerance(make) -> None:
    path = make("h264_bframes.mp4")
    got, want = nvdec.read_video_nvdec(path, 12), read_video(path, 12)
    assert got.decoder == "nvdec", got.decoder
    np.testing.assert_array_equal(got.indices, want.indices)
    diff = np.abs(got.frames.astype(np.int16) - want.frames)
    assert diff.mean() <= 3.0 and np.percentile(diff, 99) <= 16  # colour conversion differs


def test_pipeline_hands_whole_video_files_to_nvdec(fake_nvdec: object, make) -> None:
    """``pig-engine index`` decodes through read_segments: a file that is one whole-video
    segment goes to the chosen decoder (same frames), a segmented one stays on PyAV's pass."""
    from pig.engine.media.segments import Segmenting

    path = make("h264_bframes.mp4")  # 1.6 s
    calls: list[Path] = []

    def reader(p: Path, num_frames: int, threads: int) -> video.SampledFrames:
        calls.append(p)
        return nvdec.read_video_nvdec(p, num_frames, threads)

    whole = list(video.read_segments(path, 6, Segmenting("fixed", 0.0), whole_reader=reader))
    assert calls == [path] and len(whole) == 1
    np.testing.assert_array_equal(whole[0].frames, read_video(path, 6).frames)
    windows = list(video.read_segments(path, 4, Segmenting("fixed", 0.5), whole_reader=reader))
    assert calls == [path] and len(windows) > 1


# --- NVDEC checks itself (stand-ins that fail at each step) ------------------------------------

@pytest.mark.parametrize("failure", ["import", "driver"])
def test_import_and_driver_probe_once_per_process(fake_nvdec, monkeypatch: pytest.MonkeyPatch,
                                                  failure: str) -> None:
    """A package whose import fails (its own driver check) or a missing libnvcuvid: auto
    takes PyAV and says why, --decoder nvdec refuses in one line; probed once."""
    tries: list[str] = []
    real_import = nvdec.importlib.import_module

    def failing_import(name: str):
        tries.append(name)
        if failure == "import":
            raise RuntimeError("cuInit failed: driver library libnvcuvid.so.1 not found")
        return real_import(name)

    def no_driver() -> str:
        tries.append("driver")
        return "the NVIDIA video driver library libnvcuvid.so.1 is missing (test)"

    monkeypatch.setattr(nvdec.importlib, "import_module", failing_import)
    monkeypatch.setattr(nvdec, "_driver_library", no_driver)
    nvdec.clear_availability_cache()
    choice = decoders.choose_decoder("auto")
    assert choice.decoder.name == "pyav"
    want = "cannot be imported (RuntimeError: cuInit" if failure == "import" else \
        "libnvcuvid.so.1 is missing"
    assert want in choice.reason
    with pytest.raises(PigError, match="decoder nvdec unavailable") as err:
        decoders.choose_decoder("nvdec")
    assert want in str(err.value) and "\n" not in str(err.value)
    assert tries == ([nvdec.MODULE] if failure == "import" else [nvdec.MODULE, "driver"])


def test_untagged_colours_fall_back(fake_nvdec: object, make) -> None:
    path = make("untagged.mp4")
    got = nvdec.read_video_nvdec(path, 4)
    assert got.decoder.startswith("pyav (nvdec: colour matrix 2 (unstated")
    np.testing.assert_array_equal(got.frames, read_video(path, 4).frames)
    assert _PyAvSimpleDecoder.made == 0  # decided from the stream facts, no decoder opened


def test_colours_measured_on_frame_zero(fake_nvdec: object, make,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """NVDEC's conversion differs from PyAV's (e.g. another matrix): frame 0 shows it."""
    real = _PyAvSimpleDecoder._load

    def shifted(self, path: str) -> None:
        real(self, path)
        for f in self.rgb:
            f[:] = np.clip(f.astype(np.int16) + 8, 0, 255)  # ~8 levels: a wrong matrix/range

    monkeypatch.setattr(_PyAvSimpleDecoder, "_load", shifted)
    path = make("h264.mkv")
    got = nvdec.read_video_nvdec(path, 4)
    assert got.decoder.startswith("pyav (nvdec: NVDEC's colours differ from PyAV's by "), \
        got.decoder
    np.testing.assert_array_equal(got.frames, read_video(path, 4).frames)


@pytest.mark.parametrize("fault", ["wrong_frame", "no_timestamp"])
def test_returned_frames_checked_by_timestamp(fake_nvdec: object, make,
                                              monkeypatch: pytest.MonkeyPatch,
                                              fault: str) -> None:
    """NVDEC returns another frame than the last one asked for (near the end of a file), or
    frames without a timestamp: the file goes to PyAV."""
    real = _PyAvSimpleDecoder.get_batch_frames_by_index

    def faulty(self, indices: list[int]) -> list[np.ndarray]:
        frames = real(self, indices)
        if fault == "wrong_frame":
            return [*frames[:-1], self.rgb[indices[-1] - 1]]
        return [np.asarray(f) for f in frames]

    monkeypatch.setattr(_PyAvSimpleDecoder, "get_batch_frames_by_index", faulty)
    path = make("vp9.webm")
    got = nvdec.read_video_nvdec(path, 5)
    want = {"wrong_frame": "pyav (nvdec: NVDEC returned pts ",
            "no_timestamp": "pyav (nvdec: NVDEC frames carry no timestamp"}[fault]
    assert got.decoder.startswith(want), got.decoder
    np.testing.assert_array_equal(got.frames, read_video(path, 5).frames)


def test_one_decoder_reused_across_files(fake_nvdec: object, make) -> None:
    for name in ("h264_bframes.mp4", "h264.mkv", "vp9.webm"):
        path = make(name)
        got = nvdec.read_video_nvdec(path, 6)
        assert got.decoder == "nvdec"
        np.testing.assert_array_equal(got.frames, read_video(path, 6).frames)
    assert (_PyAvSimpleDecoder.made, _PyAvSimpleDecoder.reconfigured) == (1, 2)


def test_failed_decoder_is_not_reused(fake_nvdec, make, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self, indices: list[int]) -> list[np.ndarray]:
        raise RuntimeError("CUDA_ERROR_ILLEGAL_ADDRESS")

    with monkeypatch.context() as m:
        m.setattr(_PyAvSimpleDecoder, "get_batch_frames_by_index", broken)
        assert "ILLEGAL_ADDRESS" in nvdec.read_video_nvdec(make("h264.mkv"), 3).decoder
    assert nvdec.read_video_nvdec(make("vp9.webm"), 3).decoder == "nvdec"
    assert (_PyAvSimpleDecoder.made, _PyAvSimpleDecoder.reconfigured) == (2, 0)
