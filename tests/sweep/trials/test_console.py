"""The progress bar (sweep/trials/console.py): what a terminal shows, and silence off a terminal."""

from __future__ import annotations

import io
import re

import optuna
import pytest

from sweep.trials.console import Progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_shows_finished_of_total_and_the_best_value(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a terminal: trials n/N and the best value so far; failures get their own line."""
    screen = _Terminal()
    monkeypatch.setattr("sys.stderr", screen)
    study = optuna.create_study(study_name="bar")
    bar = Progress(study, total=3, enabled=True)

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0, 1)
        if trial.number == 1:
            raise ValueError("boom")
        return x

    study.optimize(objective, n_trials=4, callbacks=[bar], catch=(ValueError,))
    bar.close()
    text = screen.getvalue()
    assert "bar: " in text and "3/3" in text and f"best={study.best_value:.5g}" in text
    assert "trial 1 failed" in text


def test_progress_bar_is_silent_off_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Piped output (CI, logs) gets no bar, so no control characters."""
    screen = io.StringIO()
    monkeypatch.setattr("sys.stderr", screen)
    study = optuna.create_study()
    bar = Progress(study, total=2, enabled=True)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2, callbacks=[bar])
    bar.close()
    assert screen.getvalue() == ""


class _Writes(io.StringIO):
    """stderr that keeps each ``write`` call apart (each is one system call when unbuffered)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def write(self, text: str) -> int:
        self.calls.append(text)
        return super().write(text)


def test_every_line_for_the_user_is_one_write(monkeypatch: pytest.MonkeyPatch) -> None:
    """Errors, warnings and notes reach stderr as whole lines in one write each, so the lines of processes
    sharing a terminal never run into each other (CI saw ``back after 8.0 snote: ...`` with
    PYTHONUNBUFFERED=1, where ``print`` writes a line and its newline apart); no module prints to stderr
    another way."""
    from pathlib import Path

    from sweep.core.errors import print_error, warn
    from sweep.storage.resilient import _say

    screen = _Writes()
    monkeypatch.setattr("sys.stderr", screen)
    print_error("bad")
    warn("careful")
    _say("storage back")
    assert screen.calls == ["error: bad\n", "warning: careful\n", "note: storage back\n"]
    sweep = Path(__file__).resolve().parents[3] / "sweep"
    call = re.compile(r"\bprint\((?:[^()]|\([^()]*\))*file=sys\.stderr")  # print(..., file=sys.stderr)
    printing = [p.name for p in sweep.rglob("*.py") if call.search(p.read_text())]
    assert printing == [], printing
