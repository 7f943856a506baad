"""`clcnn eval DIR`: a trained run's loss, accuracy and per-class accuracy on a test split, and its confusion
matrix as a PNG."""
from __future__ import annotations

import json
from pathlib import Path

import click

from . import io
from .errors import ConfigError, ShapeError


@click.command(name="eval")
@click.argument("run_dir", metavar="[DIR]", required=False)
@click.option("--weights", default=None, metavar="FILE", help="A model.safetensors written by `clcnn train` "
              "(instead of DIR).")
@click.option("--model", default=None, help="A preset, for weights saved without their model spec [default: "
              "the spec saved with the weights].")
@click.option("--dataset", default=None, help="The data set whose test split is evaluated [default: the run's].")
@click.option("--data-dir", default=None, help="Where its files are [default: the run's --data-dir, else the "
              "usual places].")
@click.option("--device", default=None, help="auto | cpu | cl:N  [default: $CLCNN_DEVICE or auto]")
@click.option("--batch-size", default=1000, show_default=True, type=int)
@click.option("--confusion", default=None, metavar="FILE", help="Where to write the confusion-matrix PNG "
              "[default: DIR/confusion.png].")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON (loss, accuracy, per_class, "
              "confusion: the counts [true][predicted], confusion_png).")
def evaluate(run_dir, weights, model, dataset, data_dir, device, batch_size, confusion, as_json):
    """Print the test loss, accuracy and per-class accuracy (with class names) of the model of run folder DIR
    (what `clcnn train --out DIR` wrote), and write its confusion matrix as a PNG. The model, its
    normalisation and class names are the ones saved with the weights."""
    from . import data
    from .plots import save_confusion
    from .predict import evaluate as run_eval, load_run, read_metadata
    if (run_dir is None) == (weights is None):
        raise ConfigError("eval takes a run folder DIR or --weights FILE (one of them)")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be positive (got {batch_size})")
    if confusion and not Path(confusion).parent.is_dir():
        raise ConfigError(f"--confusion {confusion}: the folder {Path(confusion).parent} does not exist")
    source = run_dir or weights
    meta = read_metadata(source)
    config = json.loads(meta.get("config", "{}") or "{}")
    same = dataset is None or dataset == meta.get("dataset")
    dataset = dataset or meta.get("dataset") or "fashion-mnist"
    extra = {}
    if dataset.startswith("folder:"):   # decoded to the model's size and channels, the test split cut as in training
        shape = (json.loads(meta.get("spec") or "{}") or {}).get("input_shape") or [None, None, None]
        extra = {"image_size": tuple(shape[1:]) if shape[1] else None, "channels": shape[0],
                 "test_fraction": config.get("test_fraction", 0.1) if same else 0.1}
    info, _, (images, labels) = data.describe(dataset, data_dir or (config.get("data_dir") if same else None),
                                              **extra)
    run = load_run(source, preset=model, input_shape=info.input_shape, num_classes=info.num_classes)
    if tuple(images.shape[1:]) != tuple(run.info.input_shape):
        raise ShapeError(f"the model takes {'x'.join(map(str, run.info.input_shape))} images; {dataset}'s are "
                         f"{'x'.join(map(str, images.shape[1:]))}")
    result = run_eval(run, images, labels, device=device, batch_size=batch_size)
    png = Path(confusion) if confusion else run.dir / "confusion.png"
    save_confusion(result["confusion"], run.info.class_names, png,
                   title=f"{dataset} test: accuracy {result['accuracy']:.1%} ({result['images']} images)")
    if as_json:
        click.echo(io.dumps({"dataset": dataset, "split": "test", **result, "confusion_png": str(png)}, indent=1))
        return
    click.echo(f"test loss {result['loss']:.4f}  test accuracy {result['accuracy']:.4f}  ({result['images']} "
               f"images, {result['device']})")
    width = max(len(c["class"]) for c in result["per_class"])
    for c in result["per_class"]:
        acc = "   -  " if c["accuracy"] is None else f"{c['accuracy']:6.1%}"
        click.echo(f"  {c['class']:<{width}}  {acc}  ({c['images']} images)")
    click.echo(f"confusion matrix: {png}")
