"""OpenCL C sources of clcnn, one .cl file per op family (packaged as clcnn.cl)."""
