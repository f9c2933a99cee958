"""``index_videos``: discover files, open a runner and the index, run."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from pig.engine.backends.base import log_stderr
from pig.engine.bundle import Bundle
from pig.engine.display import Detail
from pig.engine.index import VideoIndex
from pig.engine.index.manifest import MANIFEST_NAME
from pig.engine.ingest.local_runner import local_engine
from pig.engine.ingest.options import PipelineOptions
from pig.engine.ingest.report import IndexReport
from pig.engine.ingest.writer import Embed, run_plans
from pig.engine.media import shots
from pig.engine.media.decoders import choose_decoder
from pig.engine.media.segments import Segmenting
from pig.engine.media.walk import discover

Engine = Callable[..., contextlib.AbstractContextManager[tuple[dict[str, Any], Embed]]]
"""Opens the encode side of a run: ``engine(bundle, backend, precision, options, log)``
gives the producer facts recorded in the index (bundle, backend, precision) and the
:data:`Embed` that runs the planned files."""


def index_videos(
    paths: Iterable[str | os.PathLike[str]],
    bundle: Bundle,
    index_dir: str | os.PathLike[str],
    *,
    glob: str | None = None,
    backend: str = "auto",
    precision: str | None = None,
    dtype: str | None = None,
    segmenting: Segmenting | None = None,
    usearch_settings: dict[str, int | None] | None = None,
    options: PipelineOptions | None = None,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    engine: Engine | None = None,
) -> IndexReport:
    """Discover ``paths``, open the engine (the encoder; default :func:`local_engine`) and
    the index (created if missing), run.

    What discovery passes over (folders that cannot be read, FIFOs, sockets, ...) is listed
    in the report and recorded in the index manifest (``info`` shows it); the files under an
    unreadable folder that an earlier run indexed stay in the index. ``segmenting``: the
    setting of a new index (default auto); for an existing one it must be the index's, or
    ``None``.
    """
    options = options or PipelineOptions()
    decoder = choose_decoder(options.decoder)  # refuse an unavailable one before any work
    engine = engine or local_engine
    paths = list(paths)
    passed_over: list[tuple[str, str]] = []
    files = discover(paths, glob, lambda path, why: passed_over.append((path, why)))
    # refuse a read-only folder or a foreign index before opening the encoder (a TensorRT
    # build takes minutes)
    VideoIndex.check_writable(index_dir)
    if (Path(index_dir) / MANIFEST_NAME).is_file():
        with VideoIndex.open(index_dir, fingerprint=bundle.fingerprint, view=True) as existing:
            existing.require_segmenting(segmenting)
            segmenting = existing.segmenting
    if segmenting is not None and segmenting.mode == "shots":
        shots.require()
    say = log or log_stderr
    say(f"decoder: {decoder.decoder.name}")
    say(Detail(f"  why: {decoder.reason}"))
    with engine(bundle, backend, precision, options, log) as (info, embed), \
            VideoIndex.open_or_create(
                index_dir, fingerprint=bundle.fingerprint, dim=bundle.embedding_dim,
                bundle_info=info, dtype=dtype, segmenting=segmenting,
                unit_vectors=bundle.unit_vectors,
                **(usearch_settings or {}),
            ) as index:
        index.record_skipped(paths, sorted(passed_over))
        report = run_plans(index, files, options, embed, progress)
    report.skipped_paths = sorted(passed_over)
    return report
