"""Plan cache under ``bundle/trt/``: keys, verified loading, atomic writes.

A plan is only valid for the exact TensorRT flavour and version, target (one GPU model, or
the compute capabilities a TensorRT-RTX AOT plan was compiled for), ONNX graph, precision,
profile and builder options it was built with. Each ``<name>.plan`` has a
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
from typing import Any

from pig.engine.host.fsutil import write_atomic
from pig.engine.host.gpu import GpuInfo
from pig.engine.trt.profiles import BatchProfile

CACHE_FORMAT = 2  # 2: TensorRT flavour and compute-capability targets in the key


def _slug(name: str) -> str:
    """``"NVIDIA H100 80GB HBM3"`` -> ``"nvidia-h100-80gb-hbm3"`` (safe in file names)."""
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()


@dataclass(frozen=True)
class Target:
    """What a plan is built for: one GPU model (``gpu_name``, its compute capability), or,
    with ``gpu_name`` empty, a portable set of compute capabilities (TensorRT-RTX AOT)."""

    gpu_name: str
    compute_capabilities: tuple[str, ...]  # ("9.0",) / ("8.0", "8.6", "8.9", "12.0")

    @classmethod
    def device(cls, gpu: GpuInfo) -> Target:
        major, minor = gpu.compute_capability
        return cls(gpu.name, (f"{major}.{minor}",))

    @property
    def portable(self) -> bool:
        return not self.gpu_name

    def covers(self, gpu: GpuInfo) -> bool:
        cc = "{}.{}".format(*gpu.compute_capability)
        return self.gpu_name in ("", gpu.name) and cc in self.compute_capabilities

    def slug(self) -> str:
        sms = "-".join("sm" + cc.replace(".", "") for cc in self.compute_capabilities)
        return f"aot-{sms}" if self.portable else f"{_slug(self.gpu_name)}-{sms}"

    def __str__(self) -> str:
        ccs = ", ".join(self.compute_capabilities)
        return f"compute capability {ccs} (portable)" if self.portable else \
            f"{self.gpu_name} (compute capability {ccs})"


@dataclass(frozen=True)
class PlanKey:
    """Everything a serialized engine depends on."""

    branch: str
    precision: str
    onnx_sha256: str
    flavour: str  # "tensorrt" | "tensorrt-rtx"
    trt_version: str
    gpu_name: str  # "" for a portable (AOT) plan
    compute_capabilities: tuple[str, ...]
    profile: tuple[int, ...]  # batch min, opt, max (then text length min, opt, max)
    workspace_bytes: int
    strongly_typed: bool
    format: int = CACHE_FORMAT

    @classmethod
    def make(
        cls,
        branch: str,
        precision: str,
        onnx_sha256: str,
        flavour: str,
        trt_version: str,
        target: Target,
        profile: BatchProfile,
        workspace_bytes: int,
        strongly_typed: bool,
        lengths: tuple[int, ...] | None = None,
    ) -> PlanKey:
        """``lengths``: the text length range (min, opt, max) of a dynamic text graph."""
        return cls(
            branch, precision, onnx_sha256, flavour, trt_version, target.gpu_name,
            target.compute_capabilities, (profile.min, profile.opt, profile.max,
                                          *(lengths or ())),
            workspace_bytes, strongly_typed,
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PlanKey:
        """The inverse of :meth:`to_dict`; raises KeyError/TypeError/ValueError if malformed."""
        fields = {**d, "compute_capabilities": tuple(d["compute_capabilities"]),
                  "profile": tuple(d["profile"])}
        return cls(**fields)

    @property
    def target(self) -> Target:
        return Target(self.gpu_name, self.compute_capabilities)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["profile"] = list(self.profile)
        d["compute_capabilities"] = list(self.compute_capabilities)
        return d

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    def stem(self) -> str:
        """File stem: readable parts plus a digest of the whole key."""
        lo, opt, hi, *lengths = self.profile
        trt = "trtrtx" if self.flavour == "tensorrt-rtx" else "trt"
        seq = f".s{'-'.join(map(str, lengths))}" if lengths else ""
        return (
            f"{self.branch}.{self.precision}.b{lo}-{opt}-{hi}{seq}.{self.target.slug()}"
            f".{trt}{self.trt_version}.{self.digest()[:12]}"
        )


def timing_cache_path(cache_dir: Path, trt_version: str, gpu: GpuInfo) -> Path:
    """One timing cache per GPU model and TensorRT version (shared by all plans)."""
    return cache_dir / f"timing.{_slug(gpu.name)}-{gpu.sm}.trt{trt_version}.cache"


def read_io(plan_path: Path) -> dict[str, Any] | None:
    """The I/O recorded beside a stored plan (see :meth:`PlanCache.store`)."""
    return json.loads(plan_path.with_suffix(".json").read_text()).get("io")


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

    def covering(self, key: PlanKey, gpu: GpuInfo) -> list[PlanKey]:
        """Keys of the cached plans that equal ``key`` except for their target and whose
        target covers ``gpu`` (a portable TensorRT-RTX plan listing its compute
        capability), device-specific ones first. Unreadable sidecars are skipped."""
        want = {k: v for k, v in key.to_dict().items()
                if k not in ("gpu_name", "compute_capabilities")}
        found = []
        for meta_path in sorted(self.dir.glob(f"{key.branch}.{key.precision}.*.json")):
            try:
                other = PlanKey.from_dict(json.loads(meta_path.read_text())["key"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
            same = all(other.to_dict().get(k) == v for k, v in want.items())
            if same and other.target.covers(gpu):
                found.append(other)
        return sorted(found, key=lambda k: k.target.portable)

    def store(self, key: PlanKey, plan: bytes, io: dict[str, Any] | None = None) -> Path:
        """Write plan then sidecar (the sidecar is the commit marker). ``io``: the engine's
        inputs, outputs and profile as the builder's network defined them."""
        plan_path, meta_path = self.paths(key)
        write_atomic(plan_path, plan)
        meta = {"key": key.to_dict(), "plan_sha256": _sha256(plan), "plan_bytes": len(plan),
                "io": io}
        write_atomic(meta_path, json.dumps(meta, indent=2, sort_keys=True).encode())
        return plan_path
