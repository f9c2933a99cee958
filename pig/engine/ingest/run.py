"""``index_videos``: discover files, open a runner and the index, run."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from pig.engine.bundle import Bundle
from pig.engine.display import Detail, display_path, log_stderr
from pig.engine.index import VideoIndex
from pig.engine.index.manifest import MANIFEST_NAME
from pig.engine.ingest.local_runner import open_local
from pig.engine.ingest.metadata import sidecar
from pig.engine.ingest.options import PipelineOptions
from pig.engine.ingest.report import IndexReport
from pig.engine.ingest.sync import (
    MAX_REMOVAL,
    SyncPlan,
    apply_sync,
    check_mass_removal,
    missing_under,
    plan_sync,
)
from pig.engine.ingest.writer import Embed, Runner, run_plans
from pig.engine.media import shots, sources
from pig.engine.media.decoders import choose_decoder
from pig.engine.media.segments import Segmenting
from pig.engine.media.walk import Globs, NothingToIndex, by_extension, discover_sources


def index_videos(
    paths: Iterable[str | os.PathLike[str]],
    bundle: Bundle,
    index_dir: str | os.PathLike[str],
    *,
    glob: Globs = None,
    options: PipelineOptions | None = None,
    progress: bool = False,
    sync: bool = False,
    max_removal: float | None = MAX_REMOVAL,
    metadata: dict[str, dict[str, Any]] | None = None,
    **opening: Any,
) -> IndexReport:
    """Discover ``paths``, open the runner (the encoder; default
    :func:`~pig.engine.ingest.local_runner.open_local`) and
    the index (created if missing), run; ``opening``: the keywords of :func:`open_run`.

    Paths that hold no file to index raise :class:`NothingToIndex` before anything is opened
    (unless ``sync``: an emptied folder empties the index). What discovery passes over
    (folders that cannot be read, FIFOs, sockets, ...; other files by extension) is listed
    in the report; the first kind is also recorded in the index manifest (``info`` shows
    it). The files under an unreadable folder that an earlier run indexed stay in the index.

    ``sync``: also make the index equal to ``paths`` (see :mod:`pig.engine.ingest.sync`):
    moved files keep their vectors, files gone from the folders are removed, unless that is
    more than ``max_removal`` of a folder's files (``None``: no limit). Without it, the
    report counts the indexed files under ``paths`` that are missing on disk.

    ``metadata`` (absolute path -> user metadata, :func:`read_metadata`) and the sidecar
    ``VIDEO.json`` of each discovered local file replace the user metadata of those files
    once the run is done (also of files that were already indexed).
    """
    options = options or PipelineOptions()
    paths = list(paths)
    passed_over: list[tuple[str, str]] = []
    others: list[str] = []
    files = discover_sources(paths, glob, lambda path, why: passed_over.append((path, why)),
                             lambda path: others.append(str(path)))
    if not files and not passed_over and not sync:
        choose_decoder(options.decoder)  # a bad flag is said first
        where = ", ".join(display_path(p) for p in paths)
        other = f" ({len(others)} other files: {by_extension(others)})" if others else ""
        raise NothingToIndex(f"{where}: no video files to index{other}; --glob picks other "
                             "names")
    plan, missing = SyncPlan(), 0
    tags = dict(metadata or {})
    for f in files:
        if not sources.is_url(f) and (meta := sidecar(f)) is not None:
            tags.setdefault(os.path.abspath(f), meta)

    def inspect(existing: VideoIndex) -> None:  # planned (and refused) before the encoder opens
        nonlocal plan, missing
        if sync:
            plan = plan_sync(existing, paths, files)
            check_mass_removal(existing, paths, plan.removals, max_removal)
        else:
            missing = len(missing_under(existing, paths, files))

    with open_run(bundle, index_dir, options=options, inspect=inspect, **opening) as (
            index, embed):
        index.record_skipped(paths, sorted(passed_over))
        moves, removed = apply_sync(index, plan)
        report = run_plans(index, files, options, embed, progress)
        for path, meta in tags.items():
            if not index.set_meta(path, meta):
                (opening.get("log") or log_stderr)(f"metadata: {path}: not in the index "
                                                   "(ignored)")
    report.moved, report.removed, report.missing = len(moves), len(removed), missing
    report.skipped_paths = sorted(passed_over)
    report.other_files = sorted(others)
    return report


@contextlib.contextmanager
def open_run(
    bundle: Bundle,
    index_dir: str | os.PathLike[str],
    *,
    options: PipelineOptions,
    backend: str = "auto",
    precision: str | None = None,
    dtype: str | None = None,
    segmenting: Segmenting | None = None,
    usearch_settings: dict[str, int | None] | None = None,
    log: Callable[[str], None] | None = None,
    runner: Runner | None = None,
    inspect: Callable[[VideoIndex], None] | None = None,
) -> Iterator[tuple[VideoIndex, Embed]]:
    """The index open for writing (created if missing) and the runner's :data:`Embed`.

    Refuses a read-only folder, a foreign index, another ``segmenting`` (the setting of a new
    index, default auto; ``None`` takes the index's) or an unavailable decoder before the
    encoder opens (a TensorRT build takes minutes); ``inspect`` sees an existing index (a
    reader) then too.
    """
    decoder = choose_decoder(options.decoder)
    runner = runner or open_local
    VideoIndex.check_writable(index_dir)
    if (Path(index_dir) / MANIFEST_NAME).is_file():
        with VideoIndex.open(index_dir, fingerprint=bundle.fingerprint, view=True) as existing:
            existing.require_segmenting(segmenting)
            segmenting = existing.segmenting
            if inspect is not None:
                inspect(existing)
    if segmenting is not None and segmenting.mode == "shots":
        shots.require()
    say = log or log_stderr
    say(f"decoder: {decoder.decoder.name}")
    say(Detail(f"  why: {decoder.reason}"))
    with runner(bundle, backend, precision, options, log) as (info, embed), \
            VideoIndex.open_or_create(
                index_dir, fingerprint=bundle.fingerprint, dim=bundle.embedding_dim,
                bundle_info=info, dtype=dtype, segmenting=segmenting,
                unit_vectors=bundle.unit_vectors,
                **(usearch_settings or {}),
            ) as index:
        yield index, embed
