"""``update`` of a text run: continue its kept model on new labelled texts, new classes included.

The run's tokenizer is kept, file and vocabulary: a vocabulary learned again would give
the trained token embeddings other meanings. Words it never saw are tokenized as it
tokenizes any unknown word — byte-level BPE splits them into the pieces (down to single
bytes) it has, never an unknown token; a pretrained WordPiece splits them into its
sub-words, or ``[UNK]`` where even that fails — and the record says so. The old texts are
re-read from the run's config.yaml source and split with its seed, so replay draws on the
old training and validation parts only. What every classifier's update shares is
``families.updating``.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

from deepstrata.data.text import load_text
from deepstrata.engine import checkpoint as ckpt
from deepstrata.engine import distributed
from deepstrata.engine.loop import train
from deepstrata.errors import DataError
from deepstrata.families import updating
from deepstrata.families.text.tasks import (FrozenFeatureTask, TextClassificationTask, predict_logits,
                                            shared_features)
from deepstrata.rundir import guarded

UNKNOWN_WORDS = {
    "bpe": "the run's byte-level BPE tokenizer is kept: words it never saw are split into the pieces it has "
           "(down to single bytes), never an unknown token",
    "wordpiece": "the run's pretrained WordPiece tokenizer is kept: words outside its vocabulary are split into "
                 "its sub-words, or [UNK] where none fit",
}


def _say(quiet: bool, message: str) -> None:
    if not quiet:
        print(message, file=sys.stderr)


def _read_new(run, source: str, notes: list[str]):
    """New texts by the run's columns when the file has them, else by the columns guessed (said in a note)."""
    from deepstrata.families.text.verbs import read_by_run_columns

    dataset, guessed = read_by_run_columns(run.config.text, source)
    if guessed:
        notes.append(f"{source}: {guessed}")
    return dataset


@dataclasses.dataclass
class _Split:
    """One source's token ids, labels as indices of the updated class list, and its split."""

    ids: list
    y: np.ndarray
    test_ids: list
    test_y: np.ndarray
    parts: updating.Parts

    def part(self, indices: np.ndarray, test: bool = False) -> tuple[list, np.ndarray]:
        ids, y = (self.test_ids, self.test_y) if test else (self.ids, self.y)
        return [ids[i] for i in indices.tolist()], y[indices]


def _split(run, dataset, classes: list[str], tokenizer) -> _Split:
    table = updating.label_table(dataset.classes, classes).numpy()
    official = dataset.test_texts is not None
    parts = updating.split_parts(dataset.labels, dataset.test_labels if official else None, dataset.classes,
                                 run.config)
    ids = tokenizer.encode(list(dataset.texts)).ids
    y = table[np.asarray(dataset.labels, dtype=np.int64)]
    if not official:
        return _Split(ids, y, ids, y, parts)
    return _Split(ids, y, tokenizer.encode(list(dataset.test_texts)).ids,
                  table[np.asarray(dataset.test_labels, dtype=np.int64)], parts)


