"""A trial that runs out of memory (:mod:`sweep.trials.memory`): which errors are out-of-memory ones, the
reason a trial fails with, the failed trial's memory let go at once, and the study's last line on memory.

Synthetic errors only; trials that really run out of memory are in tests/test_faults.py."""

from __future__ import annotations

import gc
import re
import weakref

import optuna
import pytest
import torch

from sweep.trials import memory
from sweep.trials.memory import MemoryLog, details, oom_reason, out_of_memory, peak, ranges, release

State = optuna.trial.TrialState
CPU_PEAK = r"process peak \d+ MiB resident"


@pytest.mark.parametrize(
    "error",
    [
        torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
        RuntimeError("CUDA error: out of memory"),  # a plain RuntimeError that says so
        MemoryError(),  # the host's, usually without a message
        MemoryError("Unable to allocate 8.00 GiB for an array"),
        RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: not enough memory: you tried"),
        RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8589934592 bytes"),
        OSError("Cannot Allocate Memory"),  # any case
    ],
    ids=["cuda", "says-so", "bare MemoryError", "MemoryError", "cpu allocator", "can't allocate", "any case"],
)
def test_out_of_memory_errors(error: BaseException) -> None:
    assert out_of_memory(error)


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError("mat1 and mat2 shapes cannot be multiplied (32x4 and 8x1)"),
        ValueError("memory"),
        IndexError("index out of range in self"),
        KeyboardInterrupt(),
        RuntimeError(""),
    ],
)
def test_other_errors_are_not_out_of_memory(error: BaseException) -> None:
    assert not out_of_memory(error)


def test_peak_on_the_host_is_the_process_s_peak_resident_set() -> None:
    assert re.fullmatch(CPU_PEAK, peak(None)) and re.fullmatch(CPU_PEAK, peak("cpu"))


def test_peak_on_cuda_is_what_the_device_allocated(monkeypatch: pytest.MonkeyPatch) -> None:
    """On CUDA: the MiB allocated on that device (rounded), naming it; no GPU needed to check the words."""
    seen: list[torch.device] = []

    def allocated(device: torch.device) -> float:
        seen.append(device)
        return 1536.6

    monkeypatch.setattr(memory, "peak_memory_mb", allocated)
    assert peak("cuda:1") == "peak 1537 MiB allocated on cuda:1"
    assert seen == [torch.device("cuda:1")]


@pytest.mark.parametrize(
    ("error", "head"),
    [
        (MemoryError(), "out of memory: MemoryError"),
        (
            RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate 8 bytes"),
            "out of memory: RuntimeError: DefaultCPUAllocator: not enough memory: you tried to allocate 8 bytes",
        ),
        (  # says "out of memory" already: not twice
            torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"),
            "OutOfMemoryError: CUDA out of memory. Tried to allocate 2 GiB",
        ),
        (RuntimeError("Out Of Memory\nsecond line"), "RuntimeError: Out Of Memory\nsecond line"),  # whole message
    ],
    ids=["bare", "cpu allocator", "cuda", "two lines"],
)
def test_oom_reason_says_out_of_memory_once_and_the_peak(error: BaseException, head: str) -> None:
    assert re.fullmatch(rf"{re.escape(head)} \({CPU_PEAK}\)", oom_reason(error, None)), oom_reason(error, None)


def test_oom_reason_masks_a_password() -> None:
    why = oom_reason(MemoryError("while writing to postgresql://u:hunter2@db/x"), "cpu")
    assert "hunter2" not in why and why.startswith("out of memory: MemoryError: while writing to postgresql://u:")


def test_a_failed_trials_frames_are_let_go_at_once() -> None:
    """The model a failed training's frames (and closures) held is freed by release(), without the cyclic
    collector (off here) — even with the error kept in a cycle, as Optuna keeps it."""

    class Model:
        pass

    def train(model: Model) -> None:
        def step() -> None:  # a closure over the model, as the loops' step functions are
            raise MemoryError()

        step()

    gc.disable()
    try:
        model = Model()
        alive = weakref.ref(model)
        try:
            train(model)
        except MemoryError as e:
            kept = [e]
            kept.append(kept)  # the error in a reference cycle
            del model
            text = details(e)
            release(e, oom=False)
        assert alive() is None
        assert "in step" in text and details(kept[0]) == text  # the text stays for a group's other trials
    finally:
        gc.enable()


class _Model:
    pass


