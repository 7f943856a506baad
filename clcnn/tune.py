"""`clcnn tune`: search each GEMM shape a model uses for the fastest kernel config on one device, and save the
winners in a per-device cache (keyed by platform, device and driver) that every later run loads with no search.

    clcnn tune --device cl:0 [--model lenet5,cifar] [--batch-size 64,256]

Candidates come from the backend (``gemm_candidates``); each is checked against the default config's result
before it may win, and timed on the device (OpenCL profiling events, median of repeats).
"""
from __future__ import annotations

import hashlib
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np

from . import io


def tuning_dir() -> Path:
    """Where tuned configs live: $CLCNN_TUNING_DIR, else ~/.cache/clcnn/tuning."""
    env = os.environ.get("CLCNN_TUNING_DIR")
    return Path(env) if env else Path.home() / ".cache" / "clcnn" / "tuning"


def tuning_path(info) -> Path:
    """The cache file of one device: keyed by platform, device name and driver version."""
    key = "\0".join((info.platform, info.name, info.version))
    slug = "".join(ch if ch.isalnum() else "-" for ch in info.name.lower()).strip("-")[:40]
    return tuning_dir() / f"{slug}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"


def load_tuning(info) -> dict:
    """The saved winners of this device: {"gemm": {gemm_key: config}, "eltwise_wg": int} ({} when untuned or
    unreadable: defaults are used)."""
    try:
        doc = json.loads(tuning_path(info).read_text())
    except (OSError, ValueError):
        return {}
    same = isinstance(doc, dict) and doc.get("device") == {"platform": info.platform, "name": info.name,
                                                            "driver": info.version}
    return {k: doc[k] for k in ("gemm", "eltwise_wg") if k in doc} if same else {}


def tune_eltwise(be, model, x, y, opt, repeats: int, log=print) -> tuple[int, float, float]:
    """The work-group size of the elementwise kernels (im2col, pooling, activations, ...) with the least summed
    device time over one training step; returns (best, default time, best time) in seconds."""
    default, times = be.eltwise_wg, {}
    sizes = sorted({wg for wg in (64, 128, 256, 512, 1024) if wg <= be.device.max_work_group_size} | {default})
    model.capture_steps = False
    try:
        for wg in sizes:
            be.eltwise_wg = wg
            runs = []
            for _ in range(repeats + 1):
                mark = be.event_time()
                model.train_step(x, y, opt)
                runs.append(sum(t for name, _, t in be.event_log(mark) if not name.startswith("gemm")))
            times[wg] = statistics.median(runs[1:])
    finally:
        be.eltwise_wg = default
        model.capture_steps = True
    best = min(times, key=times.get)
    log("  elementwise work-group size: " + ", ".join(f"{wg}: {t * 1e6:.0f} us" for wg, t in times.items())
        + f" -> {best}")
    return best, times[default], times[best]


def _record_gemms(model, x, y, opt) -> list[tuple[tuple, dict]]:
    """Every distinct GEMM call (positional args, keyword args) of one training step, in order."""
    be, calls, seen = model.backend, [], set()
    real = be.gemm

    def spy(*args, **kw):
        key = be.gemm_key(*args[3:6], trans_a=kw.get("trans_a", False), trans_b=kw.get("trans_b", False),
                          batch=kw.get("batch", 1), reduce=kw.get("reduce", False))
        if key not in seen:
            seen.add(key)
            calls.append((key, args, kw))
        return real(*args, **kw)
    be.gemm = spy
    try:
        model.capture_steps = False
        model.train_step(x, y, opt)
    finally:
        del be.gemm
        model.capture_steps = True
    return calls


def _time(be, args, kw, config, repeats: int) -> float:
    """Median device time (s) of one call with ``config``, from OpenCL profiling events."""
    times = []
    with be.gemm_forced(config):
        be.gemm(*args, **kw)   # build + warm
        for _ in range(repeats):
            t0 = be.event_time()
            be.gemm(*args, **kw)
            times.append(be.event_time(since=t0))
    return statistics.median(times)


def _result(be, args, kw, config, snapshot) -> np.ndarray:
    """C after one call with ``config``, starting from the saved C (beta may read it)."""
    c = args[2]
    be.copy(snapshot, c)
    with be.gemm_forced(config):
        be.gemm(*args, **kw)
    return be.download(c)


