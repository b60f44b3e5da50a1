"""The CLI starts at once: help and version import no torch, and the lazy package names still work."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from deepstrata.cli import build_parser, main

VERBS = sorted(next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices)

# One subprocess for every command line: each main([...]) exits (SystemExit) after printing.
_PROBE = """
import contextlib, io, json, sys
from deepstrata.cli import main
commands = json.loads(sys.argv[1])
with_torch = []
for argv in commands:
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            main(argv)
        except SystemExit:
            pass
    if "torch" in sys.modules:
        with_torch.append(argv)
        break
print(json.dumps({"with_torch": with_torch, "deepstrata": sorted(m for m in sys.modules if m.startswith("deepstrata"))}))
"""


def test_help_and_version_of_every_verb_import_no_torch():
    assert {"fit", "evaluate", "predict", "compare", "bench", "shard", "inspect", "recommend"} <= set(VERBS)
    commands = [["--help"], ["--version"]] + [[verb, "--help"] for verb in VERBS]
    done = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(commands)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["with_torch"] == [], f"torch imported by {result['with_torch']}; modules: {result['deepstrata']}"


def test_the_package_names_are_there_when_first_used():
    probe = ("import sys, deepstrata as ds\n"
             "assert 'torch' not in sys.modules\n"
             "from deepstrata import Run, load, fit, ConfigError, DataConfig, RunConfig, load_config\n"
             "assert callable(ds.fit) and ds.fit is fit and ds.Run is Run and ds.load is load\n"
             "assert callable(ds.data.text_table)\n"
             "assert set(ds.__all__) <= set(dir(ds))\n"
             "try:\n    ds.no_such_name\nexcept AttributeError as err:\n    print(err)\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "no attribute 'no_such_name'" in done.stdout


def test_the_torch_free_copies_match_what_they_copy():
    from deepstrata import cli_args, cli_shard
    from deepstrata.data.images import FORMATS
    from deepstrata.data.shards import DEFAULT_SHARD_SIZE
    from deepstrata import model_names as names
    from deepstrata.models import registry

    assert cli_args.IMAGE_FORMATS == FORMATS
    assert cli_shard.DEFAULT_SHARD_SIZE == DEFAULT_SHARD_SIZE
    for name in ("IMAGE_MODELS", "TEXT_MODELS", "RECOMMEND_MODELS", "MODEL_NAMES"):
        assert getattr(registry, name) == getattr(names, name)
    assert set(names.MODEL_NAMES) <= set(registry.BUILDERS)


def test_fit_help_groups_its_options_by_family(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    heads = [text.index(f"\n{title}:\n") for title in ("options", "image options", "text options",
                                                        "recommendation options")]
    assert heads == sorted(heads)
    general, image, text_part, recommend = (text[a:b] for a, b in zip(heads, heads[1:] + [len(text)]))
    assert "--epochs" in general and "--val-fraction" in general and "--skip-bad" not in general
    assert all(flag in image for flag in ("--format", "--data-dir", "--image-size", "--skip-bad"))
    assert "text data: a .csv/.tsv/.jsonl/.parquet table" in text_part and "--vocab-size" in text_part
    assert "--user-column" in recommend and "--min-rating" in recommend


def test_the_program_entry_freezes_what_is_left_so_the_exit_is_quick(tmp_path):
    """``run`` (the script and ``python -m deepstrata``) returns main's status with every object frozen."""
    import tomllib
    from pathlib import Path

    scripts = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["deepstrata"] == "deepstrata.cli:run"
    probe = ("import gc, sys\nfrom deepstrata.cli import run\n"
             f"sys.argv = ['deepstrata', 'runs', {str(tmp_path)!r}]\n"
             "code = run()\nprint(code, gc.get_freeze_count() > 0)\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.stdout.split()[-2:] == ["0", "True"], done.stderr
