"""Exact resume (issue 12): a run stopped after an epoch, by a signal mid-epoch, or by a crash after a
--checkpoint-every checkpoint, then resumed, ends with the weights, optimizer state and metrics of a run never
stopped -- bit-identical on cpu, within 1e-6 on an OpenCL device; and SIGINT sent to a real `clcnn train`."""
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from clcnn import checkpoint, io, plots, signals, trainer
from clcnn.checkpoint import CHECKPOINT
from clcnn.steps import Steps
from clcnn.train_config import TrainConfig, resume_config
from clcnn.training import train
from conftest import _device_params
from test_checkpoint import quiet, tiny_dataset

POCL = [p.values[0] for p in _device_params() if p.id.endswith("-pocl")]
TIMING = ("seconds", "images_per_second")
SMALL = "c4k5-relu-mp2-flat-fc"   # conv, ReLU, pool, dense at a fifth of LeNet-5's step time


def _cfg(data, out, device="cpu", **kw):
    base = dict(data_dir=str(data), model=SMALL, device=device, epochs=2, batch_size=8, limit_train=96,
                lr=0.02, momentum=0.9, out=str(out))   # 12 steps an epoch: loss reads at steps 5 and 10 (see read_often) and at the end
    return TrainConfig(**{**base, **kw})


def _result(out: Path):
    """(weights, optimizer state, metrics without timings) of the run in ``out``."""
    weights = io.load_safetensors(out / "model.safetensors")[0]
    opt = checkpoint.load(out / CHECKPOINT)["objects"]["optimizer"]["state"]
    rows = [{k: v for k, v in json.loads(line).items() if k not in TIMING}
            for line in (out / "metrics.jsonl").read_text().splitlines()]
    return weights, opt, rows


def _resume(out, **flags):
    cfg = resume_config(TrainConfig(resume=str(out), **flags), given=["resume", *flags])
    return train(cfg, log=quiet, show_progress=False)


@pytest.fixture(scope="module", autouse=True)
def read_often():
    """The device loss total read every 5 steps (not 20): small epochs then have reads, and steps pending
    between them, as long ones do. And no OUT/curves.png (matplotlib's ~1 s an epoch is not what these test;
    the real `clcnn train` below draws it)."""
    before, trainer.LOSS_READ_EVERY = trainer.LOSS_READ_EVERY, 5
    curves, plots.save_curves = plots.save_curves, lambda *args, **kwargs: None
    yield
    trainer.LOSS_READ_EVERY, plots.save_curves = before, curves


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return tiny_dataset(tmp_path_factory.mktemp("resume"), n_train=200, n_test=32)


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """An uninterrupted 2-epoch run on cpu."""
    out = tmp_path_factory.mktemp("ref") / "run"
    train(_cfg(data, out), log=quiet, show_progress=False)
    return _result(out)


def _assert_same(got, want, tol=0.0):
    (w, o, rows), (w_ref, o_ref, rows_ref) = got, want
    assert sorted(w) == sorted(w_ref)
    for k in w_ref:
        if tol == 0:
            assert np.array_equal(w[k], w_ref[k]), k
        else:
            np.testing.assert_allclose(w[k], w_ref[k], rtol=0, atol=tol, err_msg=k)
    for k in o_ref:
        assert np.array_equal(o[k]["momentum_buffer"], o_ref[k]["momentum_buffer"]) if tol == 0 else \
            np.allclose(o[k]["momentum_buffer"], o_ref[k]["momentum_buffer"], rtol=0, atol=tol), k
    assert len(rows) == len(rows_ref) == 2
    if tol == 0:
        assert rows == rows_ref
    else:
        for r, ref in zip(rows, rows_ref):
            for key in ("train_loss", "test_loss", "test_accuracy"):
                assert r[key] == pytest.approx(ref[key], abs=tol), (key, r, ref)


def _stop_at(step: int, action):
    """Make the ``step``-th train_step of this process run ``action()`` first; returns the undo."""
    original, count = Steps.train_step, [0]

    def hooked(self, *args, **kwargs):
        count[0] += 1
        if count[0] == step:
            action()
        return original(self, *args, **kwargs)
    Steps.train_step = hooked
    return lambda: setattr(Steps, "train_step", original)


