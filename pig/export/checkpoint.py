"""Strict loading of official PIG checkpoints into :class:`PigModel`.

Unlike the official mismatch-tolerant loader, every missing tensor, unexpected tensor and
shape mismatch is an error, all listed in one message. Neighbouring formats (F-Pig, CLIP-ViP
pretrained) are recognised and refused with an explanation, never half-loaded.
"""

from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pig.engine.bundle import sha256_file
from pig.errors import CheckpointError
from pig.export.config import PigConfig, infer_from_shapes
from pig.export.model import PigModel

_WRAPPERS = ("model", "state_dict")
# The official resume file ``restore.pt`` (E2E_TrainingRestorer):
# {global_step, model_state_dict (fp16), optim_state_dict, amp_state_dict}.
_RESUME = "model_state_dict"
_PIG_PREFIXES = ("encoder.clipmodel.", "generator.clip_reconstructor.", "fusioner.")


@dataclass
class LoadedCheckpoint:
    model: PigModel
    config: PigConfig
    path: Path
    sha256: str
    notes: list[str] = field(default_factory=list)  # e.g. "upcast 612 float16 tensors"


def read_state_dict(path: str | Path, notes: list[str] | None = None
                    ) -> dict[str, torch.Tensor]:
    """A flat ``{name: tensor}`` from ``torch.load(weights_only=True)``; one-line errors.

    An official resume file gives its ``model_state_dict`` (a note is appended to ``notes``).
    """
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{p}: no such file")
    if not p.is_file():
        raise CheckpointError(f"{p}: not a file")
    if p.stat().st_size == 0:
        raise CheckpointError(f"{p}: empty file, not a checkpoint")
    try:
        obj: Any = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # an untrusted file: any parser failure is a user error
        raise CheckpointError(f"{p}: {_load_failure(err)}") from None
    if isinstance(obj, dict) and isinstance(obj.get(_RESUME), dict):
        step = obj.get("global_step")
        ignored = sorted(str(k) for k in obj if k != _RESUME)
        if notes is not None:
            notes.append(f"{p.name} is a training resume file (global_step {step}): loaded its "
                         f"{_RESUME}; ignored {', '.join(ignored) or 'nothing else'}")
        obj = obj[_RESUME]
    for key in _WRAPPERS:
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"{p}: holds a {type(obj).__name__}, not a state_dict")
    bad = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{p}: non-tensor entries {', '.join(bad[:5])}: not a flat "
                              "state_dict (nor an official resume file, which holds one under "
                              f"'{_RESUME}')")
    return obj


def _load_failure(err: Exception) -> str:
    text = str(err).strip()
    if isinstance(err, pickle.UnpicklingError) and "GLOBAL" in text:
        name = text.split("GLOBAL", 1)[1].split()[0]
        return (f"refused: the pickle would import/run {name}; a checkpoint holds tensors "
                "only (weights-only loading)")
    if isinstance(err, (RuntimeError, EOFError, zipfile.BadZipFile)) and "zip" in text.lower():
        return f"corrupt or truncated checkpoint ({text.split('.')[0]})"
    return f"not a loadable checkpoint (not a PyTorch file: {type(err).__name__})"


def refuse_neighbours(sd: dict[str, torch.Tensor], p: Path) -> None:
    """Name F-Pig and CLIP-ViP checkpoints instead of reporting hundreds of key mismatches."""
    keys = set(sd)
    if "final_pseudo_final_alpha_add" in keys:
        raise CheckpointError(f"{p}: has final_pseudo_final_alpha_add (the official "
                              "pseudo_final_alpha_add variant); this engine does not implement "
                              "that variant")
    fpig = sorted(k for k in keys if k.startswith(("generator.bos_tokens",
                                                   "generator.query_tokens"))
                  or (k.startswith("generator.") and "text_projection" in k))
    if fpig:
        raise CheckpointError(
            f"{p}: an F-Pig checkpoint (the earlier code: trainable generator "
            f"BOS/query tokens and a generator text_projection, e.g. {fpig[0]}); this engine "
            "implements the released PIG model, whose generator has neither")
    if any(k.startswith("clipmodel.") for k in keys) and not any(
            k.startswith(_PIG_PREFIXES) for k in keys):
        raise CheckpointError(
            f"{p}: a CLIP-ViP pretrained checkpoint (prefix 'clipmodel.', no pseudo-query "
            "generator or fusioner); it is the starting point of PIG training, not a PIG "
            "model: train PIG from it and export that checkpoint")
    if not any(k.startswith(_PIG_PREFIXES) for k in keys):
        raise CheckpointError(f"{p}: no PIG tensors (expected names starting with "
                              f"{', '.join(_PIG_PREFIXES)})")


def _upcast(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    low = {k for k, v in sd.items() if v.dtype in (torch.float16, torch.bfloat16)}
    if not low:
        return sd, []
    kinds = sorted({str(sd[k].dtype).removeprefix("torch.") for k in low})
    out = {k: (v.float() if k in low else v) for k, v in sd.items()}
    return out, [f"upcast {len(low)} {'/'.join(kinds)} tensors to float32"]


def check_strict(model: PigModel, sd: dict[str, torch.Tensor], p: Path) -> None:
    want = model.state_dict()
    missing = [k for k in want if k not in sd]
    unexpected = [k for k in sd if k not in want]
    shapes = [f"{k} {list(sd[k].shape)} (model: {list(v.shape)})"
              for k, v in want.items() if k in sd and sd[k].shape != v.shape]
    dtypes = [f"{k} {sd[k].dtype}" for k, v in want.items()
              if k in sd and sd[k].is_floating_point() != v.is_floating_point()]
    bad_ids = [k for k, v in want.items() if k.endswith("position_ids") and k in sd
               and sd[k].shape == v.shape and not torch.equal(sd[k].long(), v)]
    parts = [f"{label}: {', '.join(items)}" for label, items in (
        ("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes),
        ("wrong dtype", dtypes), ("position_ids not 0..n-1", bad_ids)) if items]
    if parts:
        raise CheckpointError(f"{p}: does not match the PIG model: " + "; ".join(parts))


def load_checkpoint(path: str | Path, args: dict[str, Any] | None = None) -> LoadedCheckpoint:
    """Read, recognise, infer the config (``args``: args.json or PigConfig dict), load strictly."""
    p = Path(path)
    notes: list[str] = []
    sd = read_state_dict(p, notes)
    refuse_neighbours(sd, p)
    sd, upcast = _upcast(sd)
    notes += upcast
    try:
        cfg = infer_from_shapes({k: tuple(v.shape) for k, v in sd.items()}, args)
    except CheckpointError as err:
        raise CheckpointError(f"{p}: {err}") from None
    model = PigModel(cfg)
    check_strict(model, sd, p)
    model.load_state_dict(sd, strict=True)
    return LoadedCheckpoint(model.eval(), cfg, p, sha256_file(p), notes)
