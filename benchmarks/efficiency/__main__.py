"""``python -m benchmarks.efficiency`` — how much training each way of searching spends to find good loss weights.

For every case (:mod:`benchmarks.efficiency.cases`) and contender (:mod:`benchmarks.efficiency.contenders`),
``--seeds`` studies of ``--trials`` trials each. After every trial the study's pick (its best trial's
configuration) is scored on fresh seeds; *compute to target* is the training (epochs, summed over trials,
pruned ones until they stopped; and wall seconds) until the pick is within ``--target`` (1 %) of the case's
reference, or, for a noisy case, within the reference's 95 % confidence half-width. Median and interquartile
range over the study seeds; a study that never gets there within its trials counts as not reached (and is
shown as such). Writes ``results.json``, ``table.md`` and one plot per case (the pick's distance to the
reference against compute) to ``--out``; with ``--merge FILE``, the cases run replace theirs in ``FILE`` (a case
run for some contenders only: those contenders' studies) and the table and plots are those of every case there.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.efficiency.cases import CASES, Case
from benchmarks.efficiency.contenders import NAMES, Contender, contenders_for, run_study
from benchmarks.efficiency.reference import references

BUDGETS = (4, 8, 12, 16, 32)  # trials' worth of epochs at which the pick's quality is shown


def study_curve(case: Case, contender: Contender, seed: int, n_trials: int, ref: float) -> dict[str, Any]:
    """One study: after each trial, the compute spent so far and the pick's gap to the reference (a fraction)."""
    epochs, seconds, gaps = [], [], []
    total_e, total_s = 0, 0.0
    for step in run_study(case, contender, seed, n_trials):
        total_e += step.epochs
        total_s += step.seconds
        gap = math.inf if step.pick is None else case.quality(*step.pick) / ref - 1.0  # a loss: lower is better
        epochs.append(total_e)
        seconds.append(total_s)
        gaps.append(gap)
    return {"epochs": epochs, "seconds": seconds, "gaps": gaps}


def to_target(curve: dict[str, Any], target: float) -> tuple[float, float, float]:
    """(epochs, seconds, trials) until the pick is within ``target``; infinite when never."""
    for i, gap in enumerate(curve["gaps"]):
        if gap <= target:
            return curve["epochs"][i], curve["seconds"][i], i + 1
    return math.inf, math.inf, math.inf


def quartiles(values: list[float]) -> tuple[float, float, float]:
    """Median and interquartile range (linear interpolation between order statistics); a study that never
    reached the target is infinite and sorts last, so a median past it is infinite too."""
    ordered = sorted(values)

    def at(q: float) -> float:
        pos = q * (len(ordered) - 1)
        low, frac = int(pos), pos - int(pos)
        a = ordered[low]
        if frac == 0:
            return a
        b = ordered[low + 1]
        return math.inf if math.isinf(b) else a + (b - a) * frac

    return at(0.5), at(0.25), at(0.75)


def fmt(x: float, digits: int = 0) -> str:
    return "not reached" if math.isinf(x) else f"{x:.{digits}f}"


def summarise(results: dict[str, Any], target: float, epochs_per_trial: dict[str, int]) -> str:
    """The Markdown tables: compute to target per case and contender, with its ratio to the first contender."""
    lines = []
    for case in results["cases"]:
        name = case["name"]
        lines += [f"### {name}: {case['summary']}", ""]
        ref = case["reference"]
        goal = case_target(ref, target)
        lines.append(f"Reference: {case['metric']} {ref['value']:.5g} at {_where(ref)} ({_how(ref)}).")
        if "half_width" in ref:
            lines.append(f"Target: within ±{ref['half_width']:.3g} of it ({goal:.1%}), its 95 % confidence half-width.")
        lines.append("")
        head = [
            "method",
            f"epochs to {goal:.0%} (median [IQR])" if goal == target else f"epochs to {goal:.1%} (median [IQR])",
            "× user",
            "× optuna_log_ratio",
            "seconds",
            "trials",
            "reached",
            f"within {goal:.0%} after 12 trials" if goal == target else f"within {goal:.1%} after 12 trials",
            *(f"gap at {b} trials' epochs" for b in BUDGETS),
        ]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        hits = {row["name"]: [to_target(c, goal) for c in row["studies"]] for row in case["contenders"]}
        medians = {name: quartiles([h[0] for h in rows])[0] for name, rows in hits.items()}
        for row in case["contenders"]:
            mine = hits[row["name"]]
            e_med, e_q1, e_q3 = quartiles([h[0] for h in mine])
            ratios = [_ratio(e_med, medians.get(other, math.nan)) for other in ("user", "optuna_log_ratio")]
            twelve = sum(c["gaps"][min(12, len(c["gaps"])) - 1] <= goal for c in row["studies"])
            gaps = []
            for b in BUDGETS:
                at = [_gap_at(c, b * epochs_per_trial[name]) for c in row["studies"]]
                gaps.append(f"{statistics.median(at):.1%}")
            cells = [
                row["name"],
                f"{fmt(e_med)} [{fmt(e_q1)}, {fmt(e_q3)}]",
                *ratios,
                fmt(quartiles([h[1] for h in mine])[0], 2),
                fmt(quartiles([h[2] for h in mine])[0]),
                f"{sum(not math.isinf(h[0]) for h in mine)}/{len(mine)}",
                f"{twelve}/{len(mine)}",
                *gaps,
            ]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def case_target(ref: dict[str, Any], target: float) -> float:
    """The gap to a case's reference that counts: ``target``, or a noisy reference's 95 % half-width (relative)."""
    return ref["half_width"] / ref["value"] if "half_width" in ref else target


