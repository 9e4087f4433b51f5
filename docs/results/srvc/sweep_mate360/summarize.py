"""The eta / tau sweep of issue 18 (SRVC only, every bit counted), from the run folders next to this file.

Each ``eta<E>_tau<T>/`` is one ``edgert srvc eval --methods srvc`` on the first 20 s of the pan/zoom material at
640x360 (x4, LR 160x90), differing only in ``--eta`` / ``--tau`` (see their config.json); the RD decision is off,
so every segment sends its update. BD-rate and BD-PSNR are against the first row. Run from the repository root:
``PYTHONPATH=python .venv/bin/python docs/results/srvc/sweep_mate360/summarize.py``.
"""
from __future__ import annotations

import json
from pathlib import Path

from edgert.srvc import metrics

HERE = Path(__file__).resolve().parent
RUNS = ("eta0.0025_tau10", "eta0.01_tau10", "eta0.0025_tau5")


def table() -> str:
    curves = {}
    for name in RUNS:
        for file in ("results.json", "results.partial.json"):
            if (HERE / name / file).exists():
                pts = json.loads((HERE / name / file).read_text())["points"]
                curves[name] = sorted((p for p in pts if p["method"] == "srvc"), key=lambda p: p["crf"])
                break
    lines = ["| eta, tau | bpp at CRF 18 / 24 / 30 (all bits) | model bytes per CRF | PSNR dB | BD-rate vs first | "
             "BD-PSNR vs first |", "|---|---|---|---|---:|---:|"]
    ref = curves.get(RUNS[0])
    for name, pts in curves.items():
        bd = dq = None
        if ref and name != RUNS[0] and len(pts) >= 2:
            bd = metrics.bd_rate([p["bpp"] for p in ref], [p["psnr"] for p in ref],
                                 [p["bpp"] for p in pts], [p["psnr"] for p in pts])
            dq = metrics.bd_psnr([p["bpp"] for p in ref], [p["psnr"] for p in ref],
                                 [p["bpp"] for p in pts], [p["psnr"] for p in pts])
        eta, tau = name[3:].split("_tau")
        bpp = " / ".join(f"{p['bpp']:.4f}" for p in pts)
        model = " / ".join(f"{p['model_bytes']:,}" for p in pts)
        psnr = " / ".join(f"{p['psnr']:.2f}" for p in pts)
        rate = "(reference)" if name == RUNS[0] else ("no overlap" if bd is None else f"{bd:+.1f} %")
        gain = "" if name == RUNS[0] else ("no overlap" if dq is None else f"{dq:+.2f} dB")
        lines.append(f"| {float(eta) * 100:g} %, {tau} s | {bpp} | {model} | {psnr} | {rate} | {gain} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
