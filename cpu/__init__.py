"""Numba CPU kernels of clcnn (packaged as clcnn.cpu): ``<op>.py`` per op family, named as its cl/<op>.cl and its
Backend methods (gemm*, im2col, maxpool, bias, activation, loss, sgd); modules starting with ``_`` are helpers, not ops."""
