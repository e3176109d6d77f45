"""What the gradient methods share (objectives.weighting.jacobian): the shared/own split of the parameters,
one Jacobian for every task's rows, heads with their own task's gradient; PCGrad on the shared parameters
against the paper's projection written out here, for 2 and 3 tasks."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from objectives.weighting import STRATEGIES, make
from objectives.weighting.jacobian import Reaches, jacobian_step


class _Net(nn.Module):
    """A trunk, one head per task, and a parameter no task reaches."""

    def __init__(self, k: int) -> None:
        super().__init__()
        torch.manual_seed(4)  # a seed whose task gradients conflict in the trunk, for 2 and 3 tasks
        self.trunk = nn.Sequential(nn.Linear(3, 5), nn.Tanh())
        self.heads = nn.ModuleList(nn.Linear(5, 1) for _ in range(k))
        self.unused = nn.Parameter(torch.ones(2))
        self.double()

    def losses(self, x: torch.Tensor) -> torch.Tensor:
        h = self.trunk(x)
        # targets pull the heads in different directions, so the trunk's task gradients conflict
        return torch.stack([((head(h) - 3.0 * (-1) ** i * (i + 1)) ** 2).mean() for i, head in enumerate(self.heads)])


X = torch.randn(16, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def _per_task(net: _Net, base: torch.Tensor) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
    """Each task's gradient of w_i L_i: the trunk's flattened, and every head's (plain autograd, one per loss)."""
    trunk, heads = [], []
    for i in range(len(net.heads)):
        loss = base[i] * net.losses(X)[i]
        params = [*net.trunk.parameters(), *net.heads.parameters()]
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        n_trunk = len(list(net.trunk.parameters()))
        trunk.append(torch.cat([g.reshape(-1) for g in grads[:n_trunk]]))
        own = [
            g
            for g, p in zip(grads[n_trunk:], params[n_trunk:], strict=True)
            if any(p is q for q in net.heads[i].parameters())
        ]
        heads.append(own)
    return trunk, heads


@pytest.mark.parametrize("k", [2, 3])
def test_reach_splits_shared_from_own_parameters(k: int) -> None:
    net = _Net(k)
    params = list(net.parameters())
    reach = Reaches()(net.losses(X), params)
    names = [n for n, _ in net.named_parameters()]
    assert [names[j] for j in reach.shared] == ["trunk.0.weight", "trunk.0.bias"]
    assert [names[j] for j in reach.own] == [n for n in names if n.startswith("heads.")]
    assert reach.active == tuple(range(k)) and "unused" not in [names[j] for j in (*reach.shared, *reach.own)]


@pytest.mark.parametrize("k", [2, 3])
def test_jacobian_step_gives_the_combine_the_trunk_rows_and_the_heads_their_own_gradient(k: int) -> None:
    net = _Net(k)
    base = torch.linspace(0.2, 0.7, k, dtype=torch.float64)
    trunk, heads = _per_task(net, base)
    params = [p for p in net.parameters() if p.requires_grad]
    seen = []

    def combine(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        seen.append(matrix.clone())
        w = torch.arange(1.0, k + 1, dtype=torch.float64)
        return w @ matrix, w

    losses = net.losses(X)
    weights = jacobian_step(base * losses, params, Reaches()(losses, params), combine)
    torch.testing.assert_close(seen[0], torch.stack(trunk))  # one row per task: ∇(w_i L_i) of the trunk
    assert weights is not None and torch.equal(weights, torch.arange(1.0, k + 1, dtype=torch.float64))
    got = torch.cat([p.grad.reshape(-1) for p in net.trunk.parameters()])
    torch.testing.assert_close(got, sum((i + 1.0) * g for i, g in enumerate(trunk)))
    for i, head in enumerate(net.heads):  # not combined: the task's own gradient
        for p, want in zip(head.parameters(), heads[i], strict=True):
            torch.testing.assert_close(p.grad, want)
    assert net.unused.grad is None


def _pcgrad_reference(grads: list[torch.Tensor], orders: list[list[int]]) -> torch.Tensor:
    """Yu et al. (2020), Algorithm 1: each g_i projected in turn onto the normal plane of every g_j it
    conflicts with (in the given order), then summed."""
    total = torch.zeros_like(grads[0])
    for i, g in enumerate(grads):
        p = g.clone()
        for j in orders[i]:
            dot = p @ grads[j]
            if dot < 0:
                p = p - dot / (grads[j] @ grads[j]) * grads[j]
        total += p
    return total


@pytest.mark.parametrize("k", [2, 3])
def test_pcgrad_projects_the_shared_parameters_only(k: int) -> None:
    """The trunk steps with PCGrad's projected sum of the trunk's task gradients (heads out of the dot
    products); each head keeps its own gradient, unscaled. With three tasks, every projection order is
    tried against the seeded one the strategy draws."""
    net = _Net(k)
    base = torch.full((k,), 1.0 / k, dtype=torch.float64)
    trunk, heads = _per_task(net, base)
    assert any(trunk[i] @ trunk[j] < 0 for i, j in itertools.combinations(range(k), 2))  # a conflict to remove
    strategy = make(STRATEGIES["pcgrad"].Config(), k, torch.device("cpu"), 5)
    weights = strategy.backward(net.losses(X), base, list(net.parameters()))
    torch.testing.assert_close(weights, base)
    got = torch.cat([p.grad.reshape(-1) for p in net.trunk.parameters()])
    others = [[j for j in range(k) if j != i] for i in range(k)]
    candidates = [
        _pcgrad_reference(trunk, [list(perm) for perm in orders])
        for orders in itertools.product(*(itertools.permutations(o) for o in others))
    ]
    assert any(torch.allclose(got, c, rtol=1e-10, atol=1e-12) for c in candidates)
    assert not torch.allclose(got, sum(trunk), rtol=1e-6)  # it did project
    for i, head in enumerate(net.heads):
        for p, want in zip(head.parameters(), heads[i], strict=True):
            torch.testing.assert_close(p.grad, want)


def test_a_task_whose_loss_is_zero_at_the_first_step_keeps_its_head_and_its_row() -> None:
    """Reach comes from the graph, not from the first step's values: a task without labels in the first
    batch (a masked loss of 0) still gets its head's gradient and its row in the combination later."""
    net = _Net(3)
    params = list(net.parameters())
    strategy = make(STRATEGIES["upgrad"].Config(), 3, torch.device("cpu"), 0)
    for step, mask in enumerate((0.0, 1.0)):
        for p in params:
            p.grad = None
        losses = net.losses(X)
        losses = torch.stack([losses[0], losses[1], losses[2] * mask])
        strategy.backward(losses, torch.full((3,), 1 / 3, dtype=torch.float64), params)
        head = net.heads[2].weight.grad
        assert head is not None and (bool(head.ne(0).any()) == bool(step)), step
    assert strategy.reaches(losses, [p for p in params if p.requires_grad]).active == (0, 1, 2)


def test_compile_with_a_gradient_method_is_refused_in_one_line() -> None:
    from objectives.config import DualLossConfig

    with pytest.raises(ValueError, match=r"compile: weighting upgrad .* use compile: false"):
        DualLossConfig(problem="digits_pair", compile=True, weighting={"type": "upgrad"})


def test_task_names_must_differ() -> None:
    from objectives.names import check_task_names

    with pytest.raises(ValueError, match="names one twice"):
        check_task_names(["x", "x"])
