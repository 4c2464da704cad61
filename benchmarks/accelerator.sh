#!/usr/bin/env bash
# Every accelerator check and benchmark in one go, for a lent GPU/TPU machine that already has JAX,
# Flax, optax, orbax and PyTorch (nothing is installed: the repository runs from its checkout).
#   bash benchmarks/accelerator.sh [LOGDIR]      (default: benchmarks/results)
# Each step has its own time limit so one slow step cannot starve the others; the JSON results land
# in benchmarks/results/ and a copy of them plus one combined log in LOGDIR.
set -u
cd "$(dirname "$0")/.."
LOG_DIR="${1:-benchmarks/results}"
mkdir -p "$LOG_DIR" benchmarks/results
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HND_CACHE="${HND_CACHE:-/tmp/hnd_cache}"
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
step 140 scoring python3 benchmarks/bench_scoring.py --config gpu-large --method cells --images "${HND_GPU_LARGE_IMAGES:-3072}" --baseline-images 4
step 90 models python3 benchmarks/bench_models.py
step 150 dissect python3 benchmarks/bench_dissect.py --batch-size 64
cp benchmarks/results/*.json "$LOG_DIR"/ 2>/dev/null || true
