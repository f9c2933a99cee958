"""Batched frame preprocessing: uint8 RGB frames -> normalised ``pixel_values`` (torch-free).

Thin wrapper of the C++ extension ``pig._preprocess`` (sources in ``cpp_ext/``): one fused,
multi-threaded pass (resize + /255 + mean/std + HWC->CHW) with the GIL released, matching the
torch reference of the recipe's mode within 1e-5 (see ``PreprocessRecipe``).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import DTypeLike

from pig import _preprocess
from pig.engine.host.cpus import available_cpus
from pig.engine.recipe import PreprocessRecipe


def preprocess_frames(
    frames: np.ndarray | list[np.ndarray] | tuple[np.ndarray, ...],
    recipe: PreprocessRecipe,
    out: np.ndarray | None = None,
    dtype: DTypeLike | None = None,
    threads: int = 0,
) -> np.ndarray:
    """Resize and normalise a batch of frames as ``recipe`` says.

    ``frames``: a uint8 array ``(N, H, W, 3)`` (RGB) or a list of ``(H, W, 3)`` arrays of any
    sizes. Pixels must be packed (strides ``(..., 3, 1)``); rows and frames may have any stride,
    so PyAV's padded ``to_ndarray()`` frames and batch slices are read in place.
    Writes ``(N, 3, S, S)`` into ``out`` when given (a C-contiguous float32/float16 buffer,
    e.g. a slice of an engine input) and returns it; otherwise allocates it with ``dtype``
    (default float32). A uint8 ``out``/``dtype`` gets the resized frames only, rounded half to
    even and clamped (the input of a uint8 graph, :mod:`pig.calibration.uint8_input`).
    ``threads=0`` uses every available CPU.
    Bad input raises ``TypeError``/``ValueError`` naming the offending argument.
    """
    if threads < 0:
        raise ValueError(f"threads must be >= 0, got {threads}")
    return _preprocess.preprocess(
        frames,
        out,
        None if dtype is None else np.dtype(dtype),
        recipe.mode,
        recipe.size,
        recipe.mean,
        recipe.std,
        threads or available_cpus(),
    )
