"""Checkpoints: safetensors + JSON round trips, one atomic unit per checkpoint, damaged ones skipped."""

import json
import os
import stat

import pytest
import torch
from safetensors.torch import load_file, save_file

from deepstrata.engine import checkpoint as ckpt
from deepstrata.errors import RunError
from deepstrata.models.mlp import MLP


def model_and_optimizer(seed=0):
    torch.manual_seed(seed)
    model = MLP((1, 4, 4), 3, width=4)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss = model(torch.rand(8, 1, 4, 4)).sum()
    loss.backward()
    opt.step()
    return model, opt


def zeroed():
    other, other_opt = model_and_optimizer(1)
    for p in other.parameters():
        p.data.zero_()
    return other, other_opt


def test_round_trip_restores_weights_optimizer_and_rng(tmp_path):
    model, opt = model_and_optimizer()
    torch.manual_seed(42)
    ckpt.save_checkpoint(tmp_path, model, opt, {"step": 7, "epoch": 1})
    expected_draw = torch.rand(3)
    other, other_opt = zeroed()
    state, source, skipped = ckpt.load_checkpoint(tmp_path, other, other_opt)
    assert state["step"] == 7 and state["epoch"] == 1 and "optimizer" not in state
    assert source == tmp_path / "step-000000007" and skipped == []
    for a, b in zip(model.state_dict().values(), other.state_dict().values()):
        assert torch.equal(a, b)
    sa, sb = opt.state_dict(), other_opt.state_dict()
    for index in sa["state"]:
        for key, value in sa["state"][index].items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(sb["state"][index][key]))
    assert sa["param_groups"][0]["lr"] == sb["param_groups"][0]["lr"]
    assert torch.equal(torch.rand(3), expected_draw)


def test_layout_is_one_directory_per_checkpoint_and_a_pointer(tmp_path):
    model, opt = model_and_optimizer()
    for step in (1, 2, 3):
        ckpt.save_checkpoint(tmp_path, model, opt, {"step": step}, improved=step == 2)
    # The newest and the one before it are kept; nothing temporary is left.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.safetensors", "latest", "step-000000002",
                                                         "step-000000003"]
    assert (tmp_path / "latest").read_text() == "step-000000003\n"
    assert sorted(p.name for p in (tmp_path / "step-000000003").iterdir()) == [
        "best.safetensors", "state.json", "train.safetensors", "weights.safetensors"]
    assert ckpt.has_checkpoint(tmp_path) and not ckpt.has_checkpoint(tmp_path / "nothing")


def test_best_is_the_best_of_the_checkpoint_latest_names(tmp_path):
    model, opt = model_and_optimizer()
    ckpt.save_checkpoint(tmp_path, model, opt, {"step": 1}, improved=True)
    first = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ckpt.save_checkpoint(tmp_path, model, opt, {"step": 2}, improved=False)
    best = load_file(str(tmp_path / "best.safetensors"))
    assert all(torch.equal(best[k], first[k]) for k in first)
    ckpt.save_checkpoint(tmp_path, model, opt, {"step": 3}, improved=True)
    best = load_file(str(tmp_path / "best.safetensors"))
    assert all(torch.equal(best[k], v) for k, v in model.state_dict().items())
    # Resuming from step 2 (as if step 3 had never been switched to) puts its best back.
    ckpt.publish_best(tmp_path, tmp_path / "step-000000002")
    best = load_file(str(tmp_path / "best.safetensors"))
    assert all(torch.equal(best[k], first[k]) for k in first)


def test_a_torn_newest_checkpoint_falls_back_to_the_one_before(tmp_path):
    model, opt = model_and_optimizer()
    ckpt.save_checkpoint(tmp_path, model, opt, {"step": 1})
    ckpt.save_checkpoint(tmp_path, model, opt, {"step": 2})
    newest = tmp_path / "step-000000002"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(newest / "weights.safetensors"),
              metadata={"step": "9"})
    state, source, skipped = ckpt.load_checkpoint(tmp_path, *zeroed())
    assert state["step"] == 1 and source.name == "step-000000001"
    assert len(skipped) == 1 and "different steps" in skipped[0]


def test_random_bytes_and_a_broken_pointer_are_named(tmp_path):
    model, opt = model_and_optimizer()
    ckpt.save_checkpoint(tmp_path, model, opt, {"step": 1})
    ckpt.save_checkpoint(tmp_path, model, opt, {"step": 2})
    (tmp_path / "latest").write_text("../../etc\n")
    state, source, skipped = ckpt.load_checkpoint(tmp_path, *zeroed())
    assert state["step"] == 2 and "latest" in skipped[0]
    for name in ("step-000000001", "step-000000002"):
        (tmp_path / name / "train.safetensors").write_bytes(os.urandom(256))
    with pytest.raises(RunError, match="no complete checkpoint.*train.safetensors: not a readable"):
        ckpt.load_checkpoint(tmp_path, *zeroed())


