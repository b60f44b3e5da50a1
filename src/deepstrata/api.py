"""``fit``: data → split → model → the training loop → test metrics, baselines, report.

This is the whole main job. The CLI's ``fit`` verb only parses arguments and calls it.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import torch

from deepstrata.config import RunConfig, dump_config, load_config, resolved_train
from deepstrata.engine import checkpoint as ckpt
from deepstrata.engine import distributed
from deepstrata.engine.devices import resolve_device
from deepstrata.engine.loop import train
from deepstrata.run import Run, default_run_dir, prepare_run_dir, write_run_records
from deepstrata.rundir import check_resumable, finish_run, guarded, kept_baseline_rows, resume_point


def _say(quiet: bool, message: str) -> None:
    if not quiet:
        print(message, file=sys.stderr)


def resolve_config(
    config: RunConfig | str | Path | None = None,
    *,
    data: str | None = None,
    model: str | None = None,
    **train_overrides,
) -> RunConfig:
    """Merge a config (object or YAML path) with keyword overrides; ``None`` means "keep"."""
    if isinstance(config, (str, Path)):
        config = load_config(config)
    config = config or RunConfig()
    data_keys = {"format", "data_dir", "image_size", "skip_bad", "val_fraction", "test_fraction"}
    model_keys = {"width", "depth"}
    data_over = {k: train_overrides.pop(k) for k in list(train_overrides) if k in data_keys}
    model_over = {k: train_overrides.pop(k) for k in list(train_overrides) if k in model_keys}
    baselines = train_overrides.pop("baselines", None)
    return config.override(
        data={"source": data, **data_over},
        model={"name": model, **model_over},
        train=train_overrides,
        baselines=baselines,
    )


TASKS = ("image", "text", "recommend")
TEXT_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".parquet", ".txt")


def task_of_config(config: RunConfig | str | Path) -> str | None:
    """The family a config names with its ``task:`` key, when it is not the image default (which the data
    or model may still override: a config without ``task:`` reads as an image one)."""
    if isinstance(config, (str, Path)):
        config = load_config(config)
    return {"text-classification": "text", "recommendation": "recommend"}.get(config.task)


def detect_task(data, model: str | None, task: str | None) -> str:
    """Which task a fit is: named explicitly, implied by the model, or by the data's form.

    Image sources are the default; a table or text file (or a text data object) means text
    classification unless ``task="recommend"`` says it is an interaction log.
    """
    from deepstrata.errors import ConfigError
    from deepstrata.models import registry

    if task is not None:
        if task not in TASKS:
            raise ConfigError(f"--task: got {task!r}, expected one of {', '.join(TASKS)}")
        return task
    for name, names in (("text", registry.TEXT_MODELS), ("recommend", registry.RECOMMEND_MODELS)):
        if model in names:
            return name
    if data is not None and not isinstance(data, (str, Path)):
        return getattr(data, "task", "text")
    if isinstance(data, (str, Path)):
        path = Path(data)
        lowered = path.name.lower()
        if lowered in ("u.data", "ratings.dat", "ratings.csv"):  # MovieLens interaction logs
            return "recommend"
        if lowered.endswith(TEXT_SUFFIXES) or "aclimdb" in lowered:
            return "text"
    return "image"


@guarded  # a fit that raises leaves its run directory marked and unlocked (see deepstrata.rundir)
def fit(
    data=None,
    model: str | None = None,
    *,
    task: str | None = None,
    config: RunConfig | str | Path | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    quiet: bool = False,
    **overrides,
) -> Run:
    """Train a model on raw images and set it beside hand-engineered baselines.

    ``data`` is ``"digits"``, a named set (``"mnist"``, ``"fashion-mnist"``,
    ``"cifar10"``), or a path (image folder, IDX directory, CIFAR batches). Other
    keywords override config fields by name (``epochs=5``, ``lr=1e-3``,
    ``baselines=False`` …). Returns the finished ``Run``.

    Under torchrun (or ``deepstrata fit --devices N``) every process calls this; rank 0
    alone writes the run directory, runs the baselines and returns the ``Run`` (the
    other ranks return ``None``).

    Text and recommendation runs (``task="text"`` / ``"recommend"``, or implied by the
    model or the data) are handed to their task module, which uses the same loop.
    """
    if task is None and data is None and resume and out is not None and (Path(out) / "config.yaml").is_file():
        # A resumed run is of the task it was started as (its config says which).
        saved = load_config(Path(out) / "config.yaml").task
        task = {"text-classification": "text", "recommendation": "recommend"}.get(saved, "image")
    if task is None and config is not None:
        task = task_of_config(config)  # `fit --config RUN/config.yaml`: a text or recommendation run's own task
    kind = detect_task(data, model, task)
    if kind == "text":
        from deepstrata.tasks.text_classification import fit_text

        return fit_text(data, model, config=config, out=out, resume=resume, overwrite=overwrite, quiet=quiet,
                        **overrides)
    if kind == "recommend":
        from deepstrata.tasks.recommendation import fit_recommender

        return fit_recommender(data, model, config=config, out=out, resume=resume, overwrite=overwrite,
                               quiet=quiet, **overrides)
    from deepstrata.baselines.image_features import run_image_baselines
    from deepstrata.data.images import load_images
    from deepstrata.data.split import split_dataset
    from deepstrata.models.registry import build_image_model
    from deepstrata.tasks.image_classification import ImageClassificationTask, channel_stats, flip_mode, to_float

    if resume and out is not None and (Path(out) / "config.yaml").is_file() and config is None:
        config = load_config(Path(out) / "config.yaml")
    cfg = resolve_config(config, data=data, model=model, **overrides)
    run_dir = Path(out) if out is not None else default_run_dir(cfg.data.source, cfg.model.name)
    if resume and out is None:
        raise ValueError("resume needs out= (the run directory to resume)")
    from deepstrata.data.shards import is_shard_dir

    if is_shard_dir(cfg.data.source):  # written by `deepstrata shard`: streamed, never loaded whole
        from deepstrata.tasks.streaming import fit_shards

        return fit_shards(cfg, run_dir, resume=resume, overwrite=overwrite, quiet=quiet)

    started = time.perf_counter()
    dataset = load_images(
        cfg.data.source, format=cfg.data.format, image_size=cfg.data.image_size,
        skip_bad=cfg.data.skip_bad, data_dir=cfg.data.data_dir,
    )
    splits = split_dataset(dataset, seed=cfg.train.seed, val_fraction=cfg.data.val_fraction,
                           test_fraction=cfg.data.test_fraction)
    load_seconds = time.perf_counter() - started
    env = distributed.join(resolve_device(cfg.train.device).type, cfg.train.devices)
    quiet = quiet or not env.is_main
    if env.is_main:
        run_dir = prepare_run_dir(run_dir, resume=resume, overwrite=overwrite,
                                  data=(cfg.data.source, cfg.data.data_dir), quiet=quiet)
    distributed.barrier()
    resuming = resume_point(run_dir, resume, quiet)
    cfg = dataclasses.replace(cfg, train=resolved_train(cfg.train, len(splits.train_y)))
    device = distributed.device_for_rank(resolve_device(cfg.train.device))
    if env.is_main and not resuming:  # a resume rewrites its records only once its training has run
        ckpt.atomic_write_text(run_dir / "config.yaml", dump_config(cfg))
    in_shape = tuple(splits.train_x.shape[1:])
    num_classes = len(splits.classes)
    _say(quiet, f"data: {dataset.source} — {in_shape[0]}x{in_shape[1]}x{in_shape[2]}, {num_classes} classes; "
                f"split train {len(splits.train_y)} / val {len(splits.val_y)} / test {len(splits.test_y)}"
                f"{' (official test split)' if splits.test_is_official else ''}; loaded in {load_seconds:.1f}s")
    for note in dataset.notes:
        _say(quiet, f"note: {note}")

    torch.manual_seed(cfg.train.seed)
    mean, std = channel_stats(splits.train_x)
    net = build_image_model(cfg.model.name, in_shape, num_classes, width=cfg.model.width, depth=cfg.model.depth,
                            mean=mean, std=std)
    if hasattr(net, "init_whitening"):  # the whitened CNN's stem is fitted to 5,000 random training images
        sample = torch.randperm(len(splits.train_x), generator=torch.Generator().manual_seed(cfg.train.seed))[:5000]
        net.init_whitening(to_float(splits.train_x[sample]))
    data_device = device if cfg.train.data_on_device else torch.device("cpu")
    task = ImageClassificationTask(
        splits.train_x.to(data_device), splits.train_y.to(data_device), splits.val_x.to(data_device),
        splits.val_y.to(data_device),
        num_classes=num_classes, augment=cfg.train.augment, flip=flip_mode(cfg.train.flip, in_shape[0]),
        translate=cfg.train.translate, translate_fill=cfg.train.translate_fill,
        label_smoothing=cfg.train.label_smoothing, eval_batch_size=cfg.train.eval_batch_size,
        precision=cfg.train.precision, channels_last=cfg.train.channels_last, tta=cfg.train.tta,
    )
    params = sum(p.numel() for p in net.parameters())
    model_info = {
        "task": "image-classification",
        "spec": net.spec,
        "classes": splits.classes,
        "layers": net.layer_names,
        "feature_dim": net.feature_dim,
        "params": params,
        "data": {"source": dataset.source, "format": dataset.format, "notes": dataset.notes,
                 "input_shape": list(in_shape), "augmentation": task.describe_augmentation()},
    }
    if resuming:
        check_resumable(run_dir, model_info)
    elif env.is_main:
        write_run_records(run_dir, model_info, device, cfg.train.seed, env.world_size)
    _say(quiet, f"model: {cfg.model.name} ({params:,} parameters; layers {', '.join(net.layer_names)}) on {device}; "
                f"augmentation: {task.describe_augmentation()}")

    result = train(net, task, cfg.train, run_dir, resume=resuming, quiet=quiet, description=cfg.model.name)
    if not env.is_main:
        distributed.teardown()
        return None
    if resuming:
        ckpt.atomic_write_text(run_dir / "config.yaml", dump_config(cfg))
        write_run_records(run_dir, model_info, device, cfg.train.seed, env.world_size)
    logits = task.predict(net, splits.test_x, device)
    predicted = logits.argmax(1).numpy()
    truth = splits.test_y.numpy()
    rows = [learned_row(run_dir, cfg.model.name, splits.classes, truth, predicted, result, net)]
    split = {"train": len(splits.train_y), "val": len(splits.val_y), "test": len(splits.test_y),
             "test_is_official": splits.test_is_official, "seed": cfg.train.seed}
    if not cfg.baselines and resume:
        rows += kept_baseline_rows(run_dir, cfg.data.source, split, quiet)
    if cfg.baselines:
        _say(quiet, "baselines: hand-engineered features (HOG + intensity histogram, raw pixels) → logistic regression")
        for baseline in run_image_baselines(
            splits.train_x, splits.train_y, splits.val_x, splits.val_y, splits.test_x, splits.test_y,
            num_classes, seed=cfg.train.seed,
        ):
            rows.append(baseline.row())
    return finish_image_run(run_dir, cfg.data.source, split, rows, device, quiet=quiet)


def learned_row(run_dir: Path, name: str, classes: list[str], truth, predicted, result, net, **settings) -> dict:
    """The learned model's comparison row on the test split; also writes its confusion matrix."""
    from deepstrata.metrics import classification_metrics, confusion_matrix

    num_classes = len(classes)
    ckpt.atomic_write_json(run_dir / "confusion.json", {
        "classes": classes, "matrix": confusion_matrix(truth, predicted, num_classes).tolist(),
    })
    return {
        "name": name,
        "kind": "learned",
        "metrics": classification_metrics(truth, predicted, num_classes),
        "train_seconds": round(result.train_seconds, 3),
        "feature_dim": net.feature_dim,
        "params": sum(p.numel() for p in net.parameters()),
        "settings": {"epochs_run": result.epochs_run, "best_epoch": result.best_epoch, "device": result.device,
                     **settings},
    }


def finish_image_run(run_dir: Path, source: str, split: dict, rows: list[dict], device: torch.device, *,
                     quiet: bool) -> Run:
    """Write comparison.json and the report, print the table, leave the process group; rank 0 only."""
    from deepstrata.report import format_comparison_table, write_report

    comparison = {"task": "image-classification", "data": source, "split": split, "primary_metric": "accuracy",
                  "rows": rows}
    ckpt.atomic_write_json(run_dir / "comparison.json", comparison)
    report = write_report(run_dir)
    if not quiet:
        print(format_comparison_table(comparison))
        print(f"run directory: {run_dir}")
        print(f"report: {report}")
    finish_run(run_dir)
    distributed.teardown()
    return Run(run_dir, device=str(device))
