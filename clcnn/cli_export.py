"""`clcnn export DIR --onnx FILE --torch FILE.py`: a trained run's model as ONNX and as a PyTorch file."""
from __future__ import annotations

from pathlib import Path

import click

from .errors import ConfigError


@click.command()
@click.argument("run_dir", metavar="DIR")
@click.option("--onnx", "onnx_path", default=None, metavar="FILE",
              help="Write an ONNX graph (opset 17). Input \"input\": float32 (N, C, H, W), pixels in [0, 1] "
              "(pixel / 255): the graph applies the training normalisation itself. Outputs \"logits\" and "
              "\"probabilities\".")
@click.option("--torch", "torch_path", default=None, metavar="FILE.py",
              help="Write a Python file defining build() (the equivalent torch.nn.Sequential, into which "
              "model.safetensors loads with load_state_dict), normalise(x) for pixels in [0, 1], and load(path).")
def export(run_dir, onnx_path, torch_path):
    """Export the model of run folder DIR (what `clcnn train --out DIR` wrote; or its model.safetensors) to
    ONNX and/or PyTorch. Class names and the normalisation go with it (ONNX metadata; constants in the .py)."""
    from .export import save_onnx, save_torch
    from .predict import load_run
    if not onnx_path and not torch_path:
        raise ConfigError("export needs --onnx FILE and/or --torch FILE.py")
    if torch_path and Path(torch_path).suffix != ".py":
        raise ConfigError(f"--torch writes a Python file: give it a .py name (got {torch_path})")
    for flag, path in (("--onnx", onnx_path), ("--torch", torch_path)):
        if path and not Path(path).parent.is_dir():
            raise ConfigError(f"{flag} {path}: the folder {Path(path).parent} does not exist")
    run = load_run(run_dir)
    if onnx_path:
        save_onnx(run.model, run.info, onnx_path)
        click.echo(f"wrote {onnx_path} (ONNX opset 17; input: float32 (N, {', '.join(map(str, run.info.input_shape))})"
                   " pixels in [0, 1])")
    if torch_path:
        save_torch(run.model, run.info, torch_path, source=str(run.weights))
        click.echo(f"wrote {torch_path} (torch.nn.Sequential; load({str(run.weights)!r}))")
