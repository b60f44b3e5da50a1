"""The loop's per-layer controls for transfer learning: frozen, unfreeze_at, layer_lr_scale, and their schedule."""

import dataclasses

import pytest
import torch
from torch import nn

from deepstrata.config import RunConfig, TrainConfig, dump_config, load_config
from deepstrata.engine import checkpoint as ckpt
from deepstrata.engine.layer_schedule import transfer_schedule
from deepstrata.engine.loop import build_optimizer, train
from deepstrata.errors import ConfigError
from deepstrata.models.cnn import CNN
from tests.engine.test_loop import Crash, CrashingTask, make, weights
from tests.run_files import checkpoint_file

BASE = TrainConfig(epochs=2, batch_size=64, device="cpu", seed=0)
STEPS = 256 // 64  # training batches per epoch of tests.engine.test_loop.make's task
STEM_BN = ("layers.stem.1.running_mean", "layers.stem.1.running_var", "layers.stem.1.num_batches_tracked")


class Watch(CrashingTask):
    """Records which named layers are in training mode at every batch, and the state at every epoch start."""

    def __init__(self, task, model):
        super().__init__(task, after=-1)
        self.model, self.modes, self.starts = model, [], []

    def train_batches(self, epoch, batch_size, seed, start=0):
        self.starts.append(weights(self.model))
        yield from super().train_batches(epoch, batch_size, seed, start)

    def loss(self, model, batch):
        self.modes.append({name: layer.training for name, layer in self.model.layers.items()})
        return super().loss(model, batch)


def under(state, layer):
    return {k: v for k, v in state.items() if k.startswith(f"layers.{layer}.")}


def differing(a, b):
    """The keys whose tensors are not bit-for-bit equal (or are missing on one side)."""
    return sorted(k for k in a.keys() | b.keys() if k not in a or k not in b or not torch.equal(a[k], b[k]))


def test_a_frozen_layer_keeps_its_weights_and_batchnorm_statistics():
    model, task = make()
    before = weights(model)
    watch = Watch(task, model)
    cfg = dataclasses.replace(BASE, lookahead=True, frozen=["stem"])  # Lookahead averages the stem too
    train(model, watch, cfg, None, quiet=True)
    after = weights(model)
    assert set(STEM_BN) <= set(under(before, "stem"))
    assert differing(under(before, "stem"), under(after, "stem")) == []  # weights and BatchNorm statistics
    for key in ("layers.stage1.conv.weight", "layers.stage1.norm.running_mean", "layers.head.fc.weight"):
        assert not torch.equal(before[key], after[key]), key
    assert after["layers.stage1.norm.num_batches_tracked"] == 2 * STEPS
    assert len(watch.modes) == 2 * STEPS
    assert all(not mode["stem"] and mode["stage1"] and mode["head"] for mode in watch.modes)  # eval after net.train()
    assert all(param.requires_grad for param in model.parameters())  # handed back trainable


def test_unfreeze_at_holds_a_layer_frozen_until_that_epoch():
    cfg = dataclasses.replace(BASE, epochs=1, unfreeze_at={"stem": 1})
    model, task = make()
    before = weights(model)
    train(model, task, cfg, None, quiet=True)
    after = weights(model)
    assert differing(under(before, "stem"), under(after, "stem")) == []
    assert not torch.equal(before["layers.stage1.conv.weight"], after["layers.stage1.conv.weight"])

    model, task = make()  # the same seed, two epochs: the stem trains in the second
    watch = Watch(task, model)
    train(model, watch, dataclasses.replace(cfg, epochs=2), None, quiet=True)
    after = weights(model)
    assert differing(under(before, "stem"), under(watch.starts[1], "stem")) == []
    for key in ("layers.stem.0.weight", "layers.stem.1.bias", "layers.stem.1.running_mean"):
        assert not torch.equal(before[key], after[key]), key
    assert after["layers.stem.1.num_batches_tracked"] == STEPS  # its statistics moved in epoch 1 only
    assert after["layers.stage1.norm.num_batches_tracked"] == 2 * STEPS
    assert [mode["stem"] for mode in watch.modes] == [False] * STEPS + [True] * STEPS
    assert all(mode["stage1"] for mode in watch.modes)


def test_a_layer_waiting_to_unfreeze_is_frozen_for_the_others_too():
    """No share in gradient clipping: the other layers learn exactly as if it were frozen."""
    cfg = dataclasses.replace(BASE, epochs=1, grad_clip=0.05)
    waiting, task = make()
    train(waiting, task, dataclasses.replace(cfg, unfreeze_at={"stem": 1}), None, quiet=True)
    frozen, task = make()
    train(frozen, task, dataclasses.replace(cfg, frozen=["stem"]), None, quiet=True)
    assert differing(weights(waiting), weights(frozen)) == []


