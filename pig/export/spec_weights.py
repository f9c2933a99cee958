"""Deterministic random PIG checkpoints from the reference ``weights_spec.json``.

The official reference outputs were computed on these weights, so a checkpoint written here is
what the parity tests, the benchmarks and a first ``pig-export`` run use (no real weights are
ever downloaded). ``python -m pig.export.spec_weights SPEC {small,full} OUT.pt`` writes one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import numpy as np

from pig import console
from pig.errors import PigError


def load_spec(path: str | Path) -> dict[str, Any]:
    """The parsed ``weights_spec.json``; a PigError names the file if it is none."""
    try:
        raw = Path(path).read_bytes()
    except OSError as err:
        raise PigError(f"{path}: cannot read the weights spec ({err.strerror})") from None
    try:
        spec = json.loads(raw)
    except ValueError as err:
        raise PigError(f"{path}: not a weights spec ({err})") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("configs"), dict):
        raise PigError(f"{path}: not a weights spec (no configs)")
    return spec


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
    if config not in spec["configs"]:
        raise PigError(f"weights_spec: no config {config!r} (has {', '.join(spec['configs'])})")
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


@click.command(context_settings=console.CONTEXT)
@click.argument("spec", type=click.Path(path_type=Path))
@click.argument("config")
@click.argument("out", type=click.Path(path_type=Path))
@click.argument("dtype", type=click.Choice(("float32", "float16")), default="float32")
def cli(spec: Path, config: str, out: Path, dtype: str) -> None:
    """Write the deterministic random PIG checkpoint of a weights_spec.json (SPEC): CONFIG
    small or full, to OUT (.pt), in DTYPE."""
    if not out.absolute().parent.is_dir():
        raise PigError(f"{out}: its folder does not exist")
    save_checkpoint(generate(load_spec(spec), config), out, dtype)
    print(f"wrote {out} ({config} config of {spec})")


def main(argv: list[str] | None = None) -> None:
    """Dev CLI (errors: :mod:`pig.console`)."""
    console.run(cli, argv, "python -m pig.export.spec_weights")


if __name__ == "__main__":
    main()
