#!/usr/bin/env bash
# GPU verification of the backends in one go (see scripts/gpu_check.py); < 5 minutes.
# Usage: scripts/gpu_check.sh [--bundle DIR] [--json FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=python3
[[ -x .venv/bin/python ]] && PY=.venv/bin/python
command -v nvidia-smi >/dev/null && nvidia-smi -L || echo "nvidia-smi: not found"
"$PY" - <<'PYEOF'
import importlib.util as u
for m in ("tensorrt", "tensorrt_rtx", "tensorrt_rtx_bindings", "cuda.bindings", "cuda.cudart",
          "onnxruntime"):
    try:
        found = u.find_spec(m) is not None
    except ImportError:
        found = False
    print(f"{m:22s} {'present' if found else 'absent'}")
PYEOF
PYTHONUNBUFFERED=1 PYTHONPATH=. exec "$PY" scripts/gpu_check.py "$@"
