"""PSNR vs model-stream bits of SRVC with each update value coding (issue 17), from the runs in this folder.

Each ``<coding>/results.json`` is one ``edgert srvc eval`` with the same settings but ``--value-coding``
(see their config.json). The model stream is split into the initial snapshot (identical in every run: fp16,
segment 0) and the sparse updates, whose values the coding changes. The SRVC decoder in each run rebuilt
the encoder's mirror bit for bit after every packet (checked by the evaluation, or it fails). Run from the
repository root: ``.venv/bin/python docs/results/srvc/quant_bikes_4s/summarize.py``.
"""
from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
CODINGS = ("fp16", "int8", "int8b", "int4b")


def table() -> str:
    lines = ["| value coding | SRVC PSNR dB | vs fp16 | bicubic PSNR dB | update bytes (segments 1..) | update kbit/s "
             "| vs fp16 updates | initial snapshot bytes |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    base = None
    for coding in CODINGS:
        path = HERE / coding / "results.json"
        if not path.exists():
            continue
        r = json.loads(path.read_text())
        for p in (p for p in r["points"] if p["method"] == "srvc"):
            bicubic = next(q["psnr"] for q in r["points"] if q["method"] == "bicubic" and q["crf"] == p["crf"])
            updates = p["model_bytes"] - p["initial_model_bytes"]
            seconds = r["frames"] / r["fps"]
            if base is None:
                base = (p["psnr"], updates)
            vs = "" if coding == "fp16" else f"{p['psnr'] - base[0]:+.3f}"
            ratio = "" if coding == "fp16" else f"{base[1] / updates:.2f}x smaller"
            lines.append(f"| {coding} (CRF {p['crf']:g}) | {p['psnr']:.3f} | {vs} | {bicubic:.3f} | {updates:,} | "
                         f"{8 * updates / 1e3 / seconds:.1f} | {ratio} | {p['initial_model_bytes']:,} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
