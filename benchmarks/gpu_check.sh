#!/usr/bin/env bash
# Everything that needs a GPU, in one bounded, non-interactive run (at most about 8 minutes):
#
#   bash benchmarks/gpu_check.sh                 # results in benchmarks/results/ (or $OUT when set)
#
# 1. the CUDA tests (tests/test_cuda.py: bf16 / compile / channels-last parity, landmarks identical
#    on CUDA and CPU, a one-process NCCL DDP step)                                   <= 90 s
# 2. speed.py --device cuda: training steps of cpu_small and the paper network at 512 px in bf16,
#    TFLOP/s and MFU; inference latency                                              <= 150 s
# 3. gpu_quality.py: bounded paper-scale training on BUSI (crop 512), test Dice    <= 210 s
#
# Each step has its own timeout, a failed step does not stop the next one, and the exit status is
# the number of failed steps.  Run it from the repository root with the project's venv active.
set -u
cd "$(dirname "$0")/.."
RESULTS="${OUT:-benchmarks/results}"
mkdir -p "$RESULTS"
failed=0

step() {  # step NAME SECONDS COMMAND...
    local name=$1 limit=$2
    shift 2
    echo "=== $name (limit ${limit}s): $*"
    local started=$SECONDS
    if timeout --kill-after=10 "$limit" "$@" > "$RESULTS/gpu_check_$name.log" 2>&1; then
        echo "--- $name ok in $((SECONDS - started)) s"
    else
        echo "--- $name FAILED (status $?) after $((SECONDS - started)) s"
        failed=$((failed + 1))
    fi
    tail -n 25 "$RESULTS/gpu_check_$name.log"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"

step cuda_tests 90 python -m pytest -q -m cuda tests/test_cuda.py -rs
step speed 150 python benchmarks/speed.py --device cuda --models cpu_small busi_1-2 --train-sizes 512 \
    --infer-sizes 512 --throughput-sizes 512 --repeats 3 --no-memory --output "$RESULTS/speed_cuda.json"
step quality 210 python benchmarks/gpu_quality.py --total-minutes 3.3 --output "$RESULTS/gpu_quality.json"

echo "gpu_check: $failed step(s) failed; logs and JSON in $RESULTS"
exit "$failed"
