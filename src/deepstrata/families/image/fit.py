"""How the image family fits: in-memory image sets, and shard directories streamed from disk.

A shard directory (written by ``deepstrata shard``) is a source of the image family, not a
family of its own: the same models, the same run directory and the same verbs; only
reading, batching and the baselines' sample differ, so each step below has its two cases.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass

import torch

from deepstrata.config import per_world
from deepstrata.engine import distributed
from deepstrata.errors import ConfigError
from deepstrata.families.base import Built, FitContext, Prepared
from deepstrata.families.classification import classification_row, write_confusion
from deepstrata.records import write_run_records

TASK = "image-classification"


@dataclass
class InMemory:
    """The image family's part of ``Prepared`` for images decoded into memory."""

    dataset: object
    splits: object
    transfer: object = None  # TransferPlan: the network the model starts from


@dataclass
class TransferPlan:
    source: object       # transfer.Source
    reused: list
    adapter: str | None


@dataclass
class Sharded:
    """The image family's part of ``Prepared`` for a shard directory."""

    shards: object
    counts: dict
    spill: object = None  # spill.Spill: a folder over the memory budget, written into the run as shards


def check_shard_config(cfg, *, written: bool = True) -> None:
    """Options that need the whole training set in memory are refused for shards, by name; for shards already
    ``written`` (a shard directory given as data) also the options that chose their format and size."""
    for key in ("format", "image_size") if written else ():
        if getattr(cfg.data, key) is not None:
            raise ConfigError(f"data.{key}: shards keep the format and size they were written with; "
                              f"give --{key.replace('_', '-')} to `deepstrata shard` instead")
    if cfg.train.data_on_device:
        raise ConfigError("train.data_on_device: shards stream from disk; --data-on-device is for data sets "
                          "that fit in memory")
    for key, value, refused in (("train.flip", cfg.train.flip, cfg.train.flip == "alternate"),
                                ("train.tta", cfg.train.tta, cfg.train.tta),
                                ("train.translate_fill", cfg.train.translate_fill, cfg.train.translate_fill != "zeros"),
                                ("model.name", cfg.model.name, cfg.model.name == "whitened-cnn"),
                                ("data.labels_per_class", cfg.data.labels_per_class,
                                 cfg.data.labels_per_class is not None)):
        if refused:
            raise ConfigError(f"{key}: {value!r} is for in-memory image runs (it needs the training set at hand "
                              "before training); shards stream")


def read(cfg) -> Prepared:
    from deepstrata.data.shards import is_shard_dir

    if is_shard_dir(cfg.data.source) and cfg.transfer.source is not None:
        raise ConfigError("transfer.source: transfer reads its images into memory (a new task has few labels); "
                          "give the image folder or set, not shards")
    if is_shard_dir(cfg.data.source):
        from deepstrata.data.shards import open_shards

        check_shard_config(cfg)
        shards = open_shards(cfg.data.source)
        counts = {name: shards.splits[name].count for name in ("train", "val", "test")}
        return Prepared(source=cfg.data.source, train_size=counts["train"], guarded_paths=(cfg.data.source,),
                        own=Sharded(shards, counts))
    from deepstrata.data.image_preprocess import OverBudget
    from deepstrata.data.images import load_images
    from deepstrata.data.split import split_dataset

    device = distributed.device_type(cfg.train.device)
    source = _transfer_source(cfg, None) if _source_before_data(cfg) else None
    image_size = cfg.data.image_size
    if source is not None and image_size is None and source.in_shape[1] == source.in_shape[2]:
        image_size = source.in_shape[1]  # a folder is read at the source's input size (short side, centre crop)
    try:  # an image folder's size follows the model and the device (data.image_preprocess.input_size)
        dataset = load_images(cfg.data.source, format=cfg.data.format, image_size=image_size,
                              skip_bad=cfg.data.skip_bad, data_dir=cfg.data.data_dir, model=cfg.model.name,
                              device=device)
    except OverBudget as over:  # too large to decode into memory: streamed through shards in the run
        from deepstrata.families.image import spill

        if cfg.transfer.source is not None:
            raise
        check_shard_config(cfg, written=False)
        planned = spill.plan(cfg, over, device)
        return Prepared(source=cfg.data.source, train_size=planned.counts["train"],
                        guarded_paths=(cfg.data.source, cfg.data.data_dir),
                        own=Sharded(None, planned.counts, planned),
                        cfg=_resolved(cfg, planned.source.preprocess))
    splits = split_dataset(dataset, seed=cfg.train.seed, val_fraction=cfg.data.val_fraction,
                           test_fraction=cfg.data.test_fraction)
    plan = None
    if cfg.transfer.source is not None:
        splits, plan = _adapted(cfg, splits, source or _transfer_source(cfg, tuple(splits.train_x.shape[1:])))
    if cfg.data.labels_per_class is not None:
        from deepstrata.data.split import limit_labels

        splits = limit_labels(splits, cfg.data.labels_per_class, cfg.train.seed)
    cfg = _resolved(cfg, dataset.preprocess)
    if plan is not None:
        cfg = _transferred_config(cfg, plan, len(splits.train_y))
    return Prepared(source=cfg.data.source, train_size=len(splits.train_y),
                    guarded_paths=(cfg.data.source, cfg.data.data_dir), own=InMemory(dataset, splits, plan), cfg=cfg)


