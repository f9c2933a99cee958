"""Long files commit their segments as they are encoded and resume where they stopped; Ctrl-C
stops after the batch in the encoder (the first) or at once (the second), keeping every
commit. The stand-in encoder encodes one batch per line the test writes to its stdin, so
every step is driven by events, never by timing."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pig.engine.bundle import Bundle
from pig.engine.index import VideoIndex
from pig.engine.ingest.run import index_videos
from pig.engine.media.segments import Segmenting
from pig.engine.query.engine import QueryEngine
from tests import clipgen
from tests.fake_bundle import write_bundle
from tests.test_hostile import HANG, REPO, SIZES, run_cli

SEGMENTS = Segmenting(mode="fixed", seconds=0.2)  # a 4 s clip: 20 segments
GATED_ENCODER = """
import sys
from pig.engine.ingest import local_runner
real = local_runner.open_backend
def gated(*a, **k):
    enc = real(*a, **k)
    inner = enc.encode_video
    def encode_video(x):
        print("ENCODE", len(x), file=sys.stderr, flush=True)
        sys.stdin.readline()  # the test lets this batch through
        return inner(x)
    enc.encode_video = encode_video
    return enc
local_runner.open_backend = gated
sys.argv = ["pig-engine"] + sys.argv[1:]
from pig.startup import pig_engine
pig_engine()
"""


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    return Bundle.load(write_bundle(tmp_path_factory.mktemp("bundle") / "b", SIZES))


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("long")
    return clipgen.make_clip(folder / "long.mp4", size=(32, 32), n_frames=100, gop=10)


def start(bundle: Bundle, clip: Path, idx: Path, *extra: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-c", GATED_ENCODER, "index", str(clip), "--bundle",
           str(bundle.dir), "--index", str(idx), "--batch-size", "2", "--workers", "1",
           "--segment-seconds", "0.2", "--commit-every", "0", *extra]
    return subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO)


def next_line(proc: subprocess.Popen[str], prefix: str) -> str:
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.startswith(prefix):
            return line
    raise AssertionError(f"no line {prefix!r} before the end")


def release(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.write("\n")
    proc.stdin.flush()


def scores_by_span(idx: Path, bundle: Bundle) -> dict[tuple[float, float | None], float]:
    """Each segment's score for one fixed query (exact search): equal scores, equal vectors."""
    with QueryEngine(idx, bundle.dir) as s:
        hits = s.search(["a red circle"], k=100, group_by="segment", exact=True)[0]
    return {(h.start_s, h.end_s): h.score for h in hits}


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_first_signal_commits_the_batch_in_the_encoder_and_a_rerun_resumes(
        bundle: Bundle, long_clip: Path, tmp_path: Path, signum: int,
        capsys: pytest.CaptureFixture[str]) -> None:
    idx = tmp_path / "idx"
    proc = start(bundle, long_clip, idx)
    next_line(proc, "ENCODE")
    release(proc)  # batch 1 done (and committed: --commit-every 0)
    next_line(proc, "ENCODE")  # batch 2 is in the encoder
    proc.send_signal(signum)
    note = next_line(proc, signal.Signals(signum).name)  # said while the encoder still works
    assert "Ctrl-C again to stop now" in note
    release(proc)
    out, err = proc.communicate(timeout=HANG)
    assert proc.returncode == 128 + signum, err
    assert "ENCODE" not in err  # no batch after the one in the encoder
    assert "(1 of them in part)" in out
    with VideoIndex.open(idx, view=True) as vi:
        [(_path, done_s, segments, total)] = vi.partial()
        assert (segments, total) == (4, 20) and done_s == pytest.approx(0.8)
    _code, out, _ = run_cli(capsys, "info", "--index", str(idx))
    assert "partial" in out and "4 of 20 segments, up to 00:00" in out
    with QueryEngine(idx, bundle.dir) as s:  # the committed segments are found
        hits = s.search(["a red circle"], k=10, group_by="segment")[0]
    assert len(hits) == 4 and {h.path for h in hits} == {str(long_clip)}

    report = index_videos([long_clip], bundle, idx)  # resumes after segment 4
    assert (report.indexed, report.segments) == (1, 16)
    with VideoIndex.open(idx, view=True) as vi:
        assert vi.partial() == []
        assert [s.ordinal for s in vi.segments_of(long_clip)] == list(range(20))
    fresh = tmp_path / "fresh"
    index_videos([long_clip], bundle, fresh, segmenting=SEGMENTS)
    got, want = scores_by_span(idx, bundle), scores_by_span(fresh, bundle)
    assert got.keys() == want.keys() and len(got) == 20
    for span, score in want.items():
        assert got[span] == pytest.approx(score, abs=1e-6), span


def test_second_signal_exits_at_once_keeping_every_commit(bundle: Bundle, long_clip: Path,
                                                         tmp_path: Path) -> None:
    idx = tmp_path / "idx"
    proc = start(bundle, long_clip, idx)
    next_line(proc, "ENCODE")
    release(proc)  # batch 1 committed
    next_line(proc, "ENCODE")  # batch 2 stays in the encoder: never released
    proc.send_signal(signal.SIGINT)
    next_line(proc, "SIGINT")
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=HANG)  # returns although the encoder never does
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    with VideoIndex.open(idx, view=True) as vi:
        [(_, _, segments, total)] = vi.partial()
    assert (segments, total) == (2, 20)
