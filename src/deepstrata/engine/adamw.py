"""AdamW as ``torch.optim.AdamW`` computes it, without ``torch.optim``.

Why not ``torch.optim.AdamW`` itself: every ``torch.optim`` optimiser wraps its methods so
that torch's compiler stays out of them, and that wrapper imports ``torch._dynamo`` on the
first call: the first step of the digits CNN took 2.0 s with ``torch.optim.AdamW`` and 0.007 s
here on the 2-core development machine (``benchmarks/fit_fixed_costs.py``), in every fit
although nothing is compiled. The update here is torch 2.13's AdamW (decoupled weight
decay, bias correction, no AMSGrad), step for step and bit for bit on the CPU: per
(device, dtype) bucket, the decay ``p *= 1 - lr·wd``, ``m.lerp_(g, 1 - β1)``,
``v = β2·v + (1 - β2)·g²``, ``p.addcdiv_(m, √v / √(1 - β2^t) + ε, -lr / (1 - β1^t))``, with
``torch._foreach_*`` ops (as torch's own multi-tensor path does, whose results on the CPU
equal its per-tensor path's). ``tests/engine/test_adamw.py`` holds it to
``torch.optim.AdamW`` with ``foreach`` off and on, bitwise.

Its state dict is torch's format — per-parameter ``step`` (a float32 CPU scalar),
``exp_avg`` and ``exp_avg_sq``, and groups with torch's keys — so checkpoints written with
``torch.optim.AdamW`` before this module resume unchanged, and the reverse.

The loop needs only what is here: ``param_groups`` (it sets each group's ``lr`` per step),
``state``, ``step``, ``zero_grad``, ``state_dict``, ``load_state_dict``. Gradient scaling
(``torch.amp.GradScaler``) uses ``param_groups`` and ``step`` alone.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import torch

# Keys torch.optim.AdamW keeps in every group: saved so its checkpoints and ours read alike.
_TORCH_GROUP_DEFAULTS = {"amsgrad": False, "maximize": False, "foreach": None, "capturable": False,
                         "differentiable": False, "fused": None, "decoupled_weight_decay": True}


class AdamW:
    """AdamW over parameter groups (lists of tensors, or dicts with ``params`` and per-group settings)."""

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2) -> None:
        if lr < 0 or eps < 0 or weight_decay < 0 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"AdamW: invalid settings lr={lr}, betas={betas}, eps={eps}, weight_decay={weight_decay}")
        self.defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay,
                         **_TORCH_GROUP_DEFAULTS}
        self.state: defaultdict[torch.Tensor, dict[str, Any]] = defaultdict(dict)
        self.param_groups: list[dict[str, Any]] = []
        groups = list(params)
        if not groups:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, group: dict[str, Any]) -> None:
        params = group["params"]
        params = [params] if isinstance(params, torch.Tensor) else list(params)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in seen for p in params) or len({id(p) for p in params}) != len(params):
            raise ValueError("some parameters appear in more than one parameter group")
        self.param_groups.append({**self.defaults, **group, "params": params})

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.detach_()
                    p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        """One update of every parameter that has a gradient (the others keep their weights and state)."""
        for group in self.param_groups:
            buckets: dict[tuple[torch.device, torch.dtype], list[list[torch.Tensor]]] = {}
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("AdamW does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = torch.tensor(0.0, dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                bucket = buckets.setdefault((p.device, p.dtype), [[], [], [], [], []])
                for items, value in zip(bucket, (p, p.grad, state["exp_avg"], state["exp_avg_sq"], state["step"])):
                    items.append(value)
            for params, grads, exp_avgs, exp_avg_sqs, steps in buckets.values():
                self._update(group, params, grads, exp_avgs, exp_avg_sqs, steps)

    @staticmethod
    def _update(group: dict[str, Any], params: list[torch.Tensor], grads: list[torch.Tensor],
                exp_avgs: list[torch.Tensor], exp_avg_sqs: list[torch.Tensor], steps: list[torch.Tensor]) -> None:
        lr, (beta1, beta2), eps, decay = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        torch._foreach_add_(steps, 1.0)
        if decay != 0:
            torch._foreach_mul_(params, 1 - lr * decay)
        torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
        counts = [step.item() for step in steps]
        step_sizes = [-(lr / (1 - beta1 ** count)) for count in counts]
        denoms = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denoms, [(1 - beta2 ** count) ** 0.5 for count in counts])
        torch._foreach_add_(denoms, eps)
        torch._foreach_addcdiv_(params, exp_avgs, denoms, step_sizes)

    def state_dict(self) -> dict[str, Any]:
        """torch's layout: state keyed by each parameter's position across the groups, ``params`` as positions."""
        index: dict[int, int] = {}
        groups = []
        for group in self.param_groups:
            for p in group["params"]:
                index.setdefault(id(p), len(index))
            groups.append({**{k: v for k, v in group.items() if k != "params"},
                           "params": [index[id(p)] for p in group["params"]]})
        state = {index[id(p)]: dict(values) for p, values in self.state.items() if id(p) in index}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore groups' settings and per-parameter state; moments follow their parameter's device and dtype."""
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        if any(len(saved["params"]) != len(group["params"]) for saved, group in zip(saved_groups, self.param_groups)):
            raise ValueError("loaded state dict contains a parameter group that doesn't match the size of "
                             "optimizer's group")
        by_index = {index: p for saved, group in zip(saved_groups, self.param_groups)
                    for index, p in zip(saved["params"], group["params"])}
        self.state = defaultdict(dict)
        for index, values in state_dict["state"].items():
            p = by_index.get(int(index))
            if p is None:
                continue
            self.state[p] = {key: value.to(dtype=p.dtype, device=p.device)
                             if isinstance(value, torch.Tensor) and key != "step" else value
                             for key, value in values.items()}
        self.param_groups = [{**{k: v for k, v in saved.items() if k != "params"},
                              "betas": tuple(saved.get("betas", group["betas"])), "params": group["params"]}
                             for saved, group in zip(saved_groups, self.param_groups)]
