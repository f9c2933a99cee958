"""GPU presence detection that never touches CUDA or TensorRT.

Creating a CUDA context or a TensorRT runtime on a machine without a usable GPU can abort the
process, so the runtime asks cheaper questions first, in this order:

1. ``CUDA_VISIBLE_DEVICES`` hides every device (``""``, ``"-1"``, ``"NoDevFiles"``) -> no GPU.
2. Linux: the driver's device nodes ``/dev/nvidiactl`` and ``/dev/nvidia<N>`` must exist.
3. NVML (``libnvidia-ml.so.1``, shipped with the driver) through ``ctypes``: device count,
   name, compute capability, UUID and PCI bus id. NVML is the driver's management library:
   it opens no CUDA context, allocates no GPU memory and fails with a status code, never a
   crash.
4. If NVML cannot be loaded: ``nvidia-smi --query-gpu`` (same library, another process).

Only after this returns a :class:`GpuInfo` may CUDA (cuda-python) or TensorRT be imported.

Which GPU: NVML numbers devices in PCI bus order, CUDA by default fastest first, so on a
host with different GPUs "device 0" can name two cards. The probe therefore describes the GPU
by UUID and PCI bus id (``CUDA_VISIBLE_DEVICES`` may hold either, or an index, read in PCI
bus order), and CUDA is then pointed at that same card by its bus id
(:class:`pig.engine.trt.cuda.Cuda`), which also checks the UUID.
"""

from __future__ import annotations

import ctypes
import functools
import glob
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass

from pig.errors import BackendUnavailable, GpuFault

_HIDDEN = {"", "-1", "none", "nodevfiles", "void"}
_NVML_SUCCESS = 0


@dataclass(frozen=True)
class GpuInfo:
    """The GPU that CUDA will call device 0 (the first visible one)."""

    name: str
    compute_capability: tuple[int, int]
    memory_bytes: int
    driver_version: str
    source: str  # "nvml" or "nvidia-smi": how it was found
    uuid: str = ""  # "GPU-8c0f...": the card, whatever the numbering
    pci_bus_id: str = ""  # "0000:17:00.0": what CUDA is given to open this card

    @property
    def sm(self) -> str:
        return f"sm_{self.compute_capability[0]}{self.compute_capability[1]}"

    def __str__(self) -> str:
        return f"{self.name} ({self.sm})"


class _PciInfo(ctypes.Structure):
    """``nvmlPciInfo_t`` (nvml.h, ``nvmlDeviceGetPciInfo_v3``)."""

    _fields_ = [("busIdLegacy", ctypes.c_char * 16), ("domain", ctypes.c_uint),
                ("bus", ctypes.c_uint), ("device", ctypes.c_uint),
                ("pciDeviceId", ctypes.c_uint), ("pciSubSystemId", ctypes.c_uint),
                ("busId", ctypes.c_char * 32)]


def bus_id(domain: int, bus: int, device: int) -> str:
    """The PCI bus id as CUDA writes it (``cudaDeviceGetPCIBusId``): ``0000:17:00.0``."""
    return f"{domain:04x}:{bus:02x}:{device:02x}.0"


def normal_bus_id(text: str) -> str:
    """``00000000:17:00.0`` (NVML, nvidia-smi) or ``0000:17:00.0`` (CUDA) as :func:`bus_id`."""
    try:
        domain, bus, rest = text.strip().lower().split(":")
        return bus_id(int(domain, 16), int(bus, 16), int(rest.split(".")[0], 16))
    except ValueError:
        return text.strip().lower()


