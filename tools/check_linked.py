"""DataParallel over two GPUs of one context against one GPU: weights after SGD-with-momentum steps and the
replicas bit-identical (issue 4, run on the lent 2-GPU machine: python3 tools/check_linked.py cl:0 cl:1)."""
import sys
import warnings

import numpy as np

import clcnn
from clcnn.models import get_model
from clcnn.optim import SGD

warnings.simplefilter("ignore")
a, b = sys.argv[1:3]
rng = np.random.default_rng(0)
single = get_model("cifar", seed=5).to(a)
dp = clcnn.DataParallel(get_model("cifar", seed=5), [a, b], split=[0.55, 0.45], processes=False)
o1, o2 = SGD(single, lr=0.02, momentum=0.9), SGD(dp, lr=0.02, momentum=0.9)
l2 = 0.0
for i, n in enumerate([256, 256, 200, 1, 256, 97]):
    x = rng.standard_normal((n, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, n)
    single.train_step(x, y, o1, sync=False)
    l2 += dp.train_step(x, y, o2, sync=i == 3) or 0.0   # one step returns its loss; the others add up on devices
l1, l2 = single.read_loss(), l2 + dp.read_loss()
want, reps = single.state_dict(), [r.state_dict() for r in dp.replicas]
err = max(float(np.abs(r[k] - want[k]).max() / (np.abs(want[k]).max() + 1e-12)) for r in reps for k in want)
same = all(np.array_equal(reps[0][k], reps[1][k]) for k in want)
print(f"linked={dp.linked} chunks={dp.chunks if dp.linked else None} rel_err={err:.2e} replicas_identical={same} "
      f"loss {l1:.6f} vs {l2:.6f}")
sys.exit(0 if dp.linked and err < 1e-4 and same and abs(l1 - l2) < 1e-4 * abs(l1) else 1)
