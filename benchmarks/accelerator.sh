#!/usr/bin/env bash
# Every accelerator check and benchmark in one go, for a lent GPU/TPU machine that already has JAX,
# Flax, optax, orbax and PyTorch (nothing is installed: the repository runs from its checkout).
#   bash benchmarks/accelerator.sh [LOGDIR]      (default: benchmarks/results)
# Each step has its own time limit so one slow step cannot starve the others; the JSON results land
# in benchmarks/results/ and a copy of them plus one combined log in LOGDIR. Order = priority (issue 11):
#   1. equality   accelerator counts == CPU counts (cells and dense kernels vs the CPU run-length kernel)
#   2. kernels    the tally's time per batch, cells vs dense (target: cells >= 20x faster)
#   3. prepare    the synthetic dictionary (2000 local images) prepared at 128 px (not part of the figure)
#   4. e2e        hnd dissect ResNet-50 layer4.2.conv1 at 128 px from the prepared dictionary, tally auto
#                 (= cells on a GPU), activations cached: img/s end to end and in pass 2 (target >= 2000),
#                 timings.split.input_wait = how long the device waited for the reader
#   5. e2e-dense  the same with --tally dense (the before figure: about 100 img/s on one H200)
#   6. scoring / models: the older whole-scoring and forward-only figures, if time is left
set -u
cd "$(dirname "$0")/.."
LOG_DIR="${1:-benchmarks/results}"
mkdir -p "$LOG_DIR" benchmarks/results
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HND_CACHE="${HND_CACHE:-/tmp/hnd_cache}"
PREP="${HND_PREP:-/tmp/hnd_prep128_2000}"
IMAGES="${HND_E2E_IMAGES:-2000}"
LOG="$LOG_DIR/accelerator.log"
step() {  # step SECONDS NAME COMMAND...
  local limit=$1 name=$2; shift 2
  echo "=== $name (limit ${limit}s) $(date -u +%H:%M:%S)" | tee -a "$LOG"
  timeout "$limit" "$@" 2>&1 | grep -v -e "^WARNING: All log messages" -e "absl::InitializeLog" | tee -a "$LOG"
  echo "=== $name exit ${PIPESTATUS[0]}" | tee -a "$LOG"
}
step 60 environment python3 -c "import jax, flax, optax, numpy, torch; print('jax', jax.__version__, 'flax', flax.__version__, 'torch', torch.__version__); print(jax.devices())"
step 150 equality python3 benchmarks/check_accelerator.py --images 512 --units 512 --map 7 --size 224 --methods cells,dense
step 120 kernels python3 benchmarks/bench_scoring.py --compare-kernels --config gpu-large --images "${HND_KERNEL_IMAGES:-1024}" --kernels cells,dense
[ -d "$PREP" ] || step 150 prepare python3 -m hnd_jax.cli.main dictionary prepare "synthetic:$IMAGES" --size 128 --out "$PREP" --workers 16
step 150 e2e python3 benchmarks/bench_dissect.py --dictionary "$PREP" --image-size 128 --batch-size 256 --modes cached --tally auto --prefetch 3 --baseline-images 64
step 150 e2e-dense python3 benchmarks/bench_dissect.py --dictionary "$PREP" --image-size 128 --batch-size 256 --modes cached --tally dense --prefetch 3 --baseline-images 8
step 140 scoring python3 benchmarks/bench_scoring.py --config gpu-large --method cells --images "${HND_GPU_LARGE_IMAGES:-3072}" --baseline-images 4
step 90 models python3 benchmarks/bench_models.py
cp benchmarks/results/*.json "$LOG_DIR"/ 2>/dev/null || true
