"""Optimisation profiles: a dynamic batch range, every other dimension static from the bundle."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pig.engine.graphs import INPUT_NAMES, Branch

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
) -> tuple[str, tuple[Shape, Shape, Shape]]:
    """(input name, (min, opt, max) shapes) of the branch's one input.

    ``network_inputs`` maps the parsed ONNX inputs to their shapes (``-1`` = dynamic). Dim 0
    is the batch; a static non-batch dim must agree with ``dims`` (from the bundle, see
    :func:`static_dims`) and a dynamic one is set from it.
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
    return name, ((batch.min, *dims), (batch.opt, *dims), (batch.max, *dims))