def _where(ref: dict[str, Any]) -> str:
    """Where a reference lies: its weights, and its other values."""
    shown = {p: f"{v:.3g}" if isinstance(v, float) else str(v) for p, v in ref.get("params", {}).items()}
    others = "".join(f", {path} = {value}" for path, value in shown.items())
    return f"w_a = {ref['w_a']:.3f} (log10 ratio {ref['log10_ratio']:+.1f}){others}"


def _how(ref: dict[str, Any]) -> str:
    """How a reference was found (references made before this was stored: the weights' grid of step 0.1)."""
    return ref.get("how", "best mean over fresh seeds on a grid of step 0.1")


def _ratio(mine: float, theirs: float) -> str:
    """``mine / theirs`` as shown: "—" when neither reached the target, "< 0.01" when only the other never did."""
    if math.isnan(theirs) or math.isinf(mine):
        return "—"
    if math.isinf(theirs):
        return "(they: not reached)"
    return f"{mine / theirs:.2f}"


def _gap_at(curve: dict[str, Any], epochs: int) -> float:
    """The pick's gap once at most ``epochs`` were spent (before any trial: infinite)."""
    gap = math.inf
    for spent, g in zip(curve["epochs"], curve["gaps"], strict=True):
        if spent > epochs:
            break
        gap = g
    return gap


