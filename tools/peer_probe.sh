. tools/device-env.sh
export CLCNN_CACHE_DIR=/tmp/clcnn-kernels CLCNN_TUNING_DIR=/tmp/clcnn-tuning
for b in 1024 512; do timeout 120 python3 -m clcnn bench train --model cifar --batch-size $b --device cl:0 --no-torch --steps 30 --rounds 3 2>&1 | grep --line-buffered -v -i warn | tail -3; done
timeout 60 python3 tools/peer_probe.py --mb 2.5 2>&1
timeout 60 python3 tools/peer_probe.py --mb 0.3 2>&1 | tail -6
