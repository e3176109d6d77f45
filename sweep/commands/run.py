"""``python -m sweep.run STUDY.yaml`` — run or resume a study.

Exit status (:mod:`sweep.core.errors`): 0 done, 1 run-time failure (storage/tracking unreachable), 2 invalid
study file, 130 interrupted (Ctrl-C; re-run the same command to resume).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from sweep.commands.cli import add_cpu_threads, apply_cpu_threads, compares_nothing
from sweep.core.errors import EXIT_CONFIG, EXIT_INTERRUPTED, EXIT_OK, EXIT_RUNTIME, to_stderr
from sweep.core.interrupts import Interrupts

if TYPE_CHECKING:
    from sweep.studyfile.config import StudyFile


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m sweep.run",
        description=(
            "Run a loss-weight / hyperparameter search described by a study file. Re-running the same "
            "command resumes the study from its storage, adding trials until it has n_trials finished "
            "(complete or pruned) trials."
        ),
        epilog="Example: python -m sweep.run studies/quickstart.yaml --n-trials 5",
    )
    p.add_argument("study_file", type=Path, help="the study YAML file")
    p.add_argument("--n-trials", type=int, help="finished trials the study should have (overrides study.n_trials)")
    p.add_argument("--timeout", type=float, help="stop starting new trials after this many seconds")
    p.add_argument(
        "--parallel-trials",
        type=int,
        help="train this many trials at once as one vectorized program (overrides study.parallel_trials; "
        "members differing where it cannot vectorize train one after another, said in one line)",
    )
    p.add_argument("--study-name", help="study name (overrides study.name; also the default MLflow experiment)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (it is shown only on a terminal)")
    p.add_argument(
        "--verbose", action="store_true", help="also print Optuna's line per trial and a failed trial's traceback"
    )
    add_cpu_threads(p)  # shared with every command that trains (sweep.evaluate, sweep.export --seeds)
    p.add_argument(
        "--no-report", action="store_true", help="do not log the report (tables, plots) to the parent run at the end"
    )
    p.add_argument(
        "--workers",
        default="1",
        help="processes training trials on the study's storage, this one included (default 1; 'auto' = one per "
        "visible GPU). Several machines: run the same command on each against a shared postgresql:// storage",
    )
    p.add_argument(
        "--devices",
        help="GPUs to spread the workers over, round robin, as CUDA_VISIBLE_DEVICES entries (e.g. 0,1 or GPU "
        "UUIDs; default: the entries of CUDA_VISIBLE_DEVICES if set, else every GPU torch sees)",
    )
    p.add_argument(
        "--allow-changes",
        action="store_true",
        help="add trials to an existing study although the file changed what its trials are compared on "
        "(the objective, the search space, the targets); without it such a re-run is refused",
    )
    p.add_argument(
        "--compare-value",
        metavar="CHOICE",
        help="a comparison (study.compare): run only the sub-study of this choice (what --workers passes its "
        "processes; also to spread a comparison's choices over machines)",
    )
    p.add_argument(
        "--no-evaluate", action="store_true", help="skip the test-split evaluation the study file's evaluate: asks for"
    )
    p.add_argument("--worker", type=int, help=argparse.SUPPRESS)  # set by --workers for its processes
    p.add_argument(
        "--check",
        action="store_true",
        help="validate the study file and exit without opening storage or tracking. This imports and runs "
        "the problem's code (a user problem's module and function): it builds the problem and pushes one batch "
        "through its model(s), losses, metrics and a backward pass on the study's device. sweep writes nothing; "
        "the problem's own code may (a data cache)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    interrupts = Interrupts()
    worker = "--worker" in (sys.argv[1:] if argv is None else argv)
    if worker:  # a worker of --workers stops with its coordinator, however that one ends
        from sweep.execution.workers import watch_parent

        watch_parent()
    with interrupts.installed(inherit_ignored=not worker):  # from the start: Ctrl-C in start-up is orderly
        try:
            return _main(argv, interrupts)
        except KeyboardInterrupt:
            if not worker:  # a worker stops with its coordinator, which says it
                to_stderr("Interrupted before the study started: nothing was run.")
            return EXIT_INTERRUPTED


def _main(argv: list[str] | None, interrupts: Interrupts) -> int:
    args = parser().parse_args(argv)
    # Imported under the handler (Ctrl-C here is orderly), and only what a valid file needs next.
    from sweep.core.errors import ConfigError, print_error
    from sweep.studyfile.config import load_study

    overrides = {
        "study.n_trials": args.n_trials,
        "study.timeout": args.timeout,
        "study.name": args.study_name,
        "study.parallel_trials": args.parallel_trials,
    }
    try:
        with interrupts.raising():  # imports a user problem's module: its code may take long (nothing written)
            sf = load_study(args.study_file, overrides)
    except ConfigError as e:
        print_error(e)
        return EXIT_CONFIG
    if args.check:
        # The preflight of a run (build the problem, one batch through it) without storage or tracking.
        apply_cpu_threads(args.cpu_threads)
        try:
            with interrupts.raising():  # heavy imports, the user's code: nothing written, a signal ends it
                from sweep.execution.runner import preflight
                from sweep.trials.trial import ProblemCache

                checked = preflight(sf.study, sf.objective, args.study_file, ProblemCache())
        except ConfigError as e:
            print_error(e)
            return EXIT_CONFIG
        name = sf.objective.problem.name
        what = "one batch through the model(s) and losses" if checked else "the batch check ran out of memory"
        print(f"{args.study_file}: ok (problem {name} built, {what})")
        return EXIT_OK

    if sf.study.compare is None and args.compare_value is not None:  # not silently the whole study
        print_error(compares_nothing(args))
        return EXIT_CONFIG
    if sf.study.compare is not None:
        from sweep.studyfile.compare import member

        if args.compare_value is None:
            return _compare(sf, args, interrupts)
        try:
            sf = member(sf, args.compare_value).sf
        except ValueError as e:
            print_error(e)
            return EXIT_CONFIG
        return _run(sf, args, interrupts)[0]
    status = _run(sf, args, interrupts)[0]
    return _evaluate(sf, args) if status == EXIT_OK else status


def _compare(sf: StudyFile, args: argparse.Namespace, interrupts: Interrupts) -> int:
    """Each compared choice's sub-study in turn, nested under one MLflow run, then the evaluation."""
    from sweep.studyfile.compare import members
    from sweep.tracking.lineage import nest_under_comparison

    parents, worst = [], EXIT_OK
    for m in members(sf):
        print(f"== {sf.study.compare} = {m.value}: study {m.sf.study.name!r} ==", flush=True)
        args.compare_value = m.label  # passed on to --workers processes
        status, parent = _run(m.sf, args, interrupts)
        parents += [parent] if parent else []
        if status in (EXIT_CONFIG, EXIT_INTERRUPTED):
            worst = status
            break
        worst = max(worst, status)  # a choice whose trials all failed is a result: the others still run
    args.compare_value = None
    if parents:
        nest_under_comparison(sf.tracking, sf.study, parents)
    if worst in (EXIT_CONFIG, EXIT_INTERRUPTED):
        return worst
    return max(worst, _evaluate(sf, args))


