"""OpenCL C sources of clcnn (packaged as clcnn.cl): ``<op>.cl`` per op family, named as its cpu/<op>.py and its
Backend methods (gemm*, im2col, maxpool, bias, activation, loss, sgd); files starting with ``_`` are included
helpers, not ops."""
