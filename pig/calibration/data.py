"""Calibration inputs, read through the engine's own data path.

Frames: ``pig.engine.media.walk.discover`` -> ``pig.engine.media.video.read_video`` (PyAV, official
linspace sampling) -> ``pig.engine.media.preprocess.preprocess_frames`` (the C++ resize + normalise)
with the bundle's recipe; captions: ``pig.engine.tokenizer.ClipTokenizer`` with the bundle's
tokenizer spec. So the calibration ranges are those of what ``pig-engine index`` / ``search``
will feed the graphs. The default set ("demo") is rendered from the training split of the
synthetic demo clips (``pig.demo.synth``), never from the held-out clips the report evaluates.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np

from pig.engine.media.preprocess import preprocess_frames
from pig.engine.media.video import read_video
from pig.engine.media.walk import discover
from pig.engine.recipe import PreprocessRecipe, TokenizerSpec
from pig.engine.tokenizer import ClipTokenizer
from pig.errors import PigError, VideoReadError

DEMO = "demo"
T = TypeVar("T")


@dataclass
class CalibrationSet:
    """``pixel_values`` float32 [N, T, 3, S, S] and ``input_ids`` int64 [M, L]."""

    pixel_values: np.ndarray
    input_ids: np.ndarray
    source: str  # the videos folder, or "demo"
    captions_source: str
    skipped: list[str] = field(default_factory=list)  # "path: reason" of undecodable videos

    def provenance(self) -> dict[str, object]:
        return {"videos_source": self.source, "captions_source": self.captions_source,
                "videos": len(self.pixel_values), "captions": len(self.input_ids),
                "videos_skipped": len(self.skipped)}


def _spread(items: list[T], limit: int) -> list[T]:
    """At most ``limit`` items evenly spread over ``items`` (keeps order)."""
    if len(items) <= limit:
        return items
    return [items[i] for i in np.linspace(0, len(items) - 1, limit).astype(int)]


def read_captions(path: Path, limit: int) -> list[str]:
    """Non-empty lines of a UTF-8 text file, one caption per line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise PigError(f"{path}: cannot read captions ({err})") from None
    captions = [s.strip() for s in lines if s.strip()]
    if not captions:
        raise PigError(f"{path}: no captions (expected one caption per line)")
    return _spread(captions, limit)


def read_videos(videos: Path, recipe: PreprocessRecipe, limit: int
                ) -> tuple[np.ndarray, list[str]]:
    """Preprocessed ``pixel_values`` of up to ``limit`` videos under ``videos``, and the
    videos that could not be decoded (``"path: reason"``)."""
    if not videos.is_dir():
        raise PigError(f"{videos}: not a folder of calibration videos")
    paths = _spread(discover([videos]), limit)
    out, skipped = [], []
    for path in paths:
        try:
            frames = read_video(path, recipe.num_frames).frames
        except VideoReadError as err:
            skipped.append(str(err))
            continue
        out.append(preprocess_frames(frames, recipe))
    if not out:
        raise PigError(f"{videos}: no decodable video among {len(paths)} file(s)"
                       + (f" (first: {skipped[0]})" if skipped else ""))
    return np.stack(out), skipped


def from_files(videos: Path, captions: Path, recipe: PreprocessRecipe, spec: TokenizerSpec,
               max_videos: int = 64, max_captions: int = 256) -> CalibrationSet:
    """The user's calibration set: a folder of videos and a captions file."""
    texts = read_captions(captions, max_captions)
    pixels, skipped = read_videos(videos, recipe, max_videos)
    return CalibrationSet(pixels, ClipTokenizer(spec).encode(texts), str(videos),
                          str(captions), skipped)


def demo_set(recipe: PreprocessRecipe, spec: TokenizerSpec, videos: int = 64,
             captions: int = 256, seed: int = 0) -> CalibrationSet:
    """Training-split demo clips ``0..videos-1`` rendered to mp4 in a temporary folder, read
    back through the engine path; their captions plus further training captions."""
    from pig.demo import synth

    settings = synth.RenderSettings()
    texts = []
    with tempfile.TemporaryDirectory(prefix="pig-calib-") as tmp:
        for i in range(max(videos, captions)):
            clip, frames = synth.make_clip(seed, "train", i)
            texts.append(clip.caption)
            if i < videos:
                synth.write_mp4(Path(tmp) / clip.path, frames, settings.fps, settings.crf)
        pixels, skipped = read_videos(Path(tmp), recipe, videos)
    return CalibrationSet(pixels, ClipTokenizer(spec).encode(texts[:captions]), DEMO, DEMO,
                          skipped)


@dataclass
class EvalSet:
    """Inputs the accuracy report runs; ``keys`` (one per video, caption i describes video
    i) make it a retrieval set, as in ``pig.demo.evaluate``."""

    pixel_values: np.ndarray
    input_ids: np.ndarray
    source: str
    keys: list[tuple[str, ...]] | None = None


def demo_heldout(recipe: PreprocessRecipe, spec: TokenizerSpec, data: Path | None = None,
                 count: int = 600, seed: int = 0) -> EvalSet:
    """The demo's held-out clips with their captions: from ``data`` (a ``pig.demo.synth``
    output folder) when given, else the first ``count`` rendered to a temporary folder."""
    from pig.demo import dataset, synth

    if data is not None:
        clips = synth.load_manifest(data, "heldout")[:count]
        if not clips:
            raise PigError(f"{data}: no held-out clips in {synth.MANIFEST}")
        pixels = np.asarray(dataset.clip_pixels(data, clips, recipe))
        source = f"{data} (held-out split)"
    else:
        settings = synth.RenderSettings()
        with tempfile.TemporaryDirectory(prefix="pig-heldout-") as tmp:
            clips = []
            for i in range(count):
                clip, frames = synth.make_clip(seed, "heldout", i)
                synth.write_mp4(Path(tmp) / clip.path, frames, settings.fps, settings.crf)
                clips.append(clip)
            pixels = dataset.read_pixels(Path(tmp), clips, recipe)
        source = f"demo held-out clips 0..{count - 1} (seed {seed})"
    return EvalSet(pixels, dataset.caption_ids(clips, spec), source,
                   [c.spec.key() for c in clips])
