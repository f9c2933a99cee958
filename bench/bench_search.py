"""Search latency, recall, build time and memory of the usearch index (pig.engine.index);
the recall/latency curve of the HNSW search expansion; commit and compaction time vs size.

Stored and query vectors are synthetic but structured like real embeddings (clusters in a
low-rank subspace, a shared mean direction, isotropic noise; see ``structured_vectors``). The
text tokenise+encode step is measured by the engine benchmarks; here queries arrive as
vectors, so latency = ``VideoIndex.search`` (HNSW, one query per call) including catalog
lookups. Baseline: exact (brute-force) search over the same index. Built indexes are cached
under ``.cache/bench/search/`` (git-ignored) keyed by size, dtype and settings.

Environment: ``PIG_BENCH_SEARCH_SIZES`` (default ``10000,100000,1000000``) and
``PIG_BENCH_SEARCH_DTYPES`` (default ``f16,i8,f32``; only f16 for sizes above 100k). A size
whose build is predicted (from the previous size) to exceed 10 minutes is skipped.
``PIG_BENCH_COMMIT_SIZES`` (default ``100000,1000000``): sizes of the commit benchmark, built
with a sparse graph (``COMMIT_GRAPH``: ~70 s for 1M here).
``PIG_BENCH_FAISS_SIZES`` (default ``100000``): sizes at which the index build and search are
compared in one run with usearch used directly (same graph settings) and FAISS
HNSW (fp16 scalar quantiser, same M, efConstruction and ef). Builds are measured in CPU
seconds of the process (all threads) and wall seconds; their ratio is the cores kept busy.
Searches: one query per call, p50 of wall and of the calling thread's CPU time. An empty
size list skips its section.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from bench import results
from pig.engine.index import Entry, VideoIndex
from pig.engine.index import vectors as vectors_mod
from pig.engine.index.vectors import fd_checksum

DIM = 512
QUERIES = 200
BUILD_LIMIT_S = 600.0
CACHE = Path(__file__).resolve().parent.parent / ".cache" / "bench" / "search"


def structured_vectors(
    n: int, dim: int = DIM, *, seed: int, world: int = 0, clusters: int = 256, rank: int = 64
) -> np.ndarray:
    """Unit float32 ``[n, dim]`` vectors shaped like real embeddings.

    ``world`` fixes the structure (a random ``rank``-dim subspace with a 1/sqrt(i) spectrum,
    ``clusters`` centres in it, a shared mean direction); ``seed`` draws the samples, so stored
    vectors and queries (different seeds, same world) come from one distribution.
    """
    w = np.random.default_rng(world)
    basis = np.linalg.qr(w.standard_normal((dim, rank)))[0].astype(np.float32)
    spectrum = (1.0 / np.sqrt(1.0 + np.arange(rank))).astype(np.float32)
    centers = w.standard_normal((clusters, rank)).astype(np.float32) * spectrum
    mean = w.standard_normal(dim).astype(np.float32)
    mean *= 1.5 / np.linalg.norm(mean)
    rng = np.random.default_rng(seed)
    z = centers[rng.integers(clusters, size=n)]
    z += 0.6 * spectrum * rng.standard_normal((n, rank), dtype=np.float32)
    x = z @ basis.T + mean + 0.08 * rng.standard_normal((n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def recall_at(found: list[list[int]], truth: np.ndarray, k: int = 10) -> float:
    """Mean |found_k ∩ truth_k| / k over queries."""
    return float(
        np.mean(
            [len(set(f[:k]) & set(t[:k].tolist())) / k for f, t in zip(found, truth, strict=True)]
        )
    )


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _dir_bytes(d: Path) -> int:
    return sum(p.stat().st_size for p in d.iterdir() if p.is_file())


COMMIT_GRAPH = {"connectivity": 2, "expansion_add": 4}  # cheap to build; commits write vectors


def _build(n: int, dtype: str, graph: dict[str, int] | None = None) -> tuple[Path, float, bool]:
    """The cached index of ``n`` structured vectors, its build seconds, whether it was cached.
    ``graph``: HNSW settings other than usearch's defaults (the commit benchmark's)."""
    tag = "".join(f"_{k[0]}{v}" for k, v in sorted((graph or {}).items()))
    d = CACHE / f"n{n}_d{DIM}_{dtype}{tag}"
    timing = d.with_suffix(".build_s")
    if (d / "manifest.json").exists() and timing.exists():
        return d, float(timing.read_text()), True
    shutil.rmtree(d, ignore_errors=True)
    t0 = time.perf_counter()
    with VideoIndex.create(d, fingerprint="bench", dim=DIM, dtype=dtype, bundle_info={},
                           **(graph or {})) as idx:
        for start, x in _chunks(n):
            entries = [Entry(f"/bench/v{start + i}.mp4", 0, 0, "", 0) for i in range(len(x))]
            idx.add(entries, x)
    build_s = time.perf_counter() - t0
    timing.write_text(f"{build_s:.3f}\n")
    return d, build_s, False


def _latency_ms(idx: VideoIndex, q: np.ndarray, exact: bool) -> np.ndarray:
    out = []
    for row in q:
        t0 = time.perf_counter()
        idx.search(row, 10, exact=exact)
        out.append((time.perf_counter() - t0) * 1e3)
    return np.asarray(out)


def _chunks(n: int) -> Iterator[tuple[int, np.ndarray]]:
    """The stored vectors, generated in 50k chunks: (first key - 1, vectors)."""
    for start in range(0, n, 50_000):
        yield start, structured_vectors(min(50_000, n - start), seed=1000 + start)


def _truth(n: int, q: np.ndarray) -> np.ndarray:
    """Exact float32 top-10 keys over the stored vectors (keys are 1-based, as assigned)."""
    scores, keys = [], []
    for start, x in _chunks(n):
        s = q @ x.T
        top = np.argpartition(-s, 10, axis=1)[:, :10]
        scores.append(np.take_along_axis(s, top, 1))
        keys.append(top + start + 1)
    s, k = np.concatenate(scores, 1), np.concatenate(keys, 1)
    return np.take_along_axis(k, np.argsort(-s, axis=1)[:, :10], 1)


def _row(n: int, dtype: str, q: np.ndarray, truth: np.ndarray) -> tuple[str, float]:
    d, build_s, cached = _build(n, dtype)
    rss0 = _rss_bytes()
    with VideoIndex.open(d) as idx:
        ram = _rss_bytes() - rss0
        hnsw = _latency_ms(idx, q, exact=False)
        exact = _latency_ms(idx, q[:20], exact=True)
        t0 = time.perf_counter()
        found = [[h.key for h in hits] for hits in idx.search(q, 10, exact=False)]
        batch_ms = (time.perf_counter() - t0) * 1e3
        ex_found = np.asarray([[h.key for h in hits] for hits in idx.search(q, 10, exact=True)])
    p50, p99, ex50 = np.percentile(hnsw, 50), np.percentile(hnsw, 99), np.percentile(exact, 50)
    built = f"{build_s:.1f}{'*' if cached else ' '}"
    line = (
        f"{n:>8} {dtype:>5} {built:>8} {_dir_bytes(d) / 1e6:>8.1f} {ram / 1e6:>7.1f} "
        f"{p50:>7.3f} {p99:>7.3f} {ex50:>9.2f} {ex50 / p50:>6.0f}x {batch_ms / len(q):>9.3f} "
        f"{recall_at(found, ex_found):>8.4f} {recall_at(found, truth):>8.4f}"
    )
    return line, build_s


EF_CURVE = (64, 128, 256, 384, 512)


def _curve(n: int, q: np.ndarray) -> list[dict[str, object]]:
    """Recall@10 vs exact and p50 per fixed ef, then the default rule (``auto``); returns
    the points of the documentation's figure."""
    points: list[dict[str, object]] = []
    d, _, _ = _build(n, "f16")
    with VideoIndex.open(d, view=True) as idx:
        ex_found = np.asarray([[h.key for h in hits] for hits in idx.search(q, 10, exact=True)])
        base = idx._vectors.base
        assert base is not None
        rule, configured = vectors_mod.EF_EXPONENT, base.expansion
        auto = vectors_mod.search_expansion(len(base), configured)
        for ef in (*EF_CURVE, None):
            vectors_mod.EF_EXPONENT, base.expansion = (rule, configured) if ef is None else (0, ef)
            found = [[h.key for h in hits] for hits in idx.search(q, 10, exact=False)]
            p50 = np.percentile(_latency_ms(idx, q, exact=False), 50)
            label = f"auto={auto}" if ef is None else str(ef)
            recall = recall_at(found, ex_found)
            print(f"{n:>8} {label:>9} {recall:>8.4f} {p50:>7.3f}", flush=True)
            points.append({"n": n, "ef": auto if ef is None else ef, "auto": ef is None,
                           "recall": float(recall), "p50_ms": float(p50)})
        vectors_mod.EF_EXPONENT, base.expansion = rule, configured
    return points


