"""ONNX export of a loaded PIG checkpoint into a bundle directory.

Exporter: torch.onnx's dynamo path (``torch.export`` + onnxscript). On this model it gives the
cleaner graph: only the tensors each branch uses become initializers (the video graph does not
carry the 49408-row token tables, only the 2 BOS/EOS rows), shapes are static except the batch
dimension, ``LayerNormalization`` is emitted as one op, and its optimizer folds the constant
masks/index lists. Both graphs are then checked (``onnx.checker`` full check) and run in ONNX
Runtime against PyTorch; a difference beyond tolerance fails the export.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import Tensor, nn

import pig
from pig.engine.backends.onnxruntime import cpu_session
from pig.engine.bundle import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    check_new_bundle_dir,
    fingerprint,
    sha256_file,
)
from pig.engine.graphs import (
    BRANCHES,
    INPUT_NAMES,
    MIN_TEXT_LENGTH,
    OUTPUT_NAMES,
    graph_file,
)
from pig.engine.host.fsutil import make_temp_dir, write_json_atomic
from pig.errors import PigError
from pig.export.checkpoint import LoadedCheckpoint
from pig.export.model import PigModel

OPSET = 18
REL_TOL = 1e-4  # per tensor: max|onnx - torch| <= REL_TOL * max|torch|

Stage = Callable[[str], contextlib.AbstractContextManager[Any]]


class ExportError(PigError):
    """The export ran but its result is wrong (parity, checker)."""


class VideoGraph(nn.Module):
    """pixel_values -> (retrieval vector, unit CLIP-ViP vector, selected token positions).

    The retrieval vector is the unit PIG vector, or ``clip_unit + alpha * fused_unit`` for the
    two-matrix variant (:meth:`PigModel.retrieval_vector`)."""

    special_tokens: Tensor  # a buffer

    def __init__(self, model: PigModel) -> None:
        super().__init__()
        self.model = model
        special = model.generator.clip_reconstructor.special_tokens().clone()
        self.register_buffer("special_tokens", special)

    def forward(self, pixel_values: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        o = self.model.encode_video(pixel_values, self.special_tokens)
        return self.model.retrieval_vector(o), o.clip_embed_norm, o.topk_indices


class TextGraph(nn.Module):
    """input_ids -> unit text vector."""

    def __init__(self, model: PigModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor) -> Tensor:
        return self.model.encode_text(input_ids).embed_norm


def sample_inputs(model: PigModel, batch: int = 2, seed: int = 0) -> tuple[Tensor, Tensor]:
    """A deterministic video batch and a text batch with different lengths (pad = EOS)."""
    c = model.cfg
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randn(batch, c.num_frames, 3, c.image_size, c.image_size, generator=g)
    ids = torch.full((batch, c.text_max_length), c.eos_id, dtype=torch.int64)
    ids[:, 0] = c.bos_id
    for b in range(batch):
        n = 1 + (b * 7 + 3) % (c.text_max_length - 2)
        ids[b, 1:1 + n] = torch.randint(1, min(c.bos_id, c.vocab_size), (n,), generator=g)
    return pixels, ids


DEGENERATE_ATOL = 1e-6  # sample embeddings closer than this (max abs) are one vector


def check_sample_outputs(embeddings: dict[str, Tensor]) -> None:
    """ExportError if a branch's unit embeddings of the (distinct, random) sample inputs hold a
    non-finite value or are all one vector: weights that run but cannot retrieve anything."""
    for branch, e in embeddings.items():
        if not bool(torch.isfinite(e).all()):
            raise ExportError(f"{branch} embeddings of the sample inputs are not finite (NaN "
                              "or Inf): the weights overflow; check the checkpoint")
        if len(e) > 1 and float((e - e[0]).abs().max()) < DEGENERATE_ATOL:
            raise ExportError(f"{branch} embeddings of {len(e)} different sample inputs are "
                              "all the same vector: the model is degenerate (e.g. weights "
                              "scaled out of range); check the checkpoint")


def export_graph(module: nn.Module, example: Tensor, path: Path, input_name: str,
                 output_names: tuple[str, ...], seq: tuple[int, int] | None = None) -> None:
    """Dynamo export with a dynamic batch dimension, and with ``seq = (min, max)`` a dynamic
    sequence dimension 1 too (the text graph: ``[batch, seq]``)."""
    batch = torch.export.Dim("batch", min=1, max=4096)
    dims = {0: batch}
    if seq is not None:
        dims[1] = torch.export.Dim("seq", min=seq[0], max=seq[1])
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # optional-op registry chatter
    with torch.no_grad(), contextlib.redirect_stdout(None), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.export internals, not ours
        torch.onnx.export(
            module.eval(), (example,), str(path), dynamo=True, opset_version=OPSET,
            input_names=[input_name], output_names=list(output_names),
            dynamic_shapes=(dims,), external_data=False, verbose=False)
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)


def max_rel_diff(got: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """(max abs difference, that divided by max|ref|)."""
    diff = float(np.abs(got.astype(np.float64) - ref).max())
    return diff, diff / max(float(np.abs(ref).max()), 1e-30)


def _io_spec(path: Path) -> dict[str, Any]:
    g = onnx.load(str(path), load_external_data=False).graph

    def desc(v: onnx.ValueInfoProto) -> dict[str, Any]:
        t = v.type.tensor_type
        return {"dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name,
                "shape": [d.dim_param or d.dim_value for d in t.shape.dim]}

    return {"inputs": {v.name: desc(v) for v in g.input},
            "outputs": {v.name: desc(v) for v in g.output}}


@dataclass
class ExportResult:
    out_dir: Path
    manifest: dict[str, Any]
    files: dict[str, int] = field(default_factory=dict)  # name -> bytes
    parity: dict[str, float] = field(default_factory=dict)


@contextlib.contextmanager
def _no_stage(_: str) -> Iterator[None]:
    yield


@contextlib.contextmanager
def _staging(out_dir: Path) -> Iterator[Path]:
    """Build in a sibling temp dir; move into place only when everything passed."""
    check_new_bundle_dir(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(out_dir.parent, f".{out_dir.name}.partial-")
    try:
        yield tmp
        if out_dir.exists():
            out_dir.rmdir()
        tmp.rename(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def export_bundle(ckpt: LoadedCheckpoint, out_dir: str | Path,
                  stage: Stage = _no_stage) -> ExportResult:
    """Write video.onnx, text.onnx and manifest.json; verify them against PyTorch."""
    out_dir = Path(out_dir)
    model = ckpt.model.eval()
    pixels, ids = sample_inputs(model)
    with torch.no_grad():  # before anything is written: weights that cannot retrieve
        check_sample_outputs({"video": model.encode_video(pixels).embed_norm,
                              "text": model.encode_text(ids).embed_norm})
    with _staging(out_dir) as tmp:
        video, text = (tmp / graph_file(b, "fp32") for b in BRANCHES)
        with stage(f"export {video.name}"):
            export_graph(VideoGraph(model), pixels, video, INPUT_NAMES["video"],
                         OUTPUT_NAMES["video"])
        with stage(f"export {text.name}"):
            export_graph(TextGraph(model), ids, text, INPUT_NAMES["text"], OUTPUT_NAMES["text"],
                         seq=(MIN_TEXT_LENGTH, model.cfg.text_max_length))
        parity: dict[str, float] = {}
        with stage("parity: ONNX Runtime vs PyTorch"), torch.no_grad():
            v, t = model.encode_video(pixels), model.encode_text(ids)
            got_v = cpu_session(video).run(None, {INPUT_NAMES["video"]: pixels.numpy()})
            got_t = cpu_session(text).run(None, {INPUT_NAMES["text"]: ids.numpy()})
            checks = {"video": (got_v[0], model.retrieval_vector(v)), "video_clip": (got_v[1],
                      v.clip_embed_norm), "text": (got_t[0], t.embed_norm)}
            for name, (got, ref) in checks.items():
                parity[f"{name}_max_abs"], rel = max_rel_diff(got, ref.numpy())
                if rel > REL_TOL:
                    raise ExportError(f"{name}: ONNX Runtime differs from PyTorch by "
                                      f"{parity[f'{name}_max_abs']:.3g} (> {REL_TOL:g} of max)")
            parity["topk_indices_equal"] = float(np.array_equal(got_v[2], v.topk_indices.numpy()))
        with stage("write manifest.json"):
            manifest = build_manifest(ckpt, tmp, parity)
            write_json_atomic(tmp / MANIFEST, manifest)
        files = {p.name: p.stat().st_size for p in sorted(tmp.iterdir())}
    return ExportResult(out_dir, manifest, files, parity)


def video_vector_record(model: PigModel) -> dict[str, Any]:
    """How the video graph's ``embeddings`` output is made, for the manifest; the index reads
    ``unit_length`` (the two-matrix variant's vectors are searched by plain inner product)."""
    if not model.cfg.two_matrix:
        return {"formula": "fused_unit", "unit_length": True}
    return {"formula": "clip_unit + alpha * fused_unit", "unit_length": False,
            "alpha": float(model.alpha.detach())}


def build_manifest(ckpt: LoadedCheckpoint, root: Path, parity: dict[str, float]
                   ) -> dict[str, Any]:
    cfg = ckpt.config
    graphs = {branch: {"fp32": {"file": graph_file(branch, "fp32"),
                                "sha256": sha256_file(root / graph_file(branch, "fp32")),
                                **_io_spec(root / graph_file(branch, "fp32"))}}
              for branch in BRANCHES}
    manifest: dict[str, Any] = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "model": cfg.to_dict(),
        "embedding_dim": cfg.embed_dim,
        "video_vector": video_vector_record(ckpt.model),
        "preprocess": cfg.recipe().to_dict(),
        "tokenizer": cfg.tokenizer_spec().to_dict(),
        "graphs": graphs,
        "source_checkpoint": {"path": str(ckpt.path.resolve()), "sha256": ckpt.sha256,
                              "notes": ckpt.notes},
        "opset": OPSET,
        "versions": {"pig-engine": pig.__version__, "torch": torch.__version__,
                     "onnx": onnx.__version__, "onnxruntime": ort.__version__},
        "parity": parity,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    manifest["fingerprint"] = fingerprint(manifest)
    return manifest
