"""The weight-space picture's generator (benchmarks.weight_space): its maps agree with the search's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks.weight_space import log_ratio_weights, main, simplex_weights


def test_the_draws_are_weights_on_the_simplex_and_log_ratios_reach_the_corners() -> None:
    rng = np.random.default_rng(0)
    lr, sx = log_ratio_weights(500, -2, 2, rng), simplex_weights(500, rng)
    for w in (lr, sx):
        assert w.shape == (500, 3) and np.allclose(w.sum(axis=1), 1.0) and (w > 0).all()
    # log10(w1/w2) and log10(w3/w2) are the two draws: within the bounds, both ways
    ratios = np.log10(lr[:, [0, 2]] / lr[:, [1]])
    assert ratios.min() >= -2 - 1e-9 and ratios.max() <= 2 + 1e-9
    assert ratios.min() < -1.9 and ratios.max() > 1.9
    assert np.mean(lr.min(axis=1) < 0.01) > 3 * np.mean(sx.min(axis=1) < 0.01)  # what the picture shows


def test_the_command_writes_the_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "space.png"
    main(["--points", "50", "--out", str(out)])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert str(out) in capsys.readouterr().out
