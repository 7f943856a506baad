"""Inputs a new user tried that ended in a traceback or an out-of-memory kill: each is now one typed error before
any allocation or kernel (found by trying the CLI and API as a new user, 2026-12-02)."""
from __future__ import annotations

import gzip
import json
import os
import struct

import numpy as np
import pytest

import clcnn
from clcnn import data
from clcnn.errors import ConfigError, DataError, ShapeError
from clcnn.layers import Conv2D, Dense
from clcnn.predict import weights_path
from clcnn.train_config import TrainConfig


def test_a_weight_too_big_to_make_is_refused_before_it_is_allocated(monkeypatch):
    # LeNet-5 built for 4096x4096 inputs: its first dense layer would be 120 x 16,711,744 (2.0e9 weights, ~30 GiB to
    # make on the host): the process was killed by the OS; now one ConfigError naming the layer and the shape
    # (the host is made to have 22 GiB free, as the machine where it was found)
    real = os.sysconf
    free_pages = 22 * 2**30 // real("SC_PAGE_SIZE")
    monkeypatch.setattr(os, "sysconf", lambda name: free_pages if name == "SC_AVPHYS_PAGES" else real(name))
    with pytest.raises(ConfigError, match=r"fc120.*Dense: a weight of shape \(120, 16711744\)"):
        clcnn.models.get_model("lenet5", input_shape=(1, 4096, 4096), num_classes=10)
    with pytest.raises(ConfigError, match="kernels index"):
        Dense(2**16, 2**15)   # 2**31 weights: past the kernels' int32 indices


@pytest.mark.parametrize("bad", [float("inf"), float("nan"), None, "3", True])
def test_layer_sizes_that_are_not_whole_numbers_are_config_errors(bad):
    with pytest.raises(ConfigError, match="out_features must be a positive integer"):
        Dense(4, bad)


def test_a_batch_that_cannot_fit_the_device_is_refused_once_before_any_kernel(monkeypatch):
    model = clcnn.models.get_model("lenet5", seed=0).to("cpu")
    monkeypatch.setattr(model.backend, "memory_capacity", lambda: 1 << 20)   # a 1 MiB device
    x = np.zeros((64, 1, 28, 28), np.float32)
    # 64 images: the input 200,704 B + 2 x 4 B x every layer's output (64 x 13,894 elements) = 7.3 MB > 1 MiB
    with pytest.raises(ShapeError, match=r"a batch of 64 inputs \(1, 28, 28\) needs at least 0\.0 GiB.*cpu has 0\.0"):
        model.predict(x, batch_size=64)
    assert model.predict(x[:1]).shape == (1, 10)   # 1 image: 0.11 MB fits


@pytest.mark.parametrize("body", [5, {"type": "ReLU"}])
def test_a_json_residual_whose_layers_are_not_a_list_is_one_line(tmp_path, body):
    path = tmp_path / "m.json"
    path.write_text(json.dumps([{"type": "Residual", "layers": body}]))
    with pytest.raises(ConfigError, match="layer 0: expected a list of layers"):
        clcnn.models.get_model(str(path), input_shape=(1, 8, 8), num_classes=2)


def _idx(path, type_code, shape, body):
    path.write_bytes(gzip.compress(bytes([0, 0, type_code, len(shape)]) + struct.pack(f">{len(shape)}I", *shape)
                                   + body))


def test_idx_images_that_are_not_8_bit_are_a_data_error(tmp_path):
    # float32 pixels (IDX type 0x0D) used to end in a NumPy casting traceback in the per-channel statistics
    _idx(tmp_path / "train-images-idx3-ubyte.gz", 0x0D, (2, 2, 2), np.full(8, np.nan, ">f4").tobytes())
    _idx(tmp_path / "train-labels-idx1-ubyte.gz", 0x08, (2,), bytes([0, 1]))
    with pytest.raises(DataError, match="holds float32 pixels; clcnn reads 8-bit images"):
        data.idx.read_split("idx", tmp_path, "train")


def test_huge_idx_dimensions_report_the_size_they_need(tmp_path):
    # dimensions whose product overflows int64: the message once said "9223372036854775908 unexpected bytes"
    _idx(tmp_path / "x.gz", 0x08, (2**31, 2**16, 2**16), b"")
    with pytest.raises(DataError, match=r"truncated: 0 bytes of data, expected 9223372036854775808 "):
        data.idx.read_idx(tmp_path / "x.gz")


@pytest.mark.parametrize("flag,value", [("lr", 1e39), ("lr", 1e300), ("momentum", 1e39), ("weight_decay", 1e300)])
def test_hyper_parameters_beyond_float32_are_refused(flag, value):
    # 1e300 became inf in the float32 hyper buffer (an overflow warning, then a NaN run that exited 0)
    with pytest.raises(ConfigError, match=f"--{flag.replace('_', '-')} must be .*float32"):
        TrainConfig(**{flag: value}).validate()


def test_a_run_folder_stopped_before_its_first_epoch_points_to_resume(tmp_path):
    (tmp_path / "checkpoint.safetensors").write_bytes(b"x")
    with pytest.raises(DataError, match=f"clcnn train --resume {tmp_path}"):
        weights_path(tmp_path)


def test_a_layer_used_alone_takes_a_device_id():
    conv = Conv2D(1, 2, 3)
    conv.init(np.random.default_rng(0))
    conv.to("cpu")
    assert conv.backend.info.id == "cpu"


@pytest.mark.parametrize("args,flag", [(["--optimizer", "sgd", "--betas", "0.5,0.5"], "--betas"),
                                       (["--eps", "1e-6"], "--eps"),
                                       (["--channels", "3"], "--channels"),
                                       (["--image-size", "32x32"], "--image-size"),
                                       (["--test-fraction", "0.5"], "--test-fraction"),
                                       (["--lr-schedule", "cosine", "--lr-step-size", "3"], "--lr-step-size"),
                                       (["--lr-min", "0.001"], "--lr-min"),
                                       (["--warmup-start-factor", "0.5"], "--warmup-start-factor")])
def test_an_option_the_run_would_ignore_is_refused(args, flag):
    # these were accepted and written to run.json though nothing used them (fashion-mnist is IDX, the optimizer
    # SGD, the schedule none): one line naming the option and what it needs
    from click.testing import CliRunner
    from clcnn.cli import main
    result = CliRunner().invoke(main, ["train", "--device", "cpu", *args], standalone_mode=False)
    assert isinstance(result.exception, ConfigError), result.output
    assert str(result.exception).startswith(f"{flag} applies only with")