# The groups a default config gives CNN((1, 8, 8), 2, width=8), written out: checkpoints hold
# optimizer state by group order, so a run written before the layer controls must resume identically.
KERNELS = ["layers.stem.0.weight", "layers.stage1.conv.weight", "layers.stage1.block.body.0.0.weight",
           "layers.stage1.block.body.1.0.weight", "layers.stage2.conv.weight", "layers.stage2.block.body.0.0.weight",
           "layers.stage2.block.body.1.0.weight", "layers.head.fc.weight"]
BIASES = ["layers.head.fc.bias"]
NORMS = ["layers.stem.1.weight", "layers.stem.1.bias", "layers.stage1.norm.weight", "layers.stage1.norm.bias",
         "layers.stage1.block.body.0.1.weight", "layers.stage1.block.body.0.1.bias",
         "layers.stage1.block.body.1.1.weight", "layers.stage1.block.body.1.1.bias", "layers.stage2.norm.weight",
         "layers.stage2.norm.bias", "layers.stage2.block.body.0.1.weight", "layers.stage2.block.body.0.1.bias",
         "layers.stage2.block.body.1.1.weight", "layers.stage2.block.body.1.1.bias"]
SGD = TrainConfig(optimizer="sgd", weight_decay=0.01, norm_lr_scale=4.0)


def described(model, optimizer):
    names = {id(p): n for n, p in model.named_parameters()}
    return [([names[id(p)] for p in g["params"]], g["weight_decay"], g["lr_scale"],
             {k: g[k] for k in ("until_epoch", "from_epoch") if k in g}) for g in optimizer.param_groups]


@pytest.mark.parametrize("cfg,expected", [
    (TrainConfig(), [(KERNELS, 5e-4, 1.0, {}), (BIASES, 0.0, 1.0, {}), (NORMS, 0.0, 1.0, {})]),
    (SGD, [(KERNELS, 0.01, 1.0, {}), (BIASES, 0.01, 1.0, {}), (NORMS, 0.0025, 4.0, {})]),
    (dataclasses.replace(SGD, freeze_after={"stem": 3}),
     [(KERNELS[1:], 0.01, 1.0, {}), (KERNELS[:1], 0.01, 1.0, {"until_epoch": 3}), (BIASES, 0.01, 1.0, {}),
      (NORMS[2:], 0.0025, 4.0, {}), (NORMS[:2], 0.0025, 4.0, {"until_epoch": 3})]),
    # Controls that change nothing give the same groups: every scale 1, a layer unfrozen from epoch 0.
    (dataclasses.replace(SGD, unfreeze_at={"stem": 0}, layer_lr_scale=dict.fromkeys(["stem", "stage1", "head"], 1.0)),
     [(KERNELS, 0.01, 1.0, {}), (BIASES, 0.01, 1.0, {}), (NORMS, 0.0025, 4.0, {})]),
], ids=["adamw", "sgd", "freeze_after", "no-op-controls"])
def test_without_layer_controls_the_groups_are_those_of_before(cfg, expected):
    model = CNN((1, 8, 8), 2, width=8)
    assert described(model, build_optimizer(model, cfg)) == expected


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_layer_lr_scale_multiplies_each_groups_scale(optimizer):
    model = CNN((1, 8, 8), 2, width=8)
    layer_scale = {"stem": 0.01, "stage2": 0.5}
    cfg = TrainConfig(optimizer=optimizer, weight_decay=0.01, norm_lr_scale=4.0, layer_lr_scale=layer_scale,
                      freeze_after={"stage2": 3}, unfreeze_at={"stage1": 1}, frozen=["head"])
    opt = build_optimizer(model, cfg)
    plain = {id(p): g for g in build_optimizer(model, dataclasses.replace(
        cfg, layer_lr_scale={}, freeze_after={}, unfreeze_at={}, frozen=[])).param_groups for p in g["params"]}
    group_of = {id(p): g for g in opt.param_groups for p in g["params"]}
    assert sum(len(g["params"]) for g in opt.param_groups) == len(group_of)  # each parameter once
    norms = {id(p) for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters()}
    for name, param in model.named_parameters():
        layer = name.split(".")[1]
        if layer == "head":
            assert id(param) not in group_of, name  # frozen: not in the optimizer at all
            continue
        group = group_of[id(param)]
        assert group["lr_scale"] == layer_scale.get(layer, 1.0) * (4.0 if id(param) in norms else 1.0), name
        assert group["weight_decay"] == plain[id(param)]["weight_decay"], name  # decay follows the rate
        assert group.get("until_epoch") == (3 if layer == "stage2" else None), name
        assert group.get("from_epoch") == (1 if layer == "stage1" else None), name
    assert len(opt.param_groups) == 6  # kernels and norms of stem, stage1, stage2; no bias is left to train


