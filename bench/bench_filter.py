"""Filtered search (``--where``): p50/p99 latency and recall@10 against an exact filtered
search, at selectivities 100%, 10%, 1%, 0.1% and 0.01% of the vectors.

The index is bench_search's cached one of structured f16 vectors (``PIG_BENCH_FILTER_N``,
default 1,000,000; built once, ~18 min at 1M on 2 quiet cores). Its catalog gets
``size = (key - 1) % 100000`` (idempotent), so ``size < s * 100000`` admits the share ``s``
spread over the whole index. Per selectivity: the first query (the filter's catalog query
plus, for the scan path, reading the admitted vectors once: "cold"), then one query per call
through ``VideoIndex.search`` with the filter cached as a reader keeps it (p50, p99), the
path the engine chose (exact scan or HNSW with over-fetch), and recall@10 against the exact
top 10 of the admitted vectors (float32 originals).
"""

from __future__ import annotations

import math
import os
import sqlite3
import time

import numpy as np

from bench.bench_search import _build, _chunks, recall_at, structured_vectors
from pig.engine.index import VideoIndex
from pig.engine.index import vectors as vectors_mod
from pig.engine.index.catalog import CATALOG_NAME
from pig.engine.query.filters import parse_where

SELECTIVITIES = (1.0, 0.1, 0.01, 0.001, 0.0001)
MODULUS = 100_000
QUERIES = 200


def _set_sizes(d: os.PathLike[str]) -> None:
    db = sqlite3.connect(os.path.join(d, CATALOG_NAME))
    with db:
        db.execute(f"UPDATE files SET size = (key - 1) % {MODULUS} "
                   f"WHERE size IS NOT (key - 1) % {MODULUS}")
    db.close()


def _truth(n: int, q: np.ndarray, share: float) -> np.ndarray:
    """Exact float32 top-10 keys among the admitted vectors."""
    scores, keys = [], []
    for start, x in _chunks(n):
        rows = np.flatnonzero(np.arange(start, start + len(x)) % MODULUS < share * MODULUS)
        if not len(rows):
            continue
        s = q @ x[rows].T
        top = np.argsort(-s, axis=1)[:, :10]
        scores.append(np.take_along_axis(s, top, 1))
        keys.append(rows[top] + start + 1)
    s, k = np.concatenate(scores, 1), np.concatenate(keys, 1)
    return np.take_along_axis(k, np.argsort(-s, axis=1)[:, :10], 1)


def main() -> None:
    n = int(os.environ.get("PIG_BENCH_FILTER_N", "1000000"))
    d, build_s, cached = _build(n, "f16")
    print(f"index: {n} f16 vectors, built in {build_s:.0f} s{' (cached)' if cached else ''}")
    _set_sizes(d)
    q = structured_vectors(QUERIES, seed=7)
    print(f"{'select':>7} {'matched':>8} {'path':>5} {'cold ms':>8} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'recall@10':>9}", flush=True)
    with VideoIndex.open(d, view=True) as idx:
        for share in SELECTIVITIES:
            where = parse_where([f"size < {round(share * MODULUS)}"]).sql()
            t0 = time.perf_counter()
            subset = idx.matching(*where)
            idx.search(q[0], 10, allowed=subset)
            cold = (time.perf_counter() - t0) * 1e3
            lat = []
            for row in q:
                t0 = time.perf_counter()
                idx.search(row, 10, allowed=idx.matching(*where))
                lat.append((time.perf_counter() - t0) * 1e3)
            found = [[h.key for h in hits] for hits in idx.search(q, 10, allowed=subset)]
            matched = len(subset.keys)
            scan = matched <= vectors_mod.SCAN_RATIO * min(n, math.ceil(20 * n / matched))
            recall = recall_at(found, _truth(n, q, share))
            print(f"{share:>7.2%} {matched:>8} {'scan' if scan else 'hnsw':>5} {cold:>8.1f} "
                  f"{np.percentile(lat, 50):>7.2f} {np.percentile(lat, 99):>7.2f} "
                  f"{recall:>9.4f}", flush=True)
