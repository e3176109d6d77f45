"""One batch through a built problem before a study starts: what only running it can tell.

:func:`check_batch` takes the trial's first batch of each training split (shuffled with the trial's
seed, as the loop draws it: :mod:`objectives.preflight_batches`) and the first batch of each validation
split, on the study's device, builds the model(s) and calls them, the losses and the metrics as the
loops do, then runs one backward pass of the summed losses. It raises :class:`PreflightError`, one line
naming the task (``task a's loss``, ``B's metric 'acc'``, ``the consistency term``...) and what is
wrong, for:

- a loss that is not a 0-d tensor (``reduction='none'``), is NaN or infinite, or has no gradient;
- a metric that is not a 0-d tensor;
- a cross-entropy/NLL loss whose labels are no classes of the output it gets (a 5-class task on a
  3-logit head): labels outside ``[0, C)``, over all of a tensor split's labels or a few shuffled
  batches of a Dataset (:mod:`objectives.preflight_batches`), checked before the loss runs;
- a prediction and a target whose shapes broadcast into a wrong loss that trains without error —
  **the shape rule**: a loss or metric is flagged when torch itself warns that the target size
  differs from the input size (``mse_loss``, ``l1_loss``, ``smooth_l1_loss``, ``huber_loss``...),
  or when the prediction and the target hold the same number of values in shapes that broadcast to
  a shape larger than either (``(N, 1)`` against ``(N,)`` gives ``(N, N)``: every prediction
  compared with every target) *and* the function's value changes when the prediction is reshaped to
  the target's shape. A function that squeezes or reshapes by itself gives the same value and passes;
  a classification pair (``(N, C)`` logits, ``(N,)`` class indices) differs in size and always passes.
  (A first batch whose targets are all equal hides a hand-written broadcast: it gives the same value.)
- a model factory that raises or returns no ``nn.Module``, a model without parameters, a backward
  pass that reaches none of a model's parameters, a batch that is not ``(inputs, target[, t_a])``,
  dict inputs whose keys ``forward`` does not take (:func:`objectives.data.call` names them), and
  anything the user's code raises on the way (its exception's first line).

A CUDA out-of-memory error is not a verdict on the problem (other batch sizes or models in the
search may fit): it propagates as it is, for the caller to decide. Everything runs on its own RNG
state (torch, numpy, ``random`` are restored after), under the config's precision, without
``torch.compile``; warnings the user's code raises here are not shown (the trials show them).
"""

from __future__ import annotations

import contextlib
import random
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import torch

from objectives.data import call
from objectives.helpers import derive_seed, seed_all
from objectives.numerics import autocast
from objectives.preflight_batches import PreflightError, check_classes, draw, run
from objectives.problems.base import CoupledProblem, Problem, Task

__all__ = ["PreflightError", "check_batch"]

# What torch's elementwise losses warn when they are about to broadcast a target against a prediction.
_TORCH_BROADCAST_WARNING = "that is different to the input size"


