"""Captioned videos for calibration and the accuracy report, read through the engine's data path.

One small protocol, :class:`CaptionedVideos`, and two providers: :class:`CaptionedFolder`
(a user's folder of videos and a captions file, ``video,caption`` CSV or JSON lines) and
``pig.demo.dataset.DemoClips`` (the synthetic demo clips). Frames go through
``pig.engine.media.video.read_video`` (PyAV, official linspace sampling) and
``pig.engine.media.preprocess.preprocess_frames`` (the C++ resize + normalise) with the
bundle's recipe; captions through ``pig.engine.tokenizer.ClipTokenizer`` with its tokenizer
spec. So calibration ranges and accuracy figures are those of what ``pig-engine index`` /
``search`` feed the graphs.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

import numpy as np

from pig.engine.host.regular_file import open_regular
from pig.engine.media.preprocess import preprocess_frames
from pig.engine.media.video import read_video
from pig.engine.recipe import PreprocessRecipe, TokenizerSpec
from pig.engine.tokenizer import ClipTokenizer
from pig.errors import PigError, VideoReadError

T = TypeVar("T")
MAX_CAPTIONS_BYTES = 64 << 20  # a captions file larger than this is refused, not read
CAPTION_COLUMNS = ("video", "caption")


@dataclass(frozen=True)
class Video:
    """One video of a set: its key, and its ``pixel_values`` ``[T, 3, S, S]`` float32, or
    ``None`` and why it could not be read (``error``: ``"path: reason"``)."""

    key: Hashable
    pixels: np.ndarray | None
    error: str = ""


class CaptionedVideos(Protocol):
    """Videos and captions; a caption's key names the video it describes (keys equal for
    interchangeable videos), or is ``None`` where the set pairs nothing (calibration only)."""

    source: str  # what the report names as its data

    def captions(self) -> list[tuple[Hashable | None, str]]:
        """Every ``(video key, caption)`` of the set, in a fixed order."""
        ...

    def videos(self, recipe: PreprocessRecipe, limit: int | None = None) -> Iterator[Video]:
        """At most ``limit`` videos (evenly spread over the set), read one at a time."""
        ...


def spread(items: list[T], limit: int | None) -> list[T]:
    """At most ``limit`` items evenly spread over ``items`` (keeps order)."""
    if limit is None or len(items) <= limit:
        return items
    return [items[i] for i in np.linspace(0, len(items) - 1, limit).astype(int)]


def read_captions(path: Path) -> list[tuple[str, str]]:
    """``(video, caption)`` rows of a captions file: CSV with a ``video,caption`` header
    (more columns are ignored), or JSON lines of ``{"video": ..., "caption": ...}``."""
    try:
        with open_regular(path) as (fd, st):
            if st.st_size > MAX_CAPTIONS_BYTES:
                raise PigError(f"{path}: captions file over {MAX_CAPTIONS_BYTES >> 20} MiB")
            with open(fd, "rb", closefd=False) as f:
                text = f.read(st.st_size).decode("utf-8-sig")
    except OSError as err:
        raise PigError(f"{path}: cannot read captions ({err.strerror or err})") from None
    except UnicodeDecodeError:
        raise PigError(f"{path}: captions file is not UTF-8") from None
    rows = _json_lines(path, text) if text.lstrip().startswith("{") else _csv(path, text)
    if not rows:
        raise PigError(f"{path}: no captions (expected a video,caption CSV or JSON lines)")
    return rows


def _row(path: Path, line: int, video: object, caption: object) -> tuple[str, str]:
    if not isinstance(video, str) or not video.strip():
        raise PigError(f"{path}:{line}: no video name")
    if not isinstance(caption, str) or not caption.strip():
        raise PigError(f"{path}:{line}: no caption")
    return video.strip(), caption.strip()


def _json_lines(path: Path, text: str) -> list[tuple[str, str]]:
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            raise PigError(f"{path}:{n}: not a JSON object") from None
        if not isinstance(obj, dict):
            raise PigError(f"{path}:{n}: not a JSON object")
        rows.append(_row(path, n, obj.get("video"), obj.get("caption")))
    return rows


def _csv(path: Path, text: str) -> list[tuple[str, str]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    header = [h.strip().lower() for h in next(reader, [])]
    if not set(CAPTION_COLUMNS) <= set(header):
        raise PigError(f"{path}:1: expected a header with the columns video,caption "
                       f"(or JSON lines), got {','.join(header)[:80]!r}")
    iv, ic = header.index("video"), header.index("caption")
    rows = []
    for fields in reader:
        if not any(f.strip() for f in fields):
            continue
        if len(fields) <= max(iv, ic):
            raise PigError(f"{path}:{reader.line_num}: expected video,caption")
        rows.append(_row(path, reader.line_num, fields[iv], fields[ic]))
    return rows


def read_pixels(path: Path, recipe: PreprocessRecipe) -> np.ndarray:
    """``pixel_values`` ``[T, 3, S, S]`` float32 of one video, as the engine reads it."""
    return preprocess_frames(read_video(path, recipe.num_frames).frames, recipe)


class CaptionedFolder:
    """A user's captioned videos: ``folder`` and a captions file naming videos relative to it
    (several captions per video are fine). A video's key is its name in the file."""

    def __init__(self, folder: Path, captions: Path) -> None:
        if not folder.is_dir():
            raise PigError(f"{folder}: not a folder of videos")
        self.folder = folder
        self._rows = read_captions(captions)
        self.source = f"{folder} with {captions}"

    def captions(self) -> list[tuple[Hashable | None, str]]:
        return list(self._rows)

    def videos(self, recipe: PreprocessRecipe, limit: int | None = None) -> Iterator[Video]:
        for name in spread(list(dict.fromkeys(v for v, _ in self._rows)), limit):
            path = self.folder / name
            try:
                yield Video(name, read_pixels(path, recipe))
            except VideoReadError as err:
                yield Video(name, None, str(err))


@dataclass
class CalibrationSet:
    """``pixel_values`` float32 [N, T, 3, S, S] and ``input_ids`` int64 [M, L]."""

    pixel_values: np.ndarray
    input_ids: np.ndarray
    source: str
    skipped: list[str] = field(default_factory=list)  # "path: reason" of unreadable videos

    def provenance(self) -> dict[str, object]:
        return {"source": self.source, "videos": len(self.pixel_values),
                "captions": len(self.input_ids), "videos_skipped": len(self.skipped)}


def calibration_set(data: CaptionedVideos, recipe: PreprocessRecipe, spec: TokenizerSpec,
                    max_videos: int = 64, max_captions: int = 256) -> CalibrationSet:
    """At most ``max_videos`` videos and ``max_captions`` captions of ``data``, evenly
    spread, as model inputs; an error when no video can be read."""
    pixels, skipped = [], []
    for video in data.videos(recipe, max_videos):
        if video.pixels is None:
            skipped.append(video.error)
        else:
            pixels.append(video.pixels)
    if not pixels:
        raise PigError(f"{data.source}: no readable video"
                       + (f" (first: {skipped[0]})" if skipped else ""))
    texts = spread([c for _, c in data.captions()], max_captions)
    return CalibrationSet(np.stack(pixels), ClipTokenizer(spec).encode(texts), data.source,
                          skipped)
