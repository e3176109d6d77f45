"""The study-file schema: good files load into frozen objects; bad ones give one line naming the key."""

from __future__ import annotations

import codecs
import textwrap
import time
from pathlib import Path

import pydantic
import pytest

from sweep.core.errors import ConfigError
from sweep.studyfile.config import StudyFile, load_study, parse_study

MIN = "study: {name: s}\nobjective: {problem: linear_pair}\n"


def load_text(tmp_path: Path, text: str) -> StudyFile:
    path = tmp_path / "study.yaml"
    path.write_text(textwrap.dedent(text))
    return load_study(path)


GOOD = {
    "minimal": MIN,
    "every sampler: tpe": "study: {name: s, sampler: {type: tpe, n_startup_trials: 3, multivariate: false}}\n"
    "objective: {problem: linear_pair}",
    "sampler shorthand": "study: {name: s, sampler: random}\nobjective: {problem: linear_pair}",
    "gp": "study: {name: s, sampler: {type: gp, deterministic_objective: true}}\nobjective: {problem: linear_pair}",
    "cmaes": "study: {name: s, sampler: {type: cmaes, popsize: 6, sigma0: 0.5}}\nobjective: {problem: linear_pair}",
    "qmc": "study: {name: s, sampler: {type: qmc, qmc_type: halton}}\nobjective: {problem: linear_pair}",
    "nsga2 multi": "study: {name: s, sampler: {type: nsga2, population_size: 8},"
    " metrics: [val_a_loss, val_b_loss]}\nobjective: {problem: linear_pair}",
    "grid": "study: {name: s, sampler: grid}\nobjective: {problem: linear_pair}\n"
    "search: {weights: {grid: [-1, 0, 1]}, params: {mixing: {type: categorical, choices: [zip, cycle]},"
    " optimizer.lr: {type: float, low: 0.01, high: 0.03, step: 0.01}}}",
    "pruners": "study: {name: s, pruner: {type: patient, patience: 2, wrapped: {type: hyperband}}}\n"
    "objective: {problem: linear_pair}",
    "patient around a shorthand": "study: {name: s, pruner: {type: patient, patience: 2, wrapped: median}}\n"
    "objective: {problem: linear_pair}",
    "successive halving": "study: {name: s, pruner: {type: successive_halving, reduction_factor: 3}}\n"
    "objective: {problem: linear_pair}",
    "no pruner": "study: {name: s, pruner: none}\nobjective: {problem: linear_pair}",
    "accuracy target": "study: {name: s, metric: val_b_acc}\nobjective: {problem: digits_pair}",
    "multi objective": "study: {name: s, metrics: [val_a_loss, val_b_acc], directions: [minimize, maximize]}\n"
    "objective: {problem: digits_pair}",
    "conditional": "study: {name: s}\nobjective: {problem: linear_pair}\nsearch:\n  params:\n"
    "    mixing: {type: categorical, choices: [cycle, accumulate]}\n"
    "    batch_size_b: {type: int, low: 8, high: 64, log: true, when: {mixing: accumulate}}\n",
    "simplex": "study: {name: s}\nobjective: {problem: linear_pair}\nsearch: {weights: {parametrization: simplex}}",
    "alternating": "study: {name: s, metric: val_b_acc}\nobjective: {loop: alternating, problem: digits_codes,"
    " mode: joint, weights: [0.2, 0.7, 0.1], model_a: {optimizer: {lr: 0.01}, grad_clip: 1.0}}\n"
    "search: {weights: {parametrization: simplex}, params: {mode: {type: categorical, choices: [alternate, joint]},"
    " steps_a: {type: int, low: 1, high: 5, when: {mode: alternate}},"
    " model_b.optimizer.lr: {type: float, low: 0.001, high: 0.1, log: true}}}",
    "alternating consistency target": "study: {name: s, metric: val_consistency_loss}\n"
    "objective: {loop: alternating, problem: digits_codes, weights: [1, 1, 1]}",
    "model option searched": "study: {name: s}\nobjective: {problem: digits_pair}\n"
    "search: {params: {problem.options.hidden: {type: categorical, choices: [8, 16]}}}",
}


@pytest.mark.parametrize("text", GOOD.values(), ids=GOOD.keys())
def test_good_files_load(tmp_path: Path, text: str) -> None:
    """Each good file loads into a StudyFile."""
    sf = load_text(tmp_path, text)
    assert isinstance(sf, StudyFile)


def test_defaults_and_inference(tmp_path: Path) -> None:
    """Defaults: val_total_loss minimised, TPE, median pruner later, SQLite MLflow store."""
    sf = load_text(tmp_path, MIN)
    assert sf.study.metric == ("val_total_loss",)
    assert sf.study.directions == ("minimize",)
    assert sf.study.sampler is None  # chosen by the search space (sweep.search.defaults)
    assert sf.tracking.uri == "sqlite:///mlflow.db"
    assert sf.search.is_empty
    acc = load_text(tmp_path, "study: {name: s, metric: val_a_acc}\nobjective: {problem: digits_pair}")
    assert acc.study.directions == ("maximize",)


def test_config_is_frozen(tmp_path: Path) -> None:
    """Config objects cannot be changed after loading."""
    sf = load_text(tmp_path, MIN)
    with pytest.raises(pydantic.ValidationError):
        sf.study.n_trials = 3  # type: ignore[misc]