@contextlib.contextmanager
def _own_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Seeded as a trial is, and every global RNG restored after: the check changes no later draw."""
    py, np_state = random.getstate(), np.random.get_state()
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        try:
            seed_all(seed)
            yield
        finally:
            random.setstate(py)
            np.random.set_state(np_state)


def _model(what: str, factory: Callable[[], Any], device: torch.device) -> torch.nn.Module:
    model = run(f"{what}()", factory)
    if not isinstance(model, torch.nn.Module):
        raise PreflightError(f"{what}() returned {type(model).__name__}, not a torch.nn.Module")
    model = run(f"moving {what}()'s model to {device}", lambda: model.to(device))
    if not any(True for _ in model.parameters()):
        raise PreflightError(f"{what}()'s model has no parameters: there is nothing to train")
    return model


def _shape(value: Any) -> str:
    return str(tuple(value.shape)) if isinstance(value, torch.Tensor) else type(value).__name__


def _broadcast(
    what: str, fn: Callable[..., Any], pred: Any, target: Any, value: torch.Tensor, torch_warned: bool
) -> None:
    """Raise when ``fn(pred, target)`` compared values that do not belong together (the shape rule above)."""
    if not isinstance(pred, torch.Tensor) or not isinstance(target, torch.Tensor) or pred.shape == target.shape:
        return
    try:
        joint = torch.broadcast_shapes(pred.shape, target.shape)
    except RuntimeError:
        joint = None
    wrong = torch_warned
    if not wrong and joint is not None and joint not in (pred.shape, target.shape) and pred.numel() == target.numel():
        try:
            with torch.no_grad():
                matched = fn(pred.reshape(target.shape), target)
            wrong = not torch.allclose(value.detach().float(), matched.detach().float(), rtol=1e-4, atol=1e-6)
        except Exception:
            wrong = False  # the function does not take equal shapes: it expects the pair it got
    if not wrong:
        return
    if pred.shape == (*target.shape, 1):
        fix = " (prediction.squeeze(-1) or target.unsqueeze(-1))"
    elif target.shape == (*pred.shape, 1):
        fix = " (target.squeeze(-1) or prediction.unsqueeze(-1))"
    else:
        fix = ""
    into = f"broadcast to {tuple(joint)}" if joint is not None else "differ"
    raise PreflightError(
        f"{what} compares prediction {tuple(pred.shape)} with target {tuple(target.shape)}: the shapes {into}, "
        f"a wrong value that trains without error; give them the same shape{fix}"
    )


def _value(what: str, fn: Callable[..., Any], pred: Any, target: Any, *, loss: bool) -> torch.Tensor:
    """``fn(pred, target)`` checked: a 0-d tensor; for a loss also finite and with a gradient (when one
    is being recorded); no silent broadcast of the pair."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = run(what, lambda: fn(pred, target))
    torch_warned = any(_TORCH_BROADCAST_WARNING in str(w.message) for w in caught)
    mean = "a batch mean is needed (reduction='none'?)" if loss else "a batch mean is needed (.mean()?)"
    if not isinstance(value, torch.Tensor):
        raise PreflightError(f"{what} returns a {type(value).__name__}, not a 0-d tensor: {mean}")
    if value.ndim != 0:
        raise PreflightError(f"{what} returns shape {tuple(value.shape)}, not a 0-d tensor: {mean}")
    _broadcast(what, fn, pred, target, value, torch_warned)
    if loss:
        _finite(what, value)
    return value


def _finite(what: str, value: torch.Tensor) -> None:
    number = float(value.detach().float())
    if number != number or number in (float("inf"), float("-inf")):
        raise PreflightError(f"{what} is {number} on the first batch, before any training")
    if torch.is_grad_enabled() and not value.requires_grad:
        raise PreflightError(f"{what} has no gradient: it does not depend on the model's output (detached?)")


def _backward(losses: Mapping[str, torch.Tensor], models: Mapping[str, torch.nn.Module]) -> None:
    """One backward pass of the summed losses; each model must get a gradient on some parameter."""
    run("the backward pass of the summed losses", lambda: torch.stack(list(losses.values())).float().sum().backward())
    for name, model in models.items():
        if all(p.grad is None for p in model.parameters()):
            raise PreflightError(
                f"the backward pass of the losses reaches none of {name}'s parameters "
                "(its output detached, or computed under torch.no_grad?)"
            )


def _output(model: torch.nn.Module, task: Task, inputs: Any, what: str) -> Any:
    """The model on a batch's inputs, and this task's output of it (``task.head``), as the loop takes it."""
    out = run(what, lambda: call(model, inputs))
    if task.head is None:
        return out
    return run(f"taking output {task.head} (Task.head) of the model's output {_shape(out)}", lambda: out[task.head])


def _check_dual(cfg: Any, problem: Problem, device: torch.device) -> None:
    tasks = problem.in_order(cfg.tasks)
    sizes = {name: cfg.batch_size_of(name) for name in tasks}
    # The trial's draws (objectives.dual_loss): one generator for the tensors (task a's first), and each
    # Dataset its loader's seed.
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    train = {
        n: draw(t.train, sizes[n], t.collate_fn, device, f"task {n}'s training data", 2,
                (generator, derive_seed(cfg.seed, "loader", n)))
        for n, t in tasks.items()
    }  # fmt: skip
    val = {
        n: draw(t.val, min(cfg.eval_batch_size, sizes[n]), t.collate_fn, device, f"task {n}'s validation data", 2)
        for n, t in tasks.items()
    }
    model = _model("make_model", problem.make_model, device)
    model.train()
    losses: dict[str, torch.Tensor] = {}
    with autocast(cfg.precision, device):
        for name, task in tasks.items():
            batch = train[name][0]
            out = _output(model, task, batch[0], f"the model on task {name}'s training batch")
            labels = [train[name][1][1], val[name][1][1]]
            check_classes(f"task {name}", task.loss, out, labels, ", or check which output it reads (Task.head)")
            losses[name] = _value(f"task {name}'s loss", task.loss, out, batch[1], loss=True)
    _backward(losses, {"the model": model})
    model.eval()
    with torch.no_grad(), autocast(cfg.precision, device):
        for name, task in tasks.items():
            batch = val[name][0]
            out = _output(model, task, batch[0], f"the model on task {name}'s validation batch")
            _value(f"task {name}'s loss on validation data", task.loss, out, batch[1], loss=True)
            for key, fn in task.metrics.items():
                _value(f"task {name}'s metric {key!r}", fn, out, batch[1], loss=False)


