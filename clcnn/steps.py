"""The computation of a placed model: forward, loss, backward, optimizer step, and data-parallel shards, each
step recorded once and replayed after (clcnn.recording). Sequential inherits it."""
from __future__ import annotations

import numpy as np

from .errors import ConfigError, ShapeError


def labels_int32(y) -> np.ndarray:
    """Class labels ``y`` as contiguous int32 (N,); ShapeError for values that are not whole numbers or lie outside
    int32 (a plain cast would truncate 1.5 to 1 and wrap 2**32 + 1 to 1: a wrong label the range check misses), or
    not 1-D (a (2, 4) array for 8 inputs is refused, as PyTorch's cross_entropy refuses it, not flattened)."""
    a = np.asarray(y)
    if a.ndim != 1:
        raise ShapeError(f"labels must be one class index per input, shape (N,), got shape {a.shape}")
    if a.dtype.kind not in "iub":
        if a.dtype.kind != "f" or not np.all(np.isfinite(a)) or np.any(a != np.floor(a)):
            raise ShapeError(f"labels must be whole numbers (got {a.dtype} values such as "
                             f"{a.reshape(-1)[:3].tolist()})")
    if a.size and (a.min() < -2**31 or a.max() >= 2**31):
        raise ShapeError(f"labels must be in int32's range (got {a.min()}..{a.max()})")
    return np.ascontiguousarray(a, dtype=np.int32).reshape(-1)


def check_optimizer(optimizer, model) -> None:
    """ConfigError unless ``optimizer`` is a clcnn optimizer updating ``model``'s parameters (Optimizer.updates):
    one made for another model would step on nothing of this one's."""
    if not hasattr(optimizer, "updates"):
        raise ConfigError(f"train_step needs a clcnn optimizer (e.g. SGD(model, lr=0.01)), got {optimizer!r}")
    if not optimizer.updates(model):
        raise ConfigError("train_step: the optimizer was made for another model's parameters (make it with "
                          "this one, e.g. SGD(model, lr=0.01))")


def refuse_device_batch(x, y=None) -> None:
    """ConfigError where a DeviceBatch is passed as anything but the x of its own model's train_step."""
    if isinstance(x, DeviceBatch) or isinstance(y, DeviceBatch):
        raise ConfigError("a DeviceBatch (to_device) goes only to train_step of the model that made it")


def _check_training_batch(x: np.ndarray, y) -> None:
    """ShapeError for a training batch without labels or with no inputs (before any kernel sees it)."""
    if y is None:
        raise ShapeError("a training batch needs its labels y (train_step(x, y, optimizer)), or a DeviceBatch "
                         "from to_device as x with y None")
    if x.shape[0] == 0:
        raise ShapeError("an empty batch has no gradient")


class DeviceBatch:
    """A mini-batch checked and copied into a model's device input buffers by ``Steps.to_device``; pass it to
    that model's ``train_step(batch, None, optimizer)`` to step on it without another upload (as PyTorch steps on
    a tensor already on the GPU). The buffers are the model's own: the next ``to_device`` or host-batch
    ``train_step`` overwrites them, after which this batch is refused (ConfigError)."""

    __slots__ = ("model", "x", "y", "shape", "generation")

    def __init__(self, model, x, y, shape, generation):
        self.model, self.x, self.y, self.shape, self.generation = model, x, y, shape, generation

    def __repr__(self):
        return f"DeviceBatch(shape={self.shape}, device={self.model.backend.info.id}, generation={self.generation})"

    def __reduce__(self):   # a handle to one model's device buffers: nothing to copy or pickle
        raise ConfigError("a DeviceBatch cannot be copied or pickled: call to_device on the model it is for")


