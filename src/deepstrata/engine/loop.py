"""The one training loop. Every task plugs in a model and a ``Task``; nothing else trains.

The loop owns the device, precision, optimiser, learning-rate schedule, gradient
clipping, progress display, ``metrics.jsonl``, checkpoints, early stopping and exact
resumption. A ``Task`` owns only what differs between problems: how batches are made,
the loss, and the validation metrics.

Exact resumption works because nothing random is carried from batch to batch: batch
``i`` of epoch ``e`` draws its order and augmentation from a generator seeded by
``(seed, e, i)`` (see ``batch_generator``), and torch's global RNG state is saved in
every checkpoint. A run stopped after any checkpoint and resumed therefore repeats
exactly the steps an uninterrupted run takes.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Protocol

import torch
from torch import nn
from tqdm import tqdm

from deepstrata.config import TrainConfig, per_world, resolved_train
from deepstrata.engine import checkpoint as ckpt
from deepstrata.engine import distributed, plateau, tracking
from deepstrata.engine.adamw import AdamW
from deepstrata.engine.devices import autocast, move, resolve_device, synchronize
from deepstrata.engine.faults import reached
from deepstrata.engine.lookahead import Lookahead
from deepstrata.engine.stopping import StopRequests
from deepstrata.errors import ConfigError, Interrupted, TrainingError


class Task(Protocol):
    """What a problem supplies to the loop.

    ``primary_metric`` names the validation metric used for early stopping and the best
    checkpoint (higher is better); ``validate`` returns ``val_loss`` and
    ``val_<primary_metric>`` at least.
    """

    primary_metric: str

    def num_batches(self, batch_size: int) -> int: ...

    def train_batches(self, epoch: int, batch_size: int, seed: int, start: int = 0) -> Iterator[tuple]: ...

    def loss(self, model: nn.Module, batch: tuple) -> tuple[torch.Tensor, torch.Tensor | None]: ...

    def validate(self, model: nn.Module, device: torch.device) -> dict[str, float]: ...


def batch_generator(seed: int, epoch: int, index: int = -1) -> torch.Generator:
    """A CPU generator for one epoch's order (``index=-1``) or one batch's randomness."""
    return torch.Generator().manual_seed(((seed * 1_000_003 + epoch) * 1_000_003 + index + 1) % (2**63))


def learning_rate(config: TrainConfig, step: int, total_steps: int) -> float:
    """Learning rate at ``step``: one-cycle (linear warm-up, linear decay), cosine with warm-up, or constant.

    Warm-up rises from ``lr_start * lr`` and the decay ends at ``lr_end * lr`` (both 0 by
    default); the speed-run recipe starts at 0.2 and ends at 0.07 of the peak.
    """
    if config.schedule == "constant" or total_steps <= 1:
        return config.lr
    warmup = max(1, int(config.warmup_fraction * total_steps)) if config.warmup_fraction > 0 else 0
    if step < warmup:
        return config.lr * (config.lr_start + (1.0 - config.lr_start) * (step + 1) / warmup)
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    if config.schedule == "onecycle":
        shape = 1.0 - progress
    else:
        shape = 0.5 * (1.0 + math.cos(math.pi * progress))
    return config.lr * (config.lr_end + (1.0 - config.lr_end) * max(0.0, shape))


_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)


def build_optimizer(model: nn.Module, config: TrainConfig) -> AdamW | torch.optim.SGD:
    """AdamW (default) or Nesterov SGD over three groups: kernels, other biases, norm parameters.

    AdamW is ``engine.adamw``'s, torch's update without ``torch.optim``'s import of the
    compiler stack at the first step (2 s on two cores); SGD, for the long speed-run
    recipes, stays ``torch.optim.SGD``.

    AdamW decays only weight matrices and kernels. SGD decays every parameter by the same
    amount per step, as the CIFAR speed-run recipes do. Norm parameters (BatchNorm,
    LayerNorm) learn ``norm_lr_scale`` times faster; under SGD their weight decay is
    divided by the same factor so that the shrink per step stays that of the others. Each
    group's ``lr_scale`` is applied by the loop when it sets the scheduled rate.

    Parameters of the layers named in ``freeze_after`` get groups of their own that carry
    ``until_epoch``; from that epoch on the loop sets their learning rate to 0, which
    stops them exactly under SGD and AdamW alike (decay and step both scale with it)
    while DDP still sees the same parameters every step. Those of ``unfreeze_at``'s
    layers carry ``from_epoch``: before it their rate is 0 and the loop drops their
    gradients, so they neither move nor gather optimiser state nor count in gradient
    clipping, as if frozen. ``layer_lr_scale`` multiplies a layer's groups' ``lr_scale``
    (weight decay follows the rate, as in fastai). The layers of ``frozen`` are left out
    (``train`` also turns their gradients off, so DDP ignores them).

    Groups split by (kind, ``until_epoch``, ``from_epoch``, layer scale) and keep the
    order checkpoints hold: kernels, biases, norms, each before its epoch-limited parts;
    with none of these controls set they are exactly the three groups of old, so a
    checkpoint written before them resumes as it would have.
    """
    norm_ids = {id(p) for module in model.modules() if isinstance(module, _NORMS)
                for p in module.parameters(recurse=False)}
    limits = _by_parameter(model, "freeze_after", config.freeze_after)
    starts = {key: at for key, at in _by_parameter(model, "unfreeze_at", config.unfreeze_at).items() if at > 0}
    layer_scales = _by_parameter(model, "layer_lr_scale", config.layer_lr_scale)
    held = _by_parameter(model, "frozen", dict.fromkeys(config.frozen, True))
    sgd = config.optimizer == "sgd"
    scale = config.norm_lr_scale
    settings = {"kernel": (config.weight_decay, 1.0), "bias": (config.weight_decay if sgd else 0.0, 1.0),
                "norm": (config.weight_decay / scale if sgd else 0.0, scale)}  # (weight decay, lr scale)
    members: dict[tuple[str, int | None, int | None, float], list[nn.Parameter]] = {}
    for param in model.parameters():
        if param.requires_grad and id(param) not in held:
            kind = "norm" if id(param) in norm_ids else "kernel" if param.dim() >= 2 else "bias"
            key = (kind, limits.get(id(param)), starts.get(id(param)), layer_scales.get(id(param), 1.0))
            members.setdefault(key, []).append(param)
    if config.frozen and not members:
        raise ConfigError(f"train.frozen: freezing {', '.join(config.frozen)} leaves nothing to train")
    if members and all(start is not None for _, _, start, _ in members):
        first = min(start for _, _, start, _ in members)
        raise ConfigError(f"train.unfreeze_at: every trained layer waits for a later epoch (the first for epoch "
                          f"{first}), so epoch 0 would train nothing; leave at least one layer (such as head) out")
    # Kernels, biases, norms (the order checkpoints hold), each before its epoch-limited parts;
    # groups that differ only in layer scale keep the order their first parameters have in the model.
    order = list(settings)
    groups = []
    for (kind, until, start, layer_scale), params in sorted(
            members.items(), key=lambda item: (order.index(item[0][0]), item[0][1] or 0, item[0][2] or 0)):
        decay, lr_scale = settings[kind]
        groups.append({"params": params, "weight_decay": decay,
                       "lr_scale": lr_scale if layer_scale == 1 else lr_scale * layer_scale}
                      | ({"until_epoch": until} if until is not None else {})
                      | ({"from_epoch": start} if start is not None else {}))
    if sgd:
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.momentum > 0)
    return AdamW(groups, lr=config.lr, betas=(0.9, 0.99), eps=1e-8)


def _named_layers(model: nn.Module, key: str, names) -> nn.ModuleDict | None:
    """``model.layers`` once every name in ``names`` is one of them (``None`` when none are named)."""
    if not names:
        return None
    layers = getattr(model, "layers", None)
    if not isinstance(layers, nn.ModuleDict):
        raise ConfigError(f"train.{key}: {type(model).__name__} has no named layers to {_VERBS[key]}")
    unknown = [name for name in names if name not in layers]
    if unknown:
        raise ConfigError(f"train.{key}: unknown layer {', '.join(map(repr, unknown))}; "
                          f"this model has: {', '.join(layers.keys())}")
    return layers


_VERBS = {"freeze_after": "freeze", "frozen": "freeze", "unfreeze_at": "unfreeze", "layer_lr_scale": "scale"}


def _by_parameter(model: nn.Module, key: str, values: dict) -> dict:
    """``id(parameter) -> value`` for the named layers in ``values`` (the train config's ``key``)."""
    layers = _named_layers(model, key, values)
    if layers is None:
        return {}
    return {id(param): value for name, value in values.items() for param in layers[name].parameters()}


def _held_layers(model: nn.Module, config: TrainConfig, epoch: int) -> list[nn.Module]:
    """The named layers that do not train in ``epoch``: ``frozen``, and ``unfreeze_at``'s that still wait."""
    names = list(config.frozen) + [name for name, start in config.unfreeze_at.items() if epoch < start]
    layers = _named_layers(model, "frozen" if config.frozen else "unfreeze_at", names)
    return [layers[name] for name in names] if layers is not None else []


@dataclass
class TrainResult:
    best_epoch: int
    best_metric: float
    epochs_run: int
    steps: int
    train_seconds: float
    stopped_early: bool
    device: str
    history: list[dict]
    plateau: dict | None = None        # the plateau rule's record, when it ended the run (engine.plateau)


def _read_history(path: Path, upto_epoch: int) -> list[dict]:
    """The rows of ``metrics.jsonl`` up to ``upto_epoch``; a torn last line (a kill mid-append) is dropped."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and isinstance(row.get("epoch"), int):
            rows.append(row)
    return [row for row in rows if row["epoch"] <= upto_epoch]


def json_row(row: dict) -> str:
    """One ``metrics.jsonl`` line: a non-finite value is written as null (NaN and Infinity are not JSON)."""
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
    return json.dumps(clean, allow_nan=False)


def _poll_interval(device: torch.device) -> int:
    """Steps between checks of the loss and of stop requests: each check waits for the device."""
    return 1 if device.type == "cpu" else 16


def _diverged(epoch: int, step: int, config: TrainConfig) -> TrainingError:
    return TrainingError(
        f"epoch {epoch + 1}, step {step}: loss is not finite (NaN or infinity); training stopped and the last "
        f"good checkpoint is kept. Likely cause: a learning rate too high for this model (lr {config.lr:g}; "
        "try a tenth of it), or non-finite values in the input data"
        + (" or fp16 overflow (try --precision bf16)" if config.precision == "fp16" else ""))


def train(
    model: nn.Module,
    task: Task,
    config: TrainConfig,
    run_dir: Path | None = None,
    *,
    resume: bool = False,
    quiet: bool = False,
    description: str = "train",
) -> TrainResult:
    """Train ``model`` on ``task``; with ``run_dir``, log, checkpoint and keep the best weights there.

    Under torchrun each process trains its share of every global batch through DDP; only
    rank 0 writes files or prints, every rank can resume from them, and validation
    metrics are summed across ranks. The model ends holding the best weights seen on the
    validation split.

    The parameters of ``config.frozen``'s layers have their gradients turned off for the
    run (before the optimiser and DDP see them) and back on when it ends, so the model
    can be trained again under another schedule (a linear probe, then fine-tuning).
    """
    frozen = _by_parameter(model, "frozen", dict.fromkeys(config.frozen, True))
    held = [param for param in model.parameters() if param.requires_grad and id(param) in frozen]
    for param in held:
        param.requires_grad_(False)
    try:
        return _train(model, task, config, run_dir, resume=resume, quiet=quiet, description=description)
    finally:
        for param in held:
            param.requires_grad_(True)


def _train(model: nn.Module, task: Task, config: TrainConfig, run_dir: Path | None, *, resume: bool, quiet: bool,
           description: str) -> TrainResult:
    if config.epochs is None or config.batch_size is None:
        # Sized from the data when the caller left them open (see config.resolved_train).
        config = resolved_train(config, getattr(task, "num_examples", 10_000))
    plateau_on = config.plateau == "on"  # "auto" left here means the caller chose the epochs: they run
    env = distributed.setup(resolve_device(config.device).type)
    config = per_world(config, env.world_size)  # a per-device batch becomes the global one
    device = distributed.device_for_rank(resolve_device(config.device))
    main = env.is_main
    if main and not quiet and env.world_size > 1:
        print(f"data parallel: {env.world_size} processes, global batch {config.batch_size} "
              f"({config.batch_size // env.world_size} each), lr {config.lr:g}", file=sys.stderr)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    # Each rank draws its own dropout masks (rank 0 those of a single process); data order and
    # augmentation come from batch_generator, the same on every rank.
    torch.manual_seed(config.seed + env.rank)
    model.to(device)
    if config.uses_channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, config)
    scaler = torch.amp.GradScaler(device.type, enabled=config.precision == "fp16")
    steps_per_epoch = task.num_batches(config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    metric_key = f"val_{task.primary_metric}"

    ckpt_dir = run_dir / "checkpoints" if run_dir is not None else None
    metrics_path = run_dir / "metrics.jsonl" if run_dir is not None and main else None
    loop = {"epoch": 0, "batch": 0, "step": 0, "best_metric": -math.inf, "best_loss": math.inf, "best_epoch": 0,
            "bad_epochs": 0, "seconds": 0.0}
    history: list[dict] = []
    lookahead = Lookahead(model) if config.lookahead else None
    extra = lookahead.average if lookahead is not None else None
    if resume and ckpt_dir is None:
        raise ValueError("resume needs a run directory")
    resume = resume or (env.restarted and ckpt_dir is not None)  # torchrun restarted the workers
    if resume and ckpt.has_checkpoint(ckpt_dir):
        loop, source, skipped = ckpt.load_checkpoint(ckpt_dir, model, optimizer, extra, env.rank, device)
        if main:
            if source != ckpt_dir:
                ckpt.publish_best(ckpt_dir, source)  # best.safetensors is this checkpoint's best
            for reason in skipped:  # said even with quiet: where a run continues from is not progress output
                print(f"note: skipped a damaged checkpoint: {reason}", file=sys.stderr)
            print(f"resuming from {source.relative_to(run_dir)} (epoch {loop['epoch']}, batch {loop['batch']}, "
                  f"step {loop['step']})", file=sys.stderr)
        if metrics_path is not None:
            history = _read_history(metrics_path, loop["epoch"])
            ckpt.atomic_write_text(metrics_path, "".join(json_row(row) + "\n" for row in history))
    else:
        if resume and main:
            print("note: no checkpoint was written before the run stopped; starting it from the beginning",
                  file=sys.stderr)
        if metrics_path is not None:
            ckpt.atomic_write_text(metrics_path, "")
    best_state = None if ckpt_dir is not None else {k: v.detach().clone() for k, v in model.state_dict().items()}
    loop.setdefault("smoothed", [])
    loop.setdefault("plateau", None)
    warmup_steps = int(config.warmup_fraction * total_steps) if config.schedule != "constant" else 0

    def rate(step: int) -> float:
        """The scheduled learning rate, or the plateau rule's cool-down once it has fired."""
        fired = loop["plateau"]
        if fired is None:
            return learning_rate(config, step, total_steps)
        return plateau.cooldown_lr(fired["from_lr"], config.lr * config.lr_end if config.schedule != "constant"
                                   else config.lr, step - fired["from_step"], fired["steps"])

    def last_epoch() -> int:
        return loop["plateau"]["ends_at_epoch"] if loop["plateau"] is not None else config.epochs

    net = distributed.wrap(model, device)
    if config.compile:
        net = torch.compile(net)

    unsaved_rows: list[dict] = []      # metrics.jsonl rows since the last checkpoint, written with the next one
    held_best: dict | None = None      # the best weights of an epoch that ended without a checkpoint
    holds_best = False                 # the last checkpoint saved the model's weights as the best, and they are
    last_save = time.perf_counter()    # still the model's (nothing trains after the end-of-run checkpoint)

    def write_rows() -> None:
        if metrics_path is not None and unsaved_rows:
            ckpt.append_line(metrics_path, "".join(json_row(row) + "\n" for row in unsaved_rows).rstrip("\n"))
            reached("epoch:metrics")
        unsaved_rows.clear()

    def save(improved: bool = False) -> None:  # on every rank: the ranks' random states are gathered to rank 0
        nonlocal held_best, holds_best, last_save
        write_rows()
        if ckpt_dir is None:
            return
        rng_states = distributed.gather_object(ckpt.rng_state(device)) if env.active else None
        if main:
            tracker.flush()  # the events up to a checkpoint are on disk with it
            ckpt.save_checkpoint(ckpt_dir, model, optimizer, loop, extra, rng_states, improved=improved,
                                 best_weights=None if improved else held_best)
        held_best = None
        holds_best = improved
        distributed.barrier()  # no rank runs ahead (or exits, when stopping) while rank 0 is still writing
        last_save = time.perf_counter()

    def checkpoint_due() -> bool:
        """Rank 0's clock says a time-based checkpoint is due (``poll`` makes every rank agree)."""
        return bool(config.checkpoint_seconds) and main and \
            time.perf_counter() - last_save >= config.checkpoint_seconds

    def poll(loss: torch.Tensor | None) -> tuple[bool, bool, bool]:
        """(a stop was requested, the loss is not finite, a checkpoint is due by time) — agreed by every rank,
        so all act at the same step."""
        flags = torch.tensor([float(stops.signum is not None), 0.0, float(checkpoint_due())], device=device)
        if loss is not None:
            flags[1] = (~torch.isfinite(loss.detach())).float()
        if env.active:
            flags = distributed.all_reduce_sum(flags)
        stop, bad, due = flags.tolist()
        return stop > 0, bad > 0, due > 0

    def interrupted(epoch: int) -> Interrupted:
        where = f"epoch {epoch + 1}, batch {loop['batch']}, step {loop['step']}"
        if ckpt_dir is None:
            return Interrupted(f"stopped by {stops.name or 'a signal'} at {where}; nothing saved (no run directory)",
                               stops.signum or 15)
        return Interrupted(f"stopped by {stops.name or 'a signal on another rank'} at {where}; checkpoint "
                           f"{ckpt.step_name(loop['step'])} saved. Continue with: deepstrata fit --out {run_dir} "
                           "--resume", stops.signum or 15)

    interval = _poll_interval(device)
    show = main and not quiet and sys.stderr.isatty()
    stopped_early = bool(config.patience and loop["bad_epochs"] >= config.patience)
    tracker = tracking.Tracker(run_dir if main else None, config.tensorboard,
                               resume_step=loop["step"] if resume else None)
    with StopRequests() as stops, tracker:
        for epoch in range(loop["epoch"], config.epochs if not stopped_early else 0):
            net.train()
            for layer in _held_layers(model, config, epoch):  # BatchNorm statistics and dropout as they were
                layer.eval()
            waiting = [group["params"] for group in optimizer.param_groups if epoch < group.get("from_epoch", 0)]
            epoch_start = time.perf_counter()
            tracker.begin_epoch()
            first_batch = loop["batch"]
            # A mid-epoch checkpoint holds the partial sums of all ranks; rank 0 carries them on.
            partial = loop.pop("partial", None)
            if partial is None or not main:
                partial = {"loss": 0.0, "correct": 0.0, "seen": 0}
            sums = torch.tensor([partial["loss"], partial["correct"]], dtype=torch.float64, device=device)
            seen = partial["seen"]
            correct = None
            stop = timed = False
            bar = tqdm(
                total=steps_per_epoch,
                initial=first_batch,
                desc=f"{description} epoch {epoch + 1}/{config.epochs}",
                disable=not show,
                leave=False,
                dynamic_ncols=True,
            )
            batches = task.train_batches(epoch, config.batch_size, config.seed, first_batch)
            for index, batch in enumerate(batches, first_batch):
                batch = move(batch, device)
                lr = rate(loop["step"])
                for group in optimizer.param_groups:
                    frozen = epoch >= group.get("until_epoch", math.inf) or epoch < group.get("from_epoch", 0)
                    group["lr"] = 0.0 if frozen else lr * group.get("lr_scale", 1.0)
                with autocast(device, config.precision):
                    loss, correct = task.loss(net, batch)
                if loop["step"] % interval == 0 or index + 1 == steps_per_epoch:
                    stop, bad, timed = poll(loss)
                    if bad:  # before the update: the weights in memory and on disk stay finite
                        raise _diverged(epoch, loop["step"] + 1, config)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                for params in waiting:  # layers not unfrozen yet: no step, no optimiser state, no share in clipping
                    for param in params:
                        param.grad = None
                if config.grad_clip > 0:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                count = len(batch[-1])  # batches end with their targets
                sums[0] += loss.detach() * count
                if correct is not None:
                    sums[1] += correct
                seen += count
                loop["step"] += 1
                tracker.step(loop["step"], loss.detach(), lr, count * env.world_size)
                reached("step")
                if lookahead is not None:
                    lookahead.step(model, loop["step"], total_steps)
                if show:
                    bar.update(1)
                    if index % 10 == 0 or index == steps_per_epoch - 1:
                        rate = seen * env.world_size / max(time.perf_counter() - epoch_start, 1e-9)
                        postfix = {"loss": f"{sums[0].item() / seen:.4f}", "samples/s": f"{rate:.0f}"}
                        if correct is not None:
                            postfix["acc"] = f"{sums[1].item() / seen:.4f}"
                        bar.set_postfix(postfix)
                due = timed or (config.checkpoint_every and loop["step"] % config.checkpoint_every == 0)
                if (due or stop) and index + 1 < steps_per_epoch:  # the epoch's end decides its own checkpoint
                    synchronize(device)
                    loop.update(epoch=epoch, batch=index + 1, seconds=loop["seconds"] + time.perf_counter() - epoch_start)
                    so_far = distributed.all_reduce_sum(
                        torch.cat([sums, torch.tensor([seen], dtype=torch.float64, device=device)])).tolist()
                    loop["partial"] = {"loss": so_far[0], "correct": so_far[1], "seen": int(so_far[2])}
                    epoch_start = time.perf_counter()
                    save()
                    timed = False
                    del loop["partial"]
                    if stop:
                        bar.close()
                        raise interrupted(epoch)
            bar.close()
            synchronize(device)  # queued GPU work belongs to this epoch's time
            loop["seconds"] += time.perf_counter() - epoch_start
            totals = distributed.all_reduce_sum(torch.cat([sums, torch.tensor([seen], dtype=torch.float64, device=device)]))
            row = {"epoch": epoch + 1, "step": loop["step"], "train_loss": totals[0].item() / max(totals[2].item(), 1)}
            if totals[2].item() and correct is not None:
                row["train_accuracy"] = totals[1].item() / totals[2].item()
            row.update(task.validate(model, device))
            row["lr"] = rate(loop["step"] - 1)
            row["seconds"] = round(loop["seconds"], 3)
            history.append(row)
            tracker.epoch(loop["step"], row)
            unsaved_rows.append(row)
            # Ties on the metric (common on small validation splits) go to the lower validation loss.
            # Without a validation split (val_fraction 0) every epoch "improves": the last one is kept.
            # A non-finite validation metric never counts as better.
            value = row.get(metric_key)
            improved = metric_key not in row or (value is not None and math.isfinite(value) and (
                value > loop["best_metric"] or (
                    value == loop["best_metric"] and row.get("val_loss", math.inf) < loop.get("best_loss", math.inf))))
            if improved:
                loop.update(best_metric=row.get(metric_key, -math.inf), best_loss=row.get("val_loss", math.inf),
                            best_epoch=epoch + 1, bad_epochs=0)
                if ckpt_dir is None:
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                loop["bad_epochs"] += 1
            loop.update(epoch=epoch + 1, batch=0)
            value = row.get(metric_key)
            announce = None
            if plateau_on and loop["plateau"] is None and value is not None and math.isfinite(value):
                loop["smoothed"] = plateau.smooth(loop["smoothed"], value)
                fired = plateau.fires(loop["smoothed"], epoch + 1, config.epochs, loop["step"] >= warmup_steps)
                if fired is not None:
                    fired.update(metric=metric_key, from_step=loop["step"], from_lr=rate(loop["step"]),
                                 steps=fired["cooldown_epochs"] * steps_per_epoch)
                    loop["plateau"] = fired
                    row["plateau"] = dict(fired)  # the row is written with the next checkpoint
                    announce = (f"plateau: smoothed {metric_key} gained {fired['gain']:+.4f} (< {fired['margin']}) "
                                f"over {fired['over_epochs']} epochs; cooling down for {fired['cooldown_epochs']} "
                                f"epoch(s), ending at epoch {fired['ends_at_epoch']} of {config.epochs}")
            stopping = bool(config.patience and loop["bad_epochs"] >= config.patience)
            # Collective: rank 0's clock decides for every rank (save gathers from all of them).
            flags = torch.tensor([float(checkpoint_due() or not config.checkpoint_seconds), float(stops.signum
                                 is not None)], device=device)
            if env.active:
                flags = distributed.all_reduce_sum(flags)
            by_time, signalled = (value > 0 for value in flags.tolist())
            if by_time or signalled or stop or stopping or epoch + 1 >= last_epoch() or ckpt_dir is None:
                save(improved)
            elif improved and main:  # kept until the next checkpoint writes it as best.safetensors (rank 0)
                held_best = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if main and not quiet:
                extras = "  ".join(f"{k}={v:.4f}" for k, v in row.items() if k.startswith("val_"))
                print(f"epoch {epoch + 1}/{config.epochs}  train_loss={row['train_loss']:.4f}  {extras}  "
                      f"({row['seconds']:.1f}s)", file=sys.stderr)
                if announce is not None:  # after the line of the epoch that fired it
                    print(announce, file=sys.stderr)
            if stop or signalled:  # a signal during the last step or validation: this checkpoint is the one
                if epoch + 1 < last_epoch():
                    raise interrupted(epoch)
            if stopping:
                stopped_early = True
                break
            if epoch + 1 >= last_epoch():  # the plateau rule's cool-down is over
                break


    distributed.barrier()
    # When the last epoch was the best, the model already holds the weights best.safetensors has.
    if not holds_best and ckpt_dir is not None and (ckpt_dir / "best.safetensors").is_file():
        ckpt.load_weights(ckpt_dir / "best.safetensors", model)
    elif best_state is not None and loop["best_epoch"] > 0:
        model.load_state_dict(best_state)
    return TrainResult(
        best_epoch=loop["best_epoch"],
        best_metric=loop["best_metric"],
        epochs_run=loop["epoch"],
        steps=loop["step"],
        train_seconds=loop["seconds"],
        stopped_early=stopped_early,
        device=str(device),
        history=history,
        plateau=loop["plateau"],
    )
