"""Model inputs for the synthetic clips, read through the engine's own data path.

Frames come from ``pig.engine.media.video.read_video`` (PyAV decode + official linspace
sampling) and
``pig.engine.media.preprocess.preprocess_frames`` (the C++ resize + normalise), captions from
``pig.engine.tokenizer.ClipTokenizer``: training and evaluation see exactly what
``pig-engine index`` / ``search`` feed the model. Decoded tensors are cached next to the clips.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Hashable, Iterator, Sequence
from pathlib import Path

import numpy as np

from pig.calibration import data as cdata
from pig.demo import synth
from pig.demo.synth import Clip
from pig.engine.recipe import PreprocessRecipe, TokenizerSpec
from pig.engine.tokenizer import ClipTokenizer
from pig.errors import PigError, VideoReadError


def _cache_path(root: Path, clips: Sequence[Clip], recipe: PreprocessRecipe) -> Path:
    h = hashlib.sha256(json.dumps([[c.path for c in clips], recipe.to_dict()]).encode())
    return root / ".cache" / f"pixels_{h.hexdigest()[:16]}.npy"


def read_pixels(root: Path, clips: Sequence[Clip], recipe: PreprocessRecipe) -> np.ndarray:
    """``pixel_values`` float32 ``[N, T, 3, S, S]`` of ``clips`` (decoded now, not cached)."""
    shape = (len(clips), recipe.num_frames, 3, recipe.size, recipe.size)
    out = np.empty(shape, dtype=np.float32)
    for i, clip in enumerate(clips):
        out[i] = cdata.read_pixels(root / clip.path, recipe)
    return out


def clip_pixels(root: Path, clips: Sequence[Clip], recipe: PreprocessRecipe) -> np.ndarray:
    """:func:`read_pixels`, cached under ``root/.cache``."""
    cache = _cache_path(root, clips, recipe)
    if cache.exists():
        return np.load(cache, mmap_mode="r")
    out = read_pixels(root, clips, recipe)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, out)
    return out


def caption_ids(clips: Sequence[Clip], spec: TokenizerSpec | None = None) -> np.ndarray:
    """CLIP token ids int64 ``[N, L]`` of the clips' captions."""
    return ClipTokenizer(spec or TokenizerSpec()).encode([c.caption for c in clips])


class DemoClips:
    """The synthetic demo clips as captioned videos (:class:`pig.calibration.data.CaptionedVideos`):
    clips ``0..count-1`` of ``split`` (``train`` for calibration, ``heldout`` for evaluation),
    from ``folder`` (a ``pig.demo.synth`` output) when given, else rendered as they are read.
    A clip's key is its attribute tuple: clips sharing every attribute are interchangeable."""

    def __init__(self, split: str, count: int, seed: int = 0, folder: Path | None = None
                 ) -> None:
        self.split, self.seed, self.folder = split, seed, folder
        if folder is not None:
            self._clips = synth.load_manifest(folder, split)[:count]
            if not self._clips:
                raise PigError(f"{folder}: no {split} clips in {synth.MANIFEST}")
            self.source = f"{folder} ({split} split)"
        else:
            self._clips = [synth.make_clip(seed, split, i)[0] for i in range(count)]
            self.source = f"demo {split} clips 0..{count - 1} (seed {seed})"

    def captions(self) -> list[tuple[Hashable | None, str]]:
        return [(c.spec.key(), c.caption) for c in self._clips]

    def videos(self, recipe: PreprocessRecipe, limit: int | None = None) -> Iterator[cdata.Video]:
        chosen = cdata.spread(list(enumerate(self._clips)), limit)
        with tempfile.TemporaryDirectory(prefix="pig-demo-clips-") as tmp:
            for i, clip in chosen:
                path = (self.folder or Path(tmp)) / clip.path
                if self.folder is None:
                    settings = synth.RenderSettings()
                    synth.write_mp4(path, synth.make_clip(self.seed, self.split, i)[1],
                                    settings.fps, settings.crf)
                try:
                    yield cdata.Video(clip.spec.key(), cdata.read_pixels(path, recipe))
                except VideoReadError as err:
                    yield cdata.Video(clip.spec.key(), None, str(err))
                if self.folder is None:
                    path.unlink()
