#!/bin/bash
# Issue-4 measurements on a lent 2-GPU machine (device tool, kind nvidia-h100-x2 or nvidia-h200-x2; carry .whl):
# correctness of the device-side exchange on the two GPUs, then the CIFAR CNN at batch 1024 on one GPU, on both in
# one process (auto and 0.5/0.5), with the CPU added beside a GPU (the auto split should leave it out), over two
# MPI ranks (the host's OpenMPI: --bind-to none, else it pins each rank to one core), and one GPU at batch 512
# (the per-GPU work of a two-GPU step). Logs under $OUT; the table last.
set -o pipefail
. tools/device-env.sh
export CLCNN_CACHE_DIR=/tmp/clcnn-kernels CLCNN_TUNING_DIR=/tmp/clcnn-tuning
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
timeout 120 python3 tools/check_group.py cl:0,cl:1 --processes no 2>&1 | tee "$OUT/check.txt"
B="python3 -m clcnn bench train --model cifar --batch-size ${BATCH:-1024} --steps ${STEPS:-30} --rounds 3"
run() { local name=$1; shift; timeout 150 "$@" --json "$OUT/$name.json" > "$OUT/$name.txt" 2>&1; tail -2 "$OUT/$name.txt"; }
run one $B --device cl:0 --no-torch
run dp_auto $B --device cl:0+cl:1 --processes no --no-torch
run dp_half $B --device cl:0+cl:1 --processes no --split 0.5,0.5 --no-torch
run one_512 python3 -m clcnn bench train --model cifar --batch-size 512 --steps ${STEPS:-30} --rounds 3 --device cl:0 --no-torch
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
run mpi mpiexec --bind-to none -n 2 $B --distributed mpi --device auto --no-torch
run dp_cpu $B --device cl:0+cpu --no-torch --steps 12
python3 tools/bench_table.py "$OUT" one one_512 dp_auto dp_half mpi dp_cpu
