"""Which TensorRT is installed: TensorRT 10/11 (``tensorrt``) or TensorRT-RTX, by feature.

Both have the same Python API (Builder, strongly typed networks, OnnxParser, BuilderConfig).
TensorRT-RTX is recognised by what it offers, not by its name: a ``ComputeCapability`` enum
and ``IBuilderConfig.set_compute_capability``, with which its builder compiles engines for
named GPU generations without any GPU present ("CPU-only AOT"; verified: importing it,
creating a builder and building load no CUDA library). Its runtime runs on the compute
capabilities of that enum (7.5, 8.0, 8.6, 8.9, 12.x in 1.7), not on Hopper (9.0).

``tensorrt`` 10/11 builds for the GPU present and may abort the process without one, so it
is imported only after :func:`pig.engine.host.gpu.probe_gpu` found a GPU; the TensorRT-RTX
modules are the only ones imported on a machine without a GPU.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from typing import Any

from pig.engine.host.gpu import GpuInfo
from pig.errors import BackendUnavailable, GpuFault

DATACENTER_MODULE = "tensorrt"
# ``tensorrt_rtx`` where NVIDIA's metapackage installs; the PyPI wheels
# tensorrt-rtx-cu12-bindings/-libs install ``tensorrt_rtx_bindings``
RTX_MODULES = ("tensorrt_rtx", "tensorrt_rtx_bindings")
# TensorRT-RTX's documented default portable set (engines then run on all of them); the
# build names them explicitly so that the plan cache key says exactly what a plan covers
RTX_DEFAULT_TARGETS = ("8.0", "8.6", "8.9", "12.0")
INSTALL_HINT = ("pip install tensorrt (TensorRT 10/11) or "
                "pip install 'pig-engine[trt-rtx]' (TensorRT-RTX)")


def module_present(name: str) -> bool:
    """Is ``name`` importable (found without importing it)?"""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def cc_text(cc: tuple[int, int]) -> str:
    return f"{cc[0]}.{cc[1]}"


@dataclass(frozen=True)
class Flavour:
    """An imported TensorRT module and what it can do."""

    module: Any
    name: str  # "tensorrt" | "tensorrt-rtx"
    version: str
    # compute capabilities an engine can target ("8.6"); None: the GPU present only
    targets: tuple[str, ...] | None

    @property
    def aot(self) -> bool:
        """Can the builder compile for named compute capabilities, without a GPU?"""
        return self.targets is not None

    @property
    def label(self) -> str:
        """``"TensorRT 10.9.0"`` / ``"TensorRT-RTX 1.7.1.116"`` (backend line, plan key)."""
        return f"{'TensorRT-RTX' if self.aot else 'TensorRT'} {self.version}"

    def runs_on(self, gpu: GpuInfo) -> bool:
        return self.targets is None or cc_text(gpu.compute_capability) in self.targets

    def check_runs_on(self, gpu: GpuInfo) -> None:
        """Refuse, naming the GPU and the supported set, a GPU this flavour cannot run on."""
        if not self.runs_on(gpu):
            raise BackendUnavailable(
                f"{self.label} does not run on {gpu}: it supports compute capability "
                f"{', '.join(self.targets or ())}; install TensorRT 10/11 (pip install "
                "tensorrt) for this GPU, or use --backend onnxruntime"
            )

    def enum_target(self, cc: str) -> Any:
        """The ``ComputeCapability`` member of ``"8.6"`` (``SM86``)."""
        return getattr(self.module.ComputeCapability, "SM" + cc.replace(".", ""))


def _targets(module: Any) -> tuple[str, ...] | None:
    enum = getattr(module, "ComputeCapability", None)
    config = getattr(module, "IBuilderConfig", None)
    if enum is None or not hasattr(config, "set_compute_capability"):
        return None
    found = []
    for name in enum.__members__:
        if name.startswith("SM") and name[2:].isdigit():
            digits = name[2:]
            found.append((int(digits[:-1]), int(digits[-1])))
    return tuple(cc_text(cc) for cc in sorted(found))


def _load(name: str) -> Flavour:
    module = importlib.import_module(name)
    targets = _targets(module)
    return Flavour(module, "tensorrt-rtx" if targets is not None else "tensorrt",
                   str(module.__version__), targets)


def installed_names(gpu: GpuInfo | None) -> list[str]:
    """Module names usable here, preferred first, found without importing any: with a GPU
    ``tensorrt`` (the datacenter target) then TensorRT-RTX; without one TensorRT-RTX only."""
    names = [DATACENTER_MODULE] if gpu is not None else []
    return [n for n in (*names, *RTX_MODULES) if module_present(n)]


def missing(gpu: GpuInfo | None, no_gpu: str = "no GPU") -> str:
    """Why no TensorRT can build (and, with ``gpu``, run) here; "" if one can. ``no_gpu``:
    why there is no GPU. Imports a module only when its answer depends on the GPU (the
    supported set of TensorRT-RTX)."""
    names = installed_names(gpu)
    if not names:
        return ("no TensorRT Python package is installed" if gpu is not None else
                f"{no_gpu}; and TensorRT-RTX, the TensorRT that builds without a GPU, is "
                "not installed")
    if gpu is not None and DATACENTER_MODULE not in names:
        try:
            load(gpu).check_runs_on(gpu)
        except BackendUnavailable as err:
            return str(err)
    return ""


def load(gpu: GpuInfo | None, no_gpu: str = "no GPU") -> Flavour:
    """The TensorRT to use: with a GPU the first of :func:`installed_names` (``tensorrt``
    wins), without one a TensorRT-RTX module that offers CPU-only AOT builds."""
    names = installed_names(gpu)
    if not names:
        raise BackendUnavailable(f"{missing(gpu, no_gpu)} ({INSTALL_HINT}); "
                                 "use --backend onnxruntime")
    failed = []
    for name in names:
        try:
            flavour = _load(name)
            break
        except Exception as err:  # ImportError, or OSError/RuntimeError of a broken install
            failed.append(f"{name}: {type(err).__name__}: {err}")
    else:
        raise GpuFault(f"TensorRT cannot be imported ({'; '.join(failed)}); "
                         "use --backend onnxruntime")
    if gpu is None and not flavour.aot:
        raise BackendUnavailable(
            f"no GPU, and {flavour.module.__name__} {flavour.version} has no compute-capability "
            "targets (CPU-only AOT builds need TensorRT-RTX)"
        )
    return flavour
