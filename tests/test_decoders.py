"""Decoder registry and NVDEC: selection, refusal messages, the codec/container table and the
per-file fallback to PyAV (everything that needs no GPU), then NVDEC itself where a GPU and
PyNvVideoCodec are present (skipped elsewhere, with the reason).

The NVDEC plumbing (probe -> sampled indices -> ``get_batch_frames_by_index`` -> upright RGB
in sampling order) is exercised without a GPU through a stand-in ``PyNvVideoCodec`` module
whose ``SimpleDecoder`` decodes with PyAV; it must then give exactly ``read_video``'s frames.
"""

from __future__ import annotations

import sys
import types
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
CLIPS = {
    "h264_bframes.mp4": dict(codec="libx264", n_frames=40, gop=12, bframes=3, options=VERYFAST),
    "h264.mkv": dict(codec="libx264", n_frames=30, gop=10),
    "vp9.webm": dict(codec="libvpx-vp9", n_frames=20, gop=10),
    "rot90.mp4": dict(size=(96, 64), n_frames=20, rotation=90),
    "mpeg4.avi": dict(codec="mpeg4", n_frames=30, gop=10),
    "h264_444.mp4": dict(n_frames=15, pix_fmt="yuv444p"),
}


@pytest.fixture(scope="module")
def make(tmp_path_factory: pytest.TempPathFactory):
    return clipgen.clip_maker(tmp_path_factory.mktemp("decoder-clips"), CLIPS)


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")


class _PyAvSimpleDecoder:
    """Stand-in for PyNvVideoCodec.SimpleDecoder: frames by presentation index, via PyAV,
    RGB in host memory, before rotation (NVDEC ignores the display matrix)."""

    count_offset = 0

    def __init__(self, path: str, **kwargs: object) -> None:
        assert kwargs["use_device_memory"] is False
        assert kwargs["output_color_type"] == "RGB"
        with av.open(path) as c:
            self.frames = sorted(c.decode(video=0), key=lambda f: f.pts)
        self.rgb = [f.to_ndarray(format="rgb24") for f in self.frames]

    def __len__(self) -> int:
        return len(self.frames) + self.count_offset

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
    return module


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
