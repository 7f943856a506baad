"""Average pooling: AvgPool2D (k x k windows) and GlobalAvgPool2D (the mean of each channel).
(MaxPool2D is in conv.py.)"""
from __future__ import annotations

from .base import Layer, check_positive


class AvgPool2D(Layer):
    """Average pooling without padding (PyTorch's nn.AvgPool2d with padding 0).

    Args:
        kernel_size: window k (>= 1); stride: s (>= 1, default k). ConfigError otherwise.
    Shape: x: (N, C, H, W) -> y: (N, C, Ho, Wo), Ho = (H - k)//s + 1; ShapeError when H or W < k.
    """

    def __init__(self, kernel_size, stride=None):
        check_positive("AvgPool2D", kernel_size=kernel_size, stride=kernel_size if stride is None else stride)
        self.kernel_size = int(kernel_size)
        self.stride = int(stride) if stride is not None else self.kernel_size
        self.params = {}

    def config(self) -> dict:
        return {"kernel_size": self.kernel_size, "stride": self.stride}

    def _window(self, shape):
        return self.kernel_size, self.kernel_size, self.stride

    def output_shape(self, shape):
        k = self.kernel_size
        if len(shape) != 4 or shape[2] < k or shape[3] < k:
            self._fail(f"(N, C, H, W) with H, W >= {k}", shape)
        s = self.stride
        return (shape[0], shape[1], (shape[2] - k) // s + 1, (shape[3] - k) // s + 1)

    def forward(self, x, train=True):
        # x: (N, C, H, W) -> y: (N, C, Ho, Wo) (GlobalAvgPool2D: (N, C)).
        oshape = self.check(x.shape)
        n, c, h, w = x.shape
        kh, kw, s = self._window(x.shape)
        y = self._buffer("y", oshape)
        self.backend.avgpool_forward(x, y, n, c, h, w, kh, kw, s)
        self.xshape = x.shape
        return y

    def backward(self, dy, need_dx=True):
        # dy: the output's shape -> dx: (N, C, H, W), each pixel gathering dy/(kh*kw) of its windows.
        if not need_dx:
            return None
        n, c, h, w = self.xshape
        kh, kw, s = self._window(self.xshape)
        dx = self._buffer("dx", self.xshape)
        self.backend.avgpool_backward(dy, dx, n, c, h, w, kh, kw, s)
        return dx


class GlobalAvgPool2D(AvgPool2D):
    """The mean of each channel over the image (Keras's GlobalAveragePooling2D; in PyTorch the one module
    ``nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())``, i.e. ``x.mean((2, 3))``: one entry, so the
    indices of the layers after it match an nn.Sequential's).

    Shape: x: (N, C, H, W) -> y: (N, C). No arguments.
    """

    def __init__(self):
        self.kernel_size, self.stride = 1, 1
        self.params = {}

    def config(self) -> dict:
        return {}

    def _window(self, shape):
        return shape[2], shape[3], 1

    def output_shape(self, shape):
        if len(shape) != 4 or shape[2] < 1 or shape[3] < 1:
            self._fail("(N, C, H, W)", shape)
        return (shape[0], shape[1])
