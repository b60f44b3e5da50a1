"""Bad values are refused before anything runs: by their flag on the command line, by their key in a file.

Every numeric config field has a rule (``config.NUMBERS``) and every numeric flag parses
with one, so NaN, infinity and out-of-range values never reach the training loop.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import math
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deepstrata import config as cfgmod
from deepstrata.cli import build_parser, main
from deepstrata.engine.distributed import warn_if_oversubscribed
from deepstrata.cli_args import for_verb, os_error_line, verb_parser
from deepstrata.config import NUMBERS, RunConfig, TrainConfig, dump_config, load_config
from deepstrata.errors import ConfigError, DataError, RunError

SECTIONS = {"data": cfgmod.DataConfig, "model": cfgmod.ModelConfig, "train": cfgmod.TrainConfig,
            "recommend": cfgmod.RecommendConfig, "text": cfgmod.TextConfig}


def bad_values(rule: cfgmod.Number) -> list:
    """Values ``rule`` must refuse: non-finite floats, each side of its range, the wrong kind."""
    values: list = [True, "many"]
    if rule.kind is float:
        values += [math.nan, math.inf, -math.inf]
    else:
        values += [1.5]
    if rule.low is not None:
        values.append(rule.low if rule.low_open else rule.low - 1)
    if rule.high is not None:
        values.append(rule.high if rule.high_open else rule.high + 1)
    return values


def numeric_fields() -> list[str]:
    keys = []
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            if f.type in ("int", "float", "int | None", "float | None"):
                keys.append(f"{section}.{f.name}")
    return keys


def test_every_numeric_field_has_a_rule():
    assert sorted(numeric_fields()) == sorted(NUMBERS)


@pytest.mark.parametrize("key", sorted(NUMBERS))
def test_each_rule_refuses_bad_values_by_key_in_code_and_in_a_file(key, tmp_path):
    section, name = key.split(".")
    for value in bad_values(NUMBERS[key]):
        with pytest.raises(ConfigError, match=rf"^{key}: got .*, expected"):
            SECTIONS[section](**{name: value})
        path = tmp_path / "run.yaml"
        path.write_text(f"{section}:\n  {name}: {'.nan' if value != value else repr(value)}\n"
                        .replace("inf", ".inf").replace("True", "true"))
        with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: {key}: got") as info:
            load_config(path)
        assert info.value.origin == str(path)


def test_defaults_and_bounds_are_accepted():
    for section, cls in SECTIONS.items():
        cls()  # every default meets its own rule
    assert TrainConfig(seed=0).seed == 0 and TrainConfig(seed=2**32 - 1).seed == 2**32 - 1
    assert cfgmod.DataConfig(val_fraction=0).val_fraction == 0  # 0: no validation split
    assert TrainConfig(weight_decay=0, grad_clip=0, patience=0, lr_start=1).lr_start == 1


def test_yaml_reads_3e_minus_4_as_a_learning_rate(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  lr: 3e-4\n")  # YAML 1.1 (PyYAML) reads this as the string '3e-4'
    assert load_config(path).train.lr == pytest.approx(3e-4)


@settings(max_examples=60, deadline=None)
@given(st.one_of(st.floats(max_value=0.0), st.just(math.inf), st.just(-math.inf), st.just(math.nan)))
def test_any_non_finite_or_non_positive_lr_is_refused_naming_train_lr(lr):
    with pytest.raises(ConfigError, match=r"^train\.lr: got .*, expected a finite positive number"):
        TrainConfig(lr=lr)
    with pytest.raises(ConfigError, match=r"^train\.lr: "):
        RunConfig().override(train={"lr": lr})


@settings(max_examples=60, deadline=None)
@given(lr=st.floats(min_value=1e-12, max_value=1e6, allow_nan=False, allow_infinity=False),
       seed=st.integers(0, 2**32 - 1), smoothing=st.floats(0.0, 0.999, allow_nan=False))
def test_any_valid_value_round_trips_through_yaml(tmp_path_factory, lr, seed, smoothing):
    cfg = RunConfig().override(train={"lr": lr, "seed": seed, "label_smoothing": smoothing})
    path = tmp_path_factory.mktemp("cfg") / "run.yaml"
    path.write_text(dump_config(cfg))
    assert load_config(path) == cfg


@settings(max_examples=60, deadline=None)
@given(st.integers(max_value=-1) | st.integers(min_value=2**32))
def test_any_seed_outside_0_to_2_32_is_refused(seed):
    with pytest.raises(ConfigError, match=r"^train\.seed: got -?\d+, expected an integer from 0 to 4294967295"):
        TrainConfig(seed=seed)


# --- the command line --------------------------------------------------------------------------

def numeric_flags():
    """(verb, flag, rule) for every flag of every verb that takes a number."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    found = []
    for verb, verb_parser_ in sub.choices.items():
        for action in verb_parser_._actions:
            if action.type in (int, float):
                found.append((verb, action.option_strings[0], None))
            elif getattr(action.type, "rule", None) is not None:
                found.append((verb, action.option_strings[0], action.type.rule))
    return found


