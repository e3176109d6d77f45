"""Ctrl-C (SIGINT) and SIGTERM that never land inside a database write.

A ``KeyboardInterrupt`` raised in the middle of an Optuna or MLflow SQL session can leave a lock held
in this process, so closing the runs afterwards waits out the database's busy timeout (observed: a
60 s hang in 1 of 8 random interrupts). Instead the handler only *records* the request, and raises
at once only inside :meth:`Interrupts.training` (the loop's tensor work, which holds no lock);
everywhere else the request is honoured at the next safe point: the start of the next trial's
training, the end of a :meth:`shielded` block, or between trials (the study stops). A second signal
raises at once whatever is running (the user insists).

A trial's time limits (:mod:`sweep.trials.watchdog`) stop its training the same way: their error is raised at
once inside :meth:`Interrupts.training`, else at the end of the database write under way (:meth:`defer`).

Phases that hold no database lock of this process (importing and building the user's problem, a wait
between storage retries, the report's plots, a whole read-only command) run inside :meth:`raising`:
there the first signal raises at once too. Code that is not handed the process's instance reaches it
with :meth:`Interrupts.active`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from types import FrameType


class RaisedInto(Exception):
    """An error another thread has the training raise (:class:`sweep.trials.watchdog.TrialTimeout`); one that
    Python swallows in a finalizer is delivered again by its sender, silently."""


class Interrupts:
    """The process's interrupt state while a study runs (install with :meth:`installed`)."""

    _active: list[Interrupts] = []  # noqa: RUF012 (the installed instances, innermost last: one process-wide stack)

    def __init__(self) -> None:
        self.requested = False
        self._interruptible = False
        self._again = False  # the next signal is our own re-delivery, not the user insisting
        self._signum = signal.SIGINT
        self._previous_hook = sys.unraisablehook
        self._deferred: BaseException | None = None  # raised at the end of the shielded write under way

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        first = not self.requested or self._again
        self._again, self._signum = False, signum
        self.requested = True
        if self._interruptible or not first:
            raise KeyboardInterrupt

    def _swallowed(self, unraisable: sys.UnraisableHookArgs) -> None:
        """``sys.unraisablehook``: an interrupt raised while a finalizer ran (a garbage-collection callback of
        a library, in the middle of training) is swallowed by Python with an "Exception ignored" traceback;
        say nothing and deliver the signal again a moment later, outside the finalizer."""
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            self._again = True
            threading.Timer(0.05, os.kill, (os.getpid(), self._signum)).start()
            return
        if isinstance(unraisable.exc_value, RaisedInto):
            return  # its sender delivers it again
        self._previous_hook(unraisable)

    @contextlib.contextmanager
    def installed(self, inherit_ignored: bool = True) -> Iterator[Interrupts]:
        """Handle SIGINT, SIGTERM and SIGHUP (the terminal closed) within the block (main thread only),
        restoring the old handlers after.

        A signal the process inherited as ignored (SIGINT in a shell script's background job, SIGHUP
        under nohup) stays ignored, unless ``inherit_ignored`` is false: a worker of ``--workers`` obeys
        whatever its coordinator forwards, however the coordinator was started.
        """
        signals = (signal.SIGINT, signal.SIGTERM, *([signal.SIGHUP] if hasattr(signal, "SIGHUP") else []))
        old = {s: signal.getsignal(s) for s in signals}
        self._previous_hook, sys.unraisablehook = sys.unraisablehook, self._swallowed
        ignored = {s for s, h in old.items() if h == signal.SIG_IGN and inherit_ignored}
        for s in old:
            if s not in ignored:
                signal.signal(s, self._handle)
        Interrupts._active.append(self)
        try:
            yield self
        finally:
            Interrupts._active.remove(self)
            sys.unraisablehook = self._previous_hook
            for s, handler in old.items():
                signal.signal(s, handler)

    @classmethod
    def active(cls) -> Interrupts:
        """The instance installed in this process (the innermost), or a new one that no signal reaches,
        whose :meth:`raising` and :meth:`shielded` then change nothing: for code that is not handed the
        process's instance (a preflight, the storage's retries, the report)."""
        return cls._active[-1] if cls._active else cls()

    def check(self) -> None:
        """A safe point: raise now if an interrupt was requested."""
        if self.requested:
            raise KeyboardInterrupt

    @property
    def interruptible(self) -> bool:
        """Inside :meth:`training`, outside a :meth:`shielded` write: an error may be raised here at once."""
        return self._interruptible

    def defer(self, error: BaseException | None) -> None:
        """Raise ``error`` when the shielded write under way ends, back in training (``None``: forget it)."""
        self._deferred = error

    def training(self) -> contextlib.AbstractContextManager[None]:
        """Inside: an interrupt raises at once (tensor work only, no database calls): :meth:`raising`."""
        return self.raising()

    @contextlib.contextmanager
    def raising(self) -> Iterator[None]:
        """Inside: an interrupt raises at once — the training's tensor work (:meth:`training`) and phases that
        hold no database lock of this process (a user module's import, preflight, waits between retries,
        calls to a tracking server over HTTP). Nests: the state before it is restored after."""
        self.check()
        was = self._interruptible
        self._interruptible = True
        try:
            yield
        finally:
            self._interruptible = was

    @contextlib.contextmanager
    def shielded(self) -> Iterator[None]:
        """Inside ``training``: database calls (the reporter's), deferred interrupts raised after them."""
        was = self._interruptible
        self._interruptible = False
        try:
            yield
        finally:
            self._interruptible = was
        if was:
            self.check()
            error, self._deferred = self._deferred, None
            if error is not None:
                raise error


def interruptible(command: Callable[[], int], said: str) -> int:
    """Run a command that writes no record a signal could leave half done (``sweep.report``, ``sweep.ui``),
    or that shields its writes (:meth:`Interrupts.shielded`: ``sweep.evaluate``, ``sweep.export``): the
    first Ctrl-C, SIGTERM or SIGHUP ends it at once, with the one line ``said`` and exit status 130.

    Args:
        command: The command's work; its exit status.
        said: What the user reads when a signal ended it.
    """
    from sweep.core.errors import EXIT_INTERRUPTED, to_stderr

    interrupts = Interrupts()
    with interrupts.installed():
        try:
            with interrupts.raising():
                return command()
        except KeyboardInterrupt:
            to_stderr(said)
            return EXIT_INTERRUPTED
