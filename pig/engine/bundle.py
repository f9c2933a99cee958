"""A bundle directory: ``manifest.json`` + ONNX graphs per branch and precision (torch-free).

Layout and manifest fields: docs/architecture.md. The fingerprint identifies the model (fp32
graphs + preprocessing + tokenizer), not the precision, so every precision variant of one
export shares it and an index can refuse vectors from another model.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
from pathlib import Path, PurePosixPath
from typing import Any

from pig.engine.display import display_path
from pig.engine.graphs import BRANCHES
from pig.engine.host.fsutil import user_cache_dir, write_json_atomic
from pig.engine.host.regular_file import read_regular
from pig.engine.recipe import PreprocessRecipe, TokenizerSpec
from pig.errors import BundleError, PigError

FORMAT = "pig-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MAX_DIM = 1 << 16  # embedding width; far above any CLIP model, bounds what a manifest can ask
_REQUIRED = ("model", "embedding_dim", "preprocess", "tokenizer", "graphs", "fingerprint")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 of a regular file (never blocks on a FIFO or reads a device without end)."""
    h = hashlib.sha256()
    for block in read_regular(path, chunk):
        h.update(block)
    return h.hexdigest()


def _verdict_dir() -> Path:
    """Where verified-graph verdicts are kept: the user's cache, never the bundle (which may
    be read-only or shared): :func:`~pig.engine.host.fsutil.user_cache_dir`."""
    return user_cache_dir("verified-graphs")


_VERIFIED: set[str] = set()  # verdict keys already checked by this process


def verify_file(path: Path, sha256: str, *, cached: bool = True) -> None:
    """BundleError unless ``path``'s sha256 is ``sha256``. A match is remembered under a key
    of the path, device, inode, size, mtime and ctime (any change of the file changes its
    ctime), in this process and as an empty file in :func:`_verdict_dir`, so a later start
    does not hash the file again; ``cached=False`` always hashes."""
    try:
        st = path.stat()
        key = hashlib.sha256("\0".join(map(str, (
            os.path.realpath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns,
            st.st_ctime_ns, sha256))).encode("utf-8", "surrogateescape")).hexdigest()
        marker = _verdict_dir() / key
        if cached and (key in _VERIFIED or marker.is_file()):
            _VERIFIED.add(key)
            return
        actual = sha256_file(path)
    except OSError as err:
        raise BundleError(f"{display_path(path)}: cannot read the graph "
                          f"({err.strerror or err})") from None
    if actual != sha256:
        raise BundleError(f"{display_path(path)}: sha256 differs from the manifest (file "
                          "modified or corrupt; re-export the bundle)")
    _VERIFIED.add(key)
    with contextlib.suppress(OSError):  # a read-only cache only costs the next start a hash
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()


def check_new_bundle_dir(out_dir: Path) -> None:
    """Refuse an ``--out`` that ``pig-export --onnx`` cannot create a bundle in (checked
    before the checkpoint is loaded: that can take half a minute)."""
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise PigError(f"--out {out_dir}: already exists and is not an empty directory; "
                       "give a new folder (--calibrate and --trt add to an existing bundle)")
    parent = next((p for p in out_dir.absolute().parents if p.exists()), Path("/"))
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PigError(f"--out {out_dir}: cannot create it ({parent} is not writable)")


