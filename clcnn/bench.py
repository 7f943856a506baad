"""`clcnn bench`: clcnn beside PyTorch on the same hardware, alternating, with warm-up and medians.

    clcnn bench train --model lenet5 --batch-size 256 --device cl:0 [--torch all] [--steps 20] [--rounds 5]
    clcnn bench gemm --size 4096 --device cl:0 [--variant auto|all|sweep|vec] [--json out.json]
    clcnn bench layers --model lenet5 --batch-size 256 --device cl:0   (clcnn/bench_layers.py)

PyTorch runs on CUDA when the clcnn device is an NVIDIA GPU and torch sees CUDA (TF32 off), otherwise on the CPU
with as many threads as this process may use (clcnn/bench_torch.py), in every mode asked for (eager,
cudnn.benchmark, a CUDA graph of the step, torch.compile). Each round times clcnn and every mode in turn; a row
reports medians over rounds. A preset is timed on the input shape and class count it is built for
(``preset_inputs``). The table is bench_report.format_table.
"""
from __future__ import annotations

import statistics
import time

import numpy as np

from .backends import DeviceError, get_backend
from .bench_torch import TorchMode, device_modes, one_line, torch_device
from .errors import ConfigError


def preset_shape(name: str) -> tuple[tuple[int, ...], int]:
    """((C, H, W), num_classes) preset ``name`` is built for by default: what its model says (input_shape,
    num_classes). ConfigError naming the presets for an unknown one."""
    from .models import get_model
    model = get_model(name, seed=0)
    return tuple(model.input_shape), int(model.num_classes)


