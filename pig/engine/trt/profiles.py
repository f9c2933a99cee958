"""Optimisation profiles: a dynamic batch range, the text length range of a text graph with a
dynamic sequence axis, every other dimension static from the bundle."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pig.engine.graphs import INPUT_NAMES, MIN_TEXT_LENGTH, Branch

if TYPE_CHECKING:
    from pig.engine.bundle import Bundle

Shape = tuple[int, ...]


@dataclass(frozen=True)
class BatchProfile:
    """Batch sizes of the one optimisation profile: kernels are tuned for ``opt``."""

    min: int = 1
    opt: int = 8
    max: int = 64

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise ValueError(
                f"batch profile needs 1 <= min <= opt <= max, got {self.min}/{self.opt}/{self.max}"
            )

    @classmethod
    def parse(cls, text: str) -> BatchProfile:
        """``"1,8,64"`` (min,opt,max) or ``"64"`` (1, 64, 64)."""
        try:
            parts = [int(p) for p in text.split(",")]
        except ValueError:
            raise ValueError(f"batch profile must be integers like 1,8,64, got {text!r}") from None
        if len(parts) == 1:
            return cls(1, parts[0], parts[0])
        if len(parts) == 3:
            return cls(*parts)
        raise ValueError(f"batch profile must be MAX or MIN,OPT,MAX, got {text!r}")

    def tag(self) -> str:
        return f"b{self.min}-{self.opt}-{self.max}"


# Text lengths (tokens with BOS and EOS) the text engine's kernels are tuned for. The demo
# caption corpus (bench/bench_text.py): 10-30 tokens, median 15, 90th percentile 22; a
# batch's call is cut to its longest row within a 4-token band (backends/base.py), so a
# typical call is 16-24 tokens long. min: the shortest text; max: the model's text length.
TEXT_OPT_LENGTH = 20


def text_length_range(bundle: Bundle) -> Shape | None:
    """(min, opt, max) text lengths of the text profile when the bundle's text graph has a
    dynamic sequence axis (its manifest entry's input shape names it), else None (a bundle
    exported before: one fixed length)."""
    entry = bundle.graph_entry("text", "fp32").get("inputs", {})
    shape = entry.get(INPUT_NAMES["text"], {}).get("shape") if isinstance(entry, dict) else None
    if not (isinstance(shape, list) and len(shape) == 2 and isinstance(shape[1], str)):
        return None
    top = bundle.tokenizer_spec.max_length
    return (MIN_TEXT_LENGTH, min(max(TEXT_OPT_LENGTH, MIN_TEXT_LENGTH), top), top)


def static_dims(bundle: Bundle, branch: Branch) -> Shape:
    """Non-batch input dims the bundle fixes: ``(T, 3, S, S)`` for video, ``(L,)`` for text."""
    if branch == "video":
        r = bundle.recipe
        return (r.num_frames, 3, r.size, r.size)
    return (bundle.tokenizer_spec.max_length,)


def profile_shapes(
    branch: Branch,
    network_inputs: Mapping[str, Sequence[int]],
    dims: Shape,
    batch: BatchProfile,
    lengths: Shape | None = None,
) -> tuple[str, tuple[Shape, Shape, Shape]]:
    """(input name, (min, opt, max) shapes) of the branch's one input.

    ``network_inputs`` maps the parsed ONNX inputs to their shapes (``-1`` = dynamic). Dim 0
    is the batch; a static non-batch dim must agree with ``dims`` (from the bundle, see
    :func:`static_dims`) and a dynamic one is set from it, except the text length, which
    ``lengths`` (min, opt, max; see :func:`text_length_range`) spans when given.
    """
    name = INPUT_NAMES[branch]
    if set(network_inputs) != {name}:
        raise ValueError(f"{branch} graph inputs are {sorted(network_inputs)}, expected [{name!r}]")
    shape = tuple(network_inputs[name])
    if len(shape) != len(dims) + 1:
        raise ValueError(f"{name}: graph rank {len(shape)}, bundle expects {len(dims) + 1}")
    for i, (got, want) in enumerate(zip(shape[1:], dims, strict=True), start=1):
        if got not in (-1, want):
            raise ValueError(f"{name}: graph dim {i} is {got}, bundle says {want}")
    if shape[0] != -1 and not shape[0] == batch.min == batch.max:
        raise ValueError(f"{name}: graph batch dim is fixed at {shape[0]}, cannot profile {batch}")
    ends: tuple[Shape, Shape, Shape] = (dims, dims, dims)
    if lengths is not None:
        if branch != "text" or shape[1] != -1:
            raise ValueError(f"{name}: graph dim 1 is fixed at {shape[1]}, cannot profile text "
                             f"lengths {'-'.join(map(str, lengths))}")
        ends = ((lengths[0],), (lengths[1],), (lengths[2],))
    return name, tuple((b, *d) for b, d in zip((batch.min, batch.opt, batch.max), ends,
                                                  strict=True))  # type: ignore[return-value]
