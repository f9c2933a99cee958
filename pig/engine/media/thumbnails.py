"""One small JPEG per segment, made at index time from a frame the segment already decoded
(its middle sampled frame), kept in the catalog and served at
``GET /v1/videos/{id}/thumbnail?segment=N``."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np

THUMB_MAX = 160  # pixels: the longer side of a thumbnail (aspect kept)


def thumbnail(frames: np.ndarray) -> bytes:
    """A JPEG of the middle frame of ``frames`` (uint8 ``[T, H, W, 3]`` RGB), the longer side
    scaled to at most ``THUMB_MAX`` pixels (even sizes, as JPEG 4:2:0 wants), FFmpeg's
    default MJPEG quality: 3.5 KB for a 160x90 thumbnail of a 720p frame."""
    rgb = np.ascontiguousarray(frames[len(frames) // 2])
    h, w = rgb.shape[:2]
    scale = min(1.0, THUMB_MAX / max(h, w))
    tw, th = max(2, round(w * scale / 2) * 2), max(2, round(h * scale / 2) * 2)
    cc = av.CodecContext.create("mjpeg", "w")
    cc.width, cc.height, cc.pix_fmt = tw, th, "yuvj420p"
    cc.time_base = Fraction(1, 25)
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
        width=tw, height=th, format="yuvj420p", interpolation="AREA")
    return b"".join(bytes(p) for p in (*cc.encode(frame), *cc.encode(None)))
