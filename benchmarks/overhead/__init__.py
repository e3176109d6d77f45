"""What sweep costs around the training: whole processes, sweep against hand-written PyTorch and plain Optuna + MLflow.

Run: python -m benchmarks.overhead [--repeats 3] [--only ROW[,ROW]] [--quick] [--json PATH] [--save PATH] [--keep]

Every measurement times a whole process (``python -m ...``: interpreter start, imports, data, training,
storage and tracking, exit), started from a fresh temporary folder, so each run's Optuna storage
(``.sweep/optuna.db``) and MLflow store (``mlflow.db``, ``mlartifacts/``) are new. Within one invocation
the runs alternate, repeat by repeat (sweep, hand-written, peer, sweep, hand-written, peer, ...), so a
machine that speeds up or slows down affects every side alike. Each row gives the median of the repeats
with their range (min–max), and the ratio (median of the per-repeat ratios of paired runs, with range).

The sides:

- **sweep**: ``python -m sweep.run study.yaml --no-progress`` (``--cpu-threads`` left at its default, 1),
  on ``studies/quickstart.yaml`` or a temporary copy of it with a few keys changed (row list below).
- **hand-written** (``python -m benchmarks.overhead hand``): a plain PyTorch script that retrains
  exactly the trials the sweep run just made. The harness reads them from that run's Optuna storage (the
  resolved config is the trial user attribute ``config``; a trial's trained epochs are its number of
  intermediate values, so pruned trials are retrained only for the epochs they ran) and hands the list
  over as JSON. The script sets ``torch.set_num_threads(1)``, builds the data and model with
  ``objectives.problems.build_problem`` (nothing else from the project) and trains with its own loop: the
  model initialised after ``torch.manual_seed(seed)``, one ``torch.Generator`` seeded with the same seed
  drawing each epoch's index permutations (task a first: one permutation split into batches; task b:
  as many fresh permutations as it takes to fill the same number of steps — the ``cycle`` mixing), SGD,
  ``Σ w_i L_i`` over ``torch.stack``-ed losses, one validation per epoch. The harness then compares every
  per-epoch validation value with the one the study recorded; the table's notes give the maximum absolute
  difference and how many values are bit-identical (all of them, on the CPU). That comparison is what
  makes "the same work" a checked claim: ``tests/test_overhead_benchmark.py`` asserts it on a small study.
- **peer** (``python -m benchmarks.overhead peer``): what a user writes today without sweep: plain Optuna
  (``TPESampler(n_startup_trials=10, seed=0)``, ``MedianPruner(n_startup_trials=5, n_warmup_steps=4)``,
  SQLite storage) and plain MLflow through the fluent API (``sqlite:///mlflow.db``; a parent run, one
  nested ``mlflow.start_run`` per trial with ``log_params`` and one ``mlflow.log_metrics`` per epoch;
  optuna-integration's ``MLflowCallback`` is not installed, so this stands in for it), training the same
  problem and model with the same search space, trial count and epochs, and the hand-written loop. Its
  trials sample other values and prune differently than sweep's, so the number of epochs trained differs
  a little: the notes give both totals.

The rows (``--only`` takes the names in brackets):

- **quickstart wall, sweep / hand-written** [``quickstart``]: the quickstart study (30 trials, 12 epochs,
  median pruning) against the hand-written replay of its trials.
- **quickstart wall, sweep / peer** [``peer``]: the same sweep runs against the peer script.
- **long trials** [``long_model``, ``long_epochs``]: trials of several seconds each, where start-up
  matters less: (i) ``digits_pair`` with a larger hidden size (``hidden`` 1024: one 12-epoch trial
  trains in about 5 s on the 2-core machine, 4.6–6.4 s measured) and 4 trials; (ii) the quickstart model
  for 400 epochs, 4 trials (about 4 s of training each, 9 s inside sweep). Both have fewer trials than the
  pruner's ``n_startup_trials``, so every trial runs all its epochs.
- **fixed cost per trial** [``per_trial``]: (sweep − hand-written) / trials of the quickstart runs,
  paired by repeat. It still contains the difference in process start-up spread over the trials; the
  ``start-up excluded`` variant (with ``one_trial`` also selected) subtracts the one-trial runs'
  difference first: ((sweep − hand)_quickstart − (sweep − hand)_one-trial) / (trials − 1). The reference
  column is the hand-written script's own training time per trial (timed inside it).
- **cost per epoch beyond training** [``per_epoch``]: the 400-epoch study (ii) and the same study with
  12 epochs, same trials: ((sweep − hand)_400 − (sweep − hand)_12) / (epochs trained_400 − epochs
  trained_12), epochs summed over trials and paired by repeat. Everything that does not depend on the
  number of epochs (start-up, per-trial set-up, the end-of-study report) cancels; what is left is what
  sweep adds per epoch (metrics to MLflow, the Optuna report and pruning check, the loop's own
  bookkeeping). The reference column is the hand-written training time per epoch.
- **the loop's own cost per epoch** [``loop``]: in one process, sweep's ``dual_loss.train`` with a reporter
  that only keeps the values (no Optuna, no MLflow) against the hand-written loop computing the same
  metrics (training losses per task, validation losses and accuracies), alternated, on the quickstart
  run's first trial for 100 epochs; checks both give the same per-epoch values. What the per-epoch row
  adds to this is the records (MLflow's metric rows, Optuna's values, pruning).
- **one-trial run, whole process** [``one_trial``]: ``--n-trials 1`` against the hand-written one-trial
  process: mostly start-up.
- **peak RSS of the quickstart** [``rss``]: the maximum resident set of each quickstart process
  (``os.wait4`` on the process: its own rusage, not the harness's other children's).
- **--workers 2 vs 1** [``workers``]: trials per minute of the whole quickstart run with ``--workers 2``
  against the default (the quickstart runs above), fresh folders each (on 2 cores: two processes share them).
- **--workers 2 vs 1 on long trials** [``workers_long``]: the same on trials longer than start-up: the
  long-model study (i) with twice its trials (8 of ~5 s), ``--workers 1`` against ``--workers 2``.

``--quick`` shrinks every study (a few trials of a few epochs) to check the harness in about two minutes.
The full run (``--repeats 3``) took 12 minutes on the 2-core machine, 28 while other jobs shared it.
Timings depend on the machine and its load: read the ratios, and compare runs of one invocation only.
``--save benchmarks/results/overhead.json`` keeps the table with the command, machine and date for
``python -m benchmarks.docs``, which writes it into docs/performance.md.

The modules: ``contenders`` (the hand-written, loop and peer processes), ``harness`` (the studies, timing
whole processes, alternating), ``table`` (the rows and notes), ``cli`` (the command line).
"""

from __future__ import annotations

from benchmarks.overhead.cli import main
from benchmarks.overhead.contenders import hand_main, loop_main, peer_main, train_epochs
from benchmarks.overhead.harness import (
    ROWS,
    Run,
    Study,
    measure,
    recorded_trials,
    run_hand,
    run_loop,
    run_peer,
    run_sweep,
    studies,
)
from benchmarks.overhead.table import markdown, table

__all__ = [
    "ROWS",
    "Run",
    "Study",
    "hand_main",
    "loop_main",
    "main",
    "markdown",
    "measure",
    "peer_main",
    "recorded_trials",
    "run_hand",
    "run_loop",
    "run_peer",
    "run_sweep",
    "studies",
    "table",
    "train_epochs",
]
