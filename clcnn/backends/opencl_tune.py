"""OpenCL kernel tuning: the per-device cache of tuned configs and the search that fills it.

The cache is one JSON file per device, keyed by platform, device name and driver version, under
$CLCNN_TUNING_DIR (else ~/.cache/clcnn/tuning). OpenCLBackend loads it when it opens a device; ``tune`` searches
the GEMM configs (``gemm_candidates``) of every GEMM shape some training steps use, the elementwise
work-group size, and for each convolution geometry and batch size the fastest of its algorithms (CONV_ALGORITHMS:
the whole step's device time with each), and saves the winners. Each GEMM candidate must reproduce the default
config's result before it may win; times are device times from OpenCL profiling events, medians over repeats.

The file is read back untrusted: it carries the SHA-256 of its own content ("checksum"); a file that is not JSON,
fails its checksum (hand-edited, cut short) or holds values of the wrong kind is ignored with one warning line on
stderr (the defaults are used), and each config in it is still checked by the backend before use.

This module knows nothing of models: the caller (``clcnn tune``) hands it steps, callables that each run one
training step on the backend without recording it (so every GEMM goes through ``backend.gemm``).
"""
from __future__ import annotations

import hashlib
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from ..io import write_json
from .capabilities import CONV_ALGORITHMS
from .opencl_tune_conv import tune_convs

ELTWISE_SIZES = (64, 128, 256, 512, 1024)   # work-group sizes the elementwise search tries (capped by the device)


def tuning_dir() -> Path:
    """Where tuned configs live: $CLCNN_TUNING_DIR, else ~/.cache/clcnn/tuning."""
    env = os.environ.get("CLCNN_TUNING_DIR")
    return Path(env) if env else Path.home() / ".cache" / "clcnn" / "tuning"


def _device_doc(info) -> dict:
    return {"platform": info.platform, "name": info.name, "driver": info.version}


def tuning_path(info) -> Path:
    """The cache file of one device (a DeviceInfo): keyed by platform, device name and driver version."""
    key = "\0".join((info.platform, info.name, info.version))
    slug = "".join(ch if ch.isalnum() else "-" for ch in info.name.lower()).strip("-")[:40]
    return tuning_dir() / f"{slug}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"


