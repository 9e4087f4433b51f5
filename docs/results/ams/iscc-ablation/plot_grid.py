"""mIoU vs downlink for every selection strategy and gamma on iscc-demo (the selection x gamma grid).

Reads the main run (gradient 5 %, full), this folder's run (gradient 20/10/1 %, the 5 % strategies) and
the one-scheme runs in grid/, all with the same settings and seed; writes selection_grid.png and prints
the table. Run from the repository root: ``.venv/bin/python docs/results/ams/iscc-ablation/plot_grid.py``.
"""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).resolve().parent
SOURCES = [HERE.parent / "iscc-demo" / "results.json", HERE / "results.json", *sorted(HERE.glob("grid/*/results.json"))]


def points() -> dict[str, dict[float, tuple[float, float]]]:
    """strategy -> gamma -> (mIoU in points, downlink kbps of paper time)."""
    out: dict[str, dict[float, tuple[float, float]]] = {}
    for path in SOURCES:
        for name, entry in json.loads(path.read_text())["schemes"].items():
            if name == "ams":
                strategy, gamma = "gradient", 0.05
            elif name.startswith("ams"):
                head, _, frac = name.partition("@")
                strategy, gamma = (head.split(":")[1] if ":" in head else "gradient"), float(frac)
            elif name == "full":
                strategy, gamma = "full", 1.0
            else:
                continue
            out.setdefault(strategy, {})[gamma] = (100 * entry["miou"], entry["downlink_kbps_paper_time"])
    return out


def main() -> None:
    grid = points()
    gammas = sorted({g for s in grid.values() for g in s if g < 1.0}, reverse=True)
    print("| strategy | " + " | ".join(f"{100 * g:g} %" for g in gammas) + " |")
    print("|---|" + "---:|" * len(gammas))
    for strategy in ("gradient", "random", "first", "last"):
        row = [f"{grid[strategy][g][0]:.1f} ({grid[strategy][g][1]:.0f})" if g in grid[strategy] else "-" for g in gammas]
        print(f"| {strategy} | " + " | ".join(row) + " |")
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for strategy, marker in (("gradient", "o"), ("random", "s"), ("first", "^"), ("last", "v")):
        pts = sorted(grid[strategy].items())
        ax.plot([p[1][1] for p in pts], [p[1][0] for p in pts], marker=marker, label=strategy)
        for g, (m, kbps) in pts:
            ax.annotate(f"{100 * g:g}%", (kbps, m), textcoords="offset points", xytext=(4, -10), fontsize=7)
    if "full" in grid:
        m, kbps = grid["full"][1.0]
        ax.plot([kbps], [m], "k*", markersize=10, label="full model")
    ax.set_xscale("log")
    ax.set_xlabel("downlink kbps (paper time, log)")
    ax.set_ylabel("mIoU (%)")
    ax.set_title("iscc-demo: coordinate selection x gamma (seed 0)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(HERE / "selection_grid.png", dpi=120)


if __name__ == "__main__":
    main()
