"""sweep.core.interrupts: a signal during training raises there, whatever Python code it lands in."""

from __future__ import annotations

import os
import signal
import time

import pytest

from sweep.core.interrupts import Interrupts


class Finalized:
    """An object whose finalizer is running when the signal arrives (as a library's GC callback may be)."""

    def __del__(self) -> None:
        os.kill(os.getpid(), signal.SIGINT)  # delivered, and its handler run, inside this finalizer
        for _ in range(1000):
            pass


def test_a_signal_landing_in_a_finalizer_still_interrupts_training_without_a_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    interrupts = Interrupts()
    started = time.monotonic()
    with interrupts.installed(), pytest.raises(KeyboardInterrupt), interrupts.training():
        obj = Finalized()
        del obj  # the signal lands in __del__: Python swallows what a finalizer raises
        time.sleep(5)  # the signal is delivered again, here
    assert time.monotonic() - started < 2
    assert interrupts.requested
    err = capsys.readouterr().err
    assert "Exception ignored" not in err and "Traceback" not in err


def test_outside_training_the_request_waits_for_a_safe_point() -> None:
    interrupts = Interrupts()
    with interrupts.installed():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.1)  # not interruptible: recorded, not raised
        assert interrupts.requested
        with pytest.raises(KeyboardInterrupt):
            interrupts.check()


def test_raising_interrupts_at_once_and_restores_the_state_before_it() -> None:
    interrupts = Interrupts()
    with interrupts.installed():
        with pytest.raises(KeyboardInterrupt), interrupts.raising():
            os.kill(os.getpid(), signal.SIGINT)  # the handler runs at the next bytecode: raises here
            for _ in range(10_000_000):
                pass
        assert interrupts.requested and not interrupts.interruptible
        with pytest.raises(KeyboardInterrupt), interrupts.raising():
            pass  # a request already made raises on entry
    nested = Interrupts()
    with nested.training():
        with nested.shielded():
            with nested.raising():
                assert nested.interruptible
            assert not nested.interruptible  # back to shielded
        assert nested.interruptible
