#!/bin/bash
# The issue-7 device checks in one script, for a lent GPU machine (run from the repo root):
#   bash benchmarks/gpu_checks.sh CIFAR_JPEG_DIR MNIST_DIR AIRBENCH_PARENT OUT_DIR
# CIFAR_JPEG_DIR: the unpacked cifar10-jpeg folder; MNIST_DIR: the IDX files;
# AIRBENCH_PARENT: a folder holding the `airbench` package (PyPI airbench, unpacked);
# OUT_DIR: where the logs and speedrun.json go. About 4-5 minutes on an H100.
set -u
CIFAR=$1; MNIST=$2; AIRBENCH=$3; OUT=$4
mkdir -p "$OUT"
export PYTHONPATH=src PYTHONUNBUFFERED=1 TIMEFORMAT="wall %R s"
# Images that ship no .pyc files and forbid writing them recompile torch on every start
# (3 s on the H100 image); a normal install has them. Time it the way a user's machine runs.
unset PYTHONDONTWRITEBYTECODE; export PYTHONPYCACHEPREFIX=/tmp/pycache
python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name())" | tee "$OUT/gpu.txt"
python3 -c "import torch._dynamo" 2>/dev/null  # fill the .pyc cache once
echo "== CIFAR-10 speed run beside airbench94" | tee "$OUT/speedrun.txt"
PYTHONPATH=src:$AIRBENCH timeout 330 python3 benchmarks/cifar10_speedrun.py --data "$CIFAR" --work /tmp/speedrun \
  --runs 3 --precisions bf16 --compile --json "$OUT/speedrun.json" 2>&1 | tail -40 | tee -a "$OUT/speedrun.txt"
{
echo "== MNIST, configs/mnist-fast.yaml, whole command"
for epochs in 3 4; do
  time timeout 60 python3 -m deepstrata fit --data "$MNIST" --config configs/mnist-fast.yaml --epochs $epochs \
    --out /tmp/mnist-fast --overwrite --no-baselines --quiet
  python3 -c "import json; r = json.load(open('/tmp/mnist-fast/comparison.json'))['rows'][0]; print('epochs $epochs', r['metrics']['accuracy'], 'train_s', r['train_seconds'])"
done
} 2>&1 | tee "$OUT/mnist.txt"
