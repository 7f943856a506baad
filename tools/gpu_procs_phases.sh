#!/bin/bash
# Issue 4: where the host's time goes with a process per GPU against two MPI ranks, the spread of repeated
# process-group runs, and one GPU alone inside a shared two-GPU context (the auto split's lead-alone case) against
# one GPU in a context of its own. Device tool, kind nvidia-h100-x2, carry .whl.
. tools/device-env.sh
export CLCNN_CACHE_DIR=/tmp/clcnn-kernels CLCNN_TUNING_DIR=/tmp/clcnn-tuning OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
q() { grep --line-buffered -v -i "warn\|lambda: self"; }
B="python3 -m clcnn bench train --model cifar --batch-size 1024 --steps 30 --rounds 3 --no-torch"
echo "== host phases, a process per GPU (the parent)"; timeout 120 python3 tools/host_phases.py --processes --devices cl:0,cl:1 2>&1 | q | head -14
echo "== host phases, two MPI ranks (rank 0)"; timeout 120 mpiexec --bind-to none -n 2 python3 tools/host_phases.py --mpi 2>&1 | q | head -12
for i in 1 2 3; do timeout 150 $B --device cl:0+cl:1 --split 0.5,0.5 --processes yes 2>&1 | grep "^cifar" | sed "s/^/procs $i /"; done
timeout 150 mpiexec --bind-to none -n 2 $B --distributed mpi --device auto 2>&1 | grep "^cifar" | sed "s/^/mpi /"
timeout 100 $B --device cl:0 2>&1 | grep "^cifar" | sed "s/^/one /"
timeout 100 $B --device cl:0+cl:1 --split 1,0 --processes no 2>&1 | grep "^cifar" | sed "s/^/shared-context lead alone /"
