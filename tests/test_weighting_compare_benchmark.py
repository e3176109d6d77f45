"""``benchmarks.weighting_compare``: one command gives each compared method's evaluation (held-out test values ±
CI over fresh seeds) and its cost per step, and ``benchmarks.docs`` renders its record as the README's table."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from benchmarks import docs
from benchmarks.weighting_compare import head

ROOT = Path(__file__).resolve().parents[1]

TINY = {
    "study": {
        "name": "tiny_compare",
        "metric": "val_total_loss",
        "n_trials": 5,  # the command's --n-trials 2 overrides it
        "compare": "weighting.type",
        "seed": 0,
        "sampler": {"type": "random"},
        "pruner": "none",
    },
    "objective": {
        "loop": "dual_loss",
        "problem": {"name": "linear_pair", "options": {"n_a": 64, "n_b": 64, "n_val": 64, "n_test": 64}},
        "epochs": 2,
        "batch_size": 16,
        "optimizer": {"type": "sgd", "lr": 0.01},
        "weights": [0.5, 0.5],
    },
    "search": {
        "params": {
            "weighting.type": {"type": "categorical", "choices": ["static", "pcgrad"]},
            "optimizer.lr": {"type": "float", "low": 0.001, "high": 0.01, "log": True},
        }
    },
    "evaluate": {"seeds": 5},  # the command's --seeds 2 overrides it
}


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _markdown_table(text: str) -> list[dict[str, str]]:
    """The first Markdown table of ``text``, as one dict per row by its header."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    header = _cells(lines[0])
    return [dict(zip(header, _cells(line), strict=True)) for line in lines[2:]]


@pytest.mark.slow
def test_the_command_evaluates_and_times_every_compared_method(tmp_path: Path) -> None:
    study, out, work = tmp_path / "tiny.yaml", tmp_path / "record.json", tmp_path / "work"
    study.write_text(yaml.safe_dump(TINY), encoding="utf-8")
    argv = [str(study), "--n-trials", "2", "--seeds", "2", "--repeats", "2", "--save", str(out), "--workdir", str(work)]
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.weighting_compare", *argv], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]

    rows = _markdown_table(done.stdout)
    assert [r["method"] for r in rows] == ["static", "pcgrad"]
    assert [r["trials"] for r in rows] == ["2", "2"]  # --n-trials 2, not the file's 5
    # The quality cells are what sweep.evaluate itself printed (its evaluation.md), column by column.
    printed = {r["method"]: r for r in _markdown_table((work / "evaluation" / "evaluation.md").read_text())}
    shared = ["trial", "best val_total_loss (search, val)", "val_total_loss (retrained, val)", "test_total_loss"]
    for row in rows:
        assert {k: row[k] for k in shared} == {k: printed[row["method"]][k] for k in shared}
    # ... and the test mean is the mean of the per-seed CSV's values (2 seeds each, --seeds 2 over the file's 5).
    with (work / "evaluation" / "evaluation.csv").open(newline="") as f:
        per_seed = list(csv.DictReader(f))
    for row in rows:
        values = [float(s["test_total_loss"]) for s in per_seed if s["method"] == row["method"]]
        assert len(values) == 2
        assert row["test_total_loss"].startswith(f"{np.mean(values):.3f} ")

    ms = {r["method"]: float(r["ms / step"]) for r in rows}
    assert all(v > 0 for v in ms.values())
    assert rows[0]["× static"] == "1.00"
    assert float(rows[1]["× static"]) == pytest.approx(ms["pcgrad"] / ms["static"], abs=0.02, rel=0.02)

    record = json.loads(out.read_text(encoding="utf-8"))
    assert record["command"].startswith("python -m benchmarks.weighting_compare")
    assert record["settings"]["seeds"] == 2 and record["settings"]["n_trials"] == 2
    for r in record["results"]["rows"]:
        assert r["ms_per_step"] > 0 and r["seeds"] == 2
        assert r["timed_steps"] == (2 - 1) * math.ceil(64 / 16)  # epochs after the first × batches of 64 samples
    static, pcgrad = record["results"]["rows"]
    assert static["ratio"] == 1.0 and pcgrad["ratio"] == pytest.approx(pcgrad["ms_per_step"] / static["ms_per_step"])
    # The renderer gives back the table the command printed.
    assert "\n".join(docs.weighting_table(record["results"])) in done.stdout


