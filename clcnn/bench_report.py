"""The text tables of `clcnn bench train` and `clcnn bench gemm`: clcnn, each PyTorch mode, the ratio against the
best mode, and under the table what the modes are, which failed, the launches per step and the peak memory."""
from __future__ import annotations

from .bench_torch import MODES


def _fmt(unit: str):
    return (lambda v: f"{v:12,.0f}") if unit == "img/s" else (lambda v: f"{v:12.2f}")


def _modes(r: dict) -> dict:
    """{mode: {"rate", "peak_bytes", "error"}} of a row; a gemm row's single figure is mode "torch"."""
    return r.get("torch_modes") or ({"torch": {"rate": r["torch"]}} if r.get("torch") else {})


def _mib(v) -> str:
    return "n/a" if v is None else f"{v / 2**20:.1f} MiB"


def format_table(rows: list[dict]) -> str:
    """The rows as an aligned text table: clcnn, one column per PyTorch mode any row has, the ratio
    clcnn / best mode; then the notes (modes, failures, launches per step, peak device memory)."""
    w = max([40] + [len(r["what"]) for r in rows])
    names = list(dict.fromkeys(m for r in rows for m in _modes(r)))
    head = f"{'what':{w}s} {'device':30s} {'clcnn':>12s}" + "".join(f" {m + ' ':>13s}" for m in names)
    head += f" {'clcnn/best':>10s}  unit"
    out = [head, "-" * len(head)]
    for r in rows:
        fmt, modes = _fmt(r["unit"]), _modes(r)
        dev = f"{r['device']} {r['card']}"[:30]
        line = f"{r['what']:{w}s} {dev:30s} {fmt(r['clcnn'])}"
        for m in names:
            v = modes.get(m, {})
            cell = fmt(v["rate"]).strip() if v.get("rate") else "failed" if v.get("error") else "-"
            line += f" {cell + ('*' if m == r.get('torch_mode') and len(modes) > 1 else ' '):>13s}"
        line += f" {r['ratio']:10.2f}" if r["ratio"] else f" {'-':>10s}"
        out.append(f"{line}  {r['unit']}")
    out += _notes(rows, names)
    return "\n".join(out)


def _notes(rows: list[dict], names: list[str]) -> list[str]:
    out = []
    torch_on = sorted({r["torch_on"] for r in rows if r.get("torch_on")})
    if torch_on:
        recipe = any(r["unit"] == "img/s" for r in rows)   # train rows; gemm rows are torch.mm
        out.append("torch on: " + "; ".join(torch_on) + "; TF32 off" + ("; the same network, initial weights and "
                   "recipe (SGD lr 0.01 momentum 0.9, cross-entropy) as clcnn" if recipe else "")
                   + ("; * = the best mode" if len(names) > 1 else ""))
    if any(m in MODES for m in names):
        out.append("torch modes: " + ", ".join(f"{m} ({MODES[m]})" for m in names if m in MODES))
    for r in rows:
        for m, v in _modes(r).items():
            if v.get("error"):
                out.append(f"torch {m} on {r['device']} failed: {v['error']}")
    uploads = [f"{r['device']} {r['clcnn_upload']:,.0f} {r['unit']}" for r in rows if r.get("clcnn_upload")]
    if uploads:
        out.append("clcnn (and torch) step on a batch already on the device; clcnn checking and uploading the host "
                   "batch every step as well: " + ", ".join(uploads))
    launches = [f"{r['device']} {r['launches']}" + (f" (on {r['launches_on']})" if r.get("launches_on", r["device"])
                                                   != r["device"] else "")
                for r in rows if r.get("launches") is not None]
    if launches:
        out.append("device launches per clcnn step (kernels, fills, copies): "
                   + ", ".join(launches))
    peaks = []
    for r in rows:
        if r.get("peak_bytes") is None:
            continue
        theirs = [f"torch {m} {_mib(v.get('peak_bytes'))}" for m, v in _modes(r).items() if v.get("rate")]
        peaks.append(f"{r['device']} clcnn {_mib(r['peak_bytes'])}" + (", " if theirs else "") + ", ".join(theirs))
    if peaks:
        out.append("peak device memory of the step (torch on a CPU: n/a, PyTorch's CPU allocator keeps no peak): "
                   + "; ".join(peaks))
    return out
