"""`clcnn datasets`: every known data set, where its files were found (or where a download would put them), their
size on disk or to download, and the number of images; plus how to name an image folder.

    clcnn datasets [--data-dir DIR] [--json]
"""
from __future__ import annotations

import json
from pathlib import Path

import click

from . import data
from .data.registry import SPECS, download_dir, search_dirs


def _size_on_disk(folder: Path) -> int:
    """Bytes of the regular files under ``folder`` (not following links)."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def _row(name: str, data_dir) -> dict:
    """{"name", "summary", "found", "where", "bytes", "train", "test", "download"}: ``where`` is the folder
    found, else where a download would go (``bytes``: on disk, else the download's size)."""
    spec = SPECS[name]
    found = data.locate(name, data_dir, unpack=False)
    row = {"name": name, "summary": spec.summary, "found": found is not None, "train": spec.counts[0] or None,
           "test": spec.counts[1] or None}
    if found is not None:
        row.update(where=str(found), bytes=_size_on_disk(found))
    elif spec.remotes:
        row.update(where=str(download_dir(name, data_dir)), bytes=sum(r.size for r in spec.remotes),
                   download=[r.url for r in spec.remotes])
    else:
        row.update(where=", ".join(str(d) for d in search_dirs(name, data_dir)), bytes=None)
    return row


def _line(row: dict) -> str:
    size = "" if row["bytes"] is None else f"{row['bytes'] / 1e6:8.1f} MB"
    counts = f"{row['train']}/{row['test']} images" if row["train"] else "any IDX files"
    state = "found in" if row["found"] else "download to" if row.get("download") else "looked for in"
    return f"{row['name']:14s} {state:13s} {row['where']}  {size}  ({counts}; {row['summary']})"


@click.command()
@click.option("--data-dir", default=None, help="A folder searched first (as `clcnn train --data-dir`).")
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
def datasets(data_dir, as_json):
    """List the data sets: where each was found or would be downloaded, and their sizes."""
    rows = [_row(name, data_dir) for name in SPECS]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        click.echo(_line(row))
    click.echo(f"{'folder:PATH':14s} an image folder: PATH/train/<class>/*.png|jpg and PATH/test/<class>/ "
               "(else --test-fraction of train/); --image-size HxW, --channels 1|3")
