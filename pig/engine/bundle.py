"""A bundle directory: ``manifest.json`` + ONNX graphs per branch and precision (torch-free).

Layout and manifest fields: docs/architecture.md. The fingerprint identifies the model (fp32
graphs + preprocessing + tokenizer), not the precision, so every precision variant of one
export shares it and an index can refuse vectors from another model.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

from pig.engine.fsutil import write_json_atomic
from pig.engine.graphs import BRANCHES
from pig.engine.recipe import PreprocessRecipe, TokenizerSpec
from pig.errors import BundleError

FORMAT = "pig-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_REQUIRED = ("model", "embedding_dim", "preprocess", "tokenizer", "graphs", "fingerprint")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def fingerprint(manifest: dict[str, Any]) -> str:
    """sha256 over the fp32 graphs' sha256s, the preprocessing recipe and the tokenizer."""
    g = manifest["graphs"]
    payload = [g["video"]["fp32"]["sha256"], g["text"]["fp32"]["sha256"],
               manifest["preprocess"], manifest["tokenizer"]]
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


class Bundle:
    """A validated bundle. Use :meth:`load`."""

    def __init__(self, root: Path, manifest: dict[str, Any]) -> None:
        self.dir = root
        self.manifest = manifest
        self.recipe = PreprocessRecipe.from_dict(manifest["preprocess"])
        self.tokenizer_spec = TokenizerSpec.from_dict(manifest["tokenizer"])
        self.embedding_dim = int(manifest["embedding_dim"])
        self.fingerprint: str = manifest["fingerprint"]
        # False for the two-matrix variant (clip_unit + alpha * fused_unit, see pig-export)
        self.unit_vectors = bool(manifest.get("video_vector", {}).get("unit_length", True))

    @classmethod
    def load(cls, root: str | Path) -> Bundle:
        root = Path(root)
        path = root / MANIFEST
        try:
            m = json.loads(path.read_text())
        except FileNotFoundError:
            raise BundleError(f"{path}: not found ({root} is not a bundle directory)") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise BundleError(f"{path}: unreadable manifest ({err})") from None
        if not isinstance(m, dict) or m.get("format") != FORMAT:
            raise BundleError(f"{path}: not a pig-bundle manifest")
        if m.get("format_version") != FORMAT_VERSION:
            raise BundleError(f"{path}: format_version {m.get('format_version')!r} is not "
                              f"supported (expected {FORMAT_VERSION})")
        missing = [k for k in _REQUIRED if k not in m]
        if missing:
            raise BundleError(f"{path}: missing fields {', '.join(missing)}")
        if not isinstance(m["graphs"], dict):
            raise BundleError(f"{path}: graphs must map branch -> precision -> entry")
        for branch in BRANCHES:
            entries = m["graphs"].get(branch) or {}
            if not isinstance(entries, dict) or "fp32" not in entries:
                raise BundleError(f"{path}: no fp32 {branch} graph")
            for precision, e in entries.items():
                if not isinstance(e, dict) or not {"file", "sha256"} <= e.keys():
                    raise BundleError(f"{path}: graphs.{branch}.{precision} needs file and "
                                      "sha256")
        try:
            bundle = cls(root, m)
        except (KeyError, TypeError, ValueError) as err:
            raise BundleError(f"{path}: invalid preprocess/tokenizer record ({err})") from None
        if fingerprint(m) != bundle.fingerprint:
            raise BundleError(f"{path}: fingerprint does not match the fp32 graphs, "
                              "preprocessing and tokenizer it records")
        return bundle

    def precisions(self, branch: str) -> list[str]:
        return list(self.manifest["graphs"].get(branch, {}))

    def graph_entry(self, branch: str, precision: str) -> dict[str, Any]:
        try:
            return self.manifest["graphs"][branch][precision]
        except KeyError:
            have = ", ".join(self.precisions(branch)) or "none"
            raise BundleError(f"{self.dir}: no {precision} {branch} graph "
                              f"(has: {have})") from None

    def graph_path(self, branch: str, precision: str) -> Path:
        path = self.dir / self.graph_entry(branch, precision)["file"]
        if not path.is_file():
            raise BundleError(f"{path}: listed in the manifest but missing")
        return path

    def graph_sha256(self, branch: str, precision: str) -> str:
        return self.graph_entry(branch, precision)["sha256"]

    def verify(self) -> None:
        """Check every listed file's sha256; BundleError naming the first that differs."""
        for branch, entries in self.manifest["graphs"].items():
            for precision, e in entries.items():
                path = self.graph_path(branch, precision)
                if sha256_file(path) != e["sha256"]:
                    raise BundleError(f"{path}: sha256 differs from the manifest (file "
                                      "modified or corrupt; re-export the bundle)")

    def set_graph(self, branch: str, precision: str, file: str | Path,
                  **metadata: Any) -> None:
        """Add or replace a graph entry (``file`` relative to the bundle) and rewrite the
        manifest atomically. The fp32 entries define the fingerprint and cannot change here.
        """
        if branch not in BRANCHES:
            raise BundleError(f"{self.dir}: unknown branch {branch!r}")
        if precision == "fp32":
            raise BundleError(f"{self.dir}: the fp32 graphs are written by pig-export only")
        rel = Path(file)
        path = self.dir / rel
        if rel.is_absolute() or not path.is_file():
            raise BundleError(f"{path}: graph file must exist inside the bundle")
        manifest = copy.deepcopy(self.manifest)
        manifest["graphs"][branch][precision] = {
            "file": rel.as_posix(), "sha256": sha256_file(path), **metadata}
        write_json_atomic(self.dir / MANIFEST, manifest)
        self.manifest = manifest