def fingerprint(manifest: dict[str, Any]) -> str:
    """sha256 over the fp32 graphs' sha256s, the preprocessing recipe and the tokenizer."""
    g = manifest["graphs"]
    payload = [g["video"]["fp32"]["sha256"], g["text"]["fp32"]["sha256"],
               manifest["preprocess"], manifest["tokenizer"]]
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _check_graph_entry(root: Path, where: str, e: Any, manifest: Path) -> None:
    """BundleError unless a graph entry names a file inside the bundle and a sha256."""
    if not isinstance(e, dict) or not {"file", "sha256"} <= e.keys():
        raise BundleError(f"{manifest}: {where} needs file and sha256")
    file, sha = e["file"], e["sha256"]
    if not isinstance(sha, str) or len(sha) != 64:
        raise BundleError(f"{manifest}: {where}.sha256 is not a sha256 hex digest")
    if not isinstance(file, str) or not file or "\0" in file:
        raise BundleError(f"{manifest}: {where}.file must be a non-empty string (a relative "
                          "path)")
    rel = PurePosixPath(file)
    if rel.is_absolute() or ".." in rel.parts:
        raise BundleError(f"{manifest}: {where}.file {display_path(file)!r} leaves the bundle "
                          "(absolute or '..'); graph files must lie inside it")
    real_root = os.path.realpath(root)
    if os.path.commonpath([real_root, os.path.realpath(root / rel)]) != real_root:
        raise BundleError(f"{manifest}: {where}.file {display_path(file)!r} resolves (through a "
                          "symlink) outside the bundle")


class Bundle:
    """A validated bundle. Use :meth:`load`."""

    def __init__(self, root: Path, manifest: dict[str, Any]) -> None:
        self.dir = root
        self.manifest = manifest
        self.recipe = PreprocessRecipe.from_dict(manifest["preprocess"])
        self.tokenizer_spec = TokenizerSpec.from_dict(manifest["tokenizer"])
        self.embedding_dim: int = manifest["embedding_dim"]
        self.fingerprint: str = manifest["fingerprint"]
        if type(self.embedding_dim) is not int or not 1 <= self.embedding_dim <= MAX_DIM:
            raise ValueError(f"embedding_dim {self.embedding_dim!r} is not an integer in "
                             f"1..{MAX_DIM}")
        if not isinstance(self.fingerprint, str):
            raise ValueError("fingerprint is not a string")
        # False for the two-matrix variant (clip_unit + alpha * fused_unit, see pig-export)
        unit = manifest.get("video_vector", {})
        unit = unit.get("unit_length", True) if isinstance(unit, dict) else unit
        if not isinstance(unit, bool):
            raise ValueError("video_vector must be an object with a boolean unit_length")
        self.unit_vectors = unit

    @classmethod
    def load(cls, root: str | os.PathLike[str]) -> Bundle:
        root = Path(root)
        path = root / MANIFEST
        try:
            m = json.loads(path.read_text())
        except FileNotFoundError:
            raise BundleError(f"{path}: not found ({root} is not a bundle directory)") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
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
        for branch, entries in m["graphs"].items():
            if not isinstance(entries, dict) or (branch in BRANCHES and "fp32" not in entries):
                raise BundleError(f"{path}: no fp32 {branch} graph")
            for precision, e in entries.items():
                _check_graph_entry(root, f"graphs.{branch}.{precision}", e, path)
        for branch in BRANCHES:
            if branch not in m["graphs"]:
                raise BundleError(f"{path}: no fp32 {branch} graph")
        try:
            bundle = cls(root, m)
        except (KeyError, TypeError, ValueError, OverflowError) as err:
            raise BundleError(f"{path}: invalid record ({err})") from None
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

    def graph_path(self, branch: str, precision: str, *, cached: bool = True) -> Path:
        """The graph file, verified against the manifest's sha256 (see :func:`verify_file`):
        every backend and tool opens graphs through here."""
        entry = self.graph_entry(branch, precision)
        path = self.dir / entry["file"]
        if not path.is_file():
            raise BundleError(f"{display_path(path)}: listed in the manifest but missing")
        verify_file(path, entry["sha256"], cached=cached)
        return path

    def graph_sha256(self, branch: str, precision: str) -> str:
        return self.graph_entry(branch, precision)["sha256"]

    def verify(self) -> None:
        """Check every listed file's sha256; BundleError naming the first that differs."""
        for branch, entries in self.manifest["graphs"].items():
            for precision in entries:
                self.graph_path(branch, precision, cached=False)

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
