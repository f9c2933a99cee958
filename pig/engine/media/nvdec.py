"""NVDEC decoding through NVIDIA's PyNvVideoCodec (``pip install 'pig-engine[nvdec]'``).

Same frames as :func:`pig.engine.media.video.read_video`: the frame count n and the sampled indices
come from the same PyAV demux pass (:func:`pig.engine.media.video.probe`), and
``SimpleDecoder.get_batch_frames_by_index`` returns those frames (presentation order) as RGB,
turned upright by the same display-matrix rule. A file NVDEC cannot take (codec, container,
pixel format, B-frame streams without usable pts, or a frame count that disagrees with n) is
decoded by PyAV instead, and the returned :class:`~pig.engine.media.video.SampledFrames` says so in
``decoder``. The colour conversion is NVDEC's (BT.601/709 from the stream, on the GPU), not
swscale's, so pixels differ from PyAV's by a few levels.

Written against PyNvVideoCodec 2.x's documented API (``SimpleDecoder``, ``OutputColorType``);
it has not been executed in this project's CI, which has no GPU. CUDA is touched only after
:func:`pig.engine.host.gpu.gpu_or_none` found a GPU.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from pig.engine.host import gpu as gpu_probe
from pig.engine.media import video

MODULE = "PyNvVideoCodec"
# FFmpeg codec name -> what NVDEC calls it (Video Codec SDK: NVDEC decodes these on every GPU
# generation PyNvVideoCodec supports; AV1 from Ampere on, checked by the decoder itself)
CODECS = {"h264": "H.264", "hevc": "HEVC", "vp9": "VP9", "av1": "AV1"}
# SimpleDecoder needs a seekable container with an index (its documentation)
CONTAINERS = ("mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm")
PIX_FMTS = ("yuv420p", "yuvj420p", "nv12")  # 8-bit 4:2:0: NVDEC's RGB output path


def missing() -> str:
    """Why NVDEC cannot run here ("" if it can), without importing CUDA."""
    gpu, why = gpu_probe.gpu_or_none()
    if gpu is None:
        return why
    if not _installed():
        return f"{MODULE} is not installed (pip install 'pig-engine[nvdec]')"
    return ""


def _installed() -> bool:
    try:
        return importlib.util.find_spec(MODULE) is not None
    except (ImportError, ValueError):  # ValueError: in sys.modules without a spec
        return MODULE in sys.modules


def unsupported(info: video.VideoProbe) -> str:
    """Why NVDEC does not take a file with these stream facts ("" if it does)."""
    if info.codec not in CODECS:
        return f"codec {info.codec!r} (NVDEC here: {', '.join(CODECS.values())})"
    if info.container not in CONTAINERS:
        return f"container {info.container!r} (needs mp4/mov or mkv/webm)"
    if info.pix_fmt not in PIX_FMTS:
        return f"pixel format {info.pix_fmt!r} (NVDEC RGB output: 8-bit 4:2:0)"
    if not info.ordered_pts:
        return "no usable pts (frame numbers would not match PyAV's)"
    return ""


def _host_rgb(frame: Any, height: int, width: int) -> np.ndarray:
    """A decoded frame in host memory (``use_device_memory=False``) as uint8 [H, W, 3]."""
    try:
        arr = np.from_dlpack(frame)
    except (AttributeError, BufferError, TypeError, RuntimeError):
        size = height * width * 3  # DLPack absent: read the packed RGB plane by address
        buf = (ctypes.c_uint8 * size).from_address(frame.GetPtrToPlane(0))
        arr = np.frombuffer(memoryview(buf), dtype=np.uint8)
    return np.array(arr, dtype=np.uint8).reshape(height, width, 3)


def read_video_nvdec(path: str | os.PathLike[str], num_frames: int,
                     threads: int = 0, gpu_id: int = 0) -> video.SampledFrames:
    """:func:`pig.engine.media.video.read_video` with NVDEC; PyAV for files NVDEC cannot take."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    path = Path(path)
    info = video.probe(path)
    why = unsupported(info)
    if not why:
        try:
            return _decode(path, info, num_frames, gpu_id)
        except _Fallback as fb:
            why = str(fb)
    return replace(video.read_video(path, num_frames, threads), decoder=f"pyav (nvdec: {why})")


class _Fallback(Exception):
    """NVDEC could not decode this file; the message says why."""


def _decode(path: Path, info: video.VideoProbe, num_frames: int,
            gpu_id: int) -> video.SampledFrames:
    import PyNvVideoCodec as nvc  # only after missing() == "": a GPU is present

    n = info.frame_count
    indices = video.sample_indices(n, num_frames)
    targets = np.unique(indices).tolist()
    try:
        decoder = nvc.SimpleDecoder(str(path), gpu_id=gpu_id, use_device_memory=False,
                                    output_color_type=nvc.OutputColorType.RGB)
        if len(decoder) != n:
            raise _Fallback(f"NVDEC counts {len(decoder)} frames, the stream has {n}")
        frames = decoder.get_batch_frames_by_index(targets)
        height, width = info.height, info.width
        if len(frames) != len(targets):
            raise _Fallback(f"NVDEC returned {len(frames)} of {len(targets)} frames")
        rgb = {t: video.upright(_host_rgb(f, height, width), info.rotation)
               for t, f in zip(targets, frames, strict=True)}
    except _Fallback:
        raise
    except Exception as exc:  # PyNvVideoCodec raises RuntimeError/ValueError of its own
        raise _Fallback(f"NVDEC failed: {type(exc).__name__}: {exc}") from exc
    out = np.ascontiguousarray(np.stack([rgb[t] for t in indices.tolist()]))  # [T, H, W, 3]
    return video.SampledFrames(out, n, indices, info.fps, info.duration, decoder="nvdec")
