"""Regression test for the ``--compile`` NaN of the max-pooling head (fixed in commit 516fa8c).

What went wrong. ``ClassifierHead.pool`` took ``torch.amax(x, dim=(2, 3))``. Autograd's
backward of ``amax`` spreads the incoming gradient over every position equal to the max:
``grad * (x == max) / (x == max).sum()``. Under ``torch.compile`` with bf16 autocast,
inductor fuses that backward with the activation before the head, recomputes the
activation in float32 and compares it with the max that the forward stored rounded to
bf16. Almost no position is equal, so the count is 0, ``grad / 0`` is inf and
``inf * 0`` is NaN: every weight went NaN on the first step (CIFAR-10 on an H100 trained
to accuracy 0.10; reproduced on the CPU with torch 2.13, where inductor's kernel computes
``count = sum(bf16_max == float32_gelu)`` and divides by it).

The fix takes ``x.flatten(2).max(dim=2).values``. Its backward sends the gradient to the
index the forward chose. It makes no equality test and divides by no count, so rounding
cannot leave it with zero positions.

The bug only shows compiled, and ``torch.compile`` stays out of the unit tests (it takes
tens of seconds on a CPU). So these tests check, in eager mode on the CPU, the mechanism
the fix relies on, on the heads of the models that pool spatially. With the old ``amax``
pool, both tests fail:

* with tied maxima, the gradient of the pooled value goes to exactly one position, whole.
  ``amax`` splits it over the ties, and that split is the count that the compiled kernel
  got wrong;
* the backward graph that AOTAutograd traces for the head (what inductor receives under
  ``--compile``) contains no ``aten.eq``, the equality mask that came out empty.
"""

from __future__ import annotations

import pytest
import torch

from deepstrata.models.cnn import CNN
from deepstrata.models.whitened_cnn import WhitenedCNN

MODELS = {
    "cnn": lambda: CNN((1, 28, 28), 10, width=8),
    "whitened-cnn": lambda: WhitenedCNN((3, 32, 32), 10, width=8),
}


def tied_features(channels: int, n: int = 4, size: int = 4, seed: int = 0) -> torch.Tensor:
    """bf16 post-GELU-like maps [n, channels, size, size] whose maximum sits at two or more positions.

    bf16 keeps 8 bits of mantissa, so ties are common in real activations; here every map
    has its largest value written at two random positions, and the rest strictly below it.
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, channels, size * size, generator=g) * 0.5
    top = 1.0 + torch.rand(n, channels, 1, generator=g)
    for i in range(n):
        for c in range(channels):
            where = torch.randperm(size * size, generator=g)[:2]
            x[i, c, where] = top[i, c]
    return x.view(n, channels, size, size).to(torch.bfloat16)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_pool_gradient_goes_whole_to_one_tied_maximum(name):
    head = MODELS[name]().layers["head"]
    x = tied_features(head.fc.in_features).requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pooled = head.pool(x)
    upstream = torch.linspace(0.5, 2.0, pooled.numel()).view_as(pooled).to(pooled.dtype)
    pooled.backward(upstream)

    grad = x.grad.float().flatten(2)
    assert torch.isfinite(grad).all()
    # One position per map receives the gradient, all of it: routed by index, never by a count of equals.
    assert torch.equal((grad != 0).sum(dim=2), torch.ones(grad.shape[:2], dtype=torch.long))
    assert torch.equal(grad.sum(dim=2), upstream.float())
    # ...and that position holds the maximum.
    chosen = grad.argmax(dim=2, keepdim=True)
    assert torch.equal(x.detach().flatten(2).gather(2, chosen).squeeze(2), pooled.detach())


@pytest.mark.parametrize("name", sorted(MODELS))
def test_pool_backward_graph_has_no_equality_mask(name):
    aot = pytest.importorskip("functorch.compile")
    head = MODELS[name]().layers["head"]
    graphs: dict[str, torch.fx.GraphModule] = {}

    def keep(kind):
        def compiler(graph: torch.fx.GraphModule, _inputs):
            graphs[kind] = graph
            return aot.make_boxed_func(graph)
        return compiler

    class ActivatedHead(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = head

        def forward(self, features):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return self.head(torch.nn.functional.gelu(features))

    traced = aot.aot_module(ActivatedHead(), fw_compiler=keep("forward"), bw_compiler=keep("backward"))
    features = torch.randn(2, head.fc.in_features, 4, 4, requires_grad=True)
    traced(features).float().sum().backward()

    targets = {str(node.target) for node in graphs["backward"].graph.nodes if node.op == "call_function"}
    assert not any(target.startswith("aten.eq") for target in targets), sorted(targets)
    assert torch.isfinite(features.grad).all()
