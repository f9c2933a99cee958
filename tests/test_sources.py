"""Videos in object storage and behind URLs: a real S3-compatible server (moto, server mode)
and a local HTTP server with Range support, both on 127.0.0.1 and started by the tests."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from pig.engine.bundle import Bundle
from pig.engine.index import VideoIndex
from pig.engine.ingest.run import index_videos
from pig.engine.query.engine import QueryEngine
from tests.test_cli import run
from tests.test_pipeline import QUERIES, fake_bundle, make_clips

__all__ = ["fake_bundle"]
pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def s3() -> Iterator[object]:
    """A moto S3 server on 127.0.0.1; the standard AWS variables point fsspec (and the
    subprocesses) at it."""
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://{host}:{port}"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import fsspec

    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    try:
        yield fs
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def scores(idx: Path) -> dict[str, np.ndarray]:
    """Each indexed file's scores against :data:`QUERIES`, by file name."""
    with QueryEngine(idx) as s:
        rows = s.search(QUERIES, k=100, exact=True)
    out: dict[str, list[float]] = {}
    for hits in rows:
        for h in hits:
            out.setdefault(h.path.rsplit("/", 1)[1], []).append(h.score)
    return {k: np.asarray(v) for k, v in out.items()}


def records(idx: Path) -> dict[str, tuple[int, str]]:
    with VideoIndex.open(idx) as vi:
        return {r.path: (r.key, r.status) for r in vi.records()}


