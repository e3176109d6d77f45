"""One optimizer step for K members at once: stacked parameters ``(K, ...)``, per-member hyperparameters.

The update is torch's own single-tensor algorithm (``torch.optim.SGD``, ``Adam``, ``AdamW`` with
``foreach=False``, no ``amsgrad``/``nesterov``/``maximize``), written once over a leading member axis,
so each member's row follows exactly the arithmetic its own ``torch.optim`` optimizer would do with
Python-float hyperparameters: the same operations in the same order, each scalar rounded to the
parameter's dtype as torch rounds a Python scalar. The per-member scalars that change with the step
(the learning rate from each member's own LR schedule, Adam's bias corrections) come in as one
``(steps, K)`` table per epoch, built on the host and copied once (no per-step host→device copy).

Tested against ``torch.optim`` member by member (``tests/objectives/test_batched.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from objectives.config import OptimizerConfig


def _column(values: Sequence[float], like: torch.Tensor) -> torch.Tensor:
    """Per-member scalars shaped ``(K, 1, ..., 1)`` to broadcast against a stacked parameter."""
    t = torch.tensor(list(values), dtype=torch.float64).to(device=like.device, dtype=like.dtype)
    return t.reshape(-1, *([1] * (like.dim() - 1)))


class BatchedOptimizer:
    """SGD (with momentum), Adam or AdamW over stacked parameters, one hyperparameter set per member.

    Args:
        cfgs: Each member's optimizer config (all of one ``type``).
        params: The stacked parameters by name, each ``(K, ...)``; updated in place.
    """

    def __init__(self, cfgs: Sequence[OptimizerConfig], params: dict[str, torch.Tensor]) -> None:
        kinds = {c.type for c in cfgs}
        if len(kinds) != 1:
            raise ValueError(f"one optimizer type per group, got {sorted(kinds)}")
        self.type = kinds.pop()
        self.cfgs = list(cfgs)
        self.params = params
        self.counts = [0] * len(self.cfgs)  # each member's own steps (a member may join later: slots.py)
        self.state: dict[str, dict[str, torch.Tensor]] = {name: {} for name in params}

    def tables(self, lrs: Sequence[Sequence[float]], device: torch.device) -> dict[str, torch.Tensor]:
        """The per-step scalars of the next ``len(lrs)`` steps, as float64 ``(steps, K)`` tables on ``device``.

        Args:
            lrs: ``lrs[i][k]``: member k's learning rate at the i-th next step (from its LR schedule).
        """
        rows: dict[str, list[list[float]]] = {"lr": [], "step_size": [], "bc2_sqrt": [], "decay": []}
        for i, row in enumerate(lrs):
            rows["lr"].append(list(row))
            if self.type == "sgd":
                continue
            # Python floats, as torch computes them for a float lr and float betas; each member at its own step.
            members = list(zip(row, self.cfgs, self.counts, strict=True))
            rows["step_size"].append([lr / (1 - c.betas[0] ** (n + i + 1)) for lr, c, n in members])
            rows["bc2_sqrt"].append([(1 - c.betas[1] ** (n + i + 1)) ** 0.5 for _, c, n in members])
            rows["decay"].append([1 - lr * c.weight_decay for lr, c, _ in members])
        return {k: torch.tensor(v, dtype=torch.float64, device=device) for k, v in rows.items() if v}

    @torch.no_grad()
    def step(self, grads: dict[str, torch.Tensor], row: dict[str, torch.Tensor]) -> None:
        """Apply one update from ``grads`` (stacked like the parameters) with one row of :meth:`tables`."""
        self.counts = [n + 1 for n in self.counts]
        for name, p in self.params.items():
            g, state = grads[name], self.state[name]

            def col(values: torch.Tensor, p: torch.Tensor = p) -> torch.Tensor:
                return values.to(p.dtype).reshape(-1, *([1] * (p.dim() - 1)))

            def const(key: str, values: Sequence[float], p: torch.Tensor = p, state: dict = state) -> torch.Tensor:
                if key not in state:  # hyperparameters that do not change: made once
                    state[key] = _column(values, p)
                return state[key]

            if self.type == "sgd":
                wd = const("wd", [c.weight_decay for c in self.cfgs])
                g = g + wd * p
                momentum = const("momentum", [c.momentum for c in self.cfgs])
                if "buf" not in state:
                    state["buf"] = g.detach().clone()  # torch: the first step's buffer is the gradient
                else:
                    state["buf"] = state["buf"] * momentum + g
                p.add_(col(-row["lr"]) * state["buf"])
                continue
            if self.type == "adamw":
                p.mul_(col(row["decay"]))
            else:
                g = g + const("wd", [c.weight_decay for c in self.cfgs]) * p
            if "exp_avg" not in state:
                state["exp_avg"], state["exp_avg_sq"] = torch.zeros_like(p), torch.zeros_like(p)
            one_minus_b1 = const("1-b1", [1 - c.betas[0] for c in self.cfgs])
            b2 = const("b2", [c.betas[1] for c in self.cfgs])
            one_minus_b2 = const("1-b2", [1 - c.betas[1] for c in self.cfgs])
            eps = const("eps", [1e-8 for _ in self.cfgs])  # torch's default eps
            state["exp_avg"].lerp_(g, one_minus_b1)
            state["exp_avg_sq"] = state["exp_avg_sq"] * b2 + one_minus_b2 * g * g
            denom = state["exp_avg_sq"].sqrt() / col(row["bc2_sqrt"]) + eps
            p.add_(col(-row["step_size"]) * state["exp_avg"] / denom)

    def select(self, keep: torch.Tensor) -> None:
        """Keep only the members at positions ``keep`` (the others stopped): rows of every state tensor."""
        kept = keep.tolist()
        self.cfgs, self.counts = [self.cfgs[i] for i in kept], [self.counts[i] for i in kept]
        for state in self.state.values():
            for key, value in state.items():
                state[key] = value[keep.to(value.device)]
