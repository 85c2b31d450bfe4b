#!/usr/bin/env bash
# The GPU benchmark suite: MiniGPT vs GPT2LMHeadModel at GPT-2 124M, bf16, eager and compiled.
#
#   bash benchmarks/run_gpu.sh [OUT_DIR]        # OUT_DIR defaults to $OUT, else benchmarks/out
#
# Writes into OUT_DIR: summary.md (environment and every table, printed again at the end), suite.log (stderr of all
# parts) and one JSON per part — 6 files. Parts, most important first; a part cut short by its time limit keeps the
# rows it finished in its JSON and in summary.md:
#   1. train_B32      issue 7: B=32, eager-bf16 / compile-bf16 / compile-fp16-scaler (MFU, memory, fp16 vs bf16)
#   2. model_eager    issue 3: fwd+bwd at B=16 and generate() at batch 1 and 16, 256 new tokens, eager
#   3. train_B16_64   B=16 and 64, eager-bf16 / compile-bf16
#   4. model_compile  fwd+bwd compiled; generate() with a static cache, which transformers compiles itself
# The suite is held to SUITE_SECONDS (default 470 s, about 8 minutes); each part gets min(its limit, time left).
# Offline: no network, no datasets/evaluate. DEVICE, SHAPE, DTYPE, BATCHES (three sizes), NEW_TOKENS, ROUNDS and
# PYTHON override the defaults, e.g. to check the script on a CPU:
#   DEVICE=cpu SHAPE=tiny BATCHES=2,4,8 NEW_TOKENS=8 ROUNDS=1 bash benchmarks/run_gpu.sh /tmp/bench
set -uo pipefail

OUT_DIR=${1:-${OUT:-benchmarks/out}}
DEVICE=${DEVICE:-cuda}
SHAPE=${SHAPE:-124m}
DTYPE=${DTYPE:-bf16}
BATCHES=${BATCHES:-16,32,64}
NEW_TOKENS=${NEW_TOKENS:-256}
ROUNDS=${ROUNDS:-3}
SUITE_SECONDS=${SUITE_SECONDS:-470}
PYTHON=${PYTHON:-python3}

export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
SUMMARY=$OUT_DIR/summary.md
LOG=$OUT_DIR/suite.log
cd "$(dirname "$0")"
IFS=, read -r B_SMALL B_MID B_LARGE <<<"$BATCHES"
END=$((SECONDS + SUITE_SECONDS))
failures=0

# part NAME LIMIT_S SCRIPT ARGS...: one benchmark under a time limit; its tables go to summary.md, stderr to suite.log.
part() {
    local name=$1 limit=$2 script=$3 left=$((END - SECONDS)) tables rc
    shift 3
    if ((left < 30)); then
        echo "## $name: skipped, the suite's time is used up" | tee -a "$SUMMARY"
        failures=$((failures + 1))
        return
    fi
    ((limit > left)) && limit=$left
    echo "== $name (limit ${limit}s): $script $*" | tee -a "$LOG"
    tables=$(mktemp)
    timeout --signal=INT --kill-after=20 "$limit" "$PYTHON" "$script" --device "$DEVICE" --shape "$SHAPE" "$@" \
        --json "$OUT_DIR/$name.json" >"$tables" 2>>"$LOG"
    rc=$?
    { echo; echo "## $name"; echo; cat "$tables"; } >>"$SUMMARY"
    rm -f "$tables"
    if ((rc != 0)); then
        echo "**$name: exit $rc** (124 = its time limit); the end of suite.log:" | tee -a "$SUMMARY"
        tail -n 5 "$LOG" | sed 's/^/    /' >>"$SUMMARY"
        failures=$((failures + 1))
    fi
}

{
    echo "# GPU benchmark suite: $SHAPE, $DTYPE, $DEVICE — $(date)"
    echo
    echo '```'
    "$PYTHON" -c 'import torch, transformers; print("torch", torch.__version__, "| transformers", transformers.__version__)'
    if [[ $DEVICE == cuda ]]; then nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; fi
    echo '```'
} >"$SUMMARY" 2>&1

part train_B32 200 train_throughput.py --batch_sizes "$B_MID" \
    --modes "eager-$DTYPE,compile-$DTYPE,compile-fp16-scaler" --rounds "$ROUNDS" --iters 5 --warmup 3
part model_eager 110 bench_model.py --dtype "$DTYPE" --batch "$B_SMALL" --gen_batches 1,16 \
    --new_tokens "$NEW_TOKENS" --rounds "$ROUNDS" --iters 3 --warmup 1
part train_B16_64 150 train_throughput.py --batch_sizes "$B_SMALL,$B_LARGE" --modes "eager-$DTYPE,compile-$DTYPE" \
    --rounds "$ROUNDS" --iters 5 --warmup 3
part model_compile 180 bench_model.py --compile --dtype "$DTYPE" --batch "$B_SMALL" --gen_batches 1,16 \
    --new_tokens "$NEW_TOKENS" --rounds "$ROUNDS" --iters 3 --warmup 1

echo "== done in ${SECONDS}s: $failures part(s) failed, cut short or skipped" | tee -a "$LOG"
cat "$SUMMARY"
exit $((failures > 0))
