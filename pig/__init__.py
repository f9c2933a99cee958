"""pig-engine: production inference for PIG text-to-video retrieval."""

__version__ = "0.1.0"
