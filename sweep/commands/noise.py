"""``python -m sweep.noise STUDY.yaml [--seeds 8] [--trial N]`` — how far one configuration's value moves
with its seed alone, before a search (or after it) chases differences that are only that.

A trial trains its configuration once, with one seed (model initialisation, batch order); on a small problem
that seed can move the value more than the loss weights do. This command trains one configuration with
``--seeds`` fresh seeds (those an evaluation uses, never a trial's) — as one vectorized group where the loop
allows, so it costs about one training's wall time on a device with room — and prints, per target: the
seeds' mean, standard deviation, 95 % interval of the mean and range; the smallest difference between two
trials' values that is more than seed noise (1.96·√2·sd, at 95 %); and what ``objective.repeats`` would make
of it. Which configuration: ``--trial N``'s, else the study's best trial's when the study has run, else the
file's objective with equal loss weights (the first trial a study trains). Nothing is written: no study,
no MLflow run.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from objectives.config import LoopCommon
from objectives.helpers import weights_from_log10_ratios
from objectives.loops import LOOPS, train_group, why_not
from objectives.problems import build_problem
from sweep.commands.cli import add_cpu_threads, apply_cpu_threads, load_or_report, study_parser
from sweep.core.errors import EXIT_CONFIG, EXIT_OK, EXIT_RUNTIME, SweepError, print_error
from sweep.core.interrupts import interruptible
from sweep.core.records import Attr
from sweep.results.evaluation import config_for, evaluation_seeds, mean_ci
from sweep.studyfile.sections import StudySection
from sweep.studyfile.space import SearchSection, resolve

Z95_DIFF = 1.96 * math.sqrt(2.0)  # two independent values differ by more than this many sd 5 % of the time


@dataclass(frozen=True)
class Measured:
    """The configuration measured: its resolved config as recorded, which it is in words, and the trial's
    own values (its one seed) when it is a trial's."""

    config: dict[str, Any]
    which: str
    own: tuple[float, ...] | None = None


def configuration(study: StudySection, search: SearchSection, objective: LoopCommon, number: int | None) -> Measured:
    """Trial ``number``'s configuration, else the best trial's when the study has run (one target), else
    the file's objective with equal loss weights, resolved as the study's first trial.

    Raises:
        SweepError: ``number`` was asked for but the study or that trial is not there.
    """
    from sweep.storage.storage import load_existing_study

    try:
        stored = load_existing_study(study.name, study.storage)
    except SweepError:
        if number is not None:
            raise
        stored = None
    if stored is not None:
        done = [t for t in stored.get_trials(deepcopy=False) if t.values is not None and Attr.CONFIG in t.user_attrs]
        trial = next((t for t in done if t.number == number), None)
        if number is not None and trial is None:
            raise SweepError(f"study {study.name!r} has no complete trial #{number}")
        if trial is None and done and not study.multi_objective:
            trial = stored.best_trial
        if trial is not None:
            which = f"trial #{trial.number}" if number is not None else f"the best trial (#{trial.number})"
            return Measured(trial.user_attrs[Attr.CONFIG], which, tuple(trial.values))
    weights = tuple(objective.weights)
    if search.weights.parametrization != "fixed":
        weights = weights_from_log10_ratios([0.0] * (len(objective.loss_terms) - 1))
    cfg = resolve(objective, study.seed, 0, {}, weights)
    return Measured(cfg.model_dump(mode="json"), "the file's objective with equal loss weights")


def values(cfgs: Sequence[LoopCommon], targets: Sequence[str], best: Sequence[bool | None], progress: bool) -> list:
    """Each config's value of each target (the last epoch's, or its best with ``best[i]`` = lower is better),
    trained as one vectorized group where the loop allows, else one after another; ``nan`` for a seed whose
    training diverged."""
    from tqdm.auto import tqdm

    from objectives.helpers import NonFiniteLossError

    problem = build_problem(cfgs[0].problem.name, cfgs[0].problem.options, cfgs[0].data_seed, cfgs[0].loop)
    history: list[list[dict[str, float]]] = [[] for _ in cfgs]
    together = not why_not(cfgs, problem)
    steps = cfgs[0].epochs * (1 if together else len(cfgs))
    bar = tqdm(total=steps, desc="noise", unit="epoch", disable=not (progress and sys.stderr.isatty()))

    def reporter(i: int) -> Any:
        def report(epoch: int, metrics: dict[str, float]) -> None:
            history[i].append(dict(metrics))
            if i == 0 or not together:
                bar.update()

        return report

    try:
        if together:
            results = train_group(cfgs, [reporter(i) for i in range(len(cfgs))], problem=problem)
        else:
            results = []
            for i, cfg in enumerate(cfgs):
                try:
                    results.append(LOOPS[cfg.loop].train(cfg, reporter(i), problem=problem))
                except NonFiniteLossError as e:
                    results.append(e)
    finally:
        bar.close()
    out = []
    for result, epochs in zip(results, history, strict=True):
        row = []
        for target, lower in zip(targets, best, strict=True):
            series = [e[target] for e in epochs]
            if isinstance(result, BaseException) or not series:
                row.append(math.nan)
            elif lower is None:
                row.append(series[-1])
            else:
                row.append(min(series) if lower else max(series))
        out.append(row)
    return out


