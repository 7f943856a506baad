#!/bin/bash
# The final issue-4 run: tools/gpu_multi.sh (untuned), then one process driving two GPUs and two MPI ranks again
# with CLCNN_COPY_THREADS=8 (staged copies on 8 Numba threads), and where the host time goes in each.
. tools/device-env.sh
export CLCNN_CACHE_DIR=/tmp/clcnn-kernels CLCNN_TUNING_DIR=/tmp/clcnn-tuning OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
q() { grep --line-buffered -v -i "warn\|lambda: self"; }
OUT=$OUT/base bash tools/gpu_multi.sh 2>&1 | q | grep -v "^peak\|^cifar\|^---\|^what"
B="python3 -m clcnn bench train --model cifar --batch-size 1024 --steps 30 --rounds 3 --no-torch"
echo "== CLCNN_COPY_THREADS=8"
CLCNN_COPY_THREADS=8 timeout 120 $B --device cl:0+cl:1 --processes no --split 0.5,0.5 2>&1 | q | grep "^cifar"
CLCNN_COPY_THREADS=8 timeout 120 mpiexec -n 2 -x CLCNN_COPY_THREADS $B --distributed mpi --device auto 2>&1 | q | grep "^cifar"
echo "== host phases"
timeout 60 python3 tools/host_phases.py --devices cl:0,cl:1 2>&1 | q | head -6
timeout 90 mpiexec -n 2 python3 tools/host_phases.py --mpi 2>&1 | q | head -6
