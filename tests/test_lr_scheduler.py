"""Learning-rate schedules: torch.optim.lr_scheduler's values step by step (momentum and beta1 too), a run's
schedule and Adam state resumed bit-exactly mid-epoch, and `clcnn train`'s optimizer and schedule flags checked."""
import math

import numpy as np
import pytest

import clcnn
from clcnn.errors import ConfigError
from clcnn.optim import SGD, Adam, lr_scheduler
from test_optim import tiny_net


# ---- schedules against torch.optim.lr_scheduler ------------------------------------------------------------------
SCHEDULES = {
    "step": (lambda o: lr_scheduler.StepLR(o, step_size=3, gamma=0.5),
             lambda t, o: t.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5)),
    "cosine": (lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=10, eta_min=1e-3),
               lambda t, o: t.optim.lr_scheduler.CosineAnnealingLR(o, T_max=10, eta_min=1e-3)),
    "linear": (lambda o: lr_scheduler.LinearLR(o, start_factor=0.1, total_iters=4),
               lambda t, o: t.optim.lr_scheduler.LinearLR(o, start_factor=0.1, total_iters=4)),
    "onecycle": (lambda o: lr_scheduler.OneCycleLR(o, max_lr=0.5, total_steps=12),
                 lambda t, o: t.optim.lr_scheduler.OneCycleLR(o, max_lr=0.5, total_steps=12)),
    "onecycle-linear": (lambda o: lr_scheduler.OneCycleLR(o, max_lr=0.5, total_steps=12, pct_start=0.25,
                                                          anneal_strategy="linear"),
                        lambda t, o: t.optim.lr_scheduler.OneCycleLR(o, max_lr=0.5, total_steps=12,
                                                                     pct_start=0.25, anneal_strategy="linear")),
    "warmup-cosine": (lambda o: lr_scheduler.SequentialLR(o, [lr_scheduler.LinearLR(o, 0.2, total_iters=3),
                                                              lr_scheduler.CosineAnnealingLR(o, T_max=8)], [3]),
                      lambda t, o: t.optim.lr_scheduler.SequentialLR(
                          o, [t.optim.lr_scheduler.LinearLR(o, 0.2, total_iters=3),
                              t.optim.lr_scheduler.CosineAnnealingLR(o, T_max=8)], [3])),
}


@pytest.mark.parametrize("kind", list(SCHEDULES))
@pytest.mark.parametrize("opt_name", ["sgd", "adam"])
def test_schedule_matches_torch_step_by_step(kind, opt_name):
    torch = pytest.importorskip("torch")
    import warnings
    model = tiny_net().to("cpu")
    opt = SGD(model, lr=0.1, momentum=0.9) if opt_name == "sgd" else Adam(model, lr=0.1)
    w = torch.nn.Parameter(torch.zeros(2))
    topt = torch.optim.SGD([w], lr=0.1, momentum=0.9) if opt_name == "sgd" else torch.optim.Adam([w], lr=0.1)
    make, make_torch = SCHEDULES[kind]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # torch's warnings about the step order and the epoch argument
        sched, tsched = make(opt), make_torch(torch, topt)
        for step in range(12):
            g = topt.param_groups[0]
            want_m = g["momentum"] if opt_name == "sgd" else g["betas"][0]
            got_m = opt.momentum if opt_name == "sgd" else opt.beta1
            assert math.isclose(opt.lr, g["lr"], rel_tol=1e-9, abs_tol=1e-12), (step, opt.lr, g["lr"])
            assert math.isclose(got_m, want_m, rel_tol=1e-9), (step, got_m, want_m)
            assert sched.get_last_lr() == [opt.lr]
            topt.step()
            tsched.step()
            sched.step()
    # resumed from its state_dict, a schedule continues where it was
    sd = sched.state_dict()
    again = make(opt)
    again.load_state_dict(sd)
    assert again.last_epoch == 12 and again.get_last_lr() == sched.get_last_lr()


def test_onecycle_past_total_steps_is_an_error():
    opt = SGD(tiny_net(), lr=0.1)
    sched = lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=2)
    sched.step()
    sched.step()
    with pytest.raises(ConfigError, match="total_steps"):
        sched.step()


# ---- a training run: the flags end to end, and an exact resume of the schedule and Adam's state ----------------
@pytest.mark.parametrize("flags", [
    dict(optimizer="adamw", lr=0.01, momentum=0.0, lr_schedule="onecycle", label_smoothing=0.1, model="lenet5"),
    pytest.param(dict(optimizer="sgd", lr=0.02, momentum=0.9, nesterov=True, lr_schedule="cosine",
                      warmup_epochs=0.5, model="lenet5"), marks=pytest.mark.deep),   # the same path again
])
def test_run_stopped_mid_epoch_resumes_schedule_and_optimizer_exactly(tmp_path, flags):
    # SIGTERM at epoch 2 step 7 (12 steps an epoch), then --resume: the weights, the optimizer's state and the
    # schedule's step equal those of the run never stopped, bit for bit (cpu)
    import os
    import signal
    from clcnn import checkpoint, signals
    from clcnn.training import train
    from test_resume import _cfg, _resume, _stop_at, quiet, tiny_dataset
    data = tiny_dataset(tmp_path / "data", n_train=200, n_test=32)
    results = []
    for name in ("whole", "stopped"):
        out = tmp_path / name
        if name == "stopped":
            undo = _stop_at(12 + 7, lambda: os.kill(os.getpid(), signal.SIGTERM))
            try:
                with pytest.raises(signals.Interrupted):
                    train(_cfg(data, out, **flags), log=quiet, show_progress=False)
            finally:
                undo()
            _resume(out)
        else:
            train(_cfg(data, out, **flags), log=quiet, show_progress=False)
        saved = checkpoint.load(out / "checkpoint.safetensors")
        results.append((clcnn.io.load_safetensors(out / "model.safetensors")[0], saved["objects"]))
    (w1, o1), (w2, o2) = results
    for k in w1:
        assert np.array_equal(w1[k], w2[k]), k
    for k, state in o1["optimizer"]["state"].items():
        for s, v in state.items():
            assert np.array_equal(np.asarray(v), np.asarray(o2["optimizer"]["state"][k][s])), (k, s)
    assert o1["lr_scheduler"] == o2["lr_scheduler"] and o1["lr_scheduler"]["last_epoch"] == 24


def test_training_flags_are_range_checked():
    from clcnn.train_config import TrainConfig
    bad = [({"optimizer": "rmsprop"}, "--optimizer"), ({"betas": "0.9,1.0"}, "--betas"), ({"eps": -1}, "--eps"),
           ({"lr_schedule": "exp"}, "--lr-schedule"), ({"lr_schedule": "step", "lr_gamma": 0}, "--lr-gamma"),
           ({"lr_step_size": 0}, "--lr-step-size"), ({"warmup_epochs": -1}, "--warmup-epochs"),
           ({"warmup_start_factor": 0}, "--warmup-start-factor"), ({"label_smoothing": 1.5}, "--label-smoothing"),
           ({"nesterov": True}, "--nesterov"), ({"optimizer": "adam", "momentum": 0.9}, "--momentum"),
           ({"lr_schedule": "onecycle", "warmup_epochs": 1}, "--warmup-epochs"), ({"lr_min": 1.0}, "--lr-min")]
    for kw, flag in bad:
        with pytest.raises(ConfigError, match=flag):
            TrainConfig(**kw).validate()
    cfg = TrainConfig(optimizer="adamw")
    cfg.validate()
    assert (cfg.lr, cfg.weight_decay) == (1e-3, 1e-2)
