"""The installed pig-engine's release (``--version``, the OpenAPI document)."""

from __future__ import annotations

from importlib import metadata


def version() -> str:
    """The installed pig-engine's version ("unknown": run from a checkout, not installed)."""
    try:
        return metadata.version("pig-engine")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"
