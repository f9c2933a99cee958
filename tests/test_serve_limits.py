"""What a hostile or broken client can do to ``pig-engine serve``, over real TCP on loopback:
slow and idle connections, a header drip, parked bodies, costly requests, foreign Host and
Origin names. Every wait is on a socket event (an answer, a close) with a bound, never a
sleep; timings are bench/bench_limits.py's."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pig.engine.bundle import Bundle
from pig.engine.limits import MAX_K, MAX_RESULTS_PER_REQUEST
from pig.engine.serve.budget import CostBudget, TooCostly
from pig.engine.serve.connections import BodyPool, ConnectionLimits, GuardedProtocol
from pig.engine.serve.hosts import HostCheck, host_name
from tests.serving import Server, wait_until
from tests.test_pipeline import fake_bundle, make_clips

__all__ = ["fake_bundle"]

MAX_CONNECTIONS = 64
TIMEOUT_S = 2.0  # --client-timeout of the module's server
WAIT_S = 30.0  # the most any socket read here waits (a bound, reached only on failure)


@pytest.fixture(scope="module")
def index(fake_bundle: Bundle, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Clips cut in 0.1 s segments: a search by segment with a large k has a long answer."""
    clips = make_clips(tmp_path_factory.mktemp("limit_clips"), n=6)
    idx = tmp_path_factory.mktemp("limits") / "idx"
    done = subprocess.run([sys.executable, "-m", "pig.cli.engine", "index", *map(str, clips),
                           "--bundle", str(fake_bundle.dir), "--index", str(idx),
                           "--segment-seconds", "0.1", "--no-progress"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return idx


@pytest.fixture(scope="module")
def server(index: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("limits_log") / "server.log"
    with Server("--index", index, "--max-connections", MAX_CONNECTIONS, "--client-timeout",
                TIMEOUT_S, "--allowed-host", "search.example", log=log) as s:
        yield s
    assert "Traceback" not in s.output()


def address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def connect(url: str) -> socket.socket:
    sock = socket.create_connection(address(url), timeout=WAIT_S)
    return sock


def answer(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (b"RESET" if the server
    reset it before its answer could be read: it closed with our bytes unread)."""
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        return b"".join(chunks) or b"RESET"
    return b"".join(chunks)


def status(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1]) if raw.startswith(b"HTTP/1.1 ") else 0


def light_search(url: str, **headers: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/search", json={"query": "red", "k": 2}, headers=headers,
                      timeout=WAIT_S)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_slow_connections_make_room_for_a_client_that_sends(server: Server) -> None:
    """At --max-connections, a new connection takes the place of the oldest one that has not
    sent its request head: however many slow connections are held, a request gets in."""
    with contextlib.ExitStack() as stack:
        idle = [stack.enter_context(connect(server.url)) for _ in range(3 * MAX_CONNECTIONS)]
        assert light_search(server.url).status_code == 200
        raws = [answer(s) for s in idle[:MAX_CONNECTIONS]]  # the oldest made room
        assert all(status(r) == 408 and b"--max-connections" in r for r in raws), raws[0]
    assert light_search(server.url).status_code == 200


def test_connections_past_the_limit_are_refused_at_once(server: Server) -> None:
    """When every connection is busy with a request (here: bodies still coming), a new one
    gets a 503 with Retry-After at once and is closed: descriptors never run out."""
    head = (b"POST /v1/search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
            b"\r\nContent-Length: 100\r\nExpect: 100-continue\r\n\r\n")
    with contextlib.ExitStack() as stack:
        busy = [stack.enter_context(connect(server.url)) for _ in range(MAX_CONNECTIONS)]
        for s in busy:
            s.sendall(head)
        for s in busy:  # "100 Continue": the server has read this head and waits for the body
            assert s.recv(4096).startswith(b"HTTP/1.1 100 Continue")
        refused = [stack.enter_context(connect(server.url)) for _ in range(MAX_CONNECTIONS)]
        raws = [answer(s) for s in refused]
        assert all(status(r) == 503 and b"retry-after: 1" in r.lower() and
                   b"--max-connections" in r for r in raws), raws[0]
        del busy
    assert light_search(server.url).status_code == 200


def test_idle_and_slow_clients_are_timed_out(server: Server) -> None:
    with connect(server.url) as never_speaks, connect(server.url) as half_head:
        half_head.sendall(b"GET /v1/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        for sock in (never_speaks, half_head):
            raw = answer(sock)  # closes after --client-timeout
            assert status(raw) == 408 and b"--client-timeout" in raw, raw


def test_a_header_drip_is_cut_at_the_head_limit(server: Server) -> None:
    with connect(server.url) as sock:
        sock.sendall(b"GET /v1/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Drip: ")
        sent = 0
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            while sent < 96 << 20:  # stops at the server's answer, long before 96 MiB
                sock.sendall(b"a" * 16384)
                sent += 16384
        raw = answer(sock)
    # the server stopped reading at 16 KiB; what was sent beyond sat in kernel buffers
    assert (status(raw) == 431 or raw == b"RESET") and sent < 16 << 20, (raw, sent)
    assert light_search(server.url).status_code == 200


def test_too_many_headers_are_refused(server: Server) -> None:
    with connect(server.url) as sock:
        sock.sendall(b"GET /v1/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     + b"".join(b"X-%d: 1\r\n" % i for i in range(101)) + b"\r\n")
        assert status(answer(sock)) == 431


def test_parked_bodies_are_bounded_across_connections(server: Server) -> None:
    pid = server.proc.pid
    before = rss_kib(pid)
    body = 12 << 20
    head = (b"POST /v1/search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
            b"\r\nContent-Length: %d\r\n\r\n" % body)
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(connect(server.url)) for _ in range(30)]
        for s in socks:
            s.sendall(head + b"[" + b" " * (1 << 20))  # 1 MiB of each body, then parked
        refused = parked = 0
        for s in socks:  # each answer comes at once (503) or after the body timeout (408)
            code = status(answer(s))
            refused += code == 503
            parked += code == 408
        assert refused >= 30 - (64 << 20) // body and refused + parked == 30
    grown = (rss_kib(pid) - before) / 1024
    assert grown < 100, f"RSS grew {grown:.0f} MiB"  # 30 x 12 MiB unbounded: 360 MiB
    assert light_search(server.url).status_code == 200


def test_costly_requests_are_refused_and_the_budget_released(server: Server) -> None:
    queries = ["a query"] * 256
    r = httpx.post(f"{server.url}/v1/search", json={"queries": queries, "k": MAX_K},
                   timeout=WAIT_S)
    assert r.status_code == 422 and "per request" in r.json()["error"]["message"], r.text
    ok = httpx.post(f"{server.url}/v1/search",
                    json={"queries": queries[:25], "k": MAX_K, "group_by": "segment"},
                    timeout=WAIT_S)
    assert ok.status_code == 200 and len(ok.json()["results"]) == 25
    metrics = httpx.get(f"{server.url}/metrics", timeout=WAIT_S).text
    assert "pig_cost_in_flight 0.0" in metrics


def test_cost_budget_in_flight() -> None:
    budget = CostBudget(in_flight=3 * MAX_RESULTS_PER_REQUEST)
    held = [budget.reserve(256, 100) for _ in range(3)]
    from pig.engine.serve.batcher import QueueFull
    with pytest.raises(QueueFull, match="cost budget"):
        budget.reserve(1, 1)
    held[0]()
    held[0]()  # idempotent
    budget.reserve(256, 100)
    with pytest.raises(TooCostly):
        budget.reserve(256, MAX_K)
    assert budget.held == 3 * MAX_RESULTS_PER_REQUEST


def cost_in_flight(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=WAIT_S).text
    return float(next(line.split()[1] for line in text.splitlines()
                      if line.startswith("pig_cost_in_flight ")))


def test_clients_that_do_not_read_hold_their_cost_only(server: Server) -> None:
    """Clients that send costly searches and never read: others are served meanwhile, and
    the cost budget is released (their answers left the server, or they were dropped)."""
    body = json.dumps({"queries": [f"query {i}" for i in range(25)], "k": MAX_K,
                       "group_by": "segment"}).encode()
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(connect(server.url)) for _ in range(4)]
        for s in socks:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.sendall(b"POST /v1/search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                      b"application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        assert light_search(server.url).status_code == 200  # while they do not read
        wait_until(lambda: cost_in_flight(server.url) == 0, WAIT_S)
    assert light_search(server.url).status_code == 200


class FakeTransport(asyncio.Transport):
    """What GuardedProtocol writes and whether it aborted (an event)."""

    def __init__(self) -> None:
        super().__init__()
        self.written, self.aborted, self.closing = b"", asyncio.Event(), False

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 1) if name in ("sockname", "peername") else default

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True
        self.aborted.set()

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def test_a_stalled_reader_is_dropped_after_the_timeout() -> None:
    """The send buffer full (the transport paused writing) for --client-timeout: the
    connection is aborted, which frees the unsent answer; resumed in time: kept."""
    from uvicorn.config import Config
    from uvicorn.server import ServerState

    async def app(scope: object, receive: object, send: object) -> None:
        pass

    async def scenario() -> None:
        limits = ConnectionLimits(timeout_s=0.05)
        pool = BodyPool(limits.body_pool_bytes)
        config = Config(app, http="httptools", lifespan="off")
        config.load()
        proto = GuardedProtocol(config=config, server_state=ServerState(), app_state={},
                                limits=limits, pool=pool)
        kept = FakeTransport()
        proto.connection_made(kept)
        proto.pause_writing()
        proto.resume_writing()  # read in time
        proto.data_received(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        stalled = GuardedProtocol(config=config, server_state=ServerState(), app_state={},
                                  limits=limits, pool=pool)
        dropped = FakeTransport()
        stalled.connection_made(dropped)
        stalled.data_received(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        stalled.pause_writing()
        await asyncio.wait_for(dropped.aborted.wait(), WAIT_S)
        assert not kept.aborted.is_set()

    asyncio.run(scenario())


@pytest.mark.parametrize("key", [None, "k3y"])
def test_foreign_host_and_origin_are_refused(index: Path, tmp_path: Path,
                                             key: str | None) -> None:
    args: list[object] = ["--index", index]
    headers = {}
    if key:
        (tmp_path / "key").write_text(key)
        args += ["--api-key-file", tmp_path / "key"]
        headers = {"Authorization": f"Bearer {key}"}
    with Server(*args, log=tmp_path / "log") as s:
        port = address(s.url)[1]
        for host in ("attacker.example", f"attacker.example:{port}", "localhost.attacker.example"):
            for path in ("/v1/search", "/v1/videos/1/media"):
                r = httpx.request("POST" if path == "/v1/search" else "GET", s.url + path,
                                  json={"query": "red"} if path == "/v1/search" else None,
                                  headers={**headers, "Host": host}, timeout=WAIT_S)
                assert r.status_code == 421 and r.json()["error"]["type"] == "wrong_host", host
        for origin in ("http://attacker.example", "null", f"http://attacker.example:{port}"):
            r = light_search(s.url, **headers, Origin=origin)
            assert r.status_code == 403 and r.json()["error"]["type"] == "wrong_origin"
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", "LOCALHOST."):
            assert light_search(s.url, **headers, Host=host,
                                Origin=f"http://{host}").status_code == 200


def test_allowed_host_names(server: Server) -> None:
    assert light_search(server.url, Host="search.example").status_code == 200
    assert light_search(server.url, Host="other.example").status_code == 421


def test_host_name_parsing() -> None:
    assert host_name("LocalHost.:8000") == "localhost"
    assert host_name("[::1]:80") == "::1" and host_name("[::1]") == "::1"
    assert host_name("a:b") is None and host_name("[::1]x") is None
    check = HostCheck(lambda *a: None, ["*"])
    assert check.accepts("anything.example")
