"""The graph contract: what ``pig-export`` writes and every runtime reads (torch-free).

Branches, precisions, tensor names and graph file names are defined here once and imported by
the export, calibration, the backends, the TensorRT builder and the bundle. Adding a precision
is one row of :data:`PRECISION_TABLE`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Branch = Literal["video", "text"]
BRANCHES: tuple[Branch, ...] = ("video", "text")


@dataclass(frozen=True)
class PrecisionSpec:
    """A graph precision. ``calibrated``: written by ``pig-export --calibrate`` from the fp32
    graphs (fp32 itself is written by ``pig-export --onnx``). ``cpu_only``: made for ONNX
    Runtime's CPU provider (no TensorRT engine, refused on a GPU backend)."""

    name: str
    calibrated: bool
    cpu_only: bool = False


PRECISION_TABLE: tuple[PrecisionSpec, ...] = (
    PrecisionSpec("fp32", calibrated=False),
    PrecisionSpec("fp16", calibrated=True),  # fp16 with fp32 islands
    PrecisionSpec("int8", calibrated=True),  # explicit Q/DQ, for TensorRT
    PrecisionSpec("int8-cpu", calibrated=True, cpu_only=True),  # dynamic INT8 (int8_cpu.py)
)
PRECISIONS: tuple[str, ...] = tuple(p.name for p in PRECISION_TABLE)
CALIBRATED_PRECISIONS: tuple[str, ...] = tuple(p.name for p in PRECISION_TABLE if p.calibrated)
CPU_ONLY_PRECISIONS = frozenset(p.name for p in PRECISION_TABLE if p.cpu_only)

# tensor names
INPUT_NAMES: dict[Branch, str] = {"video": "pixel_values", "text": "input_ids"}
OUTPUT_NAME = "embeddings"  # the retrieval vector, first output of both graphs
CLIP_EMBEDDINGS = "clip_embeddings"  # video: plain CLIP-ViP unit vector
TOPK_INDICES = "topk_indices"  # video: the token selector's choice
OUTPUT_NAMES: dict[Branch, tuple[str, ...]] = {
    "video": (OUTPUT_NAME, CLIP_EMBEDDINGS, TOPK_INDICES), "text": (OUTPUT_NAME,)}

# The text graph's input is ``[batch, seq]``, seq from MIN_TEXT_LENGTH ([BOS, EOS]) to the
# model's text length: the tower is causal and pools the first EOS, and padding is EOS, so a
# batch cut after its longest text's first EOS encodes exactly as at full length (the
# backends cut, :func:`pig.engine.backends.base.cut_text`). Bundles exported before have a
# fixed length there (their manifest's text input shape says which).
MIN_TEXT_LENGTH = 2


def graph_file(branch: Branch, precision: str) -> str:
    """The file name of a branch's graph at a precision, inside the bundle."""
    return f"{branch}.onnx" if precision == "fp32" else f"{branch}.{precision}.onnx"
