"""`clcnn plot DIR [DIR...]`: the loss and accuracy curves of one run, or of several overlaid."""
from __future__ import annotations

import click


@click.command()
@click.argument("run_dirs", nargs=-1, required=True, metavar="DIR [DIR...]")
@click.option("--out", default=None, metavar="FILE",
              help="The PNG to write [default: DIR/curves.png for one run, curves.png here for several].")
@click.option("--label", "labels", multiple=True, help="A legend name per run, in order (repeat the option) "
              "[default: the folder names].")
def plot(run_dirs, out, labels):
    """Draw the loss and accuracy per epoch (train, and val and test where recorded) of the runs in the DIR
    folders, from their metrics.jsonl: one run as DIR/curves.png (what training writes after each epoch),
    several overlaid on one picture (a colour per run, a line style per split)."""
    from .errors import ConfigError
    from .plots import save_curves, save_overlay
    if labels and len(labels) != len(run_dirs):
        raise ConfigError(f"--label given {len(labels)} times for {len(run_dirs)} runs: give one per run")
    if len(run_dirs) == 1 and not labels:
        path = save_curves(run_dirs[0], out)
    else:
        path = save_overlay(list(run_dirs), out or "curves.png", labels=labels or None)
    click.echo(f"wrote {path}")