def tune_shapes(be, calls, repeats: int = 5, max_candidates: int | None = None, log=print) -> tuple[dict, list]:
    """For each recorded call: the fastest correct candidate. Returns ({key: config}, report rows)."""
    winners, rows = {}, []
    for key, args, kw in calls:
        m, n, k = args[3:6]
        cands = be.gemm_candidates(m, n, k, kw.get("trans_a", False), kw.get("trans_b", False))
        if max_candidates:
            cands = cands[:max_candidates]
        default = be.gemm_config(m, n, k, kw.get("trans_a", False), kw.get("trans_b", False),
                                 batch=kw.get("batch", 1), reduce=kw.get("reduce", False), tuned=False)
        c = args[2]
        snapshot = be.zeros(c.shape, c.dtype)
        be.copy(c, snapshot)
        want = _result(be, args, kw, default, snapshot)
        scale = max(float(np.abs(want).max()), 1e-30)
        t_default = _time(be, args, kw, default, repeats)
        best, t_best = default, t_default
        for cand in cands:
            got = _result(be, args, kw, cand, snapshot)
            if not np.all(np.abs(got - want) <= 1e-4 * scale * max(1.0, k / 256)):
                log(f"  skipped {cand}: result differs from the default config's")
                continue
            t = _time(be, args, kw, cand, repeats)
            if t < t_best:
                best, t_best = cand, t
        be.copy(snapshot, c)
        winners[key] = best
        rows.append({"key": key, "default_us": t_default * 1e6, "tuned_us": t_best * 1e6, "config": best,
                     "candidates": len(cands)})
        log(f"  {key:44s} {t_default * 1e6:9.1f} us -> {t_best * 1e6:9.1f} us  ({len(cands)} candidates)")
    return winners, rows


def _square_gemm(be, size: int):
    """The (key, args, kwargs) of a size^3 FP32 product C = A @ B on fresh device arrays (``clcnn bench gemm``)."""
    rng = np.random.default_rng(0)
    a, b = (be.upload(rng.standard_normal((size, size)).astype(np.float32)) for _ in range(2))
    return be.gemm_key(size, size, size), (a, b, be.zeros((size, size)), size, size, size), {}


def tune(device, models=("lenet5", "cifar"), batch_sizes=(256,), repeats: int = 5,
         max_candidates: int | None = None, log=print, gemm_sizes=()) -> dict:
    """Tune every GEMM shape of the given presets' training steps (and of size^3 products for each of
    ``gemm_sizes``) on ``device`` and save the winners."""
    from .backends import get_backend
    from .models import INPUT_SHAPES, get_model
    from .optim import SGD
    be = get_backend(device)
    if not hasattr(be, "gemm_candidates"):
        log(f"{be.info.id} ({be.info.name}) has nothing to tune: its GEMM is the system BLAS")
        return {"device": be.info.id, "seconds": 0.0, "shapes": 0, "path": None}
    t0 = time.perf_counter()
    saved = load_tuning(be.info)
    winners, wg_votes = dict(saved.get("gemm", {})), []
    rows = []
    for name in models:
        if name not in INPUT_SHAPES:
            raise ValueError(f"unknown model {name!r} (known: {', '.join(sorted(INPUT_SHAPES))})")
        for bs in batch_sizes:
            if bs < 1:
                raise ValueError(f"batch sizes must be positive (got {bs})")
            rng = np.random.default_rng(0)
            x = rng.standard_normal((bs, *INPUT_SHAPES[name])).astype(np.float32)
            y = rng.integers(0, 10, bs).astype(np.int32)
            model = get_model(name, seed=0).to(be.info)
            opt = SGD(model, lr=0.01, momentum=0.9)
            log(f"{name}, batch {bs}: GEMM shapes of one training step (default -> tuned, device time)")
            with be.profiling():
                found, r = tune_shapes(be, _record_gemms(model, x, y, opt), repeats, max_candidates, log)
                wg_votes.append(tune_eltwise(be, model, x, y, opt, repeats, log))
            winners.update(found)
            rows += r
    for size in gemm_sizes:
        if size < 1:
            raise ValueError(f"GEMM sizes must be positive (got {size})")
        log(f"{size}^3 product (clcnn bench gemm --size {size}): default -> tuned, device time")
        with be.profiling():
            found, r = tune_shapes(be, [_square_gemm(be, size)], repeats, max_candidates, log)
        winners.update(found)
        rows += r
    seconds = time.perf_counter() - t0
    path = tuning_path(be.info)
    path.parent.mkdir(parents=True, exist_ok=True)
    # the elementwise size that wins the summed time over every tuned step (the kernels are shared)
    sums: dict[int, float] = {}
    for best, _, t in wg_votes:
        sums[best] = sums.get(best, 0.0) + t
    eltwise_wg = min(sums, key=sums.get) if sums else saved.get("eltwise_wg", be.eltwise_wg)
    io.write_json(path, {"device": {"platform": be.info.platform, "name": be.info.name, "driver": be.info.version},
                         "tuned_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "seconds": seconds, "gemm": winners,
                         "eltwise_wg": eltwise_wg})
    be.gemm_tuned, be.eltwise_wg = winners, eltwise_wg
    before, after = sum(r["default_us"] for r in rows), sum(r["tuned_us"] for r in rows)
    elt_before, elt_after = sum(v[1] for v in wg_votes) * 1e6, sum(v[2] for v in wg_votes) * 1e6
    log(f"tuned {len(rows)} GEMM shapes on {be.info.id} ({be.info.name}) in {seconds:.1f} s: "
        f"their summed device time {before:.0f} us -> {after:.0f} us ({before / max(after, 1e-9):.2f}x); "
        f"elementwise kernels {elt_before:.0f} us -> {elt_after:.0f} us per step set (work-group {eltwise_wg}); "
        f"saved to {path}")
    return {"device": be.info.id, "seconds": seconds, "shapes": len(rows), "default_us": before, "tuned_us": after,
            "path": str(path), "rows": rows}
