"""``pig-engine serve`` under load: QPS and latency at concurrency 1, 8, 64, micro-batching on
vs off (ratio in the same run), and the server's memory under sustained load.

The server is a real ``pig-engine serve`` process on 127.0.0.1 (loopback only) serving an
index of the demo model (``models/pig-tiny``, held-out clips cached under
``.cache/bench/serve/``). *Batching on* is the default (``--max-batch 64 --max-wait-ms 0``:
each batch takes what queued while the encoder was busy), *on+2ms* also waits up to 2 ms for
company, *off* is batch-1 serving (``--max-batch 1``): one encoder call per query.
The load generator keeps ``C`` HTTP/1.1 keep-alive connections busy (closed loop), each
sending ``POST /v1/search`` (k=10, a held-out caption) and waiting for the answer; it runs in
this process on the same cores, with a lean asyncio client so that it takes little of them.
Every point is bounded in time (``PIG_BENCH_SERVE_SECONDS``, default 5) and count (20k).
Memory: the server's RSS sampled each second over ``PIG_BENCH_SERVE_SUSTAIN`` seconds
(default 20) at concurrency 64. First, with no server running, the engine alone (tokenize,
encode, search: the batcher's work, no HTTP) at batch 1 and 64: how much batching saves on
the model's own work on this machine, the part of the service's ratio that is not HTTP.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

from pig.demo import steps as demo
from pig.engine.query.engine import QueryEngine
from tests.serving import Server

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".cache" / "bench" / "serve"
CLIPS = 200
CONCURRENCY = (1, 8, 64)
MAX_REQUESTS = 20_000
SECONDS = float(os.environ.get("PIG_BENCH_SERVE_SECONDS", "5"))
SUSTAIN = float(os.environ.get("PIG_BENCH_SERVE_SUSTAIN", "20"))
MODES = {"off": ("--max-batch", 1, "--max-wait-ms", 0),
         "on": ("--max-batch", 64, "--max-wait-ms", 0),
         "on+2ms": ("--max-batch", 64, "--max-wait-ms", 2)}


def demo_index() -> tuple[Path, list[str]]:
    """The demo index (built once) and its captions."""
    clips = demo.ensure_clips(CACHE / "clips", CLIPS)
    bundle = demo.ensure_bundle(*demo.model_files(), REPO / demo.BUNDLE)
    demo.ensure_index(CACHE / "clips", clips, bundle, CACHE / "index")
    return CACHE / "index", [c.caption for c in clips]


def engine_alone(index: Path, captions: list[str], seconds: float = 2.0) -> dict[int, float]:
    """Queries/s of tokenize + encode + search (k=10) per batch size, in this process."""
    out = {}
    with QueryEngine([index]) as searcher:
        for batch in (1, 64):
            texts = (captions * (batch // len(captions) + 1))[:batch]
            searcher.search(texts, 10)  # warm-up
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                searcher.search(texts, 10)
                n += batch
            out[batch] = n / (time.perf_counter() - t0)
    return out


def _requests(host: str, port: int, captions: list[str]) -> list[bytes]:
    out = []
    for caption in captions:
        body = json.dumps({"query": caption, "k": 10}).encode()
        out.append(f"POST /v1/search HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: "
                   f"application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    return out


async def _load(url: str, captions: list[str], concurrency: int, seconds: float,
                limit: int) -> tuple[list[float], float]:
    """Closed loop: ``concurrency`` connections until ``seconds`` or ``limit`` answers.
    Returns the latencies (s) and the elapsed time."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    requests = _requests(host, int(port), captions)
    latencies: list[float] = []
    t0 = time.perf_counter()
    stop = t0 + seconds

    async def client(i: int) -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        j = i
        try:
            while time.perf_counter() < stop and len(latencies) < limit:
                t = time.perf_counter()
                writer.write(requests[j % len(requests)])
                head = await reader.readuntil(b"\r\n\r\n")
                status = head.split(b" ", 2)[1]
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                await reader.readexactly(length)
                if status != b"200":
                    raise RuntimeError(f"HTTP {status.decode()} under load")
                latencies.append(time.perf_counter() - t)
                j += concurrency
        finally:
            writer.close()

    await asyncio.gather(*(client(i) for i in range(concurrency)))
    return latencies, time.perf_counter() - t0


