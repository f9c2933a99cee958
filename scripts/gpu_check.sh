#!/usr/bin/env bash
# GPU check for a bare single-GPU host, in one call of < 8 minutes (see scripts/gpu_check.py):
# installs what is missing from carried wheels, builds the C++ extension, runs every section
# and writes JSON results.
#
#   scripts/gpu_wheels.sh              # here, once: wheels for the GPU host into .gpu_wheels/
#   scripts/gpu_check.sh [--json FILE] [--only SECTION ...]     # on the GPU host
#
# Wheels: .gpu_wheels/ (or $PIG_GPU_WHEELS), installed with --no-index, so a host without
# network never waits on one. Results: --json (default $OUT/gpu_check.json when $OUT is set,
# else gpu_check.json).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[[ -x .venv/bin/python ]] && PY=.venv/bin/python
WHEELS=${PIG_GPU_WHEELS:-.gpu_wheels}
JSON=${OUT:+$OUT/}gpu_check.json
start=$SECONDS

command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=index,name,uuid,pci.bus_id,driver_version,memory.total --format=csv || echo "nvidia-smi: not found"

# import name -> pip name of what the check needs; PyNvVideoCodec and onnx are optional
missing=()
for pair in av:av usearch:usearch tokenizers:tokenizers xxhash:xxhash click:click tqdm:tqdm \
            pybind11:pybind11 PyNvVideoCodec:pynvvideocodec onnx:onnx onnxscript:onnxscript; do
  "$PY" -c "import ${pair%%:*}" 2>/dev/null || missing+=("${pair#*:}")
done
if ((${#missing[@]})); then
  echo "installing from $WHEELS: ${missing[*]}"
  for pkg in "${missing[@]}"; do  # one at a time: an absent optional wheel skips only itself
    "$PY" -m pip install -q --no-index --find-links "$WHEELS" --no-deps "$pkg" 2>/dev/null \
      || echo "  $pkg: no wheel in $WHEELS (its checks will say so)"
  done
fi

if ! "$PY" -c "import pig._preprocess" 2>/dev/null; then
  echo "building the C++ extension"
  "$PY" setup.py build_ext --inplace -q >/tmp/pig_build.log 2>&1 \
    || { echo "extension build failed:"; tail -20 /tmp/pig_build.log; }
fi
echo "set-up took $((SECONDS - start)) s"
PYTHONUNBUFFERED=1 PYTHONPATH=. exec timeout 460 "$PY" scripts/gpu_check.py --json "$JSON" "$@"
