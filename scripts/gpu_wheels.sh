#!/usr/bin/env bash
# Wheels for scripts/gpu_check.sh on a bare GPU host (Python 3.12, x86_64, no network):
# downloads into .gpu_wheels/ (ignored by git) and prints the total, which must stay under
# the 64 MiB a device call carries (63.7 MiB: PyAV 34.9, PyNvVideoCodec 25.6, usearch 2.2;
# tokenizers, for the backends section only, is left out).
# Usage: scripts/gpu_wheels.sh [python-version, default 3.12]
set -euo pipefail
cd "$(dirname "$0")/.."
PYV=${1:-3.12}
PY=python3
[[ -x .venv/bin/python ]] && PY=.venv/bin/python
mkdir -p .gpu_wheels
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYV" \
  --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
  -d .gpu_wheels "av>=18,<19" "usearch>=2.12" "xxhash==4.1.0" click tqdm \
  "pybind11>=2.12" "pynvvideocodec==2.2.4"
du -sh .gpu_wheels
ls -la .gpu_wheels
