"""Segment-level indexing (issue 11): window arithmetic, one-pass segment sampling with PTS
timestamps, the segments table (atomic per file), grouped search, CLI options and JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from pig.cli.engine import main as engine_main
from pig.engine.bundle import Bundle
from pig.engine.index import Entry, VideoIndex
from pig.engine.index.catalog import CATALOG_NAME
from pig.engine.ingest.run import index_videos
from pig.engine.media.preprocess import preprocess_frames
from pig.engine.media.segments import (
    WHOLE,
    Segmenting,
    format_span,
    merge_short,
    spans_for,
    windows,
)
from pig.engine.media.video import read_segments, read_video
from pig.engine.query.engine import QueryEngine
from pig.engine.query.search import HIT_FIELDS, hit_json
from pig.errors import IndexStoreError, PigError
from tests import clipgen
from tests.fake_bundle import FakeSizes, write_bundle

REPO = Path(__file__).resolve().parent.parent
SIZES = FakeSizes(frames=4, size=32, vocab=49408, length=16)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    return Bundle.load(write_bundle(tmp_path_factory.mktemp("bundle") / "b", SIZES))


def unit(rng: np.random.Generator, n: int, dim: int = 16) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# --- window arithmetic ------------------------------------------------------------------------
@pytest.mark.parametrize(("end", "seconds", "stride", "expected"), [
    (30, 10, None, [(0, 10), (10, 20), (20, 30)]),            # exact fit
    (34, 10, None, [(0, 10), (10, 20), (20, 34)]),            # 4 s < half: joins the last
    (35, 10, None, [(0, 10), (10, 20), (20, 30), (30, 35)]),  # 5 s = half: own window
    (7, 10, None, [(0, 7)]),                                  # shorter than a window
    (25, 10, 5, [(0, 10), (5, 15), (10, 20), (15, 25)]),      # overlap, exact fit
    (27, 10, 5, [(0, 10), (5, 15), (10, 20), (15, 25), (20, 27)]),  # clipped: 7 s >= 5
    (23, 10, 5, [(0, 10), (5, 15), (10, 20), (15, 23)]),      # clipped from the next start
    (20, 10, 8, [(0, 10), (8, 20)]),                          # 16-20 < half: joins
    (1.0, 0.3, None, [(0, 0.3), (0.3, 0.6), (0.6, 1.0)]),     # float steps
])
def test_window_arithmetic(end: float, seconds: float, stride: float | None,
                           expected: list[tuple[float, float]]) -> None:
    got = windows(0.0, end, seconds, stride)
    np.testing.assert_allclose(np.array(got), np.array(expected, dtype=float), atol=1e-9)
    assert got[0][0] == 0 and got[-1][1] == end  # covers the file to its end


def test_settings_spans_and_refusals() -> None:
    auto = Segmenting()
    assert spans_for(auto, 30.0) == [(0.0, 30.0)]  # <= 30 s: whole video
    assert len(spans_for(auto, 30.5)) == 3
    assert spans_for(WHOLE, 3600.0) == [(0.0, 3600.0)]
    assert Segmenting.from_dict(auto.to_dict()) == auto
    shots = Segmenting(mode="shots", seconds=10, shot_min=2)
    # cuts at 0, 1 (a 1 s shot merges into the next), 15, 16.5 (a 1.5 s shot merges back)
    assert merge_short([0, 1, 15, 16.5], 40, 2) == [(0, 16.5), (16.5, 40)]
    assert spans_for(shots, 40.0, [0, 1, 15, 16.5]) == [  # long shots cut into windows
        (0, 10), (10, 16.5), (16.5, 26.5), (26.5, 40)]
    for bad in ({"mode": "scenes"}, {"seconds": 0}, {"seconds": 10, "stride": 12},
                {"mode": "fixed", "seconds": -1}):
        with pytest.raises(PigError):
            Segmenting(**bad)
    with pytest.raises(PigError, match="unknown segmenting fields"):
        Segmenting.from_dict({"mode": "auto", "window": 3})
    assert format_span(65.2, 125.9) == "01:05-02:05"
    assert format_span(3599, 3725) == "59:59-1:02:05"
    assert format_span(0.0, 0.04) == "00:00.00-00:00.04"  # one frame still has a length


# --- sampling and timestamps ------------------------------------------------------------------
def test_segments_sample_inside_their_windows_in_one_pass(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from pig.engine.media import video

    path = clipgen.make_clip(tmp_path / "a.mp4", size=(64, 48), n_frames=250, fps=25)
    full = read_video(path, 250)  # every frame, for reference
    fed: list[int] = []  # pts of every packet given to the decoder
    held: list[int] = []  # decoded frames kept, after each packet
    real_feed = video._Collector.feed

    def feed(self: video._Collector, packet: object) -> None:
        real_feed(self, packet)
        if packet is not None:
            fed.append(packet.pts)
        held.append(len(self.got))

    monkeypatch.setattr(video._Collector, "feed", feed)
    segs = list(read_segments(path, 6, Segmenting(mode="fixed", seconds=4, stride=3)))
    assert sorted(fed) == sorted(set(fed)) and len(fed) == 250  # each packet decoded once
    assert max(held) <= 2 * 6  # frames held: at most two overlapping segments' worth
    assert [(s.start_s, s.end_s) for s in segs] == [(0, 4), (3, 7), (6, 10)]
    for s in segs:
        lo, hi = round(s.start_s * 25), 250 if s.end_s == 10 else round(s.end_s * 25)
        np.testing.assert_array_equal(s.indices, lo + np.linspace(0, hi - lo - 1, 6).astype(int))
        np.testing.assert_array_equal(s.frames, full.frames[s.indices])
        assert s.frame_count == 250


def test_shorter_than_a_window_is_the_whole_video_vector_exactly(tmp_path: Path,
                                                                 bundle: Bundle) -> None:
    (tmp_path / "v").mkdir()
    clips = [clipgen.make_clip(tmp_path / "v" / "b.mp4", n_frames=40, bframes=2, gop=12),
             clipgen.make_clip(tmp_path / "v" / "c.webm", codec="libvpx-vp9", n_frames=30)]
    for path in clips:
        whole = read_video(path, 4)
        for setting in (Segmenting(), Segmenting(mode="fixed", seconds=60), WHOLE):
            (seg,) = read_segments(path, 4, setting)
            assert seg.frames.tobytes() == whole.frames.tobytes()
            assert (seg.start_s, seg.end_s) == (0.0, pytest.approx(whole.frame_count / 25))
    # and through the whole pipeline: the stored vector is today's official vector
    idx = tmp_path / "idx"
    index_videos([tmp_path / "v"], bundle, idx, dtype="f32")
    from pig.engine.backends.onnxruntime import OrtBackend

    with OrtBackend(bundle, "fp32", branches=("video",)) as enc, VideoIndex.open(idx) as index:
        for path in clips:
            x = preprocess_frames(read_video(path, 4).frames, bundle.recipe)[None]
            v = enc.encode_video(x)[0]
            hit = index.search(v, 1)[0][0]
            assert hit.path == str(path) and hit.score == pytest.approx(1, abs=1e-6)
            assert index.lookup(path) is not None and len(index.segments_of(path)) == 1


def test_vfr_offset_start_and_rotated_timestamps(tmp_path: Path) -> None:
    # 1/1000 time base, starting at 5 s, frames at 40 ms for 2 s then 200 ms (VFR)
    pts = [5000 + 40 * i for i in range(50)] + [7000 + 200 * i for i in range(40)]
    path = clipgen.make_clip(tmp_path / "vfr.mp4", n_frames=len(pts), pts=pts,
                             time_base=Fraction(1, 1000), rotation=90, size=(64, 48))
    segs = list(read_segments(path, 3, Segmenting(mode="fixed", seconds=2)))
    # times from the first frame: 0..1.96 (50 frames), then 2.0..9.8; duration 10.0
    assert [(s.start_s, s.end_s) for s in segs] == [(0, 2), (2, 4), (4, 6), (6, 8), (8, 10)]
    np.testing.assert_array_equal(segs[0].indices, [0, 24, 49])  # 50 frames in 0-2 s
    np.testing.assert_array_equal(segs[1].indices, [50, 54, 59])  # 10 frames per 2 s after
    np.testing.assert_array_equal(segs[-1].indices, [80, 84, 89])
    assert segs[0].frames.shape[1:3] == (64, 48)  # upright: rotated by its display matrix
    full = read_video(path, len(pts))
    for s in segs:
        np.testing.assert_array_equal(s.frames, full.frames[s.indices])


def test_recipe_sampling_is_followed_and_unknown_ones_refused(tmp_path: Path) -> None:
    path = clipgen.make_clip(tmp_path / "a.mp4", n_frames=10)
    with pytest.raises(ValueError, match="unknown frame sampling 'random'"):
        read_video(path, 4, sampling="random")
    from pig.engine.recipe import PreprocessRecipe

    with pytest.raises(ValueError, match="unknown frame sampling 'random'"):
        PreprocessRecipe.from_dict({**PreprocessRecipe().to_dict(), "sampling": "random"})


def test_shots_on_hard_cuts(tmp_path: Path) -> None:
    pytest.importorskip("scenedetect")
    path = _hard_cuts(tmp_path / "cuts.mp4", [75, 125, 20, 80], fps=25)  # 3, 5, 0.8, 3.2 s
    segs = list(read_segments(path, 4, Segmenting(mode="shots", seconds=4, shot_min=1)))
    # shots 0-3, 3-8 (cut into 3-7, 7-8 -> joins: 3-8), 8-8.8 (< 1 s: merged back), 8.8-12
    spans = [(s.start_s, s.end_s) for s in segs]
    assert spans == [(0, 3), (3, 8.8), (8.8, 12)], spans


def _hard_cuts(path: Path, lengths: list[int], fps: int) -> Path:
    import av

    colours = [(220, 30, 30), (30, 200, 40), (30, 40, 220), (230, 230, 30)]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.options = clipgen.DEFAULT_OPTIONS["libx264"]
        i = 0
        for shot, n in enumerate(lengths):
            for j in range(n):
                img = np.full((48, 64, 3), colours[shot % 4], np.uint8)
                img[10:20, (j % 40):(j % 40) + 10] = 255  # motion inside a shot
                frame = av.VideoFrame.from_ndarray(img, format="rgb24")
                frame.pts = i
                i += 1
                out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


# --- catalog, grouping, atomicity -------------------------------------------------------------
def _entry(path: str, spans: list[tuple[float, float]]) -> Entry:
    return Entry(path, 1, 1, "", 10, tuple(spans))


def test_segments_table_grouping_remove_and_reindex(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = unit(rng, 12)
    q = x[0]
    x[:4] = q + 0.1 * unit(rng, 4)  # the long file's 4 segments lie near q
    x[:4] /= np.linalg.norm(x[:4], axis=1, keepdims=True)
    with VideoIndex.create(tmp_path / "i", fingerprint="fp", dim=16, bundle_info={}) as idx:
        keys = idx.add([_entry("/v/long.mp4", [(0, 10), (10, 20), (20, 30), (30, 41)]),
                        _entry("/v/b.mp4", [(0, 12)]),
                        _entry("/v/c.mp4", [(0, 10), (10, 20)])], x[:7])
        idx.add([_entry(f"/v/s{i}.mp4", [(0, 5)]) for i in range(5)], x[7:12])
        assert idx.counts() == {"vectors": 12, "indexed": 8, "failed": 0}
        assert idx.longest() == ("/v/long.mp4", 41.0)
        # segment hits: the long file's segments crowd the top for a query near them
        seg_hits = idx.search(q, 4, group_by="segment")[0]
        assert {h.path for h in seg_hits} == {"/v/long.mp4"}
        top = idx.search(q, 3, exact=True)[0]  # grouped: 3 distinct files
        assert len({h.path for h in top}) == 3 and top[0].path == "/v/long.mp4"
        best = max(range(4), key=lambda i: float(q @ x[i]))
        assert (top[0].segment, top[0].start_s) == (best, [0, 10, 20, 30][best])
        assert top[0].key == keys[0]
        for k in (1, 5, 8, 20):  # always min(k, files) distinct files
            for exact in (True, False):
                hits = idx.search(x[:3], k, exact=exact)
                assert all(len({h.path for h in row}) == len(row) == min(k, 8) for row in hits)
        # re-index with fewer segments: all old ones go, atomically with the new
        idx.add([_entry("/v/long.mp4", [(0, 20), (20, 41)])], x[:2])
        assert [(s.ordinal, s.start_s, s.end_s) for s in idx.segments_of("/v/long.mp4")] == [
            (0, 0, 20), (1, 20, 41)]
        assert idx.counts()["vectors"] == 10
        idx.record_failure("/v/c.mp4", "broken")
        assert idx.counts() == {"vectors": 8, "indexed": 7, "failed": 1}
        assert idx.remove(["/v/long.mp4"]) == ["/v/long.mp4"]
        assert idx.counts()["vectors"] == 6 and idx.segments_of("/v/long.mp4") == []
        with pytest.raises(IndexStoreError, match="1 entries with 2 segments but 1 vectors"):
            idx.add([_entry("/v/d.mp4", [(0, 1), (1, 2)])], x[:1])
    with VideoIndex.open(tmp_path / "i") as idx:  # committed and reloaded
        assert idx.counts() == {"vectors": 6, "indexed": 6, "failed": 1}
        assert {h.path for h in idx.search(x[4], 10)[0]} == {"/v/b.mp4"} | {
            f"/v/s{i}.mp4" for i in range(5)}


def test_index_without_segments_table_is_read_and_upgraded(tmp_path: Path) -> None:
    """An index written before segments: readers see one whole-file segment per file with
    the file key as vector key; the first writer adds the table with exactly those rows."""
    import sqlite3

    rng = np.random.default_rng(1)
    x = unit(rng, 3)
    d = tmp_path / "old"
    with VideoIndex.create(d, fingerprint="fp", dim=16, bundle_info={}) as idx:
        idx.add([Entry(f"/v/{i}.mp4", 1, 1, "", 5) for i in range(3)], x)
    db = sqlite3.connect(d / CATALOG_NAME)
    db.execute("DROP TABLE segments")
    db.commit()
    db.close()
    manifest = json.loads((d / "manifest.json").read_text())
    del manifest["segmenting"]
    (d / "manifest.json").write_text(json.dumps(manifest))
    for writable in (False, True):
        with VideoIndex.open(d, writable=writable) as idx:
            assert idx.segmenting == WHOLE
            hit = idx.search(x[1], 1)[0][0]
            assert (hit.path, hit.segment, hit.start_s, hit.end_s) == ("/v/1.mp4", 0, 0.0, None)
    with VideoIndex.open(d, writable=True) as idx:
        idx.remove(["/v/0.mp4"])
        assert idx.counts() == {"vectors": 2, "indexed": 2, "failed": 0}


_CRASH_CHILD = textwrap.dedent(
    """
    import os, sys
    import numpy as np
    from pig.engine.index import Entry, VideoIndex
    d, n = sys.argv[1], int(sys.argv[2])
    x = np.load(sys.argv[3])
    seg = lambda p, k: Entry(p, 1, 1, "", 1, tuple((i * 10.0, i * 10.0 + 10) for i in range(k)))
    idx = VideoIndex.create(d, fingerprint="fp", dim=x.shape[1], bundle_info={})
    idx.add([seg("/v/long.mp4", 4)], x[:4])
    idx.commit()  # state A: 4 segments
    idx.add([seg("/v/long.mp4", 2), seg("/v/new.mp4", 3)], x[4:9])  # state B
    real, calls = os.replace, []
    def dying_replace(src, dst):
        calls.append(dst)
        if len(calls) == n:
            os._exit(3)
        real(src, dst)
    os.replace = dying_replace
    idx.commit()
    """
)


@pytest.mark.parametrize("n", [1, 2])
def test_kill_during_commit_leaves_files_with_all_or_none_of_their_segments(
        tmp_path: Path, n: int) -> None:
    x = unit(np.random.default_rng(2), 9)
    np.save(tmp_path / "x.npy", x)
    d = tmp_path / "idx"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = [sys.executable, "-c", _CRASH_CHILD, str(d), str(n), str(tmp_path / "x.npy")]
    assert subprocess.run(args, env=env, check=False).returncode == 3
    committed = n == 2  # dies before the vectors rename (A) or before the manifest (B)
    with VideoIndex.open(d) as idx:
        long = idx.segments_of("/v/long.mp4")
        new = idx.segments_of("/v/new.mp4")
        assert (len(long), len(new)) == ((2, 3) if committed else (4, 0))
        assert idx.counts()["vectors"] == len(long) + len(new)
        vectors = x[4:9] if committed else x[:4]
        for i, v in enumerate(vectors):
            hit = idx.search(v, 1, group_by="segment")[0][0]
            want = ("/v/long.mp4", i) if i < len(long) else ("/v/new.mp4", i - len(long))
            assert (hit.path, hit.segment) == want
            assert hit.score == pytest.approx(1, abs=1e-3)  # f16 storage at D=16


# --- pipeline and CLI -------------------------------------------------------------------------
def test_cli_segmented_index_search_json_info_and_refusal(
        tmp_path: Path, bundle: Bundle, capsys: pytest.CaptureFixture[str]) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    clipgen.make_clip(videos / "long.mp4", size=(48, 40), n_frames=250, fps=25)  # 10 s
    clipgen.make_clip(videos / "short.mp4", size=(48, 40), n_frames=30, fps=25)  # 1.2 s
    idx = tmp_path / "idx"

    def run(*argv: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as stop:
            engine_main(list(argv))
        out, err = capsys.readouterr()
        return int(stop.value.code or 0), out, err

    code, out, err = run("index", str(videos), "--bundle", str(bundle.dir), "--index", str(idx),
                         "--segment-seconds", "3", "--dtype", "f32")
    assert code == 0, err
    assert out.splitlines()[0].startswith("2 files: 2 indexed, 0 failed")
    assert "; 4 segments" in out  # 0-3, 3-6, 6-10 (1 s remainder joins) + the short clip
    with VideoIndex.open(idx) as index:
        assert [(s.start_s, s.end_s) for s in index.segments_of(videos / "long.mp4")] == [
            (0, 3), (3, 6), (6, 10)]
        assert index.segmenting == Segmenting(mode="fixed", seconds=3)
    # a different setting is refused in one line naming both, before any work
    code, out, err = run("index", str(videos), "--bundle", str(bundle.dir), "--index", str(idx),
                         "--segment-seconds", "5")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "fixed (3 s windows), not fixed (5 s windows)" in err
    code, out, err = run("index", str(videos), "--bundle", str(bundle.dir), "--index", str(idx))
    assert code == 0 and "2 unchanged" in out  # no option: the index's own setting
    code, out, err = run("search", "--index", str(idx), "-q", "a box", "-q", "red", "--json",
                         "-k", "5")
    docs = [json.loads(line) for line in out.splitlines()]
    assert [d["query"] for d in docs] == ["a box", "red"]
    for doc in docs:
        rows = doc["results"]
        assert [r["rank"] for r in rows] == [1, 2]  # grouped: 2 files
        for r in rows:
            assert list(r) == list(HIT_FIELDS)
            assert isinstance(r["score"], float) and isinstance(r["id"], int)
            assert isinstance(r["segment"], int) and 0 <= r["start_s"] < r["end_s"] <= 10
            assert Path(r["path"]).parent == videos
    code, out, err = run("search", "--index", str(idx), "-q", "a box", "--json",
                         "--group-by", "segment", "-k", "10")
    rows = json.loads(out)["results"]
    assert len(rows) == 4 and len({(r["path"], r["segment"]) for r in rows}) == 4
    code, out, err = run("search", "--index", str(idx), "-q", "a box", "-k", "1",
                         "--group-by", "segment")
    assert code == 0 and len(out.splitlines()) == 2
    assert any(s in out for s in ("00:00-00:03", "00:03-00:06", "00:06-00:10", "00:00-00:01"))
    code, out, err = run("info", "--index", str(idx))
    assert "2 indexed, 0 failed; 4 segments" in out
    assert "segmenting  fixed (3 s windows)" in out
    assert f"longest     00:10 (10.0 s) {videos / 'long.mp4'}" in out
    code, out, err = run("info", "--index", str(idx), "--json")
    doc = json.loads(out)
    assert doc["segmenting"]["seconds"] == 3 and doc["longest"]["seconds"] == 10.0


def test_reindex_changed_segmented_file_and_hit_json(tmp_path: Path, bundle: Bundle) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    path = clipgen.make_clip(videos / "a.mp4", size=(48, 40), n_frames=250, fps=25)
    idx = tmp_path / "idx"
    setting = Segmenting(mode="fixed", seconds=2)
    assert index_videos([videos], bundle, idx, segmenting=setting).segments == 5
    clipgen.make_clip(path, size=(48, 40), n_frames=100, fps=25)  # changed: now 4 s
    report = index_videos([videos], bundle, idx)
    assert (report.indexed, report.segments) == (1, 2)
    with QueryEngine(idx) as s:
        assert [(r.start_s, r.end_s) for r in s.indexes[0].segments_of(path)] == [(0, 2), (2, 4)]
        assert s.indexes[0].counts()["vectors"] == 2
        hit = s.search(["a box"], 1)[0][0]
        assert hit_json(1, hit) == {"rank": 1, "score": hit.score, "path": str(path),
                                    "id": hit.key, "start_s": hit.start_s,
                                    "end_s": hit.end_s, "segment": hit.segment, "index": 0}


def test_file_failing_after_some_segments_is_recorded_with_none(
        tmp_path: Path, bundle: Bundle, monkeypatch: pytest.MonkeyPatch) -> None:
    from pig.engine.ingest import work
    from pig.engine.ingest.options import PipelineOptions
    from pig.errors import VideoReadError

    videos = tmp_path / "videos"
    videos.mkdir()
    good = clipgen.make_clip(videos / "good.mp4", size=(48, 40), n_frames=250, fps=25)
    bad = clipgen.make_clip(videos / "bad.mp4", size=(48, 40), n_frames=250, fps=25)
    real = work.read_segments

    def failing(path, *args, **kw):  # the bad file breaks after its first two segments
        for seg in real(path, *args, **kw):
            if Path(path) == bad and seg.ordinal == 2:
                raise VideoReadError(path, "frame 100 of 250 did not decode")
            yield seg

    monkeypatch.setattr(work, "read_segments", failing)
    report = index_videos([videos], bundle, tmp_path / "idx",
                          segmenting=Segmenting(mode="fixed", seconds=2),
                          options=PipelineOptions(batch_size=3, workers=2))
    assert report.failed == [(str(bad), "frame 100 of 250 did not decode")]
    assert (report.indexed, report.segments) == (1, 5)
    with VideoIndex.open(tmp_path / "idx") as idx:
        assert idx.counts() == {"vectors": 5, "indexed": 1, "failed": 1}
        assert len(idx.segments_of(good)) == 5 and idx.segments_of(bad) == []
