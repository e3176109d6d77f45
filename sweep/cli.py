"""What the study-reading commands (report, export, ui) share: the study-file argument and its loading."""

from __future__ import annotations

import argparse
from pathlib import Path

from sweep.config import StudyFile, load_study
from sweep.console import print_error
from sweep.errors import ConfigError


def study_parser(prog: str, description: str, example: str) -> argparse.ArgumentParser:
    """A parser with the study-file argument and ``--study-name``; each command adds its own options."""
    p = argparse.ArgumentParser(prog=prog, description=description, epilog=f"Example: {example}")
    p.add_argument("study_file", type=Path, help="the study YAML file (its storage holds the trials)")
    p.add_argument("--study-name", help="study name (overrides study.name)")
    p.add_argument(
        "--compare-value", metavar="CHOICE", help="a comparison (study.compare): the sub-study of this choice"
    )
    return p


def load_or_report(args: argparse.Namespace, one_study: bool = False) -> StudyFile | None:
    """The study file (a comparison's sub-study with ``--compare-value``), or ``None`` after printing the
    one-line error (the caller exits with 2). ``one_study``: a command that needs one study refuses a
    whole comparison."""
    from sweep.compare import member, members

    try:
        sf = load_study(args.study_file, {"study.name": args.study_name})
    except ConfigError as e:
        print_error(e)
        return None
    if sf.study.compare is None:
        return sf
    if args.compare_value is not None:
        try:
            return member(sf, args.compare_value).sf
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
