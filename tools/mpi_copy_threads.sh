. tools/device-env.sh
export CLCNN_CACHE_DIR=/tmp/clcnn-kernels OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mpiexec -n 2 python3 -c "import os; from clcnn.backends.opencl import _usable_cores; print('rank cores', len(os.sched_getaffinity(0)), _usable_cores())"
B="python3 -m clcnn bench train --model cifar --batch-size 1024 --steps 30 --rounds 3 --no-torch"
for t in default 0 8 default; do if [ $t = default ]; then e=""; else e="CLCNN_COPY_THREADS=$t"; fi
  echo "copy threads $t: $(env $e timeout 60 mpiexec -n 2 $B --distributed mpi --device auto 2>&1 | grep '^cifar')"; done
