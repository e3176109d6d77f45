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
    return p


def load_or_report(args: argparse.Namespace) -> StudyFile | None:
    """The study file, or ``None`` after printing the one-line error (the caller exits with 2)."""
    try:
        return load_study(args.study_file, {"study.name": args.study_name})
    except ConfigError as e:
        print_error(e)
        return None