RECORD = {
    "benchmark": "benchmarks.weighting_compare",
    "command": "python -m benchmarks.weighting_compare --save benchmarks/results/weighting_compare.json",
    "date": "2026-12-08 03:00 UTC",
    "elapsed_s": 150.0,
    "settings": {
        "study": "studies/weighting_compare.yaml",
        "n_trials": 24,
        "seeds": 5,
        "repeats": 3,
        "threads": 1,
        "device": "cpu",
    },
    "machine": {
        "platform": "Linux-x86_64",
        "cpu": "AMD EPYC",
        "cpus": 2,
        "python": "3.11.7",
        "torch": "2.13.0",
        "device": "cpu",
        "nice": 10,
        "load_avg_1min": 1.5,
    },
    "results": {
        "metrics": ["val_total_loss"],
        "tests": ["test_total_loss", "test_a_acc"],
        "rows": [
            {
                "method": "static",
                "trial": 22,
                "trials": "24",
                "search": [0.72844],
                "cells": {
                    "val_total_loss": "0.729 ± 0.092", "test_total_loss": "0.598 ± 0.042", "test_a_acc": "0.944 ± 0.010"
                },
                "ms_per_step": 1.234,
                "ratio": 1.0,
            },
            {
                "method": "pcgrad",
                "trial": 3,
                "trials": "24 (+1 failed)",
                "search": [0.7952],
                "cells": {
                    "val_total_loss": "0.756 ± 0.163", "test_total_loss": "0.659 ± 0.091",
                    "test_a_acc": "0.925 [0.9, 1.000]",
                },
                "ms_per_step": 2.5,
                "ratio": 2.0259,
            },
        ],
        "wall_s": {"search": 60.2, "evaluate": 30.4, "cost": 40.0},
    },
}  # fmt: skip

EXPECTED = """\
| method | trial | trials | best val_total_loss (search, val) | val_total_loss (retrained, val) | test_total_loss \
| test_a_acc | ms / step | × static |
|---|---|---|---|---|---|---|---|---|
| static | #22 | 24 | 0.7284 | 0.729 ± 0.092 | 0.598 ± 0.042 | 0.944 ± 0.010 | 1.23 | 1.00 |
| pcgrad | #3 | 24 (+1 failed) | 0.7952 | 0.756 ± 0.163 | 0.659 ± 0.091 | 0.925 [0.9, 1.000] | 2.50 | 2.03 |

*Measured by `python -m benchmarks.weighting_compare --save benchmarks/results/weighting_compare.json` on 2026-12-08 \
03:00 UTC (2.5 min; `studies/weighting_compare.yaml`, 24 trials per method, each method's best trial retrained with 5 \
fresh seeds and scored on the held-out test split (mean ± 95 % CI); search 60 s, evaluation 30 s; ms / step: each best \
configuration's training steps after its first epoch, validation cut to one batch, 1 torch thread, median of 3 runs of \
each, interleaved (40 s)). Machine: Linux-x86_64, AMD EPYC, 2 CPUs, Python 3.11.7, torch 2.13.0, device cpu; nice 10, \
load average 1.5 as it ended (a shared machine: compare figures of one table only).*"""


def test_the_renderer_writes_every_column_of_the_record() -> None:
    assert "\n".join(docs.weighting_compare(RECORD)) == EXPECTED


def test_a_marker_block_in_any_page_is_rendered_and_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The README (or any page given) holds the block; ``--check`` finds it stale until it is written."""
    results = tmp_path / "results"
    results.mkdir()
    (results / "weighting_compare.json").write_text(json.dumps(RECORD), encoding="utf-8")
    readme = tmp_path / "README.md"
    begin, end = "<!-- begin benchmarks.weighting_compare -->", "<!-- end benchmarks.weighting_compare -->"
    readme.write_text(f"# sweep\n\n{begin}\nold\n{end}\n\nmore\n", encoding="utf-8")
    assert docs.main(["--check", "--doc", str(readme), "--results", str(results)]) == 1
    assert "stale tables: weighting_compare" in capsys.readouterr().out
    assert docs.main(["--doc", str(readme), "--results", str(results)]) == 0
    assert readme.read_text(encoding="utf-8") == f"# sweep\n\n{begin}\n\n{EXPECTED}\n\n{end}\n\nmore\n"
    assert docs.main(["--check", "--doc", str(readme), "--results", str(results)]) == 0


def test_the_validation_is_cut_to_its_first_samples() -> None:
    import torch
    from torch.utils.data import TensorDataset

    x, y = torch.arange(20.0).reshape(10, 2), torch.arange(10)
    inputs, targets = head(({"img": x, "extra": (x, x)}, y), 3)
    assert torch.equal(inputs["img"], x[:3]) and torch.equal(inputs["extra"][1], x[:3]) and torch.equal(targets, y[:3])
    subset = head(TensorDataset(x, y), 4)
    assert len(subset) == 4 and torch.equal(subset[3][0], x[3])
    assert len(head(TensorDataset(x, y), 50)) == 10
