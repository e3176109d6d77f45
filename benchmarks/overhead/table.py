"""The table of ``benchmarks.overhead``: its rows (median (min–max) over the repeats) and notes, from the runs."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks.overhead.harness import Run, studies


def spread(values: Sequence[float], fmt: Callable[[float], str]) -> str:
    """``median (min–max)`` of ``values``; just the value for one."""
    if len(values) == 1:
        return fmt(values[0])
    return f"{fmt(statistics.median(values))} ({fmt(min(values))}–{fmt(max(values))})"


def seconds(x: float) -> str:
    return f"{x:.2f} s" if abs(x) < 10 else f"{x:.1f} s"


def millis(x: float) -> str:
    return f"{x * 1000:.2f} ms"


def times(x: float) -> str:
    return f"{x:.2f}×"


def mib(x: float) -> str:
    return f"{x:.0f} MiB"


def per_min(x: float) -> str:
    return f"{x:.1f}/min"


def table(runs: dict[str, list[Run]], rows: Sequence[str], quick: bool) -> tuple[list[dict[str, Any]], list[str]]:
    """The table rows and notes, from the runs.

    Each row: ``measure``, ``sweep``, ``reference``, ``ratio`` (the text of the table's cells), ``row`` (its
    name: a name of ``ROWS``, ``per_trial_excl`` or ``rss_peer`` for the second row of those) and ``median``
    (the medians behind the cells: ``sweep`` and ``reference`` in seconds, MiB or trials/min, ``ratio``).
    """
    specs = studies(quick)
    out: list[dict[str, Any]] = []
    notes: list[str] = []

    def wall(key: str) -> list[float]:
        return [r.wall for r in runs[key]]

    def ratios(a: Sequence[float], b: Sequence[float]) -> list[float]:
        return [x / y for x, y in zip(a, b, strict=True)]

    def add(name: str, measure: str, sweep: str, reference: str, ratio: str, values: Sequence[list[float]]) -> None:
        medians = dict(zip(("sweep", "reference", "ratio"), (statistics.median(v) for v in values), strict=True))
        out.append(
            {"measure": measure, "sweep": sweep, "reference": reference, "ratio": ratio, "row": name, "median": medians}
        )

    def versus_hand(name: str, key: str, measure: str) -> None:
        a, b = wall(key), wall(f"{key}/hand")
        r = ratios(a, b)
        add(name, measure, spread(a, seconds), f"hand-written {spread(b, seconds)}", spread(r, times), (a, b, r))

    def overhead(key: str) -> list[float]:
        return [a.wall - b.wall for a, b in zip(runs[key], runs[f"{key}/hand"], strict=True)]

    for row in rows:
        if row == "quickstart":
            versus_hand(row, "qs", f"{specs['qs'].label} wall, sweep / hand-written")
        elif row == "peer":
            a, c = wall("qs"), wall("peer")
            add(
                row,
                f"{specs['qs'].label} wall, sweep / peer (plain Optuna + MLflow)",
                spread(a, seconds),
                f"peer {spread(c, seconds)}",
                spread(ratios(a, c), times),
                (a, c, ratios(a, c)),
            )
            notes.append(
                f"epochs trained in the quickstart: sweep {spread([r.epochs for r in runs['qs']], str)}, peer "
                f"{spread([r.epochs for r in runs['peer']], str)} (different samples, different pruning)"
            )
        elif row == "long_model":
            versus_hand(row, "lm", f"long trials (i): {specs['lm'].label}")
        elif row == "long_epochs":
            versus_hand(row, "le", f"long trials (ii): {specs['le'].label}")
        elif row == "per_trial":
            n = [r.trials for r in runs["qs"]]
            per = [d / t for d, t in zip(overhead("qs"), n, strict=True)]
            train = [r.train_s / r.trials for r in runs["qs/hand"] if r.train_s is not None]
            add(
                row,
                "fixed cost per trial: (sweep − hand) / trials, quickstart",
                spread(per, seconds),
                f"hand-written training {spread(train, seconds)} / trial",
                spread(ratios(per, train), times),
                (per, train, ratios(per, train)),
            )
            if "ot" in runs:
                excl = [(q - o) / (t - 1) for q, o, t in zip(overhead("qs"), overhead("ot"), n, strict=True) if t > 1]
                if excl:
                    add(
                        "per_trial_excl",
                        "fixed cost per trial, start-up excluded: (Δ_quickstart − Δ_one-trial) / (trials − 1)",
                        spread(excl, seconds),
                        f"hand-written training {spread(train, seconds)} / trial",
                        spread(ratios(excl, train), times),
                        (excl, train, ratios(excl, train)),
                    )
        elif row == "per_epoch":
            extra = [a.epochs - b.epochs for a, b in zip(runs["le"], runs["se"], strict=True)]
            per = [(x - y) / e for x, y, e in zip(overhead("le"), overhead("se"), extra, strict=True)]
            train = [r.train_s / r.epochs for r in runs["le/hand"] if r.train_s is not None]
            add(
                row,
                f"cost per epoch beyond training: {specs['le'].label} vs {specs['se'].label}",
                spread(per, millis),
                f"hand-written training {spread(train, millis)} / epoch",
                spread(ratios(per, train), times),
                (per, train, ratios(per, train)),
            )
        elif row == "loop":
            loops = [r.loop for r in runs["loop"] if r.loop]
            per = [(statistics.median(x["sweep_s"]) - statistics.median(x["hand_s"])) / x["epochs"] for x in loops]
            hand = [statistics.median(x["hand_s"]) / x["epochs"] for x in loops]
            r = [1 + p / h for p, h in zip(per, hand, strict=True)]
            add(
                row,
                "the loop's own cost per epoch, in process (no Optuna or MLflow): sweep's dual_loss.train vs "
                "the hand-written loop computing the same metrics",
                spread(per, millis),
                f"hand-written {spread(hand, millis)} / epoch",
                spread(r, times),
                (per, hand, r),
            )
            same = sum(bool(x["identical"]) for x in loops)
            notes.append(f"the loop row: {same} of {len(loops)} runs gave bit-identical per-epoch values on both sides")
        elif row == "one_trial":
            versus_hand(row, "ot", "one-trial run, whole process (--n-trials 1)")
        elif row == "rss":
            a, b = [r.rss_mib for r in runs["qs"]], [r.rss_mib for r in runs["qs/hand"]]
            add(
                row,
                "peak RSS of the quickstart process, sweep / hand-written",
                spread(a, mib),
                f"hand-written {spread(b, mib)}",
                spread(ratios(a, b), times),
                (a, b, ratios(a, b)),
            )
            c = [r.rss_mib for r in runs["peer"]]
            add(
                "rss_peer",
                "peak RSS of the quickstart process, sweep / peer",
                spread(a, mib),
                f"peer {spread(c, mib)}",
                spread(ratios(a, c), times),
                (a, c, ratios(a, c)),
            )
        elif row == "workers":
            w2 = [60 * r.trials / r.wall for r in runs["w2"]]
            w1 = [60 * r.trials / r.wall for r in runs["qs"]]  # the quickstart runs: --workers 1
            add(
                row,
                "trials/min of the whole quickstart run, --workers 2 / --workers 1",
                spread(w2, per_min),
                f"--workers 1 {spread(w1, per_min)}",
                spread(ratios(w2, w1), times),
                (w2, w1, ratios(w2, w1)),
            )
        elif row == "workers_long":
            w2 = [60 * r.trials / r.wall for r in runs["wl2"]]
            w1 = [60 * r.trials / r.wall for r in runs["wl"]]
            add(
                row,
                f"trials/min of the whole run, {specs['wl'].label}, --workers 2 / --workers 1",
                spread(w2, per_min),
                f"--workers 1 {spread(w1, per_min)}",
                spread(ratios(w2, w1), times),
                (w2, w1, ratios(w2, w1)),
            )
    for key in (k for k in runs if runs[k] and sum(r.failed for r in runs[k])):
        notes.append(
            f"{specs[key].label}: {sum(r.failed for r in runs[key])} failed trial(s) over the repeats, which "
            "the hand-written replay does not retrain"
        )
    for key in (k for k in runs if k.endswith("/hand")):
        worst = max(r.max_abs_diff or 0.0 for r in runs[key])
        same = sum(r.identical[0] for r in runs[key] if r.identical)
        total = sum(r.identical[1] for r in runs[key] if r.identical)
        train = [r.train_s / r.trials for r in runs[key] if r.train_s is not None and r.trials]
        notes.append(
            f"hand-written replay of {specs[key.split('/')[0]].label}: {same}/{total} per-epoch values "
            f"bit-identical to the study's, max abs diff {worst:.3g}; training {spread(train, seconds)} per trial"
        )
    return out, notes


def markdown(rows: list[dict[str, Any]], notes: list[str], header: str) -> str:
    lines = [header, "", "| measure | sweep | reference | ratio |", "|---|---|---|---|"]
    lines += [f"| {r['measure']} | {r['sweep']} | {r['reference']} | {r['ratio']} |" for r in rows]
    return "\n".join(lines + [""] + [f"- {n}" for n in notes])
