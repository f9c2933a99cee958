"""The CPUs this process may run on (its affinity mask, not the machine's core count)."""

from __future__ import annotations

import os


def available_cpus() -> int:
    """CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
