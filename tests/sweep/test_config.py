"""The study-file schema: good files load into frozen objects; bad ones give one line naming the key."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pydantic
import pytest

from sweep.config import StudyFile, load_study, parse_study
from sweep.errors import ConfigError

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
    "cmaes": "study: {name: s, sampler: {type: cmaes, restart_strategy: ipop, sigma0: 0.5}}\n"
    "objective: {problem: linear_pair}",
    "qmc": "study: {name: s, sampler: {type: qmc, qmc_type: halton}}\nobjective: {problem: linear_pair}",
    "nsga2 multi": "study: {name: s, sampler: {type: nsga2, population_size: 8},"
    " metrics: [val_a_loss, val_b_loss]}\nobjective: {problem: linear_pair}",
    "grid": "study: {name: s, sampler: grid}\nobjective: {problem: linear_pair}\n"
    "search: {weights: {grid: [-1, 0, 1]}, params: {mixing: {type: categorical, choices: [zip, cycle]},"
    " optimizer.lr: {type: float, low: 0.01, high: 0.03, step: 0.01}}}",
    "pruners": "study: {name: s, pruner: {type: patient, patience: 2, wrapped: {type: hyperband}}}\n"
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
    assert sf.study.sampler.type == "tpe"
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


# (file text, the key the error must name, a fragment of the message)
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
        "study: {name: s}\nobjective: {problem: linear_pair, weighting: {type: mgda}}",
        "objective.weighting.type",
        "'mgda'",
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
}


@pytest.mark.parametrize(("text", "key", "fragment"), BAD.values(), ids=BAD.keys())
def test_bad_files_name_the_key(tmp_path: Path, text: str, key: str, fragment: str) -> None:
    """Each bad file raises one ConfigError, one line, naming the file and exactly the key."""
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_study(path)
    err = info.value
    if key.startswith("line "):  # YAML errors name the position
        assert err.key.startswith(key + ",")
    else:
        assert err.key == key
    assert fragment.lower() in err.message.lower()
    assert "\n" not in str(err)
    assert str(err).startswith(f"{path}: ")


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