def _visible_selector() -> str | None:
    """First entry of ``CUDA_VISIBLE_DEVICES`` (index, UUID or ``GPU-`` prefix of one); None
    when unset."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is None:
        return None
    first = env.split(",")[0].strip()
    if first.lower() in _HIDDEN:
        raise BackendUnavailable(f"no GPU: CUDA_VISIBLE_DEVICES={env!r} hides every device")
    return first


def _check_device_nodes() -> None:
    if not sys.platform.startswith("linux"):
        return
    if not os.path.exists("/dev/nvidiactl") or not glob.glob("/dev/nvidia[0-9]*"):
        raise BackendUnavailable("no GPU: no NVIDIA device nodes (/dev/nvidiactl, /dev/nvidia0)")


def _nvml(selector: str | None) -> GpuInfo:
    lib = ctypes.CDLL("libnvidia-ml.so.1")

    def call(fn: str, *args: object) -> None:
        rc = getattr(lib, fn)(*args)
        if rc != _NVML_SUCCESS:
            raise GpuFault(f"no usable GPU: NVML {fn} returned error {rc}")

    call("nvmlInit_v2")
    try:
        count = ctypes.c_uint()
        call("nvmlDeviceGetCount_v2", ctypes.byref(count))
        if count.value == 0:
            raise BackendUnavailable("no GPU: the NVIDIA driver reports 0 devices")
        handle = ctypes.c_void_p()
        if selector is not None and not selector.isdigit():
            call("nvmlDeviceGetHandleByUUID", selector.encode(), ctypes.byref(handle))
        else:
            call("nvmlDeviceGetHandleByIndex_v2", int(selector or 0), ctypes.byref(handle))
        name = ctypes.create_string_buffer(96)
        call("nvmlDeviceGetName", handle, name, 96)
        major, minor = ctypes.c_int(), ctypes.c_int()
        call("nvmlDeviceGetCudaComputeCapability", handle, ctypes.byref(major), ctypes.byref(minor))
        mem = (ctypes.c_ulonglong * 3)()  # nvmlMemory_t: total, free, used
        call("nvmlDeviceGetMemoryInfo", handle, ctypes.byref(mem))
        driver = ctypes.create_string_buffer(80)
        call("nvmlSystemGetDriverVersion", driver, 80)
        # identity: where NVML cannot say (e.g. a MIG instance), CUDA's device 0 is used as is
        uuid = ctypes.create_string_buffer(96)
        if lib.nvmlDeviceGetUUID(handle, uuid, 96) != _NVML_SUCCESS:
            uuid.value = b""
        pci = _PciInfo()
        found_pci = lib.nvmlDeviceGetPciInfo_v3(handle, ctypes.byref(pci)) == _NVML_SUCCESS
    finally:
        lib.nvmlShutdown()
    return GpuInfo(
        name=name.value.decode(),
        compute_capability=(major.value, minor.value),
        memory_bytes=int(mem[0]),
        driver_version=driver.value.decode(),
        source="nvml",
        uuid=uuid.value.decode(),
        pci_bus_id=bus_id(pci.domain, pci.bus, pci.device) if found_pci else "",
    )


def _nvidia_smi(selector: str | None) -> GpuInfo:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        raise BackendUnavailable("no GPU: neither NVML (libnvidia-ml.so.1) nor nvidia-smi found")
    query = "--query-gpu=index,uuid,name,compute_cap,memory.total,driver_version,pci.bus_id"
    try:
        out = subprocess.run(
            [exe, query, "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=15, check=True,
        ).stdout
    except (subprocess.SubprocessError, OSError) as err:
        raise BackendUnavailable(f"no usable GPU: nvidia-smi failed ({err})") from None
    rows = [[c.strip() for c in line.split(",")] for line in out.splitlines() if line.strip()]
    rows = [r for r in rows if selector is None or selector == r[0] or r[1].startswith(selector)]
    if not rows:
        raise BackendUnavailable("no GPU: nvidia-smi lists no (visible) device")
    _, uuid, name, cc, mem_mib, driver, pci = rows[0]
    major, minor = cc.split(".")
    return GpuInfo(name, (int(major), int(minor)), int(float(mem_mib)) << 20, driver,
                   "nvidia-smi", uuid, normal_bus_id(pci))


def probe_gpu() -> GpuInfo:
    """The first visible NVIDIA GPU, found without CUDA; raises BackendUnavailable if none.

    The answer, a GPU or why there is none, is kept per ``CUDA_VISIBLE_DEVICES`` selection for
    the life of the process (NVML or nvidia-smi run once); :func:`clear_probe_cache` forgets it.
    """
    found = _probe(_visible_selector())
    if isinstance(found, str):
        raise BackendUnavailable(found)
    return found


@functools.cache
def _probe(selector: str | None) -> GpuInfo | str:
    """:func:`probe_gpu` for one device selector: the GPU, or why there is none."""
    try:
        _check_device_nodes()
        try:
            return _nvml(selector)
        except OSError:  # libnvidia-ml.so.1 not loadable (container without the driver's libs)
            return _nvidia_smi(selector)
    except BackendUnavailable as err:
        return str(err)


def clear_probe_cache() -> None:
    """Forget what :func:`probe_gpu` found (tests that fake the driver or the environment)."""
    _probe.cache_clear()


def gpu_or_none() -> tuple[GpuInfo | None, str]:
    """(GPU, "") when one is present, else (None, why not)."""
    try:
        return probe_gpu(), ""
    except BackendUnavailable as err:
        return None, str(err)
