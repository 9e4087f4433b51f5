"""RD curves of the eta, tau and F ablations (bikes, first 2 s; CRF 22/27/32/37): PSNR against bits per pixel
without the initial model (one panel each). Writes ablation_rd.png next to this script.
Run from the repository root: ``.venv/bin/python docs/results/srvc/plot_ablation_rd.py``.
"""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402

HERE = Path(__file__).resolve().parent


def main() -> None:
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, param, folder, unit in zip(axes, ("eta", "tau", "F"), ("eta", "tau", "F"), ("", " s", "")):
        res = json.loads((HERE / f"ablate_{folder}_rd_bikes_2s" / "results.json").read_text())
        for value, pts in res["runs"].items():
            if param == "eta":
                label = f"eta = {100 * float(value):g} %"
            elif param == "F":
                label = f"F = {float(value):g}"
            else:
                label = f"tau = {value}{unit}"
            ax.plot([p["bpp_without_initial_model"] for p in pts], [p["psnr"] for p in pts], marker="o", label=label)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels overlap on a short log axis
        ax.set_xlabel("bits per pixel: content + updates (initial model not counted; log)")
        ax.set_ylabel("PSNR (dB)")
        ax.set_title(f"SRVC {param} ablation, bikes 2 s")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(HERE / "ablation_rd.png", dpi=110)


if __name__ == "__main__":
    main()
