"""Pictures of runs with matplotlib (Agg, no display): a run's loss and accuracy curves (DIR/curves.png, written
after each epoch), several runs overlaid, and a confusion matrix. matplotlib is imported only when a picture is
drawn, so `import clcnn` stays fast. Every PNG is written atomically (temp file + rename).
"""
from __future__ import annotations

import io as _bytes
import json
import math
import os
from pathlib import Path

import numpy as np

from . import io
from .errors import ConfigError, DataError

METRICS = "metrics.jsonl"
CURVES = "curves.png"
SPLITS = (("train", "-"), ("val", "--"), ("test", ":"))   # split -> line style of the overlay
COLOURS = {"train": "#1f77b4", "val": "#ff7f0e", "test": "#2ca02c"}   # one run's curves


def read_metrics(run_dir) -> list[dict]:
    """The per-epoch rows of ``run_dir``/metrics.jsonl, one per epoch (the last written wins: a resumed run
    rewrites the epochs it repeats), in epoch order. A partial last line (a crash mid-write) is ignored.
    DataError for a missing folder or file, a damaged line, or no epoch row."""
    path = Path(run_dir) / METRICS
    if not Path(run_dir).is_dir():
        raise DataError(f"cannot read run folder {run_dir}: it does not exist")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    rows = {}
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            if n == len(lines):
                continue
            raise DataError(f"{path}:{n} is not a JSON object (a damaged metrics file)") from None
        if isinstance(row, dict) and isinstance(row.get("epoch"), (int, float)):
            rows[int(row["epoch"])] = row
    if not rows:
        raise DataError(f"{path} has no epoch rows yet")
    return [rows[e] for e in sorted(rows)]


def _value(row: dict, key: str) -> float:
    """row[key] as a float (NaN when absent; io writes non-finite floats as the strings "NaN", "Infinity")."""
    try:
        return float(row[key])
    except (KeyError, TypeError, ValueError):
        return math.nan


def _series(rows: list[dict], key: str):
    """(epochs, values) of ``key``, or None when no row has a finite value for it."""
    epochs = np.array([r["epoch"] for r in rows], float)
    values = np.array([_value(r, key) for r in rows], float)
    return (epochs, values) if np.isfinite(values).any() else None


