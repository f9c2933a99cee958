"""Whether ``auto`` may run a bundle's ``int8-cpu`` graphs: the accuracy report decides.

``pig-export --calibrate`` writes ``accuracy_report.json`` into the bundle (its format:
:mod:`pig.calibration.report`). ``auto`` on a CPU takes ``int8-cpu`` only when that report
has an entry for it whose graphs are the ones in the manifest (same sha256) and whose demo
R@1 is within :data:`MAX_R1_DROP` points of fp32; otherwise it keeps fp32 and says why.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pig.engine.bundle import Bundle

REPORT = "accuracy_report.json"
INT8_CPU = "int8-cpu"
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


def int8_cpu_verdict(bundle: Bundle) -> tuple[bool, str]:
    """(use int8-cpu?, the reason, for the backend line)."""
    entry, why = report_entry(bundle, INT8_CPU)
    if entry is None:
        return False, why
    for branch in ("video", "text"):
        if entry.get(f"sha256_{branch}") != bundle.graph_sha256(branch, INT8_CPU):
            return False, f"{REPORT} was made for other {INT8_CPU} graphs ({branch})"
    drop = entry.get("dR@1")
    if not isinstance(drop, int | float):
        return False, f"{REPORT} has no demo R@1 for {INT8_CPU}"
    if drop < -MAX_R1_DROP:
        return False, (f"{INT8_CPU} R@1 {drop:+.1f} pt against fp32 in {REPORT} "
                       f"(more than {MAX_R1_DROP:g} pt)")
    return True, f"{INT8_CPU} R@1 {drop:+.1f} pt against fp32 in {REPORT}"
