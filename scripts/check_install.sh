#!/usr/bin/env bash
# A user's install, checked: fresh virtual environments holding only the runtime and the
# `serve` extra (no dev tools), once at the NEWEST versions setup.py's ranges allow and once at
# their LOWER bounds, each running the user path on the demo bundle: `pig-engine index` of
# generated clips, `search`, `serve` (search, embeddings, models, page, /docs offline, stop
# line), and the tokenizer's parity test against HF's ids of the caption corpus.
#
#   bash scripts/check_install.sh [newest] [lowest]     (default both; `make check-install`)
#
# uv (from the dev venv, DEV_VENV, default .venv) builds the wheel (the C++ extension, once
# for both), resolves and installs; its cache (~/.cache/uv) makes a second run take a minute.
# The dev venv exports the demo bundle (pig-export needs torch; cached per checkpoint digest).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
DEV=${DEV_VENV:-$ROOT/.venv}
WORK=$(realpath -m "${CHECK_INSTALL_DIR:-build/check-install}")  # absolute: the runs cd
mkdir -p "$WORK"
MODES=("$@")
[ $# -gt 0 ] || MODES=(newest lowest)
UV="$DEV/bin/uv"
BASE_PY=$("$DEV/bin/python" -c 'import sys; print(sys._base_executable)')
say() { echo "check-install: $*"; }
dev() { PYTHONPATH="$ROOT" "$DEV/bin/python" "$@"; }

say "building the wheel"
rm -rf "$WORK/dist"
"$UV" build -q --wheel --python "$BASE_PY" --out-dir "$WORK/dist" "$ROOT"  # isolated build
WHEEL=$(ls "$WORK"/dist/pig_engine-*.whl)

say "the demo bundle (exported once per checkpoint)"
dev -c "import sys; from pathlib import Path; from pig.demo.run import ensure_bundle, model_files
ensure_bundle(*model_files(), Path(sys.argv[1]))" "$WORK/bundle"

# The lower bound of every runtime and serve requirement, as exact pins.
dev - "$WHEEL" > "$WORK/lowest.txt" <<'EOF'
import sys, zipfile
from packaging.requirements import Requirement
with zipfile.ZipFile(sys.argv[1]) as z:
    meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
    lines = z.read(meta).decode().splitlines()
for line in lines:
    if not line.startswith("Requires-Dist: "):
        continue
    req = Requirement(line.removeprefix("Requires-Dist: "))
    if req.marker is not None and not req.marker.evaluate({"extra": "serve"}):
        continue
    low = [s.version for s in req.specifier if s.operator in (">=", "==")]
    if len(low) != 1:
        sys.exit(f"{req}: needs one lower bound (>= or ==)")
    print(f"{req.name}=={low[0]}")
EOF

for mode in "${MODES[@]}"; do
  case $mode in
    newest) constraint=() ;;
    lowest) constraint=(--constraint "$WORK/lowest.txt") ;;
    *) echo "check-install: unknown mode $mode (newest, lowest)" >&2; exit 2 ;;
  esac
  venv="$WORK/venv-$mode" run="$WORK/run-$mode"
  rm -rf "$venv" "$run"
  mkdir -p "$run"
  say "[$mode] fresh venv with pig-engine[serve]"
  "$UV" venv -q --python "$BASE_PY" "$venv"
  "$UV" pip install -q --python "$venv/bin/python" "${constraint[@]}" "$WHEEL[serve]"
  "$UV" pip list --python "$venv/bin/python" 2>/dev/null \
    | grep -iE '^(numpy|onnxruntime|usearch|xxhash|av|tokenizers|click|tqdm|fastapi|fastapi-offline|starlette|pydantic|uvicorn|uvloop|httptools|prometheus-client) ' \
    | awk '{printf "%s %s, ", $1, $2} END {print ""}' | sed "s/^/check-install: [$mode] /"
  # Everything below runs the venv's own console scripts, outside the checkout, with a clean
  # environment: what a user who installed the wheel has.
  (
    cd "$run"
    unset PYTHONPATH
    export PATH="$venv/bin:/usr/bin:/bin"
    pig-engine --version
    python -m pig.demo.synth --out clips --train 0 --heldout 12 >/dev/null
    pig-engine index clips --bundle "$WORK/bundle" --index index
    pig-engine search --index index -k 3 -q "a red circle moves to the left" --json > search.json
    python "$ROOT/scripts/check_install_serve.py" --index index --search search.json
    # The tokenizer's parity with HF's ids, on the tokenizers version installed here: the test
    # files copied out of the checkout so that the installed package is the one imported.
    mkdir -p tests/reference
    cp "$ROOT/tests/test_tokenizer.py" "$ROOT/tests/tokenizer_corpus.py" tests/
    cp "$ROOT/tests/reference/clip_tokenizer_ids.npz" tests/reference/
    "$UV" pip install -q --python "$venv/bin/python" pytest
    python -m pytest -q -p no:cacheprovider tests/test_tokenizer.py
  )
  say "[$mode] passed"
done
