"""docs/performance.md's tables are what ``python -m benchmarks.docs`` makes from the benchmarks' saved results
(``benchmarks/results/<name>.json``), so no table is hand-copied or left behind by its JSON."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from benchmarks import docs

QUOTED = ("overhead", "loop_overhead", "parallel_trials", "memory_bounded")


def _doc() -> str:
    return docs.DOC.read_text(encoding="utf-8")


def test_every_table_is_what_the_writer_makes_from_the_stored_results(capsys: pytest.CaptureFixture[str]) -> None:
    assert docs.stale(_doc()) == [], "run: python -m benchmarks.docs"
    assert docs.main(["--check"]) == 0, capsys.readouterr()


def test_the_doc_quotes_each_benchmark_once_and_its_record_says_how_it_was_made() -> None:
    """Each benchmark the page quotes has one marked block, and its JSON the command, machine and date."""
    names = [m.group(2) for m in docs.BLOCK.finditer(_doc())]
    assert sorted(names) == sorted(QUOTED)
    for name in names:
        record = json.loads((docs.RESULTS / f"{name}.json").read_text(encoding="utf-8"))
        assert record["benchmark"] == f"benchmarks.{name}"
        assert record["command"].startswith(f"python -m benchmarks.{name}")
        assert {"platform", "cpus", "torch", "device"} <= set(record["machine"])
        assert record["date"] and record["settings"] and record["results"]


def test_a_hand_edited_table_is_found(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = _doc()
    block = next(m for m in docs.BLOCK.finditer(text) if m.group(2) == "loop_overhead")
    edited = text[: block.start(3)] + block.group(3).replace("|", "| 9", 3) + text[block.end(3) :]
    assert docs.stale(edited) == ["loop_overhead"]
    page = tmp_path / "performance.md"
    page.write_text(edited, encoding="utf-8")
    assert docs.main(["--check", "--doc", str(page)]) == 1
    assert "stale tables: loop_overhead" in capsys.readouterr().out
    assert docs.main(["--doc", str(page)]) == 0  # the writer puts it back
    assert page.read_text(encoding="utf-8") == text


def test_a_missing_result_fails_the_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "results"
    shutil.copytree(docs.RESULTS, results)
    (results / "parallel_trials.json").unlink()
    assert docs.main(["--check", "--results", str(results)]) == 1
    assert "parallel_trials.json is missing" in capsys.readouterr().err
    with pytest.raises(docs.MissingResults):
        docs.rewrite(_doc(), results)


def test_text_outside_the_markers_is_kept() -> None:
    text = "intro 1.5×\n<!-- begin benchmarks.loop_overhead -->\nold\n<!-- end benchmarks.loop_overhead -->\nend 2 s\n"
    out = docs.rewrite(text)
    assert out.startswith("intro 1.5×\n<!-- begin benchmarks.loop_overhead -->\n\n| loop |")
    assert out.endswith("\n<!-- end benchmarks.loop_overhead -->\nend 2 s\n")
    assert "old" not in out


@pytest.mark.parametrize(
    ("row", "median", "status"),
    [
        ("quickstart", {"ratio": 1.15}, "met"),
        ("quickstart", {"ratio": 1.1549}, "met"),  # shown as 1.15×
        ("quickstart", {"ratio": 1.156}, "not met"),
        ("workers", {"ratio": 1.6}, "met"),
        ("workers", {"ratio": 1.59}, "not met"),
        ("per_epoch", {"sweep": 0.0009, "ratio": 9.0}, "met"),
        ("per_epoch", {"sweep": 0.0011, "ratio": 0.1}, "not met"),
        ("loop", {"sweep": 1.0, "ratio": 9.0}, ""),
    ],
)
def test_the_goal_column_compares_the_rows_median_with_the_issues_goal(
    row: str, median: dict[str, float], status: str
) -> None:
    """``≤`` goals are met at or under the goal, ``≥`` at or over it, on the value as its cell shows it; a
    per-epoch goal is on the sweep cost, not the ratio."""
    assert docs.goal({"row": row, "median": median})[2] == status


def test_every_page_with_benchmark_tables_is_up_to_date() -> None:
    """README.md and docs/explanation/parametrizations.md may quote benchmarks too (the weighting table)."""
    assert {p.relative_to(docs.ROOT).as_posix() for p in docs.DOCS} == {
        "docs/performance.md",
        "README.md",
        "docs/explanation/parametrizations.md",
    }
    for page in docs.DOCS:
        assert docs.stale(page.read_text(encoding="utf-8")) == [], f"{page}: run python -m benchmarks.docs"


def test_the_check_covers_every_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without ``--doc`` the check reads every page of ``DOCS``: a stale table in the last one fails it."""
    block = "<!-- begin benchmarks.loop_overhead -->\n{}<!-- end benchmarks.loop_overhead -->\n"
    fresh, stale = tmp_path / "fresh.md", tmp_path / "README.md"
    fresh.write_text(block.format(docs.render("loop_overhead")), encoding="utf-8")
    stale.write_text("# sweep\n" + block.format("old\n"), encoding="utf-8")
    monkeypatch.setattr(docs, "DOCS", (fresh, stale))
    assert docs.main(["--check"]) == 1
    out = capsys.readouterr().out
    assert f"{fresh}: 1 tables up to date" in out and f"{stale}: stale tables: loop_overhead" in out
    assert docs.main([]) == 0  # writes the stale page
    assert docs.main(["--check"]) == 0
    assert stale.read_text(encoding="utf-8").startswith("# sweep\n<!-- begin benchmarks.loop_overhead -->\n\n| loop |")
