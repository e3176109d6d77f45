"""``python -m sweep.noise STUDY.yaml [--seeds 8] [--trial N]`` — how far one configuration's value moves
with its seed alone, before a search (or after it) chases differences that are only that.

A trial trains its configuration once, with one seed (model initialisation, batch order); on a small problem
that seed can move the value more than the loss weights do. This command trains one configuration with
``--seeds`` fresh seeds (those an evaluation uses, never a trial's) — as one vectorized group where the loop
allows, so it costs about one training's wall time on a device with room — and prints, per target: the
seeds' mean, standard deviation, 95 % interval of the mean and range; the smallest difference between two
trials' values that is more than seed noise (1.96·√2·sd, at 95 %); and what ``objective.repeats`` would make
of it. Which configuration: complete trial ``--trial N``'s, else the study's best trial's when it has a complete
one, else the file's objective with equal loss weights (the study's first trial's weights; a searched key with
one choice, such as a comparison's compared key, at that choice). Nothing is written: no study, no MLflow run.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from objectives.config import LoopCommon
from objectives.helpers import weights_from_log10_ratios
from objectives.loops import LOOPS, train_group, why_not
from objectives.problems import build_problem
from sweep.commands.cli import add_cpu_threads, apply_cpu_threads, load_or_report, study_parser
from sweep.core.errors import EXIT_CONFIG, EXIT_OK, EXIT_RUNTIME, SweepError, print_error, to_stderr
from sweep.core.interrupts import interruptible
from sweep.core.records import Attr
from sweep.results.evaluation import config_for, evaluation_seeds, mean_ci
from sweep.results.scoring import EarlyStop, Score
from sweep.studyfile.sections import StudySection
from sweep.studyfile.space import CategoricalParam, SearchSection, resolve

Z95_DIFF = 1.96 * math.sqrt(2.0)  # two independent values differ by more than this many sd 5 % of the time


@dataclass(frozen=True)
class Measured:
    """The configuration measured: its resolved config as recorded, which it is in words, and the trial's
    own values when it is a trial's (the mean of its ``repeats`` seeds: one seed unless it trained more)."""

    config: dict[str, Any]
    which: str
    own: tuple[float, ...] | None = None

    @property
    def repeats(self) -> int:
        """How many seeds the trial's own values are the mean of."""
        return int(self.config.get("repeats", 1))


def configuration(study: StudySection, search: SearchSection, objective: LoopCommon, number: int | None) -> Measured:
    """Complete trial ``number``'s configuration, else the best trial's when the study has a complete one
    (one target), else the file's objective with equal loss weights (the study's first trial's weights), a
    searched key with one choice at that choice (a comparison's sub-study: its compared key).

    Raises:
        SweepError: ``number`` was asked for but the study or that complete trial is not there.
    """
    from optuna.trial import TrialState

    from sweep.storage.storage import load_existing_study

    try:
        stored = load_existing_study(study.name, study.storage)
    except SweepError:
        if number is not None:
            raise
        stored = None
    if stored is not None:
        # 1. Complete trials only: Optuna gives a pruned trial its last intermediate value, the value of a
        #    training cut short, and counts none of them as the best.
        trials = [t for t in stored.get_trials(deepcopy=False) if Attr.CONFIG in t.user_attrs]
        done = [t for t in trials if t.state == TrialState.COMPLETE and t.values is not None]
        trial = next((t for t in done if t.number == number), None)
        if number is not None and trial is None:
            other = next((t for t in trials if t.number == number), None)
            why = f" (it is {other.state.name.lower()})" if other is not None else ""
            raise SweepError(f"study {study.name!r} has no complete trial #{number}{why}")
        if trial is None and done and not study.multi_objective:
            trial = stored.best_trial
        if trial is not None:
            which = f"trial #{trial.number}" if number is not None else f"the best trial (#{trial.number})"
            return Measured(trial.user_attrs[Attr.CONFIG], which, tuple(trial.values))
    weights = tuple(objective.weights)
    if search.weights.parametrization != "fixed":
        weights = weights_from_log10_ratios([0.0] * (len(objective.loss_terms) - 1))
    # 2. A searched key with one choice is fixed (a comparison's sub-study fixes its compared key so): the
    #    configuration has it, not the objective's default.
    fixed = {
        name: spec.choices[0]
        for name, spec in search.params.items()
        if isinstance(spec, CategoricalParam) and len(spec.choices) == 1 and spec.when is None
    }
    cfg = resolve(objective, study.seed, 0, fixed, weights)
    which = "the file's objective with equal loss weights" + "".join(f", {k}={v}" for k, v in fixed.items())
    return Measured(cfg.model_dump(mode="json"), which)


