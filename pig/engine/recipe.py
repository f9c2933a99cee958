"""Preprocessing and tokenizer settings as recorded in a bundle manifest.

These small records are the contract between the exporter (which writes them into
``manifest.json``) and the runtime (which reads them to decode, sample, resize and tokenise
exactly as the model was trained).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, get_args

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# What a manifest may ask for, so a hostile one cannot make the engine allocate without bound
MAX_FRAMES = 256  # frames per clip (PIG samples 12)
MAX_SIZE = 1024  # frame side in pixels (CLIP-ViP: 224)
MAX_TOKENS = 4096  # tokens per query (CLIP: 77, PIG: 50)

ResizeMode = Literal["squash_bicubic", "shorter_side_center_crop"]
SAMPLINGS = ("linspace",)  # frame samplings pig.engine.media.video implements (video.SAMPLERS)


@dataclass(frozen=True)
class PreprocessRecipe:
    """How frames are sampled from a video and turned into ``pixel_values``.

    ``squash_bicubic`` (the official PIG test pipeline): x/255, resize to exactly
    ``size`` x ``size`` with bicubic a=-0.75, align_corners=False, no antialias, no clamping,
    then normalise. ``shorter_side_center_crop``: the common CLIP recipe, bicubic with
    antialias on the shorter side to ``size``, then a centre crop.
    """

    num_frames: int = 12
    size: int = 224
    mode: ResizeMode = "squash_bicubic"
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    sampling: Literal["linspace"] = "linspace"

    def __post_init__(self) -> None:
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"unknown frame sampling {self.sampling!r} (this pig-engine "
                             f"samples {', '.join(SAMPLINGS)})")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PreprocessRecipe:
        """The recipe of a manifest record; ValueError naming a field out of its range."""
        recipe = cls(
            num_frames=_bounded_int(d, "num_frames", MAX_FRAMES),
            size=_bounded_int(d, "size", MAX_SIZE),
            mode=d["mode"],
            mean=tuple(float(v) for v in d["mean"]),  # type: ignore[arg-type]  # len: below
            std=tuple(float(v) for v in d["std"]),  # type: ignore[arg-type]  # len: below
            sampling=d.get("sampling", "linspace"),
        )
        if recipe.mode not in get_args(ResizeMode) or recipe.sampling != "linspace":
            raise ValueError(f"unknown mode {recipe.mode!r} or sampling {recipe.sampling!r}")
        if len(recipe.mean) != 3 or len(recipe.std) != 3 or not all(
                math.isfinite(v) for v in recipe.mean + recipe.std) or min(recipe.std) <= 0:
            raise ValueError("mean and std need 3 finite values each, std > 0")
        return recipe


def _bounded_int(d: dict[str, Any], name: str, high: int) -> int:
    value = d[name]
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= high:
        raise ValueError(f"{name} = {value!r} is not an integer in 1..{high}")
    return value


@dataclass(frozen=True)
class TokenizerSpec:
    """CLIP BPE settings (``CLIPTokenizerFast`` behaviour)."""

    max_length: int = 50
    bos_id: int = 49406
    eos_id: int = 49407
    pad_id: int = 49407
    vocab_size: int = 49408
    kind: str = "clip_bpe"
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TokenizerSpec:
        """The spec of a manifest record; ValueError naming a field out of its range."""
        spec = cls(**d)
        _bounded_int(asdict(spec), "max_length", MAX_TOKENS)
        _bounded_int(asdict(spec), "vocab_size", 1 << 24)
        for name in ("bos_id", "eos_id", "pad_id"):
            value = getattr(spec, name)
            if not isinstance(value, int) or not 0 <= value < spec.vocab_size:
                raise ValueError(f"{name} = {value!r} is not a token id below vocab_size")
        if not isinstance(spec.kind, str) or not isinstance(spec.extra, dict):
            raise ValueError("kind must be a string and extra an object")
        return spec