LAYERS = ["stem", "stage1", "stage2", "head"]
REUSED = ["stem", "stage1", "stage2"]


def test_transfer_schedule_for_each_mode():
    assert transfer_schedule(LAYERS, REUSED, "linear", 8) == {
        "frozen": ["stem", "stage1", "stage2"], "unfreeze_at": {}, "layer_lr_scale": {}}
    scales = {"stem": 10 ** (-2), "stage1": 10 ** (-4 / 3), "stage2": 10 ** (-2 / 3), "head": 1.0}
    finetune = transfer_schedule(LAYERS, REUSED, "finetune", 8)
    assert finetune["frozen"] == [] and finetune["unfreeze_at"] == {}
    assert finetune["layer_lr_scale"] == pytest.approx(scales, rel=1e-15)
    gradual = transfer_schedule(LAYERS, REUSED, "gradual", 8)
    assert gradual["frozen"] == [] and gradual["layer_lr_scale"] == pytest.approx(scales, rel=1e-15)
    assert gradual["unfreeze_at"] == {"stage2": 2, "stage1": 4, "stem": 6}
    # Few epochs: a step of 1, capped so that every layer trains at least one epoch.
    assert transfer_schedule(LAYERS, REUSED, "gradual", 3)["unfreeze_at"] == {"stage2": 1, "stage1": 2, "stem": 2}
    assert transfer_schedule(LAYERS, REUSED, "gradual", 1)["unfreeze_at"] == {"stage2": 0, "stage1": 0, "stem": 0}
    # The overrides are a valid train config that the loop accepts for this model.
    model = CNN((1, 8, 8), 2, width=8)
    for mode in ("linear", "finetune", "gradual"):
        build_optimizer(model, TrainConfig(epochs=8, **transfer_schedule(LAYERS, REUSED, mode, 8)))
    with pytest.raises(ConfigError, match="^transfer mode: got 'probe', expected one of linear, finetune, gradual$"):
        transfer_schedule(LAYERS, REUSED, "probe", 8)
    with pytest.raises(ConfigError, match="unknown reused layer 'stage3'; this model has: stem, stage1, stage2, head"):
        transfer_schedule(LAYERS, ["stage3"], "linear", 8)
    with pytest.raises(ConfigError, match="every layer is reused"):
        transfer_schedule(LAYERS, LAYERS, "linear", 8)


CONTROLS = dataclasses.replace(BASE, checkpoint_every=3, frozen=["stem"], unfreeze_at={"stage1": 1},
                               layer_lr_scale={"stage2": 0.1})


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("reference")
    model, task = make()
    train(model, task, CONTROLS, run_dir, quiet=True)
    return run_dir, weights(model)


@pytest.mark.parametrize("crash_after,saved_step", [(3, 3), (7, 6)])  # stage1 still waiting / training
def test_a_resumed_run_with_layer_controls_ends_as_an_uninterrupted_one(tmp_path, reference, crash_after, saved_step):
    ref_dir, ref_weights = reference
    model, task = make()
    with pytest.raises(Crash):
        train(model, CrashingTask(task, crash_after), CONTROLS, tmp_path, quiet=True)
    assert ckpt.latest_state(tmp_path / "checkpoints")["step"] == saved_step
    path = tmp_path / "config.yaml"  # the resume reads the controls back from the run's config
    path.write_text(dump_config(RunConfig(train=CONTROLS)))
    fresh, task = make(seed=123)  # other initial weights (the frozen stem's too): all must come from the checkpoint
    train(fresh, task, load_config(path).train, tmp_path, resume=True, quiet=True)
    assert differing(weights(fresh), ref_weights) == []
    from safetensors.torch import load_file
    for name in ("latest/weights.safetensors", "best.safetensors"):
        saved = [load_file(str(checkpoint_file(run_dir, name))) for run_dir in (ref_dir, tmp_path)]
        assert differing(*saved) == [], name