def test_overrides_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CLI overrides replace file values; ${VAR} is substituted from the environment."""
    monkeypatch.setenv("SWEEP_TEST_DB", "sqlite:///x.db")
    path = tmp_path / "s.yaml"
    path.write_text("study: {name: s, n_trials: 4, storage: '${SWEEP_TEST_DB}'}\nobjective: {problem: linear_pair}")
    sf = load_study(path, {"study.n_trials": 9, "study.name": "other", "study.timeout": None})
    assert (sf.study.n_trials, sf.study.name, sf.study.timeout) == (9, "other", None)
    assert sf.study.storage == "sqlite:///x.db"


# A password or token in a bad file must never be printed (the tests check every case for it).
SECRET = "hunter2-s3cr3t"

# "Billion laughs": nine levels of ten aliases each, 10**9 strings once expanded, from a dozen lines.
ALIAS_BOMB = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(9)
)
MAPPING_BOMB = "a: &a {x: 1, y: 2}\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} {{{', '.join(f'k{j}: *{chr(97 + i)}' for j in range(10))}}}\n" for i in range(9)
)
# Three anchors of 30 levels each, the next nesting the previous: shallow as written, 90 levels expanded.
DEEP_ALIASES = "".join(f"d{i}: &d{i} " + "[" * 30 + (f"*d{i - 1}" if i else "0") + "]" * 30 + "\n" for i in range(3))


# (file text or bytes, the key the error must name, a fragment of the message)
BAD = {
    "yaml syntax": ("study: {name: s\nobjective: {problem: linear_pair}", "line 2", "YAML syntax"),
    "duplicate key": (MIN + "study: {name: t}\n", "line 3", "duplicate key 'study'"),
    "not a mapping": ("- a\n- b\n", "", "must be a mapping"),
    "unknown top key": (MIN + "extra: 1\n", "extra", "unknown key"),
    "unknown study key": (
        "study: {name: s, n_trial: 3}\nobjective: {problem: linear_pair}",
        "study.n_trial",
        "unknown",
    ),
    "cmaes restarts Optuna ignores": (
        "study: {name: s, sampler: {type: cmaes, restart_strategy: ipop}}\nobjective: {problem: linear_pair}",
        "study.sampler.restart_strategy",
        "ignores restart_strategy",
    ),
    "unquoted date as a name": (
        "study: {name: 2026-12-07}\nobjective: {problem: linear_pair}",
        "study.name",
        "YAML read 2026-12-07 as a date: quote it ('2026-12-07')",
    ),
    "number as a name": ("study: {name: 12}\nobjective: {problem: linear_pair}", "study.name", "quote it ('12')"),
    "boolean as a name": ("study: {name: yes}\nobjective: {problem: linear_pair}", "study.name", "read a boolean"),
    "missing name": ("study: {n_trials: 3}\nobjective: {problem: linear_pair}", "study.name", "missing"),
    "missing objective": ("study: {name: s}\n", "objective", "missing"),
    "bad name": ("study: {name: 'a b/c'}\nobjective: {problem: linear_pair}", "study.name", "pattern"),
    "n_trials wrong type": (
        "study: {name: s, n_trials: many}\nobjective: {problem: linear_pair}",
        "study.n_trials",
        "",
    ),
    "n_trials zero": (
        "study: {name: s, n_trials: 0}\nobjective: {problem: linear_pair}",
        "study.n_trials",
        "",
    ),
    "unknown sampler": (
        "study: {name: s, sampler: bogus}\nobjective: {problem: linear_pair}",
        "study.sampler.type",
        "bogus",
    ),
    "sampler option": (
        "study: {name: s, sampler: {type: tpe, foo: 1}}\nobjective: {problem: linear_pair}",
        "study.sampler.foo",
        "unknown",
    ),
    "unknown pruner": (
        "study: {name: s, pruner: lazy}\nobjective: {problem: linear_pair}",
        "study.pruner.type",
        "lazy",
    ),
    "patient needs patience": (
        "study: {name: s, pruner: {type: patient}}\nobjective: {problem: linear_pair}",
        "study.pruner.patience",
        "missing",
    ),
    "pruner with multi-objective": (
        "study: {name: s, metrics: [val_a_loss, val_b_loss], pruner: median}\nobjective: {problem: linear_pair}",
        "study.pruner",
        "multi-objective",
    ),
    "weighted target": (
        "study: {name: s, metric: train_weighted_loss}\nobjective: {problem: linear_pair}",
        "study.metric",
        "searched loss weights",
    ),
    "weight as target": (
        "study: {name: s, metric: weight_a}\nobjective: {problem: linear_pair}",
        "study.metric",
        "hyper",
    ),
    "train loss target": (
        "study: {name: s, metric: train_a_loss}\nobjective: {problem: linear_pair}",
        "study.metric",
        "validation",
    ),
    "unknown metric": (
        "study: {name: s, metric: val_b_acc}\nobjective: {problem: linear_pair}",
        "study.metric",
        "unknown",
    ),
    "wrong direction": (
        "study: {name: s, metric: val_b_acc, direction: minimize}\nobjective: {problem: digits_pair}",
        "study.direction",
        "worst",
    ),
    "direction count": (
        "study: {name: s, metrics: [val_a_loss, val_b_loss], directions: [minimize]}\n"
        "objective: {problem: linear_pair}",
        "study.direction",
        "1 directions for 2",
    ),
    "metric and metrics": (
        "study: {name: s, metric: val_a_loss, metrics: [val_b_loss]}\nobjective: {problem: linear_pair}",
        "study",
        "either",
    ),
    "unknown problem": (
        "study: {name: s}\nobjective: {problem: nope}",
        "objective.problem",
        "unknown problem",
    ),
    "missing user module": (
        "study: {name: s}\nobjective: {problem: 'no_such_mod:make'}",
        "objective.problem",
        "import",
    ),
    "missing user function": (
        "study: {name: s}\nobjective: {problem: 'json:no_such'}",
        "objective.problem",
        "no function",
    ),
    "bad problem option": (
        "study: {name: s}\nobjective: {problem: {name: linear_pair, options: {scale: -1}}}",
        "objective.problem.options.scale",
        "greater than 0",
    ),
    "unknown problem option": (
        "study: {name: s}\nobjective: {problem: {name: linear_pair, options: {colour: red}}}",
        "objective.problem.options.colour",
        "",
    ),
    "unknown loop": (
        "study: {name: s}\nobjective: {loop: triple, problem: linear_pair}",
        "objective.loop",
        "",
    ),
    "loop named wrongly": (
        "study: {name: s}\nobjective: {loop: alternate, problem: digits_codes}",
        "objective.loop",
        "'alternate'",
    ),
    "dual problem in alternating loop": (
        "study: {name: s}\nobjective: {loop: alternating, problem: digits_pair}",
        "objective.problem",
        "is for the dual_loss loop",
    ),
    "alternating problem in dual loop": (
        "study: {name: s}\nobjective: {problem: digits_codes}",
        "objective.problem",
        "is for the alternating loop",
    ),
    "unknown mode": (
        "study: {name: s}\nobjective: {loop: alternating, problem: digits_codes, mode: gan}",
        "objective.mode",
        "",
    ),
    "joint with two optimizer types": (
        "study: {name: s}\nobjective: {loop: alternating, problem: digits_codes, mode: joint,"
        " model_b: {optimizer: {type: sgd}}}",
        "objective",
        "must match",
    ),
    "four weights": (
        "study: {name: s}\nobjective: {loop: alternating, problem: digits_codes, weights: [1, 1, 1, 1]}",
        "objective.weights",
        "at most 3",
    ),
    "consistency target without the term": (
        "study: {name: s, metric: val_consistency_loss}\nobjective: {loop: alternating, problem: digits_codes}",
        "study.metric",
        "unknown metric",
    ),
    "task a accuracy in alternating": (
        "study: {name: s, metric: val_a_acc}\nobjective: {loop: alternating, problem: digits_codes}",
        "study.metric",
        "unknown metric",
    ),
    "alternating unknown key": (
        "study: {name: s}\nobjective: {loop: alternating, problem: digits_codes, mixing: zip}",
        "objective.mixing",
        "unknown key",
    ),
    "weights condition on undeclared": (
        MIN + "search: {weights: {parametrization: log_ratio, when: {weighting.type: static}}}",
        "search.weights.when.weighting.type",
        "not a searched parameter",
    ),
    "strategy option without its condition": (
        MIN + "search: {params: {weighting.temperature: {type: float, low: 1, high: 2}}}",
        "search.params.weighting.temperature",
        "unknown key",
    ),
    "unknown strategy": (
        "study: {name: s}\nobjective: {problem: linear_pair, weighting: {type: nonesuch}}",
        "objective.weighting.type",
        "'nonesuch'",
    ),
    "accumulate with pcgrad": (
        "study: {name: s}\nobjective: {problem: linear_pair, mixing: accumulate, weighting: {type: pcgrad}}",
        "objective",
        "accumulate",
    ),
    "weight schedule on a missing loss": (
        "study: {name: s}\nobjective: {problem: linear_pair, weight_schedule: {type: linear, target: consistency}}",
        "objective",
        "not one of this loop's losses",
    ),
    "data option searched": (
        MIN + "search: {params: {problem.options.noise: {type: float, low: 0.0, high: 0.5}}}",
        "search.params.problem.options.noise",
        "not be comparable",
    ),
    "epochs negative": (
        "study: {name: s}\nobjective: {problem: linear_pair, epochs: -1}",
        "objective.epochs",
        "",
    ),
    "unknown mixing": (
        "study: {name: s}\nobjective: {problem: linear_pair, mixing: interleave}",
        "objective.mixing",
        "",
    ),
    "bad device": (
        "study: {name: s}\nobjective: {problem: linear_pair, device: tpu}",
        "objective.device",
        "device",
    ),
    "zero weights": (
        "study: {name: s}\nobjective: {problem: linear_pair, weights: [0, 0]}",
        "objective.weights",
        "pos",
    ),
    "low > high": (
        MIN + "search: {params: {optimizer.lr: {type: float, low: 1, high: 0.1}}}",
        "search.params.optimizer.lr",
        "must not exceed",
    ),
    "log with low <= 0": (
        MIN + "search: {params: {optimizer.lr: {type: float, low: 0, high: 0.1, log: true}}}",
        "search.params.optimizer.lr",
        "low > 0",
    ),
    "log with step": (
        MIN + "search: {params: {epochs: {type: int, low: 1, high: 9, log: true, step: 2}}}",
        "search.params.epochs",
        "log and step",
    ),
    "empty categorical": (
        MIN + "search: {params: {mixing: {type: categorical, choices: []}}}",
        "search.params.mixing.choices",
        "at least 1",
    ),
    "bad categorical value": (
        MIN + "search: {params: {mixing: {type: categorical, choices: [zip, bogus]}}}",
        "search.params.mixing",
        "bogus",
    ),
    "unknown param type": (
        MIN + "search: {params: {epochs: {type: integer, low: 1, high: 3}}}",
        "search.params.epochs.type",
        "integer",
    ),
    "unknown path": (
        MIN + "search: {params: {optimizr.lr: {type: float, low: 0.1, high: 1}}}",
        "search.params.optimizr.lr",
        "no key",
    ),
    "int bound invalid for objective": (
        MIN + "search: {params: {epochs: {type: int, low: 0, high: 3}}}",
        "search.params.epochs",
        "value 0",
    ),
    "weights via params": (
        MIN + "search: {params: {weights: {type: categorical, choices: [1]}}}",
        "search.params.weights",
        "search.weights",
    ),
    "condition on undeclared": (
        MIN + "search: {params: {batch_size_b: {type: int, low: 8, high: 9, when: {mixing: accumulate}}}}",
        "search.params.batch_size_b.when.mixing",
        "not a searched parameter",
    ),
    "condition value not a choice": (
        MIN + "search: {params: {mixing: {type: categorical, choices: [zip, cycle]},"
        " batch_size_b: {type: int, low: 8, high: 9, when: {mixing: accumulate}}}}",
        "search.params.batch_size_b.when.mixing",
        "not one of",
    ),
    "unknown parametrization": (
        MIN + "search: {weights: {parametrization: softmax}}",
        "search.weights.parametrization",
        "",
    ),
    "grid without grid values": (
        "study: {name: s, sampler: grid}\nobjective: {problem: linear_pair}\n"
        "search: {weights: {parametrization: log_ratio}}",
        "search.weights.grid",
        "grid",
    ),
    "missing env var": (
        "study: {name: s, storage: 'postgresql://u:${SWEEP_SURELY_UNSET}@h/db'}\nobjective: {problem: linear_pair}",
        "study.storage",
        "SWEEP_SURELY_UNSET",
    ),
    # --- bad input (bytes, sizes, YAML structure): one line, never a traceback or a 4 GB expansion ---
    "not UTF-8 (latin-1)": (
        "study: {name: caf\xe9}\nobjective: {problem: linear_pair}".encode("latin-1"),
        "line 1, column 18",
        "not UTF-8",
    ),
    "binary file (PNG)": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "line 1, column 1", "not UTF-8"),
    "UTF-16 without a BOM": (MIN.encode("utf-16-le"), "line 1, column 2", "'\\x00' is not allowed"),
    "UTF-16 BOM, truncated": (codecs.BOM_UTF16_LE + MIN.encode("utf-16-le")[:-1], "line", "not UTF-16"),
    "UTF-32": (MIN.encode("utf-32"), "", "UTF-32"),
    "NUL character": ("study: {name: s}\nobjective: {problem: linear_pair\x00}\n", "line 2, column 33", "not allowed"),
    "control character": (
        "study: {name: s\x07}\nobjective: {problem: linear_pair}\n",
        "line 1, column 16",
        "not allowed",
    ),
    "file over 1 MB": (MIN + "# " + "x" * 1_100_000 + "\n", "", "larger than 1,000,000 bytes"),
    "10 MB string": ("study: {name: '" + "x" * 10_000_000 + "'}\nobjective: {problem: linear_pair}", "", "larger than"),
    "long value under the size cap": (
        "study: {name: '" + "x" * 100_000 + "'}\nobjective: {problem: linear_pair}",
        "study.name",
        "at most 200",
    ),
    "empty file": ("", "", "must be a mapping"),
    "only a comment": ("# nothing here\n", "", "must be a mapping"),
    "a scalar document": ("just text\n", "", "must be a mapping"),
    "two documents": (MIN + "---\n" + MIN, "line 3", "another document"),
    "tab indentation": ("study:\n\tname: s\nobjective: {problem: linear_pair}\n", "line 2", "YAML syntax"),
    "unclosed quote": ("study: {name: 's}\nobjective: {problem: linear_pair}\n", "line 3", "YAML syntax"),
    "alias bomb (billion laughs)": (MIN + ALIAS_BOMB, "line 7", "more than 100,000 values"),
    "alias bomb of mappings": (MIN + MAPPING_BOMB, "line", "more than 100,000 values"),
    "recursive alias": (
        "study: {name: s}\nobjective: &o {problem: linear_pair, x: [*o]}\n",
        "line 2, column 42",
        "contains it",
    ),
    "undefined alias": ("study: {name: s}\nobjective: *nowhere\n", "line 2, column 12", "undefined alias"),
    "10,000 nested lists": (MIN + "x: " + "[" * 10_000 + "]" * 10_000 + "\n", "line 3", "nested more than 64 levels"),
    "deeply nested mappings": (MIN + "x: " + "{a: " * 200 + "1" + "}" * 200 + "\n", "line 3", "nested more than 64"),
    "deep through aliases": (MIN + DEEP_ALIASES, "line", "nested more than 64"),
    "python object tag": (
        "study: !!python/object/apply:os.system ['echo hi']\nobjective: {problem: linear_pair}",
        "line 1",
        "constructor",
    ),
    "list as a key": (MIN + "? [a, b]\n: 1\n", "line 3", "cannot be a key"),
    "duplicate key beside a merge": (
        "study: {name: s}\nobjective: {<<: {epochs: 2}, problem: linear_pair, problem: digits_pair}\n",
        "line 2",
        "duplicate key 'problem'",
    ),
    "merge of a scalar": ("study: {name: s}\nobjective: {<<: 3, problem: linear_pair}\n", "line 2", "merging"),
    "merged unknown key": (
        "study: {name: s}\nobjective: {<<: {problem: linear_pair, bogus: 1}}\n",
        "objective.bogus",
        "unknown key",
    ),
    # --- numbers no setting can use ---
    "integer of 5000 digits": (
        "study: {name: s, seed: " + "9" * 5000 + "}\nobjective: {problem: linear_pair}",
        "study.seed",
        "5000 digits",
    ),
    "integer beyond 64 bits": (
        "study: {name: s, seed: " + str(2**64) + "}\nobjective: {problem: linear_pair}",
        "study.seed",
        "out of range",
    ),
    "huge batch size": (
        "study: {name: s}\nobjective: {problem: linear_pair, batch_size: " + "1" * 30 + "}",
        "objective.batch_size",
        "out of range",
    ),
    "1e400 learning rate": (
        "study: {name: s}\nobjective: {problem: linear_pair, optimizer: {lr: 1e400}}",
        "objective.optimizer.lr",
        "finite",
    ),
    "'inf' string learning rate": (
        "study: {name: s}\nobjective: {problem: linear_pair, optimizer: {lr: 'inf'}}",
        "objective.optimizer.lr",
        "finite",
    ),
    "-inf weight": (
        "study: {name: s}\nobjective: {problem: linear_pair, weights: [1, -.inf]}",
        "objective.weights.1",
        "finite",
    ),
    "infinite timeout": (
        "study: {name: s, timeout: .inf}\nobjective: {problem: linear_pair}",
        "study.timeout",
        "finite",
    ),
    "NaN low bound": (
        MIN + "search: {params: {optimizer.lr: {type: float, low: .nan, high: 0.1}}}",
        "search.params.optimizer.lr.low",
        "finite",
    ),
    "NaN high bound": (
        MIN + "search: {params: {optimizer.lr: {type: float, low: 0.01, high: .NaN}}}",
        "search.params.optimizer.lr.high",
        "finite",
    ),
    "NaN weights bound": (
        MIN + "search: {weights: {parametrization: log_ratio, low: .nan, high: 1}}",
        "search.weights.low",
        "finite",
    ),
    "inf grid point": (MIN + "search: {weights: {grid: [0, .inf]}}", "search.weights.grid.1", "finite"),
    "NaN categorical choice": (
        MIN + "search: {params: {optimizer.momentum: {type: categorical, choices: [0.9, .nan]}}}",
        "search.params.optimizer.momentum.choices.1",
        "finite",
    ),
    "NaN baseline point": (
        "study: {name: s, enqueue: [{optimizer.lr: .nan}]}\nobjective: {problem: linear_pair}\n"
        "search: {params: {optimizer.lr: {type: float, low: 0.01, high: 0.1}}}",
        "study.enqueue.0.optimizer.lr",
        "finite",
    ),
    # --- booleans where a number belongs (YAML 1.1 reads yes/no/on/off as booleans) ---
    "n_trials: yes": (
        "study: {name: s, n_trials: yes}\nobjective: {problem: linear_pair}",
        "study.n_trials",
        "boolean",
    ),
    "seed: true": ("study: {name: s, seed: true}\nobjective: {problem: linear_pair}", "study.seed", "boolean"),
    "heartbeat_interval: on": (
        "study: {name: s, heartbeat_interval: on}\nobjective: {problem: linear_pair}",
        "study.heartbeat_interval",
        "boolean",
    ),
    "max_retry: yes": (
        "study: {name: s, max_retry: yes}\nobjective: {problem: linear_pair}",
        "study.max_retry",
        "boolean",
    ),
    "timeout: yes": ("study: {name: s, timeout: yes}\nobjective: {problem: linear_pair}", "study.timeout", "boolean"),
    "sampler option: yes": (
        "study: {name: s, sampler: {type: tpe, n_startup_trials: yes}}\nobjective: {problem: linear_pair}",
        "study.sampler.n_startup_trials",
        "boolean",
    ),
    "pruner option: yes": (
        "study: {name: s, pruner: {type: median, n_warmup_steps: yes}}\nobjective: {problem: linear_pair}",
        "study.pruner.n_warmup_steps",
        "boolean",
    ),
    "epochs: yes": ("study: {name: s}\nobjective: {problem: linear_pair, epochs: yes}", "objective.epochs", "boolean"),
    "batch_size: on": (
        "study: {name: s}\nobjective: {problem: linear_pair, batch_size: on}",
        "objective.batch_size",
        "boolean",
    ),
    "objective seed: true": (
        "study: {name: s}\nobjective: {problem: linear_pair, seed: true}",
        "objective.seed",
        "boolean",
    ),
    "grad_accum_steps: yes": (
        "study: {name: s}\nobjective: {problem: linear_pair, grad_accum_steps: yes}",
        "objective.grad_accum_steps",
        "boolean",
    ),
    "num_workers: yes": (
        "study: {name: s}\nobjective: {problem: linear_pair, data: {num_workers: yes}}",
        "objective.data.num_workers",
        "boolean",
    ),
    "patience: yes": (
        "study: {name: s}\nobjective: {problem: linear_pair, early_stopping: {patience: yes}}",
        "objective.early_stopping.patience",
        "boolean",
    ),
    "lr: true": (
        "study: {name: s}\nobjective: {problem: linear_pair, optimizer: {lr: true}}",
        "objective.optimizer.lr",
        "boolean",
    ),
    "weights: [yes, yes]": (
        "study: {name: s}\nobjective: {problem: linear_pair, weights: [yes, yes]}",
        "objective.weights.0",
        "boolean",
    ),
    "int bound: yes": (
        MIN + "search: {params: {epochs: {type: int, low: yes, high: 3}}}",
        "search.params.epochs.low",
        "boolean",
    ),
    "alternating steps_a: yes": (
        "study: {name: s}\nobjective: {loop: alternating, problem: digits_codes, steps_a: yes}",
        "objective.steps_a",
        "boolean",
    ),
    "categorical choice yes for an integer": (
        MIN + "search: {params: {epochs: {type: categorical, choices: [yes, 3]}}}",
        "search.params.epochs",
        "boolean",
    ),
    # --- names used in paths, devices ---
    "study name ..": ("study: {name: '..'}\nobjective: {problem: linear_pair}", "study.name", "not a name"),
    "study name .": ("study: {name: .}\nobjective: {problem: linear_pair}", "study.name", "not a name"),
    "study name ...": ("study: {name: '...'}\nobjective: {problem: linear_pair}", "study.name", "not a name"),
    "study name with a slash": (
        "study: {name: ../elsewhere}\nobjective: {problem: linear_pair}",
        "study.name",
        "pattern",
    ),
    "device cuda:abc": (
        "study: {name: s}\nobjective: {problem: linear_pair, device: 'cuda:abc'}",
        "objective.device",
        "unknown device",
    ),
    "device cuda:4096": (
        "study: {name: s}\nobjective: {problem: linear_pair, device: 'cuda:4096'}",
        "objective.device",
        "this machine has",
    ),
    "device CUDA": (
        "study: {name: s}\nobjective: {problem: linear_pair, device: CUDA}",
        "objective.device",
        "unknown device",
    ),
    # --- user problems that are not problem builders, refused before they are called ---
    "os:system": ("study: {name: s}\nobjective: {problem: 'os:system'}", "objective.problem", "not a Python function"),
    "os:system with a command": (
        "study: {name: s}\nobjective: {problem: {name: 'os:system', options: {command: 'touch pwned'}}}",
        "objective.problem",
        "not a Python function",
    ),
    "stdlib function": (
        "study: {name: s}\nobjective: {problem: {name: 'shutil:rmtree', options: {path: x}}}",
        "objective.problem",
        "standard library",
    ),
    "builtin eval": (
        "study: {name: s}\nobjective: {problem: 'builtins:eval'}",
        "objective.problem",
        "not a Python function",
    ),
    "function without seed": (
        "study: {name: s}\nobjective: {problem: 'torch.nn.functional:relu'}",
        "objective.problem",
        "no 'seed'",
    ),
    "class without seed": (
        "study: {name: s}\nobjective: {problem: 'torch.nn:Linear'}",
        "objective.problem",
        "no 'seed'",
    ),
    "not callable": (
        "study: {name: s}\nobjective: {problem: 'tests.objectives.user_problem:CALLS'}",
        "objective.problem",
        "no function",
    ),
    "module raises on import": (
        "study: {name: s}\nobjective: {problem: 'tests.support.fault_module_import:make'}",
        "objective.problem",
        "its code raised RuntimeError",
    ),
    "module exits on import": (
        "study: {name: s}\nobjective: {problem: 'tests.support.exit_on_import_problem:make'}",
        "objective.problem",
        "its code raised SystemExit",
    ),
    "no function after the colon": (
        "study: {name: s}\nobjective: {problem: 'tests.objectives.user_problem:'}",
        "objective.problem",
        "not of the form",
    ),
    # --- secrets in a bad file are never echoed (every case is also checked for SECRET) ---
    "password in the storage of a bad file": (
        f"study: {{name: s, n_trials: 0, storage: 'postgresql://u:{SECRET}@h/db'}}\n"
        "objective: {problem: linear_pair}",
        "study.n_trials",
        "",
    ),
    "password query in a bad tracking section": (
        f"tracking: {{uri: 'sqlite:///m.db?password={SECRET}', experiment: [1]}}\n" + MIN,
        "tracking.experiment",
        "",
    ),
    "password in a mistyped problem path": (
        f"study: {{name: s}}\nobjective: {{problem: 'json://u:{SECRET}@h/db'}}",
        "objective.problem",
        "u:***@h/db",
    ),
    "token in a mistyped device": (
        f"study: {{name: s}}\nobjective: {{problem: linear_pair, device: 'cuda?token={SECRET}'}}",
        "objective.device",
        "token=***",
    ),
    "password in a mistyped sampler": (
        f"study: {{name: s, sampler: 'tpe?password={SECRET}'}}\nobjective: {{problem: linear_pair}}",
        "study.sampler.type",
        "password=***",
    ),
    "environment token in a problem name": (
        f"study: {{name: s}}\nobjective: {{problem: 'MLFLOW_TRACKING_TOKEN={SECRET}'}}",
        "objective.problem",
        "MLFLOW_TRACKING_TOKEN=***",
    ),
    "password in a file with a syntax error": (
        f"study: {{name: s, storage: 'postgresql://u:{SECRET}@h/db'\nobjective: {{problem: linear_pair}}",
        "line 2",
        "YAML syntax",
    ),
    # --- more wrong types and values ---
    "storage not a string": (
        "study: {name: s, storage: [a]}\nobjective: {problem: linear_pair}",
        "study.storage",
        "string",
    ),
    "tracking uri a number": ("tracking: {uri: 5}\n" + MIN, "tracking.uri", "expected text"),
    "unknown tracking key": ("tracking: {urI: x}\n" + MIN, "tracking.urI", "unknown key"),
    "n_trials fractional": (
        "study: {name: s, n_trials: 2.5}\nobjective: {problem: linear_pair}",
        "study.n_trials",
        "fractional",
    ),
    "seed a date": ("study: {name: s, seed: 2024-01-01}\nobjective: {problem: linear_pair}", "study.seed", ""),
    "study a string": ("study: s\nobjective: {problem: linear_pair}", "study", ""),
    "objective a list": ("study: {name: s}\nobjective: [linear_pair]", "objective", ""),
    "params a list": (MIN + "search: {params: [optimizer.lr]}", "search.params", ""),
    "problem options a number": (
        "study: {name: s}\nobjective: {problem: {name: linear_pair, options: 3}}",
        "objective.problem.options",
        "",
    ),
    "enqueue a mapping": ("study: {name: s, enqueue: {a: 1}}\nobjective: {problem: linear_pair}", "study.enqueue", ""),
    "unknown direction": (
        "study: {name: s, direction: down}\nobjective: {problem: linear_pair}",
        "study.direction",
        "",
    ),
    "unknown score": ("study: {name: s, score: mean}\nobjective: {problem: linear_pair}", "study.score", ""),
    "negative max_retry": ("study: {name: s, max_retry: -1}\nobjective: {problem: linear_pair}", "study.max_retry", ""),
    "zero step": (
        MIN + "search: {params: {optimizer.lr: {type: float, low: 0.01, high: 0.1, step: 0}}}",
        "search.params.optimizer.lr.step",
        "",
    ),
    "unknown precision": (
        "study: {name: s}\nobjective: {problem: linear_pair, precision: fp8}",
        "objective.precision",
        "",
    ),
    "unknown checkpoint": (
        "study: {name: s}\nobjective: {problem: linear_pair, checkpoint: sometimes}",
        "objective.checkpoint",
        "",
    ),
    "negative grad_clip": (
        "study: {name: s}\nobjective: {problem: linear_pair, grad_clip: -1}",
        "objective.grad_clip",
        "",
    ),
    "zero eval_batch_size": (
        "study: {name: s}\nobjective: {problem: linear_pair, eval_batch_size: 0}",
        "objective.eval_batch_size",
        "",
    ),
    "unknown lr schedule": (
        "study: {name: s}\nobjective: {problem: linear_pair, optimizer: {schedule: {type: wavy}}}",
        "objective.optimizer.schedule.type",
        "'wavy'",
    ),
    "unknown weight schedule": (
        "study: {name: s}\nobjective: {problem: linear_pair, weight_schedule: {type: wavy}}",
        "objective.weight_schedule.type",
        "'wavy'",
    ),
    # --- values that passed --check and then cost a run or records (each refused when the file loads) ---
    "epochs 10**12": (
        "study: {name: s}\nobjective: {problem: linear_pair, epochs: 1000000000000}",
        "objective.epochs",
        "at most 100,000",
    ),
    "epochs searched up to 10**12": (
        MIN + "search: {params: {epochs: {type: int, low: 1, high: 1000000000000}}}",
        "search.params.epochs",
        "at most 100,000",
    ),
    "experiment name of 5000 characters": (
        "tracking: {experiment: '" + "x" * 5000 + "'}\n" + MIN,
        "tracking.experiment",
        "at most 500",
    ),
    "sub-study name over 200 characters": (
        "study: {name: " + "s" * 199 + ", compare: problem.options.hidden}\nobjective: {problem: digits_pair}\n"
        "search: {params: {problem.options.hidden: {type: categorical, choices: [8, 16]}}}",
        "search.params.problem.options.hidden.choices.0",
        "at most 200",
    ),
    "compared choices with one sub-study name": (
        "study: {name: s, compare: problem.options.x}\n"
        "objective: {problem: 'tests.objectives.user_problem:make_any'}\n"
        "search: {params: {problem.options.x: {type: categorical, choices: ['a b', 'a_b']}}}",
        "search.params.problem.options.x.choices.1",
        "same sub-study",
    ),
    "problem option MLflow cannot name": (
        "study: {name: s}\nobjective: {problem: {name: 'tests.objectives.user_problem:make_any',"
        " options: {'bad@key': 1}}}",
        "objective.problem.options.bad@key",
        "MLflow param name",
    ),
    "nested problem option of 300 characters": (
        "study: {name: s}\nobjective: {problem: {name: 'tests.objectives.user_problem:make_any',"
        " options: {net: {" + "w" * 300 + ": 1}}}}",
        "objective.problem.options.net." + "w" * 300,
        "at most 250 characters",
    ),
    "searched option MLflow cannot name": (
        "study: {name: s}\nobjective: {problem: 'tests.objectives.user_problem:make_any'}\n"
        "search: {params: {problem.options.a//b: {type: categorical, choices: [1, 2]}}}",
        "search.params.problem.options.a//b",
        "MLflow param name",
    ),
    "baseline above the searched range": (
        "study: {name: s, enqueue: [{optimizer.lr: 0.5}]}\nobjective: {problem: linear_pair}\n"
        "search: {params: {optimizer.lr: {type: float, low: 0.01, high: 0.1, log: true}}}",
        "study.enqueue.0.optimizer.lr",
        "outside",
    ),
    "baseline below the searched range": (
        "study: {name: s, enqueue: [{epochs: 1}]}\nobjective: {problem: linear_pair}\n"
        "search: {params: {epochs: {type: int, low: 2, high: 9}}}",
        "study.enqueue.0.epochs",
        "outside",
    ),
    "baseline off the int step": (
        "study: {name: s, enqueue: [{}, {epochs: 3}]}\nobjective: {problem: linear_pair}\n"
        "search: {params: {epochs: {type: int, low: 2, high: 10, step: 2}}}",
        "study.enqueue.1.epochs",
        "step",
    ),
    "baseline off the float step": (
        "study: {name: s, enqueue: [{optimizer.lr: 0.015}]}\nobjective: {problem: linear_pair}\n"
        "search: {params: {optimizer.lr: {type: float, low: 0.01, high: 0.1, step: 0.01}}}",
        "study.enqueue.0.optimizer.lr",
        "step",
    ),
    "baseline fractional for an int": (
        "study: {name: s, enqueue: [{epochs: 2.5}]}\nobjective: {problem: linear_pair}\n"
        "search: {params: {epochs: {type: int, low: 1, high: 9}}}",
        "study.enqueue.0.epochs",
        "integer",
    ),
    "baseline a string for a number": (
        "study: {name: s, enqueue: [{optimizer.lr: '0.05'}]}\nobjective: {problem: linear_pair}\n"
        "search: {params: {optimizer.lr: {type: float, low: 0.01, high: 0.1}}}",
        "study.enqueue.0.optimizer.lr",
        "expected a number",
    ),
    "baseline a boolean for a number": (
        "study: {name: s, enqueue: [{epochs: yes}]}\nobjective: {problem: linear_pair}\n"
        "search: {params: {epochs: {type: int, low: 1, high: 9}}}",
        "study.enqueue.0.epochs",
        "boolean",
    ),
    "baseline not a choice": (
        "study: {name: s, enqueue: [{mixing: accumulate}]}\nobjective: {problem: linear_pair}\n"
        "search: {params: {mixing: {type: categorical, choices: [zip, cycle]}}}",
        "study.enqueue.0.mixing",
        "not one of",
    ),
    "baseline true for the choice 1": (
        "study: {name: s, enqueue: [{problem.options.hidden: true}]}\nobjective: {problem: digits_pair}\n"
        "search: {params: {problem.options.hidden: {type: categorical, choices: [1, 8]}}}",
        "study.enqueue.0.problem.options.hidden",
        "not one of",
    ),
    "baseline log ratio outside the weights' range": (
        "study: {name: s, enqueue: [{weights.log10_ratio: 5}]}\nobjective: {problem: linear_pair}\n"
        "search: {weights: {parametrization: log_ratio, low: -3, high: 3}}",
        "study.enqueue.0.weights.log10_ratio",
        "outside",
    ),
    "baseline simplex weight above 1": (
        "study: {name: s, enqueue: [{weights.u0: 1.5}]}\nobjective: {problem: linear_pair}\n"
        "search: {weights: {parametrization: simplex}}",
        "study.enqueue.0.weights.u0",
        "outside",
    ),
    "compared choice given twice": (
        "study: {name: s, compare: weighting.type}\nobjective: {problem: linear_pair}\n"
        "search: {params: {weighting.type: {type: categorical, choices: [static, dwa, static]}}}",
        "search.params.weighting.type",
        "twice",
    ),
    "categorical choice given twice": (
        MIN + "search: {params: {mixing: {type: categorical, choices: [zip, cycle, zip]}}}",
        "search.params.mixing",
        "twice",
    ),
    "categorical choices equal in Python": (
        "study: {name: s}\nobjective: {problem: digits_pair}\n"
        "search: {params: {problem.options.hidden: {type: categorical, choices: [8, 16, 8.0]}}}",
        "search.params.problem.options.hidden",
        "twice",
    ),
    "timeout: 1:30 (base 60)": (
        "study: {name: s, timeout: 1:30}\nobjective: {problem: linear_pair}",
        "study.timeout",
        "base-60",
    ),
    "seed: 1:00:00 (base 60)": (
        "study: {name: s, seed: 1:00:00}\nobjective: {problem: linear_pair}",
        "study.seed",
        "base-60",
    ),
    "lr: 1:30.5 (base 60 float)": (
        "study: {name: s}\nobjective: {problem: linear_pair, optimizer: {lr: 1:30.5}}",
        "objective.optimizer.lr",
        "base-60",
    ),
    "base-60 categorical choice": (
        MIN + "search: {params: {optimizer.momentum: {type: categorical, choices: [0.9, 1:30]}}}",
        "search.params.optimizer.momentum.choices.1",
        "base-60",
    ),
    "n_trials: '2' (a string)": (
        "study: {name: s, n_trials: '2'}\nobjective: {problem: linear_pair}",
        "study.n_trials",
        "string",
    ),
    "lr: '0.1' (a string)": (
        "study: {name: s}\nobjective: {problem: linear_pair, optimizer: {lr: '0.1'}}",
        "objective.optimizer.lr",
        "string",
    ),
    "weights as strings": (
        "study: {name: s}\nobjective: {problem: linear_pair, weights: ['1', '2']}",
        "objective.weights.0",
        "string",
    ),
    "searched bound a string": (
        MIN + "search: {params: {optimizer.lr: {type: float, low: '0.01', high: 0.1}}}",
        "search.params.optimizer.lr.low",
        "string",
    ),
    "boolean as a string": (
        "study: {name: s}\nobjective: {problem: linear_pair, data: {drop_last: 'true'}}",
        "objective.data.drop_last",
        "string",
    ),
    "!!binary storage": (
        "study: {name: s, storage: !!binary c3FsaXRlOi8vL3guZGI=}\nobjective: {problem: linear_pair}",
        "line 1, column 27",
        "!!binary",
    ),
    "!!set": ("study: {name: s, metric: !!set {val_a_loss}}\nobjective: {problem: linear_pair}", "line 1", "!!set"),
    "!!omap": ("study: !!omap [{name: s}]\nobjective: {problem: linear_pair}", "line 1", "!!omap"),
    "!!pairs": ("study: {name: s}\nobjective: !!pairs [{problem: linear_pair}]", "line 2", "!!pairs"),
    "!!timestamp": (
        "study: {name: s, seed: !!timestamp 2024-01-01}\nobjective: {problem: linear_pair}",
        "line 1",
        "!!timestamp",
    ),
    "heartbeat_interval: 10**11": (
        "study: {name: s, heartbeat_interval: 100000000000}\nobjective: {problem: linear_pair}",
        "study.heartbeat_interval",
        "3600",
    ),
    "grace_period beyond a day": (
        "study: {name: s, grace_period: 1000000}\nobjective: {problem: linear_pair}",
        "study.grace_period",
        "86400",
    ),
    "storage_retry beyond a day": (
        "study: {name: s, storage_retry: 1e12}\nobjective: {problem: linear_pair}",
        "study.storage_retry",
        "86400",
    ),
    "timeout beyond a year": (
        "study: {name: s, timeout: 1e11}\nobjective: {problem: linear_pair}",
        "study.timeout",
        "31536000",
    ),
    "grace_period below heartbeat_interval": (
        "study: {name: s, heartbeat_interval: 20, grace_period: 3}\nobjective: {problem: linear_pair}",
        "study.grace_period",
        "at least 2 × heartbeat_interval",
    ),
    "grace_period equal to heartbeat_interval": (
        "study: {name: s, heartbeat_interval: 10, grace_period: 10}\nobjective: {problem: linear_pair}",
        "study.grace_period",
        "at least 2 × heartbeat_interval",
    ),
    "grace_period default below a longer heartbeat": (
        "study: {name: s, heartbeat_interval: 60}\nobjective: {problem: linear_pair}",
        "study.grace_period",
        "(120 s",
    ),
}


@pytest.mark.parametrize(("text", "key", "fragment"), BAD.values(), ids=BAD.keys())
def test_bad_files_name_the_key(tmp_path: Path, text: str | bytes, key: str, fragment: str) -> None:
    """Each bad file raises one ConfigError, one line, naming the file and exactly the key; no secret."""
    path = tmp_path / "bad.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ConfigError) as info:
        load_study(path)
    err = info.value
    if key.startswith("line"):  # YAML errors name the position
        assert err.key.startswith(key + ("" if "," in key or key == "line" else ",")), err
    else:
        assert err.key == key
    assert fragment.lower() in err.message.lower()
    assert "\n" not in str(err)
    assert str(err).startswith(f"{path}: ")
    assert SECRET not in str(err)


def test_missing_file(tmp_path: Path) -> None:
    """A file that does not exist is a ConfigError too."""
    with pytest.raises(ConfigError, match="cannot read"):
        load_study(tmp_path / "absent.yaml")


def test_parse_study_accepts_a_dict() -> None:
    """The same checks apply to a document built in code (export goes through this loader)."""
    with pytest.raises(ConfigError, match=r"study\.metric"):
        parse_study(
            {
                "study": {"name": "s", "metric": "train_weighted_loss"},
                "objective": {"problem": "linear_pair"},
            },
            "x",
        )


MERGED = """\
study: {name: s, metric: val_b_acc}
objective:
  loop: alternating
  problem: digits_codes
  model_a: &model
    optimizer: {type: sgd, lr: 0.01, momentum: 0.8}
    grad_clip: 1.0
  model_b:
    <<: *model
    grad_clip: 2.0