def test_garbage_files_are_clear_errors(tmp_path):
    model, opt = model_and_optimizer()
    (tmp_path / "w.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(RunError, match="w.safetensors"):
        ckpt.load_weights(tmp_path / "w.safetensors", model)
    step = tmp_path / "ck" / "step-000000001"
    step.mkdir(parents=True)
    (step / "state.json").write_text("{not json")
    with pytest.raises(RunError, match="state.json: not a valid checkpoint description"):
        ckpt.load_checkpoint(tmp_path / "ck", model, opt)
    with pytest.raises(RunError, match="no checkpoint to resume from"):
        ckpt.load_checkpoint(tmp_path / "empty", model, opt)


def test_checkpoints_of_earlier_versions_still_resume(tmp_path):
    model, opt = model_and_optimizer()
    tensors, optimizer_meta = ckpt._optimizer_tensors(opt)
    tensors["rng.torch"] = torch.get_rng_state()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "last.safetensors"),
              metadata={"step": "5"})
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp_path / "last.train.safetensors"),
              metadata={"step": "5"})
    (tmp_path / "last.json").write_text(json.dumps({"step": 5, "epoch": 1, "optimizer": optimizer_meta}))
    other, other_opt = zeroed()
    state, source, _ = ckpt.load_checkpoint(tmp_path, other, other_opt)
    assert state["step"] == 5 and source == tmp_path
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))
    ckpt.save_checkpoint(tmp_path, other, other_opt, {"step": 6})  # the new layout replaces the old files
    assert not (tmp_path / "last.json").exists() and ckpt.pointed(tmp_path).name == "step-000000006"


def test_weights_of_another_model_are_a_clear_error(tmp_path):
    model, _ = model_and_optimizer()
    ckpt.save_weights(tmp_path / "w.safetensors", model)
    with pytest.raises(RunError, match="do not fit"):
        ckpt.load_weights(tmp_path / "w.safetensors", MLP((1, 5, 5), 3, width=4))


def test_atomic_json(tmp_path):
    ckpt.atomic_write_json(tmp_path / "a" / "x.json", {"a": 1})
    assert json.loads((tmp_path / "a" / "x.json").read_text()) == {"a": 1}


def test_written_files_follow_the_umask(tmp_path):
    model, opt = model_and_optimizer()
    previous = os.umask(0o027)
    try:
        ckpt.atomic_write_json(tmp_path / "x.json", {"a": 1})
        ckpt.save_checkpoint(tmp_path / "ck", model, opt, {"step": 1}, improved=True)
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "x.json").stat().st_mode) == 0o640
    step = tmp_path / "ck" / "step-000000001"
    assert stat.S_IMODE(step.stat().st_mode) == 0o750
    for path in (step / "weights.safetensors", step / "state.json", tmp_path / "ck" / "best.safetensors"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o640, path


def test_each_rank_gets_its_own_random_state_back(tmp_path):
    model, opt = model_and_optimizer()
    torch.manual_seed(2)
    rank1 = ckpt.rng_state()
    torch.manual_seed(99)  # rank 0's state is the process's own at save time
    ckpt.save_checkpoint(tmp_path, model, opt, {"step": 3}, rng_states=[ckpt.rng_state(), rank1])
    draws = {}
    for rank in (0, 1, 2):  # rank 2 was not in the run: it starts from rank 0's state
        torch.manual_seed(7)
        ckpt.load_checkpoint(tmp_path, model, opt, rank=rank)
        draws[rank] = torch.rand(4)
    assert torch.equal(draws[0], torch.rand(4, generator=torch.Generator().manual_seed(99)))
    assert torch.equal(draws[1], torch.rand(4, generator=torch.Generator().manual_seed(2)))
    assert torch.equal(draws[2], draws[0])


def test_a_failed_write_names_the_file_asked_for_and_leaves_no_temporary(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OSError) as info:
        ckpt.atomic_write_json(tmp_path / "afile" / "run" / "x.json", {"a": 1})
    assert info.value.filename == str(tmp_path / "afile" / "run" / "x.json")
    target = tmp_path / "dir.json"
    target.mkdir()  # a directory where the file should go: the rename fails
    with pytest.raises(OSError) as info:
        ckpt.atomic_write_json(target, {"a": 1})
    assert info.value.filename == str(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "dir.json"]
