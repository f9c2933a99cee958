"""Plan cache under ``bundle/trt/``: keys, verified loading, atomic writes.

A plan is only valid for the exact TensorRT version, GPU model and compute capability, ONNX
graph, precision, profile and builder options it was built with. Each ``<name>.plan`` has a
sidecar ``<name>.json`` holding its :class:`PlanKey` and the plan's sha256; a plan is loaded
only when the sidecar matches the key wanted now and the bytes match the recorded hash.
Anything else (stale, foreign, truncated, hand-copied) is rebuilt, never deserialised blind.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from pig.engine.fsutil import write_atomic
from pig.engine.gpu import GpuInfo
from pig.engine.trt.profiles import BatchProfile

CACHE_FORMAT = 1


def _slug(name: str) -> str:
    """``"NVIDIA H100 80GB HBM3"`` -> ``"nvidia-h100-80gb-hbm3"`` (safe in file names)."""
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()


@dataclass(frozen=True)
class PlanKey:
    """Everything a serialized engine depends on."""

    branch: str
    precision: str
    onnx_sha256: str
    trt_version: str
    gpu_name: str
    compute_capability: str  # "9.0"
    profile: tuple[int, int, int]  # batch min, opt, max
    workspace_bytes: int
    strongly_typed: bool
    format: int = CACHE_FORMAT

    @classmethod
    def make(
        cls,
        branch: str,
        precision: str,
        onnx_sha256: str,
        trt_version: str,
        gpu: GpuInfo,
        profile: BatchProfile,
        workspace_bytes: int,
        strongly_typed: bool,
    ) -> PlanKey:
        major, minor = gpu.compute_capability
        return cls(
            branch, precision, onnx_sha256, trt_version, gpu.name, f"{major}.{minor}",
            (profile.min, profile.opt, profile.max), workspace_bytes, strongly_typed,
        )

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["profile"] = list(self.profile)
        return d

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    def stem(self) -> str:
        """File stem: readable parts plus a digest of the whole key."""
        gpu = _slug(self.gpu_name)
        sm = self.compute_capability.replace(".", "")
        lo, opt, hi = self.profile
        return (
            f"{self.branch}.{self.precision}.b{lo}-{opt}-{hi}.{gpu}-sm{sm}"
            f".trt{self.trt_version}.{self.digest()[:12]}"
        )


def timing_cache_path(cache_dir: Path, trt_version: str, gpu: GpuInfo) -> Path:
    """One timing cache per GPU model and TensorRT version (shared by all plans)."""
    return cache_dir / f"timing.{_slug(gpu.name)}-{gpu.sm}.trt{trt_version}.cache"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class PlanCache:
    """The ``trt/`` folder of a bundle (or any writable folder)."""

    def __init__(self, cache_dir: str | os.PathLike[str]) -> None:
        self.dir = Path(cache_dir)

    def paths(self, key: PlanKey) -> tuple[Path, Path]:
        stem = key.stem()
        return self.dir / f"{stem}.plan", self.dir / f"{stem}.json"

    def load(self, key: PlanKey) -> tuple[bytes | None, str]:
        """(plan bytes, "") if a verified plan for ``key`` exists, else (None, why not)."""
        plan_path, meta_path = self.paths(key)
        if not plan_path.exists():
            return None, f"no cached plan {plan_path.name}"
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as err:
            return None, f"{meta_path.name} unreadable ({err.__class__.__name__})"
        if meta.get("key") != key.to_dict():
            wanted = key.to_dict()
            diff = sorted(k for k in wanted if meta.get("key", {}).get(k) != wanted[k])
            return None, f"{plan_path.name} was built for different {', '.join(diff)}"
        data = plan_path.read_bytes()
        if _sha256(data) != meta.get("plan_sha256"):
            return None, f"{plan_path.name} does not match its recorded sha256 (truncated?)"
        return data, ""

    def store(self, key: PlanKey, plan: bytes) -> Path:
        """Write plan then sidecar (the sidecar is the commit marker)."""
        plan_path, meta_path = self.paths(key)
        write_atomic(plan_path, plan)
        meta = {"key": key.to_dict(), "plan_sha256": _sha256(plan), "plan_bytes": len(plan)}
        write_atomic(meta_path, json.dumps(meta, indent=2, sort_keys=True).encode())
        return plan_path
