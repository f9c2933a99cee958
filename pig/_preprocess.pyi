"""Type stub of the C++ extension built from cpp_ext/preprocess.cpp."""

from collections.abc import Sequence
from typing import Any

import numpy as np

def preprocess(frames: np.ndarray | Sequence[np.ndarray], out: np.ndarray | None,
               dtype: np.dtype[Any] | None, mode: str, size: int, mean: Sequence[float],
               std: Sequence[float], threads: int) -> np.ndarray:
    """Resize + normalise uint8 RGB frames into (N, 3, size, size) float32/float16."""
