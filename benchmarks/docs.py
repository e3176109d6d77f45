"""``python -m benchmarks.docs [--check]``: writes the benchmark tables of the docs from the benchmarks' saved results.

Each table sits between marker comments naming its benchmark::

    <!-- begin benchmarks.overhead -->
    ...written here, from benchmarks/results/overhead.json...
    <!-- end benchmarks.overhead -->

and is made from the JSON record that the benchmark's ``--save benchmarks/results/<name>.json`` wrote
(:mod:`benchmarks.results`): the table, then the command, settings, date and machine that produced it. The
text outside the markers is left as it is. Blocks live in docs/performance.md, README.md and
docs/explanation/parametrizations.md (:data:`DOCS`; ``benchmarks.weighting_compare``'s table in all three).
``--check`` writes nothing and exits 1 when a table of any of them differs from what its JSON gives, or a
marker's JSON is missing (``tests/test_performance_doc.py`` runs the same check). To refresh a table, rerun
its benchmark with ``--save`` and then this command.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "performance.md"
DOCS = (DOC, ROOT / "README.md", ROOT / "docs" / "explanation" / "parametrizations.md")  # pages with blocks
RESULTS = ROOT / "benchmarks" / "results"
BLOCK = re.compile(r"(<!-- begin benchmarks\.(\w+) -->\n)(.*?)(<!-- end benchmarks\.\2 -->)", re.S)

# benchmarks.overhead's rows against issue #14: the figure at filing, and the goal on the row's median
# ``ratio`` or its ``sweep`` value (seconds): (at filing, field, comparison, goal).
GOALS: dict[str, tuple[str, str, str, float] | tuple[str]] = {
    "quickstart": ("2.66×", "ratio", "≤", 1.15),
    "peer": ("1.24×", "ratio", "≤", 0.9),
    "long_model": ("1.31×", "ratio", "≤", 1.05),
    "long_epochs": ("1.59×", "ratio", "≤", 1.05),
    "per_trial_excl": ("~340 ms", "sweep", "≤", 0.040),
    "per_epoch": ("~8.5 ms", "sweep", "≤", 0.001),
    "loop": ("~1.6 ms",),
    "one_trial": ("2.62× (11.8 s vs 4.5 s)", "ratio", "≤", 1.5),
    "rss": ("1.46× (814 vs 557 MiB)", "ratio", "≤", 1.15),
    "rss_peer": ("", "ratio", "≤", 1.15),
    "workers": ("0.7×", "ratio", "≥", 1.6),
    "workers_long": ("", "ratio", "≥", 1.6),
}


class MissingResults(Exception):
    """A marker names a benchmark whose JSON record is not there, or that no renderer knows."""


def runs(repeats: int) -> str:
    return "one run of each" if repeats == 1 else f"median of {repeats} runs of each"


def sci(x: float) -> str:
    return "0" if x == 0 else f"{x:.1e}"


def cells(row: list[str]) -> str:
    return "| " + " | ".join(row) + " |"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [cells(header), "|" + "---|" * len(header), *(cells(r) for r in rows)]


def goal(row: dict[str, Any]) -> list[str]:
    """The ``at filing``, ``goal`` and status cells of an overhead row."""
    spec = GOALS.get(row.get("row", ""), ("",))
    if len(spec) == 1:
        return [spec[0], "", ""]
    at_filing, field, op, target = spec  # type: ignore[misc]
    text = f"{op} {target:g}×" if field == "ratio" else f"{op} {target * 1000:g} ms"
    # As the cells show it: a ratio to 2 decimals, a cost to 0.01 ms (1.154× meets "≤ 1.15×").
    value = round(row["median"][field], 2) if field == "ratio" else round(row["median"][field] * 1000, 2) / 1000
    met = value <= target if op == "≤" else value >= target
    return [at_filing, text, "met" if met else "not met"]


def overhead(record: dict[str, Any]) -> list[str]:
    res, settings = record["results"], record["settings"]
    rows = [[r["measure"], r["sweep"], r["reference"], r["ratio"], *goal(r)] for r in res["rows"]]
    header = ["measure", "sweep", "reference", "ratio", "at filing (#14)", "goal", ""]
    repeats = settings["repeats"]
    how = runs(repeats) + (" (min–max), alternated" if repeats > 1 else "")
    quick = ", `--quick` (tiny studies)" if settings.get("quick") else ""
    return [*table(header, rows), "", *(f"- {note}" for note in res["notes"]), "", made_by(record, how + quick)]


def loop_overhead(record: dict[str, Any]) -> list[str]:
    res, s = record["results"], record["settings"]
    header = ["loop", "median s / run", "× hand-written"]
    rows = [[name, f"{m:.3f}", f"{res['ratio'][name]:.2f}"] for name, m in res["median_s"].items()]
    how = f"{s['problem']}, {s['epochs']} epochs, {runs(s['repeats'])}, interleaved"
    return [*table(header, rows), "", made_by(record, how)]


def parallel_trials(record: dict[str, Any]) -> list[str]:
    res, s = record["results"], record["settings"]
    diff = "rel. diff of val_total_loss vs sequential, median / max"
    header = ["problem", "K", "trials/h grouped", "trials/h sequential", "ratio", diff]
    rows = [
        [
            row["problem"],
            str(g["k"]),
            f"{3600 / g['s_per_trial']:,.0f}",
            f"{3600 / row['sequential_s_per_trial']:,.0f}",
            f"{g['ratio']:.2f}×",
            f"{sci(g['median_rel_diff'])} / {sci(g['max_rel_diff'])}",
        ]
        for row in res["rows"]
        for g in row["groups"]
    ]
    lines = [*table(header, rows), ""]
    if res.get("study"):
        walls = ", ".join(f"{w:.1f} s with `--parallel-trials {k}`" for k, w in res["study"].items())
        lines += [f"Whole runs of the quickstart study (30 trials, `python -m sweep.run`, fresh folders): {walls}.", ""]
    how = f"{s['trials']} configs in groups of K, the first {s['sequential']} also one by one, 12 epochs each"
    return [*lines, made_by(record, how)]


def memory_table(results: dict[str, float], settings: dict[str, int]) -> list[tuple[str, str]]:
    """``benchmarks.memory_bounded``'s (measure, value) rows from its ``results`` and ``settings``."""
    workers = f"process + DataLoader workers ({settings['workers']} per loader), sampled every 50 ms"
    return [
        (
            f"data if materialised (2 tasks × {settings['samples']:,} × 3×64×64 float32)",
            f"{results['materialised_gb']:.1f} GB",
        ),
        (f"peak PSS, {workers}", f"{results['peak_pss_mib']:.0f} MiB"),
        (
            "peak summed RSS, the same (counts shared copy-on-write pages once per process)",
            f"{results['peak_rss_sum_mib']:.0f} MiB",
        ),
        ("peak RSS of the training process alone (logged peak_memory_mb)", f"{results['process_peak_mib']:.0f} MiB"),
        ("steps", f"{settings['epochs']} epochs × {settings['steps']} × batch {settings['batch_size']}"),
        ("time per step", f"{results['ms_per_step']:.1f} ms"),
        ("val_total_loss", f"{results['val_total_loss']:.4f}"),
    ]


