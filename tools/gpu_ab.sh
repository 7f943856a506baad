#!/bin/bash
# A/B on a lent 2-GPU machine: the checkout ("new") against a copy with the files under $ALT (default build/ab,
# same paths as in the repository; carry it) laid over it ("old"), interleaved old/new twice: one GPU at 1024 and
# 512, two MPI ranks, DataParallel with a process per GPU. The CIFAR CNN; the table last.
# SINGLE=1: instead, one GPU only: LeNet-5 and the CIFAR CNN at batch 256 (issue 3's benchmark).
. tools/device-env.sh
export CLCNN_TUNING_DIR=/tmp/clcnn-tuning OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
ALT=${ALT:-build/ab}
rm -rf /tmp/alt && mkdir -p /tmp/alt && cp -r clcnn cl cpu tools /tmp/alt/ && cp -r "$ALT"/. /tmp/alt/
NEW=$PWD
B="python3 -m clcnn bench train --steps 30 --rounds 3 --no-torch"
if [ -n "$SINGLE" ]; then
  for round in 1 2; do for side in old new; do
    dir=$NEW; [ $side = old ] && dir=/tmp/alt
    export CLCNN_CACHE_DIR=/tmp/kc-$side
    for m in lenet5 cifar; do
      (cd $dir && PYTHONPATH=$dir:$PYTHONPATH timeout 100 $B --model $m --batch-size 256 --device cl:0 2>/dev/null \
        | grep "^$m" | sed "s/^/$side /" | tee -a "$OUT/ab.txt")
    done
  done; done
  exit 0
fi
for round in 1 2; do
  for side in old new; do
    dir=$NEW; [ $side = old ] && dir=/tmp/alt
    export CLCNN_CACHE_DIR=/tmp/kc-$side
    (cd $dir && PYTHONPATH=$dir:$PYTHONPATH timeout 100 $B --model cifar --batch-size 1024 --device cl:0 2>/dev/null | grep "^cifar" | sed "s/^/$side one      /"
     PYTHONPATH=$dir:$PYTHONPATH timeout 100 $B --model cifar --batch-size 512 --device cl:0 2>/dev/null | grep "^cifar" | sed "s/^/$side one_512  /"
     timeout 150 mpiexec --bind-to none -x PYTHONPATH=$dir:$PYTHONPATH -x CLCNN_CACHE_DIR -n 2 $B --model cifar --batch-size 1024 --distributed mpi --device auto 2>/dev/null | grep "^cifar" | sed "s/^/$side mpi      /"
     PYTHONPATH=$dir:$PYTHONPATH timeout 150 $B --model cifar --batch-size 1024 --device cl:0+cl:1 --split 0.5,0.5 --processes yes 2>/dev/null | grep "^cifar" | sed "s/^/$side procs    /") | tee -a "$OUT/ab.txt"
  done
done
