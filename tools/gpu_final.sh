#!/bin/bash
# Issue-4 final run on a lent 2-GPU machine: correctness on the two GPUs, the NVIDIA test subset, where the host
# time goes, a per-kernel profile at batch 512 and 1024, then tools/gpu_multi.sh untuned and after `clcnn tune`.
. tools/device-env.sh
export CLCNN_CACHE_DIR=/tmp/clcnn-kernels CLCNN_TUNING_DIR=/tmp/clcnn-tuning OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
q() { grep --line-buffered -v -i "warn\|lambda: self"; }
timeout 150 python3 -m pytest -q -x tests/test_ops.py tests/test_step.py tests/test_model.py tests/test_parallel.py -p no:cacheprovider 2>&1 | tail -2
echo "== host phases"; timeout 60 python3 tools/host_phases.py --devices cl:0,cl:1 2>&1 | q | head -8
timeout 90 mpiexec -n 2 python3 tools/host_phases.py --mpi 2>&1 | q | head -6
for b in 512 1024; do echo "== profile $b"; timeout 60 python3 tools/gpu_profile.py --device cl:0 --model cifar --batch-size $b --steps 20 2>&1 | q > "$OUT/profile_$b.txt"; head -30 "$OUT/profile_$b.txt"; done
echo "== untuned"; OUT=$OUT/untuned bash tools/gpu_multi.sh 2>&1 | q | tail -7
timeout 200 python3 -m clcnn tune --device cl:0 --model cifar --batch-size 512,1024 2>&1 | q | tail -2
timeout 200 python3 -m clcnn tune --device cl:1 --model cifar --batch-size 512,1024 2>&1 | q | tail -1
echo "== tuned"; OUT=$OUT/tuned bash tools/gpu_multi.sh 2>&1 | q | tail -7
