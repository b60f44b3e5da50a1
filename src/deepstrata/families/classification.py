"""What the classification families (images, texts) share: the learned row and the confusion matrix.

Not a family: a helper module the image and text families both import, so that their
comparison rows are built by one function (recommendation ranks, it does not classify).
"""

from __future__ import annotations

from pathlib import Path

from deepstrata.engine import checkpoint as ckpt


def write_confusion(run_dir: Path, classes: list[str], truth, predicted) -> None:
    """``confusion.json``: the learned model's confusion matrix on the test split."""
    from deepstrata.metrics import confusion_matrix

    ckpt.atomic_write_json(run_dir / "confusion.json", {
        "classes": classes, "matrix": confusion_matrix(truth, predicted, len(classes)).tolist(),
    })


def classification_row(name: str, num_classes: int, truth, predicted, result, net, **settings) -> dict:
    """The learned model's comparison row on the test split."""
    from deepstrata.metrics import classification_metrics

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
