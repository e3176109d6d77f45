"""Every shipped study file validates and starts with the command that runs it."""

from __future__ import annotations

from pathlib import Path

import pytest

from sweep.config import load_study
from tests.conftest import ROOT

STUDIES = sorted((ROOT / "studies").rglob("*.yaml"))


def test_there_are_studies() -> None:
    """The glob below is not silently empty."""
    assert any(p.name == "quickstart.yaml" for p in STUDIES)


@pytest.mark.parametrize("path", STUDIES, ids=[str(p.relative_to(ROOT)) for p in STUDIES])
def test_study_file_validates(path: Path) -> None:
    """The file loads and its first line gives its run command."""
    load_study(path)
    first = path.read_text().splitlines()[0]
    assert first == f"# Run: python -m sweep.run {path.relative_to(ROOT)}"
