"""What every client of the query engine shares: the JSON form of a hit, the bundle of an
index, query checks and the queries file."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pig.engine.bundle import Bundle
from pig.engine.display import display_path
from pig.engine.index import Hit, VideoIndex
from pig.engine.limits import MAX_QUERIES_FILE_BYTES, MAX_QUERIES_FILE_LINES, MAX_QUERY_CHARS
from pig.engine.query.request import Answer, Request
from pig.errors import BundleError, IndexStoreError, PigError

HIT_FIELDS = ("rank", "score", "path", "id", "start_s", "end_s", "segment", "index")


def hit_json(rank: int, hit: Hit) -> dict[str, Any]:
    """The JSON form of a hit (every client of the engine uses this one): ``rank`` from 1,
    ``score`` (inner product), ``path`` (through :func:`display_path`), ``id`` (the file's
    catalog key), the segment's span ``start_s``/``end_s`` (seconds from the first frame;
    ``end_s`` null when unknown), its ordinal ``segment`` within the file, and ``index``, the
    0-based position of the hit's index in the ``--index`` list (``id`` is unique only within
    its index); with moments asked for, ``moments``: the file's best spans (``segments``,
    ``start_s``, ``end_s``, ``score``), best first."""
    values = (rank, hit.score, display_path(hit.path, controls=False), hit.key, hit.start_s,
              hit.end_s, hit.segment, hit.index)
    out: dict[str, Any] = dict(zip(HIT_FIELDS, values, strict=True))
    if hit.moments:
        out["moments"] = [{"segments": list(m.segments), "start_s": m.start_s,
                           "end_s": m.end_s, "score": m.score} for m in hit.moments]
    return out


def answer_json(request: Request, answer: Answer) -> dict[str, Any]:
    """The JSON form of one query's answer (``search --json`` prints one per line; the
    service's ``results`` list holds them): ``query`` as read, ``truncated``, ``results``
    (:func:`hit_json`, ranked from ``offset + 1``) and ``next`` (the next page's offset)."""
    return {"query": request.describe(), "truncated": answer.truncated,
            "results": [hit_json(r, h) for r, h in enumerate(answer.hits, request.offset + 1)],
            "next": answer.next}


def recorded_bundle(index: VideoIndex) -> Path:
    """The bundle directory that most recently wrote vectors into ``index``."""
    for producer in reversed(index.manifest.bundle_producers):
        if producer.get("bundle"):
            return Path(producer["bundle"])
    raise IndexStoreError(f"{index.path}: the index records no bundle directory; pass --bundle")


def bundle_for(index: VideoIndex, bundle_dir: str | os.PathLike[str] | None = None) -> Bundle:
    """``bundle_dir`` (or the one the index records), refused unless it made the index."""
    if bundle_dir is not None:
        bundle = Bundle.load(bundle_dir)
    else:
        try:
            bundle = Bundle.load(recorded_bundle(index))
        except BundleError as err:
            raise BundleError(f"{err}; the index {index.path} recorded this bundle: if it "
                              "moved, pass --bundle DIR") from None
    if bundle.fingerprint != index.fingerprint:
        raise BundleError(
            f"{bundle.dir}: bundle {bundle.fingerprint[:16]} is not the model that built the "
            f"index {index.path} ({index.fingerprint[:16]}); use the bundle it was built with"
        )
    return bundle


def check_queries(queries: Sequence[str]) -> None:
    """Refuse an empty query or one longer than ``MAX_QUERY_CHARS`` (numbered from 1)."""
    for i, q in enumerate(queries, 1):
        if not q.strip():
            raise PigError(f"query {i} is empty")
        if len(q) > MAX_QUERY_CHARS:
            raise PigError(f"query {i} has {len(q)} characters; at most {MAX_QUERY_CHARS}")


def read_queries_file(path: str | os.PathLike[str]) -> list[str]:
    """The non-blank lines of a UTF-8 file (or FIFO; ``-``: standard input), stripped. Reads
    at most ``MAX_QUERIES_FILE_BYTES`` (+1 to tell a larger file) and refuses more than that or
    more than ``MAX_QUERIES_FILE_LINES`` queries, so ``/dev/zero`` is refused, not read to the
    end."""
    stdin = os.fspath(path) == "-"
    name = "standard input" if stdin else display_path(path)
    try:
        if stdin:
            data = sys.stdin.buffer.read(MAX_QUERIES_FILE_BYTES + 1)
        else:
            with open(path, "rb") as f:
                data = f.read(MAX_QUERIES_FILE_BYTES + 1)
    except OSError as err:
        raise PigError(f"{name}: cannot read queries ({err.strerror or err})") from None
    if len(data) > MAX_QUERIES_FILE_BYTES:
        raise PigError(f"{name}: queries file larger than {MAX_QUERIES_FILE_BYTES >> 20} MiB "
                       "(the limit); split it")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise PigError(f"{name}: queries file is not UTF-8 text (byte {err.start})") from None
    queries = [line.strip() for line in text.splitlines() if line.strip()]
    if len(queries) > MAX_QUERIES_FILE_LINES:
        raise PigError(f"{name}: {len(queries)} queries, at most {MAX_QUERIES_FILE_LINES} per "
                       "file; split it")
    return queries
