"""Every shipped study file validates and starts with the command that runs it."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from sweep.studyfile.config import load_study
from tests.conftest import ROOT

STUDIES = sorted((ROOT / "studies").rglob("*.yaml"))


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Problems that cache data on disk (digits_images) write it under the test's temp folder."""
    monkeypatch.setenv("SWEEP_CACHE_DIR", str(tmp_path / "cache"))


def test_there_are_studies() -> None:
    """The glob below is not silently empty."""
    assert any(p.name == "quickstart.yaml" for p in STUDIES)


@pytest.mark.parametrize("path", STUDIES, ids=[str(p.relative_to(ROOT)) for p in STUDIES])
def test_study_file_validates(path: Path) -> None:
    """The file loads and its first line gives its run command."""
    load_study(path)
    first = path.read_text().splitlines()[0]
    assert first == f"# Run: python -m sweep.run {path.relative_to(ROOT)}"


@pytest.mark.parametrize("path", STUDIES, ids=[str(p.relative_to(ROOT)) for p in STUDIES])
def test_study_file_runs_unmodified(path: Path, tmp_path: Path) -> None:
    """One trial of the file as shipped (only --n-trials is overridden), in a temp dir: it runs, and the
    trial completes with a finite value for every target (or is pruned after finite reports). A failed
    trial fails the test, whatever its reason: a shipped study whose trial diverges is a broken study."""
    import optuna
    from optuna.trial import TrialState

    from sweep.studyfile.compare import members
    from tests.conftest import run_main

    copy = tmp_path / path.name
    copy.write_text(path.read_text())
    sf = load_study(copy)
    # A comparison: its first choice's sub-study (the others differ only in that value; the whole
    # comparison and its evaluation run through the CLI in tests/test_evaluate.py).
    first = members(sf)[0] if sf.study.compare else None
    extra = ["--compare-value", first.label] if first else []
    result = run_main("sweep.run", str(copy), "--n-trials", "1", "--no-report", *extra, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    sf = first.sf if first else sf
    study = optuna.load_study(study_name=sf.study.name, storage=f"sqlite:///{tmp_path / '.sweep' / 'optuna.db'}")
    (trial,) = study.trials
    assert trial.state in (TrialState.COMPLETE, TrialState.PRUNED), trial.user_attrs.get("fail_reason", trial)
    assert all(math.isfinite(v) for v in trial.intermediate_values.values()), trial.intermediate_values
    if trial.state == TrialState.COMPLETE:
        assert trial.values is not None and len(trial.values) == len(sf.study.metric), trial.values
        assert all(math.isfinite(v) for v in trial.values), trial.values
    else:
        assert trial.intermediate_values, "a trial is pruned only after it reported an epoch"
