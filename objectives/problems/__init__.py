"""Problems: what a loop trains. A closed registry of built-ins plus one explicit user path.

A problem is built from its options and a data seed and supplies a model factory, two tasks
(train and validation tensors, a loss, optional metrics). Built-ins are one file each plus one line
in :data:`BUILTINS`. A user problem is named ``package.module:function``; that function is imported
and called (it runs the user's code) with the problem's ``options`` as keyword arguments plus
``seed``, and must return a :class:`Problem`.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import sysconfig
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from objectives.helpers import first_line
from objectives.problems import digits_codes, digits_images, digits_pair, digits_three, linear_pair
from objectives.problems.base import PROBLEM_KINDS, Builtin, CoupledProblem, LossFn, Problem, Task
from objectives.resolved import resolved

__all__ = [
    "BUILTINS",
    "Builtin",
    "CoupledProblem",
    "LossFn",
    "Problem",
    "ProblemError",
    "Task",
    "build_problem",
    "check_problem",
    "prepare",
]

BUILTINS: dict[str, Builtin] = {
    "linear_pair": linear_pair.BUILTIN,
    "digits_pair": digits_pair.BUILTIN,
    "digits_codes": digits_codes.BUILTIN,
    "digits_images": digits_images.BUILTIN,
    "digits_three": digits_three.BUILTIN,
}


class ProblemError(ValueError):
    """A problem reference or its options are invalid. ``key`` is the offending options key, if any."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


def is_user_path(name: str) -> bool:
    return ":" in name


def load_user_function(path: str) -> Callable[..., Problem]:
    """Import ``module:function`` (runs that module's code) and return the function.

    Only a problem builder is returned: a Python function (or class) outside the standard library that
    takes ``seed`` (by name, or through ``**options``). Anything else (``os:system``, a builtin, a
    constant) is refused before it is ever called.

    Raises:
        ProblemError: the module does not import (missing, or its code raised, or exited, while it was
            imported), has no such attribute, or the attribute is not a problem builder.
    """
    module_name, _, func_name = path.partition(":")
    if not module_name or not func_name:
        raise ProblemError(f"{path!r} is not of the form package.module:function")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ProblemError(f"cannot import module {module_name!r} ({first_line(e, with_type=False)})") from e
    except (Exception, SystemExit) as e:  # the module's own code failed (or called sys.exit) while imported
        raise ProblemError(f"cannot import module {module_name!r}: its code raised {first_line(e)}") from e
    func = getattr(module, func_name, None)
    if not callable(func):
        raise ProblemError(f"module {module_name!r} has no function {func_name!r}")
    _check_builder(path, module_name, func)
    return func


def _from_stdlib(module_name: str) -> bool:
    """Whether an imported module is Python's own (by name and by where its file is, so that a user
    package that happens to share a standard module's name, e.g. ``test``, is not mistaken for it)."""
    if module_name.partition(".")[0] not in sys.stdlib_module_names:
        return False
    file = getattr(sys.modules.get(module_name), "__file__", None)
    if file is None:
        return True  # built into the interpreter (posix, builtins...)
    where = Path(file).resolve()
    roots = {Path(sysconfig.get_paths()[k]).resolve() for k in ("stdlib", "platstdlib")}
    in_packages = "site-packages" in where.parts or "dist-packages" in where.parts
    return not in_packages and any(where.is_relative_to(root) for root in roots)


def _check_builder(path: str, module_name: str, func: Any) -> None:
    """Refuse, without calling it, a callable that cannot be a problem builder (see :func:`load_user_function`)."""
    expected = "a problem builder is a Python function def make(seed, **options) -> Problem"
    if not (inspect.isfunction(func) or inspect.isclass(func) or inspect.ismethod(func)):
        raise ProblemError(f"{path} is a {type(func).__name__}, not a Python function: {expected}")
    defined_in = getattr(func, "__module__", None) or ""
    for name in (module_name, defined_in):
        if _from_stdlib(name):
            raise ProblemError(f"{path} is from Python's standard library ({name}), not a problem: {expected}")
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError) as e:
        raise ProblemError(f"cannot read the signature of {path} ({e}): {expected}") from None
    takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in params.values())
    seed = params.get("seed")
    if not takes_kwargs and (seed is None or seed.kind is seed.POSITIONAL_ONLY):
        raise ProblemError(f"{path} takes no 'seed' argument: {expected}")


def _serves(builtin: Builtin, loop: str, kind: type | None) -> bool:
    """A built-in serves the loop it was written for, and any other loop that trains its problem type."""
    return builtin.loop == loop or (kind is not None and issubclass(builtin.kind, kind))


