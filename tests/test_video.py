"""pig.engine.media.video against decord, the reader of the official PIG pipeline.

Reference for every clip: ``decord.VideoReader(path)``, ``n = len(vr)``,
``idx = np.linspace(0, n - 1, T).astype(int)``, ``vr.get_batch(idx).asnumpy()``. Frame counts,
indices and pixels must be identical (tolerance 0) except where stated:
* 4:2:0 with odd height: FFmpeg 4.1 (decord) and 8.0 (PyAV) swscale place chroma rows
  differently; bounded below.
* MPEG-4 Part 2: the two FFmpeg versions' decoders differ by <= 2 on a few values.
* open-GOP streams: decord's ``get_batch`` numbers keyframes by decode order and returns the
  wrong frames after a seek; we compare with decord's own sequential decode there.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from pig.engine.host.cpus import available_cpus
from pig.engine.media import video
from pig.engine.media.video import read_video, sample_indices
from pig.errors import PigError, VideoReadError
from tests import clipgen

# decord bundles FFmpeg 4.1 and its own libvpx: imported before av, it breaks PyAV's
# libvpx-vp9 *encoder* (clipgen), so it comes after `import av` above.
decord = pytest.importorskip("decord")

VERYFAST = {"preset": "veryfast"}  # x264 ultrafast has no B-frames

# name -> make_clip arguments (path suffix picks the container)
CLIPS: dict[str, dict] = {
    "h264_bframes.mp4": dict(codec="libx264", n_frames=60, gop=12, bframes=3, options=VERYFAST),
    "vp9.webm": dict(codec="libvpx-vp9", n_frames=40, gop=10),
    "h264_bframes.mkv": dict(codec="libx264", n_frames=50, gop=16, bframes=2, options=VERYFAST),
    "vfr.mkv": dict(codec="libx264", n_frames=30, time_base=Fraction(1, 1000),
                    pts=[int(4 * i * i + 10 * i) for i in range(30)], bframes=2, options=VERYFAST),
    "vfr.mp4": dict(codec="libx264", n_frames=30, time_base=Fraction(1, 1000),
                    pts=[int(4 * i * i + 10 * i) for i in range(30)]),
    "rot90.mp4": dict(size=(96, 64), n_frames=20, rotation=90),
    "rot180.mp4": dict(size=(96, 64), n_frames=20, rotation=180),
    "rot270.mp4": dict(size=(96, 64), n_frames=20, rotation=270),
    "odd_width.webm": dict(codec="libvpx-vp9", size=(321, 186), n_frames=15),
    "odd_444.mp4": dict(size=(321, 187), n_frames=15, pix_fmt="yuv444p"),
    "bt709_tv.mp4": dict(n_frames=15, color=dict(colorspace=1, color_range=1,
                                                 color_primaries=1, color_trc=1)),
    "full_range.mp4": dict(n_frames=15, pix_fmt="yuvj420p"),
    "with_audio.mp4": dict(n_frames=25, audio=True),
    "short.mp4": dict(n_frames=5),
    "one_frame.mp4": dict(n_frames=1),
}
MPEG4 = {"mpeg4.avi": dict(codec="mpeg4", n_frames=40, gop=10),
         "mpeg4.mp4": dict(codec="mpeg4", n_frames=40, gop=10)}
OPEN_GOP = {"mpeg4_open_gop.mp4": dict(codec="mpeg4", n_frames=40, gop=10, bframes=2),
            "mpeg4_open_gop.avi": dict(codec="mpeg4", n_frames=40, gop=10, bframes=2)}
ODD_HEIGHT = {
    "odd_vp9.webm": dict(codec="libvpx-vp9", size=(321, 187), n_frames=15),
    "odd_mpeg4.avi": dict(codec="mpeg4", size=(320, 187), n_frames=15),
}
LONG = {"long.mp4": dict(size=(128, 96), n_frames=3000, gop=50, bframes=2, options=VERYFAST)}


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("clips")


@pytest.fixture(scope="session")
def make(clip_dir: Path):
    """make(name) -> path of the clip ``name`` from the tables above, encoded once a session."""
    return clipgen.clip_maker(clip_dir, {**CLIPS, **MPEG4, **OPEN_GOP, **ODD_HEIGHT, **LONG})


def decord_reference(path: Path, num_frames: int) -> tuple[int, np.ndarray, np.ndarray]:
    vr = decord.VideoReader(str(path))
    n = len(vr)
    idx = np.linspace(0, n - 1, num_frames).astype(int)
    return n, idx, vr.get_batch(idx).asnumpy()


def decord_sequential(path: Path) -> np.ndarray:
    """All frames, decoded front to back by decord (no seeking)."""
    vr = decord.VideoReader(str(path))
    return vr.get_batch(list(range(len(vr)))).asnumpy()


# --- sampling ---------------------------------------------------------------------------

@pytest.mark.parametrize(("n", "t", "expected"), [
    (100, 12, [0, 9, 18, 27, 36, 45, 54, 63, 72, 81, 90, 99]),
    (5, 12, [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 4]),  # short clip: frames repeat
    (1, 4, [0, 0, 0, 0]),
    (13, 12, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12]),
    (7, 1, [0]),
])
def test_sample_indices_values(n: int, t: int, expected: list[int]) -> None:
    got = sample_indices(n, t)
    assert got.dtype == np.int64
    assert got.tolist() == expected


@pytest.mark.parametrize("t", [2, 3, 12, 32])
def test_sample_indices_properties(t: int) -> None:
    for n in range(1, 400):
        idx = sample_indices(n, t)
        assert len(idx) == t and idx[0] == 0 and idx[-1] == n - 1
        assert np.all(np.diff(idx) >= 0)
        assert len(np.unique(idx)) == min(n, t)


@pytest.mark.parametrize(("n", "t"), [(0, 12), (10, 0), (-1, 3)])
def test_sample_indices_rejects(n: int, t: int) -> None:
    with pytest.raises(ValueError):
        sample_indices(n, t)


# --- parity with decord ------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(CLIPS))
@pytest.mark.parametrize("num_frames", [12, 3])
def test_matches_decord(make, name: str, num_frames: int) -> None:
    path = make(name)
    n, idx, ref = decord_reference(path, num_frames)
    got = read_video(path, num_frames)
    assert got.frame_count == n
    np.testing.assert_array_equal(got.indices, idx)
    assert got.frames.shape == ref.shape
    np.testing.assert_array_equal(got.frames, ref)


def test_result_contract(make) -> None:
    got = read_video(make("h264_bframes.mp4"), 12)
    assert got.frames.dtype == np.uint8 and got.frames.flags.c_contiguous
    assert got.frames.shape == (12, 120, 160, 3)
    assert got.indices.dtype == np.int64 and got.frame_count == 60
    assert got.fps == pytest.approx(25.0)
    assert got.duration == pytest.approx(60 / 25, abs=0.05)


@pytest.mark.parametrize(("name", "k"), [("rot90.mp4", 1), ("rot180.mp4", 2), ("rot270.mp4", 3)])
def test_rotation_applied_like_decord(make, name: str, k: int) -> None:
    """decord turns frames upright (transpose filters); the stored frames are 96x64."""
    got = read_video(make(name), 4)
    with av.open(str(make(name))) as c:
        raw = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    np.testing.assert_array_equal(got.frames, np.rot90(raw[got.indices], k, axes=(1, 2)))
    assert got.frames.shape[1:3] == ((96, 64) if k % 2 else (64, 96))


def test_picks_the_same_stream_as_decord(tmp_path: Path) -> None:
    """Two video streams, a small one first: both readers take av_find_best_stream's pick.

    (A stream flagged visual-impaired is skipped by FFmpeg 8 but not by decord's 4.1 mkv
    demuxer, so that case cannot match.)
    """
    path = tmp_path / "two_streams.mkv"
    with av.open(str(path), mode="w") as out:
        streams = [out.add_stream("libx264", rate=25) for _ in range(2)]
        for stream, (w, h) in zip(streams, [(32, 24), (160, 120)], strict=True):
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in [*range(20), None]:
            for stream in streams:
                frame = None
                if i is not None:
                    rgb = clipgen.synth_frame(i, stream.width, stream.height)
                    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                    frame.pts = i
                out.mux(stream.encode(frame))
    n, _, ref = decord_reference(path, 5)
    got = read_video(path, 5)
    assert got.frame_count == n
    np.testing.assert_array_equal(got.frames, ref)


def test_short_clip_repeats_frames(make) -> None:
    got = read_video(make("short.mp4"), 12)
    assert got.frame_count == 5
    for j, i in enumerate(got.indices):
        np.testing.assert_array_equal(got.frames[j], got.frames[list(got.indices).index(i)])
    assert not np.array_equal(got.frames[0], got.frames[-1])


@pytest.mark.parametrize("name", sorted(MPEG4))
def test_mpeg4_part2_close_to_decord(make, name: str) -> None:
    """FFmpeg 4.1 vs 8.0 MPEG-4 Part 2 decoders: measured max |diff| 2 on < 0.01 % of values
    (every IDCT choice of FFmpeg 8 keeps this; none gives 0)."""
    path = make(name)
    for t in (3, 12):
        n, idx, ref = decord_reference(path, t)
        got = read_video(path, t)
        assert got.frame_count == n
        np.testing.assert_array_equal(got.indices, idx)
        diff = np.abs(got.frames.astype(np.int16) - ref)
        assert diff.max() <= 2 and (diff > 0).mean() < 1e-3


@pytest.mark.parametrize("name", sorted(OPEN_GOP))
def test_open_gop_matches_decord_sequential_decode(make, name: str) -> None:
    """mpeg4 with B-frames across GOPs (keyframe decoded before earlier-shown B-frames).

    decord's get_batch(idx) returns later frames there (it numbers keyframes in decode
    order); its sequential decode is right, and so must we be, on every sampling density.
    """
    path = make(name)
    frames = decord_sequential(path)
    for t in (3, 12, 40):
        got = read_video(path, t)
        assert got.frame_count == len(frames)
        np.testing.assert_array_equal(got.frames, frames[got.indices])


@pytest.mark.parametrize("name", sorted(ODD_HEIGHT))
def test_odd_height_420_close_to_decord(make, name: str) -> None:
    """FFmpeg 4.1 (decord) vs 8.0 (PyAV) place chroma rows differently on odd-height 4:2:0.

    Only chroma differs: measured max |diff| 64-71 at strong chroma edges, 15-19 % of values
    off by > 8, luma (0.299 R + 0.587 G + 0.114 B) mean |diff| 0.24-0.38, max 8.8-10.7.
    A wrong frame or a row shift would move the luma by tens.
    """
    path = make(name)
    n, idx, ref = decord_reference(path, 12)
    got = read_video(path, 12)
    assert got.frame_count == n and got.frames.shape == ref.shape
    np.testing.assert_array_equal(got.indices, idx)
    assert np.abs(got.frames.astype(np.int16) - ref).max() <= 96
    luma = np.abs((got.frames - ref.astype(np.float64)) @ [0.299, 0.587, 0.114])
    assert luma.mean() < 1.0 and luma.max() < 16


# --- decoding strategy -------------------------------------------------------------------

@pytest.mark.parametrize("name", ["h264_bframes.mp4", "h264_bframes.mkv", "vp9.webm",
                                  "vfr.mkv", "mpeg4_open_gop.mp4", "mpeg4_open_gop.avi"])
def test_seek_and_stream_paths_agree(make, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Always-jump, never-jump and the unbuffered streaming pass give the same frames."""
    path = make(name)
    results = []
    for gap, max_bytes in ((0, 2**40), (10**9, 2**40), (0, 0)):
        monkeypatch.setattr(video, "SEEK_MIN_GAP", gap)
        monkeypatch.setattr(video, "SEEK_MIN_GAP_ONE_THREAD", gap)
        monkeypatch.setattr(video, "MAX_BUFFERED_BYTES", max_bytes)
        results.append([read_video(path, t).frames for t in (2, 5, 12)])
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(("name", "runs"), [("h264_bframes.mp4", "several"),
                                           ("h264_bframes.mkv", "several"),
                                           ("vp9.webm", "several"),
                                           ("mpeg4_open_gop.mp4", "several"),
                                           ("mpeg4_open_gop.avi", "several"), ("vfr.mkv", "one")])
