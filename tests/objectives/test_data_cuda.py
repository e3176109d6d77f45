"""The CUDA-only side of objectives.data and objectives.numerics, in both loops: fp16 with a GradScaler,
bf16 on the GPU, pinned host batches copied with ``non_blocking``, and peak GPU memory.

Skipped without a CUDA device. The problems, models and configs are those of ``test_data`` (tiny, so
each test takes about a second on a GPU).
"""

from __future__ import annotations

import gc
import math
from typing import Any

import pytest
import torch

from objectives import alternating, data, dual_loss
from tests.objectives.test_data import (
    LOOPS,
    Factory,
    assert_same_metrics,
    assert_same_params,
    cfg_for,
    dual_problem,
    params,
    problem_for,
    run,
    sgd,
)

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="needs a CUDA device: fp16/GradScaler, pinned memory and non_blocking copies",
)

CUDA = "cuda"


def _losses(metrics: dict[str, float]) -> list[str]:
    return [k for k in metrics if k.endswith("_loss")]


def _mode(loop: str, mode: str | None) -> dict[str, Any]:
    return {"mode": mode} if loop == "alternating" and mode else {}


class ScalerSpy:
    """Wraps ``numerics.scaler`` as the loops imported it, keeping every GradScaler they make."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.made: list[torch.amp.GradScaler] = []
        self._inner = dual_loss.scaler
        monkeypatch.setattr(dual_loss, "scaler", self)
        monkeypatch.setattr(alternating, "scaler", self)

    def __call__(self, precision: str, device: torch.device) -> torch.amp.GradScaler:
        made = self._inner(precision, device)
        self.made.append(made)
        return made


# --- fp16 and bf16 --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("loop", "mode"),
    [("dual_loss", None), ("alternating", "alternate"), ("alternating", "b_on_detached"), ("alternating", "joint")],
)
def test_fp16_trains_with_a_grad_scaler_close_to_fp32(loop, mode, monkeypatch):
    spy = ScalerSpy(monkeypatch)
    results = {}
    for precision in ("fp32", "fp16"):
        problem = problem_for(loop, dtype=torch.float32, n=(64, 64))
        cfg = cfg_for(loop, device=CUDA, precision=precision, batch_size=16, epochs=3, **_mode(loop, mode))
        results[precision] = run(cfg, problem)
    fp32_scaler, fp16_scaler = spy.made
    assert not fp32_scaler.is_enabled()
    assert fp16_scaler.is_enabled() and fp16_scaler.get_scale() > 1.0  # the loss was scaled
    fp32, fp16 = results["fp32"], results["fp16"]
    assert all(math.isfinite(v) for v in fp16.values())
    for key in _losses(fp32):
        assert fp16[key] == pytest.approx(fp32[key], rel=5e-2), key
    assert any(fp16[k] != fp32[k] for k in _losses(fp32))  # the fp16 autocast did run


def test_fp16_grad_clip_unscales_before_clipping():
    """With a GradScaler the gradients are unscaled before the clip: fp16 clipped ≈ fp32 clipped. Clipping
    the scaled (×65536) gradients instead would leave the model nearly where it started."""
    results = {}
    for precision in ("fp32", "fp16"):
        problem = dual_problem(dtype=torch.float32)
        cfg = cfg_for(
            "dual_loss", device=CUDA, precision=precision, batch_size=32, grad_clip=0.1, epochs=4, optimizer=sgd(0.5)
        )
        results[precision] = (run(cfg, problem), problem)
    fp32, fp16 = results["fp32"][0], results["fp16"][0]
    problem = results["fp32"][1]
    factory: Factory = problem.make_model  # type: ignore[assignment]
    untrained = dual_loss.evaluate(
        factory.fresh(), {"a": problem.a, "b": problem.b}, cfg_for("dual_loss", device=CUDA), torch.device(CUDA)
    )
    moved = abs(fp32["val_total_loss"] - untrained["val_total_loss"].item())
    assert moved > 1e-2 * fp32["val_total_loss"]
    assert abs(fp16["val_total_loss"] - fp32["val_total_loss"]) < 0.2 * moved


@pytest.mark.parametrize("loop", LOOPS)
def test_bf16_on_cuda_is_close_to_fp32_but_not_identical(loop):
    results = {}
    for precision in ("fp32", "bf16"):
        problem = problem_for(loop, dtype=torch.float32, n=(64, 64))
        results[precision] = run(cfg_for(loop, device=CUDA, precision=precision, batch_size=16, epochs=3), problem)
    fp32, bf16 = results["fp32"], results["bf16"]
    assert all(math.isfinite(v) for v in bf16.values())
    for key in _losses(fp32):
        assert bf16[key] == pytest.approx(fp32[key], rel=5e-2), key
    assert any(bf16[k] != fp32[k] for k in _losses(fp32))


# --- pinned memory and non_blocking copies --------------------------------------------------------


def _pinned(tree: Any) -> bool:
    if isinstance(tree, torch.Tensor):
        return tree.is_pinned()
    if isinstance(tree, dict):
        return all(_pinned(v) for v in tree.values())
    return all(_pinned(v) for v in tree)


@pytest.mark.parametrize("inputs", ["plain", "dict"])
@pytest.mark.parametrize("loop", LOOPS)
def test_pinned_non_blocking_dataset_path_equals_the_plain_one(loop, inputs, monkeypatch):
    """2 workers, pinned batches, non_blocking copies train exactly like 0 workers and pageable batches
    (float64: the same batches in the same order, the same kernels). One epoch: whether later epochs
    keep the same order with workers is test_data's test_worker_processes_do_not_change_the_batches."""
    moves: list[tuple[bool, bool]] = []
    inner = data.move

    def move(tree: Any, device: Any, non_blocking: bool = False) -> Any:
        moves.append((non_blocking, _pinned(tree)))
        return inner(tree, device, non_blocking)

    monkeypatch.setattr(data, "move", move)
    results = {}
    for setting in ({"num_workers": 0, "pin_memory": False}, {"num_workers": 2, "pin_memory": True}):
        moves.clear()
        problem = problem_for(loop, path="dataset", inputs=inputs, n=(24, 24))
        metrics = run(cfg_for(loop, device=CUDA, data=setting, epochs=1), problem)
        results[setting["num_workers"]] = (metrics, params(problem), list(moves))
    assert all(not nb and not pinned for nb, pinned in results[0][2][:4])  # training batches come first
    assert results[2][2] and all(nb and pinned for nb, pinned in results[2][2])
    assert_same_metrics(results[2][0], results[0][0], tol=1e-9)
    assert_same_params([p.cpu() for p in results[2][1]], [p.cpu() for p in results[0][1]], tol=1e-9)