def memory_bounded(record: dict[str, Any]) -> list[str]:
    rows = [list(r) for r in memory_table(record["results"], record["settings"])]
    return [*table(["measure", "value"], rows), "", made_by(record, "one training run")]


def weighting_table(results: dict[str, Any]) -> list[str]:
    """``benchmarks.weighting_compare``'s table: per method, the evaluation's columns (search value, retrained
    validation and test values as ``sweep.evaluate`` prints them) and the cost per step."""
    metrics, tests = results["metrics"], results["tests"]
    header = ["method", "trial", "trials", *(f"best {m} (search, val)" for m in metrics)]
    header += [*(f"{m} (retrained, val)" for m in metrics), *tests, "ms / step", "× static"]
    rows = []
    for r in results["rows"]:
        rows.append([r["method"], f"#{r['trial']}", r["trials"], *(f"{v:.4g}" for v in r["search"])])
        rows[-1] += [*(r["cells"][m] for m in (*metrics, *tests)), f"{r['ms_per_step']:.2f}", f"{r['ratio']:.2f}"]
    return table(header, rows)


def weighting_compare(record: dict[str, Any]) -> list[str]:
    res, s = record["results"], record["settings"]
    wall = res["wall_s"]
    how = (
        f"`{s['study']}`, {s['n_trials']} trials per method, each method's best trial retrained with "
        f"{s['seeds']} fresh seeds and scored on the held-out test split (mean ± 95 % CI); search "
        f"{wall['search']:.0f} s, evaluation {wall['evaluate']:.0f} s; ms / step: each best configuration's "
        f"training steps after its first epoch, validation cut to one batch, {s['threads']} torch thread, "
        f"{runs(s['repeats'])}, interleaved ({wall['cost']:.0f} s)"
    )
    return [*weighting_table(res), "", made_by(record, how)]


