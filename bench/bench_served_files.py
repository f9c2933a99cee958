"""How ``pig-engine serve`` should hold an index's vectors files: the cost of each way at
1M vectors (f16, 512-d; the commit benchmark's sparse graph, so it builds in about a minute:
the files' size, which sets these costs, is the vectors').

Ways (each opened by a fresh process, after the page cache held the files, as on a server
that reloads a generation it just saw committed):

* ``mmap``: usearch view of the files, as before; a truncation of a served file under it is a
  SIGBUS that kills the server (every shard), so it cannot be made safe by checks;
* ``memory``: the files read into the process (usearch load): nothing done to the files later
  can reach the served copy;
* ``copy+mmap``: a private copy in a temporary folder, then mapped: safe from changes to the
  originals, costs a copy on disk and the time to write it.

Reported: open seconds (incl. the checksum every way does), RSS added, p50 of a search.
Environment: ``PIG_BENCH_SERVED_SIZES`` (default ``1000000``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.bench_search import COMMIT_GRAPH, _build

_CHILD = r"""
import json, os, sys, time, shutil, tempfile
from pathlib import Path
import numpy as np
from pig.engine.index import VideoIndex
from bench.bench_search import structured_vectors

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

way, d = sys.argv[1], Path(sys.argv[2])
q = structured_vectors(50, seed=7)
before = rss()
t0 = time.perf_counter()
if way == "copy+mmap":
    tmp = Path(tempfile.mkdtemp(dir=d.parent))
    shutil.copytree(d, tmp / "idx")
    d = tmp / "idx"
idx = VideoIndex.open(d, view=way != "memory")
open_s = time.perf_counter() - t0
lat = []
for row in q:
    t = time.perf_counter()
    idx.search(row, 10)
    lat.append(time.perf_counter() - t)
print(json.dumps({"open_s": open_s, "rss_mb": (rss() - before) / 1e6,
                  "p50_ms": float(np.median(lat)) * 1e3}))
idx.close()
if way == "copy+mmap":
    shutil.rmtree(tmp)
"""


def main() -> None:
    sizes = [int(v) for v in os.environ.get("PIG_BENCH_SERVED_SIZES", "1000000").split(",")]
    root = Path(__file__).resolve().parent.parent
    print(f"{'n':>8} {'way':>10} {'open s':>7} {'RSS MB':>7} {'p50 ms':>7}")
    for n in sizes:
        d, _, _ = _build(n, "f16", COMMIT_GRAPH)
        scratch = Path(tempfile.mkdtemp(dir=d.parent))
        try:
            shutil.copytree(d, scratch / "idx")  # a reader leaves no file behind in a copy
            for way in ("mmap", "memory", "copy+mmap"):
                for _ in range(2):  # the first warms the page cache
                    out = subprocess.run([sys.executable, "-c", _CHILD, way,
                                          str(scratch / "idx")], cwd=root, check=True,
                                         capture_output=True, text=True).stdout
                r = json.loads(out)
                print(f"{n:>8} {way:>10} {r['open_s']:>7.2f} {r['rss_mb']:>7.0f} "
                      f"{r['p50_ms']:>7.2f}", flush=True)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
