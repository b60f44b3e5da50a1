"""Lookahead, Nesterov SGD groups and the speed-run schedule, and exact resumption with them on."""

import dataclasses

import pytest
import torch
from torch import nn

from deepstrata.engine import checkpoint as ckpt
from deepstrata.config import TrainConfig
from deepstrata.engine.adamw import AdamW
from deepstrata.engine.loop import build_optimizer, learning_rate, train
from deepstrata.engine.lookahead import Lookahead
from deepstrata.errors import ConfigError
from deepstrata.models.whitened_cnn import WhitenedCNN
from deepstrata.families.image.task import ImageClassificationTask
from tests.engine.test_loop import Crash, CrashingTask, blobs
from tests.run_files import checkpoint_file

RECIPE = TrainConfig(epochs=3, batch_size=32, device="cpu", seed=0, optimizer="sgd", momentum=0.85, lr=0.2,
                     weight_decay=0.005, norm_lr_scale=16.0, warmup_fraction=0.23, lr_start=0.2, lr_end=0.07,
                     label_smoothing=0.2, grad_clip=0.0, lookahead=True)


def make(seed=0, flip="alternate", tta=True):
    torch.manual_seed(seed)
    x, y = blobs()
    vx, vy = blobs(64, seed=1)
    model = WhitenedCNN((1, 8, 8), 2, width=8)
    model.init_whitening(x[:100].float() / 255)
    task = ImageClassificationTask(x, y, vx, vy, num_classes=2, label_smoothing=0.2, flip=flip, translate=1, tta=tta)
    return model, task


def test_lookahead_follows_the_weights_early_and_ends_on_the_average():
    model = nn.Linear(3, 1)
    look = Lookahead(model, every=5)
    assert look.decay(0, 100) == 0.0 and look.decay(100, 100) == 1.0
    assert look.decay(50, 100) == pytest.approx(0.95**5 * 0.125)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    look.step(model, 3, 100)  # not a multiple of 5: nothing happens
    assert torch.equal(model.weight, start + 1)
    look.step(model, 50, 100)  # avg = d * start + (1 - d) * (start + 1); weights restart from it
    d = look.decay(50, 100)
    assert torch.allclose(model.weight, start + (1 - d))
    assert torch.equal(look.average["weight"], model.weight)
    with torch.no_grad():
        model.weight.add_(5.0)
    look.step(model, 100, 100)  # the last step: the model takes the average unchanged
    assert torch.allclose(model.weight, start + (1 - d))


def test_schedule_starts_and_ends_at_the_given_fractions():
    cfg = TrainConfig(lr=2.0, warmup_fraction=0.25, lr_start=0.2, lr_end=0.07)
    lrs = [learning_rate(cfg, s, 100) for s in range(100)]
    assert lrs[0] == pytest.approx(2.0 * (0.2 + 0.8 / 25))
    assert max(lrs) == pytest.approx(2.0) and lrs.index(max(lrs)) == 24
    assert lrs[-1] == pytest.approx(2.0 * (0.07 + 0.93 / 75))
    assert learning_rate(cfg, 100, 100) == pytest.approx(2.0 * 0.07)