def _checksum(doc: dict) -> str:
    """SHA-256 of ``doc`` without its "checksum" entry, as canonical JSON (sorted keys, no spaces)."""
    body = {k: v for k, v in doc.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _problem(doc, info) -> str:
    """What is wrong with a tuning document read from disk ("" when nothing)."""
    if not isinstance(doc, dict):
        return "is not a JSON object"
    if doc.get("checksum") != _checksum(doc):
        return "fails its checksum (edited by hand, cut short, or written by an older clcnn)"
    if doc.get("device") != _device_doc(info):
        return "belongs to another device or driver"
    gemm, wg = doc.get("gemm", {}), doc.get("eltwise_wg", 1)
    if not isinstance(gemm, dict) or not all(isinstance(k, str) and isinstance(v, dict) for k, v in gemm.items()):
        return "has a malformed gemm table"
    if isinstance(wg, bool) or not isinstance(wg, int) or wg < 1 or wg & (wg - 1):
        return f"has a bad eltwise_wg {wg!r} (a power of two)"
    conv = doc.get("conv", {})
    if not isinstance(conv, dict) or not all(v in CONV_ALGORITHMS for v in conv.values()):
        return "has a malformed conv table"
    return ""


_warned: set[str] = set()   # tuning files this process has already warned about


def load_tuning(info) -> dict:
    """The saved winners of a device: {"gemm": {gemm_key: config}, "eltwise_wg": int, "conv": {conv_key: one of
    CONV_ALGORITHMS}}; {} when the device is
    untuned, or (with one warning line per file and process) when its file is not JSON, fails its checksum,
    belongs to another device or driver, or holds values of the wrong kind: the defaults are used then."""
    path = tuning_path(info)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        doc, why = None, f"cannot be read ({exc})"
    else:
        try:
            doc = json.loads(text)
            why = _problem(doc, info)
        except ValueError:
            doc, why = None, "is not valid JSON"
    if why:
        if str(path) not in _warned:
            _warned.add(str(path))
            print(f"clcnn: warning: tuning file {path} {why}: ignored, the default kernel configs are used "
                  "(clcnn tune writes a new one)", file=sys.stderr, flush=True)
        return {}
    return {k: doc[k] for k in ("gemm", "eltwise_wg", "conv") if k in doc}


def save_tuning(info, gemm: dict, eltwise_wg: int, seconds: float, conv: dict | None = None) -> Path:
    """Write a device's winners (atomically) and return the file's path; OSError if it cannot be written."""
    path = tuning_path(info)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = json.loads(json.dumps({"device": _device_doc(info), "tuned_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                 "seconds": float(seconds), "gemm": gemm, "eltwise_wg": int(eltwise_wg),
                                 "conv": dict(conv or {})}))
    write_json(path, {**doc, "checksum": _checksum(doc)})   # the checksum of what a later load will parse
    return path


def tune_eltwise(be, step, repeats: int, log=print) -> tuple[int, float, float]:
    """The elementwise work-group size (im2col, pooling, activations, ...) with the least summed device time over
    ``step()``, inside ``be.profiling()``; returns (best size, default's time, best's time), times in seconds."""
    default, times = be.eltwise_wg, {}
    sizes = sorted({wg for wg in ELTWISE_SIZES if wg <= be.device.max_work_group_size} | {default})
    try:
        for wg in sizes:
            be.eltwise_wg = wg
            runs = []
            for _ in range(repeats + 1):   # the first run builds the kernels: not timed
                mark = be.event_time()
                step()
                runs.append(sum(t for name, _, t in be.event_log(mark) if not name.startswith("gemm")))
            times[wg] = statistics.median(runs[1:])
    finally:
        be.eltwise_wg = default
    best = min(times, key=times.get)
    log("  elementwise work-group size: " + ", ".join(f"{wg}: {t * 1e6:.0f} us" for wg, t in times.items())
        + f" -> {best}")
    return best, times[default], times[best]


def record_gemms(be, step) -> list[tuple[str, tuple, dict]]:
    """Every distinct GEMM call of one ``step()``, in order: (gemm_key, positional args, keyword args)."""
    calls, seen, real = [], set(), be.gemm

    def spy(*args, **kw):
        key = be.gemm_key(*args[3:6], trans_a=kw.get("trans_a", False), trans_b=kw.get("trans_b", False),
                          batch=kw.get("batch", 1), reduce=kw.get("reduce", False))
        if key not in seen:
            seen.add(key)
            calls.append((key, args, kw))
        return real(*args, **kw)
    be.gemm = spy
    try:
        step()
    finally:
        del be.gemm
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


def _tune_call(be, args, kw, repeats: int, max_candidates: int | None, log) -> tuple[dict, float, float, int]:
    """(best config, default's time, best's time, candidates tried) of one recorded call; C is restored."""
    m, n, k = args[3:6]
    ta, tb = kw.get("trans_a", False), kw.get("trans_b", False)
    cands = be.gemm_candidates(m, n, k, ta, tb)[:max_candidates or None]
    default = be.gemm_config(m, n, k, ta, tb, batch=kw.get("batch", 1), reduce=kw.get("reduce", False),
                             tuned=False)
    c = args[2]
    snapshot = be.zeros(c.shape, c.dtype)
    be.copy(c, snapshot)
    want = _result(be, args, kw, default, snapshot)
    tol = 1e-4 * max(float(np.abs(want).max()), 1e-30) * max(1.0, k / 256)   # float32 sums of k products
    best = default
    t_default = t_best = _time(be, args, kw, default, repeats)
    for cand in cands:
        if not np.all(np.abs(_result(be, args, kw, cand, snapshot) - want) <= tol):
            log(f"  skipped {cand}: result differs from the default config's")
            continue
        t = _time(be, args, kw, cand, repeats)
        if t < t_best:
            best, t_best = cand, t
    be.copy(snapshot, c)
    return best, t_default, t_best, len(cands)


def tune_shapes(be, calls, repeats: int = 5, max_candidates: int | None = None, log=print) -> tuple[dict, list]:
    """The fastest correct candidate of each recorded call (inside ``be.profiling()``).
    Returns ({gemm_key: config}, report rows {key, default_us, tuned_us, config, candidates})."""
    winners, rows = {}, []
    for key, args, kw in calls:
        best, t_default, t_best, tried = _tune_call(be, args, kw, repeats, max_candidates, log)
        winners[key] = best
        rows.append({"key": key, "default_us": t_default * 1e6, "tuned_us": t_best * 1e6, "config": best,
                     "candidates": tried})
        log(f"  {key:44s} {t_default * 1e6:9.1f} us -> {t_best * 1e6:9.1f} us  ({tried} candidates)")
    return winners, rows


def square_gemm(be, size: int) -> tuple[str, tuple, dict]:
    """The (key, args, kwargs) of a size^3 FP32 product C = A @ B on fresh device arrays (``clcnn bench gemm``)."""
    rng = np.random.default_rng(0)
    a, b = (be.upload(rng.standard_normal((size, size)).astype(np.float32)) for _ in range(2))
    return be.gemm_key(size, size, size), (a, b, be.zeros((size, size)), size, size, size), {}


def tune(be, steps: dict, gemm_sizes=(), repeats: int = 5, max_candidates: int | None = None,
         log=print) -> dict:
    """Tune the GEMM shapes of each step in ``steps`` ({label: step()}, each one unrecorded training step on
    ``be``) and of a size^3 product for each of ``gemm_sizes``, plus the elementwise work-group size; merge the
    winners into the device's saved ones, save them and use them on ``be`` from now on.

    Returns {device, seconds, shapes, default_us, tuned_us, path, rows}: the summed device time of the tuned
    shapes before and after, in microseconds. OSError if the cache cannot be written."""
    t0 = time.perf_counter()
    saved = load_tuning(be.info)
    winners, votes, rows = dict(saved.get("gemm", {})), [], []
    be.conv_tuned = convs = dict(saved.get("conv", {}))
    for label, step in steps.items():
        log(f"{label}: GEMM shapes of one training step (default -> tuned, device time)")
        with be.profiling():
            found, r = tune_shapes(be, record_gemms(be, step), repeats, max_candidates, log)
            be.gemm_tuned = {**be.gemm_tuned, **found}   # the convolution choice is made with tuned GEMMs
            votes.append(tune_eltwise(be, step, repeats, log))
            convs.update(tune_convs(be, step, repeats, log))
        winners.update(found)
        rows += r
    for size in gemm_sizes:
        log(f"{size}^3 product (clcnn bench gemm --size {size}): default -> tuned, device time")
        with be.profiling():
            found, r = tune_shapes(be, [square_gemm(be, size)], repeats, max_candidates, log)
        winners.update(found)
        rows += r
    sums: dict[int, float] = {}   # the elementwise size winning the summed time over every step (shared kernels)
    for best, _, t in votes:
        sums[best] = sums.get(best, 0.0) + t
    eltwise_wg = min(sums, key=sums.get) if sums else saved.get("eltwise_wg", be.eltwise_wg)
    seconds = time.perf_counter() - t0
    path = save_tuning(be.info, winners, eltwise_wg, seconds, convs)
    be.gemm_tuned, be.eltwise_wg, be.conv_tuned = winners, eltwise_wg, convs
    before, after = sum(r["default_us"] for r in rows), sum(r["tuned_us"] for r in rows)
    elt_before, elt_after = sum(v[1] for v in votes) * 1e6, sum(v[2] for v in votes) * 1e6
    log(f"tuned {len(rows)} GEMM shapes on {be.info.id} ({be.info.name}) in {seconds:.1f} s: "
        f"their summed device time {before:.0f} us -> {after:.0f} us ({before / max(after, 1e-9):.2f}x); "
        f"elementwise kernels {elt_before:.0f} us -> {elt_after:.0f} us per step set (work-group {eltwise_wg}); "
        f"saved to {path}")
    return {"device": be.info.id, "seconds": seconds, "shapes": len(rows), "default_us": before, "tuned_us": after,
            "path": str(path), "rows": rows}
