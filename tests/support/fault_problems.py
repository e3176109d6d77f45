"""Problems that fail on purpose, for fault tests (named as ``tests.support.fault_problems:<function>``)."""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from functools import partial

import torch
from torch import nn

from objectives.problems import CoupledProblem, Problem, Task


def _task(g: torch.Generator, n: int = 64) -> Task:
    x = torch.randn(n, 4, generator=g)
    return Task(
        train=(x, x.sum(1, keepdim=True)), val=(x[:16], x[:16].sum(1, keepdim=True)), loss=nn.functional.mse_loss
    )


class _OutOfMemory(nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")


def oom(seed: int, fail: bool = True) -> Problem:
    """A linear problem whose model runs out of (simulated) CUDA memory when ``fail``."""
    g = torch.Generator().manual_seed(seed)
    model = (lambda: _OutOfMemory(4, 1)) if fail else (lambda: nn.Linear(4, 1))
    return Problem(make_model=model, a=_task(g), b=_task(g))


class _Explodes(nn.Linear):
    """Fine for 40 forward passes, then infinite outputs (a divergence in the middle of an epoch)."""

    calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        type(self).calls += 1
        out = super().forward(x)
        return out * float("inf") if type(self).calls > 40 else out


def explodes(seed: int) -> Problem:
    g = torch.Generator().manual_seed(seed)
    _Explodes.calls = 0
    return Problem(make_model=lambda: _Explodes(4, 1), a=_task(g, 2048), b=_task(g, 2048))


class _Crashes(nn.Linear):
    """Kills its process at a trial's first forward pass (a segfault or an OOM kill, as a worker sees it).
    The first model a process builds is the preflight's one-batch check, which runs normally."""

    built = 0

    def __init__(self, *args: int) -> None:
        super().__init__(*args)
        type(self).built += 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if type(self).built > 1:
            os._exit(3)
        return super().forward(x)


def crashes(seed: int) -> Problem:
    g = torch.Generator().manual_seed(seed)
    return Problem(make_model=lambda: _Crashes(4, 1), a=_task(g), b=_task(g))


def crashes_in_workers(seed: int) -> Problem:
    """:func:`crashes`, in the processes ``--workers`` starts only (the coordinator trains normally)."""
    if os.environ.get("SWEEP_WORKER_GATE"):
        return crashes(seed)
    g = torch.Generator().manual_seed(seed)
    return Problem(make_model=lambda: nn.Linear(4, 1), a=_task(g), b=_task(g))


def exits(seed: int, code: int | str | None = 0, exit: bool = True) -> Problem:
    """A builder that calls ``sys.exit(code)`` when ``exit`` instead of returning a problem."""
    if exit:
        sys.exit(code)
    g = torch.Generator().manual_seed(seed)
    return Problem(make_model=lambda: nn.Linear(4, 1), a=_task(g), b=_task(g))


def exits_in_forward(seed: int) -> Problem:
    """A problem whose model calls ``sys.exit(0)`` in its forward pass (the preflight's batch runs it)."""
    g = torch.Generator().manual_seed(seed)
    return Problem(make_model=lambda: _ExitsInForward(4, 1), a=_task(g), b=_task(g))


class _ExitsInForward(nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sys.exit(0)


def empty(seed: int, which: str = "a_train") -> Problem:
    """A problem whose ``which`` split (``a_train``, ``b_val``...) has no samples: a Dataset of length 0."""
    g = torch.Generator().manual_seed(seed)
    tasks = {"a": _task(g), "b": _task(g)}
    name, split = which.split("_")
    tasks[name] = replace(tasks[name], **{split: torch.utils.data.TensorDataset(torch.zeros(0, 4), torch.zeros(0, 1))})
    return Problem(make_model=lambda: nn.Linear(4, 1), a=tasks["a"], b=tasks["b"])


class _Stream(torch.utils.data.IterableDataset):
    def __iter__(self):  # type: ignore[no-untyped-def]
        g = torch.Generator().manual_seed(0)
        while True:
            x = torch.randn(4, generator=g)
            yield x, x.sum(0, keepdim=True)


def stream_without_length(seed: int) -> Problem:
    """Task a's training data is an endless stream and nobody says how many steps an epoch has."""
    g = torch.Generator().manual_seed(seed)
    a = replace(_task(g), train=_Stream())
    return Problem(make_model=lambda: nn.Linear(4, 1), a=a, b=_task(g))


class _Noisy(torch.utils.data.Dataset):
    """A map-style Dataset whose items carry fresh noise from torch's, numpy's and python's RNGs (as data
    augmentation does), so only seeded loaders and workers make a run replay."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        import random

        import numpy as np

        noise = 0.01 * (torch.randn(4) + float(np.random.randn()) + random.random())
        return self.x[i] + noise, self.x[i].sum(0, keepdim=True)


def augmented(seed: int) -> Problem:
    """Both tasks' training splits are Datasets with random augmentation (the DataLoader path)."""
    g = torch.Generator().manual_seed(seed)
    a, b = _task(g, 96), _task(g, 160)
    a, b = replace(a, train=_Noisy(a.train[0])), replace(b, train=_Noisy(b.train[0]))
    return Problem(make_model=lambda: nn.Linear(4, 1), a=a, b=b)


# --- problems the preflight refuses (tests/test_preflight.py), and two it must let through ----------


def _regression(g: torch.Generator, n: int = 64, column: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(n, 4, generator=g)
    return x, x.sum(1, keepdim=column)


def _tasks(seed: int, column: bool = True, **task: object) -> tuple[Task, Task]:
    """Task a (changed by ``task``: loss, metrics...) and a plain task b, both regression on 4 inputs."""
    g = torch.Generator().manual_seed(seed)
    (xa, ya), (xv, yv) = _regression(g, column=column), _regression(g, 16, column=column)
    a = replace(_task(g), train=(xa, ya), val=(xv, yv), **task)
    return a, _task(g)


def loss_none(seed: int) -> Problem:
    """Task a's loss keeps one value per sample (``reduction='none'``): no batch mean."""
    a, b = _tasks(seed, loss=partial(nn.functional.mse_loss, reduction="none"))
    return Problem(make_model=lambda: nn.Linear(4, 1), a=a, b=b)


def column_against_vector(seed: int, loss: str = "mse") -> Problem:
    """Predictions ``(N, 1)`` against targets ``(N,)``: ``mse_loss`` (``loss: mse``) or a hand-written
    squared error (``loss: manual``) broadcasts them to ``(N, N)`` and trains on a wrong value."""
    fn = nn.functional.mse_loss if loss == "mse" else _manual_mse
    a, b = _tasks(seed, column=False, loss=fn)
    return Problem(make_model=lambda: nn.Linear(4, 1), a=a, b=b)


def _manual_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return ((pred - target) ** 2).mean()


def _squeezing_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return ((pred.squeeze(-1) - target) ** 2).mean()


def squeezes_itself(seed: int) -> Problem:
    """Predictions ``(N, 1)`` against targets ``(N,)`` with a loss that squeezes them itself: correct."""
    a, b = _tasks(seed, column=False, loss=_squeezing_mse, metrics={"mse": _squeezing_mse})
    return Problem(make_model=lambda: nn.Linear(4, 1), a=a, b=b)


def vector_metric(seed: int) -> Problem:
    """Task b's metric returns one value per sample, not a batch mean."""
    a, b = _tasks(seed)
    b = replace(b, metrics={"abs_err": lambda pred, target: (pred - target).abs().squeeze(-1)})
    return Problem(make_model=lambda: nn.Linear(4, 1), a=a, b=b)


def _nan_linear() -> nn.Module:
    model = nn.Linear(4, 1)
    with torch.no_grad():
        model.weight.fill_(float("nan"))
    return model


def nan_at_init(seed: int) -> Problem:
    """A model initialised with NaN weights: every loss is NaN from the first batch."""
    a, b = _tasks(seed)
    return Problem(make_model=_nan_linear, a=a, b=b)


def returns_none(seed: int) -> None:
    """Forgets to return the problem."""
    _tasks(seed)


def returns_dict(seed: int) -> dict[str, Task]:
    """Returns the tasks in a dict instead of a Problem."""
    a, b = _tasks(seed)
    return {"a": a, "b": b}


def raises(seed: int) -> Problem:
    """Fails while building, with a message of several lines."""
    raise ValueError("the data folder /nowhere is missing\n  (a second line that stays out of the error)")


def classification(seed: int, classes: int = 3) -> Problem:
    """Logits ``(N, classes)`` against class indices ``(N,)`` with cross_entropy and accuracy: correct,
    also when ``classes`` equals the batch size (the shapes then broadcast, to the logits' shape)."""
    g = torch.Generator().manual_seed(seed)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(n, 4, generator=g)
        return x, torch.randint(0, classes, (n,), generator=g)

    def accuracy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (logits.argmax(dim=-1) == target).float().mean()

    task = Task(train=split(64), val=split(16), loss=nn.functional.cross_entropy, metrics={"acc": accuracy})
    return Problem(make_model=lambda: nn.Linear(4, classes), a=task, b=replace(task, train=split(64)))


def coupled(seed: int, broken: str = "") -> CoupledProblem:
    """A small coupled problem (the alternating loop): A maps 4 inputs to a 2-number code, B classifies
    from it. ``broken: loss_b`` keeps B's loss per sample (``reduction='none'``); ``consistency`` makes
    the consistency term a vector."""
    g = torch.Generator().manual_seed(seed)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = torch.randn(n, 4, generator=g)
        return x, (x[:, 0] > 0).long(), x[:, :2]

    loss_b = (
        partial(nn.functional.cross_entropy, reduction="none") if broken == "loss_b" else nn.functional.cross_entropy
    )
    term = (lambda z, y_hat, y, t_a, model_b: (z - t_a).pow(2).sum(-1)) if broken == "consistency" else None
    return CoupledProblem(
        make_model_a=lambda: nn.Linear(4, 2),
        make_model_b=lambda: nn.Linear(2, 2),
        train=split(64),
        val=split(16),
        loss_a=nn.functional.mse_loss,
        loss_b=loss_b,
        consistency=term,
    )


class _FailsInTraining(nn.Linear):
    """Each model raises a two-line error at its 11th forward pass: in a trial's second epoch, after the
    preflight's one batch (a model of its own, a few passes) went through."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls = getattr(self, "calls", 0) + 1
        if self.calls > 10:
            raise ValueError("the layer went wrong\nsecond line: the detail that matters")
        return super().forward(x)


def fails_in_training(seed: int) -> Problem:
    """Every trial fails in its first epoch with a multi-line message (after the preflight passed)."""
    g = torch.Generator().manual_seed(seed)
    return Problem(make_model=lambda: _FailsInTraining(4, 1), a=_task(g), b=_task(g))


# --- memory, hangs (tests/test_trial_limits.py) ---------------------------------------------------------


class _Ledger:
    """A process's pretend memory: the bytes of the tensors :class:`_Hog` models allocated and that are still
    alive (each is counted down when it is freed), against a budget. Over it: ``MemoryError``, as Python
    raises when the host runs out (no message), so a trial's memory that outlives the trial makes every
    later trial run out too."""

    live = 0
    peak = 0

    @classmethod
    def allocate(cls, mb: int, budget_mb: int) -> torch.Tensor:
        nbytes = mb * 2**20
        if cls.live + nbytes > budget_mb * 2**20:
            raise MemoryError()
        import weakref

        tensor = torch.zeros(nbytes // 4)
        cls.live += nbytes
        cls.peak = max(cls.peak, cls.live)
        weakref.finalize(tensor, cls._free, nbytes)
        return tensor

    @classmethod
    def _free(cls, nbytes: int) -> None:
        cls.live -= nbytes


class _Hog(nn.Linear):
    """Holds ``chunk_mb`` of memory from its first forward pass; a greedy one takes one more chunk at every
    pass, kept by the model, until the budget is exhausted (a trial whose batch or model is too big). The
    greedy one is the second model that runs (the first: the preflight's batch check), the first trial's."""

    ran = 0

    def __init__(self, chunk_mb: int, budget_mb: int) -> None:
        super().__init__(4, 1)
        self.chunk_mb, self.budget_mb, self.greedy = chunk_mb, budget_mb, False
        self.held: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.held:
            type(self).ran += 1
            self.greedy = type(self).ran == 2
        if self.greedy or not self.held:
            self.held.append(_Ledger.allocate(self.chunk_mb, self.budget_mb))
        return super().forward(x)


def exhausts_memory(seed: int, chunk_mb: int = 4, budget_mb: int = 32) -> Problem:
    """The first trial a process runs exhausts its (pretend) memory; the others need one chunk of it."""
    g = torch.Generator().manual_seed(seed)
    _Hog.ran = 0
    return Problem(make_model=lambda: _Hog(chunk_mb, budget_mb), a=_task(g), b=_task(g))


class _Hangs(nn.Linear):
    """The first model that trains in a process (the second that runs: the first is the preflight's batch
    check) blocks for ever in its ``at_call``-th forward pass: ``how: python`` waits on an Event that no one
    sets (a deadlock in user code: a signal interrupts it); ``how: c`` locks a mutex it holds already, in C
    with the GIL released, where no signal gets it out (a stuck driver call). ``env``: hang only in a process
    whose environment has that variable (so another process can take the trial over), whose value names a
    file it creates as it starts hanging (so a test knows when)."""

    ran = 0

    def __init__(self, at_call: int, how: str, env: str) -> None:
        super().__init__(4, 1)
        self.at_call, self.how, self.env, self.calls, self.hangs = at_call, how, env, 0, False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.calls == 0:
            type(self).ran += 1
            self.hangs = type(self).ran == 2 and (not self.env or self.env in os.environ)
        self.calls += 1
        if self.hangs and self.calls == self.at_call:
            if self.env:
                open(os.environ[self.env], "a").close()  # a file the test waits for
            _hang(self.how)
        return super().forward(x)


def _hang(how: str) -> None:
    import ctypes
    import threading

    if how == "python":
        threading.Event().wait()
    mutex = ctypes.create_string_buffer(64)  # zeroed: a default (non-recursive) glibc mutex, unlocked
    libc = ctypes.CDLL(None)  # CDLL calls release the GIL
    libc.pthread_mutex_lock(mutex)
    libc.pthread_mutex_lock(mutex)  # never returns


def hangs(seed: int, at_call: int = 9, how: str = "python", env: str = "") -> Problem:
    """The first trial a process trains hangs at its ``at_call``-th forward pass (9: in its second epoch,
    which makes 6 passes an epoch: 2 steps of tasks a and b, then one validation pass of each)."""
    g = torch.Generator().manual_seed(seed)
    _Hangs.ran = 0
    return Problem(make_model=lambda: _Hangs(at_call, how, env), a=_task(g), b=_task(g))
