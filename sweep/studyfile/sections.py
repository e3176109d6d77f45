"""The study file's own sections: ``study:`` (what Optuna optimises, where it stores it), ``tracking:`` (MLflow)
and ``evaluate:`` (the held-out test after the search); :mod:`sweep.studyfile.config` puts them together."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, NonNegativeInt, PositiveInt, field_validator, model_validator

from objectives.frozen import Frozen
from sweep.core.records import Attr, Tag
from sweep.studyfile.samplers import PrunerConfig, SamplerConfig, type_shorthand
from sweep.studyfile.space import Scalar
from sweep.studyfile.targets import Direction, infer_direction

MAX_TIMEOUT = 365 * 86_400  # study.timeout: a year of seconds (a study meant to run longer needs none)


class StudySection(Frozen):
    """``study:`` — what Optuna optimises and where it stores it. Where the options act: ``tracking_retry`` in
    :mod:`sweep.tracking.trackingretry`, ``trial_timeout``/``stall_timeout`` in :mod:`sweep.trials.watchdog`,
    ``parallel_trials`` in :mod:`sweep.trials.groups`, ``compare`` in :mod:`sweep.studyfile.compare`."""

    name: Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.\-]+$")] = Field(
        description="study name (letters, digits, `_ . -`; not `.` or `..`: it names files); also the default "
        "MLflow experiment"
    )
    metric: tuple[str, ...] = Field(
        ("val_total_loss",),
        description="the validation metric(s) to optimise (`metric` or `metrics`, one name or a list); several make "
        "a multi-objective study. See [the target rule](docs/reference/study-file-rules.md#the-target-rule)",
    )
    direction: tuple[Direction, ...] | None = Field(
        None,
        description="`minimize`/`maximize`, one per metric (`direction` or `directions`); inferred when omitted: "
        "`*_loss` → minimize, `*_acc` → maximize; a contradicting direction is refused",
    )
    n_trials: PositiveInt = Field(20, description="finished (complete + pruned) trials the study should have")
    timeout: Annotated[float, Field(gt=0, le=MAX_TIMEOUT)] | None = Field(
        None, description="seconds after which no new trial starts (at most a year, 31,536,000)"
    )
    seed: int = Field(0, description="seeds the sampler, each trial's model/batch seed, and the data")
    sampler: SamplerConfig | None = Field(
        None,
        description="`{type: ..., options}` or just the type name; when omitted, chosen by the search space: Optuna's "
        "`gp` with `1 + 2·d` start-up trials for `d` continuous, unconditional dimensions (at most 8, one target), "
        "else `tpe` (see [search defaults](docs/explanation/search-defaults.md), with the benchmark's figures)",
    )
    pruner: PrunerConfig | None = Field(
        None,
        description="`{type: ..., options}` or just the type name; when omitted: none with the `gp` sampler (it "
        "learns nothing from pruned trials and would propose a pruned point again and again), else `median` with "
        "`n_startup_trials` 5 and `n_warmup_steps` 2; multi-objective studies default to none (Optuna cannot prune "
        "them: naming a pruner there is an error)",
    )
    storage: str | None = Field(
        None,
        description="any SQLAlchemy URL Optuna accepts (`postgresql://...`, `mysql+pymysql://...` with its driver "
        "installed); relative SQLite paths are relative to the working directory. Default (none): "
        "`sqlite:///.sweep/optuna.db`",
    )
    heartbeat_interval: Annotated[int, Field(ge=1, le=3600)] = Field(
        10,
        description="seconds between a worker's heartbeats (at most 3,600); see [Faults](docs/explanation/faults.md)",
    )
    grace_period: Annotated[int, Field(ge=1, le=86_400)] = Field(
        30,
        description="seconds after which a silent worker's trial is failed (at most 86,400); must be at least "
        "2 × `heartbeat_interval` (Optuna's own default): a shorter one lets workers that are alive fail each "
        "other's running trials as stale. Also the longest a process waits for the claim lock, and for a claim on "
        "the study's report or evaluation, held by a process that may be stopped (see "
        "[Faults](docs/explanation/faults.md))",
    )
    max_retry: NonNegativeInt = Field(
        2,
        description="how often a trial failed as stale is re-queued (see [Faults](docs/explanation/faults.md))",
    )
    storage_retry: Annotated[float, Field(gt=0, le=86_400)] = Field(
        120.0,
        description="seconds a storage call that cannot reach the database is retried (with backoff) before the "
        "process gives up with one line and exit 1 (see [Faults](docs/explanation/faults.md)); at most 86,400",
    )
    tracking_retry: Annotated[float, Field(gt=0, le=86_400)] = Field(
        120.0,
        description="seconds a call to the MLflow tracking store that cannot reach it (connection refused or "
        "reset, no answer, HTTP 408/429/5xx, a database store's lost connection) is retried (with backoff) before "
        "the trial fails, is re-queued, and the process gives up with one line and exit 1 (see "
        "[Faults](docs/explanation/faults.md)); at most 86,400",
    )
    trial_timeout: Annotated[float, Field(gt=0, le=2_592_000)] | None = Field(
        None,
        description="seconds a trial may train (from the start of its training; at most 2,592,000, 30 days): past "
        "it the trial fails with its reason (`timed out`) and the process goes on with its next trial (see "
        "[A trial that hangs](docs/explanation/faults.md))",
    )
    stall_timeout: Annotated[float, Field(gt=0, le=2_592_000)] | None = Field(
        None,
        description="seconds a trial may go without reporting an epoch (the start of its training counts as one; "
        "at most 2,592,000): past it the trial fails (`no progress`). Progress is counted per epoch, so it must "
        "exceed the longest epoch, validation included",
    )
    score: Literal["last", "best"] = Field(
        "last",
        description="a trial's value: its `last` epoch's target, or its `best` epoch's (that epoch is the trial's "
        f"`{Attr.BEST_EPOCH}` attribute and the run's `{Tag.BEST_EPOCH}` tag). Pruning still compares per-epoch "
        "values. Single-objective studies only",
    )
    enqueue: tuple[dict[str, Scalar], ...] | None = Field(
        None,
        description="baseline points run first; when omitted, equal loss weights with the file's own values of "
        "the other searched parameters, then (with the default GP sampler) a Sobol start-up design (see [search "
        "defaults](docs/explanation/search-defaults.md)), `[]` for none. E.g. `[{weights.log10_ratio: 0.0}, "
        "{weights.log10_ratio: 0.5, optimizer.lr: 0.003}]` (equal weights; today's production config): searched "
        "parameter → value, the rest "
        "sampled; Optuna's `enqueue_trial`, skipped when the study already has that point, so a resume does not "
        "run them again. A name that is not searched is refused, and so is a value the search could not draw "
        "(Optuna would run it as given): outside the inclusive bounds, off an `int`'s or `step`'s grid, not an "
        "integer for an `int`, not one of a categorical's choices (`true` is not the choice `1`), a log ratio "
        "outside `search.weights`' `[low, high]`, a simplex `weights.u*` outside [0, 1]",
    )
    parallel_trials: Annotated[int, Field(ge=1, le=1024)] = Field(
        1,
        description="train this many trials at once as one vectorized program (`--parallel-trials K` overrides "
        "it); see [Parallel trials](docs/howto/scale-out.md#parallel-trials-k-trials-as-one-program)",
    )
    compare: str | None = Field(
        None,
        description="a searched, unconditional categorical (e.g. `weighting.type`): run one sub-study per choice, "
        "`<name>.<choice>`, each with `n_trials` trials and the same search over the rest — equal tuning budgets "
        "(see [Held-out test, fresh seeds, equal budgets](docs/howto/compare-and-evaluate.md#held-out-test-fresh-"
        "seeds-equal-budgets)). Each choice must name a sub-study of its own of at most 200 characters (`a b` and "
        "`a_b` both name `<name>.a_b`)",
    )

    @model_validator(mode="before")
    @classmethod
    def _plural_spellings(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            for single, plural in (("metric", "metrics"), ("direction", "directions")):
                if plural in data:
                    if single in data:
                        raise ValueError(f"give either {single!r} or {plural!r}, not both")
                    data[single] = data.pop(plural)
                if isinstance(data.get(single), str):
                    data[single] = [data[single]]
        return data

    @field_validator("sampler", "pruner", mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        return type_shorthand(v)

    @field_validator("name")
    @classmethod
    def _not_a_path_step(cls, v: str) -> str:
        if set(v) == {"."}:
            raise ValueError(f"{v!r} is not a name: the study name is used in file and folder names")
        return v

    @property
    def directions(self) -> tuple[Direction, ...]:
        """Directions, one per metric (inferred where not given; see :func:`~sweep.studyfile.targets.check_target`)."""
        if self.direction is not None:
            return self.direction
        return tuple(infer_direction(m) or "minimize" for m in self.metric)

    @property
    def multi_objective(self) -> bool:
        return len(self.metric) > 1


class TrackingSection(Frozen):
    """``tracking:`` — the MLflow side of a study."""

    uri: str = Field(
        "sqlite:///mlflow.db",
        description="MLflow tracking URI: a `sqlite:///` file (relative to the working directory) or a server "
        "`http://host:5000`",
    )
    experiment: Annotated[str, Field(max_length=500)] | None = Field(
        None, description="MLflow experiment (at most 500 characters, MLflow's limit); default: the study name"
    )
    artifact_location: str | None = Field(
        None,
        description="artifact root for a new experiment (a server decides its own); default: `mlartifacts/` beside "
        "the SQLite file. A local one is checked before anything is written (a directory, writable, room for one "
        "trial's files)",
    )
    trial_plots: bool = Field(
        False,
        description="also draw each trial's train/validation losses as `loss_curves.png` on its run (~150 ms a "
        "trial; the MLflow UI draws the same curves from the logged metrics)",
    )


class EvaluateSection(Frozen):
    """``evaluate:`` — the held-out test after the search (:mod:`sweep.evaluate`)."""

    seeds: Annotated[int, Field(ge=1, le=1000, description="fresh seeds per configuration")] = 5
    top: Annotated[
        int, Field(ge=1, le=100, description="how many of the best trials (of each compared choice) to retrain")
    ] = 1