"""
EXPANDED = """\
study: {name: s, metric: val_b_acc}
objective:
  loop: alternating
  problem: digits_codes
  model_a:
    optimizer: {type: sgd, lr: 0.01, momentum: 0.8}
    grad_clip: 1.0
  model_b:
    optimizer: {type: sgd, lr: 0.01, momentum: 0.8}
    grad_clip: 2.0
"""


def test_merge_keys_load_like_the_expanded_file(tmp_path: Path) -> None:
    """YAML merge keys (``<<: *shared``, a key beside the merge overriding it) are valid study-file YAML:
    the file loads to the same config as the one written out in full."""
    merged, expanded = load_text(tmp_path, MERGED), load_text(tmp_path, EXPANDED)
    assert merged == expanded
    assert merged.objective.model_b.grad_clip == 2.0  # type: ignore[attr-defined]
    assert merged.objective.model_b.optimizer.momentum == 0.8  # type: ignore[attr-defined]


def test_a_list_of_merges_loads(tmp_path: Path) -> None:
    """``<<:`` with a list of mappings merges each of them."""
    sf = load_text(
        tmp_path,
        """\
        study: {name: s, sampler: grid}
        objective:
          <<: [{problem: linear_pair, epochs: 3}, {batch_size: 16}]
        search:
          params:
            mixing: {type: categorical, choices: [zip, cycle]}
          weights: {grid: [-1, 0, 1]}
        """,
    )
    assert (sf.objective.epochs, sf.objective.batch_size) == (3, 16)
    assert sf.search.weights.grid == (-1.0, 0.0, 1.0)


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be"])
def test_text_encodings_that_load(tmp_path: Path, encoding: str) -> None:
    """UTF-8 with or without a BOM, and UTF-16 with its BOM, load (and a non-ASCII comment survives)."""
    bom = {"utf-16-le": codecs.BOM_UTF16_LE, "utf-16-be": codecs.BOM_UTF16_BE}.get(encoding, b"")
    path = tmp_path / "study.yaml"
    path.write_bytes(bom + ("# Étude: Gewichte ∑\n" + MIN).encode(encoding))
    assert load_study(path).study.name == "s"


def test_an_alias_bomb_is_refused_before_it_expands(tmp_path: Path) -> None:
    """A billion laughs (10**9 strings once expanded) is refused in well under a second of parsing,
    at the alias that crosses the limit; nothing is expanded."""
    path = tmp_path / "bomb.yaml"
    path.write_text(MIN + ALIAS_BOMB)
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=r"line 7, column \d+: the document has more than 100,000 values"):
        load_study(path)
    assert time.perf_counter() - started < 5


def test_booleans_stay_valid_where_a_boolean_belongs(tmp_path: Path) -> None:
    """Refusing ``n_trials: yes`` does not refuse yes/no where the key is a boolean."""
    sf = load_text(
        tmp_path,
        "study: {name: s}\nobjective: {problem: linear_pair, compile: no, data: {drop_last: yes, pin_memory: off}}\n"
        "search: {params: {optimizer.lr: {type: float, low: 0.01, high: 0.1, log: yes}}}",
    )
    assert sf.objective.data.drop_last is True and sf.objective.compile is False


@pytest.mark.parametrize(
    ("overrides", "key"),
    [({"study.timeout": float("inf")}, "study.timeout"), ({"study.name": ".."}, "study.name")],
)
def test_command_line_overrides_are_checked_like_the_file(tmp_path: Path, overrides: dict, key: str) -> None:
    """``--timeout inf`` or ``--study-name ..`` is refused like the same value in the file."""
    path = tmp_path / "s.yaml"
    path.write_text(MIN)
    with pytest.raises(ConfigError) as info:
        load_study(path, overrides)
    assert info.value.key == key


def test_a_number_may_come_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``n_trials: "2"`` is refused (a quoted number), but ``${NAME}`` still gives a number where one
    belongs: its value is a string only because the environment holds strings."""
    monkeypatch.setenv("SWEEP_TEST_TRIALS", "7")
    monkeypatch.setenv("SWEEP_TEST_LR", "0.05")
    sf = load_text(
        tmp_path,
        "study: {name: s, n_trials: '${SWEEP_TEST_TRIALS}'}\n"
        "objective: {problem: linear_pair, optimizer: {lr: '${SWEEP_TEST_LR}'}}",
    )
    assert (sf.study.n_trials, sf.objective.optimizer.lr) == (7, 0.05)
    with pytest.raises(ConfigError, match=r"study\.n_trials: expected a number, got the string '7'"):
        load_text(tmp_path, "study: {name: s, n_trials: '7'}\nobjective: {problem: linear_pair}")