def preset_inputs(name: str, batch_size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A random mini-batch for preset ``name``: x (batch_size, C, H, W) float32 standard normal and y
    (batch_size,) int32 labels in [0, num_classes). ConfigError for an unknown preset or batch_size < 1."""
    shape, classes = preset_shape(name)
    if batch_size < 1:
        raise ConfigError(f"batch sizes must be positive (got {batch_size})")
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch_size, *shape)).astype(np.float32)
    return x, rng.integers(0, classes, batch_size).astype(np.int32)


def _median_rate(samples):
    return statistics.median(samples) if samples else None


def _alternate(runners: dict, rounds: int, work: float, errors: dict | None = None) -> dict:
    """Run each runner once per round, in turn; returns name -> median of work / seconds. A runner given as
    (setup, run) has setup() called untimed before each run. With ``errors``, a runner that raises (other than
    clcnn's) is dropped (its median None) and its one-line reason kept there under its name."""
    rates = {k: [] for k in runners}
    runners = dict(runners)
    for _ in range(rounds):
        for k, run in list(runners.items()):
            if isinstance(run, tuple):
                setup, run = run
                setup()
            t0 = time.perf_counter()
            try:
                run()
            except Exception as exc:  # noqa: BLE001 - a PyTorch mode failing mid-run is reported, not fatal
                if errors is None or k.startswith("clcnn"):
                    raise
                errors[k], rates[k] = one_line(exc), []
                del runners[k]
                continue
            rates[k].append(work / (time.perf_counter() - t0))
    return {k: _median_rate(v) for k, v in rates.items()}


def _row(what, info, ours, theirs, torch_on, unit, **extra):
    return {"what": what, "device": info.id, "card": info.name, "clcnn": ours, "torch": theirs,
            "ratio": (ours / theirs) if theirs else None, "unit": unit, "torch_on": torch_on,
            "date": time.strftime("%Y-%m-%d"), **extra}


SETTLE_STEPS = 200   # at most this many extra warm-up steps for a group whose split="auto" is still deciding


def _train_target(model_name: str, device: str, split, comm):
    """The preset (seed 0) on ``device``, or the data-parallel group that trains it (see bench_train)."""
    from .models import get_model
    if comm is not None:
        from .distributed import DistributedDataParallel, rank_device
        return DistributedDataParallel(get_model(model_name, seed=0).to(rank_device(device, comm)), comm, split)
    if "+" in device:
        from .parallel import DataParallel
        return DataParallel(get_model(model_name, seed=0), device.split("+"), split=split)
    return get_model(model_name, seed=0).to(device)


def bench_train(model_name: str, batch_size: int, device: str, steps: int = 20, rounds: int = 5,
                warmup: int = 3, torch_modes=("all",), split="auto", comm=None) -> dict:
    """Images/s of one training step (forward, backward, SGD with momentum) of a preset, clcnn vs PyTorch in
    each of ``torch_modes`` (bench_torch.parse_modes: "all" is every mode the torch device has; "none"), timed
    in turn in the same rounds. ``device`` "cl:0+cl:1" trains one data-parallel group in this process
    (DataParallel, ``split``); with an MPI ``comm`` each rank drives its own of ``device``
    (distributed.rank_device) and the group is the ranks.

    Both sides step on one batch already on the device (a single model: ``to_device``; PyTorch: a CUDA or CPU
    tensor made once), so the rates compare the same work; ``clcnn_upload`` is clcnn's rate when each step also
    checks and uploads the host batch (``train_step(x, y)``, what a training loop does; a data-parallel group
    always uploads: ``clcnn`` is that rate and there is no ``clcnn_upload``).

    Returns one row: {what, device, card, clcnn, torch (the best mode's img/s), torch_mode (which), ratio
    (clcnn / best), unit="img/s", torch_on, date, peak_bytes, torch_peak_bytes (the best mode's),
    torch_modes {mode: {rate, peak_bytes, error}}, launches (device enqueues per clcnn step on device
    launches_on: a group's replica with the largest share)[, clcnn_upload | split]}.
    ConfigError for an unknown preset or a non-positive count."""
    from .optim import SGD
    if batch_size < 1 or steps < 1 or rounds < 1:
        raise ConfigError("--batch-size, --steps and --rounds must be positive")
    x, y = preset_inputs(model_name, batch_size)
    model = _train_target(model_name, device, split, comm)
    be, info = model.backend, model.device
    opt = SGD(model, lr=0.01, momentum=0.9)

    def ours(batch=None):   # batch: a DeviceBatch (the batch already on the device, as PyTorch's is), else x, y
        for _ in range(steps):
            if batch is None:
                model.train_step(x, y, opt, sync=False)
            else:
                model.train_step(batch, None, opt, sync=False)
        model.read_loss()   # one device read: waits for every queued step

    for _ in range(warmup):   # compile, allocate, capture
        model.train_step(x, y, opt, sync=False)
    for _ in range(SETTLE_STEPS):   # a data-parallel group's auto split still deciding: time what it settles on
        if not getattr(model, "settling", False):
            break
        model.train_step(x, y, opt, sync=False)
    model.read_loss()
    be.launches = 0
    model.train_step(x, y, opt, sync=False)
    model.read_loss()
    launches = be.launches
    tdev = torch_device(be.info) if list(torch_modes) != ["none"] else None   # PyTorch on the same hardware
    modes, skipped = device_modes(list(torch_modes), tdev[0]) if tdev else ([], {})
    torch_runs = {m: TorchMode(m, model_name, tdev[0], x, y, steps) for m in modes}
    runners = {"clcnn": ours}
    if hasattr(model, "to_device"):   # a single model: both sides step on a batch already on the device, and
        staged = {}

        def stage():   # before each round, untimed: the upload runner's steps overwrite the staged batch
            staged["batch"] = model.to_device(x, y)
        runners = {"clcnn": (stage, lambda: ours(staged["batch"])), "clcnn_upload": ours}
    runners.update({m: t.run for m, t in torch_runs.items() if t.run})
    be.reset_peak_memory()
    errors = {}
    rates = _alternate(runners, rounds, steps * batch_size, errors)
    per_mode = {m: {"rate": rates.get(m), "peak_bytes": t.peak_bytes, "error": t.error or errors.get(m)}
                for m, t in torch_runs.items()}
    per_mode.update({m: {"rate": None, "peak_bytes": None, "error": why} for m, why in skipped.items()})
    best = max((m for m in per_mode if per_mode[m]["rate"]), key=lambda m: per_mode[m]["rate"], default=None)
    extra = {"split": model.split()} if hasattr(model, "split") else {"clcnn_upload": rates["clcnn_upload"]}
    return _row(f"{model_name} train step, batch {batch_size}", info, rates["clcnn"],
                per_mode[best]["rate"] if best else None, tdev[1] if tdev else None, "img/s",
                peak_bytes=be.memory_stats()["peak_bytes"], torch_mode=best,
                torch_peak_bytes=per_mode[best]["peak_bytes"] if best else None, torch_modes=per_mode,
                launches=launches, launches_on=be.info.id, **extra)


def bench_gemm(size: int, device: str, variant: str | None = None, rounds: int = 5, reps: int | None = None,
               use_torch: bool = True) -> list[dict]:
    """TFLOP/s of C = A @ B, all size x size FP32, clcnn vs torch.mm: one row per GEMM variant (see the backend's
    ``gemm_variants``: auto, all, sweep or one variant), each with its max_rel_err against float64 NumPy; a
    sweep's rows after "auto" are sorted fastest first. ConfigError for size < 1 or an unknown variant."""
    if size < 1:
        raise ConfigError("--size must be positive")
    be = get_backend(device)
    info = be.info
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((size, size)).astype(np.float32) for _ in range(2))
    da, db, dc = be.upload(a), be.upload(b), be.zeros((size, size))
    flop = 2.0 * size ** 3
    reps = reps or max(3, min(50, int(2e11 / flop)))   # ~0.2 TFLOP per timed run
    variants = be.gemm_variants(size, size, size, variant)
    tdev = torch_device(be.info) if use_torch else None   # PyTorch on (the first of) the same hardware
    rows = []
    if tdev:
        import torch
        ta, tb = torch.from_numpy(a).to(tdev[0]), torch.from_numpy(b).to(tdev[0])

        def theirs():
            for _ in range(reps):
                torch.mm(ta, tb)
            if tdev[0] == "cuda":
                torch.cuda.synchronize()
        theirs()
    for name, config in variants:
        def ours(config=config):
            with be.gemm_forced(config):
                for _ in range(reps):
                    be.gemm(da, db, dc, size, size, size)
                be.synchronize()
        what = f"gemm {size}^3 fp32, {name}"
        try:
            ours()   # build + warm-up
        except DeviceError as exc:   # a config this device cannot build: a sweep reports it and goes on
            if variant != "sweep":
                raise
            rows.append(_row(what, info, 0.0, None, None, "TFLOP/s", variant=name, error=str(exc)[:300]))
            continue
        err = _gemm_error(be, dc, a, b, size)
        runners = {"clcnn": ours, **({"torch": theirs} if tdev else {})}
        rates = _alternate(runners, rounds, flop * reps / 1e12)
        rows.append(_row(what, info, rates["clcnn"], rates.get("torch"), tdev[1] if tdev else None, "TFLOP/s",
                         variant=name, max_rel_err=err))
    if variant == "sweep":
        rows[1:] = sorted(rows[1:], key=lambda r: -r["clcnn"])
    return rows


def _gemm_error(be, dc, a, b, size) -> float:
    """Max relative error of a few rows of the device result against float64 NumPy."""
    c = be.download(dc)
    rows = np.linspace(0, size - 1, min(size, 8)).astype(int)
    ref = a[rows].astype(np.float64) @ b.astype(np.float64)
    return float(np.abs(c[rows] - ref).max() / max(np.abs(ref).max(), 1e-30))