# --- peak memory ----------------------------------------------------------------------------------


def _big_problem(loop: str, rows: int) -> Any:
    """The test problem with ``rows`` training samples per split (float32), all tensors on the GPU."""
    return problem_for(loop, dtype=torch.float32, n=(rows, rows))


@pytest.mark.parametrize("loop", LOOPS)
def test_peak_memory_is_the_trials_max_allocated(loop):
    """peak_memory_mb = torch.cuda.max_memory_allocated in MiB, counted from the trial's start: at least
    the data the trial put on the GPU, below the device's memory, non-decreasing over epochs; a smaller
    trial after a bigger one reports its own (smaller) peak."""
    device = torch.device(CUDA)
    total_mb = torch.cuda.get_device_properties(device).total_memory / 2**20
    peaks: dict[int, list[float]] = {}
    for rows in (2**17, 64):
        calls: list[float] = []
        problem = _big_problem(loop, rows)
        cfg = cfg_for(loop, device=CUDA, batch_size=4096 if rows > 64 else 16, epochs=2)
        run(cfg, problem, lambda e, m, calls=calls: calls.append(m["peak_memory_mb"]))
        assert calls[-1] == pytest.approx(torch.cuda.max_memory_allocated(device) / 2**20, rel=1e-9)
        peaks[rows] = calls
        del problem
        gc.collect()  # the bigger trial's tensors are gone before the smaller one starts
    big, small = peaks[2**17], peaks[64]
    data_mb = 2**17 * (5 + 2) * 4 / 2**20  # one split's x and y in float32 (the dual problem has two)
    assert data_mb < big[0] < total_mb
    assert 0 < small[0] < big[0] / 2  # reset at the trial's start: not the previous trial's peak
    assert big == sorted(big) and small == sorted(small)
