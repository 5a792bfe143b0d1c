"""Plot a training run: loss (smoothed) and validation gain over bicubic per scale.

    python scripts/training_curve.py RUN_DIR docs/images/training-curve.png
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np


def read_loss(run: Path) -> tuple[np.ndarray, np.ndarray]:
    """Steps and losses; a resumed run may repeat steps: the last record of a step wins."""
    by_step: dict[int, float] = {}
    for line in (run / "loss.csv").read_text().splitlines():
        step, loss, *_ = line.split(",")
        by_step[int(step)] = float(loss)
    steps = np.array(sorted(by_step))
    return steps, np.array([by_step[s] for s in steps])


def read_val(run: Path) -> dict[int, list[tuple[int, float]]]:
    out: dict[int, list[tuple[int, float]]] = {}
    path = run / "val.csv"
    if path.exists():
        with path.open() as f:
            for row in csv.DictReader(f):
                out.setdefault(int(row["scale"]), []).append((int(row["step"]), float(row["gain_db"])))
    return out


def main(run: str, png: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run)
    steps, loss = read_loss(run_dir)
    k = max(1, min(100, len(loss) // 20))
    smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    a.plot(steps, loss, color="0.8", lw=0.5, label="per step")
    a.plot(steps[k - 1:], smooth, color="C0", label=f"mean of {k}")
    a.set(xlabel="step", ylabel="L1 loss ([-1, 1] scale)", title="training loss")
    a.legend()
    for scale, pts in sorted(read_val(run_dir).items()):
        s, g = zip(*pts)
        b.plot(s, g, marker="o", label=f"x{scale}")
    b.axhline(0, color="k", lw=0.6)
    b.set(xlabel="step", ylabel="PSNR gain over bicubic (dB)", title="held-out validation")
    b.legend(ncol=2)
    fig.tight_layout()
    Path(png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    print(f"wrote {png}: {len(steps)} steps, last smoothed loss {smooth[-1]:.4f}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
