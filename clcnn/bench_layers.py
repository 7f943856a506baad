"""`clcnn bench layers`: every layer's forward, backward-data and backward-weights time, clcnn beside PyTorch.

    clcnn bench layers --model lenet5 --batch-size 256 --device cl:0 [--repeats 20] [--png layers.png]

clcnn's layers run as the model builds them: a ReLU fused into the convolution or Dense before it (forward) or
into the max-pool or Dense after it (backward), and a max-pool a direct convolution runs in its own kernels,
show "fused", their cost in that layer's row. Times are medians over
``repeats``: OpenCL profiling events on an OpenCL device (from the first launch's start to the last one's end),
perf_counter on the Numba CPU backend (its ops finish before they return). backward-weights is ``backward(need_dx=False)`` (bias and weight gradients);
backward-data is a full ``backward`` minus that, a difference of medians (0 when it is below the noise, as for
a tiny layer timed few times; the full backward is kept in the JSON as clcnn_backward). PyTorch's side runs
in a child process (clcnn/bench_layers_torch.py): CUDA events with cudnn.benchmark on a GPU, perf_counter on the
CPU; its passes are separate autograd.grad calls, so each is the real data-only or weights-only kernel.
"""
from __future__ import annotations

import contextlib
import json
import statistics
import subprocess
import sys
import time

import numpy as np

from . import io
from .bench import preset_inputs
from .bench_torch import one_line, torch_device

PASSES = ("forward", "backward_data", "backward_weights")


def _timer(be):
    """time(fn) -> seconds of the device work ``fn`` enqueues (see the module docstring)."""
    if be.info.backend == "opencl":
        def time_cl(fn):
            mark = be.event_time()
            fn()
            return be.event_time(mark)
        return time_cl

    def time_host(fn):
        be.synchronize()
        t0 = time.perf_counter()
        fn()
        be.synchronize()
        return time.perf_counter() - t0
    return time_host


def _clcnn_layers(model, x, repeats: int) -> list[dict]:
    """[{name, forward, backward_data, backward_weights (None without parameters)}] in seconds, per layer of
    the placed ``model`` on input x (N, C, H, W) float32."""
    be, rng = model.backend, np.random.default_rng(1)
    inputs, shapes, h = [], [], be.upload(x)
    for layer in model.layers:   # each layer's input and output shape, from one training-mode forward (a
        inputs.append(h)         # convolution that pools returns the pooled shape)
        h = layer.forward(h, True)
        shapes.append(tuple(h.shape))
    outs = [be.upload(rng.standard_normal(s).astype(np.float32)) for s in shapes]
    timed, rows = _timer(be), []
    with be.profiling() if be.info.backend == "opencl" else contextlib.nullcontext():
        for i, (layer, xin, dy) in enumerate(zip(model.layers, inputs, outs)):
            rows.append(_clcnn_layer(f"({i}) {layer!r}"[:44], layer, xin, dy, timed, repeats))
    be.synchronize()
    return rows


def _clcnn_layer(name: str, layer, xin, dy, timed, repeats: int) -> dict:
    """One layer's row of _clcnn_layers."""
    layer.grad_beta = 0.0   # as a training step's first micro-batch: the gradients are overwritten
    samples = {p: [] for p in ("forward", "weights", "full")}
    for r in range(repeats + 1):   # the first round warms up (kernel builds, buffers)
        t = {"forward": timed(lambda: layer.forward(xin, True))}
        if layer.params:
            t["weights"] = timed(lambda: layer.backward(dy, need_dx=False))
            layer.forward(xin, True)
        t["full"] = timed(lambda: layer.backward(dy, need_dx=True))
        for k, v in t.items():
            if r:
                samples[k].append(v)
    med = {k: statistics.median(v) if v else None for k, v in samples.items()}
    weights = med["weights"]
    fused = [p for p, flag in (("forward", "fused"), ("backward_data", "backward_in_next"))
             if getattr(layer, flag, False)]   # a ReLU done by the layer before (forward) or after (backward)
    if getattr(layer, "pooled_by_conv", False):   # a max-pool the convolution before it ran, both ways
        fused = ["forward", "backward_data"]
    row = {"name": name, "forward": med["forward"], "backward_weights": weights, "backward": med["full"],
           "backward_data": max(0.0, med["full"] - (weights or 0.0)), "fused": fused}
    return {**row, **{p: None for p in fused}}


def _torch_layers(model_name: str, batch_size: int, tdev: str, repeats: int) -> list[dict]:
    """PyTorch's rows from the child process; RuntimeError with its one-line reason if it fails."""
    proc = subprocess.run([sys.executable, "-m", "clcnn.bench_layers_torch", model_name, str(batch_size), tdev,
                           str(repeats)], capture_output=True, text=True)
    last = (proc.stdout.strip().splitlines() or [""])[-1]
    if proc.returncode != 0 or not last.startswith("["):
        err = [ln for ln in (proc.stderr + "\n" + proc.stdout).splitlines() if ln.strip()]
        raise RuntimeError(err[-1][:200] if err else f"the PyTorch layer worker exited with {proc.returncode}")
    return json.loads(last)


