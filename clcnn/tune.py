"""`clcnn tune`: build the presets' training steps and ask the device's backend to tune the GEMM shapes they use.

    clcnn tune --device cl:0 [--model lenet5,cifar] [--batch-size 64,256] [--gemm-size 4096]

The search and the per-device cache live with the OpenCL backend (clcnn/backends/opencl_tune.py); every later
run on that device loads the winners with no search. A backend with nothing to tune (``cpu``: the system BLAS)
says so.
"""
from __future__ import annotations

from .bench import preset_inputs, preset_shape
from .errors import ConfigError


def tune(device, models=("lenet5", "cifar"), batch_sizes=(256,), repeats: int = 5,
         max_candidates: int | None = None, log=print, gemm_sizes=()) -> dict:
    """Tune every GEMM shape of the given presets' training steps (one per preset and batch size, on the input
    shape and class count the preset is built for) and of a size^3 product for each of ``gemm_sizes``.

    Returns the backend's report (see opencl_tune.tune): {device, seconds, shapes, default_us, tuned_us, path,
    rows}; ``path`` is None when the device has nothing to tune. ConfigError for an unknown preset or a
    non-positive batch size, GEMM size or repeat count; DeviceError for an unknown device."""
    from .backends import get_backend
    from .models import get_model
    from .optim import SGD
    if repeats < 1:
        raise ConfigError(f"--repeats must be positive (got {repeats})")
    for what, values in (("batch sizes", batch_sizes), ("GEMM sizes", gemm_sizes)):
        if any(v < 1 for v in values):
            raise ConfigError(f"{what} must be positive (got {', '.join(map(str, values))})")
    for name in models:
        preset_shape(name)   # an unknown preset fails before any device work
    be = get_backend(device)
    if not hasattr(be, "gemm_candidates"):
        log(f"{be.info.id} ({be.info.name}) has nothing to tune: its GEMM is the system BLAS and its convolutions "
            "run im2col + GEMM")
        return {"device": be.info.id, "seconds": 0.0, "shapes": 0, "path": None}
    from .backends.opencl_tune import tune as search
    steps, nets = {}, []
    for name in models:
        for bs in batch_sizes:
            x, y = preset_inputs(name, bs)
            model = get_model(name, seed=0).to(be.info)
            opt = SGD(model, lr=0.01, momentum=0.9)
            model.capture_steps = False   # every GEMM must reach backend.gemm, not a recorded replay
            nets.append(model)
            steps[f"{name}, batch {bs}"] = lambda m=model, x=x, y=y, o=opt: m.train_step(x, y, o)
    try:
        return search(be, steps, gemm_sizes, repeats, max_candidates, log)
    finally:
        for model in nets:
            model.capture_steps = True