def plot(results: dict[str, Any], out: Path, target: float) -> list[Path]:
    """One PNG per case: the pick's gap to the reference against epochs spent, median line and IQR band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for case in results["cases"]:
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for row in case["contenders"]:
            top = max(c["epochs"][-1] for c in row["studies"])
            xs = list(range(0, top + 1, max(1, top // 200)))
            at = [[_gap_at(c, x) for c in row["studies"]] for x in xs]
            finite = [(x, sorted(a)) for x, a in zip(xs, at, strict=True) if statistics.median(a) < math.inf]
            if not finite:
                continue
            xs_f = [x for x, _ in finite]
            med = [max(statistics.median(a), 1e-5) for _, a in finite]
            low = [max(a[len(a) // 4], 1e-5) for _, a in finite]
            high = [min(a[(3 * len(a)) // 4], 10.0) for _, a in finite]
            (line,) = ax.plot(xs_f, med, label=row["name"])
            ax.fill_between(xs_f, low, high, color=line.get_color(), alpha=0.15)
        ax.axhline(case_target(case["reference"], target), color="grey", linestyle="--", linewidth=0.8)
        ax.set_yscale("log")
        ax.set_xlabel("epochs trained (summed over trials)")
        ax.set_ylabel("pick's gap to the reference (fresh seeds)")
        ax.set_title(f"{case['name']}: {case['metric']}")
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out / f"{case['name']}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.efficiency", description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default=",".join(c.name for c in CASES), help="comma-separated cases (default: all)")
    p.add_argument("--contenders", default=",".join(NAMES), help="comma-separated (default: all)")
    p.add_argument("--seeds", type=int, default=10, help="studies per case and contender (default 10)")
    p.add_argument("--trials", type=int, default=32, help="trials per study (default 32)")
    p.add_argument("--target", type=float, default=0.01, help="the gap to the reference that counts (default 0.01)")
    p.add_argument("--references", action="store_true", help="recompute the --cases' references (slow)")
    p.add_argument(
        "--references-only",
        action="store_true",
        help="compute the --cases' missing or stale references (with --references: recompute them), train no study",
    )
    p.add_argument("--out", type=Path, default=Path(".sweep/benchmarks/efficiency"), help="output folder")
    p.add_argument(
        "--merge",
        type=Path,
        help="a results.json to merge into: the cases run replace theirs, the others are kept (written back there)",
    )
    p.add_argument("--again", type=Path, help="write the table and plots again from a results.json, training nothing")
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    for option, given, known in (
        ("--cases", args.cases, [c.name for c in CASES]),
        ("--contenders", args.contenders, NAMES),
    ):
        unknown = [n for n in given.split(",") if n not in known]
        if unknown:
            p.error(f"{option}: unknown {', '.join(unknown)} (known: {', '.join(known)})")
    cases = [c for c in CASES if c.name in args.cases.split(",")]
    if args.again is not None:
        return _write(json.loads(args.again.read_text()), args.out, args.target, cases, save=False)
    refs = references(refresh=args.references, cases=cases)
    if args.references_only:
        for case in cases:
            print(f"{case.name}: {case.metric} {refs[case.name]['value']:.5g} at {_where(refs[case.name])}")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    results: dict[str, Any] = {
        "command": " ".join(["python -m benchmarks.efficiency", *(argv if argv is not None else sys.argv[1:])]),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch thread, torch {torch.__version__}, CPU",
        "seeds": args.seeds,
        "trials": args.trials,
        "cases": [],
    }
    for case in cases:
        ref = refs[case.name]
        row: dict[str, Any] = {"name": case.name, "summary": case.summary, "metric": case.metric, "reference": ref}
        row["contenders"] = []
        for contender in contenders_for(case, args.contenders.split(",")):
            studies = [study_curve(case, contender, s, args.trials, ref["value"]) for s in range(args.seeds)]
            row["contenders"].append({"name": contender.name, "summary": contender.summary, "studies": studies})
            print(f"{case.name} / {contender.name}: done ({time.time() - started:.0f} s)", file=sys.stderr)
        results["cases"].append(row)
    for row in results["cases"]:
        row["reference"] = {k: v for k, v in row["reference"].items() if k != "grid"}
        row["run"] = {"command": results["command"], "seconds": round(time.time() - started)}
    if args.merge is None:
        return _write(results, args.out, args.target, cases)
    merged = merge(json.loads(args.merge.read_text()) if args.merge.exists() else None, results)
    args.merge.write_text(json.dumps(merged) + "\n")
    print(f"merged into {args.merge}", file=sys.stderr)
    return _write(
        merged, args.out, args.target, [c for c in CASES if c.name in {r["name"] for r in merged["cases"]}], False
    )


def merge(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """``new``'s cases, and ``old``'s others, in the order of :data:`CASES` (the same seeds and trials, or refused);
    of a case in both with the same reference, ``old``'s contenders that ``new`` did not run are kept."""
    if old is None:
        return new
    if (old["seeds"], old["trials"]) != (new["seeds"], new["trials"]):
        raise SystemExit(
            f"--merge: {old['seeds']} seeds × {old['trials']} trials there, {new['seeds']} × {new['trials']} now"
        )
    kept = [{"run": {"command": old.get("command")}, **r} for r in old["cases"]]  # rows saved before "run" was
    rows = {r["name"]: r for r in kept}
    for row in new["cases"]:  # a case run again: its contenders run replace theirs, the others are kept
        before = rows.get(row["name"])
        if before is not None and "contenders" in before and _same(before["reference"], row["reference"]):
            ran = {c["name"] for c in row["contenders"]}
            both = {c["name"]: c for c in before["contenders"] if c["name"] not in ran} | {
                c["name"]: c for c in row["contenders"]
            }
            row = {**row, "contenders": [both[n] for n in NAMES if n in both]}
        rows[row["name"]] = row
    return {**new, "cases": [rows[c.name] for c in CASES if c.name in rows]}


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two references are one (their value, metric and point; not how they are described)."""
    described = {"how", "command", "search", "params", "seconds"}
    return {k: v for k, v in a.items() if k not in described} == {k: v for k, v in b.items() if k not in described}


def _write(results: dict[str, Any], out: Path, target: float, cases: list[Case], save: bool = True) -> int:
    """``results.json`` (``save``), ``table.md`` and the plots in ``out``; the table printed."""
    out.mkdir(parents=True, exist_ok=True)
    epochs = {c.name: c.study_file.objective.epochs for c in CASES}
    results = {**results, "cases": [r for r in results["cases"] if r["name"] in {c.name for c in cases}]}
    text = summarise(results, target, epochs)
    if save:
        (out / "results.json").write_text(json.dumps(results) + "\n")
    (out / "table.md").write_text(text + "\n")
    plots = plot(results, out, target)
    print(text)
    print(f"wrote {'results.json, ' if save else ''}table.md and {len(plots)} plot(s) to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
