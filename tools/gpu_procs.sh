#!/bin/bash
# Issue 4, one process per GPU behind DataParallel (clcnn/procgroup.py) on a lent 2-GPU machine (device tool,
# kind nvidia-h100-x2, carry .whl): correctness on the two GPUs, then the CIFAR CNN at batch 1024 on one GPU, one
# GPU at 512, DataParallel with a process per GPU (0.5/0.5 and auto), in one process (auto: group vs lead trial),
# and two MPI ranks; the profile at 512 and 1024 first. Logs under $OUT; the table last.
. tools/device-env.sh
export CLCNN_CACHE_DIR=/tmp/clcnn-kernels CLCNN_TUNING_DIR=/tmp/clcnn-tuning OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
q() { grep --line-buffered -v -i "warn\|lambda: self"; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1
timeout 120 python3 tools/check_group.py cl:0,cl:1 --processes yes 2>&1 | q | tail -1
timeout 120 python3 tools/check_group.py cl:0,cl:1 --processes no 2>&1 | q | tail -1
[ -n "$TESTS" ] && timeout 300 python3 -m pytest -q -x -p no:cacheprovider tests/test_procgroup.py tests/test_parallel.py 2>&1 | tail -2
for b in 512 1024; do   # the profiles go into one log (the device tool returns at most 8 files)
  timeout 120 python3 tools/gpu_profile.py --device cl:0 --model cifar --batch-size $b --all 2>&1 | q > /tmp/prof_$b.txt
  sed -n 2p /tmp/prof_$b.txt; cat /tmp/prof_$b.txt >> "$OUT/log.txt"
done
B="python3 -m clcnn bench train --model cifar --batch-size 1024 --steps ${STEPS:-30} --rounds 3 --no-torch"
run() { local name=$1; shift; echo "== $name: $*" >> "$OUT/log.txt"
  timeout 200 "$@" --json "$OUT/$name.json" > /tmp/$name.txt 2>&1; cat /tmp/$name.txt >> "$OUT/log.txt"
  grep "^cifar" /tmp/$name.txt | tail -1; }
run one $B --device cl:0
run one_512 python3 -m clcnn bench train --model cifar --batch-size 512 --steps ${STEPS:-30} --rounds 3 --no-torch --device cl:0
run procs_half $B --device cl:0+cl:1 --split 0.5,0.5 --processes yes
run procs_auto $B --device cl:0+cl:1 --processes yes
run mpi mpiexec --bind-to none -n 2 $B --distributed mpi --device auto
run thread_auto $B --device cl:0+cl:1 --processes no
run gpu_cpu $B --device cl:0+cpu --steps 12
python3 tools/bench_table.py "$OUT" one one_512 procs_half procs_auto mpi thread_auto gpu_cpu
grep -h "left out\|stays together" /tmp/thread_auto.txt /tmp/gpu_cpu.txt | head -3
