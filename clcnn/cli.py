"""The `clcnn` command line: devices, train, eval. User errors become one line on stderr and exit status 2."""
from __future__ import annotations

import json
import os
import sys
import warnings

import click

from . import data
from .backends import list_devices
from .signals import Interrupted
from .errors import ClcnnError, ConfigError, DeviceError
from .launch import exit_process

def _one_line(exc: Exception) -> str:
    """A multi-line error (an OpenCL build log) as one line: its headline plus the first compiler error."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()] or [type(exc).__name__]
    if len(lines) == 1 or os.environ.get("CLCNN_DEBUG"):
        return " ".join(lines) if len(lines) == 1 else str(exc)
    detail = next((ln for ln in lines[1:] if ln.lower().startswith("error") or ": error" in ln.lower()), lines[1])
    return f"{lines[0].rstrip(':')}: {detail} (CLCNN_DEBUG=1 shows the full log)"


def _is_driver_error(exc: Exception) -> bool:
    """A failure raised by PyOpenCL while running (out of resources, lost device): a device problem."""
    return type(exc).__module__.split(".")[0] == "pyopencl"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main():
    """Train convolutional networks with clcnn's own OpenCL and Numba kernels."""


def _check(dev) -> str:
    """"ok", or why the device cannot run clcnn's kernels (first line of the error)."""
    from .backends import get_backend
    try:
        get_backend(dev.id).self_test()
        return "ok"
    except Exception as exc:  # any driver failure is reported, not raised: this is a diagnostic listing
        lines = [ln.strip() for ln in str(exc).splitlines() if "error" in ln.lower()] or [str(exc).strip()]
        return f"unusable: {lines[-1][:160]}"


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
@click.option("--check", is_flag=True, help="Build and run a small kernel on each device and report the result.")
def devices(as_json, check):
    """List every device: `cpu` (Numba) and `cl:N` for each OpenCL device of every platform."""
    devs = list_devices()
    status = {d.id: _check(d) for d in devs} if check else {}
    if as_json:
        rows = [{"id": d.id, "name": d.name, "backend": d.backend, "type": d.type, "platform": d.platform,
                 "version": d.version, **({"status": status[d.id]} if check else {})} for d in devs]
        click.echo(json.dumps(rows, indent=2))
        return
    for d in devs:
        click.echo(f"{d}  {status[d.id]}" if check else str(d))


@main.command()
@click.option("--dataset", default="fashion-mnist", show_default=True, help=data.DATASETS_HELP + ".")
@click.option("--data-dir", default=None, help="Folder searched first for the data set's files, and downloaded "
              "into (else $CLCNN_DATA/NAME, ~/.cache/clcnn/NAME, /usr/share/datasets/NAME).")
@click.option("--download/--no-download", default=True, show_default=True,
              help="Fetch a known data set's official files (SHA-256 checked) when they are nowhere to be found.")
@click.option("--val-fraction", default=0.0, type=float, help="Hold out this share of the training images "
              "(drawn with --seed) as a validation split, reported beside the test split.")
@click.option("--test-fraction", default=0.1, show_default=True, type=float,
              help="folder: with no test/, the share of the images cut (fixed seed) as the test split.")
@click.option("--image-size", default=None, metavar="HxW",
              help="folder: resize every image to H x W  [default: the first training image's].")
@click.option("--channels", default=None, type=int,
              help="folder: 1 (grey) or 3 (RGB)  [default: the first training image's].")
@click.option("--model", default="fashion", show_default=True, help="A preset (`clcnn models` lists them), a spec "
              "string (c32k3p1-bn-relu-mp2-fc) or a JSON file.")
@click.option("--device", default=None, help="auto | cpu | cl:N, or several (cl:0,cpu) to split each mini-batch "
              "across them  [default: $CLCNN_DEVICE or auto]")
@click.option("--split", default="auto", show_default=True,
              help="With several devices: auto (by measured speed) or one fraction per device (0.7,0.3).")
@click.option("--parallel", default="auto", show_default=True, type=click.Choice(["auto", "threads", "mpi"]),
              help="With several devices: threads (this process, any mix of devices), mpi (one MPI rank per "
              "device, started here with mpiexec unless already under one), or auto: mpi when every device is "
              "a GPU.")
