"""Making an index equal to its folders: files that moved are recognised by their content
digest and keep their vectors; files that are gone are removed, behind a safety stop.

Planning (:func:`plan_sync`) reads the catalog and the disk only, so it can run on a reader
before the encoder opens; :func:`apply_sync` re-checks each step on the writer (another
writer may have committed meanwhile) and makes it pending in the index.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from pig.engine.display import display_path
from pig.engine.index import INDEXED, FileRecord, VideoIndex
from pig.engine.media import sources
from pig.errors import PigError

MAX_REMOVAL = 0.5  # share of a folder's indexed files that sync removes without being told


@dataclass(frozen=True)
class Move:
    """The file indexed at ``old`` is now ``new`` (same content digest), whose stat is ``st``."""

    old: str
    new: str
    st: sources.SourceStat


@dataclass
class SyncPlan:
    """What a sync changes besides encoding: moves, then removals (paths)."""

    moves: list[Move] = field(default_factory=list)
    removals: list[str] = field(default_factory=list)


def missing_under(index: VideoIndex, roots: Iterable[str | os.PathLike[str]],
                  present: Iterable[str | os.PathLike[str]] = ()) -> list[FileRecord]:
    """Catalog rows at or under ``roots`` whose file or object is gone (or no longer a
    regular file); one whose state cannot be known (an error) is not gone. ``present``:
    paths just found (discovery, a listing), not asked again."""
    seen = {sources.identity(p) for p in present}
    rows: dict[int, FileRecord] = {}
    for root in roots:
        rows.update((r.key, r) for r in index.under(root) if r.path not in seen)
    return [r for r in rows.values() if not sources.exists(r.path)]


def plan_sync(index: VideoIndex, scope: Iterable[str | os.PathLike[str]],
              files: Iterable[str | os.PathLike[str]]) -> SyncPlan:
    """Moves and removals that make the catalog rows under ``scope`` match ``files`` (what
    discovery found there). A file not in the catalog whose size and content digest equal
    those of a missing indexed file is that file, moved; only such size matches are hashed.
    The other missing rows are to be removed."""
    found = [sources.identity(f) for f in files]
    missing = missing_under(index, scope, found)
    pool: dict[tuple[int | None, str | None], list[FileRecord]] = {}
    for r in missing:
        if r.status == INDEXED and r.digest:
            pool.setdefault((r.size, r.digest), []).append(r)
    plan = SyncPlan()
    sizes = {size for size, _ in pool}
    for path in found:
        if not pool:
            break
        try:
            st = sources.stat(path)
            if st is None or st.size not in sizes or index.lookup(path) is not None:
                continue
            digest = sources.digest(path)
        except OSError:
            continue
        same = pool.get((st.size, digest))
        if same:
            plan.moves.append(Move(same.pop(0).path, path, st))
            if not same:
                del pool[(st.size, digest)]
    moved = {m.old for m in plan.moves}
    plan.removals = [r.path for r in missing if r.path not in moved]
    return plan


def check_mass_removal(index: VideoIndex, roots: Sequence[str | os.PathLike[str]],
                       removals: Sequence[str], max_share: float | None) -> None:
    """Refuse (one line) to remove more than ``max_share`` of the files indexed under one
    of ``roots``: a folder on an unmounted disk must never empty the index. ``None``: allow."""
    if max_share is None or not removals:
        return
    for root in roots:
        top = sources.identity(root)
        total = index.count_under(top)
        gone = sum(1 for p in removals if p == top or p.startswith(top.rstrip(os.sep) + os.sep))
        if gone and gone > max_share * total:
            raise PigError(
                f"{display_path(top)}: {gone} of its {total} indexed files are missing on disk; "
                f"sync removes at most {max_share:.0%} of a folder's files at once (is a disk "
                "unmounted?): check the folder, or give --allow-mass-removal")


def apply_sync(index: VideoIndex, plan: SyncPlan) -> tuple[list[Move], list[str]]:
    """Make ``plan`` pending in the writable ``index``, each step re-checked against the
    catalog and the disk; returns the moves and removals applied."""
    moves = []
    for m in plan.moves:
        rec, there = index.lookup(m.old), index.lookup(m.new)
        if rec is not None and there is None and not sources.exists(m.old) and \
                sources.exists(m.new):
            index.move(m.old, m.new, m.st)
            moves.append(m)
    gone = [p for p in plan.removals if index.lookup(p) is not None and not sources.exists(p)]
    return moves, index.remove(gone) if gone else []