def values(
    cfgs: Sequence[LoopCommon],
    targets: Sequence[str],
    best: Sequence[bool | None],
    progress: bool,
    score: Callable[[], Score] | None = None,
) -> list:
    """Each config's value of each target (the last epoch's, or its best with ``best[i]`` = lower is better),
    trained as one vectorized group where the loop allows, else one after another; ``nan`` for a seed whose
    training diverged. ``score`` (a fresh :class:`Score` per seed): the first target's value is the one a
    trial reports, early stopping included (the epochs up to the stop are those of the full training)."""
    import torch
    from tqdm.auto import tqdm

    from objectives.helpers import NonFiniteLossError, is_out_of_memory

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

    results: list[Any] = []
    try:
        if together:
            try:
                results = train_group(cfgs, [reporter(i) for i in range(len(cfgs))], problem=problem)
            except Exception as e:  # 1. n models need n× the memory of one: then one after another
                if not is_out_of_memory(e):
                    raise
                together = False
            if not together:  # the error (and the group's tensors it held) is gone here
                to_stderr(f"note: {len(cfgs)} seeds as one vectorized group ran out of memory; training them one "
                          "after another")  # fmt: skip
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                for h in history:
                    h.clear()
                bar.reset(total=cfgs[0].epochs * len(cfgs))
        if not together:
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
        for i, (target, lower) in enumerate(zip(targets, best, strict=True)):
            series = [e[target] for e in epochs]
            if isinstance(result, BaseException) or not series:
                row.append(math.nan)
            elif i == 0 and score is not None:
                row.append(scored(score(), series))
            elif lower is None:
                row.append(series[-1])
            else:
                row.append(min(series) if lower else max(series))
        out.append(row)
    return out


def scored(score: Score, series: Sequence[float]) -> float:
    """The value ``score`` gives ``series`` (one seed's target, epoch by epoch) as a trial's reporter fed it."""
    with contextlib.suppress(EarlyStop):
        for epoch, value in enumerate(series):
            score.add(epoch, value)
    return score.value()


def summary(target: str, seeds: Sequence[float], own: float | None = None, own_repeats: int = 1) -> list[str]:
    """What the seeds' values of ``target`` say, in lines; ``own``: the trial's value, the mean of its
    ``own_repeats`` seeds (compared in units of that mean's sd, sd/√repeats)."""
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
        if own_repeats == 1:
            away = (own - interval.mean) / sd
            lines.append(f"  the trial's own value {own:.6g} (its one seed) is {away:+.2f} sd from these seeds' mean")
        else:  # 2. a mean of r seeds varies by sd/√r: measured in that unit, not in one seed's sd
            away = (own - interval.mean) / (sd / math.sqrt(own_repeats))
            lines.append(f"  the trial's own value {own:.6g} (the mean of its {own_repeats} seeds) is {away:+.2f} "
                         f"sd/√{own_repeats} from these seeds' mean")  # fmt: skip
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
    sf = load_or_report(args, one_study=True)  # a comparison: one of its sub-studies (--compare-value)
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
    early = cfgs[0].early_stopping if not sf.study.multi_objective else None  # as a trial's reporter scores
    score = None if early is None else (lambda: Score(sf.study.directions[0], sf.study.score, early))
    rows = values(cfgs, targets, best, not args.no_progress, score)
    print(f"Seed noise of {sf.study.name}: {measured.which}, {len(seeds)} fresh seeds × {cfgs[0].epochs} epochs "
          f"({time.perf_counter() - started:.1f} s)")  # fmt: skip
    for i, target in enumerate(targets):
        own = measured.own[i] if measured.own is not None else None
        print("\n".join(summary(target, [row[i] for row in rows], own, measured.repeats)))
    return EXIT_OK
