"""What the gradient methods share: which parameters are shared, and one Jacobian of the task losses.

A gradient method (MGDA, PCGrad, UPGrad, CAGrad…) combines the tasks' gradients of the **shared**
parameters — those every task's loss reaches — into one update. Task-specific parameters (a task's
head) are not part of that combination: each gets its own task's gradient, as in the papers and in
LibMTL/torchjd, where the method sees the shared encoder only. Projecting whole vectors instead (heads
included) mixes each head's gradient into the norms and dot products, so a conflict in the encoder is
only partly removed and the other task's head is rescaled.

:class:`Reaches` finds, once per parameter set, which losses reach which parameters (the alternating
loop's A and B steps differ); :func:`jacobian_step` computes, in one vectorized backward pass
(``torchjd.autojac.jac``, a ``torch.vmap`` over the loss rows), the Jacobian of the weighted losses
``w_i L_i`` with respect to the shared and the task-specific parameters, hands the shared block to an
aggregator and writes every ``.grad``. :class:`Aggregating` is the strategy class the torchjd-based
methods are made of: a method file only builds its aggregator.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from objectives.weighting.base import Weighting, weighted_backward

if TYPE_CHECKING:  # torchjd is imported where it is used: it imports cvxpy when installed (~1 s a process)
    from torchjd.aggregation import Aggregator


@dataclass(frozen=True)
class Reach:
    """Which of a step's losses reach which parameters.

    Attributes:
        active: The losses with a graph that reaches at least one parameter.
        shared: Indices of the parameters every active loss reaches (the shared encoder).
        own: Indices of the parameters some, but not all, active losses reach (task heads).
        index: ``active`` as a device tensor (to select the active losses without a host sync).
        compiled: A ``torch.compile``'d function is in the graph: its backward cannot run inside ``vmap``,
            so the Jacobian is taken one row at a time.
    """

    active: tuple[int, ...]
    shared: tuple[int, ...]
    own: tuple[int, ...]
    index: torch.Tensor
    compiled: bool = False


def _graph_leaves(node: object, wanted: dict[int, int]) -> tuple[set[int], bool]:
    """The indices (``wanted``: id of a parameter → its index) of the parameters the autograd graph below
    ``node`` accumulates into, and whether a compiled (``torch.compile``) function is on the way."""
    found, compiled, seen, stack = set(), False, set(), [node]
    while stack:
        fn = stack.pop()
        if fn is None or id(fn) in seen:
            continue
        seen.add(id(fn))
        variable = getattr(fn, "variable", None)
        if variable is not None and id(variable) in wanted:
            found.add(wanted[id(variable)])
        compiled = compiled or "Compiled" in type(fn).__name__ or "Compiled" in fn.name()  # type: ignore[attr-defined]
        stack.extend(next_fn for next_fn, _ in fn.next_functions)  # type: ignore[attr-defined]
    return found, compiled


class Reaches:
    """Each parameter set's :class:`Reach`, found from the autograd graph once and kept for the strategy's
    life (one trial): a model's structure does not change between steps.

    The losses come stacked (``torch.stack``, as every loop makes them): each stacked loss's own graph is
    walked down to the parameters it accumulates into, so a task whose loss or gradient happens to be zero
    at the first step (a batch without its labels) still counts. Losses not made by one ``stack`` fall back
    to the values of one backward pass per loss (a gradient that is all zeros then counts as not reached).
    Parameters reached by some losses but not by every one are ``own``: they get the sum of their rows,
    i.e. their own tasks' gradients.
    """

    def __init__(self) -> None:
        self._known: dict[tuple[int, ...], Reach] = {}

    def _by_values(self, losses: torch.Tensor, params: Sequence[torch.Tensor]) -> list[set[int]]:
        reach: list[set[int]] = []
        for i in range(len(losses)):
            if not losses[i].requires_grad:
                reach.append(set())
                continue
            grads = torch.autograd.grad(losses[i], params, retain_graph=True, allow_unused=True)
            reach.append({j for j, g in enumerate(grads) if g is not None and bool(g.ne(0).any())})
        return reach

    def __call__(self, losses: torch.Tensor, params: Sequence[torch.Tensor]) -> Reach:
        key = tuple(id(p) for p in params)
        if key not in self._known:
            fn, compiled = losses.grad_fn, False
            if fn is not None and fn.name().startswith("StackBackward") and len(fn.next_functions) == len(losses):
                wanted = {id(p): j for j, p in enumerate(params)}
                walked = [_graph_leaves(next_fn, wanted) for next_fn, _ in fn.next_functions]
                reach = [leaves for leaves, _ in walked]
                compiled = any(flag for _, flag in walked)
            else:
                reach = self._by_values(losses, params)
            active = tuple(i for i, r in enumerate(reach) if r)
            shared = set.intersection(*(reach[i] for i in active)) if len(active) > 1 else set()
            own = set().union(*reach) - shared
            self._known[key] = Reach(
                active=active,
                shared=tuple(sorted(shared)),
                own=tuple(sorted(own)),
                index=torch.tensor(active, dtype=torch.long, device=losses.device),
                compiled=compiled,
            )
        return self._known[key]


def _add_grad(p: torch.Tensor, g: torch.Tensor) -> None:
    p.grad = g.clone() if p.grad is None else p.grad + g


def jacobian_step(
    weighted: torch.Tensor,
    params: Sequence[torch.Tensor],
    reach: Reach,
    combine: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]],
) -> torch.Tensor | None:
    """Fill ``.grad`` of ``params``: the shared ones with ``combine`` of the task rows, the others with
    their own tasks' gradients.

    Args:
        weighted: The step's weighted losses ``w_i L_i``, ``(k,)``, with their graph.
        params: The parameters the step trains (those with ``requires_grad``).
        reach: Which losses reach which of ``params`` (:class:`Reaches`).
        combine: Takes the ``(m, n)`` Jacobian of the active losses w.r.t. the shared parameters
            (flattened, concatenated in ``params`` order) and returns the update vector ``(n,)`` and,
            for a weighted combination, its ``(m,)`` row weights (``None`` otherwise).

    Returns:
        The row weights of the active losses (``None`` when ``combine`` gives none).
    """
    from torchjd.autojac import jac

    rows = weighted.index_select(0, reach.index)
    shared = [params[j] for j in reach.shared]
    own = [params[j] for j in reach.own]
    # 1. One vectorized backward pass: every active loss's gradient in every parameter it may reach.
    jacobians = jac(rows, [*shared, *own], parallel_chunk_size=1 if reach.compiled else None)
    # 2. The shared block, one row per task, goes to the method; heads take the sum of their rows,
    #    i.e. their own task's gradient (the other rows are zeros there).
    matrix = torch.cat([j.reshape(len(reach.active), -1) for j in jacobians[: len(shared)]], dim=1)
    update, row_weights = combine(matrix)
    offset = 0
    for p in shared:
        _add_grad(p, update[offset : offset + p.numel()].view_as(p))
        offset += p.numel()
    for p, j in zip(own, jacobians[len(shared) :], strict=True):
        _add_grad(p, j.sum(dim=0))
    return row_weights


class Aggregating(Weighting):
    """A gradient method: the update of the shared parameters is a torchjd ``Aggregator`` of the rows
    ``∇(w_i L_i)`` (the static weights, after the weight schedule, scale each task's row: they are the
    searched preference every method applies), task heads get their own task's gradient.

    The effective weights (logged as ``weight_<task>``) are ``w_i`` times the aggregator's weight of row
    ``i`` when it combines the rows linearly (MGDA, UPGrad, CAGrad…), else the static weights (GradDrop).
    A step with fewer than two active losses, or no shared parameter, is the plain weighted sum.
    """

    weights_before_step = False  # the update depends on the step's gradients
    own_backward = True

    def __init__(self, aggregator: Aggregator) -> None:
        self.aggregator = aggregator
        self.reaches = Reaches()

    def weights(self, losses: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        return base

    def combine(self, matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The update vector and the row weights (see :func:`jacobian_step`)."""
        from torchjd.aggregation import WeightedAggregator

        if isinstance(self.aggregator, WeightedAggregator):
            row_weights = self.aggregator.weighting(matrix)
            return row_weights @ matrix, row_weights
        return self.aggregator(matrix), None

    def backward(self, losses: torch.Tensor, base: torch.Tensor, params: Sequence[torch.Tensor]) -> torch.Tensor:
        params = [p for p in params if p.requires_grad]
        reach = self.reaches(losses, params) if losses.requires_grad else None
        if reach is None or len(reach.active) < 2 or not reach.shared:
            return weighted_backward(base, losses)
        row_weights = jacobian_step(base * losses, params, reach, self.combine)
        if row_weights is None:
            return base.detach()
        factors = torch.ones_like(base).index_copy(0, reach.index, row_weights.to(base.dtype))
        return (base * factors).detach()


