"""The one fit pipeline: the same steps, in the same order, for every task family.

read and split → join the process group → prepare the run directory → config.yaml →
build the model → model.json and provenance.json → the training loop → score the test
split → baselines → comparison.json → report → ``Run``. What differs between images,
texts and interaction logs is asked of the family (``families.base.Family``); nothing
here knows which family it runs.

Under torchrun (or ``deepstrata fit --devices N``) every process runs this; rank 0 alone
writes the run directory, scores the test split and runs the baselines, and returns the
``Run`` (the other ranks return ``None``).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

from deepstrata import families
from deepstrata.config import RunConfig, dump_config, load_config, resolved_train
from deepstrata.engine import checkpoint as ckpt
from deepstrata.engine import distributed, tracking
from deepstrata.engine.loop import train
from deepstrata.errors import RunError
from deepstrata.families.base import FitContext
from deepstrata.records import default_run_dir
from deepstrata.run import Run
from deepstrata.rundir import check_resumable, finish_run, guarded, kept_baseline_rows, prepare_run_dir, resume_point


def _say(quiet: bool, message: str) -> None:
    if not quiet:
        print(message, file=sys.stderr)


def choose_family(data, model: str | None, task: str | None, config, saved: RunConfig | None):
    """Which family a fit is: ``task``; a resumed run's own; a config's ``task:``; the model's; the data's."""
    if task is None and data is None and saved is not None:
        task = getattr(families.for_task(saved.task), "name", families.DEFAULT)
    if task is None and config is not None:
        task = families.of_config(config)
    return families.detect(data, model, task)


def saved_config(out, resume: bool) -> RunConfig | None:
    """A resumed run's config.yaml, read once (it decides the family and is the config to continue)."""
    if resume and out is not None and (Path(out) / "config.yaml").is_file():
        return load_config(Path(out) / "config.yaml")
    return None


@guarded  # a fit that raises leaves its run directory marked and unlocked (see deepstrata.rundir)
def fit(data=None, model: str | None = None, *, task: str | None = None, config: RunConfig | str | Path | None = None,
        out: str | Path | None = None, resume: bool = False, overwrite: bool = False, quiet: bool = False,
        **overrides) -> Run | None:
    """Train on raw data beside the family's hand-engineered baselines; see ``deepstrata.api.fit``."""
    if resume and out is None:
        raise RunError("--resume needs --out RUN (the run directory to continue)")
    saved = saved_config(out, resume)
    family = choose_family(data, model, task, config, saved)
    cfg = family.resolve_config(data, model, config if config is not None else saved, overrides)
    if cfg.train.tensorboard:
        tracking.require()  # before anything is read or written
    run_dir = Path(out) if out is not None else default_run_dir(cfg.data.source, cfg.model.name)

    started = time.perf_counter()
    prepared = family.read(cfg, data)
    cfg = prepared.cfg or cfg  # what reading learned (a text table's columns) is part of the config
    load_seconds = time.perf_counter() - started
    env = distributed.join(distributed.device_type(cfg.train.device), cfg.train.devices)
    quiet = quiet or not env.is_main
    cfg = dataclasses.replace(cfg, train=resolved_train(family.resolve_plateau(cfg).train, prepared.train_size))
    family.check_world(cfg, prepared, env.world_size)
    if env.is_main:
        run_dir = prepare_run_dir(run_dir, resume=resume, overwrite=overwrite, data=prepared.guarded_paths,
                                  quiet=quiet)
    distributed.barrier()
    resuming = resume_point(run_dir, resume, quiet)
    device = distributed.rank_device(cfg.train.device)
    cfg, precision_reason = family.resolve_precision(cfg, device)
    cfg, layout_reason = family.resolve_channels_last(cfg, device, prepared)
    if env.is_main and not resuming:  # a resume rewrites its records only once its training has run
        ckpt.atomic_write_text(run_dir / "config.yaml", dump_config(cfg))
    for line in family.describe(cfg, prepared, load_seconds):
        _say(quiet, line)

    if precision_reason != "as asked":
        _say(quiet, f"precision: {'fp32' if cfg.train.precision == '32' else cfg.train.precision} ({precision_reason})")
    if cfg.train.channels_last is True and layout_reason != "as asked":
        _say(quiet, f"memory format: channels-last ({layout_reason})")
    fitting = FitContext(run_dir=run_dir, resuming=resuming, resume_asked=resume, device=device, env=env,
                         quiet=quiet, precision_reason=precision_reason)
    built = family.build(cfg, prepared, fitting)
    if resuming:
        check_resumable(run_dir, built.info)
    elif env.is_main:
        family.write_records(cfg, prepared, built, fitting)
    _say(quiet, built.model_line)

    result = train(built.net, built.task, cfg.train, run_dir, resume=resuming, quiet=quiet,
                   description=built.description)
    if not env.is_main:
        distributed.teardown()
        return None
    if resuming:
        ckpt.atomic_write_text(run_dir / "config.yaml", dump_config(cfg))
        family.write_records(cfg, prepared, built, fitting)
    rows = family.score(cfg, prepared, built, result, fitting)
    extra: dict = {}
    if not cfg.baselines and resume:
        same = family.comparison(cfg, prepared, [])
        rows += kept_baseline_rows(run_dir, same["data"], same["split"], quiet)
    if cfg.baselines:
        baseline_rows, extra = family.baselines(cfg, prepared, built, fitting)
        rows += baseline_rows
    comparison = {**family.comparison(cfg, prepared, rows), **extra}
    ckpt.atomic_write_json(run_dir / "comparison.json", comparison)
    if cfg.train.tensorboard:
        tracking.log_results(run_dir, result.steps)
    finish(run_dir, comparison, family.report_sections(cfg, prepared, built, rows), quiet=quiet)
    distributed.teardown()
    return Run(run_dir, device=str(device))


def finish(run_dir: Path, comparison: dict, sections: list[tuple[str, str]], *, quiet: bool) -> None:
    """Write the report, print the table and where things are, and mark the run finished (rank 0)."""
    from deepstrata.report import format_comparison_table, write_report

    report = write_report(run_dir, extra_sections=sections)
    if not quiet:
        print(format_comparison_table(comparison))
        print(f"run directory: {run_dir}")
        print(f"report: {report}")
    finish_run(run_dir)