def test_parallel_keyframe_runs_equal_one_decoder(make, monkeypatch: pytest.MonkeyPatch,
                                                  name: str, runs: str) -> None:
    """Keyframe runs shared among several decoders give exactly one decoder's frames; a
    clip of one keyframe run (vfr.mkv) keeps one decoder."""
    path = make(name)
    decoders: list[int] = []
    one = video._decode_sparse

    def counted(cc: av.codec.context.CodecContext, index: object,
                targets: np.ndarray) -> object:
        decoders.append(len(targets))
        return one(cc, index, targets)

    monkeypatch.setattr(video, "_decode_sparse", counted)
    for t in (5, 12, 40):
        decoders.clear()
        single = read_video(path, t, threads=1)
        assert len(decoders) == 1
        for threads in (2, 3, 0):
            decoders.clear()
            got = read_video(path, t, threads=threads)
            np.testing.assert_array_equal(got.frames, single.frames)
            np.testing.assert_array_equal(got.indices, single.indices)
            assert sum(decoders) == len(np.unique(single.indices))  # each target once
            several = runs == "several" and (threads or available_cpus()) > 1
            assert (len(decoders) > 1) == several, (name, t, threads, decoders)


@pytest.mark.slow
def test_long_clip(make) -> None:
    """3000 frames, keyframe every 50: sparse keyframe jumps against decord."""
    path = make("long.mp4")
    for t in (12, 64):
        n, idx, ref = decord_reference(path, t)
        got = read_video(path, t)
        assert got.frame_count == n == 3000
        np.testing.assert_array_equal(got.indices, idx)
        np.testing.assert_array_equal(got.frames, ref)