def _commits(n: int) -> None:
    """Commit 1,000 new vectors into a copy of an ``n`` index (3 times: the delta grows),
    then compact it (the cost every commit had when each rewrote the whole vectors file).
    The index has a sparse graph (``COMMIT_GRAPH``) so that 1M builds in minutes here: a
    commit writes the delta, whose cost does not depend on the base's graph."""
    src, _, _ = _build(n, "f16", COMMIT_GRAPH)
    d = CACHE / "commit-scratch"
    shutil.rmtree(d, ignore_errors=True)
    shutil.copytree(src, d)
    try:
        t0 = time.perf_counter()
        idx = VideoIndex.open(d, writable=True)
        open_s = time.perf_counter() - t0
        base = d / idx.storage()["files"][0]
        base_mb = base.stat().st_size / 1e6
        fd = os.open(base, os.O_RDONLY)
        t0 = time.perf_counter()
        fd_checksum(fd)
        check_s = time.perf_counter() - t0
        os.close(fd)
        times = []
        for r in range(3):
            x = structured_vectors(1000, seed=9000 + r)
            idx.add([Entry(f"/bench/c{r}-{i}.mp4", 0, 0, "", 0) for i in range(1000)], x)
            t0 = time.perf_counter()
            idx.commit()
            times.append(time.perf_counter() - t0)
        assert idx.storage()["delta"] == 3000
        t0 = time.perf_counter()
        idx.compact()
        compact_s = time.perf_counter() - t0
        idx.close()
    finally:
        shutil.rmtree(d, ignore_errors=True)
    print(f"{n:>8} {base_mb:>8.0f} {open_s:>7.2f} "
          f"{check_s:>8.2f} " + " ".join(f"{t:>6.3f}" for t in times) + f" {compact_s:>9.2f}",
          flush=True)


