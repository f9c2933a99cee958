"""``pig-engine serve`` under hostile clients (issue 23's cases), all at once, on loopback:

* 1,100 slow connections (a request head begun, never finished), more than the default
  ``--max-connections`` 1000 and than the usual 1,024-descriptor limit;
* a header drip: one header value sent in 16 KiB pieces (meant to reach 96 MiB);
* 30 parked bodies: ``Content-Length`` 12 MB, 1 MiB sent, then nothing;
* 25 clients sending a costly search (25 queries x k 1000, by segment) and never reading.

Meanwhile a light search (k 10, a new connection each time, as a new client would) is timed;
the baseline is the same search before the attack (ratio in the same run). The server's RSS
is sampled throughout. The index: 20 generated clips cut into 0.1 s segments (answers of
thousands of hits for the costly clients), the tests' fake bundle.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from tests.fake_bundle import write_bundle
from tests.serving import Server
from tests.test_pipeline import SIZES, make_clips

SLOW = 1100
PARKED = 30
COSTLY = 25
LIGHT = 200


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _light(host: str, port: int) -> float:
    """Seconds for one light search on a new connection (raises on a non-200)."""
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection(host, port, timeout=60)
    try:
        conn.request("POST", "/v1/search", json.dumps({"query": "red square", "k": 10}),
                     {"Content-Type": "application/json"})
        r = conn.getresponse()
        r.read()
        if r.status != 200:
            raise RuntimeError(f"light search: {r.status}")
    finally:
        conn.close()
    return time.perf_counter() - t0


def _timed(host: str, port: int) -> np.ndarray:
    return np.array([_light(host, port) for _ in range(LIGHT)]) * 1e3


def _drip(host: str, port: int, result: list[str]) -> None:
    with socket.create_connection((host, port), timeout=60) as s:
        s.sendall(b"GET /v1/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Drip: ")
        sent = 0
        try:
            while sent < 96 << 20:
                s.sendall(b"a" * 16384)
                sent += 16384
                time.sleep(0.002)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            result.append(s.recv(200).split(b"\r\n", 1)[0].decode() + f" after {sent >> 10} KiB")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-limits-") as tmp:
        _run(Path(tmp))


def _run(root: Path) -> None:
    bundle = write_bundle(root / "bundle", SIZES)
    clips = make_clips(root / "clips", n=20)
    idx = root / "idx"
    subprocess.run([sys.executable, "-m", "pig.cli.engine", "index", *map(str, clips),
                    "--bundle", str(bundle), "--index", str(idx), "--segment-seconds", "0.1",
                    "--no-progress"], check=True, capture_output=True)
    with Server("--index", idx, log=root / "server.log") as server:
        host, port = server.url.removeprefix("http://").rsplit(":", 1)
        port_n, pid = int(port), server.proc.pid
        base = _timed(host, port_n)
        rss = [_rss_mb(pid)]
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.2):
                rss.append(_rss_mb(pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        with contextlib.ExitStack() as stack:
            slow = []
            for _ in range(SLOW):
                s = stack.enter_context(socket.create_connection((host, port_n), timeout=60))
                s.sendall(b"GET /v1/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                slow.append(s)
            drip: list[str] = []
            dripper = threading.Thread(target=_drip, args=(host, port_n, drip), daemon=True)
            dripper.start()
            for _ in range(PARKED):
                s = stack.enter_context(socket.create_connection((host, port_n), timeout=60))
                with contextlib.suppress(OSError):
                    s.sendall(b"POST /v1/search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                              b"application/json\r\nContent-Length: 12000000\r\n\r\n["
                              + b" " * (1 << 20))
            costly = json.dumps({"queries": [f"query {i}" for i in range(25)], "k": 1000,
                                 "group_by": "segment"}).encode()
            for _ in range(COSTLY):
                s = stack.enter_context(socket.create_connection((host, port_n), timeout=60))
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                s.sendall(b"POST /v1/search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                          b"application/json\r\nContent-Length: %d\r\n\r\n" % len(costly)
                          + costly)
            attacked = _timed(host, port_n)
            dripper.join(120)
        stop.set()
        sampler.join()
    print(f"light search (k 10, new connection each), {LIGHT} requests, ms:")
    print(f"{'':>16} {'p50':>7} {'p99':>7} {'max':>7}")
    for name, t in (("alone", base), ("under attack", attacked)):
        print(f"{name:>16} {np.percentile(t, 50):>7.2f} {np.percentile(t, 99):>7.2f} "
              f"{t.max():>7.2f}")
    print(f"slowest under attack: request {int(attacked.argmax()) + 1} of {LIGHT}")
    ratio = np.percentile(attacked, 99) / np.percentile(base, 99)
    print(f"p99 ratio under attack / alone: {ratio:.1f}x")
    print(f"server RSS: {rss[0]:.0f} MB before, {max(rss):.0f} MB max during "
          f"({SLOW} slow connections, {PARKED} parked 12 MB bodies, {COSTLY} non-reading "
          "costly clients, a header drip)")
    print(f"header drip: {drip[0] if drip else 'no answer'}")


if __name__ == "__main__":
    main()