# --- unreadable input --------------------------------------------------------------------

def _bad_inputs(tmp: Path, make) -> dict[str, tuple[Path, str]]:
    good_mp4, good_mkv = make("h264_bframes.mp4"), make("h264_bframes.mkv")
    return {
        "missing": (tmp / "missing.mp4", "file not found"),
        "directory": (tmp, "not a regular file"),
        "zero_bytes": (clipgen.make_zero_byte(tmp / "zero.mp4"), "empty file"),
        "not_video": (clipgen.make_not_video(tmp / "notes.mp4"), "not a readable media file"),
        "audio_only_m4a": (clipgen.make_audio_only(tmp / "a.m4a"), "no video stream"),
        "audio_only_wav": (clipgen.make_audio_only(tmp / "a.wav"), "no video stream"),
        "truncated_mp4": (clipgen.make_truncated(good_mp4, tmp / "t.mp4"), "not a readable"),
        "header_only_mkv": (clipgen.make_truncated(good_mkv, tmp / "h.mkv", 0.02), "no frames"),
        "corrupt_mp4": (clipgen.make_corrupt(good_mp4, tmp / "c.mp4"), "not a readable"),
        "corrupt_mkv": (clipgen.make_corrupt(good_mkv, tmp / "c.mkv"), "decoding failed"),
        "no_packets": (clipgen.make_no_frames(tmp / "empty.mkv"), "not a readable"),
        "garbage_h264_mp4": (clipgen.make_garbage_frames(tmp / "g.mp4"), "decoding failed"),
        "garbage_vp9_webm": (clipgen.make_garbage_frames(tmp / "g.webm", "libvpx-vp9"),
                             "decoding failed"),
        "garbage_mpeg4_avi": (clipgen.make_garbage_frames(tmp / "g.avi", "mpeg4"),
                              "decoding failed"),
    }


