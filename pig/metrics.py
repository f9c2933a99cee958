"""Text->video retrieval metrics: the rank of the first correct video per query, R@K, median
and mean rank (numpy only). Used by the demo evaluation, its training recipe and the
calibration accuracy report."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np


def key_matches(row_keys: Sequence[Hashable], col_keys: Sequence[Hashable]) -> np.ndarray:
    """``[R, C]`` bool: row ``i`` and column ``j`` have equal keys."""
    ids: dict[Hashable, int] = {}
    r = np.asarray([ids.setdefault(k, len(ids)) for k in row_keys])
    c = np.asarray([ids.setdefault(k, len(ids)) for k in col_keys])
    return r[:, None] == c[None, :]


def retrieval_ranks(
    sim: np.ndarray, query_keys: Sequence[Hashable], gallery_keys: Sequence[Hashable]
) -> np.ndarray:
    """1-based rank of the best-scoring correct clip for each query (row of ``sim [Q, G]``).

    A gallery clip is correct for a query when its attribute key equals the query's key (so
    clips sharing every attribute are interchangeable). Ties with wrong clips count against
    the query: rank = 1 + #{wrong clips scoring >= the best correct clip}.
    """
    correct = key_matches(query_keys, gallery_keys)
    if not correct.any(axis=1).all():
        raise ValueError("every query needs at least one correct gallery clip")
    best = np.where(correct, sim, -np.inf).max(axis=1, keepdims=True)
    return 1 + np.count_nonzero((sim >= best) & ~correct, axis=1)


def retrieval_metrics(ranks: np.ndarray) -> dict[str, float]:
    """R@1/5/10 (percent), median rank and mean rank."""
    ranks = np.asarray(ranks)
    return {
        "R@1": 100.0 * float(np.mean(ranks <= 1)),
        "R@5": 100.0 * float(np.mean(ranks <= 5)),
        "R@10": 100.0 * float(np.mean(ranks <= 10)),
        "MdR": float(np.median(ranks)),
        "MnR": float(np.mean(ranks)),
    }
