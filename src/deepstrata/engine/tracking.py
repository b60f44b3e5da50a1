"""TensorBoard event files for a run (``train.tensorboard``), behind the narrow interface the loop calls.

Practitioners open ``tensorboard --logdir runs/`` to compare runs; with ``--tensorboard`` a
fit also writes ``RUN/tensorboard/``: per step the training loss (``train/loss``) and the
learning rate (``train/lr``); per epoch every validation metric (``val/<name>``), the
epoch's training loss and accuracy (``epoch/<name>``) and the throughput
(``train/samples_per_s``); after scoring, the comparison rows as a text table
(``comparison``) and per-row test scalars (``test/<row>/<metric>``), and for a
classification run with ``confusion.json`` the confusion matrix as an image (``confusion``).

Only rank 0 writes (under torchrun the per-step loss is rank 0's share of the batch; the
epoch rows are the all-reduced ones of ``metrics.jsonl``). ``tensorboard`` (the ``[tracking]`` extra) is imported only when a run
asks for it; without it the run is refused before training, in one line.

Steps are the loop's global optimiser step, so a resumed run continues the same curves.
A resume from the checkpoint at step S carries the stopped fit's events up to step S into
the new writer's file, in step order, and only then (once that file is flushed) deletes the
old event files; what the stopped fit wrote after its checkpoint is trained again and so
dropped. The run then has one event file for its training curves, so TensorBoard's reader
(which orders files by the wall-clock stamp in their names, and purges on a step that goes
backwards) sees each step once even when the clock stepped back between the two fits. The
writer is flushed at every checkpoint, so events up to a checkpoint are on disk when it is.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from deepstrata.errors import ConfigError

DIR = "tensorboard"
EXTRA_LINE = "train.tensorboard needs the tensorboard package: pip install 'deepstrata[tracking]'"


def require() -> None:
    """Refuse, in one line, a run that asks for TensorBoard when the extra is not installed."""
    try:
        import tensorboard  # noqa: F401
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise ConfigError(EXTRA_LINE) from None


class Tracker:
    """One run's TensorBoard writer; every method is a no-op on a tracker opened with ``enabled=False``."""

    def __init__(self, run_dir: Path | None, enabled: bool, *, resume_step: int | None = None) -> None:
        self.writer = None
        if not enabled or run_dir is None:
            return
        require()
        from torch.utils.tensorboard import SummaryWriter

        folder = Path(run_dir) / DIR
        stopped = sorted(folder.glob("*tfevents*")) if resume_step is not None else []
        self.writer = SummaryWriter(log_dir=str(folder))
        if stopped:
            _carry_events(stopped, resume_step, self.writer)
        self._seen, self._start = 0, time.perf_counter()

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def begin_epoch(self) -> None:
        """Start the clock of the epoch's throughput (validation time is left out of it)."""
        self._seen, self._start = 0, time.perf_counter()

    def step(self, step: int, loss, lr: float, examples: int) -> None:
        """After optimiser step ``step`` (from 1): the batch's loss (a tensor or float), the learning rate and
        the examples the step trained on (all ranks). Reading the loss waits for the device: only when tracking."""
        if self.writer is None:
            return
        self._seen += examples
        self.writer.add_scalar("train/loss", float(loss), step)
        self.writer.add_scalar("train/lr", lr, step)

    def epoch(self, step: int, row: dict) -> None:
        """The epoch's ``metrics.jsonl`` row at the step it ended on, and its training throughput."""
        if self.writer is None:
            return
        samples_per_s = self._seen / max(time.perf_counter() - self._start, 1e-9)
        for key, value in row.items():
            if key in ("epoch", "step", "lr", "seconds") or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            tag = f"val/{key[4:]}" if key.startswith("val_") else f"epoch/{key}"
            self.writer.add_scalar(tag, value, step)
        self.writer.add_scalar("train/samples_per_s", samples_per_s, step)
        self.writer.flush()

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _carry_events(paths: list[Path], last_step: int, writer) -> None:
    """Copy the events of ``paths`` at steps 1..``last_step`` into ``writer`` (ordered by step, stable, each
    step and tag once), flush, then delete ``paths``. A crash between the flush and the deletes leaves both
    files; the next resume carries them again, still each step and tag once."""
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto.event_pb2 import Event

    # The raw records, parsed as written: the higher-level loader migrates scalars to tensors.
    events = (Event.FromString(record) for path in paths for record in RawEventFileLoader(str(path)).Load())
    kept, seen = [], set()
    for event in events:
        key = (event.step, event.WhichOneof("what"), tuple(value.tag for value in event.summary.value))
        if event.WhichOneof("what") != "file_version" and 0 < event.step <= last_step and key not in seen:
            seen.add(key)
            kept.append(event)
    kept.sort(key=lambda event: event.step)
    for event in kept:
        writer.file_writer.add_event(event, event.step, event.wall_time)
    writer.flush()
    for path in paths:
        path.unlink()


def _comparison_text(comparison: dict) -> str:
    """The comparison rows as a Markdown table (TensorBoard's text plugin renders Markdown)."""
    rows = [row for row in comparison.get("rows", []) if isinstance(row, dict)]
    names = [name for row in rows for name in (row.get("metrics") or {})]
    metrics = list(dict.fromkeys(names))
    lines = ["| row | kind | " + " | ".join(metrics) + " | train s |",
             "|---|---|" + "---|" * len(metrics) + "---|"]
    for row in rows:
        values = [row.get("metrics", {}).get(m) for m in metrics]
        cells = [f"{v:.4f}" if isinstance(v, (int, float)) else "-" for v in values]
        seconds = row.get("train_seconds")
        tail = f"{seconds:.1f}" if isinstance(seconds, (int, float)) else "-"
        lines.append(f"| {row.get('name')} | {row.get('kind', '')} | " + " | ".join(cells) + f" | {tail} |")
    return "\n".join(lines)


def _confusion_image(confusion: dict):
    """The confusion matrix as an HWC uint8 array: rows true class, columns predicted, row-normalised."""
    import numpy as np

    matrix = np.asarray(confusion["matrix"], dtype=np.float64)
    totals = matrix.sum(axis=1, keepdims=True)
    rates = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
    cell = max(1, 256 // max(1, len(matrix)))
    big = np.kron(rates, np.ones((cell, cell)))
    shade = (255 * (1.0 - big)).astype(np.uint8)
    return np.stack([shade, shade, np.full_like(shade, 255)], axis=-1)


def log_results(run_dir: Path, step: int) -> None:
    """After scoring (rank 0): ``comparison.json`` as text and scalars, ``confusion.json`` as an image."""
    require()
    from torch.utils.tensorboard import SummaryWriter

    run_dir = Path(run_dir)
    comparison = json.loads((run_dir / "comparison.json").read_text(encoding="utf-8"))
    writer = SummaryWriter(log_dir=str(run_dir / DIR))
    try:
        writer.add_text("comparison", _comparison_text(comparison), step)
        for row in comparison.get("rows", []):
            for metric, value in (row.get("metrics") or {}).items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    writer.add_scalar(f"test/{row.get('name')}/{metric}", value, step)
        confusion_path = run_dir / "confusion.json"
        if confusion_path.is_file():
            confusion = json.loads(confusion_path.read_text(encoding="utf-8"))
            if isinstance(confusion, dict) and isinstance(confusion.get("matrix"), list) and confusion["matrix"]:
                writer.add_image("confusion", _confusion_image(confusion), step, dataformats="HWC")
    finally:
        writer.close()