def _timed(f: Callable[[], Any]) -> tuple[Any, float, float]:
    """``f()``, its wall seconds and the process's CPU seconds (all threads)."""
    w, c = time.perf_counter(), time.process_time()
    out = f()
    return out, time.perf_counter() - w, time.process_time() - c


def _per_query(search: Callable[[np.ndarray], Any], q: np.ndarray) -> tuple[float, float]:
    """p50 wall and p50 calling-thread CPU ms of ``search(row)`` over the rows of ``q``."""
    wall, cpu = [], []
    for row in q:
        w, c = time.perf_counter(), time.thread_time()
        search(row)
        cpu.append(time.thread_time() - c)
        wall.append(time.perf_counter() - w)
    return float(np.median(wall) * 1e3), float(np.median(cpu) * 1e3)


def _versus_faiss(n: int, q: np.ndarray) -> None:
    """Build ``n`` f16 vectors with VideoIndex, usearch directly and FAISS HNSW (same M,
    efConstruction), then search each one query per call (same ef): one run, same vectors."""
    import faiss  # the dev extra; only this comparison needs it

    x = np.concatenate([v for _, v in _chunks(n)])
    truth = _truth(n, q)
    keys = np.arange(1, n + 1, dtype=np.uint64)
    with tempfile.TemporaryDirectory(dir=CACHE.parent) as tmp:
        d = Path(tmp) / "index"

        def ours() -> None:
            with VideoIndex.create(d, fingerprint="bench", dim=DIM, dtype="f16",
                                   bundle_info={}) as idx:
                for start, v in _chunks(n):
                    idx.add([Entry(f"/bench/v{start + i}.mp4", 0, 0, "", 0)
                             for i in range(len(v))], v)

        def usearch_direct() -> Any:
            store = vectors_mod.VectorStore.new(DIM, "f16", settings)
            store.index.add(keys, x)
            return store.index

        def faiss_hnsw() -> Any:
            f = faiss.IndexHNSWSQ(DIM, faiss.ScalarQuantizer.QT_fp16, settings["connectivity"],
                                  faiss.METRIC_INNER_PRODUCT)
            f.hnsw.efConstruction = settings["expansion_add"]
            f.train(x[:1000])  # fp16 needs no training data; the call is required
            f.add(x)
            return f

        settings = vectors_mod.VectorStore.usearch_settings("f16", None, None, None, "bench")
        built = {name: _timed(f) for name, f in
                 (("faiss", faiss_hnsw), ("ours", ours), ("usearch", usearch_direct))}
        _, fw, fc = built["faiss"]
        for name, (_, w, c) in built.items():
            print(f"{n:>8} {name:>8} {w:>7.1f} {c:>7.1f} {c / w:>5.2f} {w / fw:>6.2f}x "
                  f"{c / fc:>6.2f}x", flush=True)
        ef = vectors_mod.search_expansion(n, settings["expansion_search"])
        f = built["faiss"][0]
        f.hnsw.efSearch = ef
        raw = built["usearch"][0]
        raw.expansion_search = ef
        with VideoIndex.open(d, view=True) as idx:
            graph = idx._vectors.base
            assert graph is not None
            graph.index.expansion_search = ef
            runs = {
                "index": lambda r: [h.key for h in idx.search(r, 10, exact=False)[0]],
                "graph": lambda r: graph.index.search(r, 10, threads=1).keys.tolist(),
                "usearch": lambda r: raw.search(r, 10, threads=1).keys.tolist(),
                "faiss": lambda r: (f.search(r[None], 10)[1][0] + 1).tolist(),
            }
            rows = {}
            for _ in range(3):  # interleaved rounds; medians of the rounds
                for name, run in runs.items():
                    rows.setdefault(name, []).append(_per_query(run, q))
            found = {name: [run(r) for r in q] for name, run in runs.items()}
        base_wall, base_cpu = np.median(rows["graph"], axis=0)
        for name, times in rows.items():
            wall, cpu = np.median(times, axis=0)
            print(f"{n:>8} {name:>8} {'ef ' + str(ef):>15} {wall:>7.3f} {cpu:>7.3f} "
                  f"{wall / base_wall:>6.2f}x {cpu / base_cpu:>6.2f}x "
                  f"{recall_at(found[name], truth):>8.4f}", flush=True)


