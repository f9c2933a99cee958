"""Which ``args.json`` describes a checkpoint: the official run layout, found automatically.

The official training script writes the run's arguments to ``<output_dir>/log/args.json`` and
its checkpoints to ``<output_dir>/ckpt/`` (``model_best.pt``, ``model_step_N.pt``); the
resume file ``restore.pt`` is found the same way beside it or in the output directory (the
``log/args.json`` candidate). What tensor shapes cannot tell (top-k, head reduction, fusion
heads and temperature, text length, the loss variant) comes from that file; without one,
``pig-export`` refuses unless told to assume the released MSR-VTT B/32 values.
"""

from __future__ import annotations

import os
from pathlib import Path

from pig.errors import CheckpointError

# relative to the checkpoint's folder, first match wins
CANDIDATES = ("args.json", "../log/args.json", "log/args.json")
UNKNOWN = ("top-k", "head reduction", "fusion heads and temperature", "text length",
           "loss variant")


def candidates(checkpoint: Path) -> list[Path]:
    return [Path(os.path.normpath(checkpoint.parent / rel)) for rel in CANDIDATES]


def find_run_config(checkpoint: Path) -> Path | None:
    """The first existing candidate ``args.json`` for ``checkpoint``, or None."""
    return next((p for p in candidates(checkpoint) if p.is_file()), None)


def resolve(checkpoint: Path, config: Path | None, assume_released: bool
            ) -> tuple[Path | None, str]:
    """(the config file to read or None for the released values, a line saying which)."""
    if config is not None:
        return config, f"config: {config} (--config)"
    found = find_run_config(checkpoint)
    if found is not None:
        return found, f"config: {found} (found for {checkpoint.name}; --config to override)"
    if assume_released:
        return None, ("config: released MSR-VTT B/32 values for what shapes cannot tell "
                      "(--assume-released-b32)")
    tried = ", ".join(map(str, candidates(checkpoint)))
    raise CheckpointError(
        f"{checkpoint}: no args.json found (looked for {tried}); its shapes do not tell "
        f"{', '.join(UNKNOWN)}: pass --config <output_dir>/log/args.json, or "
        "--assume-released-b32 to use the released MSR-VTT B/32 values")
