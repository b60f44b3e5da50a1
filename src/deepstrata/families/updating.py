"""What ``update`` of a classification run (images, texts) shares: the options, the grown head, replay, the swap.

Not a family: the image and text families each read their data and build their loop
``Task`` (``families.image.update``, ``families.text.update``); everything else an update
of a classifier does is the same and lives here, once:

* **classes** — the run's classes keep their indices; classes of the new data the run has
  never seen are appended, matched by name, in the order the new data lists them (sorted
  folder names, IDX label numbers, a table's sorted labels), so the same data always grows
  the head the same way;
* **the head** — ``grow_head`` gives the final linear map more rows: the old rows are copied
  bit for bit, the new ones freshly initialised from the run's seed;
* **replay** — a seeded, per-class share of the run's old *training* and *validation* splits
  (re-read from its config.yaml source and split with its own seed) is mixed into the new
  data, so the old classes are not forgotten while the old test split stays unseen;
* **the directory** — written aside and swapped in, as the recommender's update does
  (``staged`` / ``swap_in``).
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from deepstrata.errors import ConfigError, RunError

DEFAULT_REPLAY = 0.5
"""Share of the run's old training (and validation) examples mixed into an update, per class.

The smallest share measured to keep the old classes within a point of a full retrain:
on MNIST 0-7 updated with 8-9 (``benchmarks/update_mnist.py``, 10% of the training images,
2 epochs, seeds 0 and 1) the 0-7 test accuracy was 0% with no replay, 87.5% at 0.1,
95.6 ± 0.8% at 0.25 and 97.1 ± 0.5% at 0.5, against 97.6 ± 0.3% for a retrain on 0-9. A
quarter takes under half of a retrain's time (0.49 of its CPU time) but loses 2 points
more; 0.5 takes 0.65 of it.
``--replay`` trades the one for the other.
"""


@dataclass(frozen=True)
class UpdateOptions:
    """What an update of a classifier was asked: checked before anything is read or written."""

    data: str
    out: Path | None = None
    epochs: int | None = None
    replay: float = DEFAULT_REPLAY
    quiet: bool = True

    def __post_init__(self) -> None:
        if self.epochs is not None and (isinstance(self.epochs, bool) or not isinstance(self.epochs, int)
                                        or self.epochs < 1):
            raise ConfigError(f"--epochs: expected a positive whole number, got {self.epochs!r}")
        replay = self.replay
        if isinstance(replay, bool) or not isinstance(replay, (int, float)) or not math.isfinite(replay) \
                or not 0.0 <= replay <= 1.0:
            raise ConfigError(f"--replay: expected a share of the old training data in [0, 1], got {replay!r}")


def options(data, out, epochs, replay, quiet) -> UpdateOptions:
    """``UpdateOptions`` from ``Run.update``'s arguments (``replay=None``: the default share)."""
    return UpdateOptions(data=str(data), out=Path(out) if out is not None else None, epochs=epochs,
                         replay=DEFAULT_REPLAY if replay is None else replay, quiet=quiet)


def same_source(data: str, source: str) -> bool:
    """Whether the new data is the run's own source (then there is nothing to replay), however the path is written."""
    if data == source:
        return True
    a, b = Path(data).expanduser(), Path(source).expanduser()
    return a.exists() and b.exists() and a.resolve() == b.resolve()


def merged_classes(old: list[str], new: list[str]) -> tuple[list[str], list[str]]:
    """(old + the classes of ``new`` not in ``old``, in ``new``'s order; the appended ones)."""
    known = set(old)
    appended = [name for name in new if name not in known]
    return [*old, *appended], appended


def label_table(data_classes: list[str], classes: list[str]) -> torch.Tensor:
    """Index of each of the data's classes in ``classes``; -1 for a class the data names but has no example of
    (not appended, see ``present``), which no label then points to."""
    return torch.tensor([classes.index(name) if name in classes else -1 for name in data_classes],
                        dtype=torch.int64)


