"""User metadata of videos: ``--metadata FILE`` (JSON lines or CSV keyed by ``path``) and
sidecar files (``VIDEO.json`` beside ``VIDEO``, e.g. ``lobby.mp4.json``), kept in the
catalog's ``meta`` column and filtered on as ``meta.KEY``."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

from pig.engine.display import display_path
from pig.errors import PigError

MAX_METADATA_BYTES = 256 * 1024 * 1024  # a --metadata file
MAX_SIDECAR_BYTES = 1024 * 1024  # one VIDEO.json
SIDECAR_SUFFIX = ".json"

Meta = dict[str, Any]


def _scalar_values(meta: Any, where: str) -> Meta:
    """``meta`` if it is a JSON object of scalars (strings, numbers, booleans, null)."""
    if not isinstance(meta, dict):
        raise PigError(f"{where}: metadata must be a JSON object, got {type(meta).__name__}")
    for key, value in meta.items():
        if not key or not isinstance(value, str | int | float | bool | type(None)):
            raise PigError(f"{where}: metadata key {key!r}: values must be strings, numbers, "
                           "booleans or null")
    return meta


def _read_text(path: Path, limit: int) -> str:
    name = display_path(path)
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as err:
        raise PigError(f"{name}: cannot read metadata ({err.strerror or err})") from None
    if len(data) > limit:
        raise PigError(f"{name}: metadata file larger than {limit >> 20} MiB (the limit)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise PigError(f"{name}: metadata is not UTF-8 text (byte {err.start})") from None


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Meta]:
    """Absolute video path -> metadata from a JSON-lines file (one object per line with a
    ``path``) or a CSV file (``.csv``; a header row with a ``path`` column; values kept as
    text). Relative video paths are taken from the metadata file's folder."""
    p = Path(path)
    text, name = _read_text(p, MAX_METADATA_BYTES), display_path(p)
    rows: list[tuple[int, Any]]
    if p.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        if "path" not in (reader.fieldnames or []):
            raise PigError(f"{name}: CSV metadata needs a 'path' column in its header")
        rows = [(i, {k: v for k, v in row.items() if k is not None and v not in (None, "")})
                for i, row in enumerate(reader, 2)]
    else:
        rows = []
        for i, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append((i, json.loads(line)))
                except json.JSONDecodeError as err:
                    raise PigError(f"{name}:{i}: not JSON ({err.msg}); give JSON lines or a "
                                   ".csv") from None
    out: dict[str, Meta] = {}
    for i, row in rows:
        where = f"{name}:{i}"
        meta = dict(_scalar_values(row, where))
        video = meta.pop("path", None)
        if not isinstance(video, str) or not video:
            raise PigError(f"{where}: no 'path' naming the video")
        out[os.path.abspath(p.parent / video)] = meta
    return out


def sidecar(video: str | os.PathLike[str]) -> Meta | None:
    """The metadata of ``VIDEO.json`` beside ``video``, or None without one."""
    p = Path(f"{os.fspath(video)}{SIDECAR_SUFFIX}")
    if not p.is_file():
        return None
    text = _read_text(p, MAX_SIDECAR_BYTES)
    try:
        return _scalar_values(json.loads(text), display_path(p))
    except json.JSONDecodeError as err:
        raise PigError(f"{display_path(p)}: not JSON ({err.msg})") from None
