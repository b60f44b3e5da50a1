"""Linear probes: held-out scoring, the random-init control, and the finding on a trained digits CNN."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepstrata.inspect.probes import ProbeSettings, chance_accuracy, layer_probes, probe_accuracy, probe_split, \
    random_control
from deepstrata.inspect.taps import extract
from deepstrata.models.cnn import CNN


def test_probe_split_is_disjoint_stratified_and_seeded():
    labels = np.repeat(np.arange(4), 10)
    fit_idx, score_idx = probe_split(labels, 0.5, seed=3)
    assert len(fit_idx) == len(score_idx) == 20
    assert not set(fit_idx) & set(score_idx)
    assert sorted(np.bincount(labels[fit_idx]).tolist()) == [5, 5, 5, 5]
    again = probe_split(labels, 0.5, seed=3)
    assert np.array_equal(again[0], fit_idx)
    lonely = np.array([0, 0, 0, 1, 1, 1, 2])
    fit_idx, score_idx = probe_split(lonely, 0.5, seed=0)
    assert len(fit_idx) + len(score_idx) == 7


def test_probe_accuracy_separates_signal_from_noise():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 40)
    signal = np.eye(3)[labels] * 4.0 + rng.normal(size=(120, 3))
    noise = rng.normal(size=(120, 3))
    fit_idx, score_idx = probe_split(labels)
    good, converged = probe_accuracy(signal, labels, fit_idx, score_idx)
    bad, _ = probe_accuracy(noise, labels, fit_idx, score_idx)
    assert good > 0.95 and converged
    assert bad < 0.6
    assert chance_accuracy(labels) == pytest.approx(1 / 3, abs=0.02)
    results = layer_probes({"sig": signal, "noise": noise}, {"sig": noise, "noise": noise}, labels)
    assert [r.layer for r in results] == ["sig", "noise"]
    assert results[0].trained > results[0].random and results[0].dim == 3


def test_random_control_is_the_same_architecture_freshly_initialised():
    torch.manual_seed(5)
    model = CNN((1, 8, 8), 10, width=8, mean=[0.3], std=[0.2])
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    state = torch.random.get_rng_state()
    control = random_control(model, seed=0)
    assert torch.equal(torch.random.get_rng_state(), state), "building the control must not move the global RNG"
    assert control.spec == model.spec and not control.training
    assert torch.equal(control.mean, model.mean) and torch.equal(control.std, model.std)
    assert not torch.equal(control.layers["stem"][0].weight, model.layers["stem"][0].weight)
    again = random_control(model, seed=0)
    assert torch.equal(again.layers["stage1"].conv.weight, control.layers["stage1"].conv.weight)


def test_trained_digits_cnn_beats_its_random_init_at_the_last_stage(digits_run):
    from deepstrata.families.image.inspect import load_image_sample
    from deepstrata.run import Run

    run = Run(digits_run)
    sample = load_image_sample(run, samples=2000, seed=0)
    layers = run.model.layer_names
    trained = extract(run.model, sample.inputs, layers).pooled
    random = extract(random_control(run.model, 0), sample.inputs, layers).pooled
    results = {r.layer: r for r in layer_probes(trained, random, sample.labels, ProbeSettings())}
    last = [name for name in layers if name.startswith("stage")][-1]
    assert results[last].trained > 0.9
    assert results[last].trained >= results[last].random + 0.1
    assert results[last].trained > results["stem"].trained
    assert results[last].dim == run.model.feature_dim