RENDERERS: dict[str, Callable[[dict[str, Any]], list[str]]] = {
    "overhead": overhead,
    "loop_overhead": loop_overhead,
    "parallel_trials": parallel_trials,
    "memory_bounded": memory_bounded,
    "weighting_compare": weighting_compare,
}


def made_by(record: dict[str, Any], how: str) -> str:
    """The line under a table: the command, date and duration, how the figures were taken, and the machine."""
    m = record["machine"]
    minutes = record["elapsed_s"] / 60
    took = f"{minutes:.1f} min" if minutes >= 1 else f"{record['elapsed_s']:.0f} s"
    device = m["device"] + (f" ({m['gpu']})" if m.get("gpu") else "")
    return (
        f"*Measured by `{record['command']}` on {record['date']} ({took}; {how}). Machine: {m['platform']}, "
        f"{m['cpu']}, {m['cpus']} CPUs, Python {m['python']}, torch {m['torch']}, device {device}; nice "
        f"{m['nice']}, load average {m['load_avg_1min']:g} as it ended (a shared machine: compare figures of "
        "one table only).*"
    )


def render(name: str, results: Path = RESULTS) -> str:
    """The text between ``name``'s markers, made from ``results/<name>.json``.

    Raises:
        MissingResults: no renderer for ``name``, or no JSON record for it.
    """
    if name not in RENDERERS:
        raise MissingResults(f"no renderer for benchmarks.{name} (known: {', '.join(RENDERERS)})")
    path = results / f"{name}.json"
    if not path.exists():
        raise MissingResults(f"{path} is missing: run python -m benchmarks.{name} --save {path}")
    record = json.loads(path.read_text(encoding="utf-8"))
    return "\n".join(["", *RENDERERS[name](record), ""]) + "\n"


def rewrite(text: str, results: Path = RESULTS) -> str:
    """``text`` with every block between markers made again from ``results``."""
    return BLOCK.sub(lambda m: m.group(1) + render(m.group(2), results) + m.group(4), text)


def stale(text: str, results: Path = RESULTS) -> list[str]:
    """The names of the blocks in ``text`` that differ from what ``results`` gives."""
    return [m.group(2) for m in BLOCK.finditer(text) if m.group(3) != render(m.group(2), results)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.docs", description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if a table is not what its JSON gives")
    p.add_argument(
        "--doc",
        type=Path,
        action="append",
        help="a page (repeatable; default: docs/performance.md, README.md, docs/explanation/parametrizations.md)",
    )
    p.add_argument("--results", type=Path, default=RESULTS, help="the JSON records (default benchmarks/results)")
    args = p.parse_args(argv)
    status = 0
    for doc in args.doc or DOCS:
        status = max(status, page(doc, args.results, args.check))
    return status


def page(doc: Path, results: Path, check: bool) -> int:
    """Check (``check``) or write the blocks of one page; the exit status."""
    text = doc.read_text(encoding="utf-8")
    try:
        names = [m.group(2) for m in BLOCK.finditer(text)]
        if check:
            out = stale(text, results)
            if out:
                print(f"{doc}: stale tables: {', '.join(out)}; run: python -m benchmarks.docs")
                return 1
            print(f"{doc}: {len(names)} tables up to date ({', '.join(names)})")
            return 0
        new = rewrite(text, results)
    except MissingResults as e:
        print(f"{doc}: {e}", file=sys.stderr)
        return 1
    if new != text:
        doc.write_text(new, encoding="utf-8")
    print(f"{doc}: {len(names)} tables written ({', '.join(names)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
