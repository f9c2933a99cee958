"""Real media: the corpus of scripts/media_corpus.py (public sample media transcoded by Debian's
ffmpeg into today's forms) indexed whole and in 10 s segments, spans checked against ffprobe;
lying timestamps bounded; discovery that passes nothing over in silence."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from pig.engine.bundle import Bundle
from pig.engine.index import VideoIndex
from pig.engine.media.segments import WHOLE, Segmenting
from pig.engine.media.video import read_segments
from pig.engine.media.walk import VIDEO_EXTENSIONS, NothingToIndex, discover, expand_braces
from pig.errors import PigError, VideoReadError
from tests.fake_bundle import write_bundle
from tests.test_hostile import SIZES, run_cli

REPO = Path(__file__).resolve().parents[1]
TEN = Segmenting(mode="fixed", seconds=10.0)
PIG_ENGINE = ("import sys; sys.argv[0] = 'pig-engine'; from pig.startup import pig_engine; "
              "pig_engine()")
needs_ffmpeg = pytest.mark.skipif(not (shutil.which("ffmpeg") and shutil.which("apt-get")),
                                  reason="the corpus needs Debian's ffmpeg and apt-get (.ci/run)")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    return Bundle.load(write_bundle(tmp_path_factory.mktemp("bundle") / "b", SIZES))


@cache
def _corpus() -> Path:
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import media_corpus
    finally:
        sys.path.pop(0)
    return media_corpus.build(media_corpus.default_dir())


@pytest.fixture(scope="session")
def corpus() -> Path:
    """The corpus folder (built once per version of the script, ~1-2 min, cached in .cache/)."""
    return _corpus()


def listing(corpus: Path) -> dict[str, dict[str, object]]:
    return json.loads((corpus / "corpus.json").read_text())


def decodable(corpus: Path) -> list[str]:
    return [n for n, d in listing(corpus).items() if d["decodes"] and not d.get("lying")]


@cache
def ffprobe_times(path: Path) -> np.ndarray:
    """Every frame's presentation time (seconds, sorted), as Debian's ffprobe decodes it; a
    frame it gives no time (the last of an elementary stream) follows the one before."""
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                          "frame=best_effort_timestamp_time", "-of", "csv=p=0", str(path)],
                         capture_output=True, text=True, check=True).stdout
    values = [x.strip(",") for x in out.split() if x.strip(",")]
    times = np.array([np.nan if x == "N/A" else float(x) for x in values])
    known = times[~np.isnan(times)]
    step = float(np.median(np.diff(known))) if len(known) > 1 else 0.04
    for i in np.flatnonzero(np.isnan(times)).tolist():
        times[i] = times[i - 1] + step if i else 0.0
    return np.sort(times)


@needs_ffmpeg
@pytest.mark.parametrize("setting", [WHOLE, TEN], ids=["whole", "10s"])
def test_every_decodable_file_has_spans_of_ffprobe_frames(corpus: Path,
                                                          setting: Segmenting) -> None:
    """Each file's segments: frames counted as ffprobe does, and each span starts within one
    frame of its first frame's time and the last ends within one frame of the stream's end
    (times from the first frame, as the index and the player use them)."""
    for name in decodable(corpus):
        path = corpus / name
        ref = ffprobe_times(path)
        ref = ref - ref[0]
        frame = float(np.median(np.diff(ref))) if len(ref) > 1 else 0.04
        segs = list(read_segments(path, 4, setting, threads=1))
        assert segs[0].frame_count == len(ref), name
        for seg in segs:
            first, last = ref[seg.indices[0]], ref[seg.indices[-1]]
            assert seg.start_s - 1e-3 <= first <= seg.start_s + frame + 1e-3, (name, seg.ordinal)
            assert last <= seg.end_s + 1e-3, (name, seg.ordinal)
        assert abs(segs[-1].end_s - (ref[-1] + frame)) <= frame + 1e-3, name
        if setting is TEN and ref[-1] > 15:  # long enough for several windows
            assert len(segs) >= 2, name
        if name == "one-frame.mp4":
            assert segs[0].end_s > 0  # one frame still lasts its frame time
        if name == "long-21min.mp4" and setting is TEN:
            assert len(segs) == 126


@needs_ffmpeg
def test_corpus_indexes_whole_and_segmented_and_failures_have_true_reasons(
        corpus: Path, bundle: Bundle, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    names = listing(corpus)
    for mode, args in (("whole", ["--segment-seconds", "0"]),
                       ("10s", ["--segment-seconds", "10"])):
        idx = tmp_path / mode
        code, out, err = run_cli(capsys, "index", str(corpus), "--bundle", str(bundle.dir),
                                 "--index", str(idx), "--batch-size", "4", *args)
        assert code == 1, err  # the undecodable and lying files failed
        failed = {Path(line.split(": ")[1]).name: line for line in out.splitlines()
                  if line.startswith("failed: ")}
        assert set(failed) == {n for n, d in names.items()
                               if not d["decodes"] or d.get("lying")}, out
        assert "Invalid data" in failed["truncated.mp4"]
        assert "timestamps make no sense" in failed["jump-1e9s.mkv"]
        assert "passed over by extension: 1 files (.json 1)" in out
        with VideoIndex.open(idx, view=True) as vi:
            assert vi.counts()["indexed"] == len(decodable(corpus))


@needs_ffmpeg
def test_lying_timestamps_fail_fast_bounded_and_are_not_retried(corpus: Path, bundle: Bundle,
                                                                tmp_path: Path) -> None:
    """pts jumps of 1e9 s and 1e12 s: recorded failed in seconds with little memory, in a
    child process whose own peak RSS and CPU time a wrapper reports (RUSAGE_CHILDREN of the
    test process would hold every earlier test's children); a rerun skips them until they
    change."""
    folder = tmp_path / "lying"
    folder.mkdir()
    for name in ("jump-1e9s.mkv", "jump-1e12s.mkv"):
        shutil.copy(corpus / name, folder / name)
    cmd = [sys.executable, "-c", MEASURED, sys.executable, "-c", PIG_ENGINE, "index",
           str(folder), "--bundle", str(bundle.dir), "--index", str(tmp_path / "idx"),
           "--segment-seconds", "10"]
    for attempt in range(2):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
        assert proc.returncode == (1, 0)[attempt], proc.stdout + proc.stderr
        if attempt == 0:
            assert proc.stdout.count("timestamps make no sense") == 2, proc.stdout
        else:
            assert "2 skipped (2 failed before, unchanged)" in proc.stdout, proc.stdout
        used = json.loads(proc.stderr.strip().splitlines()[-1])
        assert used["cpu_s"] < 30 and used["maxrss_kib"] < 1024 * 1024, used


# runs argv[1:], then prints the child's CPU seconds and peak RSS as the last stderr line
MEASURED = """
import json, resource, subprocess, sys
code = subprocess.run(sys.argv[1:]).returncode
r = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"cpu_s": r.ru_utime + r.ru_stime, "maxrss_kib": r.ru_maxrss}), file=sys.stderr)
sys.exit(code)
"""


def test_windows_pass_over_stretches_without_frames() -> None:
    from pig.engine.media.segments import spans_for

    times = [0.0, 1.0, 5.0, 1e6, 1e6 + 3]
    spans = spans_for(TEN, 1e6 + 4, times=times)
    assert spans == [(0.0, 10.0), (1e6, 1e6 + 4)]  # 1e5 empty windows never made


# --- discovery -------------------------------------------------------------------------------

def test_default_extensions_cover_common_containers() -> None:
    for ext in (".vob", ".mts", ".m2ts", ".mxf", ".3g2", ".asf", ".f4v", ".m1v", ".m2v", ".dv",
                ".rm", ".gif", ".ogv", ".webm", ".ts"):
        assert ext in VIDEO_EXTENSIONS


def test_globs_are_or_ed_and_braces_expand(tmp_path: Path) -> None:
    for name in ("a.vob", "b.asf", "c.mp4", "d.txt"):
        (tmp_path / name).write_bytes(b"x")
    names = lambda found: sorted(p.name for p in found)  # noqa: E731
    assert names(discover([tmp_path], ["*.vob", "*.asf"])) == ["a.vob", "b.asf"]
    assert names(discover([tmp_path], "*.{vob,asf}")) == ["a.vob", "b.asf"]
    assert expand_braces("x{a,b{c,d}}y") == ["xay", "xbcy", "xbdy"]
    with pytest.raises(PigError, match="unbalanced braces"):
        discover([tmp_path], "*.{vob")
    others: list[Path] = []
    discover([tmp_path], on_other=others.append)
    assert sorted(p.name for p in others) == ["d.txt"]


def test_empty_folder_is_one_line_and_exit_1(bundle: Bundle, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    code, _, err = run_cli(capsys, "index", str(empty), "--bundle", str(bundle.dir),
                             "--index", str(tmp_path / "idx"))
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "no video files to index (1 other files: .txt 1)" in lines[0], err
    assert not (tmp_path / "idx").exists()  # no empty index made
    with pytest.raises(NothingToIndex):
        from pig.engine.ingest.run import index_videos

        index_videos([empty], bundle, tmp_path / "idx")


def test_files_passed_over_are_counted_and_listed_with_v(bundle: Bundle, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    from tests.test_pipeline import make_clips

    make_clips(tmp_path / "clips", n=1)
    for name in ("a.txt", "b.txt", "c.jpg"):
        (tmp_path / "clips" / name).write_text("x")
    argv = ["index", str(tmp_path / "clips"), "--bundle", str(bundle.dir), "--index",
            str(tmp_path / "idx")]
    code, out, _ = run_cli(capsys, *argv)
    assert code == 0
    assert "passed over by extension: 3 files (.txt 2, .jpg 1); -v lists them" in out
    code, out, _ = run_cli(capsys, *argv, "-v")
    assert sum(line.startswith("passed over: ") for line in out.splitlines()) == 3


def test_undecodable_reason_is_true(tmp_path: Path) -> None:
    bad = tmp_path / "x.mp4"
    bad.write_bytes(b"\x00" * 1000)
    with pytest.raises(VideoReadError, match="not a readable media file"):
        list(read_segments(bad, 2, TEN))


# --- previews in a real browser --------------------------------------------------------------

@needs_ffmpeg
def test_every_corpus_file_plays_at_its_span_start_in_chromium(
        corpus: Path, bundle: Bundle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Debian's chromium plays a hit of every indexed corpus file (readyState >= 2) at the
    hit's start, through the page's own play(): the file, an MP4 copy or a transcoded span,
    on the index's time base (the start-offset files too)."""
    from tests.serving import Server
    from tests.test_serve import CHROMIUM, CHROMIUM_ARGS

    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium; .ci/run does)")
    from playwright.sync_api import sync_playwright

    idx = tmp_path / "idx"
    run_cli(capsys, "index", str(corpus), "--bundle", str(bundle.dir), "--index", str(idx),
            "--segment-seconds", "10")
    with VideoIndex.open(idx, view=True) as vi:
        hits = []
        for rec in vi.records("indexed"):
            segs = vi.segments_of(rec.path)
            seg = segs[len(segs) // 2]  # past the start where there are several
            hits.append({"id": rec.key, "index": 0, "rank": 1, "path": rec.path,
                         "start_s": seg.start_s, "end_s": seg.end_s})
    with Server("--index", idx, log=tmp_path / "log") as server, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(server.url + "/")
            for hit in hits:
                name = Path(str(hit["path"])).name
                page.evaluate("hit => play(hit, null)", hit)
                page.wait_for_function(
                    f"document.querySelector('#player').dataset.videoId === '{hit['id']}'")
                page.wait_for_function("document.querySelector('#player').readyState >= 2 || "
                                       "document.querySelector('#preview-note.error')",
                                       timeout=60_000)
                note = page.locator("#preview-note").inner_text()
                assert "cannot" not in note, (name, note)
                seek, at = page.locator("#player").evaluate(
                    "v => [Number(v.dataset.seek), v.currentTime]")
                assert at == pytest.approx(seek, abs=0.1), name
        finally:
            browser.close()


@needs_ffmpeg
def test_renditions_by_kind_start_at_the_first_frame_and_the_cache_is_bounded(
        corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import av

    from pig.engine.media import rendition

    monkeypatch.setenv("PIG_ENGINE_CACHE", str(tmp_path / "cache"))
    kinds = {n: rendition.choose(corpus / n).kind
             for n in ("h264.mp4", "start-10s.mp4", "vfr.mkv", "pts-wrap.ts", "hevc10.mkv",
                       "mpeg2-interlaced.ts", "wmv2.wmv")}
    assert kinds == {"h264.mp4": "original", "start-10s.mp4": "remux", "vfr.mkv": "remux",
                     "pts-wrap.ts": "remux", "hevc10.mkv": "transcode",
                     "mpeg2-interlaced.ts": "transcode", "wmv2.wmv": "transcode"}

    def first_and_last(f: Path) -> tuple[float, float]:
        with av.open(str(f)) as c:
            s = c.streams.video[0]
            times = sorted(float(p.pts * s.time_base) for p in c.demux(s) if p.pts is not None)
        return times[0], times[-1]

    remux = rendition.rendition_file(corpus / "start-10s.mp4", "remux")
    assert first_and_last(remux)[0] == 0.0  # the index's time base: 0 = the first frame
    clip = rendition.rendition_file(corpus / "hevc10.mkv", "transcode", 4.0, 6.0)
    first, last = first_and_last(clip)  # 0 s = the span's start, 2 s of frames
    assert first == 0.0 and 1.9 <= last < 2.0
    assert rendition.rendition_file(corpus / "hevc10.mkv", "transcode", 4.0, 6.0) == clip
    monkeypatch.setattr(rendition, "CACHE_BYTES", 1)  # only the newest is kept
    newest = rendition.rendition_file(corpus / "wmv2.wmv", "transcode", 0.0, 1.0)
    assert sorted((tmp_path / "cache" / "previews").glob("*.mp4")) == [newest]