def _figure(width: float, height: float, ncols: int = 1, layout: str | None = "constrained"):
    """A Figure (no pyplot: no global state, no GUI backend, safe in threads) and its row of axes. ``layout``
    None: fixed margins (drawn once; the constrained layout draws twice, twice the time)."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height), dpi=110, layout=layout)
    return fig, fig.subplots(1, ncols, squeeze=False)[0]


def _style_axes(ax, title: str, ylabel: str, percent: bool) -> None:
    from matplotlib.ticker import MaxNLocator, PercentFormatter
    ax.set_title(title, fontsize=12, fontweight="bold")
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)
    if percent:
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))


def _save(fig, path) -> Path:
    """Render ``fig`` as PNG into ``path`` atomically; ConfigError naming the path when it cannot be written."""
    buf = _bytes.BytesIO()
    fig.savefig(buf, format="png")
    io.write_atomic(path, buf.getvalue())
    return Path(path)


def _run_title(run_dir: Path, rows: list[dict], title: str | None) -> str:
    """"TITLE - FOLDER (N epochs, DEVICE)"."""
    where = f", {rows[-1]['device']}" if "device" in rows[-1] else ""
    heading = f"{run_dir.resolve().name} ({len(rows)} epoch{'s' * (len(rows) != 1)}{where})"
    return f"{title} \u2014 {heading}" if title else heading


def save_curves(run_dir, path=None, title: str | None = None) -> Path:
    """Loss and accuracy per epoch of one run (train, and val and test where the rows have them) as a PNG:
    ``path`` (default RUN_DIR/curves.png), headed "TITLE - FOLDER (N epochs, DEVICE)". Returns the path;
    DataError when there are no metrics."""
    run_dir = Path(run_dir)
    rows = read_metrics(run_dir)
    fig, (loss_ax, acc_ax) = _figure(11, 4.2, ncols=2, layout=None)   # drawn after every epoch: the cheap way
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.12, top=0.85, wspace=0.2)
    marker = "o" if len(rows) <= 40 else None
    for ax, metric, label in ((loss_ax, "loss", "loss"), (acc_ax, "accuracy", "accuracy")):
        for split, _ in SPLITS:
            series = _series(rows, f"{split}_{metric}")
            if series is None:
                continue
            last = series[1][np.isfinite(series[1])][-1]
            shown = f"{last:.1%}" if metric == "accuracy" else f"{last:.4f}"
            ax.plot(*series, marker=marker, markersize=4, linewidth=2, color=COLOURS[split],
                    label=f"{split} (last {shown})")
        _style_axes(ax, metric.capitalize(), label, percent=metric == "accuracy")
        if ax.get_lines():
            ax.legend(loc="best", frameon=False)
        else:
            ax.text(0.5, 0.5, f"no {metric} recorded", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle(_run_title(run_dir, rows, title), fontsize=13)
    return _save(fig, path or run_dir / CURVES)


def after_epoch(run_dir, title: str | None = None) -> Path | None:
    """What training calls after each epoch: ``save_curves(run_dir, title=title)`` (RUN_DIR/curves.png), unless
    $CLCNN_CURVES is "0" (a test suite that trains many short runs can skip matplotlib's ~1 s per process)."""
    if os.environ.get("CLCNN_CURVES", "1").strip() == "0":
        return None
    return save_curves(run_dir, title=title)


def save_overlay(run_dirs, path, labels=None) -> Path:
    """Several runs' loss and accuracy curves on one PNG: a colour per run, a line style per split
    (train solid, val dashed, test dotted). ``labels``: one legend name per run (default: the folder names)."""
    from matplotlib.lines import Line2D
    if not run_dirs:
        raise ConfigError("give at least one run folder")
    labels = list(labels) if labels else [Path(d).resolve().name for d in run_dirs]
    runs = [read_metrics(d) for d in run_dirs]   # every folder checked before drawing
    fig, axes = _figure(12, 4.6, ncols=2)
    colours = [f"C{i % 10}" for i in range(len(runs))]
    for ax, metric in zip(axes, ("loss", "accuracy")):
        used = set()
        for rows, colour in zip(runs, colours):
            for split, style in SPLITS:
                series = _series(rows, f"{split}_{metric}")
                if series is not None:
                    ax.plot(*series, linestyle=style, marker="o", markersize=3, linewidth=1.8, color=colour)
                    used.add(split)
        _style_axes(ax, metric.capitalize(), metric, percent=metric == "accuracy")
        handles = [Line2D([], [], color="0.3", linestyle=style, label=split) for split, style in SPLITS
                   if split in used]
        if handles:
            ax.legend(handles=handles, loc="best", frameon=False, title="split")
    fig.legend(handles=[Line2D([], [], color=c, linewidth=3, label=lab) for c, lab in zip(colours, labels)],
               loc="outside lower center", ncols=min(len(runs), 4), frameon=False)
    fig.suptitle(f"{len(runs)} run{'s' * (len(runs) != 1)}", fontsize=13)
    return _save(fig, path)


def save_confusion(matrix, class_names, path, title: str = "Confusion matrix") -> Path:
    """The confusion matrix (K, K) [true, predicted] counts as a PNG heat map of each true class's share
    (rows sum to 100%), with the counts written in the cells for up to 20 classes."""
    cm = np.asarray(matrix, np.int64)
    k = len(cm)
    shares = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    side = min(4.0 + 0.45 * k, 12.0)
    fig, (ax,) = _figure(side + 1.2, side)
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.03, label="share of the true class")
    if k <= 40:
        ax.set_xticks(range(k), labels=class_names, rotation=45 if k > 2 else 0, ha="right" if k > 2 else "center",
                      rotation_mode="anchor")
        ax.set_yticks(range(k), labels=class_names)
    if k <= 20:
        for (i, j), n in np.ndenumerate(cm):
            if n:
                ax.text(j, i, str(n), ha="center", va="center", fontsize=8 if k > 10 else 10,
                        color="white" if shares[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title, fontsize=12, fontweight="bold")
    return _save(fig, path)
