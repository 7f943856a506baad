"""Augmentation (clcnn.cpu.augment's kernel, clcnn.augment's pipeline) and the prefetching loader: the kernel
against a NumPy reference (exact), seeded reproducibility, shard independence, resumable state, clean shutdown."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from clcnn.augment import Augment, AugmentSpec, erase_boxes, parse_augment
from clcnn.errors import ConfigError
from clcnn.loader import Loader, batches


class Split:
    """The two attributes of data.Split the loader reads."""
    def __init__(self, images, labels):
        self.images, self.labels = images, labels

    def __len__(self):
        return len(self.labels)


def reference(src, index, offsets, flips, boxes, fill, value=0.0):
    """NumPy: zero-pad by p (with fill), take the window at (p + dy, p + dx), mirror, erase the box."""
    n, (c, h, w) = len(index), src.shape[1:]
    p = int(max(np.abs(offsets).max(initial=0), 1))
    out = np.empty((n, c, h, w), np.float32)
    for i, s in enumerate(index):
        padded = np.empty((c, h + 2 * p, w + 2 * p), np.float32)
        padded[...] = np.asarray(fill, np.float32).reshape(c, 1, 1)
        padded[:, p:p + h, p:p + w] = src[s]
        dy, dx = offsets[i]
        img = padded[:, p + dy:p + dy + h, p + dx:p + dx + w]
        img = img[:, :, ::-1] if flips[i] else img
        top, left, bh, bw = boxes[i]
        img = img.copy()
        img[:, top:top + bh, left:left + bw] = value
        out[i] = img
    return out


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).standard_normal((20, 3, 9, 7)).astype(np.float32)


@pytest.mark.parametrize("spec", ["crop:3", "flip", "erase:1", "crop:2,flip,erase"])
def test_kernel_matches_numpy(images, spec):
    from clcnn.cpu.augment import augment
    aug = Augment(spec, seed=3, fill=[-1.0, 0.5, 2.0])
    index = np.array([4, 0, 19, 4, 7, 11, 2, 3, 5, 6, 8, 9])
    offsets, flips, boxes = aug.draw(len(index), images.shape[1:])
    got = augment(images, index, offsets, flips, boxes, aug.fill)
    np.testing.assert_array_equal(got, reference(images, index, offsets, flips, boxes, aug.fill))
    kind = [item.split(":")[0] for item in spec.split(",")]
    assert ("crop" in kind) == bool(np.abs(offsets).any())
    assert ("flip" in kind) == bool(flips.any())
    assert ("erase" in kind) == bool(boxes[:, 2].any())


def test_kernel_rejects_out_of_bounds(images):
    from clcnn.cpu.augment import augment
    z = np.zeros((1, 2), np.int32)
    with pytest.raises(ValueError, match="box"):
        augment(images, [0], z, [0], [[5, 0, 5, 1]], np.zeros(3))
    with pytest.raises(ValueError, match="index"):
        augment(images, [20], z, [0], np.zeros((1, 4)), np.zeros(3))


def test_erase_boxes_follow_random_erasing():
    rng = np.random.default_rng(1)
    boxes = erase_boxes(rng, 4000, 28, 28, 0.5)
    on = boxes[:, 2] > 0
    assert 0.45 < on.mean() < 0.55
    area = boxes[on, 2] * boxes[on, 3] / 784
    assert area.min() >= 0.015 and area.max() <= 0.36   # scale (0.02, 0.33), rounding of the sides
    assert (boxes[on, 0] + boxes[on, 2] <= 28).all() and (boxes[on, 1] + boxes[on, 3] <= 28).all()


def test_seeded_and_resumable(images):
    index = np.arange(16) % 20
    a, b = Augment("crop,flip,erase", seed=5), Augment("crop,flip,erase", seed=5)
    first = [a(images, index) for _ in range(3)]
    np.testing.assert_array_equal(first[0], b(images, index))
    assert not np.array_equal(first[0], first[1])   # a new draw each batch
    assert not np.array_equal(first[0], Augment("crop,flip,erase", seed=6)(images, index))
    state = b.state_dict()
    assert state == {"seed": 5, "batches": 1}
    c = Augment("crop,flip,erase", seed=0)
    c.load_state_dict(state)
    np.testing.assert_array_equal(c(images, index), first[1])
    np.testing.assert_array_equal(b(images, index), first[1])


def test_shards_equal_the_whole_batch(images):
    index = np.arange(15)
    whole = Augment("crop:2,flip,erase", seed=9)(images, index)
    for cuts in ([0, 7, 15], [0, 1, 5, 15]):
        parts = [Augment("crop:2,flip,erase", seed=9)(images, index, shard=(a, b)) for a, b in zip(cuts, cuts[1:])]
        np.testing.assert_array_equal(np.concatenate(parts), whole)


@pytest.mark.parametrize("text, match", [("crop,blur", r"'blur' \(item 2\)"), ("flip,flip", "twice"),
                                         ("crop:x", r"'crop:x' \(item 1\).*int"), ("erase:1.5", r"\(0, 1\]"),
                                         ("crop:0", ">= 1")])
def test_parse_errors(text, match):
    with pytest.raises(ConfigError, match=match):
        parse_augment(text)


def test_parse():
    assert parse_augment("crop,flip,erase") == AugmentSpec(4, 0.5, 0.5)
    assert parse_augment(" crop:2 , erase:0.25") == AugmentSpec(2, 0.0, 0.25)
    assert parse_augment("none") == AugmentSpec() and not parse_augment("").active
    assert str(parse_augment("flip,crop:2")) == "crop:2,flip:0.5"
    with pytest.raises(ConfigError, match="smaller than the 9x7"):
        Augment("crop:7")(np.zeros((2, 1, 9, 7), np.float32), [0, 1])


def test_loader_order_and_augmentation(images):
    labels = np.arange(20, dtype=np.int32)
    split = Split(images, labels)
    rng1, rng2 = np.random.default_rng(4), np.random.default_rng(4)
    aug1, aug2 = Augment("crop,flip", seed=2), Augment("crop,flip", seed=2)
    got = list(batches(split, 6, rng1, aug1, depth=1))
    order = rng2.permutation(20)
    assert [len(y) for _, y in got] == [6, 6, 6, 2]
    for k, (x, y) in enumerate(got):
        idx = order[6 * k:6 * k + 6]
        np.testing.assert_array_equal(y, labels[idx])
        np.testing.assert_array_equal(x, aug2(images, idx))
    assert rng1.random() == rng2.random()   # the shuffle stream is where data.batches leaves it
    plain = list(batches(split, 8))
    np.testing.assert_array_equal(np.concatenate([x for x, _ in plain]), images)


def test_loader_resumes_mid_epoch(images):
    """A checkpoint taken after k batches (the thread has drawn further ahead) resumes the same batches."""
    split = Split(images, np.arange(20, dtype=np.int32))
    order = np.random.default_rng(8).permutation(20)
    whole = list(batches(split, 3, augment=Augment("crop,erase", seed=1), order=order))
    aug = Augment("crop,erase", seed=1)
    loader = batches(split, 3, augment=aug, depth=4, order=order)
    head = [next(loader), next(loader)]
    state = dict(aug.state_dict())
    loader.close()
    assert state["batches"] == 2 and loader.stats["batches"] == 2
    again = Augment("crop,erase", seed=0)
    again.load_state_dict(state)
    tail = list(batches(split, 3, augment=again, order=order, start=2))
    assert len(head) + len(tail) == len(whole) == 7 and again.batches == 7
    for (x, y), (wx, wy) in zip(head + tail, whole):
        np.testing.assert_array_equal(x, wx)
        np.testing.assert_array_equal(y, wy)


def test_loader_shuts_down_on_errors(images):
    split = Split(images, np.zeros(20, np.int32))
    before = threading.active_count()
    with pytest.raises(RuntimeError, match="consumer"):
        for _ in batches(split, 2, depth=1):
            raise RuntimeError("consumer")
    loader = Loader(split, 2, depth=1)
    next(loader)
    loader.close()
    assert not loader._thread.is_alive() and list(loader) == []

    def broken(imgs, idx, batch=None):
        raise ValueError("in the thread")
    broken.batches = 0
    with pytest.raises(ValueError, match="in the thread"):
        list(batches(split, 4, augment=broken))
    assert threading.active_count() == before


def test_training_with_augment_resumes_exactly(tmp_path, monkeypatch):
    """--augment in a run stopped mid-epoch (the loader ahead of the loop) and resumed: the same weights as the
    uninterrupted run, and not those of a run without augmentation."""
    import signal

    from clcnn import io, signals
    from clcnn.train_config import TrainConfig, resume_config
    from clcnn.training import train
    from test_checkpoint import quiet, tiny_dataset
    data = tiny_dataset(tmp_path, n_train=80, n_test=16)

    def run(name, augment="crop:2,flip,erase", **kw):
        cfg = TrainConfig(data_dir=str(data), model="c4k3-relu-mp2-fc", device="cpu", epochs=2, batch_size=16,
                          momentum=0.9, augment=augment, out=str(tmp_path / name), **kw)
        train(cfg, log=quiet, show_progress=False)
        return io.load_safetensors(tmp_path / name / "model.safetensors")[0]

    whole, plain = run("whole"), run("plain", augment="")
    asked = {"n": 0}

    def stop_at_the_seventh_step(self, model=None):
        asked["n"] += 1
        self.signum = signal.SIGINT if asked["n"] == 6 else self.signum   # epoch 2, step 2 (5 steps an epoch)
        return bool(self.signum)
    monkeypatch.setattr(signals.StopRequest, "requested", stop_at_the_seventh_step)
    with pytest.raises(signals.Interrupted):
        run("resumed")
    monkeypatch.undo()
    train(resume_config(TrainConfig(resume=str(tmp_path / "resumed")), given=["resume"]), log=quiet,
          show_progress=False)
    resumed = io.load_safetensors(tmp_path / "resumed" / "model.safetensors")[0]
    assert all(np.array_equal(resumed[k], whole[k]) for k in whole)
    assert not all(np.array_equal(plain[k], whole[k]) for k in whole)
