"""``pig-engine index --runner ray`` on a real local Ray (2 CPUs), one session for the module.

Ray vs local equality, bad files, a killed encoder actor, a killed or interrupted driver.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pig.engine.bundle import Bundle
from pig.engine.index import VideoIndex
from pig.engine.ingest.options import PipelineOptions
from pig.engine.ingest.report import IndexReport
from pig.engine.ingest.run import index_videos
from pig.engine.media.segments import Segmenting
from pig.engine.query.engine import QueryEngine
from tests import clipgen
from tests.test_cli import run, user_error
from tests.test_pipeline import QUERIES, clip_dir, fake_bundle, make_clips

__all__ = ["clip_dir", "fake_bundle"]  # fixtures shared with test_pipeline

ray = pytest.importorskip("ray")
from pig.engine.ingest.ray_runner import INSTALL, RayRunner  # noqa: E402

SCORE_TOL = 1e-5  # f32 storage; batched vs other-batched encoding differs by fp32 reduction order


@pytest.fixture(scope="module")
def ray_session() -> Iterator[str]:
    """A local Ray of 2 CPUs for the module (its temp dir under /tmp); yields its address.
    Afterwards no process of it may survive."""
    temp = tempfile.mkdtemp(prefix="pigray-", dir="/tmp")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=temp,
             object_store_memory=200 * 2**20, logging_level="warning")
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
    deadline = time.monotonic() + 20
    while (left := _processes(temp)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"Ray processes survived the tests: {left}"


def _processes(needle: str) -> list[int]:
    """Pids whose command line mentions ``needle``."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if needle.encode() in (d / "cmdline").read_bytes():
                    pids.append(int(d.name))
            except OSError:
                continue
    return pids


def _encoder_actors() -> list[int]:
    """Pids of this session's encoder actors: children of its raylet, by process title."""
    raylet = ray._private.worker._global_node.all_processes["raylet"][0].process.pid
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            title = (d / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == raylet and b"_Encoder" in title:
            out.append(int(d.name))
    return out


def _scores(index: Path) -> dict[tuple[str, str, int, float, float | None], float]:
    """Every segment's score per query, keyed by query, path, segment and span."""
    with QueryEngine(index) as s:
        rows = s.search(QUERIES, k=1000, exact=True, group_by="segment")
    return {(q, h.path, h.segment, h.start_s, h.end_s): h.score
            for q, hits in zip(QUERIES, rows, strict=True) for h in hits}


def _committed(index: Path) -> int:
    """Indexed files in the last commit (0 before the first)."""
    try:
        with VideoIndex.open(index, view=True) as vi:
            return vi.counts()["indexed"]
    except Exception:
        return 0


def test_ray_equals_local_segments_and_bad_files(ray_session: str, fake_bundle: Bundle,
                                                 tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    good = make_clips(folder, n=4)  # one segment each
    long = [clipgen.make_clip(folder / f"long{i}.mp4", size=(48, 40), n_frames=250 - 40 * i,
                              fps=25) for i in range(2)]  # 10 s, 8.4 s
    clipgen.make_corrupt(long[0], folder / "corrupt.mp4", start=0.3)
    clipgen.make_zero_byte(folder / "zero.mp4")
    clipgen.make_not_video(folder / "notes.mkv")
    setting = Segmenting(mode="fixed", seconds=2)
    local = index_videos([folder], fake_bundle, tmp_path / "local", dtype="f32",
                         segmenting=setting, options=PipelineOptions(batch_size=4))
    opts = PipelineOptions(batch_size=3)
    got = index_videos([folder], fake_bundle, tmp_path / "ray", dtype="f32", segmenting=setting,
                       options=opts, runner=RayRunner())
    assert got.segments == local.segments == len(good) + 5 + 4  # 8.4 s: the rest joins
    assert (got.files, got.indexed) == (local.files, local.indexed) == (9, local.indexed)
    assert sorted(got.failed) == sorted(local.failed) and len(got.failed) >= 2  # same reasons
    want, have = _scores(tmp_path / "local"), _scores(tmp_path / "ray")
    assert have.keys() == want.keys()  # same files, segments and spans
    assert len(want) == len(QUERIES) * local.segments
    assert max(abs(have[k] - want[k]) for k in want) <= SCORE_TOL
    with VideoIndex.open(tmp_path / "ray", view=True) as vi:
        assert vi.counts()["vectors"] == local.segments
        assert vi.manifest.bundle_producers[-1]["runner"] == "ray"
    # the driver plans against the catalog as the local pipeline does
    again = index_videos([folder], fake_bundle, tmp_path / "ray", options=opts,
                         runner=RayRunner())
    assert (again.indexed, dict(again.skipped)) == (0, {"unchanged": local.indexed,
                                                        "failed": len(local.failed)})


def test_killed_encoder_actor_is_restarted(ray_session: str, fake_bundle: Bundle,
                                           tmp_path: Path) -> None:
    n = 30
    make_clips(tmp_path / "clips", n=n)
    idx = tmp_path / "idx"
    result: list[IndexReport | BaseException] = []

    def target() -> None:
        try:
            result.append(index_videos([tmp_path / "clips"], fake_bundle, idx,
                                       runner=RayRunner(),
                                       options=PipelineOptions(batch_size=1, commit_seconds=0)))
        except BaseException as err:
            result.append(err)

    worker = threading.Thread(target=target)
    worker.start()
    deadline = time.monotonic() + 120
    while (done := _committed(idx)) == 0 and worker.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    actors = _encoder_actors()
    assert len(actors) == 1 and 0 < done < n, (actors, done)
    os.kill(actors[0], signal.SIGKILL)
    restarted = False
    while worker.is_alive() and time.monotonic() < deadline:
        restarted = restarted or bool(set(_encoder_actors()) - set(actors))
        time.sleep(0.1)
    worker.join(60)
    assert restarted  # Ray started a new encoder actor and went on
    report = result[0]
    assert isinstance(report, IndexReport), report
    assert (report.indexed, report.failed) == (n, [])  # each file once, none lost
    with VideoIndex.open(idx, view=True) as vi:
        assert vi.counts() == {"vectors": n, "indexed": n, "failed": 0}


def _driver(ray_session: str, fake_bundle: Bundle, clips: Path, idx: Path
            ) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "pig.cli.engine", "index", str(clips), "--bundle",
            str(fake_bundle.dir), "--index", str(idx), "--runner", "ray", "--ray-address",
            ray_session, "--batch-size", "1", "--commit-every", "0"]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "ctrl-c"])
