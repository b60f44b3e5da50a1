"""``embed`` and ``search`` on an image run: a folder of PNGs, the digits set, layers, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import deepstrata as ds
from deepstrata.cli import main
from deepstrata.embeddings import load_embeddings
from deepstrata.errors import ConfigError
from tests.tiny_runs import tiny_run

pytest.importorskip("pyarrow")


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    return tiny_run("image", tmp_path_factory)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Nine digits as PNGs: train/<class>/ and test/<class>/ sub-folders, and one loose file."""
    from deepstrata.data.images import read_digits

    root = tmp_path_factory.mktemp("pngs") / "digits"
    digits = read_digits()
    for i in range(8):
        part = "train" if i < 6 else "test"
        path = root / part / f"d{int(digits.y[i])}" / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(digits.x[i, 0].numpy()).save(path)
    Image.fromarray(digits.x[8, 0].numpy()).save(root / "loose.png")
    return root


def test_a_folder_gives_relative_paths_and_classes_and_each_image_finds_itself(image_run, folder, tmp_path, capsys):
    out = tmp_path / "emb.parquet"
    code, printed, err = run_cli(capsys, "embed", image_run, "--data", folder, "--out", out)
    assert code == 0, err
    assert f"{out}: 9 x " in printed and "vectors of layer features" in printed
    emb = load_embeddings(out)
    assert emb.ids[0] == "loose.png" and "train/d0/0.png" in emb.ids and "test/d6/6.png" in emb.ids
    assert dict(zip(emb.ids, emb.labels))["train/d3/3.png"] == "d3" and emb.labels[0] is None
    run = ds.load(image_run)
    assert emb.dim == run.model.feature_dim
    for rel in emb.ids:
        result = run.search(emb, str(folder / rel), k=3)
        assert result["results"][0]["id"] == rel
        assert result["results"][0]["score"] == pytest.approx(1.0, abs=1e-5)


def test_named_set_ids_and_the_npy_form_round_trip(image_run, tmp_path, capsys):
    code, printed, err = run_cli(capsys, "embed", image_run, "--out", tmp_path / "e.npy")  # the run's own digits
    assert code == 0 and "ids and labels in" in printed, err
    npy = load_embeddings(tmp_path / "e.npy")
    assert len(npy) == 1797 and npy.ids[:3] == ["0", "1", "2"] and npy.labels[:3] == ["0", "1", "2"]
    npy.save(tmp_path / "e.parquet")
    back = load_embeddings(tmp_path / "e.parquet")
    assert back.ids == npy.ids and back.labels == npy.labels and back.meta == npy.meta
    np.testing.assert_array_equal(back.vectors, npy.vectors)
    assert npy.meta.run == str(image_run.resolve()) and npy.meta.layer == "features" and npy.meta.dim == npy.dim


def test_layer_picks_another_layer_and_an_unknown_one_is_refused_with_the_names(image_run, folder, tmp_path, capsys):
    run = ds.load(image_run)
    stage1 = run.embed(str(folder), layer="stage1")
    channels = run.model.forward_intermediates(torch.zeros(1, 1, 8, 8), ["stage1"])["stage1"].shape[1]
    assert stage1.layer == "stage1" and stage1.dim == channels
    from deepstrata.data.images import load_image_files

    images = load_image_files([folder / rel for rel in stage1.ids], 1, (8, 8))
    np.testing.assert_allclose(stage1.vectors, run.features(images, layer="stage1"), atol=1e-5)  # as features pools
    assert run.embed(str(folder)).dim == run.model.feature_dim != channels
    with pytest.raises(ConfigError, match="this model has: stem, stage1, stage2, head, or features"):
        run.embed("digits", layer="stage9")
    code, _, err = run_cli(capsys, "embed", image_run, "--layer", "stage9", "--out", tmp_path / "x.npy")
    assert code == 2 and "unknown layer 'stage9'; this model has: stem, stage1, stage2, head" in one_line(err)
    assert not (tmp_path / "x.npy").exists()


