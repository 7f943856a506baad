"""Training-time augmentation on the host: ``--augment crop,flip,erase`` parsed into an Augment pipeline whose
per-image parameters are drawn from a seeded, resumable stream; the pixels are moved by clcnn.cpu.augment.

    aug = Augment.parse("crop:4,flip,erase", seed=0, fill=-mean / std)
    x = aug(split.images, batch_index)          # float32 (N, C, H, W), a new array
    state = aug.state_dict(); aug.load_state_dict(state)   # where the stream stands (checkpoints)

Reproducible whatever the device count: the parameters of the k-th batch are drawn from
``Generator(PCG64(SeedSequence([seed, 0x617567, k])))`` for the whole global batch, image by image in batch
order, so the image at position i of batch k gets the same crop, flip and box whichever data-parallel shard (or
rank, ``shard=(a, b)``) augments it, and a run resumed at batch k draws what the uninterrupted run drew.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import ConfigError

STREAM = 0x617567   # "aug": keeps this stream apart from the other users of the run's seed
OPS = {"crop": "crop[:padding] (default 4)", "flip": "flip[:p] (default 0.5)",
       "erase": "erase[:p] (default 0.5; scale 0.02-0.33, ratio 0.3-3.3, value 0)"}
ERASE_SCALE, ERASE_RATIO, ERASE_TRIES = (0.02, 0.33), (0.3, 3.3), 10   # torchvision.transforms.RandomErasing


@dataclass(frozen=True)
class AugmentSpec:
    """What ``--augment`` asks for: crop padding (0: no crop), flip probability, erasing probability."""
    crop: int = 0
    flip: float = 0.0
    erase: float = 0.0

    def __str__(self) -> str:
        parts = ([f"crop:{self.crop}"] if self.crop else []) + ([f"flip:{self.flip:g}"] if self.flip else []) \
            + ([f"erase:{self.erase:g}"] if self.erase else [])
        return ",".join(parts) or "none"

    @property
    def active(self) -> bool:
        """Whether any augmentation is asked for."""
        return bool(self.crop or self.flip or self.erase)


def _number(item: str, pos: int, text: str, kind):
    try:
        return kind(text)
    except ValueError:
        raise ConfigError(f"--augment: {item!r} (item {pos}) needs a {kind.__name__} after ':' (got {text!r})") \
            from None


def parse_augment(text: str | None) -> AugmentSpec:
    """``"crop,flip,erase"`` / ``"crop:2,flip:0.5,erase:0.25"`` / ``""`` or ``"none"`` -> AugmentSpec.

    Raises ConfigError naming the item and its position (1-based) for an unknown, repeated or out-of-range one.
    """
    text = (text or "").strip()
    if text.lower() in ("", "none"):
        return AugmentSpec()
    found = {}
    for pos, item in enumerate(text.split(","), 1):
        name, _, arg = item.strip().partition(":")
        name = name.strip().lower()
        if name not in OPS:
            raise ConfigError(f"--augment: {item.strip()!r} (item {pos}) is not an augmentation (known: "
                              f"{', '.join(OPS.values())})")
        if name in found:
            raise ConfigError(f"--augment: {name!r} (item {pos}) is given twice")
        if name == "crop":
            value = _number(item, pos, arg, int) if arg else 4
            if value < 1:
                raise ConfigError(f"--augment: {item.strip()!r} (item {pos}): the padding must be >= 1")
        else:
            value = _number(item, pos, arg, float) if arg else 0.5
            if not 0 < value <= 1:
                raise ConfigError(f"--augment: {item.strip()!r} (item {pos}): the probability must be in (0, 1]")
        found[name] = value
    return AugmentSpec(**found)


def erase_boxes(rng: np.random.Generator, n: int, h: int, w: int, p: float) -> np.ndarray:
    """int32 (n, 4) (top, left, height, width) of random-erasing rectangles, height 0 for an image left alone.

    torchvision's RandomErasing.get_params (Zhong et al., "Random Erasing Data Augmentation", 2017): with
    probability p, up to 10 tries of an area in scale*(h*w) and an aspect ratio log-uniform in ratio; the first
    try whose box fits strictly inside the image is placed uniformly; none fits: the image is left alone.
    """
    boxes = np.zeros((n, 4), np.int32)
    erase = rng.random(n) < p
    area = h * w * rng.uniform(*ERASE_SCALE, size=(n, ERASE_TRIES))
    aspect = np.exp(rng.uniform(math.log(ERASE_RATIO[0]), math.log(ERASE_RATIO[1]), size=(n, ERASE_TRIES)))
    bh = np.rint(np.sqrt(area * aspect)).astype(np.int64)
    bw = np.rint(np.sqrt(area / aspect)).astype(np.int64)
    fits = (bh < h) & (bw < w) & (bh > 0) & (bw > 0)
    first = np.argmax(fits, axis=1)
    ok = erase & fits[np.arange(n), first]
    u = rng.random((n, 2))   # one pair per image, used where a box is placed
    rows = np.flatnonzero(ok)
    eh, ew = bh[rows, first[rows]], bw[rows, first[rows]]
    boxes[rows, 0] = (u[rows, 0] * (h - eh + 1)).astype(np.int64)   # uniform in [0, h - eh]
    boxes[rows, 1] = (u[rows, 1] * (w - ew + 1)).astype(np.int64)
    boxes[rows, 2], boxes[rows, 3] = eh, ew
    return boxes


class Augment:
    """The augmentation pipeline of a training run, over a stream of mini-batches.

    Args:
        spec: an AugmentSpec (or the ``--augment`` text, parsed).
        seed: the run's seed; the k-th call draws from SeedSequence([seed, STREAM, k]).
        fill: (C,) padding value per channel (default 0; for normalised images, -mean/std is a black pixel).
    Shape:
        images: float32 (S, C, H, W) -> the batch float32 (N, C, H, W), N = len(index).
    State: ``state_dict()`` = {"seed", "batches"} (batches drawn so far); ``load_state_dict`` resumes there.
    Raises: ConfigError without Numba (the kernel's), or for a padding larger than the image (at the first
    batch).
    """

    def __init__(self, spec: AugmentSpec | str, seed: int = 0, fill=None):
        self.spec = parse_augment(spec) if isinstance(spec, str) or spec is None else spec
        self.seed, self.batches = int(seed), 0
        self.fill = None if fill is None else np.asarray(fill, np.float32).reshape(-1)
        try:
            import importlib
            importlib.import_module(".cpu.augment", __package__)   # Numba: a clear error now, not in the loader
        except ImportError as exc:
            raise ConfigError(f"--augment needs Numba, which cannot be imported here ({exc}): pip install numba") \
                from None

    @classmethod
    def parse(cls, text: str, seed: int = 0, fill=None) -> "Augment":
        """The pipeline of an ``--augment`` text (ConfigError naming a bad item)."""
        return cls(parse_augment(text), seed, fill)

    def __repr__(self) -> str:
        return f"Augment({str(self.spec)!r}, seed={self.seed}, batches={self.batches})"

    def state_dict(self) -> dict:
        """{"seed": int, "batches": int}: JSON-able; where the parameter stream stands."""
        return {"seed": self.seed, "batches": self.batches}

    def load_state_dict(self, state: dict) -> None:
        """Resume the stream of ``state_dict()`` (the next call draws batch ``state["batches"]``'s parameters)."""
        self.seed, self.batches = int(state["seed"]), int(state["batches"])

    def draw(self, n: int, shape: tuple, batch: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(offsets (n, 2), flips (n,), boxes (n, 4)) for a batch of n images (C, H, W): batch number ``batch``
        of the stream, or (None) the next one, advancing the stream."""
        _, h, w = shape
        pad = self.spec.crop
        if pad and (pad >= h or pad >= w):
            raise ConfigError(f"--augment crop:{pad}: the padding must be smaller than the {h}x{w} images")
        if batch is None:
            batch, self.batches = self.batches, self.batches + 1
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, STREAM, int(batch)])))
        offsets = rng.integers(-pad, pad + 1, size=(n, 2)).astype(np.int32) if pad else np.zeros((n, 2), np.int32)
        flips = (rng.random(n) < self.spec.flip).astype(np.uint8) if self.spec.flip else np.zeros(n, np.uint8)
        boxes = erase_boxes(rng, n, h, w, self.spec.erase) if self.spec.erase else np.zeros((n, 4), np.int32)
        return offsets, flips, boxes

    def __call__(self, images: np.ndarray, index: np.ndarray, shard: tuple[int, int] | None = None,
                 batch: int | None = None) -> np.ndarray:
        """The augmented batch ``images[index]`` (or its rows ``shard`` = (a, b) alone, as one rank's shard:
        the same values as rows a..b of the whole batch). ``batch``: draw batch ``batch``'s parameters and leave
        the stream where it is (a prefetching loader draws ahead and advances ``batches`` as the loop consumes);
        None: draw the next batch's and advance."""
        index = np.asarray(index, np.int64).reshape(-1)
        offsets, flips, boxes = self.draw(len(index), images.shape[1:], batch)
        a, b = shard if shard is not None else (0, len(index))
        fill = self.fill if self.fill is not None else np.zeros(images.shape[1], np.float32)
        from .cpu.augment import augment
        return augment(images, index[a:b], offsets[a:b], flips[a:b], boxes[a:b], fill)
