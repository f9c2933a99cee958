"""Inference backends (ONNX Runtime, TensorRT) behind one small interface."""

from pig.engine.backends.base import Backend
from pig.engine.backends.select import Choice, choose, open_backend

__all__ = ["Backend", "Choice", "choose", "open_backend"]
