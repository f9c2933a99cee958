"""CI check: every GPU extra resolves, on PyPI, to packages built for its one CUDA major.

For each extra, ``pip install --dry-run --no-deps --ignore-installed --report`` resolves its
pins to the newest allowed versions from metadata alone (PyPI's separate metadata files, or
a small sdist's): no large wheel is downloaded. Each resolved package must then name the
extra's CUDA major, and no other, in its name (``tensorrt-cu12``), its version
(``cuda-python`` 12.x is CUDA 12) or its own requirements (``onnxruntime-gpu[cuda]`` ->
``nvidia-cuda-runtime-cu12~=12.0``). The pins are read from ``GPU_EXTRAS`` in setup.py.
Usage: ``python scripts/check_gpu_extras.py`` (about 10 s per extra).
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

EXTRAS = {"gpu-cu12": 12, "gpu-cu13": 13, "trt-rtx": 12}
# the CUDA libraries of these wheels are found by NVIDIA's own index at build time: their
# metadata cannot be read without it; the package that pins them carries the same suffix
SKIP = re.compile(r"^tensorrt[-_]cu\d+[-_]libs$")
_SUFFIX = re.compile(r"[-_]cu(\d+)(?:[-_]|$)")
_PINNED_MAJOR = re.compile(r"^(nvidia-cuda-runtime|cuda-bindings)\b[^;]*?~=\s*(\d+)")


def gpu_extras(setup_py: Path = ROOT / "setup.py") -> dict[str, list[str]]:
    """``GPU_EXTRAS`` of setup.py, read without running it."""
    for node in ast.parse(setup_py.read_text()).body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "GPU_EXTRAS" for t in node.targets):
            return ast.literal_eval(node.value)
    raise SystemExit(f"check_gpu_extras: {setup_py} has no GPU_EXTRAS")


def cuda_majors(name: str, version: str, requirements: list[str]) -> set[int]:
    """The CUDA majors a resolved distribution names: suffix, own version, requirements."""
    norm = name.lower().replace("_", "-")
    majors = {int(m) for m in _SUFFIX.findall(norm)}
    if norm in ("cuda-python", "cuda-bindings"):
        majors.add(int(version.split(".")[0]))
    for req in requirements:
        head = req.split(";")[0].strip().lower().replace("_", "-")
        req_name = re.split(r"[\[<>=~!\s]", head, maxsplit=1)[0]
        majors.update(int(m) for m in _SUFFIX.findall(req_name))
        pinned = _PINNED_MAJOR.match(head)
        if pinned:
            majors.add(int(pinned.group(2)))
    return majors


def problems(extra: str, major: int, report: dict) -> list[str]:
    """What is wrong with the resolution of ``extra`` (pip's JSON report); [] if nothing."""
    out = []
    for item in report.get("install", []):
        meta = item["metadata"]
        found = cuda_majors(meta["name"], meta["version"], meta.get("requires_dist") or [])
        label = f"{meta['name']} {meta['version']}"
        if not found:
            out.append(f"{extra}: {label} names no CUDA major")
        elif found != {major}:
            out.append(f"{extra}: {label} is built for CUDA {sorted(found)}, not {major}")
    return out


def resolve(requirements: list[str]) -> dict:
    """pip's dry-run report for ``requirements`` (metadata only, no dependencies)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps",
               "--ignore-installed", "--quiet", "--report", str(path), *requirements]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise SystemExit(f"check_gpu_extras: pip cannot resolve {requirements}:\n"
                             f"{done.stderr[-2000:]}")
        return json.loads(path.read_text())


def main() -> int:
    failed: list[str] = []
    extras = gpu_extras()
    if set(extras) != set(EXTRAS):
        raise SystemExit(f"check_gpu_extras: setup.py has {sorted(extras)}, the check knows "
                         f"{sorted(EXTRAS)}: give each its CUDA major here")
    for extra, major in EXTRAS.items():
        t0 = time.perf_counter()
        reqs = [r for r in extras[extra] if not SKIP.match(re.split(r"[\[<>=~!;\s]", r)[0])]
        report = resolve(reqs)
        bad = problems(extra, major, report)
        failed += bad
        got = ", ".join(f"{i['metadata']['name']} {i['metadata']['version']}"
                        for i in report.get("install", []))
        print(f"{extra} (CUDA {major}): {got}: {'FAIL' if bad else 'ok'} "
              f"({time.perf_counter() - t0:.1f}s)")
    for line in failed:
        print(f"FAIL {line}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
