"""Measured figures the benchmarks keep for the documentation's plots (``bench/figures.py``).

Each benchmark records its points under a name (``record("search_curve", rows)``) into
``.cache/bench/results.json`` (git-ignored): the last run's points per name replace the
earlier ones, so a partial ``make bench BENCH=search`` refreshes its figure only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parents[1] / ".cache" / "bench" / "results.json"


def load() -> dict[str, Any]:
    """Every recorded name -> its last points ({} before any run)."""
    try:
        return dict(json.loads(RESULTS.read_text()))
    except (OSError, ValueError):
        return {}


def record(name: str, points: Any) -> None:
    """Keep ``points`` (JSON-able) as the figures' data for ``name``, with the host's CPUs."""
    data = load()
    data[name] = {"cpus": os.cpu_count(), "points": points}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(RESULTS)
