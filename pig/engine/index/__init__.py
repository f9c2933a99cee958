"""Index directory: usearch vectors + SQLite catalog + manifest, with atomic commits.

See :mod:`pig.engine.index.store` for the layout and the commit protocol.
"""

from pig.engine.index.catalog import FAILED, INDEXED, FileRecord, file_digest
from pig.engine.index.manifest import DTYPES, IndexManifest
from pig.engine.index.store import Entry, Hit, Plan, VideoIndex
from pig.engine.index.vectors import UNIT_NORM_TOL

__all__ = [
    "DTYPES",
    "FAILED",
    "INDEXED",
    "UNIT_NORM_TOL",
    "Entry",
    "FileRecord",
    "Hit",
    "IndexManifest",
    "Plan",
    "VideoIndex",
    "file_digest",
]