def test_resume_after_an_epoch_is_bit_identical(data, reference, tmp_path):
    out = tmp_path / "run"
    train(_cfg(data, out, epochs=1), log=quiet, show_progress=False)
    history = _resume(out, epochs=2)
    assert [r["epoch"] for r in history] == [1, 2]
    _assert_same(_result(out), reference)
    runinfo = json.loads((out / "run.json").read_text())
    assert runinfo["resumes"][0]["epoch"] == 2 and runinfo["resumes"][0]["step"] == 0


def test_sigterm_mid_epoch_saves_and_the_resume_is_bit_identical(data, reference, tmp_path):
    out = tmp_path / "run"
    undo = _stop_at(12 + 7, lambda: os.kill(os.getpid(), signal.SIGTERM))   # epoch 2 step 7: 2 after a read
    try:
        with pytest.raises(signals.Interrupted) as stop:
            train(_cfg(data, out), log=quiet, show_progress=False)
    finally:
        undo()
    assert stop.value.exit_code == 143 and f"clcnn train --resume {out}" in str(stop.value)
    st = checkpoint.load(out / CHECKPOINT)["epoch_state"]
    assert (st["epoch"], st["step"], st["pending"]) == (2, 7, 2)   # the device loss total's 2 steps travel too
    _resume(out)
    _assert_same(_result(out), reference)


def test_crash_after_a_step_checkpoint_resumes_bit_identical(data, reference, tmp_path):
    out = tmp_path / "run"

    def crash():
        raise RuntimeError("the machine died")
    undo = _stop_at(24, crash)   # checkpoints at global steps 7, (12: epoch 1), 14, 21
    try:
        with pytest.raises(RuntimeError, match="died"):
            train(_cfg(data, out, checkpoint_every=7), log=quiet, show_progress=False)
    finally:
        undo()
    st = checkpoint.load(out / CHECKPOINT)["epoch_state"]
    assert (st["epoch"], st["step"], st["global_step"], st["pending"]) == (2, 9, 21, 4)
    _resume(out)
    _assert_same(_result(out), reference)


RECIPE = dict(optimizer="adamw", momentum=0.0, lr=0.003, lr_schedule="cosine", warmup_epochs=0.5,
              augment="crop:2,flip,erase:0.3", val_fraction=0.2, label_smoothing=0.1)


@pytest.mark.parametrize("spec, flags", [
    ("c4k3p1-bn-relu-res(c4k3p1-bn)-relu-mp2-flat-fc", {}),   # buffers: running stats, num_batches_tracked (0-d)
    (SMALL, RECIPE),   # registered state: Adam's moments and step, the schedule, the augmentation stream; val split
    ("c4k5-relu-mp2-drop0.3-flat-fc", {}),   # registered state: each Dropout's Philox step (Dropout.state_dict)
], ids=["bn-residual", "adamw-cosine-augment-val", "dropout"])
def test_resume_mid_epoch_with_more_state_is_bit_identical(data, tmp_path, spec, flags):
    ref, out = tmp_path / "ref", tmp_path / "run"
    cfg = dict(model=spec, limit_train=48, **flags)   # 6 steps an epoch (5 with the val split)
    train(_cfg(data, ref, **cfg), log=quiet, show_progress=False)
    undo = _stop_at(5 + 3, lambda: os.kill(os.getpid(), signal.SIGTERM))
    try:
        with pytest.raises(signals.Interrupted):
            train(_cfg(data, out, **cfg), log=quiet, show_progress=False)
    finally:
        undo()
    assert checkpoint.load(out / CHECKPOINT)["epoch_state"]["epoch"] == 2
    _resume(out)
    (w, opt, rows), (w_ref, opt_ref, rows_ref) = _result(out), _result(ref)
    assert rows == rows_ref and all(np.array_equal(w[k], w_ref[k]) for k in w_ref), spec
    assert all(np.array_equal(opt[k][n], opt_ref[k][n]) for k in opt_ref for n in opt_ref[k])


@pytest.mark.deep   # ~10 s of PoCL builds cold (batch 8's shapes are build constants); ~2 s warm
@pytest.mark.skipif(not POCL, reason="no PoCL device")
def test_resume_mid_epoch_on_opencl_within_1e6(data, tmp_path):
    dev = POCL[0]
    ref = tmp_path / "ref"
    train(_cfg(data, ref, device=dev), log=quiet, show_progress=False)
    out = tmp_path / "run"
    undo = _stop_at(12 + 8, lambda: os.kill(os.getpid(), signal.SIGINT))
    try:
        with pytest.raises(signals.Interrupted) as stop:
            train(_cfg(data, out, device=dev), log=quiet, show_progress=False)
    finally:
        undo()
    assert stop.value.exit_code == 130
    _resume(out)
    _assert_same(_result(out), _result(ref), tol=1e-6)


