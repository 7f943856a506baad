"""Sequential: a stack of layers with a loss, placed on one device, laid out like PyTorch's nn.Sequential."""
from __future__ import annotations

import numpy as np

from .backends import Backend, get_backend
from .layers import Conv2D, Dense, Layer, MaxPool2D, ReLU

LOSSES = ("cross_entropy", "bce")


class Sequential:
    """Layers applied in order, with softmax cross-entropy (or sigmoid binary cross-entropy) on the logits.

    Args:
        layers: the layers; parameter names are ``"<index>.weight"`` / ``"<index>.bias"`` as in nn.Sequential.
        loss: ``"cross_entropy"`` (softmax over C classes) or ``"bce"`` (one logit, labels 0/1).
        seed: seeds the He-normal initialisation (host RNG, so every device starts from the same weights).
    Shape:
        x: float32 (N, ...) as the first layer expects (NCHW for convolutions); y: int class indices (N,).
    """

    def __init__(self, layers: list[Layer], loss: str = "cross_entropy", seed: int | None = 0):
        if loss not in LOSSES:
            raise ValueError(f"Invalid loss {loss!r}; expected one of {LOSSES}")
        self.layers = list(layers)
        self.loss = loss
        for prev, nxt in zip(self.layers, self.layers[1:]):
            if isinstance(nxt, ReLU) and isinstance(prev, (Conv2D, Dense)):   # bias + ReLU in the GEMM write-out
                prev.fuse_relu, nxt.fused = True, True
            if isinstance(prev, ReLU) and isinstance(nxt, MaxPool2D):   # ReLU's backward in the pool's backward
                prev.backward_in_next, nxt.relu_mask = True, True
        rng = np.random.default_rng(seed)
        for layer in self.layers:
            layer.init(rng)
        self.backend = None
        self._loss_buf = None

    # ---- placement and parameters -------------------------------------------------------------------------
    def to(self, device=None) -> "Sequential":
        """Move the parameters to ``device`` (an id such as "cpu"/"cl:0"/"auto", a DeviceInfo, or a Backend)."""
        backend = device if isinstance(device, Backend) else get_backend(device)
        values = [(p, p.current()) for _, p in self.named_parameters()]
        for layer in self.layers:
            layer.to(backend, place_params=False)
        self._place_parameters(backend, values)
        self.backend = backend
        self._graphs = {}
        self._loss_buf = backend.zeros((1,))   # the last synchronous step's loss
        self._loss_acc = backend.zeros((1,))   # the sum of sync=False steps' losses since read_loss()
        self._bufs = {}
        return self

    def _place_parameters(self, backend, values) -> None:
        """All parameters as views of one flat data buffer and one flat gradient buffer (offsets aligned to what
        the backend's views need): zeroing gradients and the optimizer update are then one launch each, and the
        gradients one contiguous buffer to sum across devices."""
        align, offsets, total = backend.view_align, [], 0
        for p, _ in values:
            offsets.append(total)
            total += -(-p.size // align) * align
        self.flat_data, self.flat_grad = backend.zeros((max(total, 1),)), backend.zeros((max(total, 1),))
        self.flat_offsets = {id(p): off for (p, _), off in zip(values, offsets)}
        for (p, value), off in zip(values, offsets):
            p.bind(backend, backend.view(self.flat_data, off, p.shape), backend.view(self.flat_grad, off, p.shape),
                   value)
        backend.synchronize()

    def parameter_buffers(self):
        """[(backend, data, grad, size)]: the flat buffers an optimizer updates in one op each (here: one)."""
        return [(self.backend, self.flat_data, self.flat_grad, self.flat_data.size)]

    def flat_index(self) -> np.ndarray:
        """Positions in the flat buffers of every parameter element, parameters in state_dict order (so
        ``flat[flat_index()]`` is the device-independent concatenation of all parameters)."""
        return np.concatenate([np.arange(self.flat_offsets[id(p)], self.flat_offsets[id(p)] + p.size)
                               for _, p in self.named_parameters()]).astype(np.int64)

    def clone(self) -> "Sequential":
        """A new, unplaced model with the same layers, loss and current weights."""
        twin = Sequential([layer.clone() for layer in self.layers], loss=self.loss, seed=0)
        twin.load_state_dict(self.state_dict())
        return twin

    def self_test(self) -> None:
        """The device's kernel self-test (raises DeviceError naming the device)."""
        self._ensure_device()
        self.backend.self_test()

    @property
    def device(self):
        return self.backend.info if self.backend else None

    def named_parameters(self):
        for i, layer in enumerate(self.layers):
            for name, p in layer.params.items():
                yield f"{i}.{name}", p

    def _ensure_device(self):
        if self.backend is None:
            self.to("cpu")

    def state_dict(self) -> dict[str, np.ndarray]:
        """Parameters as float32 NumPy arrays, named and shaped as PyTorch's equivalent nn.Sequential."""
        if self.backend is None:
            return {k: p.host.copy() for k, p in self.named_parameters()}
        return {k: self.backend.download(p.data).reshape(p.shape) for k, p in self.named_parameters()}

    def load_state_dict(self, state: dict) -> None:
        """Copy ``state`` (as from state_dict or PyTorch) into the parameters; names and shapes must match."""
        params = dict(self.named_parameters())
        missing, unexpected = set(params) - set(state), set(state) - set(params)
        if missing or unexpected:
            raise ValueError(f"state_dict mismatch: missing {sorted(missing)}, unexpected {sorted(unexpected)}")
        for k, p in params.items():
            v = np.asarray(state[k], dtype=np.float32)
            if v.shape != p.shape:
                raise ValueError(f"state_dict[{k!r}] has shape {v.shape}, expected {p.shape}")
            p.host[...] = v
            if self.backend is not None:
                self.backend.upload_into(p.data, np.ascontiguousarray(p.host))
        if self.backend is not None:
            self.backend.synchronize()

    # ---- computation --------------------------------------------------------------------------------------
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

    def _upload_batch(self, x, y=None):
        x = np.ascontiguousarray(x, dtype=np.float32)
        dy = None
        if y is not None:
            y = np.ascontiguousarray(y, dtype=np.int32).reshape(-1)
            if y.shape[0] != x.shape[0]:
                raise ValueError(f"{x.shape[0]} inputs but {y.shape[0]} labels")
            dy = self._input("y", y)
        self._host_refs = (x, y)  # alive until the next batch: uploads may still be in flight
        return self._input("x", x), dy

    def forward(self, x, train=True):
        """Device array in -> device array of logits (N, classes)."""
        for layer in self.layers:
            x = layer.forward(x, train)
        return x

    def predict(self, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """Logits (N, classes) as float32 NumPy, computed in batches."""
        self._ensure_device()
        out = []
        for i in range(0, len(x), batch_size):
            dx, _ = self._upload_batch(x[i:i + batch_size])
            out.append(self.backend.download(self.forward(dx, train=False)))
        if not out:   # no inputs: an empty (0, classes) array
            shape = tuple(np.shape(x)) or (0,)
            for layer in self.layers:
                shape = layer.output_shape(shape)
            return np.zeros(shape, np.float32)
        return np.concatenate(out)

    def _loss_forward_backward(self, logits, labels, accumulate):
        """Batch-mean loss into self._loss_buf (or added to self._loss_acc); returns dL/dlogits (device)."""
        be, n = self.backend, logits.shape[0]
        loss = self._loss_acc if accumulate else self._loss_buf
        probs, dlogits = self._buffer("probs", logits.shape), self._buffer("dlogits", logits.shape)
        if self.loss == "cross_entropy":
            c = logits.shape[1]
            be.softmax_xent_forward(logits, labels, probs, loss, n, c, accumulate=accumulate)
            be.softmax_xent_backward(probs, labels, dlogits, n, c)
        else:
            if logits.shape[1] != 1:
                raise ValueError("the bce loss needs a model with exactly one output")
            be.sigmoid_bce_forward(logits, labels, probs, loss, n, accumulate=accumulate)
            be.sigmoid_bce_backward(probs, labels, dlogits, n)
        return dlogits

    def zero_grad(self):
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
        dx, dy = self._upload_batch(x, y)
        self._forward_backward(dx, dy, fresh=True)
        loss = float(self.backend.download(self._loss_buf)[0])
        return loss, {k: self.backend.download(p.grad).reshape(p.shape) for k, p in self.named_parameters()}

    capture_steps = True   # replay a prepared step (recorded on the second step of a shape) where supported;
                           # False: every step runs the layer code (no recording, no replay)
    MAX_GRAPHS = 4

    def train_step(self, x, y, optimizer, sync: bool = True):
        """Forward, backward and one optimizer update on batch (x, y). Returns the mean loss as a float, or
        None with ``sync=False`` (then the loss is added to the device accumulator read by ``read_loss``).

        From the second step with the same shapes and optimizer settings on, the step's kernels are recorded once
        and then replayed with their arguments already set (where the backend supports it): no per-op host work.
        """
        self._ensure_device()
        x = np.ascontiguousarray(x, dtype=np.float32)
        y = np.ascontiguousarray(y, dtype=np.int32).reshape(-1)
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"{x.shape[0]} inputs but {y.shape[0]} labels")
        dx, dy = self._input("train_x", x), self._input("train_y", y)
        self._host_refs = (x, y)
        key = (x.shape, not sync, id(optimizer), getattr(optimizer, "version", 0))
        graph = self._graphs.get(key) if self.capture_steps else None
        if graph is not None and graph[0][0] is dx and graph[0][1] is dy:
            self.backend.replay(graph[1])
        elif self.capture_steps and key in self._graphs:   # seen once: buffers exist; record this step
            with self.backend.capture() as recorded:
                self._step(dx, dy, optimizer, sync)
            if len(self._graphs) >= self.MAX_GRAPHS:
                self._graphs.clear()
            self._graphs[key] = None if recorded is None else ((dx, dy), recorded)
        else:
            self._step(dx, dy, optimizer, sync)
            self._graphs[key] = None
        if sync:
            return float(self.backend.download(self._loss_buf)[0])
        return None

    def shard_gradients(self, x, y, accumulate: bool = False, marks=None) -> None:
        """Enqueue forward + backward of (x, y) with fresh gradients (no update): a data-parallel shard. The loss
        goes to the last-step buffer, or with ``accumulate`` is added to ``read_loss``'s total; ``marks`` as in
        ``_forward_backward`` (the same dict on every call). Recorded on its second call with a shape and
        replayed after, as train_step's steps are."""
        self.upload_shard(x, y)
        self.run_shard(accumulate, marks)

    def upload_shard(self, x, y) -> None:
        """The first half of ``shard_gradients``: copy the batch to the device (the host part of it can overlap
        the device's work on an earlier step)."""
        self._shard = self._upload_batch(x, y)

    def run_shard(self, accumulate: bool = False, marks=None) -> None:
        """The second half of ``shard_gradients``: enqueue forward and backward of the batch last uploaded."""
        dx, dy = self._shard
        key = ("shard", accumulate, id(marks)) + tuple(dx.shape)
        graph = self._graphs.get(key) if self.capture_steps else None
        if graph is not None and graph[0][0] is dx and graph[0][1] is dy:
            self.backend.replay(graph[1])
        elif self.capture_steps and key in self._graphs:
            with self.backend.capture() as recorded:
                self._forward_backward(dx, dy, accumulate, fresh=True, marks=marks)
            if len(self._graphs) >= 2 * self.MAX_GRAPHS:
                self._graphs.clear()
            self._graphs[key] = None if recorded is None else ((dx, dy), recorded)
        else:
            self._forward_backward(dx, dy, accumulate, fresh=True, marks=marks)
            self._graphs[key] = None

    def _step(self, dx, dy, optimizer, sync):
        self._forward_backward(dx, dy, accumulate=not sync, fresh=True)   # overwrites every gradient
        optimizer.step()

    def read_loss(self, reset: bool = True) -> float:
        """The loss summed over the ``sync=False`` steps since the last reset (one device read)."""
        value = float(self.backend.download(self._loss_acc)[0])
        if reset:
            self.backend.fill(self._loss_acc, 0.0)
        return value

    def __repr__(self) -> str:
        body = "\n".join(f"  ({i}): {layer!r}" for i, layer in enumerate(self.layers))
        return f"Sequential(\n{body}\n)"
