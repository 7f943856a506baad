"""Checkpoints: everything a run needs to continue exactly, in one safetensors file written atomically.

A checkpoint is OUT/checkpoint.safetensors. Its tensors are every NumPy array of the run's state (the model's
state_dict under ``model.``, the optimizer's under ``optimizer.``, each registered object's under its name); its
safetensors metadata holds ``format``, ``clcnn_version``, ``state`` (the rest of the state as JSON, each array
replaced by ``{"__tensor__": name}``) and ``sha256``, the digest of every tensor (name, dtype, shape, bytes)
and of ``state``: a truncated or altered file is refused (DataError), never half-loaded.

    reg = Registry()
    reg.register("optimizer", opt)          # anything with state_dict() / load_state_dict()
    save(out / CHECKPOINT, {"epoch": 2, "step": 0}, reg)
    state = load(out / CHECKPOINT)           # DataError: missing, truncated, corrupted
    reg.load_state_dict(state["objects"])    # ConfigError: an object has no state there
"""
from __future__ import annotations

import hashlib
import json
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import io
from .errors import ConfigError, DataError

CHECKPOINT = "checkpoint.safetensors"
FORMAT = "clcnn-checkpoint/1"
RUN_FILES = ("checkpoint.safetensors", "metrics.jsonl", "run.json", "model.safetensors")   # a previous run's


class Registry:
    """The objects whose state a checkpoint carries, by name: each has ``state_dict()`` (a dict of JSON values
    and NumPy arrays, nested dicts and lists allowed) and ``load_state_dict(d)`` (takes what state_dict gave).

    The training loop registers the optimizer; a learning-rate schedule, a layer's RNG counter or a data
    augmentation RNG registers itself the same way, before the checkpoint is loaded or first saved.
    """

    def __init__(self):
        self._objects: dict = {}

    def register(self, name: str, obj) -> None:
        """Carry ``obj``'s state under ``name`` (a unique string); ValueError for a taken name or an object
        without state_dict/load_state_dict (a programming error)."""
        if name in self._objects:
            raise ValueError(f"checkpoint registry: {name!r} is registered already")
        if not (callable(getattr(obj, "state_dict", None)) and callable(getattr(obj, "load_state_dict", None))):
            raise ValueError(f"checkpoint registry: {name!r} needs state_dict() and load_state_dict()")
        self._objects[name] = obj

    def names(self) -> list[str]:
        """The registered names, in registration order."""
        return list(self._objects)

    def state_dict(self) -> dict:
        """{name: obj.state_dict()} of every registered object."""
        return {name: obj.state_dict() for name, obj in self._objects.items()}

    def load_state_dict(self, states: dict) -> None:
        """Give each registered object its state; ConfigError when the checkpoint's objects are not these."""
        missing, extra = set(self._objects) - set(states), set(states) - set(self._objects)
        if missing or extra:
            raise ConfigError(f"the checkpoint's state is for another run setup (it has no state for "
                              f"{sorted(missing)}; it has state nobody here takes: {sorted(extra)})")
        for name, obj in self._objects.items():
            obj.load_state_dict(states[name])


def _split(obj, key: str, tensors: dict):
    """``obj`` as JSON values with each array moved to ``tensors`` (under its path) and replaced by a reference."""
    if isinstance(obj, np.ndarray):
        if key in tensors:
            raise ValueError(f"checkpoint: two arrays at {key!r}")
        tensors[key] = obj if obj.flags.c_contiguous else obj.copy(order="C")   # (ascontiguousarray makes 0-d 1-d)
        return {"__tensor__": key}
    if isinstance(obj, dict):
        if not all(isinstance(k, str) for k in obj):
            raise TypeError(f"checkpoint: the keys of {key!r} must be strings")
        return {k: _split(v, f"{key}.{k}", tensors) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_split(v, f"{key}.{i}", tensors) for i, v in enumerate(obj)]
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (str, bool, int, float)):
        return obj
    raise TypeError(f"checkpoint: {key!r} is a {type(obj).__name__}, not JSON or a NumPy array")


