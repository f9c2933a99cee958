"""Deterministic test clips and broken files, written with PyAV.

``make_clip`` encodes a synthetic clip whose frames are a pure function of
(frame index, size), so two runs give identical files and every frame is distinguishable.
The ``make_*`` helpers below it write the unreadable inputs that the error paths must survive.
Reused by other test modules: keep the signatures stable.

Import ``av`` before ``decord`` in any process that encodes VP9 here: decord's bundled FFmpeg
4.1/libvpx, loaded first, makes PyAV's libvpx-vp9 encoder fail to open.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

# Container chosen from the file suffix; codec names are FFmpeg encoder names.
DEFAULT_OPTIONS: dict[str, dict[str, str]] = {
    "libx264": {"preset": "ultrafast", "crf": "20"},
    "libvpx-vp9": {"deadline": "realtime", "cpu-used": "8", "crf": "30", "b": "0"},
    "mpeg4": {"qscale": "4"},
}


def synth_frame(index: int, width: int, height: int) -> np.ndarray:
    """RGB uint8 [height, width, 3]: colour gradients, a moving box and the index as a bar code.

    Strong chroma edges make colour-conversion differences visible; the bar code (16 cells in
    the top rows) makes every frame of a clip distinct.
    """
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    r = 255 * x / max(width - 1, 1)
    g = 255 * y / max(height - 1, 1)
    b = 127.5 + 127.5 * np.sin((x + 3 * y) / 9.0 + index / 3.0)
    img = np.stack([r, g, b], axis=-1)
    bw, bh = max(width // 4, 2), max(height // 4, 2)
    x0 = (index * 7) % max(width - bw, 1)
    y0 = (index * 5) % max(height - bh, 1)
    img[y0 : y0 + bh, x0 : x0 + bw] = (230.0, 40.0, 200.0)
    cell = max(width // 16, 1)
    bar = max(height // 12, 2)
    for bit in range(min(16, width // cell)):
        on = (index >> bit) & 1
        img[:bar, bit * cell : (bit + 1) * cell] = 255.0 if on else 0.0
    return np.ascontiguousarray(img.round().clip(0, 255).astype(np.uint8))


def make_clip(
    path: str | os.PathLike[str],
    codec: str = "libx264",
    size: tuple[int, int] = (160, 120),
    n_frames: int = 30,
    fps: int = 25,
    *,
    pix_fmt: str = "yuv420p",
    gop: int | None = None,
    bframes: int | None = None,
    pts: Sequence[int] | None = None,
    time_base: Fraction | None = None,
    rotation: float | None = None,
    color: dict[str, int] | None = None,
    audio: bool = False,
    options: dict[str, str] | None = None,
) -> Path:
    """Encode ``n_frames`` synthetic frames of ``size`` = (width, height) into ``path``.

    ``pts`` (in ``time_base``, default 1/fps) gives variable frame rate; ``rotation`` writes a
    display matrix (counter-clockwise degrees); ``color`` sets codec-context colour tags
    (``colorspace``, ``color_range``, ``color_primaries``, ``color_trc``) as AVCOL_* ints;
    ``audio`` adds a 1 kHz AAC track (or Opus in webm).
    """
    path = Path(path)
    width, height = size
    if pts is not None and len(pts) != n_frames:
        raise ValueError("pts must have n_frames entries")
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        cc = stream.codec_context
        cc.time_base = time_base or Fraction(1, fps)
        if gop is not None:
            cc.gop_size = gop
        if bframes is not None:
            cc.max_b_frames = bframes
        for name, value in (color or {}).items():
            setattr(cc, name, value)
        stream.options = {**DEFAULT_OPTIONS.get(codec, {}), **(options or {})}
        if rotation is not None:
            stream.set_display_rotation(rotation)
        astream = None
        if audio:
            astream = out.add_stream("libopus" if path.suffix == ".webm" else "aac", rate=48000)
        for i in range(n_frames):
            frame = av.VideoFrame.from_ndarray(synth_frame(i, width, height), format="rgb24")
            frame.pts = pts[i] if pts is not None else i
            frame.time_base = cc.time_base
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
        if astream is not None:
            _write_tone(out, astream, n_frames / fps)
    return path


def clip_maker(root: Path, specs: dict[str, dict]) -> Callable[[str], Path]:
    """``make(name)`` -> ``root/name``, encoded from ``specs[name]`` (``make_clip``'s keywords)
    the first time it is asked for."""

    def make(name: str) -> Path:
        path = root / name
        if not path.exists():
            make_clip(path, **specs[name])
        return path

    return make


def _write_tone(out: av.container.OutputContainer, stream: av.AudioStream, seconds: float) -> None:
    rate = stream.codec_context.sample_rate
    n = int(rate * seconds)
    tone = (0.2 * np.sin(2 * np.pi * 1000 * np.arange(n) / rate)).astype(np.float32)
    chunk = stream.codec_context.frame_size or 1024
    fmt = stream.codec_context.format.name
    for start in range(0, n, chunk):
        samples = tone[None, start : start + chunk]
        frame = av.AudioFrame.from_ndarray(samples, format="flt", layout="mono")
        frame.sample_rate = rate
        frame.pts = start
        if fmt != "flt":
            frame = av.AudioResampler(format=fmt, layout="mono", rate=rate).resample(frame)[0]
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def make_audio_only(path: str | os.PathLike[str], seconds: float = 1.0) -> Path:
    """A valid media file with one audio stream and no video (AAC in .m4a/.mp4, PCM in .wav)."""
    path = Path(path)
    codec = "pcm_s16le" if path.suffix == ".wav" else "aac"
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream(codec, rate=48000)
        if codec == "pcm_s16le":
            stream.layout = "mono"
        _write_tone(out, stream, seconds)
    return path


def make_zero_byte(path: str | os.PathLike[str]) -> Path:
    """An empty file."""
    path = Path(path)
    path.write_bytes(b"")
    return path


def make_not_video(path: str | os.PathLike[str]) -> Path:
    """A text file with a video suffix."""
    path = Path(path)
    path.write_text("this is not a video\n" * 50)
    return path


def make_truncated(src: str | os.PathLike[str], dst: str | os.PathLike[str],
                   keep: float = 0.5) -> Path:
    """The first ``keep`` fraction of ``src``'s bytes (for mp4 with moov at the end: no index)."""
    data = Path(src).read_bytes()
    dst = Path(dst)
    dst.write_bytes(data[: int(len(data) * keep)])
    return dst


def make_corrupt(src: str | os.PathLike[str], dst: str | os.PathLike[str],
                 start: float = 0.1, seed: int = 0) -> Path:
    """``src`` with every byte from ``start`` (fraction of the size) on replaced by noise.

    The container header survives; the coded frames do not.
    """
    data = bytearray(Path(src).read_bytes())
    lo = int(len(data) * start)
    data[lo:] = np.random.default_rng(seed).integers(0, 256, len(data) - lo, np.uint8).tobytes()
    dst = Path(dst)
    dst.write_bytes(bytes(data))
    return dst


def make_no_frames(path: str | os.PathLike[str], codec: str = "libx264",
                   size: tuple[int, int] = (64, 48)) -> Path:
    """A container header declaring a video stream, and no frames."""
    path = Path(path)
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = *size, "yuv420p"
        out.start_encoding()
    return path


def make_garbage_frames(path: str | os.PathLike[str], codec: str = "libx264",
                        n_frames: int = 10, seed: int = 0) -> Path:
    """A well-formed container whose video packets hold random bytes: demuxes, never decodes."""
    path = Path(path)
    rng = np.random.default_rng(seed)
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        frames = [av.VideoFrame.from_ndarray(synth_frame(i, 64, 48), format="rgb24")
                  for i in range(n_frames)]
        for i, frame in enumerate([*frames, None]):
            if frame is not None:
                frame.pts = i
            for packet in stream.encode(frame):
                garbage = av.Packet(rng.integers(0, 256, packet.size, np.uint8).tobytes())
                garbage.pts, garbage.dts = packet.pts, packet.dts
                garbage.time_base, garbage.stream = packet.time_base, stream
                garbage.is_keyframe = packet.is_keyframe
                out.mux(garbage)
    return path
