#!/usr/bin/env bash
# The GPU figures (trainer MFU; serving on a GPU; attention's cost per new shape) and the model's CUDA paths, as one
# prepared run for a lent GPU machine: it has its own PyTorch and transformers but no dagster, no
# fastapi and no network, so tenali_model runs there on its own and the server's wheels travel with
# the working tree.
#
#   here:   make device-wheels                 # the serving wheels for Python 3.12, into var/device-wheels
#   there:  bash bench/device_checks.sh        # the GPU figures, in one device call of under 10 minutes
#           bash bench/device_checks.sh cpu    # then, while the machine is still warm: the CPU ratios
#   (with the device tool: carry ["var/device-wheels"], timeout_s 600, then 120)
#
# A task is lent 15 minutes of device time in all, the machine's start included, so the GPU run fits
# one call, most needed first: sdpa (30 s), tests (100 s), decode (30 + 45 s), mfu (210 s), serve (155 s),
# largest (60 s), plan (50 s) -- each stage's time limit, cut to the run's 580 s; on an H200 on 2026-12-04
# the first six took 16, 36, 21 + 38, 127, 105 and 16 s, with the machine's start about 30 s more. `cpu`
# (90 s) reruns the two CPU benchmarks whose ratios this project's 2-vCPU development VM cannot
# settle (its neighbours swing single rounds by 0.8x-1.6x) on the GPU machine's idle cores, one
# torch thread as here. `ckpt` (90 s, named only) times sharded against consolidated checkpoints with
# eight CPU ranks writing at once. Parts can be named to run fewer (they run in this order whatever the order named). A failing stage does
# not stop the next. Results land in $OUT (default var/device-checks) as a few flat files, within
# what the device tool brings back: log.txt (everything printed), env.txt (GPU, driver, versions),
# decode.txt, decode_compiled.txt, mfu.json, mfu_largest.json, mfu_plan.json, serve.json, serve.md, cpu.txt,
# ckpt.txt.
# docs/benchmarks.md ("GPU figures") says what to record.
set -u
parts=${*:-sdpa tests decode mfu serve largest plan}
for part in $parts; do
    case "$part" in sdpa|tests|decode|mfu|serve|largest|plan|cpu|ckpt) ;;
        *) echo "usage: $0 [sdpa] [tests] [decode] [mfu] [serve] [largest] [plan] [cpu] [ckpt]" >&2; exit 2 ;;
    esac
