"""deepstrata's AdamW against torch.optim.AdamW: the same weights bit for bit, state dicts that load across both."""

import copy
import subprocess
import sys

import pytest
import torch
from torch import nn

from deepstrata.engine.adamw import AdamW


def _net(seed: int, channels_last: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
                        nn.Linear(8 * 6 * 6, 5))
    return net.to(memory_format=torch.channels_last) if channels_last else net


def _groups(net: nn.Module) -> list[dict]:
    """Three groups as the engine builds them: decayed kernels, undecayed biases and norms, a scaled rate."""
    kernels = [p for p in net.parameters() if p.dim() >= 2]
    others = [p for p in net.parameters() if p.dim() < 2]
    return [{"params": kernels, "weight_decay": 5e-4, "lr_scale": 1.0},
            {"params": others[:2], "weight_decay": 0.0, "lr_scale": 1.0},
            {"params": others[2:], "weight_decay": 0.0, "lr_scale": 4.0}]


def _train(net: nn.Module, opt, steps: range, seed: int = 1, skip_head_at: int | None = None) -> None:
    """Steps with a changing per-group rate (as the loop sets it) and one step where the head has no gradient.

    Each step's batch depends on its index alone, so a run split in two halves sees the batches of a whole one.
    """
    for step in steps:
        generator = torch.Generator().manual_seed(seed * 1000 + step)
        x = torch.randn(16, 3, 8, 8, generator=generator)
        y = torch.randint(0, 5, (16,), generator=generator)
        for group in opt.param_groups:
            group["lr"] = 3e-3 * (1 - step / 40) * group["lr_scale"]
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(net(x), y).backward()
        if step == skip_head_at:
            for p in net[-1].parameters():
                p.grad = None
        opt.step()


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
def test_matches_torch_adamw_bitwise(foreach, channels_last):
    ours, theirs = _net(0, channels_last), _net(0, channels_last)
    opt_ours = AdamW(_groups(ours), lr=3e-3, betas=(0.9, 0.99), eps=1e-8)
    opt_theirs = torch.optim.AdamW(_groups(theirs), lr=3e-3, betas=(0.9, 0.99), eps=1e-8, foreach=foreach)
    _train(ours, opt_ours, range(12), skip_head_at=3)
    _train(theirs, opt_theirs, range(12), skip_head_at=3)
    for a, b in zip(ours.parameters(), theirs.parameters()):
        assert torch.equal(a, b)
    mine, torch_state = opt_ours.state_dict(), opt_theirs.state_dict()
    assert mine["state"].keys() == torch_state["state"].keys()
    for index, values in torch_state["state"].items():
        assert mine["state"][index].keys() == values.keys()
        for key, value in values.items():
            assert torch.equal(mine["state"][index][key], value) and mine["state"][index][key].dtype == value.dtype
    # The head skipped one step: its step count is one behind, as torch's is.
    assert mine["state"][len(mine["state"]) - 1]["step"].item() == 11
    strip = lambda groups: [{k: v for k, v in g.items() if k != "foreach"} for g in groups]  # noqa: E731
    assert strip(mine["param_groups"]) == strip(torch_state["param_groups"])


def test_state_dicts_load_across_torch_and_ours_and_resume_the_same_path():
    """A checkpoint written by torch's AdamW (runs from before this module) resumes in ours, and back, exactly."""
    whole = _net(0)
    _train(whole, torch.optim.AdamW(_groups(whole), lr=3e-3, betas=(0.9, 0.99)), range(10))
    for first_kind, second_kind in ((torch.optim.AdamW, AdamW), (AdamW, torch.optim.AdamW)):
        first = _net(0)
        first_opt = first_kind(_groups(first), lr=3e-3, betas=(0.9, 0.99))
        _train(first, first_opt, range(5))
        resumed = _net(7)
        resumed.load_state_dict(first.state_dict())
        resumed_opt = second_kind(_groups(resumed), lr=3e-3, betas=(0.9, 0.99))
        resumed_opt.load_state_dict(copy.deepcopy(first_opt.state_dict()))
        _train(resumed, resumed_opt, range(5, 10))
        for a, b in zip(resumed.parameters(), whole.parameters()):
            assert torch.equal(a, b), (first_kind, second_kind)


def test_groups_keep_their_own_keys_and_bad_settings_are_refused():
    net = _net(0)
    opt = AdamW(_groups(net), lr=1e-3)
    assert [g["lr_scale"] for g in opt.param_groups] == [1.0, 1.0, 4.0]
    assert opt.param_groups[0]["betas"] == (0.9, 0.999)
    with pytest.raises(ValueError, match="more than one parameter group"):
        AdamW([{"params": list(net.parameters())}, {"params": [next(net.parameters())]}])
    with pytest.raises(ValueError, match="invalid settings"):
        AdamW(net.parameters(), lr=-1.0)
    with pytest.raises(ValueError, match="different number of parameter groups"):
        opt.load_state_dict({"state": {}, "param_groups": opt.state_dict()["param_groups"][:1]})


def test_a_fit_step_does_not_import_torchs_compiler():
    """The reason this module exists: torch.optim's first call imports torch._dynamo (seconds of start-up)."""
    code = ("import sys, torch\n"
            "from deepstrata.engine.adamw import AdamW\n"
            "net = torch.nn.Linear(4, 2); opt = AdamW(net.parameters())\n"
            "net(torch.randn(3, 4)).sum().backward(); opt.step(); opt.zero_grad(); opt.state_dict()\n"
            "print('torch._dynamo' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