def _source_before_data(cfg) -> bool:
    """A run or a pretrained network fixes the input size, so it is opened first; a weights file of an
    architecture sized by its data (``--arch cnn``) is opened once the data's shape is known."""
    from pathlib import Path

    if cfg.transfer.source is None:
        return False
    return not (Path(cfg.transfer.source).expanduser().is_file() and cfg.transfer.arch != "efficientnet-lite0")


def _transfer_source(cfg, data_shape):
    from deepstrata.families.image import transfer

    return transfer.open_source(cfg.transfer.source, arch=cfg.transfer.arch, width=cfg.model.width,
                                depth=cfg.model.depth, in_shape=data_shape, image_size=cfg.data.image_size)


def _adapted(cfg, splits, source):
    """The splits brought to the source's input, and the plan of what is reused."""
    from deepstrata.families.image import transfer

    reused = transfer.reused_layers(source, cfg.transfer.up_to)
    adapted, note = {}, None
    for part in ("train_x", "val_x", "test_x"):
        adapted[part], note = transfer.adapt(getattr(splits, part), source.in_shape)
    notes = [*splits.notes, note] if note else splits.notes
    return dataclasses.replace(splits, **adapted, notes=notes), TransferPlan(source, reused, note)


def _transferred_config(cfg, plan: TransferPlan, train_size: int):
    """The run's config says what it is: the source's architecture, and the mode as the loop's per-layer
    controls (``engine.layer_schedule``), resolved into config.yaml so that a resume trains the same way."""
    from deepstrata.config import resolved_train
    from deepstrata.engine.layer_schedule import transfer_schedule

    source = plan.source
    cfg = cfg.override(model={"name": source.family, "width": source.width, "depth": source.depth})
    # a recipe's own freeze_after (whitened stem) is for training from scratch, not for reused layers
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, freeze_after={
        name: epochs for name, epochs in cfg.train.freeze_after.items() if name not in plan.reused}))
    epochs = resolved_train(cfg.train, train_size).epochs
    return cfg.override(train=transfer_schedule(source.layer_names, plan.reused, cfg.transfer.mode, epochs))


def _resolved(cfg, chosen: dict | None):
    """The size the policy chose and the training crop are part of the resolved config: a resume (on another
    device too) reads the same size and crops the same way instead of choosing again."""
    from deepstrata.families.image.task import resolve_crop

    if cfg.data.image_size is None and chosen is not None and chosen.get("resize") == "short-side":
        cfg = cfg.override(data={"image_size": chosen["size"]})
    return cfg.override(train={"crop": resolve_crop(cfg.train.crop)})