def test_sgd_groups_scale_norm_learning_rate_but_not_their_decay_per_step():
    model = WhitenedCNN((3, 16, 16), 4, width=8)
    opt = build_optimizer(model, RECIPE)
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["nesterov"]
    by_scale = {g["lr_scale"]: g for g in opt.param_groups}
    norm = by_scale[16.0]
    bn_biases = [m.bias for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert {id(p) for p in norm["params"]} == {id(p) for p in bn_biases}
    # lr * decay is the shrink per step; the same for norm parameters and kernels.
    assert norm["weight_decay"] * 16.0 == pytest.approx(by_scale[1.0]["weight_decay"])
    trained = {id(p) for g in opt.param_groups for p in g["params"]}
    assert id(model.layers["stem"].conv.weight) not in trained  # the whitening kernels stay fixed
    # AdamW keeps its old rule: no decay on biases and norms.
    adam = build_optimizer(model, TrainConfig())
    assert isinstance(adam, AdamW)
    assert [g["weight_decay"] for g in adam.param_groups] == [5e-4, 0.0, 0.0]


class EpochSnapshots(CrashingTask):
    """Copies the named parameters at the start of every epoch."""

    def __init__(self, task, model, names):
        super().__init__(task, after=-1)
        self.model, self.names, self.seen = model, names, []

    def train_batches(self, epoch, batch_size, seed, start=0):
        params = dict(self.model.named_parameters())
        self.seen.append({name: params[name].detach().clone() for name in self.names})
        yield from self.task.train_batches(epoch, batch_size, seed, start)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_freeze_after_stops_a_layer_exactly_from_that_epoch(optimizer):
    model, task = make()
    names = ["layers.stem.conv.bias", "layers.stage1.conv1.weight"]
    snapshots = EpochSnapshots(task, model, names)
    cfg = dataclasses.replace(RECIPE, optimizer=optimizer, lookahead=False, freeze_after={"stem": 1})
    train(model, snapshots, cfg, None, quiet=True)
    start, after_one, after_two = snapshots.seen
    stem, stage = names
    assert not torch.equal(start[stem], after_one[stem])  # epoch 1 trains the whitening bias ...
    assert torch.equal(after_one[stem], after_two[stem])  # ... epoch 2 leaves it exactly (decay included)
    assert not torch.equal(after_one[stage], after_two[stage])  # while the other layers keep learning


def test_freeze_after_names_the_layers_a_model_has():
    model = WhitenedCNN((3, 16, 16), 4, width=8)
    opt = build_optimizer(model, dataclasses.replace(RECIPE, freeze_after={"stem": 3}))
    limited = [g for g in opt.param_groups if "until_epoch" in g]
    assert [g["until_epoch"] for g in limited] == [3]
    assert [id(p) for p in limited[0]["params"]] == [id(model.layers["stem"].conv.bias)]
    # The other groups keep their order (kernels, biases, norms), so older checkpoints still load.
    assert [g["lr_scale"] for g in opt.param_groups if "until_epoch" not in g] == [1.0, 16.0]
    with pytest.raises(ConfigError, match="unknown layer 'stemm'; this model has: stem, stage1"):
        build_optimizer(model, dataclasses.replace(RECIPE, freeze_after={"stemm": 3}))
    with pytest.raises(ConfigError, match="Linear has no named layers"):
        build_optimizer(nn.Linear(2, 2), dataclasses.replace(RECIPE, freeze_after={"stem": 3}))


def test_recipe_learns_and_keeps_the_last_epoch_without_validation():
    model, task = make()
    task.val_x, task.val_y = task.val_x[:0], task.val_y[:0]
    result = train(model, task, RECIPE, None, quiet=True)
    assert result.best_epoch == 3 and all("val_accuracy" not in row for row in result.history)
    x, y = blobs(64, seed=2)
    assert (task.predict(model, x, torch.device("cpu")).argmax(1) == y).float().mean() > 0.9


def test_killed_run_with_lookahead_resumes_exactly(tmp_path):
    reference, task = make()
    train(reference, task, RECIPE, tmp_path / "ref", quiet=True)
    from safetensors.torch import load_file

    model, task = make()
    per_epoch = dataclasses.replace(RECIPE, checkpoint_seconds=0)  # a checkpoint at each epoch's end
    with pytest.raises(Crash):
        train(model, CrashingTask(task, 12), per_epoch, tmp_path / "run", quiet=True)
    assert ckpt.latest_state(tmp_path / "run" / "checkpoints")["step"] == 8
    fresh, task = make(seed=5)
    train(fresh, task, RECIPE, tmp_path / "run", resume=True, quiet=True)
    a = load_file(str(checkpoint_file(tmp_path / "ref", "latest/train.safetensors")))
    b = load_file(str(checkpoint_file(tmp_path / "run", "latest/train.safetensors")))
    assert any(k.startswith("extra.") for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a)
    ref = load_file(str(checkpoint_file(tmp_path / "ref", "latest/weights.safetensors")))
    assert all(torch.equal(v, ref[k]) for k, v in fresh.state_dict().items())