@click.option("--epochs", default=1, show_default=True, type=int)
@click.option("--batch-size", default=64, show_default=True, type=int)
@click.option("--optimizer", default="sgd", show_default=True, type=click.Choice(["sgd", "adam", "adamw"]),
              help="torch.optim's SGD, Adam or AdamW rule, with its state on the device.")
@click.option("--lr", default=None, type=float, help="Learning rate (the peak of onecycle)  [default: 0.05 for sgd, "
              "0.001 for adam and adamw]")
@click.option("--momentum", default=0.0, show_default=True, type=float, help="sgd: momentum.")
@click.option("--nesterov", is_flag=True, help="sgd: Nesterov momentum (needs --momentum above 0).")
@click.option("--betas", default="0.9,0.999", show_default=True, help="adam, adamw: beta1,beta2.")
@click.option("--eps", default=1e-8, show_default=True, type=float, help="adam, adamw: the denominator's epsilon.")
@click.option("--weight-decay", default=None, type=float, help="L2 penalty (adamw: decoupled weight decay)  "
              "[default: 0, adamw: 0.01]")
@click.option("--lr-schedule", default="none", show_default=True,
              type=click.Choice(["none", "step", "cosine", "onecycle"]),
              help="Learning rate per step: step (x --lr-gamma every --lr-step-size epochs), cosine (to --lr-min at "
              "the end), onecycle (PyTorch's 1cycle with --lr as max_lr; it also cycles sgd's momentum or adam's "
              "beta1 between 0.95 and 0.85, except for sgd with --momentum 0).")
@click.option("--lr-step-size", default=1.0, show_default=True, type=float, help="step: epochs between decays.")
@click.option("--lr-gamma", default=0.1, show_default=True, type=float, help="step: the decay factor.")
@click.option("--lr-min", default=0.0, show_default=True, type=float, help="cosine: the final learning rate.")
@click.option("--warmup-epochs", default=0.0, show_default=True, type=float,
              help="A linear warm-up over this many epochs (fractions allowed) before the schedule.")
@click.option("--warmup-start-factor", default=1.0 / 3, show_default="1/3", type=float,
              help="The warm-up's first learning rate as a fraction of --lr.")
@click.option("--label-smoothing", default=0.0, show_default=True, type=float,
              help="Cross-entropy label smoothing in [0, 1], as torch.nn.CrossEntropyLoss.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--limit-train", default=None, type=int, help="Train on the first N training images only.")
@click.option("--augment", default="", help="Augment the training images on the loader thread: crop[:padding] "
              "(4), flip[:p] (0.5), erase[:p] (0.5), comma-separated, e.g. crop,flip,erase  [default: none]")
@click.option("--out", default=None, help="Output folder [default: runs/<timestamp>].")
@click.option("--checkpoint-every", default=None, type=int,
              help="Also checkpoint every N steps (OUT/checkpoint.safetensors is written every epoch anyway).")
@click.option("--resume", default=None, metavar="DIR", help="Continue the run in DIR exactly where its checkpoint "
              "stands, with its own settings (--epochs, --device may change).")
@click.option("--no-progress", is_flag=True, help="No progress bar (nor progress lines).")
def train(no_progress, **kwargs):
    """Train a model; writes OUT/metrics.jsonl (one line per epoch), OUT/model.safetensors,
    OUT/checkpoint.safetensors and OUT/run.json. Ctrl-C saves a checkpoint and prints how to resume."""
    from .train_config import TrainConfig, check_given, resume_config
    from .training import train as run
    cfg = TrainConfig(**kwargs)
    ctx = click.get_current_context()
    given = [k for k in kwargs if ctx.get_parameter_source(k) == click.core.ParameterSource.COMMANDLINE]
    from .launch import command_args, launch, plan, world_size
    if cfg.resume:   # the run's own settings, with the flags typed now where a resume may change them
        cfg = resume_config(cfg, given)
    elif world_size() is None:   # (an MPI rank clcnn started gets every option spelled out: checked before)
        check_given(cfg, given)
    if cfg.device is None:
        cfg.device = os.environ.get("CLCNN_DEVICE", "auto")
    cfg.validate()
    from .backends import resolve_device
    if world_size() is None:   # under MPI each rank resolves its own (--device auto: its host's GPUs)
        for dev in cfg.devices():
            resolve_device(dev)
    if plan(cfg.parallel, cfg.devices()) == "launch":   # this command again, as one MPI rank per device
        exit_process(launch(command_args(click.get_current_context()), len(cfg.devices())))
    tty = sys.stderr.isatty() or os.environ.get("CLCNN_PROGRESS") == "1"   # set by launch for rank 0's terminal
    run(cfg, log=click.echo, show_progress="off" if no_progress else "bar" if tty else "lines")


