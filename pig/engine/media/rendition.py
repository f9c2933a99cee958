"""Browser renditions of indexed files: what a ``<video>`` element can play, on the index's
time base (seconds from the file's first frame).

* ``original``: an MP4/WebM whose codec and pixel format browsers play and whose first frame
  is at 0 s: served as it is.
* ``remux``: playable codec in another container (MKV, TS, FLV, ...) or a first frame past
  0 s: the video stream copied into an MP4 (no decoding), timestamps shifted so the first
  frame is at 0 s.
* ``transcode``: any other codec (MPEG-2, HEVC, 10-bit, WMV, Theora, ...): the hit's span is
  decoded and encoded to H.264 (libx264 in PyAV), starting at 0 s = the span's start.

Renditions are made once and kept in a bounded disk cache (least recently used out first);
one is made at a time (a transcode is CPU work: the server's threads must not pile up).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av

from pig.engine.host.fsutil import publish, user_cache_dir
from pig.engine.media.video import probe
from pig.errors import EnvironmentFault, VideoReadError

Kind = Literal["original", "remux", "transcode"]
PLAYABLE_CODECS = frozenset({"h264", "vp8", "vp9", "av1"})
PLAYABLE_PIX_FMTS = frozenset({"yuv420p", "yuvj420p"})
DIRECT_CONTAINERS = {  # FFmpeg demuxer -> codecs a browser plays in it
    "mov,mp4,m4a,3gp,3g2,mj2": frozenset({"h264", "vp9", "av1"}),
    "matroska,webm": frozenset({"vp8", "vp9", "av1"}),
}
MAX_TRANSCODE_SECONDS = 120.0  # longest span transcoded at once
MAX_SIDE = 1280  # transcodes are scaled down to fit
CACHE_BYTES = int(os.environ.get("PIG_PREVIEW_CACHE_BYTES", 2 << 30))
WAIT_SECONDS = 30.0  # a request waits this long for the one rendition slot, else 503
_SLOT = threading.BoundedSemaphore(1)


class PreviewBusy(EnvironmentFault):
    """Another rendition is being made (HTTP 503, try again)."""


@dataclass(frozen=True)
class Rendition:
    """How a file is shown in a browser, and why."""

    kind: Kind
    reason: str


_CODEC_NAMES = {"libdav1d": "av1", "libaom-av1": "av1", "libvpx": "vp8", "libvpx-vp9": "vp9"}


def choose(path: Path) -> Rendition:
    """The rendition ``path`` needs (``VideoReadError`` when it cannot be read)."""
    st = path.stat()
    return _choose(path, st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=1024)
def _choose(path: Path, size: int, mtime_ns: int) -> Rendition:
    p = probe(path)
    codec = _CODEC_NAMES.get(p.codec, p.codec)  # decoder name -> codec name
    playable = codec in PLAYABLE_CODECS and (p.pix_fmt or "") in PLAYABLE_PIX_FMTS
    if not playable:
        what = f"{codec} {p.pix_fmt or ''}".strip()
        return Rendition("transcode", f"{what} does not play in browsers: the span is "
                                      "transcoded to H.264")
    if codec not in DIRECT_CONTAINERS.get(p.container, frozenset()):
        return Rendition("remux", f"{codec} in {p.container.split(',')[0]}: copied into MP4")
    if p.start_s:
        return Rendition("remux", f"first frame at {p.start_s:g} s: copied into MP4 from 0 s")
    return Rendition("original", "plays as it is")


def _key(path: Path, kind: Kind, start: float, end: float) -> str:
    st = path.stat()
    raw = "\0".join(map(str, (path, st.st_size, st.st_mtime_ns, kind, round(start, 3),
                              round(end, 3))))
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def rendition_file(path: Path, kind: Kind, start: float = 0.0, end: float = 0.0) -> Path:
    """The cached MP4 of ``path`` (``remux``: whole file; ``transcode``: ``[start, end)``
    seconds from the first frame, at most ``MAX_TRANSCODE_SECONDS``), made if missing."""
    if kind == "transcode":
        end = min(max(end, start + 0.001), start + MAX_TRANSCODE_SECONDS)
    else:
        start = end = 0.0
    folder = user_cache_dir("previews")
    final = folder / f"{_key(path, kind, start, end)}.mp4"
    if final.is_file():
        os.utime(final)  # recently used
        return final
    if not _SLOT.acquire(timeout=WAIT_SECONDS):
        raise PreviewBusy(f"{path}: another preview is being made; try again")
    try:
        if final.is_file():
            return final
        folder.mkdir(parents=True, exist_ok=True)
        tmp = final.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            if kind == "remux":
                _remux(path, tmp)
            else:
                _transcode(path, tmp, start, end)
            publish(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        _trim(folder, keep=final)
        return final
    finally:
        _SLOT.release()


def _trim(folder: Path, keep: Path) -> None:
    """Delete the least recently used renditions past ``CACHE_BYTES``."""
    files = sorted(folder.glob("*.mp4"), key=lambda f: f.stat().st_mtime)
    total = sum(f.stat().st_size for f in files)
    for f in files:
        if total <= CACHE_BYTES:
            break
        if f != keep:
            total -= f.stat().st_size
            f.unlink(missing_ok=True)


@contextlib.contextmanager
def _input(path: Path) -> Iterator[tuple[av.container.InputContainer, av.VideoStream]]:
    try:
        with av.open(str(path), metadata_errors="ignore") as src:
            stream = src.streams.best("video")
            if not isinstance(stream, av.VideoStream):
                raise VideoReadError(path, "no video stream")
            yield src, stream
    except av.error.FFmpegError as exc:
        raise VideoReadError(path, f"preview failed (FFmpeg: {exc.strerror or exc})") from exc


def _first_pts(src: av.container.InputContainer, stream: av.VideoStream) -> int:
    """The smallest pts of the stream (its first frame), from one demux pass."""
    return min((p.pts for p in src.demux(stream) if p.pts is not None), default=0)


def _remux(path: Path, out: Path) -> None:
    with _input(path) as (src, stream):
        first = _first_pts(src, stream)
    with _input(path) as (src, stream), av.open(str(out), "w", format="mp4",
                                                options={"movflags": "+faststart"}) as dst:
        ost = dst.add_stream_from_template(stream)
        for packet in src.demux(stream):
            if packet.size == 0:
                continue
            if packet.pts is not None:
                packet.pts -= first
            if packet.dts is not None:
                packet.dts -= first
            packet.stream = ost
            dst.mux(packet)


def _span_frames(path: Path, start: float, end: float
                 ) -> Iterator[tuple[float, av.VideoFrame, Fraction]]:
    """(time from the first frame, frame, average rate) of the frames in ``[start, end)``.
    Decoding starts at a seek to the keyframe before ``start``; when the seek fails or lands
    past ``start`` (MPEG-TS), it decodes through from the first frame."""
    with _input(path) as (src, stream):
        first = _first_pts(src, stream)
    for seeking in ((True, False) if start > 0 else (False,)):
        with _input(path) as (src, stream):
            tb = stream.time_base or Fraction(1, 90000)
            rate = stream.average_rate or Fraction(25)
            if seeking:
                try:
                    src.seek(first + int(start / tb), stream=stream, backward=True)
                except av.error.FFmpegError:
                    continue
            for n, frame in enumerate(_decoded(src, stream)):
                t = float((frame.pts - first) * tb if frame.pts is not None else n / rate)
                if n == 0 and seeking and t > start + 1e-6:
                    break  # landed past the span's start: decode through instead
                if t >= end:
                    return
                if t >= start - 1e-6:
                    yield t, frame, rate
            else:
                return


def _decoded(src: av.container.InputContainer, stream: av.VideoStream
             ) -> Iterator[av.VideoFrame]:
    """The stream's frames; empty packets (Ogg's repeated frames) are not sent to the
    decoder, which would take them for the end of the stream."""
    cc = stream.codec_context
    for packet in src.demux(stream):
        if packet.size:
            yield from cc.decode(packet)
    yield from cc.decode(None)


def _transcode(path: Path, out: Path, start: float, end: float) -> None:
    """H.264 MP4 of ``[start, end)`` whose 0 s is ``start`` (scaled to fit ``MAX_SIDE``)."""
    with av.open(str(out), "w", format="mp4", options={"movflags": "+faststart"}) as dst:
        ost = None
        width = height = 0
        for t, frame, rate in _span_frames(path, start, end):
            if ost is None:
                ost = dst.add_stream("libx264", rate=rate)
                ost.options = {"preset": "veryfast", "crf": "23"}
                ost.codec_context.thread_count = 2
                ost.codec_context.time_base = Fraction(1, 1000)
                ost.pix_fmt = "yuv420p"
                scale = min(1.0, MAX_SIDE / max(frame.width, frame.height))
                width = max(2, int(frame.width * scale) // 2 * 2)
                height = max(2, int(frame.height * scale) // 2 * 2)
                ost.width, ost.height = width, height
            img = frame.reformat(width=width, height=height, format="yuv420p")
            img.pts = round((t - start) * 1000)
            img.time_base = Fraction(1, 1000)
            dst.mux(ost.encode(img))
        if ost is None:
            raise VideoReadError(path, f"no frame between {start:g} s and {end:g} s")
        dst.mux(ost.encode(None))