def describe(prepared: Prepared, load_seconds: float) -> list[str]:
    if isinstance(prepared.own, Sharded) and prepared.own.spill is not None:
        planned = prepared.own.spill
        return [planned.line(), *(f"note: {note}" for note in planned.source.notes)]
    if isinstance(prepared.own, Sharded):
        shards, counts = prepared.own.shards, prepared.own.counts
        c, h, w = shards.image_shape
        return [f"data: shards {shards.root} of {shards.source} — {c}x{h}x{w}, {len(shards.classes)} classes; "
                f"split train {counts['train']} / val {counts['val']} / test {counts['test']} "
                f"(written with seed {shards.seed}); opened in {load_seconds:.1f}s"]
    dataset, splits = prepared.own.dataset, prepared.own.splits
    c, h, w = tuple(splits.train_x.shape[1:])
    return [f"data: {dataset.source} — {c}x{h}x{w}, {len(splits.classes)} classes; split train "
            f"{len(splits.train_y)} / val {len(splits.val_y)} / test {len(splits.test_y)}"
            f"{' (official test split)' if splits.test_is_official else ''}; loaded in {load_seconds:.1f}s",
            *(f"note: {note}" for note in dataset.notes + splits.notes)]


def input_side(prepared: Prepared) -> int | None:
    """The shorter side of the images a fit trains on, or None while a folder over the memory budget is unread."""
    own = prepared.own
    if isinstance(own, Sharded):
        return min(own.shards.image_shape[-2:]) if own.shards is not None else None
    return min(own.splits.train_x.shape[-2:])


def _info(net, classes: list[str], data: dict) -> dict:
    return {"task": TASK, "spec": net.spec, "classes": classes, "layers": net.layer_names,
            "feature_dim": net.feature_dim, "params": sum(p.numel() for p in net.parameters()), "data": data}


def build(cfg, prepared: Prepared, fit: FitContext) -> Built:
    from deepstrata.families.image.task import flip_mode
    from deepstrata.models.registry import build_image_model

    if isinstance(prepared.own, Sharded):
        return _build_sharded(cfg, prepared.own, fit)
    from deepstrata.families.image.task import ImageClassificationTask, channel_stats, to_float

    dataset, splits, plan = prepared.own.dataset, prepared.own.splits, prepared.own.transfer
    in_shape = tuple(splits.train_x.shape[1:])
    torch.manual_seed(cfg.train.seed)
    if plan is not None:  # the source's architecture, input statistics and reused layers; a fresh head
        from deepstrata.families.image import transfer

        net = transfer.build(plan.source, len(splits.classes), plan.reused)
    else:
        mean, std = channel_stats(splits.train_x)
        net = build_image_model(cfg.model.name, in_shape, len(splits.classes), width=cfg.model.width,
                                depth=cfg.model.depth, mean=mean, std=std)
    if hasattr(net, "init_whitening") and plan is None:  # the whitened CNN's stem is fitted to 5,000 random training images
        sample = torch.randperm(len(splits.train_x), generator=torch.Generator().manual_seed(cfg.train.seed))[:5000]
        net.init_whitening(to_float(splits.train_x[sample]))
    data_device = fit.device if cfg.train.data_on_device else torch.device("cpu")
    t = cfg.train
    task = ImageClassificationTask(
        splits.train_x.to(data_device), splits.train_y.to(data_device), splits.val_x.to(data_device),
        splits.val_y.to(data_device), num_classes=len(splits.classes), augment=t.augment,
        flip=flip_mode(t.flip, in_shape[0]), translate=t.translate, translate_fill=t.translate_fill, crop=t.crop,
        label_smoothing=t.label_smoothing, eval_batch_size=t.eval_batch_size, precision=t.precision,
        channels_last=t.uses_channels_last, tta=t.tta,
    )
    data = {"source": dataset.source, "format": dataset.format, "notes": dataset.notes + splits.notes,
            "input_shape": list(in_shape), "augmentation": task.describe_augmentation()}
    if dataset.preprocess is not None:  # what predict / evaluate / inspect repeat on new files
        data["preprocess"] = dataset.preprocess
    info = _info(net, splits.classes, data)
    name = cfg.model.name
    if plan is not None:
        from deepstrata.families.image import transfer

        fresh = [layer for layer in net.layer_names if layer not in plan.reused]
        info["transfer"] = transfer.record(plan.source, cfg.transfer.mode, plan.reused, fresh, plan.adapter)
        name = (f"{net.spec['family']} from {plan.source.describe()} ({cfg.transfer.mode}: reused "
                f"{', '.join(plan.reused)}; fresh {', '.join(fresh)})")
    line = (f"model: {name} ({info['params']:,} parameters; layers {', '.join(net.layer_names)}) on "
            f"{fit.device}; augmentation: {task.describe_augmentation()}")
    return Built(net=net, task=task, info=info, model_line=line, description=cfg.model.name)


