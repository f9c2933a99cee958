"""Deterministic random PIG checkpoints from the reference ``weights_spec.json``.

The official reference outputs were computed on these weights, so a checkpoint written here is
what the parity tests, the benchmarks and a first ``pig-export`` run use (no real weights are
ever downloaded). ``python -m pig.export.spec_weights SPEC {small,full} OUT.pt`` writes one.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from pig.errors import PigError


def load_spec(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def _tensor(entry: dict[str, Any], seed: int) -> np.ndarray:
    shape, init = tuple(entry["shape"]), entry["init"]
    if init["kind"] == "arange":
        return np.arange(shape[-1], dtype=np.int64).reshape(shape)
    if init["kind"] == "constant":
        return np.full(shape, init["value"], dtype=np.float32)
    z = np.random.default_rng([seed, entry["index"]]).standard_normal(shape, dtype=np.float64)
    return (init["mean"] + init["std"] * z).astype(np.float32)


def generate(spec: dict[str, Any], config: str) -> dict[str, np.ndarray]:
    """All tensors of ``config`` in official order, checked against the spec's checksums."""
    seed = spec["generation"]["seed"]
    out: dict[str, np.ndarray] = {}
    for e in spec["configs"][config]["state_dict"]:
        arr = _tensor(e, seed)
        first = arr.reshape(-1)[: len(e["checksum"]["first"])].astype(np.float64)
        if not (np.array_equal(first, e["checksum"]["first"])
                and np.isclose(arr.sum(dtype=np.float64), e["checksum"]["sum"], rtol=1e-9)):
            raise PigError(f"weights_spec: regenerated {e['name']} fails its checksum")
        out[e["name"]] = arr
    return out


def spec_inputs(spec: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The reference ``pixel_values`` [3, T, 3, S, S] float32 and ``input_ids`` [4, L] int64."""
    pv = spec["inputs"]["pixel_values"]
    shape = pv["shape"][1:]
    videos = [np.random.default_rng([7, j]).standard_normal(shape, dtype=np.float64)
              for j in pv["video_rng_streams"]]
    return np.stack(videos).astype(np.float32), np.asarray(spec["inputs"]["input_ids"], np.int64)


def save_checkpoint(weights: dict[str, np.ndarray], path: str | Path,
                    dtype: str = "float32") -> None:
    """``torch.save`` a flat state_dict; ``dtype='float16'`` halves floating tensors."""
    import torch

    half = dtype == "float16"
    sd = {k: torch.from_numpy(v.astype(np.float16) if half and v.dtype == np.float32 else v)
          for k, v in weights.items()}
    torch.save(sd, path)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (3, 4):
        sys.exit("usage: python -m pig.export.spec_weights SPEC.json {small|full} OUT.pt "
                 "[float16]")
    spec = load_spec(args[0])
    save_checkpoint(generate(spec, args[1]), args[2], *(args[3:] or ["float32"]))
    print(f"wrote {args[2]} ({args[1]} config of {args[0]})")


if __name__ == "__main__":
    main()
