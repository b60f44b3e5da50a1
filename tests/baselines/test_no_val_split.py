"""Few labels per class: baselines choose their regularisation without a validation split, and say how.

An image folder with 3 images for each of 40 classes gets no validation example from the
split rule (round(0.1 x 3) = 0 per class); the fit used to train the CNN and then stop in the
baselines with "the val split is empty". Now C is chosen by stratified cross-validation on
the training split (or fixed, when a class has one training example), the row says which,
and the split says what its rule did.
"""

from __future__ import annotations

import json

import numpy as np
import torch
from PIL import Image
from sklearn.datasets import load_digits

from deepstrata.baselines.image_features import CV_FOLDS, DEFAULT_C, choose_c, run_image_baselines
from deepstrata.baselines.text_features import run_text_baseline
from deepstrata.cli import main
from deepstrata.data.split import RULE, split_dataset

CLASSES, PER_CLASS = 40, 3


def few_images(per_class: int = PER_CLASS, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``CLASSES`` classes of ``per_class`` real 8x8 digits each (class c holds digit c % 10, its own images)."""
    digits = load_digits()
    images = (digits.images * 255 / 16).astype(np.uint8)
    x, y = [], []
    for c in range(CLASSES):
        members = np.flatnonzero(digits.target == c % 10)
        start = (c // 10) * 10 + offset
        x.append(images[members[start:start + per_class]])
        y += [c] * per_class
    return np.concatenate(x)[:, None], np.array(y)


def test_the_split_rule_is_stated_when_small_classes_give_no_validation():
    x, y = few_images()

    class Folder:
        classes = [f"c{i}" for i in range(CLASSES)]
        test_x = test_y = None

    Folder.x, Folder.y = torch.from_numpy(x), torch.from_numpy(y)
    splits = split_dataset(Folder, seed=0)
    assert len(splits.val_y) == 0 and len(splits.test_y) == CLASSES and len(splits.train_y) == 2 * CLASSES
    [note] = splits.notes
    assert "round(val_fraction x the rest) to validation" in note and "keeps at least one for training" in note
    assert f"{CLASSES} of {CLASSES} classes" in note and "the validation split is empty" in note
    assert "cross-validation on the training split" in note
    assert "val_fraction 0" in split_dataset(Folder, seed=0, val_fraction=0.0).notes[0]
    Folder.x, Folder.y = torch.zeros(300, 1), torch.arange(300) % 3
    assert split_dataset(Folder, seed=0).notes == []  # nothing to say when every class gives its share


def test_choose_c_cross_validates_or_falls_back_and_says_so():
    y = np.repeat(np.arange(4), 5)
    seen = []

    def score(fit_idx, held_idx, c):
        seen.append((None if fit_idx is None else len(fit_idx), c))
        assert fit_idx is not None and not set(fit_idx) & set(held_idx)
        assert set(y[fit_idx]) == set(y) == set(y[held_idx])  # stratified: every class on both sides
        return -abs(c - 2.0)

    best, settings = choose_c((0.5, 2.0, 8.0), y, np.zeros(0, np.int64), 0, score, lambda m: None, "x")
    assert best == 2.0 and settings["cv_folds"] == CV_FOLDS and len(seen) == 3 * CV_FOLDS
    assert settings["C_selection"].startswith(f"chosen by {CV_FOLDS}-fold stratified cross-validation")
    best, settings = choose_c((0.5, 2.0), np.array([0, 0, 1]), np.zeros(0, np.int64), 0, score, lambda m: None, "x")
    assert best == DEFAULT_C and "a class has a single training example" in settings["C_selection"]
    best, settings = choose_c((0.5, 2.0), y, np.array([0, 1]), 0, lambda f, h, c: c, lambda m: None, "x")
    assert best == 2.0 and settings["C_selection"] == "chosen on the validation split (2 examples)"


def test_image_baselines_without_a_validation_split():
    x, y = few_images()
    test_x, test_y = few_images(1, offset=PER_CLASS)
    empty_x, empty_y = x[:0], y[:0]
    [row] = run_image_baselines(x, y, empty_x, empty_y, test_x, test_y, CLASSES, names=("pixels_lr",), seed=0)
    settings = row.row()["settings"]
    assert "cross-validation on the training split" in settings["C_selection"] and settings["cv_folds"] == 3
    assert set(settings["cv_accuracy_by_C"]) == {repr(c) for c in settings["C_grid"]}
    assert row.metrics["accuracy"] > 2 / CLASSES  # far above chance on real digits
    [again] = run_image_baselines(x, y, empty_x, empty_y, test_x, test_y, CLASSES, names=("pixels_lr",), seed=0)
    assert again.extra == {**settings, "predict_seconds": again.extra["predict_seconds"]}


def test_text_baseline_without_a_validation_split(shared_data):
    from deepstrata.data.text import load_text

    news = load_text(shared_data / "ag-news" / "test.csv")
    train = np.concatenate([np.flatnonzero(news.labels == c)[:12] for c in range(4)])
    test = np.concatenate([np.flatnonzero(news.labels == c)[12:32] for c in range(4)])
    row = run_text_baseline([news.texts[i] for i in train], news.labels[train], [], [],
                            [news.texts[i] for i in test], news.labels[test], 4, seed=0).row()
    assert row["settings"]["C_selection"].startswith("chosen by 3-fold stratified cross-validation")
    assert row["metrics"]["accuracy"] > 0.4


def test_a_folder_of_3_images_per_class_fits_with_baselines(tmp_path, capsys):
    x, y = few_images()
    test_x, test_y = few_images(1, offset=PER_CLASS)
    for split, images, labels in (("train", x, y), ("test", test_x, test_y)):
        for i, (image, label) in enumerate(zip(images, labels)):
            folder = tmp_path / "data" / split / f"class{label:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image[0]).save(folder / f"{i}.png")
    out = tmp_path / "run"
    code = main(["fit", "--data", str(tmp_path / "data"), "--out", str(out), "--epochs", "1", "--width", "8",
                 "--device", "cpu", "--quiet"])
    assert code == 0, capsys.readouterr().err
    comparison = json.loads((out / "comparison.json").read_text())
    assert comparison["split"]["val"] == 0 and comparison["split"]["test_is_official"]
    rows = {row["name"]: row for row in comparison["rows"]}
    assert set(rows) == {"cnn", "hog_lr", "pixels_lr"}
    for name in ("hog_lr", "pixels_lr"):
        assert "cross-validation on the training split (the validation split is empty)" in \
            rows[name]["settings"]["C_selection"]
        assert rows[name]["settings"]["split_rule"] == RULE  # the rule that left validation empty, in the run


def test_a_class_with_one_training_image_uses_the_stated_default():
    x, y = few_images(2)
    test_x, test_y = few_images(1, offset=2)
    keep = np.delete(np.arange(len(y)), 1)  # class 0 keeps one image: no fold could hold it out
    [row] = run_image_baselines(x[keep], y[keep], x[:0], y[:0], test_x, test_y, CLASSES, names=("pixels_lr",))
    assert row.extra["C"] == DEFAULT_C and "fixed default C=1" in row.extra["C_selection"]
