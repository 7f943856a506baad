"""Time to accuracy, clcnn against PyTorch: the same network, the same recipe (initial weights, optimizer, schedule,
batch size, label smoothing, augmentation, shuffle and seed), on the same hardware, in one run, each trained until
its test accuracy (checked after every epoch) reaches the target.

    python tools/time_to_accuracy.py --model fashion --device cpu --optimizer sgd --lr 0.05 --momentum 0.9 \
        --nesterov --lr-schedule onecycle --epochs 10 --batch-size 128 --label-smoothing 0.1 --target 0.92

Each framework runs in its own child process (one after the other: no thread pool of one waits on the other's),
and both are fed by the same host pipeline: clcnn.loader's thread, the same permutation per epoch from
default_rng(seed), the same clcnn.augment stream, so the images and their order are identical. PyTorch runs the
equivalent torch module of clcnn.export (the same state_dict names) from clcnn's initial weights, with
torch.optim and torch.optim.lr_scheduler's equivalents of clcnn.optim.recipe's choice; on CUDA when the clcnn
device is an NVIDIA GPU and torch sees CUDA (TF32 off, as `clcnn bench`; cudnn.benchmark on), else
PyTorch CPU.
The wall time counts the epochs and the per-epoch test evaluations up to the first epoch at or above the target;
the set-up (data, kernel builds, one warm-up step) is not counted. Prints a table and writes --json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RECIPE = ("model", "dataset", "data_dir", "limit_train", "optimizer", "lr", "momentum", "nesterov", "weight_decay",
          "betas", "eps", "lr_schedule", "lr_step_size", "lr_gamma", "lr_min", "warmup_epochs",
          "warmup_start_factor", "label_smoothing", "augment", "epochs", "batch_size", "seed")


def config(args):
    """The clcnn TrainConfig of the recipe (validated: the optimizer's defaults filled in)."""
    from clcnn.train_config import TrainConfig
    cfg = TrainConfig(**{k: getattr(args, k) for k in RECIPE}, device=args.device)
    cfg.validate()
    return cfg


def load(cfg):
    from clcnn import data
    train_set, test_set, info = data.load(cfg.dataset, cfg.data_dir, cfg.limit_train)
    return train_set, test_set, info


def clcnn_side(cfg, target: float, log) -> dict:
    """Train with clcnn (training.Trainer, as `clcnn train` does) until ``target``; the per-epoch rows."""
    from clcnn.checkpoint import EpochState
    from clcnn.models import get_model
    from clcnn.optim import recipe
    from clcnn.trainer import Trainer, evaluate, make_augment
    train_set, test_set, info = load(cfg)
    net = get_model(cfg.model, input_shape=info.input_shape, num_classes=info.num_classes, seed=cfg.seed)
    if cfg.label_smoothing:
        from clcnn.losses import with_label_smoothing
        net.loss = with_label_smoothing(net.loss, cfg.label_smoothing)
    model = net.to(cfg.device)
    model.self_test()
    model.gradients(train_set.images[:2], train_set.labels[:2])   # builds every kernel before the clock starts
    opt = recipe.make_optimizer(model, cfg)
    trainer = Trainer(model, opt, train_set, cfg.batch_size, progress="off", log=log)
    trainer.schedule = recipe.make_schedule(opt, cfg, trainer.steps_per_epoch())
    trainer.augment = make_augment(cfg, info)

    def epoch(e, order):
        state = EpochState(epoch=e)
        trainer.run_epoch(state, order)
        wait = trainer.loader_stats["wait_seconds"] - trainer.loader_stats["first_wait_seconds"]
        return state.loss_sum / max(state.seen, 1), evaluate(model, test_set, net.loss)[1], wait
    return _epochs(cfg, target, len(train_set), epoch, f"clcnn {model.device.id}: {model.device.name}", log)


def torch_side(cfg, target: float, log, clcnn_device: str) -> dict:
    """Train the equivalent torch module with the equivalent recipe until ``target``; the per-epoch rows."""
    import torch
    from clcnn import export, loader
    from clcnn.backends import resolve_device
    from clcnn.bench_torch import torch_device
    from clcnn.models import get_model
    from clcnn.trainer import make_augment
    train_set, test_set, info = load(cfg)
    net = get_model(cfg.model, input_shape=info.input_shape, num_classes=info.num_classes, seed=cfg.seed)
    device, name = torch_device(resolve_device(clcnn_device))
    torch.backends.cudnn.benchmark = True   # PyTorch at its fastest: cuDNN picks its kernels per shape
    module = export.torch_module(net, info).to(device)
    opt, sched = torch_recipe(torch, module, cfg, -(-len(train_set) // cfg.batch_size))
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    augment = make_augment(cfg, info)
    test_x = torch.from_numpy(test_set.images).to(device)
    test_y = torch.from_numpy(test_set.labels.astype(np.int64)).to(device)

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(module(x), y)
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        return loss.detach()
    b = cfg.batch_size
    step(torch.from_numpy(train_set.images[:b]).to(device),
         torch.from_numpy(train_set.labels[:b].astype(np.int64)).to(device))   # warm-up (cuDNN's choice, allocator)
    module.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in net.state_dict().items()})
    opt, sched = torch_recipe(torch, module, cfg, -(-len(train_set) // cfg.batch_size))   # afresh after it

    def epoch(e, order):
        module.train()
        total, seen = torch.zeros((), device=device), 0
        batches = loader.batches(train_set, cfg.batch_size, augment=augment, order=order)
        for x, y in batches:
            xb = torch.from_numpy(x).to(device, non_blocking=True)
            yb = torch.from_numpy(y.astype(np.int64)).to(device, non_blocking=True)
            total += step(xb, yb) * len(y)
            seen += len(y)
        module.eval()
        with torch.no_grad():
            right = sum(int((module(test_x[i:i + 1000]).argmax(1) == test_y[i:i + 1000]).sum())
                        for i in range(0, len(test_y), 1000))
        return float(total) / seen, right / len(test_y), batches.stats["wait_seconds"] - \
            batches.stats["first_wait_seconds"]
    return _epochs(cfg, target, len(train_set), epoch, f"PyTorch {torch.__version__} {device}: {name}", log)


def torch_recipe(torch, module, cfg, steps_per_epoch: int):
    """torch.optim's optimizer and schedule for cfg, as clcnn.optim.recipe builds clcnn's."""
    from clcnn.optim.recipe import parse_betas
    params = module.parameters()
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                              nesterov=cfg.nesterov)
    else:
        cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
        opt = cls(params, lr=cfg.lr, betas=parse_betas(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay)
    S = torch.optim.lr_scheduler
    total = cfg.epochs * steps_per_epoch
    warm = min(round(cfg.warmup_epochs * steps_per_epoch), total)
    if cfg.lr_schedule == "onecycle":
        plain = cfg.optimizer == "sgd" and cfg.momentum == 0
        return opt, S.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total, cycle_momentum=not plain)
    main = None
    if cfg.lr_schedule == "step":
        main = S.StepLR(opt, step_size=max(1, round(cfg.lr_step_size * steps_per_epoch)), gamma=cfg.lr_gamma)
    elif cfg.lr_schedule == "cosine":
        main = S.CosineAnnealingLR(opt, T_max=max(1, total - warm), eta_min=cfg.lr_min)
    if warm == 0:
        return opt, main
    warmup = S.LinearLR(opt, start_factor=cfg.warmup_start_factor, total_iters=warm)
    return opt, warmup if main is None else S.SequentialLR(opt, [warmup, main], milestones=[warm])


def _epochs(cfg, target, n, epoch, who, log) -> dict:
    """Run ``epoch(e, order)`` -> (train loss, test accuracy, seconds the loop waited for the loader after the
    first batch) until the target or cfg.epochs; the clock runs over the epochs and their evaluations."""
    rng = np.random.default_rng(cfg.seed)   # the shuffle, drawn as clcnn train draws it
    rows, clock = [], 0.0
    for e in range(1, cfg.epochs + 1):
        order = rng.permutation(n)
        t0 = time.perf_counter()
        loss, acc, wait = epoch(e, order)
        clock += time.perf_counter() - t0
        rows.append({"epoch": e, "train_loss": loss, "test_accuracy": acc, "seconds": clock, "loader_wait": wait})
        log(f"{who}  epoch {e}  train loss {loss:.4f}  test acc {acc:.4f}  {clock:.1f} s  (waited {wait:.3f} s "
            "for the loader after its first batch)")
        if acc >= target:
            break
    reached = rows[-1]["test_accuracy"] >= target
    return {"who": who, "rows": rows, "reached": reached, "seconds": clock if reached else None}


def child(args) -> None:
    """One side, in this process: the result as JSON on the last line of stdout."""
    cfg = config(args)
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    out = clcnn_side(cfg, args.target, log) if args.side == "clcnn" else torch_side(cfg, args.target, log,
                                                                                   args.device)
    print(json.dumps(out))


def parse(argv=None):
    from clcnn.train_config import TrainConfig
    d = TrainConfig()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="fashion")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--limit-train", type=int, default=None)
    p.add_argument("--device", default="auto", help="the clcnn device (PyTorch: CUDA beside an NVIDIA one)")
    p.add_argument("--optimizer", default="sgd")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--nesterov", action="store_true")
    p.add_argument("--weight-decay", type=float, default=None)
    p.add_argument("--betas", default=d.betas)
    p.add_argument("--eps", type=float, default=d.eps)
    p.add_argument("--lr-schedule", default="onecycle")
    p.add_argument("--lr-step-size", type=float, default=d.lr_step_size)
    p.add_argument("--lr-gamma", type=float, default=d.lr_gamma)
    p.add_argument("--lr-min", type=float, default=d.lr_min)
    p.add_argument("--warmup-epochs", type=float, default=d.warmup_epochs)
    p.add_argument("--warmup-start-factor", type=float, default=d.warmup_start_factor)
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--augment", default="")
    p.add_argument("--epochs", type=int, default=10, help="the schedule's length and the most epochs run")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--target", type=float, default=0.92)
    p.add_argument("--only", choices=["clcnn", "torch"], default=None, help="run one side only")
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--side", choices=["clcnn", "torch"], default=None, help=argparse.SUPPRESS)   # a child
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    if args.side:
        child(args)
        return 0
    config(args)   # a bad flag fails here, once
    argv = list(sys.argv[1:] if argv is None else argv)
    results = {}
    for side in ([args.only] if args.only else ["clcnn", "torch"]):
        proc = subprocess.run([sys.executable, __file__, *argv, "--side", side], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(
                                  [str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p])})
        if proc.returncode:
            print(f"time_to_accuracy: the {side} side failed (exit {proc.returncode})", file=sys.stderr)
            return proc.returncode
        results[side] = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"\ntarget test accuracy {args.target}, at most {args.epochs} epochs")
    for side, r in results.items():
        last = r["rows"][-1]
        when = f"{r['seconds']:.1f} s (epoch {last['epoch']})" if r["reached"] else \
            f"not reached in {last['epoch']} epochs ({last['seconds']:.1f} s, best " \
            f"{max(x['test_accuracy'] for x in r['rows']):.4f})"
        print(f"  {r['who']:<60} {when}")
    if len(results) == 2 and all(r["reached"] for r in results.values()):
        ratio = results["torch"]["seconds"] / results["clcnn"]["seconds"]
        print(f"  PyTorch time / clcnn time = {ratio:.2f} ({'clcnn' if ratio > 1 else 'PyTorch'} is faster)")
        results["ratio_torch_over_clcnn"] = ratio
    results["command"] = "python tools/time_to_accuracy.py " + " ".join(argv)
    results["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