def _build_sharded(cfg, sharded: Sharded, fit: FitContext) -> Built:
    from deepstrata.families.image.streaming import ShardedImageTask
    from deepstrata.families.image.task import flip_mode, resolve_crop
    from deepstrata.models.registry import build_image_model

    if sharded.spill is not None and sharded.shards is None:
        from deepstrata.families.image import spill

        def say(message: str) -> None:
            if not fit.quiet:
                print(message, file=sys.stderr)

        sharded.shards = spill.write(cfg, sharded.spill, fit.run_dir, fit.resuming, fit.env.world_size, say)
    shards, counts = sharded.shards, sharded.counts
    in_shape = tuple(shards.image_shape)
    torch.manual_seed(cfg.train.seed)
    net = build_image_model(cfg.model.name, in_shape, len(shards.classes), width=cfg.model.width,
                            depth=cfg.model.depth, mean=shards.mean, std=shards.std)
    env = fit.env
    task = ShardedImageTask(
        shards, buffer_size=None, rank=env.rank, world_size=env.world_size, augment=cfg.train.augment,
        flip=flip_mode(cfg.train.flip, in_shape[0]) == "random", crop=resolve_crop(cfg.train.crop),
        label_smoothing=cfg.train.label_smoothing,
        eval_batch_size=cfg.train.eval_batch_size, precision=cfg.train.precision,
        channels_last=cfg.train.uses_channels_last,
    )
    streaming = f"streamed from {len(task.train.shards)} train shards, shuffle buffer {task.buffer_size} examples"
    if env.world_size > 1:
        global_batch = per_world(cfg.train, env.world_size).batch_size
        used = task.num_batches(global_batch) * global_batch
        streaming += (f", {env.world_size} ranks reading whole shards: {used:,} of {counts['train']:,} train examples "
                      "per epoch (a different remainder each epoch)")
    data = {"source": cfg.data.source, "format": "shards", "notes": shards.notes + [streaming],
            "input_shape": list(in_shape), "augmentation": task.describe_augmentation()}
    if sharded.spill is not None:  # the folder, streamed through the run's own shards (evaluate/inspect read them)
        from deepstrata.families.image.spill import SHARD_DIR

        data.update(format="folder", shards=SHARD_DIR)
        data["notes"] = [sharded.spill.line().removeprefix("data: "), *data["notes"]]
    if shards.preprocess is not None:  # what predict / evaluate repeat on new image files
        data["preprocess"] = shards.preprocess
    info = _info(net, shards.classes, data)
    line = (f"model: {cfg.model.name} ({info['params']:,} parameters) on {fit.device}; {streaming}; "
            f"augmentation: {task.describe_augmentation()}")
    return Built(net=net, task=task, info=info, model_line=line, description=cfg.model.name,
                 own={"streaming": streaming})


def write_records(cfg, built: Built, fit: FitContext) -> None:
    write_run_records(fit.run_dir, built.info, fit.device, cfg.train.seed, fit.env.world_size,
                      (cfg.train.precision, fit.precision_reason))


