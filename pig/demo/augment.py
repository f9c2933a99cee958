"""Caption-consistent augmentation of the synthetic training clips.

Two transforms leave a clip's distribution unchanged once the caption follows them: a left-right
mirror (every shape is mirror-symmetric; left and right swap) and playing the frames backwards
(the sampled frame times are symmetric; left/right, up/down and growing/shrinking swap; rotating
and still stay). Captions are re-drawn from the transformed attributes at every step, so the text
tower sees every paraphrase rather than one fixed sentence per clip.

With ``pairs``, each clip appears twice in a batch, forwards and backwards: for the translation
and scale motions the second copy is the hardest negative there is (same frames, opposite
direction), which forces the video vector to encode temporal order.

Hard negative captions (:func:`hard_negatives`) describe the same clip with one attribute
changed (the opposite motion of its axis, another shape): the video must score its own caption
above them, so direction and shape cannot be left out of either vector.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from pig.demo.evaluate import key_matches
from pig.demo.synth import MOTIONS, SHAPES, ClipSpec, caption, opposite, valid

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
    pairs: bool,
) -> tuple[np.ndarray, list[ClipSpec], list[str]]:
    """Pixels, attributes and freshly drawn captions of the clips ``idx`` (random transforms).

    With ``pairs`` the batch holds ``2 * len(idx)`` clips: each drawn clip, then the same clip
    with time reversal toggled.
    """
    idx = np.sort(idx)  # ordered reads of a memory-mapped array
    mirror = rng.random(len(idx)) < 0.5
    reverse = rng.random(len(idx)) < 0.5
    if pairs:
        idx, mirror = np.repeat(idx, 2), np.repeat(mirror, 2)
        reverse = np.stack([reverse, ~reverse], axis=1).reshape(-1)
    out = transform_pixels(pixels[idx], mirror, reverse)
    new = [transform_spec(specs[i], m, r) for i, m, r in zip(idx, mirror, reverse, strict=True)]
    return out, new, [caption(sp, rng) for sp in new]


def _other_motion(spec: ClipSpec, rng: np.random.Generator) -> str:
    """The other motion of ``spec``'s axis; a random other valid motion where that one is not
    valid (a rotating circle)."""
    partner = opposite(spec.motion)
    if valid(spec.shape, partner):
        return partner
    others = [m for m in MOTIONS if m != spec.motion and valid(spec.shape, m)]
    return others[rng.integers(len(others))]


def hard_negatives(specs: Sequence[ClipSpec], rng: np.random.Generator) -> list[ClipSpec]:
    """For each clip, its attributes with the motion reversed, then with another shape
    (``2 * len(specs)`` specs, never equal to the clip's own)."""
    motion = [replace(s, motion=_other_motion(s, rng)) for s in specs]
    shape = []
    for s in specs:
        others = [x for x in SHAPES if x != s.shape and valid(x, s.motion)]
        shape.append(replace(s, shape=others[rng.integers(len(others))]))
    return motion + shape


def same_key_mask(rows: Sequence[ClipSpec], cols: Sequence[ClipSpec] | None = None) -> np.ndarray:
    """``[R, C]`` True where row ``i`` and column ``j != i`` share every attribute: pairs that are
    neither the positive nor a true negative for the contrastive loss (``cols`` defaults to
    ``rows``; the positive of row ``i`` is column ``i``)."""
    cols = rows if cols is None else cols
    same = key_matches([s.key() for s in rows], [s.key() for s in cols])
    return same & ~np.eye(len(rows), len(cols), dtype=bool)