def main() -> None:
    env = os.environ.get
    sizes = [int(v) for v in env("PIG_BENCH_SEARCH_SIZES", "10000,100000,1000000").split(",") if v]
    dtypes = env("PIG_BENCH_SEARCH_DTYPES", "f16,i8,f32").split(",")
    q = structured_vectors(QUERIES, seed=7)
    print(f"dim {DIM}, {QUERIES} queries, k=10, usearch threads: all ({os.cpu_count()} cores)")
    print(
        "build: * = cached from an earlier run; RSS: memory added by loading the index; latency:"
        " one query per call; batch: 200 queries in one call, per query; exact: brute force"
        " over the same index (baseline); R@10 vs exact (same dtype) / vs float32 truth"
    )
    print(
        f"{'n':>8} {'dtype':>5} {'build s':>8} {'disk MB':>8} {'RSS MB':>7} {'p50 ms':>7} "
        f"{'p99 ms':>7} {'exact p50':>9} {'speedup':>7} {'batch ms':>9} {'R@10 ex':>8} "
        f"{'R@10 f32':>8}"
    )
    rate: float | None = None  # vectors/s of the last f16 build
    built: list[int] = []
    for n in sizes:
        cached = (CACHE / f"n{n}_d{DIM}_f16.build_s").exists()
        if rate is not None and n / rate > BUILD_LIMIT_S and not cached:
            print(f"{n:>8} skipped: predicted f16 build {n / rate:.0f} s > {BUILD_LIMIT_S:.0f} s")
            continue
        truth = _truth(n, q)
        for dtype in dtypes if n <= 100_000 else ["f16"]:
            line, build_s = _row(n, dtype, q, truth)
            if dtype == "f16":
                rate = n / build_s
            print(line, flush=True)
        built.append(n)
    print("\nHNSW expansion (ef) vs recall@10 (vs exact, f16) and p50 ms; auto = the default "
          "rule (search_expansion)")
    print(f"{'n':>8} {'ef':>9} {'R@10 ex':>8} {'p50 ms':>7}")
    results.record("search_curve", [p for n in built for p in _curve(n, q)])
    print("\ncommit of 1,000 new vectors (3 in a row: delta 1k, 2k, 3k) and compaction, s; "
          "open = writer open incl. checksum of the base; xxh3 = checksum of the base alone")
    print(f"{'n':>8} {'base MB':>8} {'open s':>7} {'xxh3 s':>8} {'c1':>6} {'c2':>6} {'c3':>6} "
          f"{'compact s':>9}")
    for n in [int(v) for v in env("PIG_BENCH_COMMIT_SIZES", "100000,1000000").split(",") if v]:
        _commits(n)
    faiss_sizes = [int(v) for v in env("PIG_BENCH_FAISS_SIZES", "100000").split(",") if v]
    if faiss_sizes:
        print("\nbuild (f16) in one run: VideoIndex (catalog + vectors), usearch directly, FAISS "
              "HNSW fp16 (same M, efConstruction); cores = CPU s / wall s; ratios vs FAISS")
        print(f"{'n':>8} {'build':>8} {'wall s':>7} {'CPU s':>7} {'cores':>5} {'wall':>7} "
              f"{'CPU':>7}")
        print("then search, one query per call, same ef: p50 wall / calling-thread CPU ms; ratios "
              "vs the index's own graph searched by usearch directly ('graph'); R@10 vs float32")
        for n in faiss_sizes:
            _versus_faiss(n, q)


if __name__ == "__main__":
    main()