def score(cfg, prepared: Prepared, built: Built, result, fit: FitContext) -> list[dict]:
    if isinstance(prepared.own, Sharded):
        predicted, truth, _ = built.task.predictions(built.net, fit.device, "test")
        classes, settings = prepared.own.shards.classes, {"data": built.own["streaming"]}
    else:
        splits = prepared.own.splits
        predicted = built.task.predict(built.net, splits.test_x, fit.device).argmax(1).numpy()
        truth, classes, settings = splits.test_y.numpy(), splits.classes, {}
    write_confusion(fit.run_dir, classes, truth, predicted)
    return [classification_row(cfg.model.name, len(classes), truth, predicted, result, built.net, **settings)]


def split_record(cfg, prepared: Prepared) -> dict:
    if isinstance(prepared.own, Sharded):
        shards = prepared.own.shards
        return {**prepared.own.counts, "test_is_official": shards.test_is_official, "seed": shards.seed}
    splits = prepared.own.splits
    return {"train": len(splits.train_y), "val": len(splits.val_y), "test": len(splits.test_y),
            "test_is_official": splits.test_is_official, "seed": cfg.train.seed}


def baselines(cfg, prepared: Prepared, built: Built, say) -> list[dict]:
    if isinstance(prepared.own, Sharded):
        return _sharded_baselines(cfg, prepared.own, built.task, say)
    splits = prepared.own.splits
    say("baselines: hand-engineered features (HOG + intensity histogram, raw pixels) → logistic regression")
    return _fitted_rows(cfg, (splits.train_x, splits.train_y, splits.val_x, splits.val_y, splits.test_x,
                              splits.test_y), len(splits.classes))


def _fitted_rows(cfg, arrays: tuple, num_classes: int) -> list[dict]:
    """``run_image_baselines`` on the six arrays, in the scikit-learn helper process when one waits (``row["settings"]
    ["process"]`` says where)."""
    from deepstrata.baselines import helper
    from deepstrata.baselines.image_features import run_image_baselines

    results, where = helper.run(run_image_baselines, *arrays, num_classes, seed=cfg.train.seed)
    rows = [baseline.row() for baseline in results]
    for row in rows:
        row["settings"]["process"] = where
    return rows


def _sharded_baselines(cfg, sharded: Sharded, task, say) -> list[dict]:
    """Fitted on a seeded sample of the train and val shards, scored on the whole test split — or skipped,
    with a line, when the test split is larger than the baselines may load."""
    from deepstrata.data.image_preprocess import format_bytes
    from deepstrata.families.image.streaming import baseline_sample_sizes, baseline_test_limit

    shards, counts = sharded.shards, sharded.counts
    if shards.nbytes("test") > baseline_test_limit():
        say(f"baselines: skipped — the test split ({format_bytes(shards.nbytes('test'))} of pixels) is "
            f"larger than the {format_bytes(baseline_test_limit())} the baselines may load")
        return []
    train_sample, val_sample = baseline_sample_sizes(tuple(shards.image_shape))
    train_x, train_y = task.sample("train", train_sample, cfg.train.seed)
    val_x, val_y = task.sample("val", val_sample, cfg.train.seed)
    test_x, test_y = task.sample("test", counts["test"], cfg.train.seed)
    say(f"baselines: hand-engineered features → logistic regression, fitted on a sample of "
        f"{len(train_y)} of {counts['train']} train and {len(val_y)} of {counts['val']} val images, "
        f"scored on all {counts['test']} test images")
    rows = _fitted_rows(cfg, (train_x, train_y, val_x, val_y, test_x, test_y), len(shards.classes))
    for row in rows:
        row["settings"]["sampled_from_shards"] = {"train": [len(train_y), counts["train"]],
                                                  "val": [len(val_y), counts["val"]]}
    return rows


def comparison(cfg, prepared: Prepared, rows: list[dict]) -> dict:
    return {"task": TASK, "data": cfg.data.source, "split": split_record(cfg, prepared),
            "primary_metric": "accuracy", "rows": rows}