class Steps:
    """Mixin of Sequential: needs ``layers``, ``loss``, ``backend``, ``training``, ``flat_grad``, ``_steps``
    (a StepCache), ``_loss_buf``/``_loss_acc`` (device (1,) arrays) and ``output_shape``."""

    capture_steps = True   # replay a step recorded on its second run where the backend supports it; False:
                           # every step runs the layer code (no recording, no replay)
    MAX_GRAPHS = 8

    def _buffer(self, name, shape, dtype=np.float32):
        """A device array kept for later steps of the same shape (the ops that write it overwrite it whole)."""
        a = self._bufs.get(name)
        if a is None or tuple(a.shape) != tuple(shape) or a.dtype != dtype:
            a = self._bufs[name] = self.backend.zeros(shape, dtype)
        return a

    def _input(self, name, host):
        """Copy a host batch into a device array kept for batches of this shape (no allocation per step)."""
        a = self._buffer(name, host.shape, host.dtype)
        self.backend.upload_into(a, host)
        return a

    def _host_batch(self, x, y=None):
        """(x float32 contiguous, y int32 (N,) or None), checked before any upload: x's shape through every layer
        (once per shape), y's length and range; ShapeError naming what does not fit (ConfigError for a
        DeviceBatch, which only its own model's train_step takes)."""
        refuse_device_batch(x, y)
        x = np.ascontiguousarray(x, dtype=np.float32)
        out = self._checked_shapes.get(x.shape)
        if out is None:
            if self.input_shape is not None and tuple(x.shape[1:]) != self.input_shape:
                raise ShapeError(f"the model is built for inputs (N, {', '.join(map(str, self.input_shape))}), "
                                 f"got {tuple(x.shape)}")
            out = self.output_shape(x.shape)
            self._check_memory(x.shape)
            self._checked_shapes[x.shape] = out
        if y is not None:
            y = labels_int32(y)
            if y.shape[0] != x.shape[0]:
                raise ShapeError(f"{x.shape[0]} inputs but {y.shape[0]} labels")
            classes = max(out[1], 2)   # one logit (bce): labels 0 and 1
            if y.size and (y.min() < 0 or y.max() >= classes):
                raise ShapeError(f"labels must be in [0, {classes}) for this model, got {y.min()}..{y.max()}")
        return x, y

    def _check_memory(self, shape) -> None:
        """ShapeError when a batch of ``shape`` cannot fit the device: its layers' outputs and their gradients
        (2 x 4 bytes per output element, a lower bound of what a training step holds) against
        Backend.memory_capacity (once per batch shape)."""
        limit = self.backend.memory_capacity()
        need, s = 4 * int(np.prod(shape, dtype=np.int64)), tuple(shape)
        for layer in self.layers:
            s = tuple(layer.output_shape(s))
            need += 8 * int(np.prod(s, dtype=np.int64))
        if limit is not None and need > limit:
            raise ShapeError(f"a batch of {shape[0]} inputs {tuple(shape[1:])} needs at least {need / 2**30:.1f} GiB "
                             f"for its activations and gradients; {self.backend.info.id} has "
                             f"{limit / 2**30:.1f} GiB: use a smaller batch size or input size")

    def _upload_batch(self, x, y=None, training=False):
        """Checked host x (and y) -> this model's input buffers; ``training``: also ShapeError for no labels or an
        empty batch."""
        x, y = self._host_batch(x, y)
        if training:
            _check_training_batch(x, y)
        dy = None if y is None else self._input("y", y)
        self._host_refs = (x, y)  # alive until the next batch: uploads may still be in flight
        return self._input("x", x), dy

    def forward(self, x, train=True):
        """Device array in -> device array of logits (N, classes); ``train``: a backward follows."""
        for layer in self.layers:
            x = layer.forward(x, train)
        return x

    def predict(self, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """Logits (N, classes) as float32 NumPy, in evaluation mode, computed in batches of ``batch_size``
        (ConfigError unless a positive whole number)."""
        if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
            raise ConfigError(f"predict: batch_size must be a positive whole number (got {batch_size!r})")
        self._ensure_device()
        if isinstance(x, DeviceBatch):
            self._host_batch(x)   # its one-line refusal
        mode, out = self.training, []
        self.train(False)
        try:
            for i in range(0, len(x), batch_size):
                dx, _ = self._upload_batch(x[i:i + batch_size])
                out.append(self.backend.download(self.forward(dx, train=False)))
        finally:
            self.train(mode)
        if not out:   # no inputs: an empty (0, classes) array
            return np.zeros(self.output_shape(tuple(np.shape(x)) or (0,)), np.float32)
        return np.concatenate(out)

    def _loss_forward_backward(self, logits, labels, accumulate):
        """Batch-mean loss into self._loss_buf (or added to self._loss_acc); returns dL/dlogits (device)."""
        loss = self._loss_acc if accumulate else self._loss_buf
        probs, dlogits = self._buffer("probs", logits.shape), self._buffer("dlogits", logits.shape)
        self.loss.forward_backward(self.backend, logits, labels, probs, dlogits, loss, accumulate)
        return dlogits

    def zero_grad(self):
        """Every parameter gradient := 0 (one fill of the flat gradient buffer)."""
        self.backend.fill(self.flat_grad, 0.0)

    def _forward_backward(self, dx, dy, accumulate=False, fresh=True, marks=None):
        """Enqueue forward, loss and backward for one device batch. fresh: the gradients overwrite .grad (no
        zeroing pass needed); else they are added to it. marks: {layer index: Mark} set once that layer's
        backward (its parameter gradients) is enqueued, and {-1: Mark} before the forward."""
        marks = marks or {}
        for layer in self.layers:
            layer.grad_beta = 0.0 if fresh else 1.0
        if -1 in marks:
            self.backend.mark(marks[-1])
        g = self._loss_forward_backward(self.forward(dx, train=True), dy, accumulate)
        for i in range(len(self.layers) - 1, -1, -1):
            g = self.layers[i].backward(g, need_dx=i > 0)
            if i in marks:
                self.backend.mark(marks[i])

    def gradients(self, x, y) -> tuple[float, dict[str, np.ndarray]]:
        """(mean loss, gradients keyed like state_dict) for one batch; the weights are not changed."""
        self._ensure_device()
        dx, dy = self._upload_batch(x, y, training=True)
        self._forward_backward(dx, dy, fresh=True)
        loss = float(self.backend.download(self._loss_buf)[0])
        return loss, {k: self.backend.download(p.grad).reshape(p.shape) for k, p in self.named_parameters()}

    def to_device(self, x, y) -> DeviceBatch:
        """Check the batch (x (N, *input_shape), y (N,): ShapeError as train_step's) and copy it into this
        model's training input buffers; ``train_step(batch, None, optimizer)`` then steps on it with no upload,
        as often as wanted, until the next batch overwrites the buffers."""
        self._ensure_device()
        return self._stage(*self._host_batch(x, y))

    def _stage(self, x, y) -> DeviceBatch:
        """Checked host x, y -> this model's input buffers; ShapeError for no labels or an empty batch."""
        _check_training_batch(x, y)
        dx, dy = self._input("train_x", x), self._input("train_y", y)
        self._host_refs = (x, y)   # alive until the next batch: uploads may still be in flight
        self._generation = getattr(self, "_generation", 0) + 1
        return DeviceBatch(self, dx, dy, x.shape, self._generation)

    def _staged(self, batch: DeviceBatch, y) -> DeviceBatch:
        """``batch`` if it is this model's latest; ConfigError otherwise (another model's, overwritten, or a y)."""
        if y is not None:
            raise ConfigError("train_step(batch, None, optimizer): a DeviceBatch holds its labels already")
        if batch.model is not self:
            raise ConfigError("this DeviceBatch was made by another model's to_device")
        if batch.generation != getattr(self, "_generation", 0) or batch.x is not self._bufs.get("train_x"):
            raise ConfigError("this DeviceBatch was overwritten by a later batch, or the model has moved: call "
                              "to_device again")
        return batch

    def train_step(self, x, y, optimizer, sync: bool = True):
        """Forward, backward and one optimizer update on batch (x, y): x (N, *input_shape), y (N,). Returns the
        mean loss as a float, or None with ``sync=False`` (then the loss is added to the device total
        ``read_loss`` returns). ShapeError before any kernel runs when x does not fit the model. ``x`` may be this
        model's latest ``to_device`` batch (``y`` None): no check or upload then.

        From the second step with the same shapes, mode and optimizer on, the step's kernels are recorded once and
        then replayed with their arguments already set (where the backend supports it): no per-op host work. The
        optimizer's hyper-parameters are device buffers: changing the learning rate keeps the recording.
        """
        self._ensure_device()
        check_optimizer(optimizer, self)
        batch = self._staged(x, y) if isinstance(x, DeviceBatch) else self._stage(*self._host_batch(x, y))
        dx, dy = batch.x, batch.y
        optimizer.prepare()   # writes changed hyper-parameters to their device buffers (not part of the recording)

        def step():
            self._forward_backward(dx, dy, accumulate=not sync, fresh=True)   # overwrites every gradient
            optimizer.step()
        # conv_algo (a forced convolution algorithm, set by tests and benchmarks) changes the recorded kernels
        key = (batch.shape, not sync, self.training, id(optimizer), optimizer.version, self.backend.conv_algo)
        self._host_steps(self._steps.run(key, (dx, dy), step, self.capture_steps))
        if sync:
            return float(self.backend.download(self._loss_buf)[0])
        return None

    def shard_gradients(self, x, y, accumulate: bool = False, marks=None) -> None:
        """Enqueue forward + backward of (x, y) with fresh gradients (no update): a data-parallel shard. The loss
        goes to the last-step buffer, or with ``accumulate`` is added to ``read_loss``'s total; ``marks`` as in
        ``_forward_backward`` (the same dict on every call). Recorded and replayed as train_step's steps are."""
        self.upload_shard(x, y)
        self.run_shard(accumulate, marks)

    def upload_shard(self, x, y) -> None:
        """The first half of ``shard_gradients``: copy the batch to the device (the host part of it can overlap
        the device's work on an earlier step)."""
        self._shard = self._upload_batch(x, y)

    def run_shard(self, accumulate: bool = False, marks=None) -> None:
        """The second half of ``shard_gradients``: enqueue forward and backward of the batch last uploaded."""
        dx, dy = self._shard
        key = ("shard", accumulate, self.training, id(marks), self.backend.conv_algo) + tuple(dx.shape)
        replayed = self._steps.run(key, (dx, dy), lambda: self._forward_backward(dx, dy, accumulate, fresh=True,
                                                                                 marks=marks), self.capture_steps)
        self._host_steps(replayed)

    def _host_steps(self, replayed: bool) -> None:
        """After a replayed training step: the host's part of each layer's forward that the replay skipped
        (``host_step``: batch-norm's num_batches_tracked)."""
        if replayed and self.training:
            for layer in self.layers:
                if hasattr(layer, "host_step"):
                    layer.host_step()

    def read_loss(self, reset: bool = True) -> float:
        """The loss summed over the ``sync=False`` steps since the last reset (one device read)."""
        value = float(self.backend.download(self._loss_acc)[0])
        if reset:
            self.backend.fill(self._loss_acc, 0.0)
        return value

    def set_loss(self, value: float) -> None:
        """Set the device total ``read_loss`` returns (a resumed run puts its checkpoint's back: exact, as the
        value came from this float32 total)."""
        self._ensure_device()
        self.backend.fill(self._loss_acc, value)
