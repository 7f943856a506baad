"""Numba CPU kernels of clcnn, one module per op family (packaged as clcnn.cpu)."""
