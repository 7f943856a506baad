"""clcnn: train convolutional networks with its own OpenCL and Numba kernels, on any device."""
from pathlib import Path as _Path

# In a source checkout cl/ and cpu/ sit beside this package; an installed wheel carries them inside it
# (as clcnn/cl and clcnn/cpu). Make `clcnn.cl` / `clcnn.cpu` resolve in both cases.
_root = _Path(__file__).resolve().parent.parent
if not (_Path(__file__).parent / "cpu").is_dir() and (_root / "cpu" / "__init__.py").is_file():
    __path__.append(str(_root))  # noqa: F821  (module __path__)

from . import errors, layers, losses, models, optim  # noqa: E402
from .backends import DeviceError, DeviceInfo, get_backend, list_devices  # noqa: E402
from .layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU, Sigmoid  # noqa: E402
from .model import Sequential  # noqa: E402
from .distributed import DistributedDataParallel  # noqa: E402
from .parallel import DataParallel  # noqa: E402

__all__ = ["Conv2D", "DataParallel", "Dense", "DistributedDataParallel", "DeviceError", "DeviceInfo", "Flatten", "MaxPool2D", "ReLU", "Sequential",
           "Sigmoid", "errors", "get_backend", "layers", "list_devices", "losses", "models", "optim"]

__version__ = "0.1.0"