def test_every_numeric_flag_is_checked():
    flags = numeric_flags()
    assert len(flags) >= 30
    unchecked = [f"{verb} {flag}" for verb, flag, rule in flags if rule is None]
    assert not unchecked, f"plain int/float flags: {unchecked}"


@pytest.mark.parametrize("verb,flag,rule", numeric_flags(), ids=lambda v: v if isinstance(v, str) else "")
def test_a_bad_flag_value_is_three_lines_naming_the_flag(verb, flag, rule, capsys):
    bad = "nan" if rule.kind is float else str(int(rule.low) - 1 if rule.low is not None else "x")
    with pytest.raises(SystemExit) as exit_info:
        main([verb, f"{flag}={bad}"])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3, lines
    assert lines[0].startswith(f"usage: deepstrata {verb}") and lines[0].endswith("[options]")
    assert lines[1] == f"deepstrata {verb}: error: {flag}: got {bad}, expected {rule.expected()}"
    assert lines[2] == f"see 'deepstrata {verb} --help'"


@pytest.mark.parametrize("args,line", [
    (["fit", "--lr", "nan"], "deepstrata fit: error: --lr: got nan, expected a finite positive number"),
    (["fit", "--lr", "inf"], "deepstrata fit: error: --lr: got inf, expected a finite positive number"),
    (["fit", "--lr", "-1"], "deepstrata fit: error: --lr: got -1, expected a finite positive number"),
    (["fit", "--lr", "-inf"], "deepstrata fit: error: --lr: got -inf, expected a finite positive number"),
    (["fit", "--lr", "-1e-3"], "deepstrata fit: error: --lr: got -1e-3, expected a finite positive number"),
    (["fit", "--weight-decay", "nan"], "deepstrata fit: error: --weight-decay: got nan, expected a finite number >= 0"),
    (["fit", "--seed", "-5"], "deepstrata fit: error: --seed: got -5, expected an integer from 0 to 4294967295"),
    (["fit", "--devices", "0"], "deepstrata fit: error: --devices: got 0, expected a positive integer"),
    (["fit", "--threads", "0"], "deepstrata fit: error: --threads: got 0, expected a positive integer"),
    (["fit", "--epochs", "0"], "deepstrata fit: error: --epochs: got 0, expected a positive integer"),
    (["fit", "--epochs", "2.5"], "deepstrata fit: error: --epochs: got 2.5, expected a positive integer"),
    (["fit", "--val-fraction", "1.5"],
     "deepstrata fit: error: --val-fraction: got 1.5, expected a number >= 0 and < 1 (0: no validation split)"),
    (["fit", "--lr", "fast"], "deepstrata fit: error: --lr: got 'fast', expected a finite positive number"),
    (["fit", "--lrr", "3"], "deepstrata fit: error: --lrr: not an option of deepstrata fit (did you mean --lr?)"),
    (["update", "run", "--data", "x.csv", "--user-column", "u"],
     "deepstrata update: error: --user-column: not an option of deepstrata update"),
    (["recommend", "run", "--user", "1", "-k", "0"], "deepstrata recommend: error: -k: got 0, expected a positive integer"),
    (["fit", "--model", "transformer9"], "deepstrata fit: error: --model: invalid choice: 'transformer9'"),
])
def test_bad_command_lines_from_the_issue(args, line, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3 and lines[1].startswith(line), lines


def test_negative_numbers_in_any_notation_are_values_not_options():
    args = build_parser().parse_args(["fit", "--task", "recommend", "--min-rating", "-1e3", "--seed", "7"])
    assert args.min_rating == -1000.0 and args.seed == 7


def test_help_still_lists_every_option_and_val_fraction_help_is_right(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    part = text[text.index("--val-fraction F share"):][:250]
    assert "(default 0.1)" in part and "image runs also take 0" in part and "0 for image runs" not in part


def run_main(args, capsys) -> tuple[int, list[str]]:
    code = main(args)
    return code, capsys.readouterr().err.strip().splitlines()


def test_a_file_value_is_named_by_its_key_and_a_flag_by_its_flag(tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  lr: .nan\n")
    code, lines = run_main(["fit", "--config", str(path)], capsys)
    assert code == 2 and lines == [f"deepstrata: error: {path}: train.lr: got nan, expected a finite positive number"]

    table = tmp_path / "t.csv"
    table.write_text("text,label\n" + "".join(f"text {i},{'ab'[i % 2]}\n" for i in range(20)))
    code, lines = run_main(["fit", "--data", str(table), "--dim", "100", "--quiet"], capsys)
    assert code == 2 and lines == ["deepstrata: error: --dim: got 100, expected a multiple of 2 * --heads (8)"]
    code, lines = run_main(["fit", "--data", str(table), "--heads", "3", "--quiet"], capsys)
    assert code == 2 and lines == ["deepstrata: error: --dim: got 128, expected a multiple of 2 * --heads (6)"]
    path.write_text("text:\n  heads: 8\n")  # heads comes from the file: it keeps its key
    code, lines = run_main(["fit", "--data", str(table), "--config", str(path), "--dim", "100", "--quiet"], capsys)
    assert code == 2 and lines == ["deepstrata: error: --dim: got 100, expected a multiple of 2 * text.heads (16)"]


@pytest.mark.parametrize("args,line", [
    (["fit", "--text-column", "body"],
     "--text-column applies to text data, not to images; add --task text if --data holds texts"),
    (["fit", "--user-column", "u"], "--user-column applies to interaction logs (--task recommend), not to images; "
                                    "add --task recommend if --data is an interaction log"),
    (["fit", "--dim", "64"], "--dim applies to text data and interaction logs (--task recommend), not to images"),
    (["fit", "--data", "{tmp}/t.csv", "--user-column", "u"],
     "--user-column applies to interaction logs (--task recommend), not to text"),
    (["fit", "--data", "{tmp}/t.csv", "--image-size", "32"], "--image-size applies to image data, not to text"),
    (["fit", "--data", "{tmp}/t.csv", "--task", "recommend", "--no-augment"],
     "--no-augment applies to image data and text data, not to an interaction log"),
    (["fit", "--data", "{tmp}/t.csv", "--task", "recommend", "--vocab-size", "400"],
     "--vocab-size applies to text data, not to an interaction log"),
])
def test_a_flag_of_another_task_is_named_as_a_flag(args, line, tmp_path, capsys):
    (tmp_path / "t.csv").write_text("text,label\na,x\nb,y\n")
    code, lines = run_main([a.replace("{tmp}", str(tmp_path)) for a in args], capsys)
    assert code == 2 and lines[0].startswith(f"deepstrata: error: {line}") and len(lines) == 1, lines


def test_a_config_files_task_decides_which_flags_apply(tmp_path, capsys):
    (tmp_path / "t.csv").write_text("text,label\na,x\nb,y\n")
    path = tmp_path / "run.yaml"
    path.write_text(f"task: text-classification\ndata: {{source: {tmp_path / 't.csv'}}}\n")
    code, lines = run_main(["fit", "--config", str(path), "--image-size", "8", "--quiet"], capsys)
    assert code == 2 and lines == ["deepstrata: error: --image-size applies to image data, not to text"]


def test_a_hint_naming_an_option_the_verb_lacks_is_left_out():
    parser = build_parser()
    err = DataError("new.csv: no user column found (columns: a, b)", hint="name it with --user-column")
    fit = verb_parser(parser, parser.parse_args(["fit"]))
    update = verb_parser(parser, parser.parse_args(["update", "run", "--data", "x"]))
    assert for_verb(err, fit) == "new.csv: no user column found (columns: a, b); name it with --user-column"
    assert for_verb(err, update) == "new.csv: no user column found (columns: a, b)"
    exists = RunError("runs/a: already exists", hint=("--resume to continue it", "--overwrite to replace it",
                                                       "another --out"))
    assert str(exists) == "runs/a: already exists; use --resume to continue it, --overwrite to replace it or another --out"
    assert for_verb(exists, fit) == str(exists)
    assert for_verb(exists, update) == "runs/a: already exists; use another --out"


def test_text_class_folders_given_to_an_image_fit_point_to_task_text(tmp_path, capsys):
    for label in ("pos", "neg"):
        (tmp_path / "reviews" / label).mkdir(parents=True)
        for i in range(3):
            (tmp_path / "reviews" / label / f"{i}.txt").write_text(f"{label} review {i}")
    code, lines = run_main(["fit", "--data", str(tmp_path / "reviews"), "--quiet"], capsys)
    assert code == 2 and len(lines) == 1
    assert lines[0].endswith("no image files (.png, .jpg, .jpeg, .bmp, .gif, .webp, .tif, .tiff) found; it holds "
                             ".txt files in class folders: for text classification add --task text")
    code, lines = run_main(["shard", "--data", str(tmp_path / "reviews"), "--out", str(tmp_path / "s")], capsys)
    assert code == 2 and "found" in lines[0] and "--task" not in lines[0]  # shard has no --task


# --- OS errors on paths ------------------------------------------------------------------------

def test_an_output_path_under_a_file_is_one_line_naming_it(tmp_path, capsys):
    blocker = tmp_path / "notes.csv"
    blocker.write_text("not a folder")
    code, lines = run_main(["shard", "--data", "digits", "--out", str(blocker / "shards"), "--quiet"], capsys)
    assert code == 2
    assert lines == [f"deepstrata: error: {blocker / 'shards'}: Not a directory ({blocker} is a file)"]
    assert blocker.read_text() == "not a folder"


def test_debug_shows_the_traceback_of_an_os_error(tmp_path, monkeypatch):
    blocker = tmp_path / "notes.csv"
    blocker.write_text("")
    monkeypatch.setenv("DEEPSTRATA_DEBUG", "1")
    with pytest.raises(NotADirectoryError):
        main(["shard", "--data", "digits", "--out", str(blocker / "shards"), "--quiet"])


def test_os_error_lines_name_the_path_and_the_reason(tmp_path):
    with pytest.raises(IsADirectoryError) as info:
        open(tmp_path, "w")
    assert os_error_line(info.value) == f"{tmp_path}: Is a directory"
    with pytest.raises(FileExistsError) as info:
        tmp_path.mkdir()
    assert os_error_line(info.value) == f"{tmp_path}: File exists"
    full = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "run" / "last.safetensors"))
    assert os_error_line(full) == f"{tmp_path / 'run' / 'last.safetensors'}: No space left on device"
    moved = OSError(errno.EXDEV, "Invalid cross-device link", "/a/tmp", None, "/b/final")
    assert os_error_line(moved) == "/a/tmp -> /b/final: Invalid cross-device link"
    assert os_error_line(OSError(errno.EIO, "Input/output error")) == "Input/output error (DEEPSTRATA_DEBUG=1 shows where)"


def test_more_devices_than_cores_warns_in_one_line(capsys):
    warn_if_oversubscribed(100_000, "cpu")
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("deepstrata: warning: --devices 100000 is more than the ")
    warn_if_oversubscribed(1, "cpu")
    assert capsys.readouterr().err == ""


def test_a_config_path_that_is_a_directory_or_binary_is_named(tmp_path):
    with pytest.raises(ConfigError, match="a directory, expected a YAML config file"):
        load_config(tmp_path)
    (tmp_path / "b.yaml").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match=r"b.yaml: not UTF-8 text"):
        load_config(tmp_path / "b.yaml")


def test_an_interaction_log_with_a_cell_over_the_csv_field_limit_is_read(tmp_path):
    from deepstrata.data.interactions import read_raw_log

    note = "x" * 200_000  # csv's default limit is 131,072 characters
    path = tmp_path / "log.csv"
    path.write_text("user_id,item_id,note\n" + "".join(f"{u},{i},{note}\n" for u in range(3) for i in range(3)))
    log = read_raw_log(path)
    assert len(log.users) == 9


def test_a_keyword_named_error_of_a_verb_is_named_by_its_flag(tmp_path, capsys):
    code, lines = run_main(["shard", "--data", "digits", "--out", str(tmp_path / "s"), "--shard-size", "10", "--quiet"],
                           capsys)
    assert code == 2 and lines == ["deepstrata: error: --shard-size: 10 bytes is smaller than one 1x8x8 image "
                                   "(72 bytes with its label)"]