def test_search_json_shape_and_text_lines(image_run, folder, tmp_path, capsys):
    index = tmp_path / "emb.parquet"
    assert main(["embed", str(image_run), "--data", str(folder), "--out", str(index)]) == 0
    query = folder / "train" / "d1" / "1.png"
    code, printed, err = run_cli(capsys, "search", image_run, "--index", index, "--query", query, "-k", "4", "--json")
    assert code == 0, err
    result = json.loads(printed)
    assert list(result) == ["query", "results"] and result["query"] == str(query) and len(result["results"]) == 4
    assert all(list(r) == ["id", "label", "score"] for r in result["results"])
    scores = [r["score"] for r in result["results"]]
    assert scores == sorted(scores, reverse=True)
    code, printed, err = run_cli(capsys, "search", image_run, "--index", index, "--query", query, "-k", "2")
    lines = printed.strip().splitlines()
    assert code == 0 and len(lines) == 2 and lines[0].split() == ["1", "1.0000", "train/d1/1.png", "d1"]


def test_an_index_of_another_run_or_layer_is_refused_in_one_line(image_run, tmp_path_factory, folder, tmp_path,
                                                                 capsys):
    text_run = tiny_run("text", tmp_path_factory)
    texts = tmp_path / "t.txt"
    texts.write_text("Stocks fell\nThe team won\n", encoding="utf-8")
    assert main(["embed", str(text_run), "--data", str(texts), "--out", str(tmp_path / "text.parquet")]) == 0
    code, _, err = run_cli(capsys, "search", image_run, "--index", tmp_path / "text.parquet", "--query",
                           folder / "loose.png")
    line = one_line(err)
    assert code == 2 and f"embedded by the run {text_run.resolve()}, not by {image_run}" in line
    assert main(["embed", str(image_run), "--data", str(folder), "--layer", "stage1", "--out",
                 str(tmp_path / "s1.npy")]) == 0
    code, _, err = run_cli(capsys, "search", image_run, "--index", tmp_path / "s1.npy", "--query",
                           folder / "loose.png", "--layer", "stage2")
    assert code == 2 and "holds layer 'stage1'" in one_line(err)


def test_an_index_of_other_weights_of_the_same_run_is_refused(image_run, folder, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    from deepstrata.errors import RunError

    copy = shutil.copytree(image_run, tmp_path / "run")
    emb = ds.load(copy).embed(str(folder))
    weights = copy / "checkpoints" / "best.safetensors"
    tensors = load_file(weights)
    name = next(k for k, v in tensors.items() if v.is_floating_point())
    tensors[name] = tensors[name] + 1.0  # the run was updated in place: its vectors changed
    save_file(tensors, weights)
    with pytest.raises(RunError, match="embedded by other weights of this run"):
        ds.load(copy).search(emb, str(folder / "loose.png"))


@pytest.mark.parametrize("argv, says", [
    (["search", "{run}", "--index", "{tmp}/missing.parquet", "--query", "x.png"], "missing.parquet: no such file"),
    (["search", "{run}", "--index", "{tmp}/e.npy", "--query", "{tmp}/nope.png"],
     "--query {tmp}/nope.png: no such image file"),
    (["embed", "{run}", "--out", "{tmp}/e.csv"], "expected a .parquet or .npy file name"),
    (["embed", "{run}", "--rows", "users", "--out", "{tmp}/u.npy"], "--rows: "),
    (["embed", "{run}", "--text-column", "text", "--out", "{tmp}/u.npy"], "only text runs read a text column"),
    (["embed", "{run}", "--data", "{tmp}/t.csv", "--out", "{tmp}/u.npy"], "embed --data expects images"),
    (["embed", "{run}", "--per-token", "--out", "{tmp}/u.npz"], "embed --per-token expects a text run"),
])
def test_bad_input_exits_2_with_one_line(argv, says, image_run, folder, tmp_path, capsys):
    (tmp_path / "t.csv").write_text("text,label\na,b\n", encoding="utf-8")
    if "e.npy" in " ".join(argv):
        assert main(["embed", str(image_run), "--data", str(folder), "--out", str(tmp_path / "e.npy")]) == 0
    code, printed, err = run_cli(capsys, *[a.format(run=image_run, tmp=tmp_path) for a in argv])
    assert code == 2 and printed == "" and says.format(tmp=tmp_path) in one_line(err), err
