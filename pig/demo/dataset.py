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
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pig.demo.synth import Clip
from pig.engine.media.preprocess import preprocess_frames
from pig.engine.media.video import read_video
from pig.engine.recipe import PreprocessRecipe, TokenizerSpec
from pig.engine.tokenizer import ClipTokenizer


def _cache_path(root: Path, clips: Sequence[Clip], recipe: PreprocessRecipe) -> Path:
    h = hashlib.sha256(json.dumps([[c.path for c in clips], recipe.to_dict()]).encode())
    return root / ".cache" / f"pixels_{h.hexdigest()[:16]}.npy"


def read_pixels(root: Path, clips: Sequence[Clip], recipe: PreprocessRecipe) -> np.ndarray:
    """``pixel_values`` float32 ``[N, T, 3, S, S]`` of ``clips`` (decoded now, not cached)."""
    shape = (len(clips), recipe.num_frames, 3, recipe.size, recipe.size)
    out = np.empty(shape, dtype=np.float32)
    for i, clip in enumerate(clips):
        frames = read_video(root / clip.path, recipe.num_frames).frames
        out[i] = preprocess_frames(frames, recipe)
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
