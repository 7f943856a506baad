"""The errors a user can cause: bad data, a bad or failing device, a bad setting.

The command line turns exactly these into its one-line ``clcnn: error: ...`` and exit status 2; anything else is
a programming error and raises normally (with ``CLCNN_DEBUG=1`` the CLI also shows the traceback of these).
This module is the bottom of the package: it imports nothing from clcnn.
"""
from __future__ import annotations


class ClcnnError(Exception):
    """Base of every error a user can cause (caught by the CLI)."""


class DataError(ClcnnError, ValueError):
    """A data set is missing, damaged, empty, or does not fit the model (names the file or the shapes)."""


class DeviceError(ClcnnError, RuntimeError):
    """A device could not be found or opened, or could not build or run clcnn's kernels (names the device)."""


class ConfigError(ClcnnError, ValueError):
    """A setting is out of range or inconsistent (a flag, a layer argument, an optimizer hyper-parameter, a
    shape that does not fit a layer); the message names the setting and the value given."""


class ShapeError(ConfigError):
    """An input's shape does not fit a layer: the message names the layer, the expected and the actual shape."""