def test_killed_or_interrupted_driver_resumes(ray_session: str, fake_bundle: Bundle,
                                              tmp_path: Path, sig: signal.Signals) -> None:
    clips, n = tmp_path / "clips", 30
    make_clips(clips, n=n)
    idx = tmp_path / "idx"
    proc = _driver(ray_session, fake_bundle, clips, idx)
    deadline = time.monotonic() + 120
    while _committed(idx) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=120)
    if sig == signal.SIGINT:
        assert proc.returncode == 130, out
        assert "interrupted:" in out and "Traceback" not in out
    else:
        assert proc.returncode == -signal.SIGKILL
    kept = _committed(idx)
    assert 2 <= kept < n, (kept, out)
    # the rerun completes the rest: nothing indexed twice, nothing lost
    rerun = index_videos([clips], fake_bundle, idx, runner=RayRunner())
    assert (rerun.indexed, rerun.failed, dict(rerun.skipped)) == (n - kept, [],
                                                                  {"unchanged": kept})
    with VideoIndex.open(idx, view=True) as vi:
        assert vi.counts() == {"vectors": n, "indexed": n, "failed": 0}


def test_ray_reads_urls(ray_session: str, fake_bundle: Bundle, tmp_path: Path) -> None:
    """The Ray engine's decode tasks read the same sources (here http:// URLs)."""
    from tests.test_sources import http_folder

    clips = make_clips(tmp_path / "site", n=3)
    with http_folder(tmp_path / "site") as base:
        urls = [f"{base}/{c.name}" for c in clips]
        got = index_videos(urls, fake_bundle, tmp_path / "ray", dtype="f32", runner=RayRunner())
    want = index_videos(clips, fake_bundle, tmp_path / "local", dtype="f32")
    assert (got.indexed, got.failed) == (want.indexed, want.failed) == (3, [])
    with QueryEngine(tmp_path / "ray") as a, QueryEngine(tmp_path / "local") as b:
        for ha, hb in zip(a.search(QUERIES, k=3, exact=True), b.search(QUERIES, k=3, exact=True),
                          strict=True):
            assert [h.path.rsplit("/", 1)[1] for h in ha] == [Path(h.path).name for h in hb]
            assert max(abs(x.score - y.score) for x, y in zip(ha, hb, strict=True)) <= SCORE_TOL