def bench_layers(model_name: str, batch_size: int, device: str, repeats: int = 20, use_torch: bool = True) -> dict:
    """{what, device, card, torch_on, torch_error, layers: [{name, clcnn: {pass: s}, torch: {pass: s} | None,
    ratio: {pass: torch / clcnn}, fused: [passes another layer does], clcnn_backward: s}]} for each layer of preset ``model_name`` at ``batch_size`` on ``device``; a
    ratio above 1 means clcnn is faster. ConfigError for an unknown preset or device, batch_size < 1."""
    from .models import get_model
    from .optim import SGD
    x, y = preset_inputs(model_name, batch_size)
    model = get_model(model_name, seed=0).to(device)
    model.train_step(x, y, SGD(model, lr=0.01))   # builds every kernel and buffer of the step
    ours = _clcnn_layers(model, x, repeats)
    tdev = torch_device(model.backend.info) if use_torch else None
    theirs, error = None, None
    if tdev:
        try:
            theirs = _torch_layers(model_name, batch_size, tdev[0], repeats)
        except Exception as exc:  # noqa: BLE001 - reported in one line; clcnn's table still prints
            error = one_line(exc)
    rows = []
    for i, mine in enumerate(ours):
        other = theirs[i] if theirs and i < len(theirs) else None
        ratio = {p: (other[p] / mine[p]) if other and other.get(p) and mine.get(p) else None for p in PASSES}
        rows.append({"name": mine["name"], "clcnn": {p: mine[p] for p in PASSES}, "fused": mine["fused"],
                     "clcnn_backward": mine["backward"],
                     "torch": {p: other[p] for p in PASSES} if other else None, "ratio": ratio})
    info = model.backend.info
    return {"what": f"{model_name} layers, batch {batch_size}", "device": info.id, "card": info.name,
            "torch_on": tdev[1] if tdev else None, "torch_error": error, "layers": rows,
            "date": time.strftime("%Y-%m-%d")}


def _us(v) -> str:
    return f"{v * 1e6:10.1f}" if v is not None else f"{'-':>10s}"


def format_layers(result: dict) -> str:
    """The per-layer table: per pass, clcnn µs, torch µs and torch/clcnn (above 1: clcnn is faster)."""
    head = f"{'layer':44s}" + "".join(f" {p.replace('backward_', 'bwd-'):>10s} {'torch':>10s} {'x':>5s}"
                                      for p in PASSES)
    out = [f"{result['what']} on {result['device']} {result['card']} (µs, medians; x = torch / clcnn)", head,
           "-" * len(head)]
    for r in result["layers"]:
        line = f"{r['name']:44s}"
        for p in PASSES:
            ratio = r["ratio"][p]
            mine = f"{'fused':>10s}" if p in r["fused"] else _us(r["clcnn"][p])
            line += f" {mine} {_us(r['torch'][p] if r['torch'] else None)}"
            line += f" {ratio:5.2f}" if ratio else f" {'-':>5s}"
        out.append(line)
    total = {p: sum(r["clcnn"][p] or 0.0 for r in result["layers"]) for p in PASSES}
    out.append(f"{'total clcnn':44s}" + "".join(f" {_us(total[p])} {'':>10s} {'':>5s}" for p in PASSES))
    if result["torch_on"]:
        out.append(f"torch on: {result['torch_on']}; TF32 off" + (", cudnn.benchmark on, CUDA events"
                                                                   if "CPU" not in result["torch_on"] else ""))
    if result["torch_error"]:
        out.append(f"torch failed: {result['torch_error']}")
    return "\n".join(out)


def save_layers_chart(result: dict, path) -> str:
    """A PNG bar chart (one panel per pass, clcnn and torch bars per layer, µs) written atomically to
    ``path``; returns the path. matplotlib is imported here only (Agg, no display)."""
    import io as _bytes

    from matplotlib.figure import Figure
    rows = result["layers"]
    fig = Figure(figsize=(max(8.0, 0.9 * len(rows)), 9), dpi=110, layout="constrained")
    axes = fig.subplots(len(PASSES), 1, squeeze=False)[:, 0]
    pos = np.arange(len(rows))
    for ax, p in zip(axes, PASSES):
        mine = [(r["clcnn"][p] or 0.0) * 1e6 for r in rows]
        ax.bar(pos - 0.2, mine, 0.4, label="clcnn", color="#1f77b4")
        if any(r["torch"] for r in rows):
            theirs = [((r["torch"] or {}).get(p) or 0.0) * 1e6 for r in rows]
            ax.bar(pos + 0.2, theirs, 0.4, label="PyTorch", color="#ff7f0e")
        ax.set_title(p.replace("_", "-"), fontsize=11, fontweight="bold")
        ax.set_ylabel("µs (log)")
        ax.set_yscale("log")   # 5 µs kernels beside 5 ms ones
        ax.set_xticks(pos, ["(" + r["name"].split("(")[1] for r in rows], rotation=30, ha="right", fontsize=8)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{result['what']}: {result['device']} {result['card']} vs {result['torch_on'] or '-'}",
                 fontsize=11)
    buf = _bytes.BytesIO()
    fig.savefig(buf, format="png")
    io.write_atomic(path, buf.getvalue())
    return str(path)