def load(url: str, captions: list[str], concurrency: int, seconds: float = SECONDS,
         limit: int = MAX_REQUESTS) -> dict[str, float]:
    asyncio.run(_load(url, captions, concurrency, 0.5, 200))  # warm-up: connections, caches
    lat, elapsed = asyncio.run(_load(url, captions, concurrency, seconds, limit))
    ms = np.asarray(lat) * 1000
    return {"qps": len(lat) / elapsed, "p50": float(np.percentile(ms, 50)),
            "p99": float(np.percentile(ms, 99)), "n": len(lat)}


def batches(url: str) -> tuple[float, float]:
    """(encoder calls, texts encoded) so far, from the server's /metrics."""
    text = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
    values = dict(line.rsplit(" ", 1) for line in text.splitlines()
                  if line.startswith(("pig_batch_size_count", "pig_batch_size_sum")))
    return float(values["pig_batch_size_count"]), float(values["pig_batch_size_sum"])


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def sustained(server: Server, captions: list[str]) -> list[float]:
    """RSS (MiB) once a second while concurrency 64 runs for SUSTAIN seconds."""
    samples: list[float] = []

    async def sample() -> None:
        while len(samples) <= SUSTAIN:
            samples.append(rss_mib(server.proc.pid))
            await asyncio.sleep(1)

    async def both() -> None:
        await asyncio.gather(_load(server.url, captions, 64, SUSTAIN, 10**9), sample())

    asyncio.run(both())
    return samples


def main() -> None:
    index, captions = demo_index()
    print(f"index {index}: {CLIPS} demo clips; {os.cpu_count()} cores (shared hosts: noisy); "
          f"{SECONDS:g} s per point")
    alone = engine_alone(index, captions)
    print(f"engine alone (tokenize + encode + search, no HTTP): batch 1 {alone[1]:.0f} q/s, "
          f"batch 64 {alone[64]:.0f} q/s: {alone[64] / alone[1]:.2f}x", flush=True)
    results: dict[tuple[str, int], dict[str, float]] = {}
    memory: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for mode, flags in MODES.items():
            with Server("--index", index, *flags, log=Path(tmp) / f"{mode}.log") as server:
                for c in CONCURRENCY:
                    calls, texts = batches(server.url)
                    results[mode, c] = r = load(server.url, captions, c)
                    calls, texts = (b - a for a, b in zip((calls, texts), batches(server.url),
                                                          strict=True))
                    print(f"batching {mode:>6}  concurrency {c:>2}: {r['qps']:7.0f} QPS  "
                          f"p50 {r['p50']:6.2f} ms  p99 {r['p99']:6.2f} ms  ({r['n']} requests, "
                          f"mean batch {texts / max(calls, 1):.1f})", flush=True)
                if mode == "on":
                    memory = sustained(server, captions)
    for c in CONCURRENCY:
        ratios = ", ".join(f"{m} {results[m, c]['qps'] / results['off', c]['qps']:.2f}x"
                           for m in MODES if m != "off")
        print(f"concurrency {c:>2}: QPS / batch-1 QPS: {ratios}")
    settled = memory[2:]  # after start-up of the load
    print(f"server RSS under {SUSTAIN:g} s at concurrency 64: start {settled[0]:.0f} MiB, "
          f"end {settled[-1]:.0f} MiB, max {max(settled):.0f} MiB "
          f"(growth {settled[-1] - settled[0]:+.1f} MiB)")
    print(f"targets: p50 at concurrency 1 <= 10 ms: {results['on', 1]['p50']:.2f} ms; "
          f"batching at concurrency 64 >= 3x batch-1: "
          f"{results['on', 64]['qps'] / results['off', 64]['qps']:.2f}x")


if __name__ == "__main__":
    main()