done
wants() { case " $parts " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
OUT=${OUT:-var/device-checks}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
work=$(mktemp -d)
export PYTHONUNBUFFERED=1
exec > >(tee -a "$OUT/log.txt") 2>&1

# The whole run's time: the device call's 600 s less a margin for the copies after the last stage.
# The stages' limits add up to 570 s, and the set-up before them (nvidia-smi, a cold `import torch`,
# pip) takes some of the rest: without this cap a run whose stages all ran to their limits would be
# cut by the device tool mid-`largest`, before its results were copied to $OUT.
budget=${DEVICE_CHECKS_BUDGET:-580}

stage() {  # stage NAME LIMIT_SECONDS COMMAND...: run with a time limit, say how it ended, return its status
    local name=$1 limit=$2 t=$SECONDS rc left
    shift 2
    left=$((budget - SECONDS))
    if [ "$left" -lt "$limit" ]; then
        if [ "$left" -lt 10 ]; then
            echo "== $name: skipped (the run's ${budget} s are spent)"
            return 124
        fi
        echo "== $name: limit cut from ${limit} s to the run's ${left} s left"
        limit=$left
    fi
    echo "== $name (limit ${limit} s): $*"
    # -k: SIGKILL 10 s after the SIGTERM, so a process that does not stop on it (bench_serve stops its
    # engine and server first; a CUDA call can block) cannot hold the run and the GPU past the limit.
    timeout -k 10 "$limit" "$@"
    rc=$?
    echo "== $name: exit $rc after $((SECONDS - t)) s$( { [ $rc = 124 ] || [ $rc = 137 ]; } && echo ' (time limit)')"
    return $rc
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

# The serving packages (the server needs fastapi and uvicorn, which the image lacks; bench_decode and
# bench_serve import prometheus_client, bench_serve's client httpx: the image held both on 2026-11-17,
# and pip leaves what it has alone).
if [ -d var/device-wheels ]; then
    "$PY" -m pip install -q --no-index --find-links var/device-wheels fastapi uvicorn prometheus-client httpx \
        || echo "installing the carried wheels failed: bench_serve (and bench_decode's metrics line) will fail"
else
    echo "no var/device-wheels (make device-wheels, then carry it): bench_serve needs fastapi, uvicorn," \
        "prometheus-client and httpx"
fi

if wants sdpa; then
    # What a new shape costs attention under PyTorch's default kernels (cuDNN's first on Hopper) and
    # under inference_attention, which the model's inference paths use.
    # Its table is in log.txt only: the device tool brings back 8 files, which the other stages fill.
    stage sdpa 30 "$PY" bench/bench_sdpa_shapes.py --preset 51m --device cuda --dtype bfloat16
fi

if wants tests; then
    # Correctness first: the model's CUDA paths against its CPU ones, the trainer on the GPU, the
    # CUDA-graph decoding step, eager and then compiled (last: the slowest). The overrides keep
    # pyproject's dagster warning filters out: there is no dagster there.
    # PYTEST_DISABLE_PLUGIN_AUTOLOAD: the image's own pytest plugins (benchmark, cov, xdist, hypothesis,
    # anyio...) are not needed here; not loading them saves start-up time and their surprises.
    stage cuda_tests 100 env PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 "$PY" -m pytest -q -p no:cacheprovider -o addopts="" \
        -o filterwarnings=ignore::DeprecationWarning tests/model/test_model_cuda.py
fi

graph=""
if wants decode; then
    # The 51M decoding step three ways (decode_slots, the cached forward, the CUDA graph), bf16: is the
    # eager step launch-bound, and how much does the graph take off? Then, in a process of its own (a
    # compile that overruns loses only itself), the same with the graph of the torch.compile'd step.
    # Each static step is checked against decode_slots first; the last line of each names the serve
    # flags of its fastest that passed: the serve stage takes the compiled run's when it finished.
    stage decode 30 "$PY" bench/bench_decode.py --preset 51m --device cuda --dtype bfloat16 --graph \
        --rounds 5 --steps 100 > "$work/decode.txt"
    stage decode_compiled 45 "$PY" bench/bench_decode.py --preset 51m --device cuda --dtype bfloat16 --graph \
        --compile --rounds 5 --steps 100 > "$work/decode_compiled.txt"
    for f in decode decode_compiled; do  # a run that was stopped has no such line
        grep -q '^serve with:' "$work/$f.txt" && graph=$(sed -n 's/^serve with:[ ]*//p' "$work/$f.txt")
    done
    cat "$work/decode.txt" "$work/decode_compiled.txt"
    cp "$work/decode.txt" "$work/decode_compiled.txt" "$OUT/"
fi

if wants mfu; then
    # Issue 7's figures: 1B and 125M with bf16 and compile on one GPU (target MFU >= 45% for 1B; it
    # goes first, with the longer share of the time for compiling; results.json is written after each).
    stage mfu 210 "$PY" bench/bench_mfu.py --configs 1b,125m --compile --dtype bfloat16 --batch 8 \
        --steps 10 --warmup 3 --timeout 120 --out "$work/mfu"
    cp "$work/mfu/results.json" "$OUT/mfu.json" 2>/dev/null
fi

if wants serve; then
    # Issue 11's: the serving table on the GPU, and single-stream decode of the 51M config (target
    # >= 1,000 tok/s); with the decode stage's fastest static step (compiling it again for 16 slots).
    stage serve 155 "$PY" bench/bench_serve.py --preset 51m --device cuda --dtype bfloat16 \
        --new-tokens 128 --rounds 3 $graph --out "$work/serve"
    cp "$work/serve/results.json" "$OUT/serve.json" 2>/dev/null
    cp "$work/serve/table.md" "$OUT/serve.md" 2>/dev/null
fi

if wants largest; then
    # The largest config that fits one GPU: 7B (fp32 weights and AdamW state, ~108 GB before
    # activations) with activation checkpointing, else the 1B. Each config's limit (40 s) leaves the
    # 1B 20 s of the stage's 60 when the 7B runs out of time rather than memory.
    stage mfu_largest 60 "$PY" bench/bench_mfu.py --configs 7b,1b --first-fit --activation-checkpointing \
        --dtype bfloat16 --batch 1 --steps 4 --warmup 2 --timeout 40 --out "$work/largest"
    cp "$work/largest/results.json" "$OUT/mfu_largest.json" 2>/dev/null
fi

if wants plan; then
    # The planner's peak where no run has checked it yet: the 1B eager (no compile) with two micro-steps
    # (gradients held through the second forward pass). bench_mfu prints it beside max allocated.
    stage mfu_plan 50 "$PY" bench/bench_mfu.py --configs 1b --dtype bfloat16 --batch 8 --grad-accum 2 \
        --steps 2 --warmup 1 --timeout 45 --out "$work/plan"
    cp "$work/plan/results.json" "$OUT/mfu_plan.json" 2>/dev/null
fi
if wants cpu; then
    # Issue 7's CPU target (our training step >= 1.2x transformers' Llama) and issue 11's (HTTP decode
    # within 10% of in process at concurrency 1) on cores no neighbour shares, one torch thread.
    stage cpu_train 45 env OMP_NUM_THREADS=1 CUDA_VISIBLE_DEVICES= "$PY" bench/bench_train.py > "$work/cpu.txt"
    stage cpu_serve 45 env OMP_NUM_THREADS=1 CUDA_VISIBLE_DEVICES= "$PY" bench/bench_serve.py --concurrency 1 \
        --rounds 5 --out "$work/cpu_serve" >> "$work/cpu.txt"
    cat "$work/cpu.txt"
    cp "$work/cpu.txt" "$OUT/cpu.txt"
fi
if wants ckpt; then
    # Sharded against consolidated checkpoints with 8 writers instead of the development VM's 2: eight gloo
    # ranks on the machine's CPU cores (one GPU cannot hold two NCCL ranks), writing to its local disk.
    stage ckpt 90 env CUDA_VISIBLE_DEVICES= "$PY" bench/bench_checkpoint.py --ranks 8 --preset 350m --rounds 2 \
        > "$work/ckpt.txt"
    cat "$work/ckpt.txt"
    cp "$work/ckpt.txt" "$OUT/ckpt.txt"
fi
rm -rf "$work"
echo "== done: $(ls "$OUT" | tr '\n' ' ')"
