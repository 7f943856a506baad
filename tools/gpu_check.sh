#!/bin/bash
# On the lent NVIDIA machine (device tool, carry .whl and .data): devices, the cross-device test suite on
# NVIDIA's OpenCL, the LeNet-5 step beside PyTorch/cuDNN, and one epoch of Fashion-MNIST. Logs under $OUT.
set -o pipefail
. tools/device-env.sh
export CLCNN_DATA=$PWD/.data CLCNN_CACHE_DIR=/tmp/clcnn-kernels
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -m clcnn devices | tee "$OUT/devices.txt"
NV=$(python3 -c "import clcnn; print(next(d.id for d in clcnn.list_devices() if 'nvidia' in d.platform.lower()))")
echo "NVIDIA device: $NV"
python3 -m pytest -q -p no:cacheprovider tests/test_ops.py tests/test_layers.py tests/test_model.py \
  tests/test_torch_oracle.py tests/test_devices.py 2>&1 | tee "$OUT/pytest.log" | tail -4
python3 tools/host_overhead.py "$NV" 2>&1 | grep -v -i warn | tee "$OUT/host.txt"
python3 tools/profile_step.py --device "$NV" --batch-size 256 2>&1 | grep -v -i -E "warn|lambda" | tee "$OUT/profile.txt"
python3 -m clcnn bench train --model lenet5 --device "$NV" --batch-size 256 --steps 50 --rounds 5 \
  --json "$OUT/bench_nv.json" 2>&1 | tee "$OUT/bench.txt"
python3 -m clcnn train --dataset fashion-mnist --model lenet5 --device "$NV" --epochs 1 --batch-size 64 --lr 0.05 \
  --seed 0 --out "$OUT/run-nv" --no-progress 2>&1 | tee "$OUT/train.txt"