def test_s3_index_sync_replace_delete_move(fake_bundle: Bundle, s3: object, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    fs = s3
    fs.mkdir("videos")  # type: ignore[attr-defined]
    clips = make_clips(tmp_path / "clips", n=4)
    for c in clips:
        fs.put_file(str(c), f"videos/lib/{c.name}")  # type: ignore[attr-defined]
    fs.pipe_file("videos/lib/bad.mp4", b"not a video")  # type: ignore[attr-defined]
    fs.pipe_file("videos/lib/notes.txt", b"not a video name")  # type: ignore[attr-defined]
    idx, local = tmp_path / "idx", tmp_path / "local"

    report = index_videos(["s3://videos/lib"], fake_bundle, idx)
    assert (report.files, report.indexed) == (5, 4)
    assert [p for p, _ in report.failed] == ["s3://videos/lib/bad.mp4"]
    index_videos([tmp_path / "clips"], fake_bundle, local)
    got, want = scores(idx), scores(local)
    assert got.keys() == want.keys()
    for name in want:  # the same bytes give the same vectors as the local files
        np.testing.assert_array_equal(got[name], want[name])
    with VideoIndex.open(idx) as vi, VideoIndex.open(local) as lv:
        for c in clips:
            rec = vi.lookup(f"s3://videos/lib/{c.name}")
            assert rec.digest == lv.lookup(c).digest and rec.etag and rec.size == c.stat().st_size

    again = index_videos(["s3://videos/lib"], fake_bundle, idx)
    assert (again.indexed, dict(again.skipped)) == (0, {"unchanged": 4, "failed": 1})

    # replaced with other bytes of the same size (same second: the ETag tells)
    key0 = "videos/lib/" + clips[0].name
    data = bytearray(clips[0].read_bytes())
    data[-1] ^= 0xFF
    fs.pipe_file(key0, bytes(data))  # type: ignore[attr-defined]
    with VideoIndex.open(idx) as vi:
        assert vi.plan("s3://" + key0).reason == "changed"
    fs.put_file(str(make_clips(tmp_path / "other", n=1, offset=6)[0]), key0)  # type: ignore
    keys = {p: k for p, (k, _) in records(idx).items()}
    report = index_videos(["s3://videos/lib"], fake_bundle, idx, sync=True)
    assert report.indexed == 1 and records(idx)["s3://" + key0][0] == keys["s3://" + key0]

    # an object deleted and one moved (copied to a new key, old key deleted)
    fs.rm_file("videos/lib/" + clips[1].name)  # type: ignore[attr-defined]
    fs.copy("videos/lib/" + clips[2].name, "videos/lib/moved/x.mp4")  # type: ignore
    fs.rm_file("videos/lib/" + clips[2].name)  # type: ignore[attr-defined]
    report = index_videos(["s3://videos/lib"], fake_bundle, idx, sync=True)
    assert (report.moved, report.removed, report.indexed) == (1, 1, 0)
    now = records(idx)
    assert now["s3://videos/lib/moved/x.mp4"][0] == keys["s3://videos/lib/" + clips[2].name]
    assert "s3://videos/lib/" + clips[1].name not in now

    # the library moves to another bucket: relocate, then sync finds nothing to do
    fs.mkdir("archive")  # type: ignore[attr-defined]
    for name in fs.find("videos/lib"):  # type: ignore[attr-defined]
        fs.copy(name, "archive/" + name.split("/", 1)[1])  # type: ignore[attr-defined]
    code, out, _ = run(capsys, "relocate", "--from", "s3://videos", "--to", "s3://archive",
                       "--index", idx)
    assert code == 0 and "relocated 4 files from s3://videos to s3://archive" in out
    report = index_videos(["s3://archive/lib"], fake_bundle, idx, sync=True)
    assert (report.indexed, report.moved, report.removed) == (0, 0, 0)
    code, out, _ = run(capsys, "relocate", "--from", "s3://archive", "--to", "s3://videos",
                       "--index", idx)
    assert code == 0

    code, out, _ = run(capsys, "remove", "--index", idx, "s3://videos/lib/moved")
    assert code == 0 and out.strip() == "removed s3://videos/lib/moved/x.mp4"
    code, out, _ = run(capsys, "info", "--index", idx, "--files", "--json")
    assert {json.loads(ln)["path"] for ln in out.splitlines()} == {
        "s3://" + key0, "s3://videos/lib/" + clips[3].name, "s3://videos/lib/bad.mp4"}


BLOCKING_ENCODER = """
import sys
from pig.engine.ingest import local_runner
real = local_runner.open_backend
calls = [0]
def blocking(*a, **k):
    enc = real(*a, **k)
    inner = enc.encode_video
    def encode_video(x):
        calls[0] += 1
        if calls[0] == 2:  # the first file is committed (--commit-every 0); wait to be killed
            print("BLOCKED", file=sys.stderr, flush=True)
            sys.stdin.read()
        return inner(x)
    enc.encode_video = encode_video
    return enc
local_runner.open_backend = blocking
sys.argv = ["pig-engine"] + sys.argv[1:]
from pig.startup import pig_engine
pig_engine()
"""


def test_s3_run_killed_and_resumed(fake_bundle: Bundle, s3: object, tmp_path: Path) -> None:
    fs = s3
    fs.mkdir("resume")  # type: ignore[attr-defined]
    for c in make_clips(tmp_path / "clips", n=5):
        fs.put_file(str(c), f"resume/{c.name}")  # type: ignore[attr-defined]
    idx = tmp_path / "idx"
    cmd = [sys.executable, "-c", BLOCKING_ENCODER, "index", "s3://resume", "--bundle",
           str(fake_bundle.dir), "--index", str(idx), "--batch-size", "1", "--workers", "1",
           "--commit-every", "0"]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.startswith("BLOCKED"):
                break
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert list(records(idx).values()) == [(1, "indexed")]  # the file committed before
    rerun = index_videos(["s3://resume"], fake_bundle, idx)
    assert (rerun.indexed, dict(rerun.skipped)) == (4, {"unchanged": 1})
    assert len(records(idx)) == 5


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with single ``Range: bytes=a-b`` requests answered 206."""

    def log_message(self, *args: object) -> None:
        pass

    def send_head(self):  # type: ignore[no-untyped-def]
        rng = self.headers.get("Range")
        path = Path(self.translate_path(self.path))
        if rng is None or not path.is_file():
            return super().send_head()
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng)
        size = path.stat().st_size
        start = int(m.group(1)) if m else 0
        end = min(int(m.group(2)) if m and m.group(2) else size - 1, size - 1)
        f = path.open("rb")
        f.seek(start)
        self.send_response(206)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Last-Modified", self.date_time_string(int(path.stat().st_mtime)))
        self.end_headers()
        return _Limited(f, end - start + 1)


class _Limited:
    def __init__(self, f: object, n: int) -> None:
        self.f, self.n = f, n

    def read(self, size: int = -1) -> bytes:
        size = self.n if size < 0 else min(size, self.n)
        data = self.f.read(size)  # type: ignore[attr-defined]
        self.n -= len(data)
        return data

    def close(self) -> None:
        self.f.close()  # type: ignore[attr-defined]


@contextlib.contextmanager
def http_folder(folder: Path) -> Iterator[str]:
    """``folder`` served over HTTP (single ranges) on 127.0.0.1; yields its base URL."""
    pytest.importorskip("aiohttp")
    handler = lambda *a: _RangeHandler(*a, directory=str(folder))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_http_url(fake_bundle: Bundle, tmp_path: Path) -> None:
    clips = make_clips(tmp_path / "site", n=2)
    with http_folder(tmp_path / "site") as base:
        urls = [f"{base}/{c.name}" for c in clips]
        idx, local = tmp_path / "idx", tmp_path / "local"
        report = index_videos(urls, fake_bundle, idx)
        assert (report.indexed, report.failed) == (2, [])
        index_videos(clips, fake_bundle, local)
        got, want = scores(idx), scores(local)
        for name in want:
            np.testing.assert_array_equal(got[name], want[name])
        assert index_videos(urls, fake_bundle, idx).skipped == {"unchanged": 2}


def test_s3_media_proxied_or_redirected(fake_bundle: Bundle, s3: object, tmp_path: Path) -> None:
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("fastapi")
    from tests.serving import Server

    fs = s3
    fs.mkdir("media")  # type: ignore[attr-defined]
    clip = make_clips(tmp_path / "clips", n=1)[0]
    fs.put_file(str(clip), "media/a.mp4")  # type: ignore[attr-defined]
    idx = tmp_path / "idx"
    index_videos(["s3://media/a.mp4"], fake_bundle, idx)
    (key, _), = records(idx).values()
    data = clip.read_bytes()
    with Server("--index", idx, log=tmp_path / "serve.log") as s:
        media = f"{s.url}/v1/videos/{key}/media"
        r = httpx.get(media)
        assert (r.status_code, r.content) == (200, data)
        assert r.headers["content-type"] == "video/mp4"
        r = httpx.get(media, headers={"Range": "bytes=10-19"})
        assert (r.status_code, r.content) == (206, data[10:20])
        assert r.headers["content-range"] == f"bytes 10-19/{len(data)}"
        r = httpx.get(media, headers={"Range": "bytes=-5"})
        assert (r.status_code, r.content) == (206, data[-5:])
        assert httpx.get(media, headers={"Range": f"bytes={len(data)}-"}).status_code == 416
    with Server("--index", idx, "--media-redirect", log=tmp_path / "serve2.log") as s:
        media = f"{s.url}/v1/videos/{key}/media"
        r = httpx.get(media)
        assert r.status_code == 307 and "Signature=" in r.headers["location"]
        assert httpx.get(r.headers["location"]).content == data
        fs.pipe_file("media/a.mp4", data[:-1] + bytes([data[-1] ^ 0xFF]))  # type: ignore
        r = httpx.get(media)
        assert r.status_code == 410 and "changed since it was indexed" in r.text


def test_watch_a_bucket_prefix(fake_bundle: Bundle, s3: object, tmp_path: Path) -> None:
    from tests.test_watch import WatchProcess, committed

    fs = s3
    fs.mkdir("cams")  # type: ignore[attr-defined]
    clips = make_clips(tmp_path / "clips", n=4)
    for c in clips[:3]:
        fs.put_file(str(c), f"cams/day/{c.name}")  # type: ignore[attr-defined]
    idx = tmp_path / "idx"
    w = WatchProcess(["s3://cams/day", "--bundle", fake_bundle.dir, "--index", idx,
                      "--settle-seconds", 3, "--poll-seconds", 0.2, "--commit-every", 0],
                     tmp_path / "watch.log")
    try:
        w.line(lambda ln: ln.startswith("watching 1 folders (polling every 0.2 s"))
        keys = {p: v[0] for p, v in committed(idx).items()}
        assert sorted(keys) == [f"s3://cams/day/{c.name}" for c in clips[:3]]
        fs.put_file(str(clips[3]), f"cams/day/{clips[3].name}")  # type: ignore[attr-defined]
        w.until(lambda: len(committed(idx)) == 4)
        # a move in a bucket is a copy and a delete: the watcher, stopped meanwhile, sees
        # both in its next listing, well within the settle time
        w.proc.send_signal(signal.SIGSTOP)
        fs.copy(f"cams/day/{clips[0].name}", "cams/day/renamed.mp4")  # type: ignore
        fs.rm_file(f"cams/day/{clips[0].name}")  # type: ignore[attr-defined]
        fs.rm_file(f"cams/day/{clips[1].name}")  # type: ignore[attr-defined]
        w.proc.send_signal(signal.SIGCONT)
        want = {f"s3://cams/day/{n}" for n in ("renamed.mp4", clips[2].name, clips[3].name)}
        w.until(lambda: set(committed(idx)) == want)
        assert committed(idx)["s3://cams/day/renamed.mp4"][0] == \
            keys[f"s3://cams/day/{clips[0].name}"]
        w.proc.send_signal(signal.SIGTERM)
        assert w.proc.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        w.close()


def test_unreachable_store_is_one_line(fake_bundle: Bundle, tmp_path: Path) -> None:
    """A store that cannot be reached: one line naming the URL, exit 3 (the environment)."""
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}
    done = subprocess.run([sys.executable, "-m", "pig.cli.engine", "sync", "s3://nowhere/x",
                           "--bundle", str(fake_bundle.dir), "--index", str(tmp_path / "idx")],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().startswith("pig-engine: error: s3://nowhere/x: cannot list (")
