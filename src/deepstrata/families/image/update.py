"""``update`` of an image run: continue its kept model on new images, new classes included.

The old data is re-read from the run's config.yaml source and split with its seed, so
the replayed share comes from the old training and validation parts only and the old
test split stays unseen; the new data is read the way the run's verbs read images (the
recorded preprocessing of a folder, the run's size for the fixed-size formats) and split
with the same seed. What every classifier's update shares is ``families.updating``.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch

from deepstrata.engine import distributed
from deepstrata.engine.loop import train
from deepstrata.errors import DataError
from deepstrata.families import updating
from deepstrata.rundir import guarded


def _say(quiet: bool, message: str) -> None:
    if not quiet:
        print(message, file=sys.stderr)


def _check_in_memory(run, data: str) -> None:
    """Update decodes old and new images into memory; a shard source (or a run streamed from shards) is refused."""
    from deepstrata.data.shards import is_shard_dir

    record = run.info.get("data") or {}
    if record.get("format") == "shards" or record.get("shards") or is_shard_dir(run.config.data.source):
        raise DataError(f"{run.path}: trained on shards streamed from disk; update reads the run's images into "
                        "memory to replay them, and supports in-memory image runs only")
    if is_shard_dir(data):
        raise DataError(f"--data {data}: a shard directory; update takes images it can read into memory (an image "
                        "folder, IDX files, CIFAR batches or a named set)")


def _read(run, source: str, same: bool):
    """A source as the run's verbs read it (``families.image.verbs.evaluate``): recorded preprocessing, run's size."""
    from deepstrata.data.images import load_images
    from deepstrata.families.image.verbs import run_preprocess

    cfg = run.config
    _, height, width = run.info["spec"]["in_shape"]
    return load_images(source, format=cfg.data.format if same else None,
                       image_size=height if height == width else None, skip_bad=cfg.data.skip_bad,
                       data_dir=cfg.data.data_dir, preprocess=run_preprocess(run))


def _fitted(run, x: torch.Tensor, source: str, notes: list[str]) -> torch.Tensor:
    """Images brought to the run's input: resized as evaluate resizes them; another channel count is refused."""
    from deepstrata.families.image.verbs import match_shape

    channels, height, width = run.info["spec"]["in_shape"]
    if x.shape[1] != channels:
        raise DataError(f"--data {source}: {x.shape[1]}-channel images, but {run.path} takes {channels}-channel "
                        f"{channels}x{height}x{width} inputs; update continues the run on its own kind of input "
                        "(use `deepstrata transfer --from RUN` for another kind)")
    if tuple(x.shape[-2:]) != (height, width):
        note = f"{source}: {x.shape[-2]}x{x.shape[-1]} images resized to the run's {height}x{width}"
        if note not in notes:
            notes.append(note)
    return match_shape(x, channels, height, width, source)


def _logits(model, x: torch.Tensor, cfg, device) -> torch.Tensor:
    """Logits as the run scores its test split (test-time augmentation if it trained with it)."""
    from deepstrata.families.image.task import flip_mode, predict_logits

    mirror = flip_mode(cfg.train.flip, x.shape[1]) != "none"
    return predict_logits(model, x, device, tta=cfg.train.tta, mirror=mirror)


def _task(cfg, train_x, train_y, val_x, val_y, num_classes: int):
    from deepstrata.families.image.task import ImageClassificationTask, flip_mode

    t = cfg.train
    return ImageClassificationTask(
        train_x, train_y, val_x, val_y, num_classes=num_classes, augment=t.augment,
        flip=flip_mode(t.flip, train_x.shape[1]), translate=t.translate, translate_fill=t.translate_fill,
        crop=t.crop, label_smoothing=t.label_smoothing, eval_batch_size=t.eval_batch_size, precision=t.precision,
        channels_last=t.uses_channels_last, tta=t.tta)



