"""A run file cut short, overwritten with random bytes, or of the wrong type: one line naming it, exit 2.

Every case damages one file of a real finished run (a digits CNN, an AG News Transformer, a
MovieLens MF) and runs a CLI verb that reads it. The line must name the file, say the run is
damaged, and never pass on a library's advice (numpy's "load it unsafely").
"""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deepstrata import runfiles
from deepstrata.cli import main
from deepstrata.errors import RunError
from tests.tiny_runs import copy_run


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def random_bytes(path):
    path.write_bytes(np.random.default_rng(7).bytes(max(64, min(path.stat().st_size, 4096))))


def empty(path):
    path.write_bytes(b"")


def text(content: str):
    def write(path):
        path.write_text(content, encoding="utf-8")

    write.__name__ = "wrong type"
    return write


def npz(**arrays):
    def write(path):
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        path.write_bytes(buffer.getvalue())

    write.__name__ = "wrong arrays"
    return write


def edit_json(change):
    def write(path):
        value = json.loads(path.read_text(encoding="utf-8"))
        change(value)
        path.write_text(json.dumps(value), encoding="utf-8")

    write.__name__ = "wrong field"
    return write


IMAGE = "{tmp}/digit.png"
CASES = [
    ("image", "model.json", random_bytes, ["compare", "{run}"]),
    ("image", "model.json", edit_json(lambda v: v["spec"].pop("in_shape")), ["predict", "{run}", IMAGE]),
    ("image", "config.yaml", random_bytes, ["evaluate", "{run}"]),
    ("image", "config.yaml", text("- 1\n- 2\n"), ["features", "{run}", "--layer", "stage2", "--out", "{tmp}/f.npy"]),
    ("image", "checkpoints/best.safetensors", random_bytes, ["evaluate", "{run}"]),
    ("image", "checkpoints/best.safetensors", truncate, ["predict", "{run}", IMAGE]),
    ("image", "comparison.json", truncate, ["compare", "{run}"]),
    ("text", "tokenizer.json", truncate, ["predict", "{run}", "stocks fell"]),
    ("text", "tokenizer.json", random_bytes, ["embed", "{run}", "--data", "{tmp}/t.txt", "--out", "{tmp}/e.npy"]),
    ("text", "model.json", truncate, ["evaluate", "{run}"]),
    ("text", "checkpoints/best.safetensors", random_bytes,
     ["features", "{run}", "--layer", "embed", "--data", "{tmp}/t.txt", "--out", "{tmp}/f.npy"]),
    ("text", "config.yaml", empty, ["evaluate", "{run}"]),
    ("text", "comparison.json", text('{"rows": 5}'), ["compare", "{run}"]),
    ("recommend", "interactions.npz", random_bytes, ["recommend", "{run}", "--user", "1"]),
    ("recommend", "interactions.npz", truncate, ["similar", "{run}", "--item", "50"]),
    ("recommend", "interactions.npz", npz(users=np.array(["1"], dtype=object), items=np.zeros(1), times=np.zeros(1)),
     ["evaluate", "{run}"]),
    ("recommend", "interactions.npz", npz(users=np.array([999]), items=np.array([0]), times=np.array([0.0])),
     ["features", "{run}", "--layer", "user_embedding", "--out", "{tmp}/f.npy"]),
    ("recommend", "vocab.json", truncate, ["recommend", "{run}", "--user", "1"]),
    ("recommend", "vocab.json", edit_json(lambda v: v.update(user_ids=list(range(len(v["user_ids"]))))),
     ["similar", "{run}", "--item", "50"]),
    ("recommend", "checkpoints/best.safetensors", random_bytes, ["similar", "{run}", "--item", "50"]),
    ("recommend", "metrics.jsonl", random_bytes, ["inspect", "{run}", "--samples", "20", "--no-tsne"]),
    ("recommend", "comparison.json", empty, ["compare", "{run}"]),
    ("recommend", "model.json", edit_json(lambda v: v.update(task="banana")), ["recommend", "{run}", "--user", "1"]),
]


def _id(case) -> str:
    kind, name, damage, argv = case
    return f"{kind}-{name.split('/')[-1]}-{damage.__name__}-{argv[0]}"


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_a_damaged_file_is_named_in_one_line(case, tmp_path_factory, tmp_path, capsys):
    from PIL import Image

    kind, name, damage, argv = case
    run = copy_run(kind, tmp_path_factory, tmp_path / "run")
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(tmp_path / "digit.png")
    (tmp_path / "t.txt").write_text("Stocks fell\nThe team won\n", encoding="utf-8")
    damage(run / name)
    capsys.readouterr()
    code = main([a.format(run=run, tmp=tmp_path) for a in argv])
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith(f"deepstrata: error: {run / name}: damaged run file ("), lines[0]
    assert lines[0].endswith("rerun fit or restore the file"), lines[0]
    assert "unsafely" not in err and "allow_pickle" not in err and out == ""


def test_a_missing_checkpoint_is_not_called_damaged(tmp_path_factory, tmp_path, capsys):
    run = copy_run("image", tmp_path_factory, tmp_path / "run")
    (run / "checkpoints" / "best.safetensors").unlink()
    assert main(["evaluate", str(run)]) == 2
    assert "no trained weights (checkpoints/best.safetensors not found)" in capsys.readouterr().err


# ---------------------------------------------------------------- the readers, on any bytes


def _valid_npz() -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, users=np.arange(50), items=np.arange(50) % 7, times=np.linspace(0, 1, 50))
    return buffer.getvalue()


VALID = {"a.json": json.dumps({"rows": [{"name": "x", "metrics": {"accuracy": 0.5}}]}).encode(),
         "a.jsonl": b'{"epoch": 1, "loss": 0.5}\n{"epoch": 2, "loss": 0.25}\n', "a.npz": _valid_npz()}


def _read(path):
    if path.suffix == ".json":
        return runfiles.read_json(path)
    if path.suffix == ".jsonl":
        return runfiles.read_jsonl(path)
    return runfiles.read_npz(path, ("users", "items", "times"))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(sorted(VALID)), cut=st.floats(0, 1), noise=st.binary(max_size=64),
       flip=st.integers(0, 10_000))
def test_readers_answer_or_name_the_file(tmp_path, name, cut, noise, flip):
    """Any prefix of a valid file, with bytes flipped or appended, is read or is one ``RunError`` naming it."""
    data = bytearray(VALID[name][: int(len(VALID[name]) * cut)] + noise)
    if data:
        data[flip % len(data)] ^= 0xFF
    path = tmp_path / name
    path.write_bytes(bytes(data))
    try:
        value = _read(path)
    except RunError as err:
        assert str(err).startswith(f"{path}: {runfiles.MARK} (") and "\n" not in str(err)
        assert "unsafely" not in str(err)
    else:
        assert isinstance(value, (dict, list))


def test_npz_with_an_object_array_is_refused_without_unpickling(tmp_path):
    path = tmp_path / "interactions.npz"
    with zipfile.ZipFile(path, "w") as archive:
        buffer = io.BytesIO()
        np.save(buffer, np.array([{"x": 1}], dtype=object), allow_pickle=True)
        archive.writestr("users.npy", buffer.getvalue())
    with pytest.raises(RunError, match=r"interactions.npz: damaged run file \(.*pickled data is never loaded"):
        runfiles.read_npz(path, ("users",))
