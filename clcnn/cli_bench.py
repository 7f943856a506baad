"""`clcnn bench`: train, gemm and layers, clcnn timed beside PyTorch on the same hardware (clcnn/bench*.py).

    clcnn bench train --model lenet5 --batch-size 256 --device cl:0 --torch all --json out.json
    clcnn bench gemm --size 4096 --device cl:0 --variant all
    clcnn bench layers --model lenet5 --batch-size 256 --device cl:0 --png layers.png
"""
from __future__ import annotations

import os

import click

from . import io
from .bench_torch import MODE_HELP
from .errors import ConfigError
from .launch import exit_process

TORCH_OPTION = click.option("--torch", "torch_modes", default="all", show_default=True, metavar="MODE[,MODE]",
                            help="PyTorch modes timed beside clcnn: all (every mode the device has; on a CPU eager "
                            "and compile), none, or a comma list of " + MODE_HELP + ".")


@click.group()
def bench():
    """Time clcnn beside PyTorch on the same hardware (a table with a ratio column)."""


def _bench_devices(device: str | None) -> list[str]:
    return [d.strip() for d in (device or os.environ.get("CLCNN_DEVICE", "auto")).split(",") if d.strip()]


def _check_outputs(**paths) -> None:
    """ConfigError before any timing when an output file (--png, --json) could not be written."""
    for option, path in paths.items():
        if path:
            io.check_writable(path, f"--{option}")


def _report(rows: list[dict], json_path: str | None) -> None:
    from .bench_report import format_table
    click.echo(format_table(rows))
    if json_path:
        io.write_json(json_path, rows)


@bench.command(name="train")
@click.option("--model", default="lenet5", show_default=True, help="A preset (`clcnn models` lists them), a spec string or a JSON file.")
@click.option("--batch-size", default=256, show_default=True, type=int)
@click.option("--device", default=None, help="One id or a comma list (cpu,cl:1): one row each; a+b (cl:0+cl:1) is "
              "one data-parallel group [default: auto].")
@click.option("--split", default="auto", show_default=True, help="A group's split: auto or fractions (0.7,0.3).")
@click.option("--parallel", default="auto", show_default=True, type=click.Choice(["auto", "threads", "mpi"]),
              help="A group (a+b): threads (this process), mpi (one MPI rank per device, rank 0 prints; started "
              "here with mpiexec unless already under one) or auto: mpi when every device is a GPU.")
@click.option("--steps", default=20, show_default=True, type=click.IntRange(min=1),
              help="Training steps per timed round.")
@click.option("--rounds", default=5, show_default=True, type=click.IntRange(min=1),
              help="Rounds (the median is reported).")
@TORCH_OPTION
@click.option("--json", "json_path", default=None, help="Also write the rows (every mode's figure) to this file.")
def bench_train(model, batch_size, device, split, parallel, steps, rounds, torch_modes, json_path):
    """Images/s of a training step (forward, backward, SGD with momentum), clcnn vs PyTorch in each mode; the
    ratio is against the best mode. Also prints clcnn's device launches per step and both sides' peak memory."""
    from .bench import bench_train as run
    from .bench_torch import parse_modes
    from .launch import command_args, launch, plan, world_size
    modes = parse_modes(torch_modes)
    _check_outputs(json=json_path)
    comm, targets = None, _bench_devices(device)
    if world_size() is not None and parallel != "threads":   # an MPI rank: the ranks are the group
        from .distributed import mpi_world
        comm = mpi_world()
    elif "launch" in [plan(parallel, t.split("+")) for t in targets]:
        if len(targets) > 1:
            raise ConfigError("a group that runs as MPI ranks is benchmarked alone: give --device one group")
        exit_process(launch(command_args(click.get_current_context()), len(targets[0].split("+"))))
    rows = [run(model, batch_size, d, steps, rounds, torch_modes=modes if comm is None else ["none"], split=split,
                comm=comm) for d in targets]
    if comm is None or comm.rank == 0:
        _report(rows, json_path)


@bench.command(name="gemm")
@click.option("--size", default=4096, show_default=True, type=int, help="N of the N x N x N FP32 product.")
@click.option("--device", default=None, help="One id or a comma list [default: auto].")
@click.option("--variant", default="auto", show_default=True,
              help="auto (what training uses), all (every kernel variant: the progression), sweep (every tile "
              "config the device can run, fastest first), or one variant.")
@click.option("--rounds", default=5, show_default=True, type=click.IntRange(min=1))
@click.option("--torch", "torch_modes", default="all", show_default=True, type=click.Choice(["all", "none"]),
              help="torch.mm beside clcnn (all) or clcnn alone (none).")
@click.option("--json", "json_path", default=None, help="Also write the rows to this JSON file.")
def bench_gemm(size, device, variant, rounds, torch_modes, json_path):
    """TFLOP/s of C = A @ B, clcnn's GEMM vs torch.mm."""
    _check_outputs(json=json_path)
    from .bench import bench_gemm as run
    rows = [r for d in _bench_devices(device) for r in run(size, d, variant, rounds,
                                                           use_torch=torch_modes != "none")]
    _report(rows, json_path)


@bench.command(name="layers")
@click.option("--model", default="lenet5", show_default=True, help="A preset (`clcnn models` lists them), a spec string or a JSON file.")
@click.option("--batch-size", default=256, show_default=True, type=click.IntRange(min=1))
@click.option("--device", default=None, help="One clcnn device id [default: $CLCNN_DEVICE or auto].")
@click.option("--repeats", default=20, show_default=True, type=click.IntRange(min=1),
              help="Timed runs of each pass (the median is reported).")
@click.option("--torch", "torch_modes", default="all", show_default=True, type=click.Choice(["all", "none"]),
              help="PyTorch's layers beside clcnn's (cuDNN with cudnn.benchmark on a GPU), or clcnn alone.")
@click.option("--png", default="bench_layers.png", show_default=True, help="The bar chart written here.")
@click.option("--json", "json_path", default=None, help="Also write the rows to this JSON file.")
def bench_layers(model, batch_size, device, repeats, torch_modes, png, json_path):
    """Every layer's forward, backward-data and backward-weights time, clcnn vs PyTorch (cuDNN on a GPU):
    a table and a PNG bar chart."""
    from .bench_layers import bench_layers as run, format_layers, save_layers_chart
    _check_outputs(png=png, json=json_path)
    targets = _bench_devices(device)
    if len(targets) != 1 or "+" in targets[0]:
        raise ConfigError(f"bench layers times one device (got --device {device})")
    result = run(model, batch_size, targets[0], repeats, use_torch=torch_modes != "none")
    click.echo(format_layers(result))
    click.echo(f"chart: {save_layers_chart(result, png)}")
    if json_path:
        io.write_json(json_path, result)