def _fail_with_cause(model: _Model) -> None:
    """Fails with an error raised from another, each raised in a frame that holds ``model``."""

    def inner(held: _Model) -> None:
        raise KeyError("the cause")

    try:
        inner(model)
    except KeyError as cause:
        raise RuntimeError("out of memory") from cause


def test_release_lets_go_of_the_cause_s_frames_too() -> None:
    """The chain of causes and contexts is cleared: a model only the cause's frames held is freed too."""
    gc.disable()
    try:
        model = _Model()
        alive = weakref.ref(model)
        try:
            _fail_with_cause(model)
        except RuntimeError as e:
            error = e
            del model
            release(e, oom=False)
        assert alive() is None
        assert error.__traceback__ is None and error.__cause__ is not None
        assert error.__cause__.__traceback__ is None
        assert "in inner" in details(error) and "KeyError: 'the cause'" in details(error)
    finally:
        gc.enable()


def test_release_ends_on_a_chain_that_loops() -> None:
    """Errors whose contexts point at each other (a handler that re-raises an earlier error): released once."""
    first, second = ValueError("first"), ValueError("second")
    first.__context__, second.__context__ = second, first
    release(first, oom=False)
    assert first.__traceback__ is None and second.__traceback__ is None


def test_release_without_a_traceback_keeps_no_text() -> None:
    """An error never raised has no traceback: nothing to keep (details() then says what is being handled)."""
    error = MemoryError()
    release(error, oom=True)
    assert not hasattr(error, "sweep_traceback")


def test_release_after_out_of_memory_collects_and_empties_cuda_s_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """After an out-of-memory error the cyclic collector runs and CUDA's cached blocks go back (when CUDA is
    there); after any other failure neither (a collection per failed trial costs time)."""
    calls: list[str] = []
    monkeypatch.setattr(memory.gc, "collect", lambda: calls.append("collect"))
    monkeypatch.setattr(memory.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(memory.torch.cuda, "empty_cache", lambda: calls.append("empty_cache"))
    release(RuntimeError("shape"), oom=False)
    assert calls == []
    release(MemoryError(), oom=True)
    assert calls == ["collect", "empty_cache"]
    monkeypatch.setattr(memory.torch.cuda, "is_available", lambda: False)
    release(MemoryError(), oom=True)
    assert calls == ["collect", "empty_cache", "collect"]


def test_details_is_the_traceback_being_handled() -> None:
    def fails() -> None:
        raise ValueError("boom")

    try:
        fails()
    except ValueError as e:
        text = details(e)
    assert text.startswith("Traceback") and "in fails" in text and text.rstrip().endswith("ValueError: boom")


def test_memory_log_says_nothing_without_an_out_of_memory_trial() -> None:
    log = MemoryLog()
    log.ended(State.COMPLETE)
    log.ended(State.FAIL)
    assert log.summary() == "" and log.finished_after == 0


def test_memory_log_of_one_trial() -> None:
    """Trials that finished before the first out-of-memory one do not count; complete and pruned ones after
    it do, failed ones not."""
    log = MemoryLog()
    log.ended(State.COMPLETE)  # before: not counted
    log.add(3, None)
    for state in (State.COMPLETE, State.PRUNED, State.FAIL, State.COMPLETE):
        log.ended(state)
    summary = log.summary()
    assert re.fullmatch(rf"trial 3 failed: out of memory \({CPU_PEAK}\); 3 trial\(s\) finished after it", summary), (
        summary
    )


def test_memory_log_of_several_trials_gives_ranges_and_the_last_peak(monkeypatch: pytest.MonkeyPatch) -> None:
    peaks = iter([100.0, 200.0, 300.0, 400.0])
    monkeypatch.setattr(memory, "peak_memory_mb", lambda device: next(peaks))
    log = MemoryLog()
    for number in (5, 0, 1, 2):
        log.add(number, "cuda:0")
    log.ended(State.FAIL)
    assert log.summary() == (
        "trials 0..2, 5 failed: out of memory (peak 400 MiB allocated on cuda:0); 0 trial(s) finished after the first"
    )


@pytest.mark.parametrize(
    ("numbers", "expected"),
    [
        ([0, 1, 2, 5, 7, 8], "0..2, 5, 7..8"),
        ([8, 7, 5, 2, 1, 0], "0..2, 5, 7..8"),  # any order
        ([4, 4, 3, 5, 3], "3..5"),  # repeats
        ([7], "7"),
        ([1, 3], "1, 3"),
        ([], ""),
    ],
)
def test_ranges(numbers: list[int], expected: str) -> None:
    assert ranges(numbers) == expected
