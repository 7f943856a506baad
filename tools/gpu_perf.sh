#!/bin/bash
# Issue-3 measurements on the lent NVIDIA machine (device tool; carry .whl and .data). Stages, any subset:
#   bash tools/gpu_perf.sh check gemm tune train profile
# check: the op/step tests on NVIDIA's OpenCL; gemm: every GEMM variant/config and `clcnn bench gemm` vs cuBLAS;
# tune: `clcnn tune` for both presets; train: `clcnn bench train` LeNet-5 and CIFAR CNN at batch 256 vs PyTorch;
# profile: where a step's time goes. Logs and JSON under $OUT; a summary table last.
set -o pipefail
. tools/device-env.sh
export CLCNN_DATA=$PWD/.data CLCNN_CACHE_DIR=/tmp/clcnn-kernels CLCNN_TUNING_DIR=/tmp/clcnn-tuning
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
NV=$(python3 -c "import clcnn; print(next(d.id for d in clcnn.list_devices() if 'nvidia' in d.platform.lower()))")
echo "NVIDIA device: $NV  ($(date -u +%F))"
for stage in "$@"; do
  case $stage in
    check) python3 -m pytest -q -x -p no:cacheprovider tests/test_ops_gemm.py tests/test_step.py tests/test_ops.py \
             tests/test_layers.py tests/test_model.py 2>&1 | tee "$OUT/pytest.log" | tail -3 ;;
    gemm) python3 tools/gemm_bench.py --device "$NV" --sizes 4096,2048 --json "$OUT/gemm_bench.json" 2>&1 \
            | grep -v -i warn | tee "$OUT/gemm_bench.txt"
          python3 -m clcnn bench gemm --size 4096 --device "$NV" --variant all --json "$OUT/bench_gemm.json" 2>&1 \
            | grep -v -i warn | tee "$OUT/bench_gemm.txt" ;;
    tune) python3 -m clcnn tune --device "$NV" --model lenet5,cifar --batch-size 256 --gemm-size 4096 2>&1 | grep -v -i warn \
            | tee "$OUT/tune.txt" | tail -30 ;;
    train) for m in lenet5 cifar; do
             python3 -m clcnn bench train --model $m --batch-size 256 --device "$NV" --steps 50 --rounds 5 \
               --json "$OUT/bench_$m.json" 2>&1 | grep -v -i warn | tee "$OUT/bench_$m.txt"
           done ;;
    profile) for m in lenet5 cifar; do
               python3 tools/gpu_profile.py --device "$NV" --model $m --batch-size 256 2>&1 | grep -v -i warn \
                 | tee "$OUT/profile_$m.txt"
             done ;;
  esac
done