def check_problem(
    name: str, options: Mapping[str, Any], loop: str = "dual_loss", kind: type | None = None
) -> tuple[str, ...] | Mapping[str, tuple[str, ...]] | None:
    """Validate a problem reference for a loop without building it.

    Args:
        name: A built-in name or ``module:function``.
        options: The problem's options.
        loop: The loop's name.
        kind: The problem type the loop trains (its record's ``problem``), if known.

    Returns:
        The metric names its tasks report for a built-in (every task's, or a mapping by task), ``None``
        for a user problem (unknown until it is built).

    Raises:
        ProblemError: unknown name, bad options, or a user path that does not import (its module
            missing, or its code raising while imported: one line, no traceback).
    """
    if is_user_path(name):
        func = load_user_function(name)
        if "seed" in options:
            raise ProblemError("'seed' is passed by sweep (objective.data_seed), not an option", key="seed")
        params = inspect.signature(func).parameters
        takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in params.values())
        for key in options:
            if key not in params and not takes_kwargs:
                raise ProblemError(f"{name} takes no option {key!r}", key=key)
        return None
    builtin = BUILTINS.get(name)
    if builtin is None or not _serves(builtin, loop, kind):
        known = ", ".join(sorted(n for n, b in BUILTINS.items() if _serves(b, loop, kind)))
        if builtin is not None:
            raise ProblemError(f"problem {name!r} is for the {builtin.loop} loop; built-ins for {loop} are {known}")
        raise ProblemError(f"unknown problem {name!r}: built-ins are {known}, or give package.module:function")
    try:
        builtin.options.model_validate(options)
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        raise ProblemError(f"{err['msg']}", key=key) from e
    return builtin.metrics


def build_problem(
    name: str, options: Mapping[str, Any], seed: int, loop: str = "dual_loss", kind: type | None = None
) -> Problem | CoupledProblem:
    """Build a problem (tensors on the CPU) from its name, options and data seed, for ``loop``.

    Args:
        name: A built-in name or ``module:function``.
        options: The problem's options.
        seed: The data seed.
        loop: The loop it is for (a built-in names the loop it serves).
        kind: The problem type that loop trains (its :data:`objectives.loops.LOOPS` record's ``problem``);
            ``None`` accepts any problem type.

    Raises:
        ProblemError: what :func:`check_problem` refuses; a user function that raises (``NAME raised
            ValueError: ...``, its first line), calls ``sys.exit`` or returns anything but the problem
            type the loop trains.
    """
    check_problem(name, options, loop, kind)
    if is_user_path(name):
        func = load_user_function(name)
        try:
            problem = func(seed=seed, **options)
        except Exception as e:  # the user's code: one line naming it, not its traceback
            raise ProblemError(f"{name} raised {first_line(e)}") from e
        except SystemExit as e:  # sys.exit() in a builder would end sweep itself, silently with sys.exit(0)
            raise ProblemError(f"{name} called sys.exit({e.code!r}): a problem builder must return a problem") from e
    else:
        builtin = BUILTINS[name]
        problem = builtin.build(builtin.options.model_validate(options), seed)
    wanted = (kind,) if kind is not None else PROBLEM_KINDS
    if not isinstance(problem, wanted):
        names = " or ".join(f"objectives.problems.{w.__name__}" for w in wanted)
        got = "None" if problem is None else type(problem).__name__
        raise ProblemError(f"{name} returned {got}, not {names} (what the {loop} loop trains)")
    return problem


def prepare(cfg: Any, problem: Any, kind: type) -> tuple[Any, torch.device, Any]:
    """What every loop does first: refuse an unresolved config, build the problem if it was not given,
    check it is the kind the loop trains, and move its data to the device (once).

    Args:
        cfg: The loop's config; it must resolve (``seed``, ``data_seed`` set, a concrete ``device``).
        problem: The problem already built (the runner caches it across trials), or ``None``.
        kind: The problem type the calling loop trains.

    Returns:
        The config as its resolved type, the device, and the problem on that device.
    """
    cfg = resolved(cfg)
    if cfg.repeats > 1:
        raise ValueError(f"repeats {cfg.repeats}: train it with objectives.loops.train (each seed, then their mean)")
    device = torch.device(cfg.device)
    if problem is None:
        problem = build_problem(cfg.problem.name, cfg.problem.options, cfg.data_seed, cfg.loop, kind)
    if not isinstance(problem, kind):
        raise TypeError(f"the {cfg.loop} loop trains a {kind.__name__}, got {type(problem).__name__}")
    return cfg, device, problem.to(device)
