#!/usr/bin/env bash
# The GPU benchmark suite (issue 20, part B): the trainer's own step on MiniGPT (the gpt2-124m preset) against a
# nanoGPT-style model and GPT2LMHeadModel (SDPA) at T=1024, bf16, compiled; generation; memory; fp16 vs bf16.
#
#   bash benchmarks/run_gpu.sh [OUT_DIR]        # OUT_DIR defaults to $OUT, else benchmarks/out
#
# Writes into OUT_DIR: summary.md (environment and every table, printed again at the end), suite.log (stderr of all
# parts) and one JSON per part. Parts, most important first; a part cut short by its time limit keeps the rows it
# finished in its JSON and in summary.md:
#   1. exact         the fast loss is bit-identical to transformers' loss on this device (fp32, bf16, fp16; ~20 s)
#   2. train_B32     train tokens/s, MFU, peak memory: training.train_step on MiniGPT vs NanoGPT (fused AdamW) vs
#                    GPT2, compile-bf16, B=32, interleaved; then a torch.profiler table of 2 steps of each
#   3. generate      generate() tokens/s, batch 1 and 16, 256 new tokens, top-k 50, static cache + compile
#   4. memory        peak memory at B=32, eager bf16: MiniGPT, MiniGPT with --loss_chunk_size, NanoGPT
#   5. fp16          MiniGPT compile-fp16-scaler vs compile-bf16 at B=32
#   6. train_B16_64  as 2 at B=16 and 64 (recompiles once, with a dynamic batch dimension)
# The suite is held to SUITE_SECONDS (default 480 s, 8 minutes); each part gets min(its limit, time left).
# Offline: no network, no datasets/evaluate. DEVICE, SHAPE, DTYPE, BATCHES (three sizes; the middle one is measured first),
# NEW_TOKENS, ROUNDS, CHUNK (the --loss_chunk_size of part 4), LIMIT_SCALE (multiplies every part's limit) and
# PYTHON override the defaults, e.g. to check the script on a CPU (about 10 minutes on 2 busy cores; CPU inductor
# compiles slowly):
#   DEVICE=cpu SHAPE=tiny BATCHES=2,4,8 NEW_TOKENS=8 ROUNDS=1 CHUNK=64 LIMIT_SCALE=3 SUITE_SECONDS=3000 \
#       bash benchmarks/run_gpu.sh /tmp/bench
set -uo pipefail

OUT_DIR=${1:-${OUT:-benchmarks/out}}
DEVICE=${DEVICE:-cuda}
SHAPE=${SHAPE:-124m}
DTYPE=${DTYPE:-bf16}
BATCHES=${BATCHES:-16,32,64}
NEW_TOKENS=${NEW_TOKENS:-256}
ROUNDS=${ROUNDS:-3}
SUITE_SECONDS=${SUITE_SECONDS:-480}
CHUNK=${CHUNK:-2048}
LIMIT_SCALE=${LIMIT_SCALE:-1}
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
    limit=$((limit * LIMIT_SCALE))
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

part exact 90 check_exact.py --batch 8
part train_B32 240 train_throughput.py --batch_sizes "$B_MID" --modes "compile-$DTYPE" \
    --peers MiniGPT,NanoGPT,GPT2 --rounds "$ROUNDS" --iters 5 --warmup 2 --profile "$B_MID"
part generate 150 bench_model.py --compile --parts generate --dtype "$DTYPE" --gen_batches 1,16 --decodings top-k \
    --new_tokens "$NEW_TOKENS" --rounds "$ROUNDS" --warmup 1
part memory 60 train_throughput.py --batch_sizes "$B_MID" --modes "eager-$DTYPE" \
    --peers MiniGPT,MiniGPT-chunk,NanoGPT --loss_chunk_size "$CHUNK" --rounds 1 --iters 2 --warmup 1
part fp16 150 train_throughput.py --batch_sizes "$B_MID" --modes "compile-$DTYPE,compile-fp16-scaler" \
    --peers MiniGPT --rounds "$ROUNDS" --iters 5 --warmup 2
part train_B16_64 180 train_throughput.py --batch_sizes "$B_SMALL,$B_LARGE" --modes "compile-$DTYPE" \
    --peers MiniGPT,NanoGPT,GPT2 --rounds "$ROUNDS" --iters 5 --warmup 2

echo "== done in ${SECONDS}s: $failures part(s) failed, cut short or skipped" | tee -a "$LOG"
cat "$SUMMARY"
exit $((failures > 0))
