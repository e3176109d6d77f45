"""``python -m benchmarks.weight_space`` — the picture of what each weight parametrization covers for 3 tasks.

Draws N points the way a search's random start draws them — ``log_ratio`` (two log10-ratios to the
second task, uniform on [low, high]²) and ``simplex`` (three uniforms through −log, normalised: a flat
Dirichlet) — and plots the weights they give on the triangle of (w_1, w_2, w_3) with w_1 + w_2 + w_3 = 1,
with equal weights marked. Written to ``docs/explanation/weight-space.png`` (README and
docs/explanation/parametrizations.md show it).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from objectives.helpers import weights_from_log10_ratios, weights_from_uniforms

OUT = Path(__file__).resolve().parents[1] / "docs" / "explanation" / "weight-space.png"


def log_ratio_weights(n: int, low: float, high: float, rng: np.random.Generator) -> np.ndarray:
    """Weights (first, second, third) from two log10-ratios to the second task, as the search maps them."""
    out = []
    for r1, r3 in rng.uniform(low, high, size=(n, 2)):
        w = weights_from_log10_ratios([r1, r3])  # order: the ratios' tasks, then the reference (second task)
        out.append((w[0], w[-1], w[1]))
    return np.array(out)


def simplex_weights(n: int, rng: np.random.Generator) -> np.ndarray:
    return np.array([weights_from_uniforms(u) for u in rng.uniform(0, 1, size=(n, 3))])


def _xy(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Barycentric → plane: task 1 at the bottom left, task 2 at the bottom right, task 3 at the top."""
    return w[:, 1] + 0.5 * w[:, 2], w[:, 2] * math.sqrt(3) / 2


def plot(n: int, low: float, high: float, out: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    panels = [
        (f"log_ratio on [{low:g}, {high:g}]²", log_ratio_weights(n, low, high, rng)),
        ("simplex (flat Dirichlet)", simplex_weights(n, rng)),
    ]
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
    corners = np.array([[0, 0], [1, 0], [0.5, math.sqrt(3) / 2], [0, 0]])
    for ax, (title, w) in zip(axes, panels, strict=True):
        ax.plot(corners[:, 0], corners[:, 1], color="black", linewidth=0.8)
        x, y = _xy(w)
        ax.scatter(x, y, s=3, alpha=0.4)
        ex, ey = _xy(np.full((1, 3), 1 / 3))
        ax.scatter(ex, ey, s=60, marker="*", color="crimson", label="equal weights", zorder=3)
        for (cx, cy), label in zip(corners[:3], ("task 1", "task 2 (ratio reference)", "task 3"), strict=True):
            offset = (0, -12) if cy == 0 else (24, -4)  # the top corner's label beside it, clear of the title
            ax.annotate(label, (cx, cy), textcoords="offset points", xytext=offset, ha="center")
        near = np.mean(np.min(w, axis=1) < 0.01)
        ax.set_title(f"{title}\n{near:.0%} of draws give a task < 1 % of the weight", fontsize=10)
        ax.set_aspect("equal")
        ax.axis("off")
    axes[0].legend(loc="upper left", fontsize=8)
    fig.suptitle(f"Three loss weights: {n} random draws of each parametrization", fontsize=11)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0].split("—")[-1].strip())
    p.add_argument("--points", type=int, default=2000, help="draws per parametrization (default 2000)")
    p.add_argument("--low", type=float, default=-2.0, help="log_ratio's low bound (default -2)")
    p.add_argument("--high", type=float, default=2.0, help="log_ratio's high bound (default 2)")
    p.add_argument("--out", type=Path, default=OUT, help=f"the PNG (default {OUT.relative_to(OUT.parents[2])})")
    args = p.parse_args(argv)
    print(plot(args.points, args.low, args.high, args.out))


if __name__ == "__main__":
    main()
