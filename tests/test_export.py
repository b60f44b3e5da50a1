"""``deepstrata export``: ONNX and pt2 round trips on tiny real runs, the contract, and every refusal.

Exports cost seconds each (the dynamo exporter traces the model), so each is made once per
module in a fixture and the checks share it; the refusals all happen before any export.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from deepstrata.cli import main
from deepstrata.errors import ConfigError, RunError
from deepstrata.run import load
from tests.tiny_runs import copy_run, news_csv, tiny_run

ort = pytest.importorskip("onnxruntime")
TOLERANCE = 1e-4


def digit_files(folder: Path, count: int) -> list[Path]:
    """``count`` real digits images (the last ones of scikit-learn's set) as 8x8 grey PNGs."""
    from PIL import Image

    from deepstrata.data.images import load_images

    folder.mkdir(parents=True, exist_ok=True)
    x = load_images("digits").x[-count:]
    paths = []
    for i, image in enumerate(x):
        path = folder / f"digit{i}.png"
        Image.fromarray(image[0].numpy()).save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def image_onnx(tmp_path_factory):
    """A copy of the tiny digits run, exported to ONNX in its default place (RUN/export/model.onnx)."""
    run = load(copy_run("image", tmp_path_factory, tmp_path_factory.mktemp("export") / "run"))
    return run, run.export("onnx")


def test_onnx_image_round_trip_equals_predict_on_real_digits(image_onnx, tmp_path):
    from deepstrata.data.images import load_image_files

    run, exported = image_onnx
    assert exported.targets.model == run.path / "export" / "model.onnx"
    assert exported.verified.difference <= TOLERANCE and exported.verified.batch_sizes == (8, 3)
    paths = digit_files(tmp_path / "digits", 11)
    predicted = run.predict(paths)
    session = ort.InferenceSession(str(exported.targets.model), providers=["CPUExecutionProvider"])
    pixels = load_image_files(paths, 1, (8, 8)).float().numpy() / 255.0
    for rows in (slice(0, 8), slice(8, 11)):  # two batch sizes through the dynamic dimension
        probabilities = session.run(None, {"images": pixels[rows]})[0]
        for p, row in zip(predicted[rows], probabilities):
            assert run.classes[int(row.argmax())] == p.label
            assert abs(float(row.max()) - p.probability) <= TOLERANCE
        assert np.allclose(probabilities.sum(1), 1.0, atol=1e-5)


def test_contract_says_what_the_model_takes(image_onnx):
    run, exported = image_onnx
    contract = json.loads(exported.targets.contract.read_text())
    assert exported.targets.contract.name == "model.onnx.contract.json"
    assert contract["written_by"] == "deepstrata export" and contract["format"] == "onnx"
    assert contract["inputs"] == [{"name": "images", "dtype": "float32", "shape": ["batch", 1, 8, 8],
                                   "description": contract["inputs"][0]["description"]}]
    assert contract["outputs"][0]["name"] == "probabilities" and contract["outputs"][0]["shape"] == ["batch", 10]
    assert contract["dynamic_dims"] == {"batch": {"min": 1, "max": None}}
    assert contract["classes"] == run.classes
    assert contract["normalisation"]["mean"] == pytest.approx(run.model.mean.flatten().tolist())
    assert contract["normalisation"]["std"] == pytest.approx(run.model.std.flatten().tolist())
    assert contract["image"]["preprocess"] is None  # digits: a fixed-size format, files squashed to 8x8
    assert contract["image"]["scale"].startswith("uint8 pixel values divided by 255")
    import hashlib

    digest = hashlib.sha256(exported.targets.model.read_bytes()).hexdigest()
    assert contract["files"] == {"model": {"name": "model.onnx", "sha256": digest}}
    assert contract["verified"]["max_abs_difference"] <= contract["verified"]["tolerance"] == TOLERANCE


def test_an_earlier_export_is_replaced_but_not_a_file_deepstrata_did_not_write(image_onnx, tmp_path):
    from deepstrata.export import files

    run, exported = image_onnx
    own = exported.targets
    files.check_writable(own.paths(), own.contract, overwrite=False, run_path=run.path, data=[])  # ours: fine
    foreign = tmp_path / "model.onnx"
    foreign.write_bytes(b"someone else's model")
    with pytest.raises(RunError, match="not written by deepstrata export; use --overwrite"):
        run.export("onnx", foreign)
    assert foreign.read_bytes() == b"someone else's model"
    (tmp_path / "mine.onnx.contract.json").write_text('{"notes": "mine"}')  # a contract name, not ours
    with pytest.raises(RunError, match="mine.onnx.contract.json: exists and was not written"):
        run.export("onnx", tmp_path / "mine.onnx")
    assert not (tmp_path / "mine.onnx").exists()


def test_cli_refuses_a_foreign_file_in_one_line(image_onnx, tmp_path, capsys):
    run, _ = image_onnx
    foreign = tmp_path / "model.pt2"
    foreign.write_text("notes")
    assert main(["export", str(run.path), "--format", "pt2", "--out", str(foreign)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not written by deepstrata export" in err[0] and "--overwrite" in err[0]
    assert foreign.read_text() == "notes"


def test_pt2_round_trip_through_the_cli(image_onnx, tmp_path, capsys):
    run, _ = image_onnx
    out = tmp_path / "digits.pt2"
    assert main(["export", str(run.path), "--format", "pt2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"{out}: pt2" in printed and "verified with torch.export.load on batches of 8 and 3" in printed
    assert "largest absolute difference" in printed
    program = torch.export.load(str(out)).module()
    images = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = torch.softmax(run.model(images), dim=1)
        assert (program(images) - expected).abs().max().item() <= TOLERANCE
    assert json.loads((tmp_path / "digits.pt2.contract.json").read_text())["format"] == "pt2"


def test_a_difference_beyond_the_tolerance_fails_and_writes_nothing(image_onnx, tmp_path, monkeypatch):
    from deepstrata.export import verify

    run, _ = image_onnx
    monkeypatch.setattr(verify, "largest_difference", lambda reference, got: 0.5)
    out = tmp_path / "new" / "model.pt2"
    with pytest.raises(RunError, match=r"differs from PyTorch by 0.5 .*\(tolerance 0.0001\); nothing written"):
        run.export("pt2", out)
    assert not out.parent.exists()


def test_bad_requests_are_refused_before_any_work(image_onnx, tmp_path, capsys, monkeypatch):
    run, _ = image_onnx
    with pytest.raises(ConfigError, match=r"--out .*model.bin: expected a file name ending in .onnx"):
        run.export("onnx", tmp_path / "model.bin")
    with pytest.raises(ConfigError, match="--format: got 'xyz'"):
        run.export("xyz")
    with pytest.raises(SystemExit) as stop:
        main(["export", str(run.path), "--format", "xyz"])
    assert stop.value.code == 2
    assert [line for line in capsys.readouterr().err.splitlines() if "error:" in line] == [
        "deepstrata export: error: --format: invalid choice: 'xyz' (choose from 'onnx', 'pt2')"]
    assert main(["export", str(tmp_path / "nothing"), "--format", "onnx"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"deepstrata: error: {tmp_path / 'nothing'}: run "
                                                             "directory not found"]
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxscript" else real(name, *a))
    with pytest.raises(ConfigError, match=r"--format onnx needs onnxscript: pip install 'deepstrata\[export\]'"):
        run.export("onnx", tmp_path / "m.onnx")


def test_a_failed_write_leaves_no_file_behind(tmp_path, monkeypatch):
    from deepstrata.engine import checkpoint as ckpt
    from deepstrata.export import files

    where = files.targets(tmp_path, ".onnx", "onnx", tmp_path / "m.onnx").with_extras({"tokenizer": ".tok.json"})

    def full_disk(path, obj):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(ckpt, "atomic_write_json", full_disk)
    with pytest.raises(OSError):
        files.write(where, b"model", {"tokenizer": b"{}"}, {"written_by": files.WRITER})
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def text_onnx(tmp_path_factory):
    run = load(tiny_run("text", tmp_path_factory))
    return run, run.export("onnx", tmp_path_factory.mktemp("text-export") / "news.onnx")


def test_text_onnx_round_trip_with_the_tokenizer_beside_it(text_onnx, tmp_path_factory):
    import csv

    from tokenizers import Tokenizer

    run, exported = text_onnx
    tokenizer_file = exported.targets.extras["tokenizer"]
    assert tokenizer_file.name == "news.onnx.tokenizer.json"
    contract = json.loads(exported.targets.contract.read_text())
    assert contract["text"]["max_length"] == 32 and contract["text"]["pad_id"] == 0
    assert [i["name"] for i in contract["inputs"]] == ["input_ids", "attention_mask"]
    assert contract["dynamic_dims"]["length"] == {"min": 1, "max": 32}
    assert contract["files"]["tokenizer"]["name"] == tokenizer_file.name
    with open(news_csv(tmp_path_factory), newline="", encoding="utf-8") as handle:
        texts = [row["text"] for row in csv.DictReader(handle)][:7] + ["", "a short one"]
    tokenizer = Tokenizer.from_file(str(tokenizer_file))  # what a consumer in another runtime does
    session = ort.InferenceSession(str(exported.targets.model), providers=["CPUExecutionProvider"])
    predicted = run.predict(texts)
    for rows in (slice(0, 6), slice(6, 9)):
        encoded = [e.ids for e in tokenizer.encode_batch(texts[rows])]
        length = max(len(ids) for ids in encoded)
        ids = np.array([ids + [0] * (length - len(ids)) for ids in encoded], dtype=np.int64)
        mask = (ids != 0).astype(np.int64)
        probabilities = session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        for p, row in zip(predicted[rows], probabilities):
            assert np.abs(row - np.array([p.probabilities[c] for c in run.classes])).max() <= TOLERANCE


def test_recommendation_onnx_scores_rank_as_recommend_does(tmp_path_factory):
    run = load(tiny_run("recommend", tmp_path_factory))
    exported = run.export("onnx", tmp_path_factory.mktemp("rec-export") / "scorer.onnx")
    contract = json.loads(exported.targets.contract.read_text())
    rec = contract["recommendation"]
    assert contract["inputs"][0]["name"] == "users" and contract["outputs"][0]["shape"][0] == "batch"
    session = ort.InferenceSession(str(exported.targets.model), providers=["CPUExecutionProvider"])
    users = rec["user_ids"][:5]
    scores = session.run(None, {"users": np.arange(5, dtype=np.int64)})[0]
    from deepstrata.families.recommend.serve import served

    state = served(run)
    for row, user in zip(scores, users):
        row = row.copy()
        row[state.histories[state.user_index[user]]] = -np.inf
        top = [rec["item_ids"][i] for i in np.argsort(-row, kind="stable")[:5]]
        assert top == [entry["item"] for entry in run.recommend(user, k=5)["items"]]
    assert rec["popular_items"][0] == run.recommend("no such user", k=1)["items"][0]["item"]


def test_the_clis_format_names_are_the_exporters():
    from deepstrata import cli_export
    from deepstrata.export import formats

    assert cli_export.FORMATS == tuple(formats.FORMATS)
