import cProfile, pstats, time, warnings, numpy as np
warnings.simplefilter("ignore")
import clcnn
from clcnn.models import get_model
from clcnn.optim import SGD
dp = clcnn.DataParallel(get_model("cifar", seed=0), ["cl:0", "cl:1"], split=[0.5, 0.5])
opt = SGD(dp, lr=0.01, momentum=0.9)
x = np.random.default_rng(0).standard_normal((1024, 3, 32, 32)).astype(np.float32); y = np.zeros(1024, np.int32)
for _ in range(5): dp.train_step(x, y, opt, sync=False)
dp.read_loss()
pr = cProfile.Profile(); t = time.perf_counter(); pr.enable()
for _ in range(20): dp.train_step(x, y, opt, sync=False)
dp.read_loss(); pr.disable()
print("ms/step", 1e3 * (time.perf_counter() - t) / 20)
pstats.Stats(pr).sort_stats("tottime").print_stats(12)