class PerReach(Aggregating):
    """A stateful torchjd aggregator (GradVac's targets, Nash-MTL's α, ExcessMTL's risks) kept per parameter
    set (one :class:`Reach`): the alternating loop's A and B steps each keep their own state, which torchjd
    would otherwise reset whenever the number of rows changes. ``make(m)`` builds one for ``m`` active
    losses; none is ever reset within a trial."""

    def __init__(self, make: Callable[[int], Aggregator], n_losses: int) -> None:
        super().__init__(make(n_losses))
        self.make = make
        self.by_reach: dict[int, Aggregator] = {}

    def backward(self, losses: torch.Tensor, base: torch.Tensor, params: Sequence[torch.Tensor]) -> torch.Tensor:
        if losses.requires_grad:  # the aggregator of this parameter set (its Reach is kept for the trial)
            reach = self.reaches(losses, [p for p in params if p.requires_grad])
            if id(reach) not in self.by_reach:
                self.by_reach[id(reach)] = self.make(len(reach.active))
            self.aggregator = self.by_reach[id(reach)]
        return super().backward(losses, base, params)


@contextmanager
def seeded_rng(generator: torch.Generator, device: torch.device) -> Iterator[None]:
    """Run the block with the global generators of the CPU and of ``device`` seeded from ``generator``
    (one draw of it), restoring their states afterwards: code that draws from the global RNG (torchjd's
    ``torch.rand``, ``torch.randperm``) becomes deterministic per ``generator`` and leaves the global RNG
    untouched."""
    seed = int(torch.randint(0, 2**62, (), generator=generator))  # a CPU generator: no device sync
    if device.type == "cpu":
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            yield
        return
    module = torch.get_device_module(device.type)
    index = device.index if device.index is not None else module.current_device()
    with torch.random.fork_rng(devices=[index], device_type=device.type):
        torch.default_generator.manual_seed(seed)
        if device.type == "cuda":
            torch.cuda.default_generators[index].manual_seed(seed)
        else:
            module.manual_seed(seed)
        yield