def test_without_ray_one_line(fake_bundle: Bundle, clip_dir: Path, tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    code, _, err = run(capsys, "index", clip_dir, "--bundle", fake_bundle.dir, "--index",
                       tmp_path / "idx", "--runner", "ray")
    assert code == 2
    assert user_error(err) == ("pig-engine: error: --runner ray needs Ray Data, not installed "
                               f"here: {INSTALL}")
    assert not (tmp_path / "idx").exists()


def test_bundle_unreadable_on_a_node_is_one_error(ray_session: str, fake_bundle: Bundle,
                                                  clip_dir: Path, tmp_path: Path) -> None:
    from pig.engine.ingest.ray_runner import SHARED
    from pig.errors import PigError

    moved = Bundle.load(shutil.copytree(fake_bundle.dir, tmp_path / "b"))
    shutil.rmtree(moved.dir)  # loaded here, gone where the workers look
    with pytest.raises(PigError) as err:
        index_videos([clip_dir], moved, tmp_path / "idx", runner=RayRunner())
    assert str(err.value).startswith(f"{moved.dir}: ") and str(err.value).endswith(SHARED)
    assert "\n" not in str(err.value)


def _own_ray_driver(fake_bundle: Bundle, clips: Path, idx: Path) -> subprocess.Popen[str]:
    """A driver that starts its own local Ray (no --ray-address)."""
    argv = [sys.executable, "-m", "pig.cli.engine", "index", str(clips), "--bundle",
            str(fake_bundle.dir), "--index", str(idx), "--runner", "ray", "--batch-size", "1",
            "--commit-every", "0", "--no-progress"]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _record_of(pid: int) -> dict[str, Any]:
    """The local-Ray record of the driver ``pid`` (once it wrote one)."""
    from pig.engine.ingest.ray_local import records_dir, start_time

    path = records_dir() / f"{pid}-{start_time(pid)}.json"
    deadline = time.monotonic() + 120
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return json.loads(path.read_text())


def _alive(procs: list[list[int]]) -> list[int]:
    from pig.engine.ingest.ray_local import start_time

    return [pid for pid, started in procs if start_time(pid) == started]


def _first_commit(proc: subprocess.Popen[str], idx: Path) -> None:
    deadline = time.monotonic() + 180
    while _committed(idx) < 1 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None and _committed(idx) >= 1


@pytest.mark.slow
def test_a_killed_driver_leaves_no_ray_behind(fake_bundle: Bundle, tmp_path: Path) -> None:
    """kill -9 of a driver that started its own Ray: its agents and workers outlive it, and
    the next run stops them (one line) before it starts its own."""
    clips, n = tmp_path / "clips", 12
    make_clips(clips, n=n)
    idx = tmp_path / "idx"
    proc = _own_ray_driver(fake_bundle, clips, idx)
    record = _record_of(proc.pid)
    _first_commit(proc, idx)
    proc.kill()
    proc.communicate(timeout=60)
    record = _record_of_any(proc.pid) or record  # with the workers found since
    rerun = _own_ray_driver(fake_bundle, clips, idx)
    out, _ = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, out
    left = _alive(record["procs"])
    assert not left, f"processes of the killed run's Ray are alive: {left}"
    assert _record_of_any(proc.pid) is None and _record_of_any(rerun.pid) is None
    with VideoIndex.open(idx, view=True) as vi:
        assert vi.counts() == {"vectors": n, "indexed": n, "failed": 0}


@pytest.mark.slow
def test_a_dead_ray_agent_is_one_line_and_not_exit_1(fake_bundle: Bundle,
                                                     tmp_path: Path) -> None:
    """The runtime-env agent killed mid-run (as by an OOM killer): exit 3 with one line
    naming it, what was committed kept, nothing of that Ray left, the rerun does the rest."""
    clips, n = tmp_path / "clips", 12
    make_clips(clips, n=n)
    idx = tmp_path / "idx"
    proc = _own_ray_driver(fake_bundle, clips, idx)
    record = _record_of(proc.pid)
    _first_commit(proc, idx)
    raylet = record["raylet"][0]
    agent = next(p for p in _processes("") if _parent(p) == raylet and
                 Path(f"/proc/{p}/cmdline").read_bytes().startswith(b"ray::RuntimeEnvAgent"))
    os.kill(agent, signal.SIGKILL)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 3, out
    assert f"runtime env agent (pid {agent}) died mid-run" in out and "Traceback" not in out
    kept = _committed(idx)
    assert kept >= 1
    record = _record_of_any(proc.pid) or record
    deadline = time.monotonic() + 30
    while _alive(record["procs"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(record["procs"])
    rerun = index_videos([clips], fake_bundle, idx, runner=RayRunner())
    assert rerun.indexed == n - kept and dict(rerun.skipped) == {"unchanged": kept}


def _parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def _record_of_any(pid: int) -> dict[str, Any] | None:
    from pig.engine.ingest.ray_local import records_dir

    for path in records_dir().glob(f"{pid}-*.json"):
        return json.loads(path.read_text())
    return None
