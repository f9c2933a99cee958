"""Knobs of an indexing run (every runner reads them)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PipelineOptions:
    """Throughput knobs; defaults measured on 2 cores (bench/bench_pipeline.py).

    ``workers``: decode+preprocess threads. ``encoder_threads``: ONNX Runtime intra-op
    threads (0 = one per core). ``buffers``: batch buffers in flight (one filling, one
    queued, one encoding). ``commit_seconds``: time between commits, stretched to 10x the
    last commit's duration (a commit writes the delta, and now and then compacts); 0 commits
    after every batch. ``decoder``: ``auto``, ``pyav`` or ``nvdec`` (pig.engine.media.decoders).
    """

    batch_size: int = 8
    workers: int = 2
    encoder_threads: int = 0
    buffers: int = 3
    commit_seconds: float = 10.0
    retry_failed: bool = False
    decoder: str = "auto"
