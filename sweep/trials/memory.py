"""A trial that runs out of memory: its reason says so, its memory goes back before the next trial starts.

A failed trial's exception holds its traceback, whose frames hold the trial's model, optimizer and
activations, and Optuna keeps that exception in a reference cycle that only Python's cyclic collector frees,
at a moment of its choosing — after the next trial has started allocating, which then runs out too. So a
failed trial's traceback is let go at once (:func:`release`), and after an out-of-memory failure the
collector runs and CUDA's cached blocks are returned before the next trial. :class:`MemoryLog` keeps what a process's
trials did with memory for one line at the end of the study.
"""

from __future__ import annotations

import contextlib
import gc
import traceback

import torch

from objectives.helpers import is_out_of_memory
from objectives.numerics import peak_memory_mb
from sweep.core.errors import reason
from sweep.storage.storage import FINISHED

# Out-of-memory errors that do not say "out of memory": torch's CPU allocator's (a RuntimeError).
_WORDS = ("not enough memory", "can't allocate memory", "cannot allocate memory")


def out_of_memory(e: BaseException) -> bool:
    """Whether ``e`` is an out-of-memory error: CUDA's, the host's (Python's ``MemoryError``, usually without
    a message) or torch's CPU allocator's."""
    return is_out_of_memory(e) or isinstance(e, MemoryError) or any(w in str(e).lower() for w in _WORDS)


def peak(device: str | None) -> str:
    """The trial's peak memory, in words: on CUDA the bytes allocated since the trial started, else the
    process's peak resident set (host memory, every trial so far)."""
    dev = torch.device(device or "cpu")
    if dev.type == "cuda":
        return f"peak {peak_memory_mb(dev):.0f} MiB allocated on {dev}"
    return f"process peak {peak_memory_mb(dev):.0f} MiB resident"


def oom_reason(e: BaseException, device: str | None) -> str:
    """The fail reason of an out-of-memory trial: the error, said to be one, and the peak."""
    text = reason(e)
    head = text if "out of memory" in text.lower() else f"out of memory: {text}"
    return f"{head} ({peak(device)})"


def details(e: BaseException) -> str:
    """The traceback of ``e`` (being handled) as text; the same text for every trial of a vectorized group
    that fails with one error, also after :func:`release` dropped the traceback."""
    return getattr(e, "sweep_traceback", None) or traceback.format_exc()


def release(e: BaseException, oom: bool) -> None:
    """Let go of what a failed trial's error holds: the frames of its traceback (and of its causes'),
    whose locals and closures hold the trial's model, optimizer and batches; after an out-of-memory error
    also collect reference cycles and return CUDA's cached blocks. Optuna keeps the error in a reference
    cycle (its frame's local ``func_err``), which only Python's cyclic collector frees, at a moment of its
    choosing — after the next trial has started allocating, which then runs out of memory too."""
    if e.__traceback__ is not None:
        with contextlib.suppress(AttributeError):  # the text, for the group's other trials (details())
            e.sweep_traceback = details(e)  # type: ignore[attr-defined]
    seen: set[int] = set()
    error: BaseException | None = e
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        traceback.clear_frames(error.__traceback__)  # the frame handling ``e`` is executing: left as is
        error.__traceback__ = None
        error = error.__cause__ or error.__context__
    if oom:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


class MemoryLog:
    """The trials of this process that ran out of memory, their peaks, and how many trials finished after
    the first of them: the study's last word on memory (:meth:`summary`)."""

    def __init__(self) -> None:
        self.trials: list[int] = []
        self.peaks: list[str] = []
        self.finished_after = 0

    def add(self, number: int, device: str | None) -> None:
        """Trial ``number`` ran out of memory."""
        self.trials.append(number)
        self.peaks.append(peak(device))

    def ended(self, state: object) -> None:
        """A trial of this process ended with ``state``."""
        if self.trials and state in FINISHED:
            self.finished_after += 1

    def summary(self) -> str:
        """One line (empty when no trial ran out of memory)."""
        if not self.trials:
            return ""
        which = f"trial {self.trials[0]}" if len(self.trials) == 1 else f"trials {ranges(self.trials)}"
        after = "it" if len(self.trials) == 1 else "the first"
        return (
            f"{which} failed: out of memory ({self.peaks[-1]}); {self.finished_after} trial(s) finished after {after}"
        )


def ranges(numbers: list[int]) -> str:
    """``0..2, 5, 7..8`` for 0, 1, 2, 5, 7, 8."""
    runs: list[list[int]] = []
    for n in sorted(set(numbers)):
        if runs and runs[-1][1] == n - 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return ", ".join(str(a) if a == b else f"{a}..{b}" for a, b in runs)
