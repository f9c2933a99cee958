"""NVDEC decoding through NVIDIA's PyNvVideoCodec (``pip install 'pig-engine[nvdec]'``).

Same frames as :func:`pig.engine.media.video.read_video`: the frame count n and the sampled
indices come from the same PyAV demux pass (:func:`pig.engine.media.video.probe`), and
``SimpleDecoder.get_batch_frames_by_index`` returns those frames (presentation order) as RGB,
turned upright by the same display-matrix rule. NVDEC checks itself, and any doubt sends the
file to PyAV (the returned :class:`~pig.engine.media.video.SampledFrames` says why in
``decoder``):

* **Availability** (:func:`missing`, once per process): a GPU (the probe, no CUDA), the
  package importable (its import runs a driver check of its own) and the video driver
  library ``libnvcuvid.so.1`` loadable (containers need ``NVIDIA_DRIVER_CAPABILITIES`` with
  ``video``). Without them ``auto`` takes PyAV and says why; ``--decoder nvdec`` refuses.
* **Stream facts**: codec, container and pixel format NVDEC takes; a colour matrix stated as
  BT.601 or BT.709 and limited range. PyAV converts an unstated matrix as BT.601 where NVDEC
  may take BT.709, and full-range streams differ, so those files go to PyAV.
* **Colours, measured**: NVDEC's frame 0 is compared with PyAV's frame 0 (decoded by the
  probe anyway); a mean difference above :data:`MAX_MEAN_LEVELS` falls back.
* **Frame identity**: every returned frame's timestamp must equal PyAV's demux pts of the
  frame asked for (NVDEC may return another frame near the end of mov/mkv/webm files, and
  mp4 seeks use decode-order index entries); a frame without a timestamp or a mismatch
  falls back.

One decoder per thread is kept and pointed at the next file (``reconfigure_decoder``): its
construction is the dominant per-file cost. CUDA is touched only after the GPU probe.
Written against PyNvVideoCodec 2.x's documented API; in CI it runs through a stand-in
module, on a GPU through ``scripts/gpu_check.sh``.
"""

from __future__ import annotations

import ctypes
import functools
import importlib
import importlib.util
import os
import sys
import threading
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
PIX_FMTS = ("yuv420p", "nv12")  # 8-bit 4:2:0 (yuvj420p is full range: PyAV's)
# AVColorSpace numbers whose matrix both convert alike: BT.709, BT.470BG and SMPTE 170M
# (BT.601); AVColorRange 1: limited ("tv") range
MATRICES = {1: "BT.709", 5: "BT.601", 6: "BT.601"}
LIMITED_RANGE = 1
# frame 0, NVDEC vs PyAV: mean |difference| in 8-bit levels above which the file falls back
# (chroma upsampling differs by a level or two; a wrong matrix or range shifts 5-20 levels)
MAX_MEAN_LEVELS = 3.0
DRIVER_LIBRARY = "libnvcuvid.so.1"


def missing() -> str:
    """Why NVDEC cannot run here ("" if it can), without touching CUDA before a GPU is found;
    the import and driver probe run once per process."""
    gpu, why = gpu_probe.gpu_or_none()
    if gpu is None:
        return why
    if not _installed():
        return f"{MODULE} is not installed (pip install 'pig-engine[nvdec]')"
    return _import_and_driver()


def _installed() -> bool:
    try:
        return importlib.util.find_spec(MODULE) is not None
    except (ImportError, ValueError):  # ValueError: in sys.modules without a spec
        return MODULE in sys.modules


@functools.cache
def _import_and_driver() -> str:
    """Import PyNvVideoCodec (which checks the driver itself) and load the video driver
    library; "" when both work, else why not."""
    try:
        importlib.import_module(MODULE)
    except Exception as exc:  # ImportError, or the RuntimeError/OSError of its driver check
        return f"{MODULE} cannot be imported ({type(exc).__name__}: {exc})"
    return _driver_library()


def _driver_library() -> str:
    """"" if NVDEC's driver library loads, else why not."""
    try:
        ctypes.CDLL(DRIVER_LIBRARY)
    except OSError as exc:
        return (f"the NVIDIA video driver library {DRIVER_LIBRARY} is missing ({exc}); in a "
                "container set NVIDIA_DRIVER_CAPABILITIES to include video")
    return ""


def clear_availability_cache() -> None:
    """Forget the import and driver probe (tests that fake them)."""
    _import_and_driver.cache_clear()


