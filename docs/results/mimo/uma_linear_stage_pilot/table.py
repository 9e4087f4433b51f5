"""Markdown SER table (SER [Wilson 95 %]) for the MMNet linear-stage pilots: python table.py DIR [DIR ...]."""
import json
import sys
from pathlib import Path


def fmt(x: float) -> str:
    return "0" if x == 0 else (f"{x:.2g}" if x >= 1e-2 else f"{x:.1e}")


rows = []
snrs: list[str] = []
for d in map(Path, sys.argv[1:]):
    r = json.loads((d / "results.json").read_text())
    tr = r.get("training", {}).get("mmnet", {})
    for det, pts in r["points"].items():
        snrs = sorted(set(snrs) | set(pts), key=float)
        label = det if det != "mmnet" else f"mmnet {tr.get('linear_stage', 'free')} {tr.get('iterations_per_channel', 0):.2f} it/ch"
        s = r["summary"][det]["snr_at_target"]
        rows.append((f"{label} ({d.name})", pts, "not reached" if s is None else f"{s:.2f} dB",
                     tr.get("ms_per_channel_iteration") if det == "mmnet" and tr.get("iterations_per_channel") else None))
print("| detector (run) | " + " | ".join(f"{s} dB" for s in snrs) + " | SNR at 1e-3 | ms/channel-iteration |")
print("| --- |" + " ---: |" * (len(snrs) + 2))
for label, pts, at, spi in rows:
    cells = [f"{fmt(pts[s]['ser'])} [{fmt(pts[s]['ci95'][0])}, {fmt(pts[s]['ci95'][1])}]" if s in pts else "" for s in snrs]
    print(f"| {label} | " + " | ".join(cells) + f" | {at} | {'' if spi is None else f'{spi:.0f}'} |")
