#!/bin/bash
# Why two GPUs at 512 images each are not 2x one GPU at 1024: the per-launch profile of the CIFAR step at both
# batch sizes (untuned), PyTorch's own 512/1024 ratio beside clcnn's, and the two-GPU auto split (group vs lead
# trial) in one process. Device tool, kind nvidia-h100-x2, carry .whl. Logs under $OUT.
. tools/device-env.sh
export CLCNN_CACHE_DIR=/tmp/clcnn-kernels CLCNN_TUNING_DIR=/tmp/clcnn-tuning
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
q() { grep --line-buffered -v -i "warn\|lambda: self"; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
for b in ${SIZES:-512 1024}; do
  timeout 120 python3 tools/gpu_profile.py --device cl:0 --model cifar --batch-size $b --all 2>&1 | q > "$OUT/prof_$b.txt"
  head -14 "$OUT/prof_$b.txt"
done
if [ -z "$NO_TORCH" ]; then
for b in 512 1024; do
  timeout 150 python3 -m clcnn bench train --model cifar --batch-size $b --steps 30 --rounds 3 --device cl:0 2>&1 | q | grep "^cifar"
done
fi
if [ -z "$NO_DP" ]; then
timeout 200 python3 -m clcnn bench train --model cifar --batch-size 1024 --steps 30 --rounds 3 --no-torch \
  --device cl:0+cl:1 2>&1 | q | tail -4
fi
