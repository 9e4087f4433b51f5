"""mIoU vs downlink of AMS with each update value coding (issue 17), and the packet sizes on identical updates.

Reads the one-scheme runs ``<coding>/results.json`` (seed 0) and ``seed1-<coding>/results.json`` in this folder
(same settings but the value coding; see their config.json; ``fp32`` is a control: values more exact than
fp16, so its mIoU difference to fp16 is trajectory noise, not quantisation) and prints two markdown tables:

* per run: mIoU, downlink, bytes per update, and the same updates as mask + fp16 + gzip (the paper's coding,
  measured by the server on each published delta before quantisation);
* per coding, on the *same* updates (the fp16 run's deltas re-encoded by the server, not sent): format 1 and
  format 2 bytes and the factor against mask + fp16 + gzip.

Run from the repository root: ``.venv/bin/python docs/results/ams/quant/summarize.py``.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path

HERE = Path(__file__).resolve().parent
CODINGS = ("fp16", "fp32", "int8", "int8b", "int4b")
LABELS = {"fp16": "fp16 (current)", "fp32": "fp32 (control: more exact than fp16)", "int8": "int8, per-tensor scale",
          "int8b": "int8, per-block scale (64)", "int4b": "4-bit, per-block scale (64)"}


def _ams(path: Path) -> dict:
    return json.loads(path.read_text())["schemes"]["ams"]


def run_table() -> str:
    lines = ["| seed | value coding | mIoU | vs fp16 | downlink kbps | bytes/update (sent) | mask+fp16+gzip "
             "bytes/update | smaller than mask+fp16+gzip |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for seed, prefix in ((0, ""), (1, "seed1-")):
        base = None
        for coding in CODINGS:
            path = HERE / f"{prefix}{coding}" / "results.json"
            if not path.exists():
                continue
            e = _ams(path)
            sent = sum(e["update_sizes"].values())
            ref = sum(e["reference_sizes"].values())
            miou = 100 * e["miou"]
            base = miou if coding == "fp16" else base
            vs = "" if base is None or coding == "fp16" else f"{miou - base:+.2f}"
            lines.append(f"| {seed} | {LABELS[coding]} | {miou:.2f} | {vs} | {e['downlink_kbps_paper_time']:.1f} | "
                         f"{sent / len(e['update_sizes']):,.0f} | {ref / len(e['reference_sizes']):,.0f} | "
                         f"{ref / sent:.2f}x |")
    return "\n".join(lines)


def same_update_table(run: str = "fp16") -> str:
    e = _ams(HERE / run / "results.json")
    sizes = list(e["coding_sizes"].values())
    ref = statistics.mean(e["reference_sizes"].values())
    lines = [f"| value coding | format 1 bytes/update | format 2 bytes/update | vs mask+fp16+gzip ({ref:,.0f} B) |",
             "|---|---:|---:|---:|"]
    for coding in CODINGS:
        if f"{coding}/f1" not in sizes[0]:
            continue
        f1 = statistics.mean(s[f"{coding}/f1"] for s in sizes)
        f2 = statistics.mean(s[f"{coding}/f2"] for s in sizes)
        lines.append(f"| {LABELS[coding]} | {f1:,.0f} | {f2:,.0f} | {ref / f2:.2f}x smaller |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(run_table())
    print()
    print(same_update_table())