def present(labels: list[np.ndarray], classes: list[str]) -> list[str]:
    """The classes that have at least one example among ``labels`` (an IDX folder of digits 8-9 names 0-9)."""
    seen = set()
    for part in labels:
        seen.update(np.unique(np.asarray(part)).tolist())
    return [name for index, name in enumerate(classes) if index in seen]


def grow_head(net: nn.Module, num_classes: int, seed: int) -> int:
    """Give ``net``'s head ``num_classes`` outputs; returns how many it had.

    The old rows of the weight (and bias) are copied bit for bit, so the old classes' logits
    are unchanged at the start; the new rows are a fresh ``nn.Linear`` initialisation drawn
    from ``seed`` without touching the caller's random state. ``net.spec`` follows, so the
    saved run rebuilds the grown model.
    """
    head = net.layers["head"]
    old = head.fc
    if num_classes < old.out_features:
        raise ValueError(f"grow_head: {num_classes} classes, fewer than the head's {old.out_features}")
    if num_classes > old.out_features:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            fresh = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
        fresh.to(device=old.weight.device, dtype=old.weight.dtype)
        with torch.no_grad():
            fresh.weight[:old.out_features] = old.weight
            if old.bias is not None:
                fresh.bias[:old.out_features] = old.bias
        head.fc = fresh
    net.spec = {**net.spec, "num_classes": num_classes}
    return old.out_features


