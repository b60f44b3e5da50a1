import io
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from deepstrata.data.safe_pickle import restricted_load
from deepstrata.errors import DataError


class _RunsShell:
    """A pickle payload that would touch a marker file if it were ever executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Evals:
    def __reduce__(self):
        return (eval, ("1 + 1",))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_loads_numpy_arrays_and_plain_values(protocol):
    batch = {b"data": np.arange(12, dtype=np.uint8).reshape(2, 6), b"labels": [3, 7],
             b"batch_label": b"training batch 1 of 5", "text": "ok", b"n": np.int64(5)}
    loaded = restricted_load(io.BytesIO(pickle.dumps(batch, protocol=protocol)))
    assert loaded[b"labels"] == [3, 7]
    assert loaded[b"batch_label"] == b"training batch 1 of 5"
    assert loaded["text"] == "ok"
    assert loaded[b"n"] == 5
    np.testing.assert_array_equal(loaded[b"data"], batch[b"data"])


def test_python2_strings_stay_bytes():
    # What Python 2 cPickle writes at protocol 2 for {'data': 'abc'}: SHORT_BINSTRING opcodes.
    py2 = b"\x80\x02}q\x00U\x04dataq\x01U\x03abcq\x02s."
    assert restricted_load(io.BytesIO(py2)) == {b"data": b"abc"}


def test_malicious_pickle_is_refused_and_does_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": _RunsShell(marker)}, protocol=2))
    with open(path, "rb") as f, pytest.raises(DataError) as err:
        restricted_load(f)
    message = str(err.value)
    assert str(path) in message
    assert "refused to unpickle" in message and "system" in message
    assert "may not run code" in message
    assert "\n" not in message
    assert not marker.exists()


@pytest.mark.parametrize("payload", [_Evals(), io.BytesIO, np.load])
def test_other_globals_are_refused(payload):
    with pytest.raises(DataError, match="refused to unpickle"):
        restricted_load(io.BytesIO(pickle.dumps(payload, protocol=2)), name="evil.pkl")


def test_codecs_encode_only_for_latin1():
    # _codecs.encode is allowed because Python 3 writes bytes through it at protocol 2;
    # any other codec is refused.
    evil = b"\x80\x02c_codecs\nencode\nq\x00X\x01\x00\x00\x00xX\x08\x00\x00\x00rot13q\x01\x86R."
    with pytest.raises(DataError, match="evil.pkl"):
        restricted_load(io.BytesIO(evil), name="evil.pkl")


def test_object_arrays_are_refused():
    data = pickle.dumps({b"data": np.array([1, "a"], dtype=object)}, protocol=2)
    with pytest.raises(DataError, match="object array"):
        restricted_load(io.BytesIO(data), name="batch")


@pytest.mark.parametrize("junk", [b"", b"not a pickle at all", pickle.dumps([1, 2])[:-3]])
def test_garbage_names_the_file(tmp_path, junk):
    path = tmp_path / "junk.bin"
    path.write_bytes(junk)
    with open(path, "rb") as f, pytest.raises(DataError) as err:
        restricted_load(f)
    assert str(path) in str(err.value)
    assert "\n" not in str(err.value)