def _whole_numbers(flag: str, text: str) -> list[int]:
    """"64,256" -> [64, 256]; ConfigError naming ``flag`` for anything else."""
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{flag} takes comma-separated whole numbers (got {text!r})") from None


@main.command()
@click.option("--device", default=None, help="auto | cl:N  [default: $CLCNN_DEVICE or auto]")
@click.option("--model", default="lenet5,cifar", show_default=True, help="Presets whose GEMM shapes are tuned.")
@click.option("--batch-size", default="256", show_default=True, help="Batch sizes, comma-separated.")
@click.option("--repeats", default=5, show_default=True, type=click.IntRange(min=1),
              help="Timed runs per candidate (median).")
@click.option("--max-candidates", default=None, type=click.IntRange(min=1),
              help="Try only the first N candidates per shape.")
@click.option("--gemm-size", default="", help="Also tune N x N x N products (what `bench gemm` times), e.g. 4096.")
def tune(device, model, batch_size, repeats, max_candidates, gemm_size):
    """Search kernel configs for a device and save the winners; later runs load them with no search."""
    from .tune import tune as run
    models = [m.strip() for m in model.split(",") if m.strip()]
    run(device, models, _whole_numbers("--batch-size", batch_size), repeats, max_candidates, log=click.echo,
        gemm_sizes=_whole_numbers("--gemm-size", gemm_size))


from .cli_eval import evaluate as _eval_command  # noqa: E402  (commands in their own modules)
from .cli_datasets import datasets as _datasets_command  # noqa: E402
from .cli_export import export as _export_command  # noqa: E402
from .cli_models import models as _models_command  # noqa: E402
from .cli_plot import plot as _plot_command  # noqa: E402
from .cli_predict import predict as _predict_command  # noqa: E402
from .cli_bench import bench as _bench_command  # noqa: E402

main.add_command(_eval_command)
main.add_command(_predict_command)
main.add_command(_export_command)
main.add_command(_plot_command)
main.add_command(_models_command)
main.add_command(_datasets_command)
main.add_command(_bench_command)


def run():
    """Entry point: click's own errors and the user errors of clcnn.errors (and PyOpenCL's driver failures, a
    device problem) end as one `clcnn: error: ...` line, exit status 2; anything else is a bug and raises."""
    warnings.filterwarnings("default")
    warnings.formatwarning = (   # one line each
        lambda message, *_args, **_kw: f"clcnn: warning: {str(message).removeprefix('clcnn: ')}\n")
    try:
        main.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("clcnn: aborted", err=True)
        exit_process(130)
    except click.ClickException as exc:
        click.echo(f"clcnn: error: {exc.format_message()}", err=True)
        exit_process(exc.exit_code)
    except Interrupted as exc:   # SIGINT/SIGTERM in training: a checkpoint is saved; exit 128 + the signal
        click.echo(f"clcnn: {exc}", err=True)
        exit_process(exc.exit_code)
    except ClcnnError as exc:
        click.echo(f"clcnn: error: {_one_line(exc)}", err=True)
        exit_process(2)
    except MemoryError:   # a batch or model too big for this host (docs/CHECKS.md): the user's to size
        click.echo("clcnn: error: out of host memory: use a smaller --batch-size or model", err=True)
        exit_process(2)
    except Exception as exc:
        if not _is_driver_error(exc):
            raise
        click.echo(f"clcnn: error: {_one_line(DeviceError(f'the device failed: {exc}'))}", err=True)
        exit_process(2)
    except KeyboardInterrupt:
        click.echo("clcnn: interrupted", err=True)
        exit_process(130)


if __name__ == "__main__":
    run()