@dataclass
class Parts:
    """Index arrays of one source's split: ``train``/``val`` into its examples, ``test`` into its official
    test examples (``official``) or into its examples too."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    official: bool


def split_parts(y, test_y, classes: list[str], cfg, labels_per_class: int | None = None) -> Parts:
    """The split a run made of a source (``data.split.split_dataset`` with its seed and fractions), as indices.

    Splitting indices rather than the examples lets an update take replay from the training
    and validation parts and *prove* that nothing of the test part is among them.
    """
    from deepstrata.data.split import Positions, limit_labels, split_dataset

    y = torch.as_tensor(np.asarray(y), dtype=torch.int64)
    official = test_y is not None
    test_y = torch.as_tensor(np.asarray(test_y), dtype=torch.int64) if official else None
    indexed = Positions(torch.arange(len(y)), y, list(classes), torch.arange(len(test_y)) if official else None, test_y)
    splits = split_dataset(indexed, seed=cfg.train.seed, val_fraction=cfg.data.val_fraction,
                           test_fraction=cfg.data.test_fraction)
    if labels_per_class is not None:
        splits = limit_labels(splits, labels_per_class, cfg.train.seed)
    return Parts(splits.train_x.numpy(), splits.val_x.numpy(), splits.test_x.numpy(), official)


def replay_sample(indices: np.ndarray, labels, share: float, seed: int, part: str) -> np.ndarray:
    """A seeded ``share`` of ``indices`` from each class (at least one of a class when the share is above 0),
    sorted; ``part`` ("train", "val") draws each part from its own stream."""
    if share >= 1.0 or len(indices) == 0:
        return np.sort(indices)
    if share <= 0.0:
        return np.zeros(0, dtype=np.int64)
    labels = np.asarray(labels)[indices]
    rng = np.random.default_rng([seed, 14, {"train": 0, "val": 1}[part]])
    chosen = []
    for label in np.unique(labels):
        members = indices[labels == label]
        count = max(1, int(round(share * len(members))))
        chosen.append(rng.permutation(members)[:count])
    return np.sort(np.concatenate(chosen))


def scores(truth: np.ndarray, predicted: np.ndarray, num_classes: int, old_classes: int) -> dict:
    """Accuracy and macro-F1 of one test split, with the accuracy on its examples of old and of new classes.

    Macro-F1 averages over the classes the split holds: the old test split has no example of
    a new class, and a zero for each of them would say nothing about the split.
    """
    from deepstrata.metrics import accuracy, per_class_f1

    truth, predicted = np.asarray(truth), np.asarray(predicted)
    held = np.unique(truth)
    f1 = per_class_f1(truth, predicted, num_classes)
    out = {"examples": int(len(truth)), "accuracy": accuracy(truth, predicted),
           "macro_f1": float(f1[held].mean()) if len(held) else 0.0}
    for name, mask in (("old_classes", truth < old_classes), ("new_classes", truth >= old_classes)):
        out[f"{name}_examples"] = int(mask.sum())
        out[f"{name}_accuracy"] = float((predicted[mask] == truth[mask]).mean()) if mask.any() else None
    return out


def recorded_scores(run, examples: int, num_classes: int) -> dict | None:
    """The run's own scores on its test split, from its ``confusion.json``, when that split is the old test split.

    The kept model on the same examples gives the same predictions, so the update does not
    run it over the old test split a second time (on MNIST that pass was a fifth of an
    update's time). Only for a run not updated before (an updated run's confusion matrix
    covers its new test split too) whose matrix counts exactly ``examples``; else None.
    """
    from deepstrata import runfiles

    path = run.path / "confusion.json"
    if run.info.get("updates") or not path.is_file():
        return None
    try:
        confusion = runfiles.read_json(path)
        matrix = np.asarray(confusion["matrix"], dtype=np.int64)
    except (RunError, KeyError, TypeError, ValueError):  # a damaged file: measure instead
        return None
    old = len(run.classes)
    if confusion.get("classes") != run.classes or matrix.shape != (old, old) or int(matrix.sum()) != examples:
        return None
    truth = np.repeat(np.repeat(np.arange(old), old), matrix.reshape(-1))
    predicted = np.repeat(np.tile(np.arange(old), old), matrix.reshape(-1))
    return {**scores(truth, predicted, num_classes, old), "from": "the run's confusion.json (its kept model on "
                                                                  "this split)"}


def staged(run, out: Path | None, data, quiet: bool) -> Path:
    """The directory an update writes: ``out``, or a staging copy beside the run, which stays locked meanwhile.

    Every family's update (the recommender's too) takes these steps: lock the run so that no
    fit or other update changes it, remove the staging copy a killed update left (refused if
    it is not a run), then prepare the new directory as a fit would.
    """
    from deepstrata.rundir import lock_run, prepare_run_dir, remove_run

    target = Path(out) if out is not None else run.path.with_name(f".{run.path.name}.update")
    if out is None:
        lock_run(run.path, quiet)
        remove_run(target)
    return prepare_run_dir(target, resume=False, overwrite=False, data=(str(data), str(run.path)), quiet=quiet)


def swap_in(run, target: Path, out: Path | None) -> Path:
    """Mark ``target`` finished; without ``out``, put it in the run's place and return the run's path.

    In place, what deepstrata did not write in the run (a user's notes) moves to the new run
    first; the old run is renamed aside, the new one renamed in, and only then is the old one
    removed — a kill at any point leaves a complete run under one of the two names.
    """
    from deepstrata.rundir import carry_over, finish_run, release, remove_run

    finish_run(target)
    if out is not None:
        return target
    retired = run.path.with_name(f".{run.path.name}.old")
    remove_run(retired)
    carry_over(run.path, target)
    run.path.rename(retired)
    target.rename(run.path)
    remove_run(retired)
    release(run.path)
    return run.path


def record(opts: UpdateOptions, *, classes: list[str], appended: list[str], counts: dict, epochs: int, result,
           seconds: float, before: dict, after: dict, notes: list[str]) -> dict:
    """The update as model.json's ``updates`` and comparison.json's ``update`` keep it."""
    return {"data": opts.data, "classes_before": len(classes) - len(appended), "classes_after": len(classes),
            "new_classes": appended, "replay": opts.replay, "examples": counts, "epochs": epochs,
            "best_epoch": result.best_epoch, "seconds": round(seconds, 3),
            "train_seconds": round(result.train_seconds, 3), "before": before, "after": after, "notes": notes}


def summary_lines(record: dict) -> list[str]:
    """What ``deepstrata update`` prints for a classification run."""
    counts = record["examples"]
    new = ", ".join(record["new_classes"]) or "none"
    lines = [f"classes {record['classes_before']} -> {record['classes_after']} (new: {new}); trained "
             f"{record['epochs']} epochs on {counts['new_train']} new + {counts['replay_train']} replayed old "
             f"examples (replay {record['replay']:g} of the old training data) in {record['seconds']:.1f}s"]
    for split, label in (("old_test", "old test split"), ("new_test", "new test split")):
        if record["before"].get(split) is None:
            continue
        b, a = record["before"][split], record["after"][split]
        lines.append(f"{label} ({a['examples']} examples): accuracy {b['accuracy']:.4f} -> {a['accuracy']:.4f}")
    return lines + [f"note: {note}" for note in record["notes"]]


def report_section(record: dict) -> str:
    """The report's "Update" section: what was added and the accuracy before and after."""
    rows = "".join(
        f"<tr><td>{label}</td><td>{record['after'][split]['examples']}</td>"
        f"<td>{record['before'][split]['accuracy']:.4f}</td><td>{record['after'][split]['accuracy']:.4f}</td></tr>"
        for split, label in (("old_test", "old test split"), ("new_test", "new test split"))
        if record["before"].get(split) is not None)
    new = ", ".join(record["new_classes"]) or "none"
    return (f"<p>Updated with {html.escape(record['data'])}: new classes {html.escape(new)}; replay "
            f"{record['replay']:g} of the old training data; {record['epochs']} epochs, {record['seconds']:.1f}s."
            f"</p><table><tr><th>split</th><th>examples</th><th>accuracy before</th><th>after</th></tr>{rows}"
            "</table>")


def begin(target: Path, cfg, device) -> None:
    """config.yaml (the run's own: its source stays the data replay re-reads) and provenance.json, before training."""
    from deepstrata.config import dump_config
    from deepstrata.engine import checkpoint as ckpt
    from deepstrata.records import provenance

    ckpt.atomic_write_text(target / "config.yaml", dump_config(cfg))
    ckpt.atomic_write_json(target / "provenance.json", provenance(device, cfg.train.seed))


def conclude(run, target: Path, cfg, net, classes: list[str], update: dict, truth: np.ndarray,
             predicted: np.ndarray, result, split: dict) -> None:
    """model.json (grown spec, old + new classes, ``updates``), confusion.json, comparison.json and the report.

    The comparison's learned row is scored on the old and the new test split together; the
    baselines are not refitted (they were fitted on the old classes only), and the
    comparison says so.
    """
    from deepstrata.engine import checkpoint as ckpt
    from deepstrata.families.classification import classification_row, write_confusion
    from deepstrata.records import write_model_info
    from deepstrata.report import write_report

    info = {**run.info, "spec": net.spec, "classes": classes, "layers": net.layer_names,
            "feature_dim": net.feature_dim, "params": sum(p.numel() for p in net.parameters()),
            "updates": [*run.info.get("updates", []), update]}
    write_model_info(target, info)
    write_confusion(target, classes, truth, predicted)
    row = classification_row(cfg.model.name, len(classes), truth, predicted, result, net,
                             update={"from": str(run.path), "data": update["data"], "epochs": update["epochs"],
                                     "replay": update["replay"]})
    comparison = {"task": run.task, "data": cfg.data.source, "split": split, "primary_metric": "accuracy",
                  "rows": [row], "skipped": [{"name": "hand-engineered", "reason": "update does not refit the "
                                              "baselines (they know the old classes only); fit old + new data "
                                              "to compare with them"}],
                  "update": update}
    ckpt.atomic_write_json(target / "comparison.json", comparison)
    write_report(target, extra_sections=[("Update", report_section(update))])