def _coupled_terms(
    problem: CoupledProblem,
    model_a: torch.nn.Module,
    model_b: torch.nn.Module,
    batch: tuple[Any, ...],
    loss_terms: tuple[str, ...],
    labels: dict[int, Any],
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """A's and B's outputs on ``batch`` and the config's ``loss_terms``; ``labels`` by position (1: y,
    2: t_a) are the targets whose classes are checked first where a loss is cross-entropy or NLL."""
    x, y, t = batch[:3]
    z = run("model A on a batch's inputs", lambda: call(model_a, x))
    out = run(f"model B on model A's output {_shape(z)}", lambda: model_b(z))
    check_classes("A", problem.loss_a, z, [labels.get(2)])
    check_classes("B", problem.loss_b, out, [labels.get(1)])
    terms = {
        "a": _value("A's loss", problem.loss_a, z, t, loss=True),
        "b": _value("B's loss", problem.loss_b, out, y, loss=True),
    }
    if "consistency" in loss_terms:
        what = "the consistency term" if problem.consistency is not None else "the consistency term (B on t_a)"
        term = run(what, lambda: problem.consistency_term(z, out, y, t, model_b, x=x, model_a=model_a))
        if not isinstance(term, torch.Tensor) or term.ndim != 0:
            raise PreflightError(
                f"the consistency term returns {_shape(term)}, not a 0-d tensor: a batch mean is needed"
            )
        _finite("the consistency term", term)
        terms["consistency"] = term
    return z, out, terms


def _check_coupled(cfg: Any, problem: CoupledProblem, device: torch.device) -> None:
    # The trial's draw (objectives.alternating): its generator for tensors, its loader's seed for a Dataset.
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    shuffle = (generator, derive_seed(cfg.seed, "loader"))
    train, train_labels = draw(
        problem.train, cfg.batch_size, problem.collate_fn, device, "the training data", 3, shuffle
    )
    size = min(cfg.eval_batch_size, cfg.batch_size)
    val, val_labels = draw(problem.val, size, problem.collate_fn, device, "the validation data", 3)
    model_a = _model("make_model_a", problem.make_model_a, device)
    model_b = _model("make_model_b", problem.make_model_b, device)
    with autocast(cfg.precision, device):
        _, _, terms = _coupled_terms(problem, model_a, model_b, train, cfg.loss_terms, train_labels)
    _backward(terms, {"model A": model_a, "model B": model_b})
    model_a.eval()
    model_b.eval()
    with torch.no_grad(), autocast(cfg.precision, device):
        z, out, _ = _coupled_terms(problem, model_a, model_b, val, cfg.loss_terms, val_labels)
        for key, fn in problem.metrics_a.items():
            _value(f"A's metric {key!r}", fn, z, val[2], loss=False)
        for key, fn in problem.metrics.items():
            _value(f"B's metric {key!r}", fn, out, val[1], loss=False)


def check_batch(cfg: Any, problem: Problem | CoupledProblem) -> None:
    """Push one batch of each training split through the model(s), the losses and one backward pass,
    and one validation batch through the losses and the metrics, on ``cfg.device``, as the loops do.

    Args:
        cfg: The loop's resolved config (``device``, ``seed``, ``precision``, batch sizes, ``weights``).
        problem: The built problem (on any device: its tensors are moved here).

    Raises:
        PreflightError: one line naming the task or model and what is wrong (see the module docstring).
        torch.cuda.OutOfMemoryError: (or another out-of-memory error) left to the caller.
    """
    device = torch.device(cfg.device)
    with _own_rng(cfg.seed, device), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if isinstance(problem, CoupledProblem):
            _check_coupled(cfg, problem, device)
        else:
            _check_dual(cfg, problem, device)
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the check's models and batches are gone: give their blocks back