def unsupported(info: video.VideoProbe) -> str:
    """Why NVDEC does not take a file with these stream facts ("" if it does)."""
    if info.codec not in CODECS:
        return f"codec {info.codec!r} (NVDEC here: {', '.join(CODECS.values())})"
    if info.container not in CONTAINERS:
        return f"container {info.container!r} (needs mp4/mov or mkv/webm)"
    if info.pix_fmt not in PIX_FMTS:
        return f"pixel format {info.pix_fmt!r} (NVDEC RGB output: 8-bit 4:2:0)"
    if not info.ordered_pts or info.pts is None:
        return "no usable pts (frame numbers would not match PyAV's)"
    if info.colorspace not in MATRICES:
        return (f"colour matrix {info.colorspace} (unstated or other: PyAV converts it its "
                "own way; NVDEC here: stated BT.601/BT.709)")
    if info.color_range != LIMITED_RANGE:
        return f"colour range {info.color_range} (NVDEC here: limited range only)"
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
    info = video.probe(path, first_rgb=True)
    why = unsupported(info)
    if not why:
        try:
            return _decode(path, info, num_frames, gpu_id)
        except _Fallback as fb:
            why = str(fb)
    return replace(video.read_video(path, num_frames, threads), decoder=f"pyav (nvdec: {why})")


class _Fallback(Exception):
    """NVDEC could not decode this file; the message says why."""


_local = threading.local()  # one decoder per decoding thread, reused across files


def _decoder_for(path: Path, gpu_id: int) -> Any:
    """This thread's decoder pointed at ``path`` (reconfigured, or made when there is none or
    reconfiguring fails)."""
    import PyNvVideoCodec as nvc  # only after missing() == "": a GPU is present

    held = getattr(_local, "decoder", None)
    if held is not None and getattr(_local, "gpu_id", None) == gpu_id:
        try:
            held.reconfigure_decoder(str(path))
            return held
        except Exception:  # another codec or size it cannot take: a new decoder below
            _local.decoder = None
    _local.decoder = nvc.SimpleDecoder(str(path), gpu_id=gpu_id, use_device_memory=False,
                                       output_color_type=nvc.OutputColorType.RGB)
    _local.gpu_id = gpu_id
    return _local.decoder


def _check_timestamps(frames: list[Any], targets: list[int], pts: tuple[int, ...]) -> None:
    """Each returned frame must carry the demux pts of the frame asked for."""
    for t, f in zip(targets, frames, strict=True):
        got = getattr(f, "timestamp", None)
        if got is None:
            raise _Fallback("NVDEC frames carry no timestamp to check")
        if int(got) != pts[t]:
            raise _Fallback(f"NVDEC returned pts {int(got)} for frame {t} (pts {pts[t]})")


def _check_colours(first: np.ndarray, reference: np.ndarray | None) -> None:
    """NVDEC's frame 0 against PyAV's (both before rotation)."""
    if reference is None or reference.shape != first.shape:
        raise _Fallback("no PyAV frame 0 of the same size to check NVDEC's colours against")
    mean = float(np.abs(first.astype(np.int16) - reference.astype(np.int16)).mean())
    if mean > MAX_MEAN_LEVELS:
        raise _Fallback(f"NVDEC's colours differ from PyAV's by {mean:.1f} levels on frame 0 "
                        f"(limit {MAX_MEAN_LEVELS})")


def _decode(path: Path, info: video.VideoProbe, num_frames: int,
            gpu_id: int) -> video.SampledFrames:
    n = info.frame_count
    indices = video.sample_indices(n, num_frames)
    targets = np.unique(indices).tolist()
    assert info.pts is not None  # unsupported() refused files without
    try:
        decoder = _decoder_for(path, gpu_id)
        if len(decoder) != n:
            raise _Fallback(f"NVDEC counts {len(decoder)} frames, the stream has {n}")
        frames = decoder.get_batch_frames_by_index(targets)
        if len(frames) != len(targets):
            raise _Fallback(f"NVDEC returned {len(frames)} of {len(targets)} frames")
        _check_timestamps(frames, targets, info.pts)
        raw = {t: _host_rgb(f, info.height, info.width) for t, f in zip(targets, frames,
                                                                       strict=True)}
        _check_colours(raw[0], info.first_rgb)  # targets always hold frame 0
        rgb = {t: video.upright(r, info.rotation) for t, r in raw.items()}
    except _Fallback:
        raise
    except Exception as exc:  # PyNvVideoCodec raises RuntimeError/ValueError of its own
        _local.decoder = None  # a decoder in an unknown state is not reused
        raise _Fallback(f"NVDEC failed: {type(exc).__name__}: {exc}") from exc
    out = np.ascontiguousarray(np.stack([rgb[t] for t in indices.tolist()]))  # [T, H, W, 3]
    return video.SampledFrames(out, n, indices, info.fps, info.duration, decoder="nvdec")
