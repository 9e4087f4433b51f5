"""Quantisation error of each value coding on one real AMS update (``bench.bench_packet.real_update``: the
bikes student, two gradient-guided 5 % phases of K = 20, the last phase's delta).

Prints, per coding, the relative L2 error ||v_applied - delta|| / ||delta|| of the values the device applies
(exactly what :class:`edgert.updates.DeviceMirror` applies), the largest per-value error relative to the
tensor's largest |delta|, and the packet bytes (formats 1 and 2). Run from the repository root:
``PYTHONPATH=python:. .venv/bin/python docs/results/ams/quant/quant_error.py``.
"""
from __future__ import annotations

import numpy as np

from bench.bench_packet import real_update
from edgert.updates import encode_update
from edgert.updates.reference import mask_fp16_gzip_bytes


def main() -> None:
    manifest, update = real_update()
    delta = np.concatenate([v for _, v in update.values()]).astype(np.float64)
    print(f"{delta.size} values, mask + fp16 + gzip {mask_fp16_gzip_bytes(manifest, update)} B")
    print("| value coding | relative L2 error | max error / tensor peak | format 1 B | format 2 B |")
    print("|---|---:|---:|---:|---:|")
    for coding in ("fp16", "int8", "int8b", "int4b"):
        pkt = encode_update(manifest, 0, 1, update, coding, max_format=2)
        applied = {u.tensor_id: u.values for u in pkt.applied}
        errors, worst = [], 0.0
        for name, (_, values) in update.items():
            got = applied[manifest.tensor_id(name)].astype(np.float64)
            err = got - values.astype(np.float64)
            errors.append(err)
            peak = float(np.abs(values).max()) if values.size else 0.0
            if peak > 0:
                worst = max(worst, float(np.abs(err).max()) / peak)
        rel = float(np.linalg.norm(np.concatenate(errors)) / np.linalg.norm(delta))
        f1 = len(encode_update(manifest, 0, 1, update, coding, max_format=1))
        print(f"| {coding} | {rel:.2e} | {worst:.3f} | {f1} | {len(pkt)} |")


if __name__ == "__main__":
    main()