BAD = ["missing", "directory", "zero_bytes", "not_video", "audio_only_m4a", "audio_only_wav",
       "truncated_mp4", "header_only_mkv", "corrupt_mp4", "corrupt_mkv", "no_packets",
       "garbage_h264_mp4", "garbage_vp9_webm", "garbage_mpeg4_avi"]


@pytest.mark.parametrize("case", BAD)
def test_unreadable_input_raises_one_clear_error(tmp_path: Path, make, case: str) -> None:
    path, reason = _bad_inputs(tmp_path, make)[case]
    with pytest.raises(VideoReadError) as info:
        read_video(path, 12)
    err = info.value
    assert isinstance(err, PigError)
    assert err.path == str(path) and reason in err.reason
    assert "\n" not in str(err) and str(err).startswith(str(path))


def test_frames_that_do_not_decode_are_an_error(make) -> None:
    """A sampled frame the decoder never returns is reported, not silently replaced."""
    with av.open(str(make("short.mp4"))) as c:
        frames = {i: f for i, f in enumerate(c.decode(video=0))}
    del frames[4]
    with pytest.raises(VideoReadError, match="frame 4 of 5 did not decode"):
        video._assemble(Path("x.mp4"), frames, np.arange(5), np.array([0, 2, 4]), 5)


def test_num_frames_must_be_positive(make) -> None:
    with pytest.raises(ValueError):
        read_video(make("short.mp4"), 0)


def test_truncated_stream_keeps_what_decodes(tmp_path: Path, make) -> None:
    """A cut webm still has its first packets: counted and decoded like decord does."""
    path = clipgen.make_truncated(make("vp9.webm"), tmp_path / "cut.webm", 0.6)
    n, idx, ref = decord_reference(path, 6)
    got = read_video(path, 6)
    assert 0 < got.frame_count == n < 40
    np.testing.assert_array_equal(got.indices, idx)
    np.testing.assert_array_equal(got.frames, ref)
