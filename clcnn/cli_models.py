"""`clcnn models`: the presets with their parameter counts, or one model's per-layer summary (Keras's summary()).

    clcnn models                                   # name, input shape, parameters, spec, description
    clcnn models fashion                           # each layer's output shape and parameter count
    clcnn models c32k3p1-bn-relu-mp2-fc --input-shape 3x32x32 --num-classes 100
"""
from __future__ import annotations

import click

from .errors import ConfigError
from .models import PRESETS, get_model


def parse_shape(text: str) -> tuple:
    """``"1x28x28"`` (or ``"784"``) -> (1, 28, 28); ConfigError naming --input-shape otherwise."""
    try:
        shape = tuple(int(v) for v in str(text).lower().replace(",", "x").split("x"))
    except ValueError:
        shape = ()
    if len(shape) not in (1, 3) or min(shape) < 1:
        raise ConfigError(f"--input-shape takes CxHxW (or F) of positive sizes, e.g. 1x28x28 (got {text!r})")
    return shape


def _count(model) -> int:
    return sum(p.size for _, p in model.named_parameters())


def preset_table() -> str:
    """One line per preset: name, default input shape, parameters (10 classes), description, spec."""
    rows = [f"{'preset':<12} {'input':<8} {'parameters':>10}  description / spec"]
    for name, (spec, shape, what) in PRESETS.items():
        try:
            count = f"{_count(get_model(name, shape, 10)):,}"
        except ConfigError:   # a layer this clcnn lacks
            count = "n/a"
        rows.append(f"{name:<12} {'x'.join(map(str, shape)):<8} {count:>10}  {what}")
        rows.append(f"{'':<32}{spec}")
    return "\n".join(rows)


@click.command(name="models")
@click.argument("name_or_spec", required=False)
@click.option("--input-shape", default=None, help="CxHxW the model is built for [default: the preset's, else "
              "1x28x28].")
@click.option("--num-classes", default=10, show_default=True, type=int)
def models(name_or_spec, input_shape, num_classes):
    """List the presets, or show one model (a preset, a spec string or a JSON file) layer by layer."""
    if name_or_spec is None:
        click.echo(preset_table())
        return
    shape = parse_shape(input_shape) if input_shape else None
    model = get_model(name_or_spec, input_shape=shape, num_classes=num_classes)
    from .specs import to_spec
    try:
        click.echo(f"spec: {to_spec(model)}")
    except ConfigError:   # a JSON model with a layer the grammar cannot write
        pass
    click.echo(model.summary())
