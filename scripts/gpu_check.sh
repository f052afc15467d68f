#!/usr/bin/env bash
# Everything a GPU machine can check that the CPU-only CI cannot, in one call:
# build for this GPU's architecture, the whole test suite (the GPU-only tests
# run instead of skipping), the pytest-benchmark suite, the main job, and the
# autotuner's decision for every AlexNet layer (printed, and kept in
# $OUT/autotune-cache with each candidate's time), and the roofline model's
# times for the same build (scripts/roofline.py), to compare with the measured.
# All outputs go into one timestamped folder; every step runs even if an
# earlier one fails, and the script exits non-zero if any step failed.
#
#   scripts/gpu_check.sh [OUTPUT_DIR]      (PYTHON=... to pick the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python}
OUT=${1:-gpu-check-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"

TORCH_CUDA_ARCH_LIST=$("$PYTHON" -c \
    'import torch; print("%d.%d" % torch.cuda.get_device_capability())')
export TORCH_CUDA_ARCH_LIST

failed=()
step() {  # step NAME COMMAND...: runs COMMAND, its output in $OUT/NAME.log
    echo "== $1"
    if ! "${@:2}" > "$OUT/$1.log" 2>&1; then
        failed+=("$1")
        echo "   FAILED (see $OUT/$1.log)"
    fi
}

# Without the CUDA kernels everything after would quietly test the CPU build.
step build env ALEXNET_KERNELS_FORCE_CUDA=1 \
    "$PYTHON" -m pip install --no-build-isolation -v -e ".[test]"
step env "$PYTHON" -m alexnet_kernels.env_report --json
step tests "$PYTHON" -m pytest tests -q
step benchmarks "$PYTHON" -m pytest benchmarks/ --benchmark-only \
    --benchmark-json "$OUT/benchmarks.json"
step benchmarks-bf16 env AK_BENCH_DTYPE=bf16 AK_BENCH_LAYOUT=channels_last \
    "$PYTHON" -m pytest benchmarks/ --benchmark-only \
    --benchmark-json "$OUT/benchmarks-bf16-channels-last.json"
# The autotuner decides into a folder of this check, so what it prints was measured now.
mkdir -p "$OUT/autotune-cache"
ALEXNET_KERNELS_CACHE_DIR=$(cd "$OUT/autotune-cache" && pwd)
export ALEXNET_KERNELS_CACHE_DIR
step autotune "$PYTHON" -m alexnet_kernels.autotune alexnet
step autotune-bf16 "$PYTHON" -m alexnet_kernels.autotune alexnet --dtype bf16 --channels-last
# The model's numbers for this build, beside the measured ones above and below.
step roofline "$PYTHON" scripts/roofline.py --json "$OUT/roofline.json"
step main-job "$PYTHON" -m alexnet_kernels.bench --out "$OUT/main-job"
step main-job-bf16 "$PYTHON" -m alexnet_kernels.bench --dtype bf16 --channels-last \
    --out "$OUT/main-job-bf16"

echo "== autotune decisions (every AlexNet layer, fp32 and bf16 channels_last)"
cat "$OUT/autotune.log" "$OUT/autotune-bf16.log" || true
echo "outputs in $OUT"
if (( ${#failed[@]} )); then
    echo "failed: ${failed[*]}"
    exit 1
fi