def _join(obj, tensors: dict):
    """The inverse of ``_split``: references replaced by their arrays."""
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            return tensors[obj["__tensor__"]]
        return {k: _join(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_join(v, tensors) for v in obj]
    return obj


def _digest(tensors: dict, state_json: str) -> str:
    """SHA-256 of every tensor's name, dtype, shape and bytes (by name) and of the state JSON."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        a = tensors[name]
        h.update(f"{name}\0{a.dtype.str}\0{a.shape}\0".encode())
        h.update(memoryview(np.ascontiguousarray(a)).cast("B"))
    h.update(state_json.encode())
    return h.hexdigest()


def save(path, state: dict, registry: Registry | None = None) -> None:
    """Write ``state`` (JSON values and arrays, nested) plus ``registry``'s objects under ``"objects"`` to
    ``path`` atomically (temp file + fsync + rename: the previous checkpoint stays whole until the new one is)."""
    from safetensors.numpy import save as st_save
    from . import __version__
    full = dict(state)
    if registry is not None:
        full["objects"] = registry.state_dict()
    tensors: dict = {}
    state_json = json.dumps({k: _split(v, k, tensors) for k, v in full.items()}, sort_keys=True)
    meta = {"format": FORMAT, "clcnn_version": __version__, "state": state_json,
            "sha256": _digest(tensors, state_json)}
    io.write_atomic(path, st_save(tensors, metadata=meta))


def load(path) -> dict:
    """The state ``save`` wrote (arrays back in place, ``"clcnn_version"`` added). DataError, one line, for a
    missing file, one that is not a clcnn checkpoint, or one that is truncated or corrupted."""
    from safetensors import SafetensorError
    from safetensors.numpy import load as st_load
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"no checkpoint at {path}") from None
    except OSError as exc:
        raise DataError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from None
    try:
        tensors = st_load(raw)
        meta = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")]).get("__metadata__") or {}
    except (SafetensorError, ValueError, UnicodeDecodeError, OverflowError):
        raise DataError(f"checkpoint {path} is truncated or corrupted (not a readable safetensors file)") from None
    if meta.get("format") != FORMAT:
        raise DataError(f"{path} is not a clcnn checkpoint (format {meta.get('format')!r}, expected {FORMAT})")
    state_json = meta.get("state", "")
    if _digest(tensors, state_json) != meta.get("sha256"):
        raise DataError(f"checkpoint {path} is corrupted (its SHA-256 digest does not match its contents)")
    state = _join(json.loads(state_json), tensors)
    state["clcnn_version"] = meta.get("clcnn_version")
    return state


def dataset_identity(info, *splits) -> dict:
    """What identifies the data a run trains on: the data set's name, shape, classes and normalisation, and a
    BLAKE2b digest of each split's images and labels (a changed file or --limit-train changes it)."""
    digests = []
    for split in splits:
        h = hashlib.blake2b(digest_size=16)
        h.update(np.ascontiguousarray(split.images).view(np.uint8).reshape(-1))
        h.update(np.ascontiguousarray(split.labels).view(np.uint8).reshape(-1))
        digests.append(f"{len(split)}:{h.hexdigest()}")
    return {"name": info.name, "input_shape": list(info.input_shape), "num_classes": int(info.num_classes),
            "mean": [float(m) for m in info.mean], "std": [float(s) for s in info.std], "splits": digests}


@dataclass
class EpochState:
    """Where a run stands in the epoch in progress: what a checkpoint saves to continue it exactly.

    Attributes:
        epoch: the epoch in progress (1-based); step: its steps done; seen: their images; global_step: steps
            since the run began (--checkpoint-every counts these).
        loss_sum: the image-weighted loss total read from the device this epoch; pending: steps added to the
            device total since its last read, of batch size ``size``; pending_loss: that total's value.
        seconds: training time of the epoch so far; shuffle: the shuffle Generator's bit_generator.state at
            the epoch's start (the epoch's permutation is drawn from it again on a resume).
    """
    epoch: int = 1
    step: int = 0
    seen: int = 0
    global_step: int = 0
    loss_sum: float = 0.0
    pending: int = 0
    size: int = 0
    pending_loss: float = 0.0
    seconds: float = 0.0
    shuffle: dict = field(default_factory=dict)


def check_resumable(saved: dict, cfg, spec: dict, identity: dict) -> None:
    """ConfigError, one line, when the model built now or the data loaded now is not the checkpoint's."""
    folder = cfg.resume
    if json.dumps(saved.get("spec"), sort_keys=True) != json.dumps(spec, sort_keys=True):
        raise ConfigError(f"--resume {folder}: the checkpoint holds another model than {cfg.model!r} builds "
                          "now (its layers or shapes differ)")
    theirs = saved.get("dataset") or {}
    for key in ("name", "input_shape", "num_classes", "mean", "std", "splits"):
        if theirs.get(key) != identity.get(key):
            what = {"splits": "images or labels", "mean": "normalisation", "std": "normalisation"}.get(key, key)
            raise ConfigError(f"--resume {folder}: the data set differs from the one the run trained on (its "
                              f"{what}: {theirs.get(key)} then, {identity.get(key)} now)"[:300])


def prepare_out(out: Path, resuming: bool) -> None:
    """Make the run folder and check it is writable; a fresh run refuses a folder holding a previous run (its
    metrics would be mixed with the new ones). ConfigError naming the folder."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=out).close()   # writable: fail now, not after the first epoch
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot write there ({exc.strerror or exc})") from None
    held = [name for name in RUN_FILES if (out / name).exists()]
    if held and not resuming:
        raise ConfigError(f"--out {out} holds a previous run ({', '.join(held)}): continue it with "
                          f"`clcnn train --resume {quote(out)}`, or pick another --out (or remove it)")


def write_run(out: Path, config: dict, command, resumed: tuple | None = None) -> None:
    """OUT/run.json: the command line, the configuration and the clcnn version of the run; a resume adds its
    command and where it took over to "resumes"."""
    from . import __version__
    command = list(sys.argv if command is None else command)
    path = out / "run.json"
    if resumed is None:
        run = {"command": command, "config": config, "clcnn_version": __version__,
               "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "resumes": []}
    else:
        try:
            run = json.loads(path.read_text())
            if not isinstance(run, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as exc:   # keep what is left of it beside the new one: nothing is lost
            kept = next(p for i in range(1 << 20)
                        if not (p := path.with_name("run.json.damaged" + (f".{i}" if i else ""))).exists())
            if path.exists():
                path.replace(kept)
            import warnings
            warnings.warn(f"{path} could not be read ({exc}); the first run's command is unknown in the new one"
                          + (f" (the old file is kept as {kept})" if kept.exists() else ""), RuntimeWarning,
                          stacklevel=2)
            run = {"command": None, "resumes": []}
        run["config"] = config
        run.setdefault("resumes", []).append({"command": command, "epoch": resumed[0], "step": resumed[1],
                                              "clcnn_version": __version__,
                                              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    io.write_json(path, run)


def write_metrics(out: Path, rows: list[dict]) -> None:
    """OUT/metrics.jsonl rewritten (atomically) to hold exactly ``rows``, one strict JSON object a line."""
    io.write_atomic(out / "metrics.jsonl", "".join(io.dumps(r) + "\n" for r in rows).encode())


def quote(path) -> str:
    """``path`` as a shell word (for the resume hint)."""
    return shlex.quote(str(path))
