"""Checkpoints: safetensors + JSON round trips, atomic writes, torn checkpoints detected."""

import json

import pytest
import torch
from safetensors.torch import save_file

from deepstrata.engine import checkpoint as ckpt
from deepstrata.errors import RunError
from deepstrata.models.mlp import MLP


def model_and_optimizer():
    torch.manual_seed(0)
    model = MLP((1, 4, 4), 3, width=4)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss = model(torch.rand(8, 1, 4, 4)).sum()
    loss.backward()
    opt.step()
    return model, opt


def test_round_trip_restores_weights_optimizer_and_rng(tmp_path):
    model, opt = model_and_optimizer()
    torch.manual_seed(42)
    ckpt.save_checkpoint(tmp_path, "last", model, opt, {"step": 7, "epoch": 1})
    expected_draw = torch.rand(3)
    other, other_opt = model_and_optimizer()
    for p in other.parameters():
        p.data.zero_()
    state = ckpt.load_checkpoint(tmp_path, "last", other, other_opt)
    assert state["step"] == 7 and state["epoch"] == 1
    for a, b in zip(model.state_dict().values(), other.state_dict().values()):
        assert torch.equal(a, b)
    sa, sb = opt.state_dict(), other_opt.state_dict()
    for index in sa["state"]:
        for key, value in sa["state"][index].items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(sb["state"][index][key]))
    assert sa["param_groups"][0]["lr"] == sb["param_groups"][0]["lr"]
    assert torch.equal(torch.rand(3), expected_draw)


def test_no_temporary_files_left(tmp_path):
    model, opt = model_and_optimizer()
    ckpt.save_checkpoint(tmp_path, "last", model, opt, {"step": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.json", "last.safetensors", "last.train.safetensors"]


def test_torn_checkpoint_is_detected(tmp_path):
    model, opt = model_and_optimizer()
    ckpt.save_checkpoint(tmp_path, "last", model, opt, {"step": 1})
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "last.safetensors"),
              metadata={"step": "2"})
    with pytest.raises(RunError, match="different steps"):
        ckpt.load_checkpoint(tmp_path, "last", model, opt)


def test_garbage_files_are_clear_errors(tmp_path):
    model, opt = model_and_optimizer()
    (tmp_path / "w.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(RunError, match="w.safetensors"):
        ckpt.load_weights(tmp_path / "w.safetensors", model)
    (tmp_path / "last.json").write_text("{not json")
    with pytest.raises(RunError, match="last.json"):
        ckpt.load_checkpoint(tmp_path, "last", model, opt)


def test_weights_of_another_model_are_a_clear_error(tmp_path):
    model, _ = model_and_optimizer()
    ckpt.save_weights(tmp_path / "w.safetensors", model)
    with pytest.raises(RunError, match="do not fit"):
        ckpt.load_weights(tmp_path / "w.safetensors", MLP((1, 5, 5), 3, width=4))


def test_atomic_json(tmp_path):
    ckpt.atomic_write_json(tmp_path / "a" / "x.json", {"a": 1})
    assert json.loads((tmp_path / "a" / "x.json").read_text()) == {"a": 1}


def test_each_rank_gets_its_own_random_state_back(tmp_path):
    model, opt = model_and_optimizer()
    torch.manual_seed(2)
    rank1 = ckpt.rng_state()
    torch.manual_seed(99)  # rank 0's state is the process's own at save time
    ckpt.save_checkpoint(tmp_path, "last", model, opt, {"step": 3}, rng_states=[ckpt.rng_state(), rank1])
    draws = {}
    for rank in (0, 1, 2):  # rank 2 was not in the run: it starts from rank 0's state
        torch.manual_seed(7)
        ckpt.load_checkpoint(tmp_path, "last", model, opt, rank=rank)
        draws[rank] = torch.rand(4)
    assert torch.equal(draws[0], torch.rand(4, generator=torch.Generator().manual_seed(99)))
    assert torch.equal(draws[1], torch.rand(4, generator=torch.Generator().manual_seed(2)))
    assert torch.equal(draws[2], draws[0])
