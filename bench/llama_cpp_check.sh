#!/usr/bin/env bash
# llama.cpp runs a Tenali export: converted by llama.cpp's own convert_hf_to_gguf.py, its token ids,
# logits and greedy tokens are compared with transformers' (bench/llama_cpp_check.py).
#
#   bash bench/llama_cpp_check.sh [EXPORT_DIR]    default: the latest release in this profile's lake
#
# Downloads the llama-cpp-python sdist from PyPI (it vendors llama.cpp and its converter) into
# var/llama-cpp/ and builds it in a venv of its own there (under 5 minutes on 2 cores, once).
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=0.3.36
WORK=var/llama-cpp
PY=.venv/bin/python
export_dir=${1:-}
if [[ -z "$export_dir" ]]; then
  # the folder `tenali serve` would serve: releases/LATEST.json in this profile's lake (it says what is missing)
  export_dir=$($PY - <<'PY'
import sys
from tenali_model.serve.loading import LoadError, latest_release_dir
from tenali_pipeline.settings import load_settings
try:
    print(latest_release_dir(load_settings().lake_root))
except LoadError as e:
    sys.exit(f"no release to check: {e}; or pass an export folder")
PY
) || exit 2
fi
mkdir -p "$WORK"
src=$WORK/llama_cpp_python-$VERSION
if [[ ! -d $src ]]; then
  $PY -m pip download -q --no-deps --no-binary :all: -d "$WORK" "llama-cpp-python==$VERSION"
  tar xzf "$WORK/llama_cpp_python-$VERSION.tar.gz" -C "$WORK"
fi
if [[ ! -x $WORK/venv/bin/python ]] || ! "$WORK/venv/bin/python" -c 'import llama_cpp' 2>/dev/null; then
  python3 -m venv "$WORK/venv"
  CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2} "$WORK/venv/bin/pip" install -q "$WORK/llama_cpp_python-$VERSION.tar.gz"
fi
gguf=$WORK/$(basename "$export_dir").f32.gguf
# the converter needs transformers, sentencepiece and torch (the project's venv) and its own gguf-py
if ! PYTHONPATH=$src/vendor/llama.cpp/gguf-py $PY "$src/vendor/llama.cpp/convert_hf_to_gguf.py" "$export_dir" \
    --outfile "$gguf" --outtype f32 > "$WORK/convert.log" 2>&1; then
  tail -20 "$WORK/convert.log" >&2
  echo "llama.cpp's converter refused $export_dir (log: $WORK/convert.log)" >&2
  exit 1
fi
echo "converted $export_dir to $gguf ($(grep -c 'torch.float32 --> F32' "$WORK/convert.log") tensors)"
$PY bench/llama_cpp_check.py reference "$export_dir" "$WORK/reference.json"
"$WORK/venv/bin/python" bench/llama_cpp_check.py compare "$gguf" "$WORK/reference.json"