def summary(target: str, seeds: Sequence[float], own: float | None = None) -> list[str]:
    """What the seeds' values of ``target`` say, in lines."""
    finite = [v for v in seeds if math.isfinite(v)]
    lines = [f"{target}:"]
    if len(finite) < 2:
        return [*lines, f"  {len(finite)} of {len(seeds)} seeds trained to the end: too few to measure a spread"]
    interval = mean_ci(finite)
    sd = statistics.stdev(finite)
    lines.append(f"  mean {interval.mean:.6g}, sd {sd:.3g} ({sd / abs(interval.mean):.1%} of the mean)"
                 if interval.mean else f"  mean {interval.mean:.6g}, sd {sd:.3g}")  # fmt: skip
    spread = f"range {min(finite):.6g} – {max(finite):.6g}"
    lines.append(f"  95 % interval of the mean ± {interval.half_width:.3g}; {spread}")
    if len(finite) < len(seeds):
        lines.append(f"  {len(seeds) - len(finite)} of {len(seeds)} seeds diverged (left out of these figures)")
    lines.append(f"  two trials' values closer than {Z95_DIFF * sd:.3g} differ by their seeds as much as by their "
                 "configurations (95 %)")  # fmt: skip
    for r in (4, 16):
        lines.append(f"  with objective.repeats: {r} (a trial's value the mean of {r} seeds; {r}× the training): "
                     f"{Z95_DIFF * sd / math.sqrt(r):.3g}")  # fmt: skip
    if own is not None and math.isfinite(own):
        away = (own - interval.mean) / sd
        lines.append(f"  the trial's own value {own:.6g} (its one seed) is {away:+.2f} sd from these seeds' mean")
    return lines


def parser() -> argparse.ArgumentParser:
    p = study_parser(
        "python -m sweep.noise",
        "How much one configuration's value moves with its seed alone: train it with fresh seeds (as one "
        "vectorized group where the loop allows) and print the spread, the smallest difference between two "
        "trials that is more than noise, and what objective.repeats would make of it. Writes nothing.",
        "python -m sweep.noise studies/quickstart.yaml --seeds 8",
    )
    p.add_argument("--seeds", type=int, default=8, help="fresh seeds to train the configuration with (default 8)")
    p.add_argument("--trial", type=int, help="this trial's configuration (default: the best trial's, else the file's)")
    p.add_argument("--device", default="auto", help="device for the training (default: auto)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (it is shown only on a terminal)")
    add_cpu_threads(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return interruptible(lambda: _main(args), "Interrupted: nothing was written.")


def _main(args: argparse.Namespace) -> int:
    sf = load_or_report(args)
    if sf is None:
        return EXIT_CONFIG
    if args.seeds < 2:
        print_error(f"--seeds {args.seeds}: give at least 2 (a spread needs two values)")
        return EXIT_CONFIG
    apply_cpu_threads(args.cpu_threads)
    try:
        measured = configuration(sf.study, sf.search, sf.objective, args.trial)
    except SweepError as e:
        print_error(e)
        return EXIT_RUNTIME
    seeds = evaluation_seeds(sf.study.seed, args.seeds)
    cfgs = [config_for(measured.config, seed, args.device) for seed in seeds]
    targets = list(sf.study.metric)
    best = [(d == "minimize") if sf.study.score == "best" else None for d in sf.study.directions]
    started = time.perf_counter()
    rows = values(cfgs, targets, best, not args.no_progress)
    print(f"Seed noise of {sf.study.name}: {measured.which}, {len(seeds)} fresh seeds × {cfgs[0].epochs} epochs "
          f"({time.perf_counter() - started:.1f} s)")  # fmt: skip
    for i, target in enumerate(targets):
        own = measured.own[i] if measured.own is not None else None
        print("\n".join(summary(target, [row[i] for row in rows], own)))
    return EXIT_OK
