"""Preprocessing and tokenizer settings as recorded in a bundle manifest.

These small records are the contract between the exporter (which writes them into
``manifest.json``) and the runtime (which reads them to decode, sample, resize and tokenise
exactly as the model was trained).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

ResizeMode = Literal["squash_bicubic", "shorter_side_center_crop"]
SAMPLINGS = ("linspace",)  # frame samplings pig.engine.video implements (video.SAMPLERS)


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
        return cls(
            num_frames=int(d["num_frames"]),
            size=int(d["size"]),
            mode=d["mode"],
            mean=tuple(float(v) for v in d["mean"]),  # type: ignore[arg-type]
            std=tuple(float(v) for v in d["std"]),  # type: ignore[arg-type]
            sampling=d.get("sampling", "linspace"),
        )


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
        return cls(**d)
