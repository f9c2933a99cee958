"""The video decoders, one registry: ``--decoder auto|pyav|nvdec``.

A decoder is a row of :data:`DECODERS`: a name, why it cannot run here ("" if it can, decided
without touching CUDA), and its ``read(path, num_frames, threads)`` with the contract of
:func:`pig.engine.media.video.read_video` (same frame count, indices and sampling). ``auto`` takes
the first of :data:`AUTO_ORDER` that can run. Adding a decoder is one row.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pig.errors import PigError

if TYPE_CHECKING:
    from pig.engine.media.video import SampledFrames


class DecoderUnavailable(PigError):
    """The requested decoder cannot run on this machine."""


Reader = Callable[[str | os.PathLike[str], int, int], "SampledFrames"]


def _pyav_read(path: str | os.PathLike[str], num_frames: int, threads: int) -> SampledFrames:
    from pig.engine.media.video import read_video  # lazily: keeps the CLI's start-up light

    return read_video(path, num_frames, threads)


def _nvdec_missing() -> str:
    from pig.engine.media.nvdec import missing

    return missing()


def _nvdec_read(path: str | os.PathLike[str], num_frames: int, threads: int) -> SampledFrames:
    from pig.engine.media.nvdec import read_video_nvdec

    return read_video_nvdec(path, num_frames, threads)


@dataclass(frozen=True)
class Decoder:
    name: str
    missing: Callable[[], str]
    read: Reader
    about: str


DECODERS: dict[str, Decoder] = {d.name: d for d in (
    Decoder("pyav", lambda: "", _pyav_read, "FFmpeg through PyAV, on the CPU"),
    Decoder("nvdec", _nvdec_missing, _nvdec_read,
            "NVIDIA NVDEC through PyNvVideoCodec (H.264/HEVC/VP9/AV1; PyAV per file otherwise)"),
)}
AUTO_ORDER = ("nvdec", "pyav")
CHOICES = ("auto", *DECODERS)


@dataclass(frozen=True)
class DecoderChoice:
    decoder: Decoder
    reason: str

    def __str__(self) -> str:
        return f"{self.decoder.name}: {self.reason}"


def choose_decoder(name: str = "auto") -> DecoderChoice:
    """The decoder ``name`` stands for here, and why; DecoderUnavailable if it cannot run."""
    if name != "auto":
        if name not in DECODERS:
            raise DecoderUnavailable(f"unknown decoder {name!r} (choose from {', '.join(CHOICES)})")
        why = DECODERS[name].missing()
        if why:
            raise DecoderUnavailable(f"decoder {name} unavailable: {why}")
        return DecoderChoice(DECODERS[name], "as requested")
    skipped: list[str] = []
    for candidate in AUTO_ORDER:
        why = DECODERS[candidate].missing()
        if not why:
            note = f" (skipped {'; '.join(skipped)})" if skipped else ""
            return DecoderChoice(DECODERS[candidate], f"auto{note}")
        skipped.append(f"{candidate}: {why}")
    raise DecoderUnavailable(f"no decoder can run here ({'; '.join(skipped)})")
