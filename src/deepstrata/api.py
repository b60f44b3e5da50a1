"""The Python API's verbs: ``fit`` (the whole main job) and what the CLI needs to decide before it.

The CLI's ``fit`` verb only parses arguments and calls ``fit``; the steps themselves are
``deepstrata.pipeline``, the same for every task family.
"""

from __future__ import annotations

from pathlib import Path

from deepstrata import families, pipeline
from deepstrata.config import RunConfig
from deepstrata.families.image.config import resolve_image_config as resolve_config  # noqa: F401  (public name)

TASKS = families.NAMES


def task_of_config(config: RunConfig | str | Path) -> str | None:
    """The family a config names with its ``task:`` key, when it is not the image default (which the data
    or model may still override: a config without ``task:`` reads as an image one)."""
    return families.of_config(config)


def detect_task(data, model: str | None, task: str | None) -> str:
    """Which family a fit is: named explicitly, implied by the model, or by the data's form.

    Image sources are the default; a table or text file (or a text data object) means text
    classification unless ``task="recommend"`` says it is an interaction log.
    """
    return families.detect(data, model, task).name


def fit_family(data, model: str | None, task: str | None, config, out, resume: bool) -> str:
    """The family ``fit`` will use for these arguments (a resumed run's own, a config's ``task:`` ...)."""
    return pipeline.choose_family(data, model, task, config, pipeline.saved_config(out, resume)).name


def launch_processes(argv: list[str], *, devices: int | None, resume: bool, out, batch_size: int | None,
                     batch_per_device: bool, device: str | None) -> int | None:
    """Re-run ``fit`` as ``devices`` local processes through torchrun when asked for more than one and not
    already launched; returns their exit status, or None when this process should fit by itself.

    A resumed run keeps the process count its config.yaml records unless ``--devices`` says otherwise.
    """
    from deepstrata.engine import distributed
    from deepstrata.errors import DeepstrataError

    if devices is None and resume:
        saved = pipeline.saved_config(out, resume)
        devices = saved.train.devices if saved is not None else 1
    if (devices or 1) <= 1 or distributed.launched_by_torchrun():
        return None
    if batch_size and batch_size % devices and not batch_per_device:
        raise DeepstrataError(f"--batch-size {batch_size} is not divisible by --devices {devices}; "
                              f"the global batch is split evenly across processes")
    if not out:
        raise DeepstrataError("--devices N needs --out DIR, so that every process writes to the same run")
    distributed.warn_if_oversubscribed(devices, device)
    return distributed.launch(argv, devices)


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
):
    """Train a model on raw data and set it beside hand-engineered baselines; returns the finished ``Run``.

    ``data`` is ``"digits"``, a named image set (``"mnist"``, ``"fashion-mnist"``,
    ``"cifar10"``), a path (image folder, IDX directory, CIFAR batches, shard directory, a
    text table or archive, an interaction log), or a text data object. Other keywords
    override config fields by name (``epochs=5``, ``lr=1e-3``, ``baselines=False`` …).

    Under torchrun (or ``deepstrata fit --devices N``) every process calls this; rank 0
    alone writes the run directory, runs the baselines and returns the ``Run`` (the
    other ranks return ``None``).

    Text and recommendation runs (``task="text"`` / ``"recommend"``, or implied by the
    model or the data) go through the same pipeline with their own family.
    """
    return pipeline.fit(data, model, task=task, config=config, out=out, resume=resume, overwrite=overwrite,
                        quiet=quiet, **overrides)


def learning_curve(source, data, budgets="1,5,10,50,all", *, out, seeds: int = 3, **kwargs):
    """The few-label learning curve of ``transfer`` (``deepstrata transfer --curve``): transfer vs the same
    architecture from scratch vs the hand-engineered baseline at each budget of labels per class; returns the
    ``Run`` in ``out``, which holds ``curve.json`` and the plot in its report (see ``deepstrata.curve``)."""
    from deepstrata.curve import learning_curve as run_curve
    from deepstrata.curve import parse_budgets

    budgets = parse_budgets(budgets) if isinstance(budgets, str) else list(budgets)
    return run_curve(source, data, budgets, out=out, seeds=seeds, **kwargs)


def transfer(source, data, *, mode: str | None = None, up_to: str | None = None, arch: str | None = None,
             labels_per_class: int | None = None, **kwargs):
    """Fit on ``data`` starting from ``source``'s layers (``deepstrata transfer``); returns the ``Run``.

    ``source`` is an image run directory, ``"efficientnet-lite0"`` (ImageNet weights, the
    ``[vision]`` extra) or a weights file with ``arch``. ``mode``: ``"linear"`` (reused
    layers frozen, BatchNorm statistics included), ``"finetune"`` (the default: all layers
    train, earlier ones slower) or ``"gradual"`` (unfrozen from the top down). ``up_to``
    names the last reused layer. Other keywords are ``fit``'s.
    """
    return fit(data, transfer_from=str(source), mode=mode, up_to=up_to, arch=arch,
               labels_per_class=labels_per_class, **kwargs)