@guarded  # an update that raises leaves both directories unlocked, the run as it was (see deepstrata.rundir)
def update_run(run, opts: updating.UpdateOptions) -> tuple[Path, dict]:
    """Continue a text run on ``opts.data``; returns the updated run's directory and the update's record.

    Before/after accuracy is measured on the run's old test split and on the new data's test
    split (its official one, else the split the run's seed makes of it); "before" is the run
    as it was, which cannot name a new class.
    """
    from deepstrata.families.text.fit import TOKENIZER_FILE
    from deepstrata.families.text.verbs import run_tokenizer

    cfg = run.config
    t = cfg.text
    run.family.check_source(run, opts.data, "update")
    started = time.perf_counter()
    tokenizer = run_tokenizer(run)
    notes = [UNKNOWN_WORDS.get(tokenizer.kind, UNKNOWN_WORDS["bpe"])]
    same = updating.same_source(opts.data, cfg.data.source)
    old_data = load_text(cfg.data.source, format=t.format, text_column=t.text_column, label_column=t.label_column,
                         encoding=t.encoding)
    new_data = old_data if same else _read_new(run, opts.data, notes)
    unknown = [name for name in old_data.classes if name not in run.classes]
    if unknown:
        raise DataError(f"{cfg.data.source}: classes {', '.join(unknown[:5])} are not among the run's classes; "
                        "the run's source changed since it was trained")
    labels = [new_data.labels] + ([new_data.test_labels] if new_data.test_labels is not None else [])
    classes, appended = updating.merged_classes(run.classes, updating.present(labels, new_data.classes))
    old = _split(run, old_data, classes, tokenizer)
    new = old if same else _split(run, new_data, classes, tokenizer)
    share = 0.0 if same else opts.replay
    if same:
        notes.append("the new data is the run's own source: nothing to replay")
    replay_train = updating.replay_sample(old.parts.train, old.y, share, cfg.train.seed, "train")
    replay_val = updating.replay_sample(old.parts.val, old.y, share, cfg.train.seed, "val")
    (new_ids, new_y), (old_ids, old_y) = new.part(new.parts.train), old.part(replay_train)
    train_ids, train_y = new_ids + old_ids, np.concatenate([new_y, old_y])
    (new_ids, new_y), (old_ids, old_y) = new.part(new.parts.val), old.part(replay_val)
    val_ids, val_y = new_ids + old_ids, np.concatenate([new_y, old_y])
    tests = [old.part(old.parts.test, old.parts.official)]
    if not same:
        tests.append(new.part(new.parts.test, new.parts.official))

    device = distributed.rank_device(cfg.train.device)
    n_old = len(run.classes)
    batch, precision = cfg.train.eval_batch_size, cfg.train.precision

    def measure(model, known: dict | None = None) -> tuple[dict, list[np.ndarray]]:
        """Scores on the old and the new test split (the old one's ``known`` already), and the predictions."""
        out, predictions = {"old_test": known, "new_test": None}, []
        for name, (ids, y) in zip(("old_test", "new_test"), tests):
            if out[name] is None:
                predictions.append(predict_logits(model, ids, device, batch, precision).argmax(1).numpy())
                out[name] = updating.scores(y, predictions[-1], len(classes), n_old)
        return out, predictions

    before, _ = measure(run.model, updating.recorded_scores(run, len(tests[0][1]), len(classes)))
    net = run.load_model()
    updating.grow_head(net, len(classes), cfg.train.seed)
    target = updating.staged(run, opts.out, opts.data, opts.quiet)
    updating.begin(target, cfg, device)
    ckpt.atomic_write_bytes(target / TOKENIZER_FILE, (run.path / run.info["text"]["tokenizer"]).read_bytes())
    train_cfg = dataclasses.replace(cfg.train, epochs=opts.epochs or cfg.train.epochs)
    frozen = bool(run.info["text"].get("frozen_encoder"))
    if frozen:  # the encoder stays as it is: its pooled features are computed once, the head trains on them
        net.to(device)
        task = FrozenFeatureTask(shared_features(net, train_ids, device, batch, precision), train_y,
                                 shared_features(net, val_ids, device, batch, precision), val_y,
                                 label_smoothing=cfg.train.label_smoothing)
    else:
        task = TextClassificationTask(train_ids, train_y, val_ids, val_y, pad_id=tokenizer.pad_id,
                                      label_smoothing=cfg.train.label_smoothing, eval_batch_size=batch,
                                      precision=precision)
    counts = {"new_train": int(len(new.parts.train)), "replay_train": int(len(replay_train)),
              "old_train": int(len(old.parts.train)), "val": int(len(val_y)), "old_test": int(len(tests[0][1])),
              "new_test": None if same else int(len(tests[1][1]))}
    _say(opts.quiet, f"update: {len(appended)} new classes ({', '.join(appended) or 'none'}); training "
                     f"{train_cfg.epochs} epochs on {len(train_y)} texts ({counts['replay_train']} replayed from "
                     f"the old training split, replay {share:g}); {notes[0]}")
    result = train(net, task, train_cfg, target, resume=False, quiet=opts.quiet,
                   description=f"update {cfg.model.name}")
    net.to(device).eval()
    after, predictions = measure(net)
    record = updating.record(dataclasses.replace(opts, replay=share), classes=classes, appended=appended,
                             counts=counts, epochs=train_cfg.epochs, result=result,
                             seconds=time.perf_counter() - started, before=before, after=after, notes=notes)
    truth = np.concatenate([y for _, y in tests])
    split = {"train": int(len(train_y)), "val": int(len(val_y)), "test": int(len(truth)),
             "test_is_official": bool(old.parts.official and new.parts.official), "seed": cfg.train.seed,
             "test_of": "the old test split" + ("" if same else " and the new data's test split")}
    updating.conclude(run, target, cfg, net, classes, record, truth, np.concatenate(predictions), result, split)
    return updating.swap_in(run, target, opts.out), record