def test_exponent_numbers_are_numbers(tmp_path: Path) -> None:
    """``1e-3`` is a number (YAML 1.2; YAML 1.1 reads it as the string '1e-3'), so refusing quoted
    numbers does not refuse it, and a categorical of such values searches numbers, not strings."""
    sf = load_text(
        tmp_path,
        "study: {name: s, timeout: 1E4}\nobjective: {problem: linear_pair, optimizer: {lr: 1e-3}}\n"
        "search: {params: {optimizer.weight_decay: {type: categorical, choices: [0, 1e-4, 1e-2]}}}",
    )
    assert (sf.study.timeout, sf.objective.optimizer.lr) == (1e4, 1e-3)
    assert sf.search.params["optimizer.weight_decay"].choices == (0, 1e-4, 1e-2)  # type: ignore[union-attr]


def test_base_60_lookalikes_stay_text(tmp_path: Path) -> None:
    """Only YAML 1.1's base-60 numbers are refused: quoted, or not a valid base-60 number, they are text."""
    sf = load_text(tmp_path, "study: {name: s}\ntracking: {experiment: '1:30'}\nobjective: {problem: linear_pair}")
    assert sf.tracking.experiment == "1:30"
    sf = load_text(tmp_path, "study: {name: s}\ntracking: {experiment: 10:61}\nobjective: {problem: linear_pair}")
    assert sf.tracking.experiment == "10:61"


def test_a_patient_pruner_wraps_a_pruner_named_by_its_type_alone(tmp_path: Path) -> None:
    sf = load_text(tmp_path, GOOD["patient around a shorthand"])
    assert sf.study.pruner.wrapped == type(sf.study.pruner.wrapped)(type="median")
