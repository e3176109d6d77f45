"""Each case's reference: the best fresh-seed quality on a grid of its search space, kept in ``references.json``.

A case searching the weights alone is scored on every log10(w_a / w_b) of its range in steps of
:data:`GRID_STEP`. A case searching more (the learning rate) is scored on a coarse grid first (the ratio in
steps of :data:`COARSE_STEP`, each log-scale value in steps of a quarter decade, every categorical choice),
then on a fine grid around the coarse grid's best (its ratio ± :data:`COARSE_STEP` in steps of
:data:`GRID_STEP`, each log-scale value ± a quarter decade in sixteenths of a decade, its choices kept). The
quality is deterministic (the same fresh seeds for every configuration), so the best grid point is the
reference; a search may find a configuration between grid points that is slightly better (a negative gap).

A noisy case (one trial's value is mostly its seed's luck, and a grid over several values would cost too
much) gets :func:`noisy_reference`: a long study (:data:`LONG_TRIALS` trials of Optuna's multivariate TPE,
no pruning), its :data:`TOP` best trials' configurations scored on the fresh seeds, the best mean the
reference; its target is that mean's 95 % confidence half-width (Student's t over the fresh seeds).
"""

from __future__ import annotations

import itertools
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import optuna
from scipy.stats import t as student_t

from benchmarks.efficiency.cases import CASES, Case
from objectives.helpers import derive_seed, weights_from_log10_ratios
from sweep.studyfile.space import CategoricalParam, FloatParam, sample

REFERENCES = Path(__file__).with_name("references.json")
GRID_STEP = 0.1  # the fine grid over log10(w_a / w_b)
COARSE_STEP = 0.5  # the coarse grid over log10(w_a / w_b), where more than the weights is searched
DECADES = (0.25, 1 / 16)  # log10 steps of a log-scale float: coarse grid, fine grid
COMMAND = "python -m benchmarks.efficiency --references"
LONG_TRIALS, TOP = 200, 10  # a noisy case's long study, and how many of its best trials are scored


def two(log10_ratio: float) -> tuple[float, float]:
    """The two normalised weights of a log10 ratio."""
    return weights_from_log10_ratios([log10_ratio])  # type: ignore[return-value]


def steps(low: float, high: float, step: float) -> list[float]:
    """``low``, ``low + step`` ... up to ``high`` (included, also when the steps miss it)."""
    n = math.floor((high - low) / step + 1e-9)
    out = [round(low + i * step, 10) for i in range(n + 1)]
    return [*out, high] if out[-1] < high - 1e-9 else out


def _axis(path: str, spec: Any, centre: Any = None) -> list[Any]:
    """The grid values of one searched parameter: coarse, or fine around ``centre``."""
    if isinstance(spec, CategoricalParam):
        return list(spec.choices) if centre is None else [centre]
    if not (isinstance(spec, FloatParam) and spec.log):
        raise ValueError(f"reference grid: {path} must be a log-scale float or a categorical")
    low, high = math.log10(spec.low), math.log10(spec.high)
    if centre is not None:
        c = math.log10(centre)
        low, high, step = max(low, c - DECADES[0]), min(high, c + DECADES[0]), DECADES[1]
    else:
        step = DECADES[0]
    return [float(f"{10**e:.6g}") for e in steps(low, high, step)]


def grid(case: Case, centre: tuple[dict[str, Any], float] | None = None) -> list[tuple[dict[str, Any], float]]:
    """The grid's points ``(sampled values, log10 ratio)``: the whole space, or the fine grid around ``centre``."""
    w, params = case.study_file.search.weights, case.study_file.search.params
    if not params:
        return [({}, r) for r in steps(w.low, w.high, GRID_STEP)]
    if centre is None:
        ratios = steps(w.low, w.high, COARSE_STEP)
        axes = [_axis(p, s) for p, s in params.items()]
    else:
        c = centre[1]
        ratios = steps(max(w.low, c - COARSE_STEP), min(w.high, c + COARSE_STEP), GRID_STEP)
        axes = [_axis(p, s, centre[0][p]) for p, s in params.items()]
    return [(dict(zip(params, values, strict=True)), r) for values in itertools.product(*axes) for r in ratios]