@dataclasses.dataclass
class _Split:
    """One source's images (brought to the run's input), labels as indices of the updated class list, its split."""

    x: torch.Tensor
    y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    parts: updating.Parts

    def part(self, indices: np.ndarray, test: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.from_numpy(np.asarray(indices, dtype=np.int64))
        return (self.test_x[index], self.test_y[index]) if test else (self.x[index], self.y[index])


def _split(run, dataset, classes: list[str], source: str, notes: list[str], labels_per_class=None) -> _Split:
    table = updating.label_table(dataset.classes, classes)
    official = dataset.test_x is not None
    parts = updating.split_parts(dataset.y, dataset.test_y if official else None, dataset.classes, run.config,
                                 labels_per_class)
    x = _fitted(run, dataset.x, source, notes)
    test_x = _fitted(run, dataset.test_x, source, notes) if official else x
    y = table[dataset.y.long()]
    return _Split(x, y, test_x, table[dataset.test_y.long()] if official else y, parts)


@guarded  # an update that raises leaves both directories unlocked, the run as it was (see deepstrata.rundir)
def update_run(run, opts: updating.UpdateOptions) -> tuple[Path, dict]:
    """Continue an image run on ``opts.data``; returns the updated run's directory and the update's record.

    Before/after accuracy is measured on the run's old test split and on the new data's test
    split (its official one, else the split the run's seed makes of it); "before" is the run
    as it was, which cannot name a new class.
    """
    cfg = run.config
    _check_in_memory(run, opts.data)
    run.family.check_source(run, opts.data, "update")
    started = time.perf_counter()
    notes: list[str] = []
    same = updating.same_source(opts.data, cfg.data.source)
    old_data = _read(run, cfg.data.source, same=True)
    new_data = old_data if same else _read(run, opts.data, same=False)
    unknown = [name for name in old_data.classes if name not in run.classes]
    if unknown:
        raise DataError(f"{cfg.data.source}: classes {', '.join(unknown[:5])} are not among the run's classes; "
                        "the run's source changed since it was trained")
    classes, appended = updating.merged_classes(run.classes, updating.present(
        [new_data.y.numpy()] + ([new_data.test_y.numpy()] if new_data.test_y is not None else []),
        new_data.classes))
    old = _split(run, old_data, classes, cfg.data.source, notes, cfg.data.labels_per_class)
    new = old if same else _split(run, new_data, classes, opts.data, notes)
    share = 0.0 if same else opts.replay
    if same:
        notes.append("the new data is the run's own source: nothing to replay")
    replay_train = updating.replay_sample(old.parts.train, old.y.numpy(), share, cfg.train.seed, "train")
    replay_val = updating.replay_sample(old.parts.val, old.y.numpy(), share, cfg.train.seed, "val")
    pieces = [new.part(new.parts.train), old.part(replay_train)]
    train_x, train_y = (torch.cat([p[i] for p in pieces]) for i in (0, 1))
    pieces = [new.part(new.parts.val), old.part(replay_val)]
    val_x, val_y = (torch.cat([p[i] for p in pieces]) for i in (0, 1))
    old_test, new_test = old.part(old.parts.test, old.parts.official), new.part(new.parts.test, new.parts.official)

    device = distributed.rank_device(cfg.train.device)
    n_old = len(run.classes)

    def measure(model, known: dict | None = None) -> tuple[dict, list[np.ndarray]]:
        """Scores on the old and the new test split (the old one's ``known`` already), and the predictions
        (no new split when the new data is the run's own source)."""
        out, predictions = {"old_test": known, "new_test": None}, []
        for name, (x, y) in (("old_test", old_test), ("new_test", new_test))[:1 if same else 2]:
            if out[name] is None:
                predictions.append(_logits(model, x, cfg, device).argmax(1).numpy())
                out[name] = updating.scores(y.numpy(), predictions[-1], len(classes), n_old)
        return out, predictions

    before, _ = measure(run.model, updating.recorded_scores(run, len(old_test[1]), len(classes)))
    net = run.load_model()
    updating.grow_head(net, len(classes), cfg.train.seed)
    target = updating.staged(run, opts.out, opts.data, opts.quiet)
    updating.begin(target, cfg, device)
    train_cfg = dataclasses.replace(cfg.train, epochs=opts.epochs or cfg.train.epochs)
    counts = {"new_train": int(len(new.parts.train)),
              "replay_train": int(len(replay_train)), "old_train": int(len(old.parts.train)),
              "val": int(len(val_y)), "old_test": int(len(old_test[1])),
              "new_test": None if same else int(len(new_test[1]))}
    _say(opts.quiet, f"update: {len(appended)} new classes ({', '.join(appended) or 'none'}); training "
                     f"{train_cfg.epochs} epochs on {len(train_y)} images ({counts['replay_train']} replayed from "
                     f"the old training split, replay {share:g})")
    result = train(net, _task(cfg, train_x, train_y, val_x, val_y, len(classes)), train_cfg, target, resume=False,
                   quiet=opts.quiet, description=f"update {cfg.model.name}")
    net.to(device).eval()
    after, predictions = measure(net)
    test_y = old_test[1] if same else torch.cat([old_test[1], new_test[1]])
    predicted = np.concatenate(predictions)
    record = updating.record(dataclasses.replace(opts, replay=share), classes=classes, appended=appended,
                             counts=counts, epochs=train_cfg.epochs, result=result,
                             seconds=time.perf_counter() - started, before=before, after=after, notes=notes)
    split = {"train": int(len(train_y)), "val": int(len(val_y)), "test": int(len(test_y)),
             "test_is_official": bool(old.parts.official and new.parts.official), "seed": cfg.train.seed,
             "test_of": "the old test split" + ("" if same else " and the new data's test split")}
    updating.conclude(run, target, cfg, net, classes, record, test_y.numpy(), predicted, result, split)
    return updating.swap_in(run, target, opts.out), record
