"""The request object of the query engine: what one query asks, whoever asks it (the CLI, the
server, the Python API), and what it gets back.

A query vector is the normalised weighted sum of its terms (texts and examples) minus its
negatives (each times its weight): ``normalise(sum w_i v_i - sum u_j n_j)``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pig.engine.index import Hit
from pig.engine.index.store import GROUP_BY
from pig.engine.limits import MAX_K, MAX_MOMENTS, MAX_OFFSET, MAX_QUERY_CHARS, MAX_TERMS
from pig.engine.query.filters import Filter
from pig.errors import PigError


@dataclass(frozen=True)
class Example:
    """Query by example: a stored vector (``id``: a hit's file id, ``segment``: its ordinal,
    None for the whole file: the mean of its segments; ``index``: the hit's index) or a
    file (``path``: a video, or an image as a still video; encoded like an indexed file
    unless the catalog holds it)."""

    id: int | None = None
    segment: int | None = None
    index: int = 0
    path: str | None = None

    def __post_init__(self) -> None:
        if (self.id is None) == (self.path is None):
            raise PigError("an example is either a stored video (id) or a file (path)")
        if self.id is not None and self.id < 1:
            raise PigError(f"example id {self.id}: ids start at 1")
        if self.segment is not None and self.segment < 0:
            raise PigError(f"example segment {self.segment}: segments start at 0")
        if self.index < 0:
            raise PigError(f"example index {self.index}: indexes start at 0")

    @classmethod
    def parse(cls, text: str) -> Example:
        """``@ID``, ``@ID:SEGMENT`` (``@ID:SEGMENT@INDEX`` with several indexes) or a path."""
        m = re.fullmatch(r"@(\d+)(?::(\d+))?(?:@(\d+))?", text)
        if m is None:
            if text.startswith("@"):
                raise PigError(f"--like {text!r}: expected @ID, @ID:SEGMENT or @ID:SEGMENT@INDEX")
            return cls(path=text)
        return cls(id=int(m[1]), segment=None if m[2] is None else int(m[2]),
                   index=int(m[3] or 0))

    def describe(self) -> str:
        if self.path is not None:
            return self.path
        seg = "" if self.segment is None else f":{self.segment}"
        return f"@{self.id}{seg}" + (f"@{self.index}" if self.index else "")


@dataclass(frozen=True)
class Term:
    """A text or an example, with its weight in the sum."""

    text: str | None = None
    like: Example | None = None
    weight: float = 1.0

    def __post_init__(self) -> None:
        if (self.text is None) == (self.like is None):
            raise PigError("a query term is either a text or an example")
        if self.text is not None:
            if not self.text.strip():
                raise PigError("a query text is empty")
            if len(self.text) > MAX_QUERY_CHARS:
                raise PigError(f"a query text has {len(self.text)} characters; at most "
                               f"{MAX_QUERY_CHARS}")
        if not (self.weight == self.weight and abs(self.weight) < 1e6) or self.weight <= 0:
            raise PigError(f"weight {self.weight}: must be a positive number (subtract with "
                           "a negative term)")

    def describe(self) -> str:
        what = self.text if self.text is not None else f"like {self.like.describe()}"  # type: ignore[union-attr]
        return what if self.weight == 1 else f"{self.weight:g}*{what}"


@dataclass(frozen=True)
class Request:
    """One query: its terms (summed with their weights) and negatives (subtracted), a
    filter, ``k`` hits from ``offset`` (pages), those scoring at least ``min_score``,
    grouped by video (the best segment of each file) or raw segments, HNSW or exact. Grouped
    by video, each hit may carry its file's best ``moments`` (segments scored exactly, those
    admitted by the filter), adjacent ones merged into one span with ``merge_adjacent``."""

    terms: tuple[Term, ...]
    negatives: tuple[Term, ...] = ()
    where: Filter = field(default_factory=Filter)
    k: int = 10
    offset: int = 0
    min_score: float | None = None
    group_by: str = "video"
    exact: bool | None = None
    moments: int = 1
    merge_adjacent: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.moments <= MAX_MOMENTS:
            raise PigError(f"moments must be between 1 and {MAX_MOMENTS}, got {self.moments}")
        if (self.moments > 1 or self.merge_adjacent) and self.group_by != "video":
            raise PigError("moments and merge_adjacent need group_by video")
        if not self.terms:
            raise PigError("a query needs a text or an example")
        if len(self.terms) + len(self.negatives) > MAX_TERMS:
            raise PigError(f"a query has {len(self.terms) + len(self.negatives)} terms; at "
                           f"most {MAX_TERMS}")
        if not 1 <= self.k <= MAX_K:
            raise PigError(f"k must be between 1 and {MAX_K}, got {self.k}")
        if not 0 <= self.offset <= MAX_OFFSET:
            raise PigError(f"offset must be between 0 and {MAX_OFFSET}, got {self.offset}")
        if self.group_by not in GROUP_BY:
            raise PigError(f"group_by must be one of {', '.join(GROUP_BY)}, got "
                           f"{self.group_by!r}")
        if self.min_score is not None and not -2 <= self.min_score <= 2:
            raise PigError(f"min_score {self.min_score}: scores lie in [-1, 1]")

    @property
    def texts(self) -> list[str]:
        """Every text of the query (terms, then negatives), in order: what is encoded."""
        return [t.text for t in (*self.terms, *self.negatives) if t.text is not None]

    def describe(self) -> str:
        """How the query reads (the ``query`` field of answers)."""
        out = " + ".join(t.describe() for t in self.terms)
        return out + "".join(f" - {t.describe()}" for t in self.negatives)


@dataclass(frozen=True)
class Answer:
    """A query's page of hits (best first), whether a text was longer than the model reads
    (only its beginning was searched), and ``next``: the ``offset`` of the next page (None:
    this page is the last)."""

    hits: list[Hit]
    truncated: bool
    next: int | None
