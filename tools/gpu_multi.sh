#!/bin/bash
# Issue-4 measurements on a lent 2-GPU machine (device tool, kind nvidia-h100-x2 or nvidia-h200-x2; carry .whl):
# the CIFAR CNN at batch 1024 on one GPU, on both in one process (auto and 0.5/0.5), with the CPU added beside a
# GPU (the auto split should leave it out), and over two MPI ranks. Logs under $OUT; tables last.
set -o pipefail
. tools/device-env.sh
export CLCNN_CACHE_DIR=/tmp/clcnn-kernels CLCNN_TUNING_DIR=/tmp/clcnn-tuning
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -m clcnn devices | tee "$OUT/devices.txt"
B="python3 -m clcnn bench train --model cifar --batch-size ${BATCH:-1024} --steps ${STEPS:-20} --rounds 3"
$B --device cl:0,cl:0+cl:1 --json "$OUT/dp_auto.json" 2>&1 | grep -v -i warn | tee "$OUT/dp_auto.txt"
$B --device cl:0+cl:1 --split 0.5,0.5 --no-torch --json "$OUT/dp_half.json" 2>&1 | grep -v -i warn | tee "$OUT/dp_half.txt"
$B --device cl:0+cpu --no-torch --json "$OUT/dp_cpu.json" 2>&1 | grep -i -v "warn\|^  " | tee "$OUT/dp_cpu.txt"
python3 -c "import json; [print(r['device'], r['split']) for r in json.load(open('$OUT/dp_cpu.json'))]"
OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpiexec -n 2 $B --distributed mpi --device auto --no-torch --json "$OUT/mpi.json" 2>&1 | grep -v -i warn \
  | tee "$OUT/mpi.txt"
