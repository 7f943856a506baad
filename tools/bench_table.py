"""The A/B table of tools/gpu.sh: img/s per config and side from the `clcnn bench train --json` rows it wrote.

    python3 tools/bench_table.py DIR [--json summary.json]

DIR holds SIDE_MODEL_BATCH_rROUND.json files (side: old, new, or any other name such as tuned). Per config, for
each side: the median over rounds of clcnn's img/s and its range (min-max); new/old, the ratio of the medians;
"overlap" when the two sides' ranges overlap (the difference is then within the run's noise; "-" with fewer
than two rounds on a side); PyTorch's median over
every run of that config (on both sides, so its spread shows the machine's drift; PyTorch eager, the one mode every
tree times) and new/torch; "norm", the
median of each new run's clcnn/torch ratio over that of the old runs: PyTorch runs in the same rounds of the same
process, so a load that slows both (other work on a shared machine) cancels out of it.
"""
from __future__ import annotations

import argparse
import collections
import json
import pathlib
import re
import statistics

NAME = re.compile(r"(?P<side>[a-z]+)_(?P<model>[a-z0-9]+)_(?P<batch>\d+)_r(?P<round>\d+)\.json$")


def collect(folder: pathlib.Path) -> dict:
    """{(model, batch): {side: [img/s per round], "torch": [img/s per run], side + "/torch": [ratio per run]}}
    from the rows in ``folder``."""
    runs = collections.defaultdict(lambda: collections.defaultdict(list))
    for path in sorted(folder.glob("*.json")):
        m = NAME.match(path.name)
        if not m:
            continue
        row = json.loads(path.read_text())[0]
        cell = runs[(m["model"], int(m["batch"]))]
        cell[m["side"]].append(row["clcnn"])
        theirs = torch_eager(row)
        if theirs:
            cell["torch"].append(theirs)
            cell[m["side"] + "/torch"].append(row["clcnn"] / theirs)
    return runs


def torch_eager(row: dict):
    """PyTorch eager's img/s in a row: its "eager" mode where the row has modes (clcnn bench train --torch),
    else "torch" (older trees time eager only), so that both sides of an A/B divide by the same baseline."""
    modes = row.get("torch_modes")
    if modes:
        return (modes.get("eager") or {}).get("rate")
    return row.get("torch")


def _short(v: float) -> str:
    """3 significant digits: 1.03M, 464k, 6.43k, 451."""
    for scale, unit in ((1e6, "M"), (1e3, "k")):
        if v >= scale:
            return f"{v / scale:.{max(0, 2 - len(str(int(v // scale))) + 1)}f}{unit}"
    return f"{v:.0f}"


def _fmt(samples: list[float]) -> str:
    """'median (min-max)' of one side's rounds, right-aligned in 28 columns."""
    if not samples:
        return f"{'-':>28s}"
    return f"{statistics.median(samples):>11,.0f} ({_short(min(samples))}-{_short(max(samples))})".rjust(28)


def table(runs: dict) -> tuple[str, list[dict]]:
    """The text table and one summary row per config."""
    sides = sorted({s for cell in runs.values() for s in cell if "torch" not in s},
                   key=lambda s: (s not in ("old", "new"), s != "old", s))
    head = f"{'config':14s}" + "".join(f"{s + ' img/s (range)':>28s}" for s in sides)
    head += f"{'new/old':>9s} {'noise':>8s} {'torch img/s':>12s} {'new/torch':>9s} {'norm':>6s}"
    lines, rows = [head, "-" * len(head)], []
    for (model, batch), cell in sorted(runs.items(), key=lambda kv: (kv[0][0] != "lenet5", kv[0])):
        med = {s: statistics.median(v) for s, v in cell.items() if v}
        line = f"{model + ' b' + str(batch):14s}" + "".join(_fmt(cell.get(s, [])) for s in sides)
        ratio = med["new"] / med["old"] if "new" in med and "old" in med else None
        overlap = None   # needs a range on both sides
        if ratio is not None and min(len(cell["new"]), len(cell["old"])) > 1:
            overlap = min(max(cell["new"]), max(cell["old"])) >= max(min(cell["new"]), min(cell["old"]))
        vs_torch = med["new"] / med["torch"] if "new" in med and "torch" in med else None
        norm = med["new/torch"] / med["old/torch"] if "new/torch" in med and "old/torch" in med else None
        line += f"{ratio:9.3f}" if ratio else f"{'-':>9s}"
        line += f" {'-' if overlap is None else 'overlap' if overlap else 'apart':>8s}"
        line += f" {med['torch']:12,.0f}" if "torch" in med else f" {'-':>12s}"
        line += f"{vs_torch:9.2f}" if vs_torch else f"{'-':>9s}"
        line += f" {norm:6.3f}" if norm else f" {'-':>6s}"
        lines.append(line)
        rows.append({"model": model, "batch": batch, "samples": dict(cell), "median": med, "new_over_old": ratio,
                     "ranges_overlap": overlap, "new_over_torch": vs_torch,
                     "normalised_new_over_old": norm})
    return "\n".join(lines), rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=pathlib.Path)
    ap.add_argument("--json", type=pathlib.Path, help="also write the samples and medians here")
    a = ap.parse_args(argv)
    text, rows = table(collect(a.folder))
    print(text)
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