def test_sigint_to_a_real_clcnn_train_saves_prints_the_resume_command_and_resumes(data, tmp_path):
    out = tmp_path / "run"
    exe = Path(sys.executable).with_name("clcnn")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "clcnn"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    args = ["train", "--data-dir", data, "--model", SMALL, "--device", "cpu", "--epochs", 30, "--batch-size", 8,
            "--limit-train", 200, "--out", out]
    proc = subprocess.Popen(cmd + [str(a) for a in args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    try:
        first = proc.stdout.readline()   # printed once the signal handlers are in place, before the first step
        assert first.startswith(f"training {SMALL}"), first + proc.stderr.read()
        os.kill(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, (stdout, stderr)
    hint = f"clcnn train --resume {out}"
    assert f"resume with: {hint}" in stdout and hint in stderr, (stdout, stderr)
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, stderr
    st = checkpoint.load(out / CHECKPOINT)["epoch_state"]
    # resume (here, not in a second process: its start costs seconds) to the end of the epoch it stopped in
    lines = []
    cfg = resume_config(TrainConfig(resume=str(out), epochs=st["epoch"]), given=["resume", "epochs"])
    assert cfg.limit_train == 200 and cfg.batch_size == 8 and cfg.device == "cpu"   # the run's own settings
    trainer.LOSS_READ_EVERY = 20   # as in the process that saved it (read_often changed it here)
    try:
        train(cfg, log=lines.append, show_progress=False)
    finally:
        trainer.LOSS_READ_EVERY = 5
    assert f"resuming {out} at epoch {st['epoch']} step {st['step']}/25" in lines, lines
    assert len((out / "metrics.jsonl").read_text().splitlines()) == st["epoch"]


@pytest.mark.deep   # two MPI ranks: two more processes to start (~10 s)
def test_sigint_to_mpi_ranks_rank0_saves_and_the_ranks_resume(data, tmp_path):
    mpiexec = shutil.which("mpiexec", path=str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"])
    if mpiexec is None:
        pytest.skip("no mpiexec (pip install 'clcnn[mpi]')")
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "NUMBA_NUM_THREADS": "1", "CLCNN_CURVES": "0"}
    ranks = [mpiexec, "-n", "2", sys.executable, "-m", "clcnn", "train"]
    args = ["--data-dir", data, "--model", SMALL, "--device", "cpu", "--epochs", 30, "--batch-size", 8,
            "--limit-train", 200, "--out", out, "--no-progress"]
    proc = subprocess.Popen(ranks + [str(a) for a in args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    try:
        first = proc.stdout.readline()
        assert first.startswith(f"training {SMALL}"), first + proc.stderr.read()
        os.kill(proc.pid, signal.SIGINT)   # mpiexec passes it to every rank; they agree on the step
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    # (mpiexec may stop passing the ranks' stdout on once it has sent the Ctrl-C: the stderr line is the check)
    assert proc.returncode == 130 and f"resume with: clcnn train --resume {out}" in stderr, (stdout, stderr)
    assert stdout.count("resume with:") <= 1   # rank 0 alone logs it
    st = checkpoint.load(out / CHECKPOINT)["epoch_state"]
    res = subprocess.run(ranks + ["--resume", str(out), "--epochs", str(st["epoch"]), "--no-progress"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    assert len((out / "metrics.jsonl").read_text().splitlines()) == st["epoch"]


def test_a_stop_under_ranks_waits_for_every_rank_before_exiting():
    """mpiexec ends every rank once one exits non-zero: a rank that is not the lead must not exit 130 before the
    lead has written its checkpoint (CI once lost it so). settle() is a Barrier across the ranks, nothing alone."""
    class Comm:
        def __init__(self, size):
            self.size, self.barriers = size, 0

        def Barrier(self):   # noqa: N802 - mpi4py's name
            self.barriers += 1

    class Model:
        def __init__(self, size):
            self.comm = Comm(size)
    stop = signals.StopRequest()
    ranks, alone = Model(2), Model(1)
    stop.settle(ranks)
    stop.settle(alone)
    stop.settle(object())
    assert (ranks.comm.barriers, alone.comm.barriers) == (1, 0)
