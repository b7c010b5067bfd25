#!/usr/bin/env bash
# The GPU figures still unmeasured (trainer MFU; serving on a GPU) and the model's CUDA paths, as one
# prepared run for a lent GPU machine: it has its own PyTorch and transformers but no dagster, no
# fastapi and no network, so tenali_model runs there on its own and the server's wheels travel with
# the working tree.
#
#   here:   make device-wheels                 # fastapi + uvicorn for Python 3.12, into var/device-wheels
#   there:  bash bench/device_checks.sh tests mfu    # CUDA tests; 125m and 1b (bf16, compiled); the largest
#                                                    # config that fits (stage limits: 90 + 300 + 200 s)
#           bash bench/device_checks.sh serve        # bench_serve.py, 51m preset, bf16 (limit 420 s)
#   (with the device tool: carry ["var/device-wheels"]; each of the two commands fits one 10-minute call)
#
# Parts run in the order given (default: tests mfu serve). Every stage has its own time limit and a
# failing stage does not stop the next. Results land in $OUT (default var/device-checks) as a few
# flat files, within what the device tool brings back: log.txt (everything printed), env.txt (GPU,
# driver, versions), mfu.json, mfu_largest.json, serve.json, serve.md. docs/benchmarks.md ("GPU
# figures") says what to record from them.
set -u
parts=${*:-tests mfu serve}
for part in $parts; do
    case "$part" in tests|mfu|serve) ;; *) echo "usage: $0 [tests] [mfu] [serve]" >&2; exit 2 ;; esac
done
wants() { case " $parts " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
OUT=${OUT:-var/device-checks}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
work=$(mktemp -d)
export PYTHONUNBUFFERED=1
exec > >(tee -a "$OUT/log.txt") 2>&1

stage() {  # stage NAME LIMIT_SECONDS COMMAND...: run with a time limit, say how it ended
    local name=$1 limit=$2 t=$SECONDS rc
    shift 2
    echo "== $name (limit ${limit} s): $*"
    timeout "$limit" "$@"
    rc=$?
    echo "== $name: exit $rc after $((SECONDS - t)) s$([ $rc = 124 ] && echo ' (time limit)')"
}

{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
    "$PY" - <<'EOF'
import importlib.metadata, platform, torch
print("python", platform.python_version(), "| torch", torch.__version__, "| cuda", torch.version.cuda,
      "| device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")
for name in ("transformers", "safetensors", "fastapi", "uvicorn", "httpx", "prometheus_client"):
    try:
        print(name, importlib.metadata.version(name.replace("_", "-")))
    except importlib.metadata.PackageNotFoundError:
        print(name, "not installed")
EOF
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

if wants serve; then
    if [ -d var/device-wheels ]; then
        "$PY" -m pip install -q --no-index --find-links var/device-wheels fastapi uvicorn \
            || echo "installing the carried wheels failed: the HTTP path of bench_serve will fail"
    else
        echo "no var/device-wheels (make device-wheels, then carry it): the HTTP path needs fastapi and uvicorn"
    fi
fi

if wants tests; then
    # Correctness first: the model's CUDA paths against its CPU ones, the trainer on the GPU (the
    # overrides keep pyproject's dagster warning filters out: there is no dagster there).
    stage cuda_tests 90 "$PY" -m pytest -q -p no:cacheprovider -o addopts="" \
        -o filterwarnings=ignore::DeprecationWarning tests/model/test_model_cuda.py
fi

if wants mfu; then
    # The issue's figures: 125M and 1B with bf16 and compile on one GPU (target MFU >= 45% for 1B).
    stage mfu 300 "$PY" bench/bench_mfu.py --configs 125m,1b --compile --dtype bfloat16 --batch 8 \
        --steps 10 --warmup 3 --timeout 145 --out "$work/mfu"
    cp "$work/mfu/results.json" "$OUT/mfu.json" 2>/dev/null
    # The largest config that fits one GPU: 7B (fp32 weights and AdamW state, ~108 GB before
    # activations) with activation checkpointing, else the 1B.
    stage mfu_largest 200 "$PY" bench/bench_mfu.py --configs 7b,1b --first-fit --activation-checkpointing \
        --dtype bfloat16 --batch 1 --steps 4 --warmup 2 --timeout 120 --out "$work/largest"
    cp "$work/largest/results.json" "$OUT/mfu_largest.json" 2>/dev/null
fi

if wants serve; then
    # The serving table on the GPU, and single-stream decode of the 51M config (target >= 1,000 tok/s).
    stage serve 420 "$PY" bench/bench_serve.py --preset 51m --device cuda --dtype bfloat16 \
        --new-tokens 128 --rounds 3 --out "$work/serve"
    cp "$work/serve/results.json" "$OUT/serve.json" 2>/dev/null
    cp "$work/serve/table.md" "$OUT/serve.md" 2>/dev/null
fi
rm -rf "$work"
echo "== done: $(ls "$OUT" | tr '\n' ' ')"
