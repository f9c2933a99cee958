"""Several indexes of one bundle fingerprint searched as one (shards: per node, per corpus)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from pig.engine.index.store import Hit, VideoIndex
from pig.engine.index.vectors import Subset
from pig.errors import IndexStoreError


def check_same_model(indexes: Sequence[VideoIndex]) -> None:
    """Refuse, in one line, indexes whose vectors come from different models or dims."""
    first = indexes[0]
    for idx in indexes[1:]:
        if (idx.fingerprint, idx.dim) != (first.fingerprint, first.dim):
            raise IndexStoreError(
                f"{idx.path}: holds vectors of bundle {idx.fingerprint[:16]} ({idx.dim}-d), "
                f"not of {first.fingerprint[:16]} ({first.dim}-d) like {first.path}; only "
                "indexes of one bundle fingerprint can be searched together"
            )


def search_shards(
    indexes: Sequence[VideoIndex],
    queries: Any,
    k: int,
    *,
    exact: bool | None = None,
    group_by: str = "video",
    allowed: Sequence[Subset | None] | None = None,
) -> list[list[Hit]]:
    """Top ``k`` per query over all ``indexes``: the merge of each index's top ``k`` by score
    (exact per index top-k merged is the exact top-k of the union; a file lives in one index,
    so grouping by video stays right). Ties keep index order. Each hit's ``index`` is its
    index's position in ``indexes``. ``allowed``: per index, the only segment keys to search
    (a filter's :meth:`VideoIndex.matching`), or None."""
    admit = allowed if allowed is not None else [None] * len(indexes)
    per_index = [idx.search(queries, k, exact=exact, group_by=group_by, allowed=a)
                 for idx, a in zip(indexes, admit, strict=True)]
    if len(indexes) == 1:  # its hits as they are (index 0)
        return per_index[0]
    return [
        sorted((dataclasses.replace(h, index=i) for i, rows in enumerate(per_index)
                for h in rows[q]), key=lambda h: -h.score)[:k]
        for q in range(len(per_index[0]))
    ]