def _evaluate(sf: StudyFile, args: argparse.Namespace) -> int:
    """The study file's ``evaluate:`` (test split, fresh seeds) once the search is done."""
    if sf.evaluate is None or args.no_evaluate or args.worker is not None:
        return EXIT_OK
    from sweep.commands.evaluate import run_evaluation

    print(f"Evaluating on the test split: top {sf.evaluate.top}, {sf.evaluate.seeds} fresh seeds each", flush=True)
    return run_evaluation(sf, args.study_file, sf.evaluate.top, sf.evaluate.seeds, progress=not args.no_progress)


def _run(sf: StudyFile, args: argparse.Namespace, interrupts: Interrupts) -> tuple[int, str | None]:
    """Run one study (with its workers): the exit status and its MLflow parent run."""
    from sweep.core.errors import ConfigError, SweepError, print_error
    from sweep.execution.runner import run_study
    from sweep.execution.workers import run_workers, worker_devices
    from sweep.studyfile.studyyaml import read_study_text
    from sweep.trials.console import summary  # heavy imports (optuna, mlflow) once the file is valid

    apply_cpu_threads(args.cpu_threads)
    try:
        workers, devices = worker_devices(args.workers, args.devices)
    except ValueError as e:
        print_error(e)
        return EXIT_CONFIG, None
    if sf.study.multi_objective and args.worker is None:
        to_stderr("note: multi-objective study: pruning is off (Optuna cannot prune multi-objective studies)")
    source_text = read_study_text(args.study_file)
    if args.worker is not None:
        from sweep.execution.workers import wait_at_gate

        if not wait_at_gate(interrupts):  # the coordinator's checks failed (it says why) or Ctrl-C
            return (EXIT_INTERRUPTED if interrupts.requested else EXIT_OK), None
    try:
        if workers > 1 and args.worker is None:
            outcome = run_workers(
                sf,
                args.study_file,
                source_text,
                workers,
                devices,
                _passthrough(args),
                progress=not args.no_progress,
                report=not args.no_report,
                interrupts=interrupts,
                allow_changes=args.allow_changes,
                verbose=args.verbose,
            )
        else:
            outcome = run_study(
                sf,
                args.study_file,
                source_text,
                progress=not args.no_progress,
                verbose=args.verbose,
                report=not args.no_report and args.worker is None,
                interrupts=interrupts,
                worker=args.worker,
                allow_changes=args.allow_changes,
            )
    except ConfigError as e:
        print_error(e)
        return EXIT_CONFIG, None
    except SweepError as e:
        print_error(e)
        return (EXIT_INTERRUPTED if interrupts.requested else EXIT_RUNTIME), None  # a wait a signal ended
    except Exception as e:
        from sweep.storage.resilient import storage_down

        down = storage_down(e)  # Optuna may fail on its own while handling the outage
        if down is None:
            raise
        print_error(down)
        return (EXIT_INTERRUPTED if interrupts.requested else EXIT_RUNTIME), None
    if args.worker is not None:
        to_stderr(f"worker {args.worker}: {outcome.ran} trial(s) run")
        from sweep.execution.workers import report_count

        report_count(outcome.ran, outcome.failed)  # how the coordinator counts the trials run now
        return (EXIT_INTERRUPTED if outcome.interrupted else EXIT_OK), None
    losses = sf.objective.loop_losses
    print(summary(outcome.study, outcome.tracker, outcome.storage, outcome.ran, sf.study, losses))
    parent = outcome.tracker.parent_id
    if outcome.interrupted:
        to_stderr("Interrupted: finished trials are saved; run the same command again to resume.")
        return EXIT_INTERRUPTED, parent
    if interrupts.requested:  # as the study ended (the report said so): its records are complete
        return EXIT_INTERRUPTED, parent
    if outcome.ran > 0 and outcome.failed == outcome.ran:
        print_error(
            f"all {outcome.ran} trial(s) run now failed; each run's error.txt in MLflow has the traceback "
            "(or re-run with --verbose)"
        )
        return EXIT_RUNTIME, parent
    if outcome.incomplete:
        print_error(outcome.incomplete)
        return EXIT_RUNTIME, parent
    return EXIT_OK, parent


def _passthrough(args: argparse.Namespace) -> list[str]:
    """The options every worker needs to resolve the same study as this process."""
    out = ["--no-report", "--no-progress", "--cpu-threads", str(args.cpu_threads)]
    for flag, value in (
        ("--n-trials", args.n_trials),
        ("--timeout", args.timeout),
        ("--study-name", args.study_name),
        ("--parallel-trials", args.parallel_trials),
        ("--compare-value", args.compare_value),
    ):
        if value is not None:
            out += [flag, str(value)]
    return out + (["--verbose"] if args.verbose else []) + (["--allow-changes"] if args.allow_changes else [])
