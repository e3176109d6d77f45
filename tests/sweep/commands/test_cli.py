"""What the commands share (sweep/commands/cli.py), in process: ``--cpu-threads``, the study-file arguments,
and loading the file (or a comparison's sub-study) with the one-line errors. The commands themselves, in
processes: tests/test_cli.py and tests/test_cpu_threads.py."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from sweep.commands.cli import (
    DEFAULT_CPU_THREADS,
    add_cpu_threads,
    apply_cpu_threads,
    load_or_report,
    study_parser,
)
from sweep.studyfile.config import StudyFile
from tests.conftest import run_main, tiny_study, write_yaml


@pytest.fixture
def threads() -> Iterator[None]:
    """The test changes torch's thread count of this process: put it back afterwards."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_cpu_threads_defaults_to_one_and_takes_a_number() -> None:
    p = argparse.ArgumentParser()
    add_cpu_threads(p)
    assert DEFAULT_CPU_THREADS == 1 and p.parse_args([]).cpu_threads == 1
    assert p.parse_args(["--cpu-threads", "0"]).cpu_threads == 0
    assert "default 1" in p.format_help() and "0 keeps torch's default" in p.format_help()
    with pytest.raises(SystemExit) as refused:
        p.parse_args(["--cpu-threads", "two"])
    assert refused.value.code == 2


@pytest.mark.parametrize(("asked", "expected"), [(2, 2), (1, 1), (0, 3), (-1, 3)])
def test_apply_cpu_threads_sets_torch_and_zero_keeps_its_default(threads: None, asked: int, expected: int) -> None:
    """A positive count is torch's from now on; 0 (and a negative count) leaves what torch had (3 here)."""
    torch.set_num_threads(3)
    apply_cpu_threads(asked)
    assert torch.get_num_threads() == expected


def test_study_parser_takes_the_file_and_its_options() -> None:
    p = study_parser("sweep.report", "Report a study.", "python -m sweep.report s.yaml")
    args = p.parse_args(["s.yaml"])
    assert (args.study_file, args.study_name, args.compare_value) == (Path("s.yaml"), None, None)
    args = p.parse_args(["dir/s.yaml", "--study-name", "other", "--compare-value", "dwa"])
    assert (args.study_file, args.study_name, args.compare_value) == (Path("dir/s.yaml"), "other", "dwa")
    assert p.prog == "sweep.report" and p.epilog == "Example: python -m sweep.report s.yaml"
    with pytest.raises(SystemExit) as refused:
        p.parse_args([])  # the file is required
    assert refused.value.code == 2


def _args(path: Path, name: str | None = None, value: str | None = None) -> argparse.Namespace:
    return argparse.Namespace(study_file=path, study_name=name, compare_value=value)


def _comparison(tmp_path: Path) -> Path:
    doc = tiny_study("cmp", study={"compare": "weighting.type"})
    doc["search"]["params"]["weighting.type"] = {"type": "categorical", "choices": ["static", "dwa"]}
    return write_yaml(tmp_path / "c.yaml", doc)


def test_load_or_report_gives_the_file_with_the_name_override(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "s.yaml", tiny_study("plain"))
    sf = load_or_report(_args(path))
    assert isinstance(sf, StudyFile) and sf.study.name == "plain"
    assert load_or_report(_args(path, "renamed")).study.name == "renamed"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("text", "said"),
    [
        (None, "cannot read"),
        ("study: {name: s}\nobjective: {problem: linear_pair, epochs: 0}\n", "objective.epochs"),
        ("study: [\n", "YAML syntax error"),
    ],
    ids=["missing", "invalid value", "not YAML"],
)
def test_a_bad_file_is_one_error_line_and_none(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str | None, said: str
) -> None:
    path = tmp_path / "s.yaml"
    if text is not None:
        path.write_text(text)
    assert load_or_report(_args(path)) is None
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: {path}: ") and said in line, line


def test_a_comparison_gives_the_sub_study_of_a_choice(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--compare-value``: that choice's sub-study (by its name part or its value); an unknown one is an error
    naming the choices. Without it, the comparison itself, unless the command needs one study."""
    path = _comparison(tmp_path)
    sub = load_or_report(_args(path, value="dwa"))
    assert sub is not None and sub.study.name == "cmp.dwa" and sub.study.compare is None
    whole = load_or_report(_args(path))
    assert whole is not None and whole.study.compare == "weighting.type"
    assert not capsys.readouterr().err
    assert load_or_report(_args(path, value="uw")) is None
    assert capsys.readouterr().err == (
        f"error: {path}: --compare-value uw: not a choice of weighting.type (static, dwa)\n"
    )
    assert load_or_report(_args(path), one_study=True) is None
    assert capsys.readouterr().err == (
        f"error: {path}: study.compare: a comparison of 2 studies; give --compare-value CHOICE (static, dwa)\n"
    )
    one = load_or_report(_args(path, "renamed", "static"), one_study=True)
    assert one is not None and one.study.name == "renamed.static"


def test_a_choice_of_a_file_that_compares_nothing_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--compare-value`` on a plain study: one line, not the whole study as if no choice was given."""
    path = write_yaml(tmp_path / "s.yaml", tiny_study("plain"))
    assert load_or_report(_args(path, value="dwa")) is None
    assert capsys.readouterr().err == (
        f"error: {path}: --compare-value dwa: the file compares nothing (no study.compare)\n"
    )
    ran = run_main("sweep.run", str(path), "--compare-value", "dwa", cwd=tmp_path)
    assert ran.returncode == 2 and "the file compares nothing" in ran.stderr
    assert not (tmp_path / ".sweep").exists()