def reference(case: Case) -> dict[str, Any]:
    """The best fresh-seed quality on the case's grid (coarse then fine where more than the weights is searched);
    a noisy case's: :func:`noisy_reference`."""
    if case.noisy:
        return noisy_reference(case)
    rows = [(sampled, r, case.quality(sampled, two(r))) for sampled, r in grid(case)]
    how = f"best mean over fresh seeds on a grid of log10(w_a / w_b) in steps of {GRID_STEP}"
    if case.study_file.search.params:
        coarse = len(rows)
        best = min(rows, key=lambda row: row[2])
        rows += [(s, r, case.quality(s, two(r))) for s, r in grid(case, (best[0], best[1]))]
        how = (
            f"best mean over fresh seeds on a grid of {coarse} points (log10(w_a / w_b) in steps of {COARSE_STEP}, "
            f"log-scale values in steps of {DECADES[0]} decade), refined around its best ({len(rows) - coarse} "
            f"points: steps of {GRID_STEP} and 1/{round(1 / DECADES[1])} decade)"
        )
    sampled, r, value = min(rows, key=lambda row: row[2])
    table = [[r, q] if not s else [r, s, q] for s, r, q in rows]
    return {"value": value, "log10_ratio": r, "w_a": two(r)[0], "params": sampled, "how": how, "grid": table}


def half_width(values: list[float], confidence: float = 0.95) -> float:
    """The half-width of the mean's ``confidence`` interval (Student's t, the sample standard deviation)."""
    return float(student_t.ppf(0.5 + confidence / 2, len(values) - 1)) * statistics.stdev(values) / len(values) ** 0.5


def noisy_reference(case: Case, trials: int = LONG_TRIALS, top: int = TOP) -> dict[str, Any]:
    """The best fresh-seed mean among the ``top`` best trials of a ``trials``-trial study, with its 95 % half-width."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(multivariate=True, seed=0))
    configs = {}
    for number in range(trials):
        trial = study.ask()
        configs[number] = sample(trial, case.study_file.search, case.study_file.objective)
        cfg = case.config(*configs[number], derive_seed(0, "reference", number))
        study.tell(trial, case.value(case.train(cfg)))
    best = sorted(study.trials, key=lambda t: t.value)[:top]
    rows = [(configs[t.number][0], configs[t.number][1], case.fresh(*configs[t.number])) for t in best]
    sampled, weights, values = min(rows, key=lambda row: statistics.fmean(row[2]))
    how = (
        f"best fresh-seed mean among the {top} best trials of a {trials}-trial study (Optuna's multivariate "
        "TPE, no pruning); the target is its 95 % confidence half-width"
    )
    table = [[math.log10(w[0] / w[1]), s, statistics.fmean(v)] for s, w, v in rows]
    r = math.log10(weights[0] / weights[1])
    return {
        **{"value": statistics.fmean(values), "log10_ratio": r, "w_a": weights[0], "params": sampled},
        **{"half_width": half_width(values), "fresh": values, "how": how, "grid": table},
    }


def _stale(stored: dict[str, Any] | None, case: Case) -> bool:
    """Whether a stored reference was made with other settings than the case's now."""
    if stored is None:
        return True
    made = (stored.get("objective"), stored.get("search"), stored.get("metric"))
    return made != (dict(case.objective), json.loads(json.dumps(case.search)), case.metric)


def references(refresh: bool = False, cases: list[Case] | None = None) -> dict[str, dict[str, Any]]:
    """Every case's reference (of ``cases``: those alone; the others stored stay as they are): from
    ``references.json``, computed (and written, with the seconds it took) where missing, made with other settings,
    or ``refresh``."""
    stored = json.loads(REFERENCES.read_text()) if REFERENCES.exists() else {}
    changed = False
    for case in cases if cases is not None else CASES:
        if refresh or _stale(stored.get(case.name), case):
            made = {"objective": dict(case.objective), "search": dict(case.search), "metric": case.metric}
            started = time.perf_counter()
            found = reference(case)
            stored[case.name] = {**found, **made, "command": COMMAND, "seconds": round(time.perf_counter() - started)}
            print(f"{case.name}: reference computed in {stored[case.name]['seconds']} s", file=sys.stderr)
            changed = True
    if changed:
        REFERENCES.write_text(json.dumps(stored, indent=1) + "\n")
    return stored
