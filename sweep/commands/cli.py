"""What the commands share: the study-file argument and its loading (report, export, ui, evaluate), and the
``--cpu-threads`` option of every command that trains (run, evaluate, export).

Light to import (argparse only; the study file's modules load when a file is read): ``sweep.run`` imports
it before its Ctrl-C handler is in place.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sweep.studyfile.config import StudyFile

DEFAULT_CPU_THREADS = 1  # small models run faster single-threaded, and far faster when processes share the cores


def add_cpu_threads(p: argparse.ArgumentParser) -> None:
    """Add ``--cpu-threads N`` (default :data:`DEFAULT_CPU_THREADS`) to a command that trains.

    Args:
        p: The command's parser.
    """
    p.add_argument(
        "--cpu-threads",
        type=int,
        default=DEFAULT_CPU_THREADS,
        help=f"torch intra-op threads on CPU (default {DEFAULT_CPU_THREADS}: small models run faster "
        "single-threaded, and far faster when other processes share the cores; the same number gives the "
        "same values; 0 keeps torch's default)",
    )


def apply_cpu_threads(threads: int) -> None:
    """Train on ``threads`` torch threads from now on (``--cpu-threads``; 0 leaves torch's default).

    Args:
        threads: The option's value.
    """
    if threads > 0:
        import torch

        torch.set_num_threads(threads)


def study_parser(prog: str, description: str, example: str) -> argparse.ArgumentParser:
    """A parser with the study-file argument and ``--study-name``; each command adds its own options."""
    p = argparse.ArgumentParser(prog=prog, description=description, epilog=f"Example: {example}")
    p.add_argument("study_file", type=Path, help="the study YAML file (its storage holds the trials)")
    p.add_argument("--study-name", help="study name (overrides study.name)")
    p.add_argument(
        "--compare-value", metavar="CHOICE", help="a comparison (study.compare): the sub-study of this choice"
    )
    return p


def compares_nothing(args: argparse.Namespace) -> str:
    """The one line for ``--compare-value`` given with a file that makes no comparison."""
    return f"{args.study_file}: --compare-value {args.compare_value}: the file compares nothing (no study.compare)"


def load_or_report(args: argparse.Namespace, one_study: bool = False) -> StudyFile | None:
    """The study file (a comparison's sub-study with ``--compare-value``), or ``None`` after printing the
    one-line error (the caller exits with 2). ``one_study``: a command that needs one study refuses a
    whole comparison."""
    from sweep.core.errors import ConfigError, print_error
    from sweep.studyfile.compare import member, members
    from sweep.studyfile.config import load_study

    try:
        sf = load_study(args.study_file, {"study.name": args.study_name})
    except ConfigError as e:
        print_error(e)
        return None
    compare_value = getattr(args, "compare_value", None)
    if sf.study.compare is None:
        if compare_value is not None:  # a choice of a comparison the file does not make: not silently the whole study
            print_error(compares_nothing(args))
            return None
        return sf
    if compare_value is not None:
        try:
            return member(sf, compare_value).sf
        except ValueError as e:
            print_error(f"{args.study_file}: {e}")
            return None
    if one_study:
        choices = ", ".join(m.label for m in members(sf))
        print_error(
            f"{args.study_file}: study.compare: a comparison of {len(members(sf))} studies; "
            f"give --compare-value CHOICE ({choices})"
        )
        return None
    return sf
