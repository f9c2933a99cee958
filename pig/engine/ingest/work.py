"""The per-file work every runner shares: decode a file's segments, preprocess one."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, replace

import av
import numpy as np

from pig.engine.index import Entry, Plan
from pig.engine.media import sources
from pig.engine.media.preprocess import preprocess_frames
from pig.engine.media.segments import Segmenting
from pig.engine.media.thumbnails import thumbnail
from pig.engine.media.video import VideoSegment, WholeReader, read_segments, stream_facts
from pig.engine.recipe import PreprocessRecipe
from pig.errors import VideoReadError


@dataclass(frozen=True)
class FileFailure:
    """A file that cannot be indexed, and why (recorded in the catalog)."""

    path: str
    reason: str


def decode_file(plan: Plan, recipe: PreprocessRecipe, segmenting: Segmenting,
                whole_reader: WholeReader | None = None,
                started: Callable[[Entry, int], None] | None = None,
                thumbnails: bool = True
                ) -> Generator[VideoSegment | Entry | FileFailure, None, None]:
    """The per-file work of every indexing engine (one decode pass, bounded memory).

    Yields each segment's sampled frames (:class:`~pig.engine.media.video.VideoSegment`, in
    order, from ``plan.resume`` on), then the file's :class:`Entry` (stat and digest taken
    before decoding, one span per segment yielded), or a :class:`FileFailure` instead.
    ``started(entry, total)`` is called once the file's segment count is known (before its
    first segment), for runners that commit a long file's segments as they go (and make
    each segment's thumbnail themselves: ``thumbnails=False``).
    """
    spans, frames, thumbs = [], 0, []
    try:
        with _local(plan) as (local, entry):
            facts = stream_facts(local)
            on_total = None if started is None else (
                lambda total: started(replace(entry, facts=facts), total))
            for seg in read_segments(local, recipe.num_frames, segmenting, threads=1,
                                     sampling=recipe.sampling, whole_reader=whole_reader,
                                     first=plan.resume, on_total=on_total):
                spans.append((seg.start_s, seg.end_s))
                frames = seg.frame_count
                if thumbnails:
                    thumbs.append(segment_thumbnail(seg))
                yield seg
    except VideoReadError as err:
        yield FileFailure(plan.path, err.reason)
        return
    except OSError as err:
        yield FileFailure(plan.path, f"cannot read the file ({err.strerror})")
        return
    except Exception as err:  # an unforeseen decoder error must not stop the run
        yield FileFailure(plan.path, f"unexpected {type(err).__name__}: {err}")
        return
    yield replace(entry, frames=frames, spans=tuple(spans), facts=facts,
                  thumbnails=tuple(thumbs))


def segment_thumbnail(segment: VideoSegment) -> bytes | None:
    """The segment's thumbnail; None if it cannot be made (the file still indexes)."""
    try:
        return thumbnail(segment.frames)
    except (av.error.FFmpegError, ValueError):
        return None


@contextlib.contextmanager
def _local(plan: Plan) -> Iterator[tuple[str, Entry]]:
    """A local file to decode for ``plan`` and its :class:`Entry` (stat and digest taken
    before decoding): the file itself, or an object's spooled copy."""
    if not sources.is_url(plan.path):
        yield plan.path, Entry.from_file(plan.path, frames=0, digest=plan.digest)
        return
    with sources.spooled(plan.path) as (local, st, digest):
        yield local, Entry(plan.path, st.size, st.mtime_ns, digest, 0, etag=st.etag)


def preprocess_segment(segment: VideoSegment, recipe: PreprocessRecipe, out: np.ndarray,
                       path: str) -> FileFailure | None:
    """Preprocess one decoded segment of ``path`` into ``out`` (a batch slot); on failure
    zeroes the slot and returns the file's failure (its other segments are then void)."""
    try:
        preprocess_frames(segment.frames, recipe, out=out, threads=1)
    except (ValueError, TypeError) as err:
        out[...] = 0
        return FileFailure(path, f"preprocessing failed ({err})")
    return None
