"""`clcnn predict DIR IMAGE...`: the most probable classes of image files under a trained run's model."""
from __future__ import annotations

import click

from . import io
from .errors import ConfigError

DEVICE_HELP = "auto | cpu | cl:N  [default: $CLCNN_DEVICE or auto]"


@click.command()
@click.argument("run_dir", metavar="DIR")
@click.argument("images", nargs=-1, required=True, metavar="IMAGE...")
@click.option("--top", default=3, show_default=True, type=int,
              help="How many classes to show per image (all of them when there are fewer).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list: one {file, predictions: [{class, "
              "index, probability}]} per image.")
@click.option("--device", default=None, help=DEVICE_HELP)
@click.option("--batch-size", default=256, show_default=True, type=int)
def predict(run_dir, images, top, as_json, device, batch_size):
    """Print the top classes, with their probabilities, of each IMAGE under the model of run folder DIR (what
    `clcnn train --out DIR` wrote; or its model.safetensors).

    Each image file (PNG, JPEG, ... anything Pillow reads) is converted like the training data: to the model's
    channels (grey for 1, RGB for 3), resized to its height and width (bilinear), scaled to [0, 1] and
    normalised with the training set's per-channel mean and std saved with the model.
    """
    from .predict import load_run, predict_files
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be positive (got {batch_size})")
    if top < 1:
        raise ConfigError(f"--top must be at least 1 (got {top})")
    run = load_run(run_dir)
    rows = predict_files(run, list(images), top=top, device=device, batch_size=batch_size)
    if as_json:
        click.echo(io.dumps(rows, indent=1))
        return
    width = max(len(r["file"]) for r in rows)
    name_width = max(len(p["class"]) for r in rows for p in r["predictions"])
    for r in rows:
        best = "   ".join(f"{p['class']:<{name_width}} {p['probability']:6.1%}" for p in r["predictions"])
        click.echo(f"{r['file']:<{width}}  {best}")
