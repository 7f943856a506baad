"""The short table of a device script: img/s of each `clcnn bench train --json OUT/<name>.json` row, its ratio to
the first name's, and the group's split.

    python3 tools/bench_table.py OUT one one_512 procs_half mpi ...
"""
import json
import pathlib
import sys


def rate(out: pathlib.Path, name: str):
    try:
        rows = json.loads((out / f"{name}.json").read_text())
        return rows[0]["clcnn"], rows[0].get("split")
    except Exception as exc:   # a run that failed or timed out: say why in the split column
        return None, str(exc)[:80]


def main(argv) -> None:
    out, names = pathlib.Path(argv[0]), argv[1:]
    base, _ = rate(out, names[0])
    for name in names:
        r, split = rate(out, name)
        ratio = f"{r / base:.2f}" if r and base else "-"
        print(f"{name:12s} {'-' if r is None else f'{r:,.0f}':>10s} img/s  x{ratio}  {split if split else ''}")


if __name__ == "__main__":
    main(sys.argv[1:])
