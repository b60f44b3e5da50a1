#!/bin/bash
# The issue-7 device checks in one script, for a lent GPU machine (run from the repo root):
#   bash benchmarks/gpu_checks.sh CIFAR_JPEG_DIR MNIST_DIR AIRBENCH_PARENT [OUT_DIR]
# CIFAR_JPEG_DIR: the unpacked cifar10-jpeg folder; MNIST_DIR: the IDX files;
# AIRBENCH_PARENT: a folder holding the `airbench` package (PyPI airbench, unpacked);
# OUT_DIR: where the logs and speedrun.json go (default benchmarks/results/gpu_checks_<date>_<gpu>/,
# to be committed with the figures it backs). About 5-6 minutes on an H100; BENCH=1 adds the bench table.
# Seeds: the speed run's deepstrata runs 0, 1, 2 use seeds 0, 1, 2 (its two --compile runs seed 0);
# the MNIST fits use the default seed 0.
set -u
CIFAR=$1; MNIST=$2; AIRBENCH=$3
export PYTHONPATH=src PYTHONUNBUFFERED=1 TIMEFORMAT="wall %R s"
GPU=$(python3 -c "import sys; sys.path.insert(0, 'benchmarks'); import torch, results_io; print(results_io.machine_slug())")
OUT=${4:-benchmarks/results/gpu_checks_$(date -u +%F)_${GPU}}
mkdir -p "$OUT"
# Images that ship no .pyc files and forbid writing them recompile torch on every start
# (3 s on the H100 image); a normal install has them. Time it the way a user's machine runs.
unset PYTHONDONTWRITEBYTECODE; export PYTHONPYCACHEPREFIX=/tmp/pycache
{ echo "command: bash benchmarks/gpu_checks.sh $*"; date -u +%FT%TZ; git rev-parse HEAD 2>/dev/null
  git status --porcelain -- src configs benchmarks 2>/dev/null | head -20
  python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name(), 'cudnn.allow_tf32', torch.backends.cudnn.allow_tf32)"
} | tee "$OUT/gpu.txt"
python3 -c "import torch._dynamo" 2>/dev/null  # fill the .pyc cache once
echo "== CIFAR-10 speed run beside airbench94" | tee "$OUT/speedrun.txt"
PYTHONPATH=src:$AIRBENCH timeout 400 python3 benchmarks/cifar10_speedrun.py --data "$CIFAR" --work /tmp/speedrun \
  --runs 3 --precisions bf16,32 --compile --json "$OUT/speedrun.json" 2>&1 | tail -40 | tee -a "$OUT/speedrun.txt"
{
echo "== MNIST, configs/mnist-fast.yaml, whole command (seed 0)"
for epochs in 3 4; do
  time timeout 60 python3 -m deepstrata fit --data "$MNIST" --config configs/mnist-fast.yaml --epochs $epochs \
    --out /tmp/mnist-fast --overwrite --no-baselines --quiet
  python3 -c "import json; r = json.load(open('/tmp/mnist-fast/comparison.json'))['rows'][0]; print('epochs $epochs', r['metrics']['accuracy'], 'train_s', r['train_seconds'])"
done
} 2>&1 | tee "$OUT/mnist.txt"
# Optional (BENCH=1, a few more minutes): the `deepstrata bench` table with its MFU, raw rows as JSON;
# `python benchmarks/bench_mfu.py --bench-json $OUT/bench.json` adds MFU against the TF32 peak.
if [ "${BENCH:-0}" = 1 ]; then
  timeout 600 python3 -m deepstrata bench --data "$MNIST" --steps 30 --batch-size 512 --processes 2 --json \
    > "$OUT/bench.json" 2> "$OUT/bench.txt"
fi
