"""Ctrl-C on a long file (issue 24): how fast ``pig-engine index`` answers and stops, and what
a rerun saves by resuming.

A 21-minute 64x48 video (1 frame/s, 10 s windows: 126 segments) is indexed by a child
process whose encoder takes ``BATCH_SECONDS`` per batch of 8 (a stand-in for a full-size
model on CPU). After ``WARM_BATCHES`` batches the bench sends SIGINT and times: the note on
stderr (target < 1 s), the exit (target: within one batch); then a second run with two
SIGINTs times the exit after the second (target < 1 s, the encoder still busy). Last, the
rerun's encoder batches against a fresh index's: the ratio is the work resuming saves.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pig.engine.bundle import Bundle
from pig.engine.index import VideoIndex
from pig.engine.ingest.run import index_videos
from pig.engine.media.segments import Segmenting
from tests.fake_bundle import FakeSizes, write_bundle

REPO = Path(__file__).resolve().parent.parent
BATCH_SECONDS = 3.0
WARM_BATCHES = 3
SLOW = f"""
import sys, time
from pig.engine.ingest import local_runner
real = local_runner.open_backend
def slow(*a, **k):
    enc = real(*a, **k)
    inner = enc.encode_video
    def encode_video(x):
        print("ENCODE", flush=True, file=sys.stderr)
        time.sleep({BATCH_SECONDS})
        return inner(x)
    enc.encode_video = encode_video
    return enc
local_runner.open_backend = slow
sys.argv = ["pig-engine"] + sys.argv[1:]
from pig.startup import pig_engine
pig_engine()
"""


def long_file() -> Path:
    sys.path.insert(0, str(REPO / "scripts"))
    import media_corpus

    return media_corpus.build(media_corpus.default_dir()) / "long-21min.mp4"


def run(clip: Path, bundle: Path, idx: Path, signals: int) -> tuple[float, float, float]:
    """(seconds from the first SIGINT to the note, to the exit after the last SIGINT)."""
    cmd = [sys.executable, "-c", SLOW, "index", str(clip), "--bundle", str(bundle), "--index",
           str(idx), "--segment-seconds", "10", "--batch-size", "8", "--commit-every", "0"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            cwd=REPO)
    assert proc.stderr is not None
    seen = 0
    for line in proc.stderr:
        seen += line.startswith("ENCODE")
        if seen == WARM_BATCHES + 1:
            break
    t0 = time.perf_counter()
    proc.send_signal(signal.SIGINT)
    for line in proc.stderr:
        if line.startswith("SIGINT"):
            break
    note = time.perf_counter() - t0
    if signals == 2:
        t0 = time.perf_counter()
        proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=120)
    return note, time.perf_counter() - t0, float(proc.returncode)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        bundle = write_bundle(root / "b", FakeSizes(frames=4, size=32, vocab=49408, length=16))
        clip = long_file()
        note, stop, code = run(clip, bundle, root / "one", signals=1)
        print(f"first Ctrl-C: note after {note:.2f} s (target < 1 s), exit {code:.0f} after "
              f"{stop:.2f} s (one batch = {BATCH_SECONDS:g} s)")
        note, stop, code = run(clip, bundle, root / "two", signals=2)
        print(f"second Ctrl-C: exit {code:.0f} after {stop:.2f} s (target < 1 s, encoder busy)")
        with VideoIndex.open(root / "one", view=True) as vi:
            [(_, done_s, committed, total)] = vi.partial()
        b = Bundle.load(bundle)
        report = index_videos([clip], b, root / "one")
        print(f"after the first Ctrl-C: {committed} of {total} segments committed (up to "
              f"{done_s:.0f} s); the rerun encoded {report.segments} segments, "
              f"{report.segments / total:.2f} of a fresh run's {total}")
        fresh = index_videos([clip], b, root / "fresh", segmenting=Segmenting("fixed", 10.0))
        assert fresh.segments == total


if __name__ == "__main__":
    main()
