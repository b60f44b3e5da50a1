"""The recommendation family on the one fit pipeline: its layering, and the steps the pipeline asks of it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import deepstrata.families.recommend as recommend_family
from deepstrata.config import RunConfig, resolved_train
from deepstrata.families.recommend import fit
from deepstrata.families.recommend.config import resolve_recommend_config

PACKAGE = Path(recommend_family.__file__).parent


def _imports(path: Path):
    """``(module, names)`` of every ``import`` and ``from ... import`` in ``path``, nested ones included."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            yield node.module, [alias.name for alias in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []


def test_the_family_sits_below_run_api_and_pipeline():
    modules = sorted(PACKAGE.glob("*.py"))
    assert len(modules) >= 7
    for path in modules:
        for module, names in _imports(path):
            for above in ("deepstrata.run", "deepstrata.api", "deepstrata.pipeline"):
                assert module != above and not module.startswith(above + "."), f"{path.name} imports {module}"
            if module == "deepstrata":
                assert not {"run", "api", "pipeline"} & set(names), f"{path.name} imports {names} from deepstrata"


def test_no_private_name_is_imported_from_another_module():
    for path in sorted(PACKAGE.glob("*.py")):
        for module, names in _imports(path):
            if module.startswith("deepstrata"):
                private = [name for name in names if name.startswith("_")]
                assert not private, f"{path.name} imports {private} from {module}"


@pytest.mark.parametrize("model", ["mf", "sasrec"])
def test_the_pipeline_sizing_leaves_the_default_training_as_it_is(model):
    cfg = resolve_recommend_config(None, "u.data", model, {"epochs": None, "lr": None})
    assert cfg.train.epochs is not None and cfg.train.batch_size is not None
    assert resolved_train(cfg.train, fit.UNSIZED_TRAIN_SIZE) == cfg.train


def test_a_config_without_epochs_is_sized_as_the_training_loop_sized_it():
    # A recommendation task has no ``num_examples``; the loop sized an open config as for 10,000 examples.
    cfg = resolve_recommend_config(RunConfig(), "u.data", "mf", {})
    assert cfg.train.epochs is None and cfg.train.batch_size is None
    sized = resolved_train(cfg.train, fit.UNSIZED_TRAIN_SIZE)
    assert (sized.epochs, sized.batch_size) == (23, 256)


def test_read_and_describe(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text("user,item,timestamp\n" + "".join(f"{u},{i},{u * 10 + i}\n" for u in range(4) for i in range(3))
                   + "9,1,100\n")
    cfg = resolve_recommend_config(None, str(log), "mf", {})
    prepared = fit.read(cfg)
    assert prepared.guarded_paths == (str(log),) and prepared.source == prepared.own.log.source
    lines = fit.describe(prepared, 0.04)
    assert lines[0] == (f"data: {prepared.own.log.source} — 5 users, 3 items, 13 interactions; leave-last-out "
                        "split: train 5 events, val 4 users, test 4 users; read in 0.0s")
    assert "note: users single interaction: 1" in lines[1:]
    comparison = fit.comparison(cfg, prepared, [])
    assert list(comparison) == ["task", "data", "split", "primary_metric", "rows"]
    assert comparison["split"] == {"train": 5, "val": 4, "test": 4, "method": "leave-last-out", "seed": cfg.train.seed}
    assert [title for title, _ in fit.report_sections(prepared)] == ["Interactions and split"]


def test_the_files_a_recommendation_run_adds_are_owned_by_the_run_directory():
    from deepstrata import rundir
    from deepstrata.families.recommend.config import LOG_FILE, VOCAB_FILE

    assert {LOG_FILE, VOCAB_FILE} <= set(rundir.OWNED_FILES)
