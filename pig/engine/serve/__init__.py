"""``pig-engine serve``: the HTTP search service (needs the ``serve`` extra).

Modules: :mod:`.models` (request/response schemas), :mod:`.batcher` (the micro-batcher),
:mod:`.service` (searcher, live index generations, batch execution), :mod:`.metrics`
(Prometheus), :mod:`.app` (FastAPI routes, auth, errors), :mod:`.server` (uvicorn, signals),
:mod:`.connections` (bounds on connections, heads, bodies, timeouts), :mod:`.hosts` (Host and
Origin checks), :mod:`.budget` (the cost budget), :mod:`.media` (which file media sends),
``static/`` (the search page). Only :func:`missing_extra` is importable without the extra.
"""

from __future__ import annotations

import importlib.util

EXTRA_MODULES = ("fastapi", "uvicorn", "prometheus_client", "fastapi_offline")


def missing_extra() -> str:
    """One line saying how to install the service's dependencies ("" if they are present)."""
    missing = [m for m in EXTRA_MODULES if importlib.util.find_spec(m) is None]
    if not missing:
        return ""
    return (f"`pig-engine serve` needs {', '.join(missing)}: "
            "pip install 'pig-engine[serve]' (or: pip install '.[serve]' in a checkout)")