def test_layer_controls_round_trip_through_yaml_and_are_private_copies(tmp_path):
    assert (TrainConfig().frozen, TrainConfig().unfreeze_at, TrainConfig().layer_lr_scale) == ([], {}, {})
    frozen, scales = ["stem"], {"stage2": 10 ** (-4 / 3), "head": 1.0}
    cfg = RunConfig(train=TrainConfig(frozen=frozen, unfreeze_at={"stage1": 2}, layer_lr_scale=scales))
    frozen.append("head")
    scales["stem"] = 0.5
    assert cfg.train.frozen == ["stem"] and "stem" not in cfg.train.layer_lr_scale
    path = tmp_path / "config.yaml"
    path.write_text(dump_config(cfg))
    assert load_config(path) == cfg
    path.write_text("train:\n  frozen: [stem]\n  layer_lr_scale: {stage1: 1e-2}\n")  # YAML 1.1 reads 1e-2 as text
    assert load_config(path).train.layer_lr_scale == {"stage1": 0.01}
    path.write_text("train:\n  layer_lr_scale: {stage1: -1}\n")
    with pytest.raises(ConfigError, match=rf"^{path}: train.layer_lr_scale.stage1: got -1"):
        load_config(path)


@pytest.mark.parametrize("kwargs,message", [
    ({"frozen": "stem"}, "train.frozen: got 'stem', expected a list of layer names"),
    ({"frozen": {"stem": 1}}, "train.frozen: got {'stem': 1}, expected a list of layer names"),
    ({"frozen": [3]}, "train.frozen: got 3 in the list, expected a layer name"),
    ({"frozen": ["stem", "stem"]}, "train.frozen: 'stem' named more than once"),
    ({"unfreeze_at": ["stem"]}, r"train.unfreeze_at: got \['stem'\], expected a mapping of layer name"),
    ({"unfreeze_at": {"stem": -1}}, "train.unfreeze_at.stem: got -1, expected an integer >= 0"),
    ({"unfreeze_at": {"stem": 1.5}}, "train.unfreeze_at.stem: got 1.5"),
    ({"layer_lr_scale": {"stem": -0.1}}, "train.layer_lr_scale.stem: got -0.1, expected a finite positive number"),
    ({"layer_lr_scale": {"stem": 0}}, "train.layer_lr_scale.stem: got 0, expected a finite positive number"),
    ({"layer_lr_scale": {"": 0.5}}, "train.layer_lr_scale: got key '', expected a layer name"),
    ({"frozen": ["stem"], "unfreeze_at": {"stem": 2}}, "train.unfreeze_at: 'stem' is also in train.frozen"),
    ({"frozen": ["stem"], "freeze_after": {"stem": 2}}, "train.freeze_after: 'stem' is also in train.frozen"),
    ({"unfreeze_at": {"stem": 3}, "freeze_after": {"stem": 3}}, "train.unfreeze_at.stem: got 3, .* never train"),
])
def test_bad_layer_controls_are_one_line_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=f"^{message}") as info:
        TrainConfig(**kwargs)
    assert "\n" not in str(info.value)


def test_the_loop_names_unknown_layers_and_refuses_schedules_that_train_nothing():
    model = CNN((1, 8, 8), 2, width=8)
    for key, value in (("frozen", ["stemm"]), ("unfreeze_at", {"stemm": 1}), ("layer_lr_scale", {"stemm": 0.1})):
        with pytest.raises(ConfigError, match=rf"^train\.{key}: unknown layer 'stemm'; this model has: "
                                              "stem, stage1, stage2, head$"):
            build_optimizer(model, TrainConfig(**{key: value}))
        with pytest.raises(ConfigError, match=f"^train.{key}: Linear has no named layers"):
            build_optimizer(nn.Linear(2, 2), TrainConfig(**{key: value}))
    with pytest.raises(ConfigError, match="^train.frozen: freezing stem, stage1, stage2, head leaves nothing to train"):
        build_optimizer(model, TrainConfig(frozen=LAYERS))
    with pytest.raises(ConfigError, match="^train.unfreeze_at: every trained layer waits .* epoch 0 would train"):
        build_optimizer(model, TrainConfig(unfreeze_at=dict.fromkeys(LAYERS, 1)))
    _, task = make()
    with pytest.raises(ConfigError, match="^train.frozen: unknown layer 'stemm'"):
        train(model, task, dataclasses.replace(BASE, frozen=["stemm"]), None, quiet=True)
    with pytest.raises(ConfigError, match="leaves nothing to train"):
        train(model, task, dataclasses.replace(BASE, frozen=LAYERS), None, quiet=True)
    assert all(param.requires_grad for param in model.parameters())  # a refused run leaves the model as it was
