#!/bin/bash
# The measurement runs of clcnn, in stages, on the lent H200 (the device tool) or on this machine (--device cpu).
#
#   bash tools/gpu.sh [--device ID] STAGE...        logs under $OUT (default /tmp/out), the A/B table last
#
# Stages:
#   check    the GPU, `clcnn devices`, and the op/step tests on the device ($TESTS overrides the list)
#   ab       `clcnn bench train` for LeNet-5 and the CIFAR CNN at batch 256 and 1024, BEFORE (the code at $BASE,
#            default build/base = commit e0b1a3e) and AFTER (this tree), alternating rounds (old new, new old, ...),
#            PyTorch eager beside clcnn in every run ($AB_TORCH on a side that has `--torch`); untuned kernels
#            on both sides. Table in $OUT/ab.txt.
#   bench    the same four `clcnn bench train` rows for this tree alone, PyTorch in every mode (eager,
#            cudnn.benchmark, CUDA graph, torch.compile; $TORCH_MODES, default all), launches and peak memory
#   layers   `clcnn bench layers` for each config: per-layer table, $OUT/layers_MODEL_BATCH.png and .json
#   gemm     `clcnn bench gemm --size $GEMM_SIZE --variant all`, then `--variant sweep` (every tile config)
#   tune     `clcnn tune` for both presets at 256 and 1024 (and the GEMM_SIZE cube), then the bench rows tuned
#   profile  tools/profile_step.py for both presets at 256 and 1024 (where a step's time goes)
#   train    one epoch of Fashion-MNIST with LeNet-5 (carry .data; see tools/get-data.sh)
# Knobs (environment): STEPS, ROUNDS (per `bench train`), AB_ROUNDS (old/new alternations: 4 on the GPU, 2
# with --device cpu; even counts balance the order), CONFIGS
# ("lenet5:256,lenet5:1024,cifar:256,cifar:1024"), GEMM_SIZE (4096), BASE, NEW (the AFTER tree, default this
# one), OUT, LIMIT (seconds per process).
#
# The old version must travel as files: the device machine gets the working tree without .git. Here, first:
#   bash tools/fetch-wheels.sh                       # once: ./.whl (pyopencl and friends; git-ignored)
#   rm -rf build/base && mkdir -p build/base && git archive e0b1a3e clcnn cl cpu | tar -x -C build/base
# then the device tool's run, kind nvidia-h200, timeout_s 600 (the ab stage alone: a few minutes):
#   command: bash tools/gpu.sh ab            carry: [".whl", "build/base"]
# and, with time left, another call: bash tools/gpu.sh check profile gemm   (add ".data" to carry for `train`)
# On this machine (2 shared cores: expect noise of several %): bash tools/gpu.sh --device cpu ab
set -o pipefail
DEV=""
if [ "$1" = --device ]; then DEV=$2; shift 2; fi
[ $# -gt 0 ] || { sed -n '2,/^set -o pipefail/{/^set/!p}' "$0"; exit 2; }
ROOT=$PWD
WORK=${WORK:-/tmp/clcnn-gpu}; rm -rf "$WORK"; mkdir -p "$WORK/json"
if [ "$DEV" = cpu ]; then
  OUT=${OUT:-runs/gpu-cpu}; STEPS=${STEPS:-4}; ROUNDS=${ROUNDS:-3}; PY=${PY:-python3}; LIMIT=${LIMIT:-1800}
  AB_ROUNDS=${AB_ROUNDS:-2}
else
  . tools/device-env.sh; OUT=${OUT:-/tmp/out}; STEPS=${STEPS:-50}; ROUNDS=${ROUNDS:-5}; PY=${PY:-python3}
  LIMIT=${LIMIT:-400}; AB_ROUNDS=${AB_ROUNDS:-4}
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | tee "$WORK/gpu.txt"
  DEV=${DEV:-$($PY -c "import clcnn; print(next(d.id for d in clcnn.list_devices() if 'nvidia' in d.platform.lower()))")}
fi
mkdir -p "$OUT"
case $PY in */*) PY=$(realpath -s "$PY") ;; esac   # the A/B runs from other folders
[ -n "$DEV" ] || { echo "gpu.sh: no NVIDIA OpenCL device found (clcnn devices):"; $PY -m clcnn devices; exit 1; }
GEMM_SIZE=${GEMM_SIZE:-4096}
CONFIGS=${CONFIGS:-lenet5:256,lenet5:1024,cifar:256,cifar:1024}
BASE=$(realpath -m "${BASE:-build/base}"); NEW=$(realpath -m "${NEW:-$ROOT}")
export CLCNN_CACHE_DIR=${CLCNN_CACHE_DIR:-$WORK/kernels} CLCNN_TUNING_DIR=$WORK/untuned PYTHONUNBUFFERED=1
echo "device $DEV, steps $STEPS x rounds $ROUNDS, $(date -u +%FT%TZ), tree $(git rev-parse --short HEAD 2>/dev/null || echo '(no .git)')"
q() { grep --line-buffered -v -i "warn\|lambda: self"; }

# One process per side and round: every config of $CONFIGS through the side's own `clcnn bench train` (cli.main).
bench_round() {   # SIDE DIR ROUND EXTRA_ARGS...
  local side=$1 dir=$2 round=$3; shift 3
  if [ -f "$dir/clcnn/cli_bench.py" ]; then   # a tree with `--torch MODES` (older trees time eager only)
    set -- --torch "$([ "$side" = bench ] && echo "${TORCH_MODES:-all}" || echo "${AB_TORCH:-eager}")" "$@"
  fi
  (cd "$dir" && PYTHONPATH="$dir${PYTHONPATH:+:$PYTHONPATH}" CLCNN_CACHE_DIR="$WORK/kernels-$side" timeout "$LIMIT" \
    $PY - "$side" "$round" "$WORK/json" "$DEV" "$STEPS" "$ROUNDS" "$CONFIGS" "$@" <<'EOF'
import gc
import sys
import clcnn
from clcnn.cli import main
side, rnd, out, dev, steps, rounds, configs, *extra = sys.argv[1:]
print(f"== {side} round {rnd}: clcnn from {clcnn.__file__}", flush=True)
for model, batch in (c.split(":") for c in configs.split(",")):
    args = ["bench", "train", "--model", model, "--batch-size", batch, "--device", dev, "--steps", steps,
            "--rounds", rounds, "--json", f"{out}/{side}_{model}_{batch}_r{rnd}.json", *extra]
    try:
        main.main(args, standalone_mode=False)
    except Exception as exc:   # one failed row must not lose the others
        print(f"{side} {model} {batch}: failed: {type(exc).__name__}: {exc}", flush=True)
    gc.collect()   # the run's model, device buffers and PyTorch worker go before the next config
EOF
  ) 2>&1 | q
}

stage_ab() {
  if [ ! -d "$BASE/clcnn" ]; then
    if git rev-parse -q --verify "e0b1a3e^{commit}" >/dev/null 2>&1; then
      mkdir -p "$BASE" && git archive e0b1a3e clcnn cl cpu | tar -x -C "$BASE"
    else
      echo "ab: no $BASE and no git here; make it before the call (see the top of tools/gpu.sh) and carry it"
      return 1
    fi
  fi
  for r in $(seq 1 "$AB_ROUNDS"); do
    if [ $((r % 2)) = 1 ]; then order="old new"; else order="new old"; fi
    for side in $order; do
      if [ $side = old ]; then dir=$BASE; else dir=$NEW; fi
      bench_round $side "$dir" $r | grep --line-buffered -v "^---\|^what\|^peak\|^torch \|^device launches"
    done
  done
  $PY "$ROOT/tools/bench_table.py" "$WORK/json" --json "$WORK/json/ab_summary.json" | tee "$OUT/ab.txt"
}

stage_check() {
  $PY -m clcnn devices
  local tests=${TESTS:-"tests/test_ops.py tests/test_ops_gemm.py tests/test_step.py tests/test_layers.py \
    tests/test_model.py tests/test_torch_oracle.py tests/test_bench_tune.py tests/test_imports.py"}
  local have=""; for t in $tests; do [ -f "$t" ] && have="$have $t"; done
  timeout 420 $PY -m pytest -q -x -p no:cacheprovider $have 2>&1 | tail -15
}

stage_gemm() {
  for v in all sweep; do
    timeout 300 $PY -m clcnn bench gemm --size "$GEMM_SIZE" --device "$DEV" --variant $v \
      --json "$WORK/json/gemm_$v.json" 2>&1 | q
  done
}

stage_tune() {
  export CLCNN_TUNING_DIR=$WORK/tuned
  timeout 400 $PY -m clcnn tune --device "$DEV" --model lenet5,cifar --batch-size 256,1024 \
    --gemm-size "$GEMM_SIZE" 2>&1 | q | tail -12
  bench_round tuned "$ROOT" 1
  export CLCNN_TUNING_DIR=$WORK/untuned
}

stage_layers() {
  for c in ${CONFIGS//,/ }; do
    local m=${c%%:*} b=${c##*:}
    timeout 300 $PY -m clcnn bench layers --model "$m" --batch-size "$b" --device "$DEV" \
      --png "$OUT/layers_${m}_$b.png" --json "$WORK/json/layers_${m}_$b.json" 2>&1 | q
  done
}

stage_profile() {
  for c in ${CONFIGS//,/ }; do
    timeout 120 $PY tools/profile_step.py --device "$DEV" --model "${c%%:*}" --batch-size "${c##*:}" 2>&1 | q
  done
}

stage_train() {
  CLCNN_DATA=$ROOT/.data timeout 300 $PY -m clcnn train --dataset fashion-mnist --model lenet5 \
    --device "$DEV" --epochs 1 --batch-size 64 --lr 0.05 --seed 0 --out "$WORK/run" --no-progress 2>&1 | q
}

for stage in "$@"; do
  case $stage in
    ab|check|gemm|tune|profile|train|layers) echo "==== $stage"; stage_$stage 2>&1 | tee "$OUT/$stage.log" ;;
    bench) echo "==== bench"; bench_round bench "$ROOT" 1 2>&1 | tee "$OUT/bench.log" ;;
    *) echo "gpu.sh: unknown stage $stage (see: bash tools/gpu.sh)"; exit 2 ;;
  esac
  tar -czf "$OUT/json.tgz" -C "$WORK" json $(cd "$WORK" && ls gpu.txt 2>/dev/null)   # after each stage: a cut-off
done                                                                                  # call still brings it back
[ -f "$OUT/ab.txt" ] && { echo "==== A/B (img/s, medians over rounds; old = $BASE)"; cat "$OUT/ab.txt"; }
exit 0
