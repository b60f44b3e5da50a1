"""``update``: continue a finished recommendation run on new interactions, new users and items included.

It trains outside the fit pipeline: the trained model continues from its weights on the
joined log, into a new run directory (or in place, once the update has finished).
"""

from __future__ import annotations

import dataclasses
import html
import sys
import time
from pathlib import Path

import torch

from deepstrata.config import dump_config
from deepstrata.data.interactions import merge_logs
from deepstrata.engine import checkpoint as ckpt
from deepstrata.engine import distributed
from deepstrata.engine.loop import train
from deepstrata.families.recommend.config import read_log, split_events
from deepstrata.families.recommend.fit import (baseline_rows, comparison_record, data_section, learned_row,
                                               model_info, write_log)
from deepstrata.families.recommend.serve import check_k, served
from deepstrata.families.recommend.tasks import make_task, metrics_only, model_scorer
from deepstrata.records import provenance, write_model_info
from deepstrata.recsys_metrics import METRIC_NAMES, evaluate_scorer
from deepstrata.rundir import guarded


def _say(quiet: bool, message: str) -> None:
    if not quiet:
        print(message, file=sys.stderr)


@guarded  # an update that raises leaves both directories unlocked, the run as it was (see deepstrata.rundir)
def update_run(run, data, *, out: str | Path | None = None, epochs: int | None = None,
               quiet: bool = True) -> tuple[Path, dict]:
    """Continue training a run on new interactions; returns the updated run's directory and the update's record.

    The new events join the run's log (old ids keep their indices and embedding rows;
    new ids get fresh rows), the joined log is split as the run was, and the trained
    model continues from its weights for ``recommend.update_epochs`` epochs. The test
    metrics of the model before and after, and the seconds taken, are recorded in
    ``comparison.json`` under ``update`` and appended to ``model.json``'s ``updates``.
    Without ``out`` the run directory is replaced only once the update has finished (locked
    meanwhile; files in it that deepstrata did not write move to the updated run).
    """
    from deepstrata.families import updating
    from deepstrata.report import write_report

    state = served(run)
    cfg = run.config
    if epochs is not None:
        check_k(epochs)
    rc = cfg.recommend
    name = run.info["spec"]["family"]
    started = time.perf_counter()
    raw = read_log(str(data), rc, raw=True)
    log, stats = merge_logs(state.log, raw)
    split = split_events(log, rc)
    net = run.load_model()
    # New users' and items' rows start random: drawn from the run's seed (without touching the
    # caller's random state), so identical updates report identical "before" metrics.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.train.seed)
        net.grow(log.num_users, log.num_items)
    device = distributed.rank_device(cfg.train.device)
    net.to(device)
    before = metrics_only(evaluate_scorer(model_scorer(net, device), split.test, split.num_items))
    target = updating.staged(run, out, data, quiet)
    train_cfg = dataclasses.replace(cfg.train, epochs=epochs or rc.update_epochs)
    cfg_used = dataclasses.replace(cfg, train=train_cfg)
    ckpt.atomic_write_text(target / "config.yaml", dump_config(cfg))
    write_log(target, log)
    ckpt.atomic_write_json(target / "provenance.json", provenance(device, cfg.train.seed))
    _say(quiet, f"update: +{stats['new_events']} events, {stats['new_users']} new users, {stats['new_items']} new "
                f"items; continuing {name} for {train_cfg.epochs} epochs")
    result = train(net, make_task(name, split, rc), cfg_used.train, target, resume=False, quiet=quiet,
                   description=name)
    row = learned_row(net, name, split, cfg_used, result, device)
    seconds = time.perf_counter() - started
    record = {"data": str(data), **stats, "epochs": train_cfg.epochs, "best_epoch": result.best_epoch,
              "seconds": round(seconds, 3), "train_seconds": round(result.train_seconds, 3),
              "before": before, "after": row["metrics"]}
    row["settings"]["update"] = {"from": str(run.path), "epochs": train_cfg.epochs}
    rows = [row]
    if cfg.baselines:
        rows += baseline_rows(split, rc.knn_neighbours)
    ckpt.atomic_write_json(target / "comparison.json", comparison_record(cfg, log, split, rows, update=record))
    updates = list(run.info.get("updates", [])) + [record]
    write_model_info(target, model_info(net, log, split, {"updates": updates}))
    write_report(target, extra_sections=[("Interactions and split", data_section(split, log)),
                                         ("Update", _update_section(record))])
    return updating.swap_in(run, target, out), record


def _update_section(record: dict) -> str:
    head = "".join(f"<th>{html.escape(m)}</th>" for m in METRIC_NAMES)
    lines = "".join(f"<tr><td>{when}</td>" + "".join(f"<td>{record[when][m]:.4f}</td>" for m in METRIC_NAMES)
                    + "</tr>" for when in ("before", "after"))
    return (f"<p>Added {record['new_events']} events from {html.escape(record['data'])} "
            f"({record['new_users']} new users, {record['new_items']} new items); {record['epochs']} epochs, "
            f"{record['seconds']:.1f}s.</p><table><tr><th></th>{head}</tr>{lines}</table>")
