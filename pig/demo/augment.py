"""Caption-consistent augmentation of the synthetic training clips.

Two transforms leave a clip's distribution unchanged once the caption follows them: a left-right
mirror (every shape is mirror-symmetric; left and right swap) and playing the frames backwards
(the sampled frame times are symmetric; left/right, up/down and growing/shrinking swap; rotating
and still stay). Captions are re-drawn from the transformed attributes at every step, so the text
tower sees every paraphrase rather than one fixed sentence per clip.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from pig.demo.synth import ClipSpec, caption
from pig.metrics import key_matches

MIRRORED = {"left": "right", "right": "left"}
REVERSED = {"left": "right", "right": "left", "up": "down", "down": "up",
            "growing": "shrinking", "shrinking": "growing"}


def transform_spec(spec: ClipSpec, mirror: bool, reverse: bool) -> ClipSpec:
    """The attributes of ``spec``'s clip after mirroring and/or time reversal."""
    motion = spec.motion
    if mirror:
        motion = MIRRORED.get(motion, motion)
    if reverse:
        motion = REVERSED.get(motion, motion)
    return replace(spec, motion=motion)


def transform_pixels(pixels: np.ndarray, mirror: np.ndarray, reverse: np.ndarray) -> np.ndarray:
    """``pixels [B, T, C, H, W]`` with clip ``i`` mirrored (W) / reversed (T) where flagged."""
    out = np.array(pixels, dtype=pixels.dtype, copy=True)
    out[mirror] = out[mirror][..., ::-1]
    out[reverse] = out[reverse][:, ::-1]
    return out


def augmented_batch(
    pixels: np.ndarray, specs: Sequence[ClipSpec], idx: np.ndarray, rng: np.random.Generator,
) -> tuple[np.ndarray, list[ClipSpec], list[str]]:
    """Pixels, attributes and freshly drawn captions of the clips ``idx`` (random transforms)."""
    idx = np.sort(idx)  # ordered reads of a memory-mapped array
    mirror = rng.random(len(idx)) < 0.5
    reverse = rng.random(len(idx)) < 0.5
    out = transform_pixels(pixels[idx], mirror, reverse)
    new = [transform_spec(specs[i], m, r) for i, m, r in zip(idx, mirror, reverse, strict=True)]
    return out, new, [caption(sp, rng) for sp in new]


def same_key_mask(specs: Sequence[ClipSpec]) -> np.ndarray:
    """``[B, B]`` True where clips ``i != j`` share every attribute: pairs that are neither the
    positive nor a true negative for the contrastive loss."""
    keys = [s.key() for s in specs]
    return key_matches(keys, keys) & ~np.eye(len(specs), dtype=bool)
