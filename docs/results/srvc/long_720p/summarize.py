"""BD-rate / BD-PSNR of the 60-s 720p pan/zoom runs (issue 18), from the run folders next to this file.

The CPU time was split over parallel processes, so one comparison reads several folders, all with the same clip
and encoder settings (see each config.json): ``x265_crf36/`` (x265 at CRF 36, the partial result of the first
x4 run, stopped after it to run the rest in parallel), ``x265/`` (x265 at CRFs 42 and 48), ``x4/`` (bicubic,
generic SR and SRVC at x4), ``x2/`` (the same at x2), ``x2_generic1000/`` (generic and SRVC at x2 with the
default 1000-iteration generic model instead of 300; bicubic from ``x2/``), ``x2_generic1000_it40/`` (SRVC
alone, 40 + 40 iterations per segment), ``x2_generic1000_it80/`` (80 + 80), ``x2_generic1000_it160/``
(160 + 160). The x265 points are measured on
frames 0, 25, 50, ...; for x2, which measured frames 0, 50, 100, ..., they are re-pooled on those frames (the
per-frame PSNRs give back each frame's MSE, so the pooled PSNR is exact). Bits are always those of all 1500
frames. Run from the repository root: ``PYTHONPATH=python .venv/bin/python docs/results/srvc/long_720p/summarize.py``.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from edgert.srvc.evaluate import bd_table

HERE = Path(__file__).resolve().parent


def _pooled(psnrs: list[float]) -> float:
    mse = sum(255.0 ** 2 / 10 ** (q / 10) for q in psnrs) / len(psnrs)
    return 10 * math.log10(255.0 ** 2 / mse)


def _load(name: str) -> dict[str, Any]:
    for file in ("results.json", "results.partial.json"):
        path = HERE / name / file
        if path.exists():
            return json.loads(path.read_text())
    return {}


#: runs that measured only some methods, and the runs whose other methods they share, first match first (same
#: clip, LR encodes and measured frames): ``x2_generic1000`` re-ran generic and SRVC at x2 with the default
#: 1000-iteration generic model, ``x2_generic1000_it40`` / ``_it80`` / ``_it160`` SRVC alone with 40 + 40 / 80 + 80 /
#: 160 + 160 iterations per segment
BORROWS = {"x2_generic1000": ("x2",), "x2_generic1000_it40": ("x2_generic1000", "x2"),
           "x2_generic1000_it80": ("x2_generic1000", "x2"), "x2_generic1000_it160": ("x2_generic1000", "x2")}


def points(name: str) -> list[dict[str, Any]]:
    """The run's points plus the x265 ladder, re-pooled on the frames this run measured (and the methods it
    did not run from the run it borrows them from)."""
    pts = list(_load(name).get("points", []))
    if not pts:
        return []
    for other in BORROWS.get(name, ()):
        ran = {p["method"] for p in pts}
        pts += [p for p in _load(other).get("points", []) if p["method"] not in ran]
    every = json.loads((HERE / name / "config.json").read_text())["psnr_every"]
    for folder in ("x265_crf36", "x265"):
        if not (HERE / folder / "config.json").exists():
            continue
        step = every // json.loads((HERE / folder / "config.json").read_text())["psnr_every"]
        for p in _load(folder).get("points", []):
            if p["method"] == "x265":
                per_frame = p["psnr_per_frame"][::step]
                pts.append({**p, "psnr": _pooled(per_frame), "psnr_per_frame": per_frame})
    return pts


def table() -> str:
    lines = []
    for name in ("x4", "x2", "x2_generic1000", "x2_generic1000_it40", "x2_generic1000_it80", "x2_generic1000_it160"):
        pts = points(name)
        if not pts:
            continue
        lines += [f"**{name}**", "", "| method | CRF | bpp (all bits) | model bytes | updates sent | PSNR dB |",
                  "|---|---:|---:|---:|---:|---:|"]
        for p in sorted(pts, key=lambda p: (p["method"], p["crf"])):
            sent = p.get("updates_sent")
            segs = len(p.get("segments", [])) or None
            lines.append(f"| {p['method']} | {p['crf']:g} | {p['bpp']:.5f} | {p.get('model_bytes', 0):,} | "
                         f"{'' if sent is None else f'{sent}/{segs}'} | {p['psnr']:.2f} |")
        lines += ["", "| comparison | BD-rate | BD-PSNR |", "|---|---:|---:|"]
        for comp, row in bd_table(pts).items():
            rate = "no overlap" if row["bd_rate_percent"] is None else f"{row['bd_rate_percent']:+.1f} %"
            dq = "no overlap" if row["bd_psnr_db"] is None else f"{row['bd_psnr_db']:+.2f} dB"
            lines.append(f"| {comp} | {rate} | {dq} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
