"""pig-engine: production inference for PIG text-to-video retrieval.

The Python API (:mod:`pig.api`), loaded on first use::

    import pig

    pig.index_videos(["videos/"], bundle="bundle", index="idx")
    with pig.open_index("idx") as index:
        for hit in index.search("a dog on a beach", k=5).hits:
            print(hit.score, hit.path, hit.start_s, hit.end_s)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from pig.api import Answer, Example, Hit, Index, Term, index_videos, open_index

__all__ = ["Answer", "Example", "Hit", "Index", "Term", "index_videos", "open_index"]


def __getattr__(name: str) -> Any:
    """The API's names, imported when first asked for (``import pig`` stays light)."""
    if name in __all__:
        from pig import api

        return getattr(api, name)
    raise AttributeError(f"module 'pig' has no attribute {name!r}")
