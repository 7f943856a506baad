"""Data augmentation on the host for the training loader: random crop with padding, random horizontal flip and
random erasing of a gathered mini-batch, in one pass, with per-image parameters drawn by the caller.

Not a Backend op: it runs on the host (a prefetch thread) for every device. The kernel is serial and releases
the GIL (``nogil``), so it overlaps with the device's compute (and with Numba's own parallel kernels on ``cpu``)
without touching Numba's threading layer from a second thread.

The order of torchvision's usual pipeline: RandomCrop(size, padding) -> RandomHorizontalFlip -> (ToTensor,
Normalize) -> RandomErasing, i.e. crop and flip act on the image, erasing on the normalised tensor.
"""
from __future__ import annotations

import numpy as np
from numba import njit

# offsets[i] = (dy, dx): out[h, w] = src[h + dy, w + dx] (before the flip), ``fill[c]`` where that is outside
# the image: a crop of the image zero-padded by p at the top-left corner (p + dy, p + dx), -p <= dy, dx <= p.
# flips[i] = 1: out[h, w] = cropped[h, W - 1 - w].
# boxes[i] = (top, left, height, width): out[:, top:top + height, left:left + width] = value (height 0: none).


@njit(nogil=True, cache=True, fastmath=False)
def _augment(src, index, out, offsets, flips, boxes, fill, value, n, c, h, w):
    # src: (S, C, H, W) flat, index: (N,) rows of src -> out: (N, C, H, W) flat
    plane = h * w
    for i in range(n):
        s = index[i]
        dy, dx, flip = offsets[2 * i], offsets[2 * i + 1], flips[i]
        for ch in range(c):
            sb = (s * c + ch) * plane
            ob = (i * c + ch) * plane
            for y in range(h):
                sy = y + dy
                for x in range(w):
                    xx = w - 1 - x if flip else x
                    sx = xx + dx
                    if sy < 0 or sy >= h or sx < 0 or sx >= w:
                        out[ob + y * w + x] = fill[ch]
                    else:
                        out[ob + y * w + x] = src[sb + sy * w + sx]
        top, left, bh, bw = boxes[4 * i], boxes[4 * i + 1], boxes[4 * i + 2], boxes[4 * i + 3]
        for ch in range(c):
            ob = (i * c + ch) * plane
            for y in range(top, top + bh):
                for x in range(left, left + bw):
                    out[ob + y * w + x] = value


def augment(src: np.ndarray, index: np.ndarray, offsets: np.ndarray, flips: np.ndarray, boxes: np.ndarray,
            fill: np.ndarray, value: float = 0.0) -> np.ndarray:
    """The mini-batch ``src[index]`` cropped, flipped and erased image by image, as a new array.

    Args:
        src: float32 (S, C, H, W), C-contiguous: the whole split.
        index: int64 (N,): the rows of ``src`` in the batch, each in [0, S).
        offsets: int32 (N, 2): (dy, dx) of each image's window (0, 0: no crop); a crop with padding p draws
            both in [-p, p]; pixels of the window outside the image take ``fill``.
        flips: uint8 (N,): 1 mirrors the image left-right (after the crop).
        boxes: int32 (N, 4): (top, left, height, width) of the erased rectangle, inside the image; height 0 for
            none. Erased pixels take ``value`` in every channel.
        fill: float32 (C,): the padding value per channel (the normalised value of a black pixel is -mean/std).
    Returns:
        float32 (N, C, H, W).
    Raises:
        ValueError for an index, offset or box outside the image (the caller draws them; a bad one would read or
        write out of bounds).
    """
    if src.ndim != 4 or src.dtype != np.float32 or not src.flags.c_contiguous:
        raise ValueError("augment: src must be a C-contiguous float32 (S, C, H, W) array")
    s, c, h, w = src.shape
    index = np.ascontiguousarray(index, dtype=np.int64).reshape(-1)
    n = index.size
    offsets = np.ascontiguousarray(offsets, dtype=np.int32).reshape(n, 2)
    flips = np.ascontiguousarray(flips, dtype=np.uint8).reshape(n)
    boxes = np.ascontiguousarray(boxes, dtype=np.int32).reshape(n, 4)
    fill = np.ascontiguousarray(fill, dtype=np.float32).reshape(c)
    if n and (index.min() < 0 or index.max() >= s):
        raise ValueError(f"augment: index outside [0, {s})")
    if n and (np.abs(offsets[:, 0]).max() > h or np.abs(offsets[:, 1]).max() > w):
        raise ValueError("augment: an offset larger than the image")
    top, left, bh, bw = boxes.T
    if n and ((bh < 0) | (bw < 0) | (top < 0) | (left < 0) | (top + bh > h) | (left + bw > w)).any():
        raise ValueError(f"augment: an erasing box outside the {h}x{w} image")
    out = np.empty((n, c, h, w), np.float32)
    _augment(src.reshape(-1), index, out.reshape(-1), offsets.reshape(-1), flips, boxes.reshape(-1), fill,
             np.float32(value), n, c, h, w)
    return out
