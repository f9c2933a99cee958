"""Whether ``auto`` may run a bundle's CPU-only graphs (``int8-cpu``): the accuracy report
decides.

``pig-export --calibrate`` writes ``accuracy_report.json`` into the bundle (its format:
:mod:`pig.calibration.report`). ``auto`` on a CPU takes a CPU-only precision
(:data:`pig.engine.graphs.CPU_ONLY_PRECISIONS`) only when that report has an entry for it
whose graphs are the ones in the manifest (same sha256) and whose R@1 is within
:data:`MAX_R1_DROP` points of fp32 on the report's data; otherwise it keeps fp32 and says why.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pig.engine.backends.base import fastest
from pig.engine.graphs import CPU_ONLY_PRECISIONS

if TYPE_CHECKING:
    from pig.engine.bundle import Bundle

REPORT = "accuracy_report.json"
MAX_R1_DROP = 1.0  # points of R@1 against fp32


def report_entry(bundle: Bundle, precision: str) -> tuple[dict[str, Any] | None, str]:
    """The report's entry for ``precision`` and "" , or ``None`` and why there is none."""
    path = bundle.dir / REPORT
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
        entry = report["precisions"][precision]
    except FileNotFoundError:
        return None, f"no {REPORT} in the bundle"
    except (OSError, ValueError, KeyError, TypeError):
        return None, f"{REPORT} has no readable {precision} entry"
    if not isinstance(entry, dict):
        return None, f"{REPORT} has no readable {precision} entry"
    return entry, ""


def verdict(bundle: Bundle, precision: str) -> tuple[bool, str]:
    """(may ``auto`` run ``precision``?, the reason, for the backend line)."""
    entry, why = report_entry(bundle, precision)
    if entry is None:
        return False, why
    for branch in ("video", "text"):
        if entry.get(f"sha256_{branch}") != bundle.graph_sha256(branch, precision):
            return False, f"{REPORT} was made for other {precision} graphs ({branch})"
    drop = entry.get("dR@1")
    if not isinstance(drop, int | float):
        return False, f"{REPORT} has no R@1 for {precision}"
    if drop < -MAX_R1_DROP:
        return False, (f"{precision} R@1 {drop:+.1f} pt against fp32 in {REPORT} "
                       f"(more than {MAX_R1_DROP:g} pt)")
    return True, f"{precision} R@1 {drop:+.1f} pt against fp32 in {REPORT}"


def pick_on_cpu(bundle: Bundle, available: Sequence[str]) -> tuple[str, str]:
    """The precision ``auto`` runs on a CPU: a CPU-only one the report allows, else fp32."""
    passed_over = []
    for p in available:
        if p in CPU_ONLY_PRECISIONS:
            use, why = verdict(bundle, p)
            if use:
                return p, f"{p} ({why})"
            passed_over.append(f"{p} not used: {why}")
    p, why = fastest("fp32")(bundle, available)
    return p, (f"{p}, " + "; ".join(passed_over)) if passed_over else why
