"""SER per condition-number bin on the subset of ../uma_time_condition/ (every 10th time step of the time
set: k = 0, 10, .., 40, 480 matrices), taken from the per-matrix errors that full time-set sweeps kept.

The full sweeps ran on all 4800 matrices (6 sequences x 50 time steps x 16 subcarriers, flat() order);
uma_t50_every10.npz is H[:, ::10] on the time axis, so its matrices are errors.reshape(6, 50, 16)[:, ::10].
The condition numbers of that subset equal those of ../uma_time_condition/per_matrix.npz exactly (checked
below), so the bins are the same. The noise draws are the full sweep's (other draws than
../uma_time_condition/, same channels); within one full sweep every detector had the same data, and the
`free` re-run has the same data as the committed full run (MMSE equal to the error). K-Best 128 and EP float64
of ../uma_time_condition_kbest/ ran on uma_t50_every10.npz itself with the draws of ../uma_time_condition/.

usage (repository root): PYTHONPATH=python .venv/bin/python docs/results/mimo/uma_time_condition_mmnet/bins.py
Writes bins.json next to this file and prints the table rows.
"""
import json
from pathlib import Path

import numpy as np

from edgert.mimo.evaluate import ser_by_condition

HERE = Path(__file__).resolve().parent
MIMO = HERE.parent
SNRS = ("18", "20", "24", "28", "32")
SOURCES = [  # (label, folder, detector)
    ("K-Best 128 (same draws as uma_time_condition)", "uma_time_condition_kbest", "kbest"),
    ("EP float64 (same draws as uma_time_condition)", "uma_time_condition_kbest", "ep64"),
    ("MMNet `free`, 9.88 it/ch (re-run of the committed time set protocol)", "uma_time_64x16_qam16_free_rerun",
     "mmnet"),
    ("MMNet `corrected`, 9.88 it/ch", "uma_time_64x16_qam16_corrected", "mmnet"),
    ("EP float64 (full run, same draws as MMNet)", "uma_time_64x16_qam16", "ep64"),
    ("MMSE (full run, same draws as MMNet)", "uma_time_64x16_qam16", "mmse"),
]


def subset(a: np.ndarray) -> np.ndarray:
    if a.shape[-1] == 480:  # a run on uma_t50_every10.npz itself
        return a
    return a.reshape(*a.shape[:-1], 6, 50, 16)[..., ::10, :].reshape(*a.shape[:-1], 480)


ref = np.load(MIMO / "uma_time_condition" / "per_matrix.npz")
condition = ref["condition"]
out = {"subset": "k = 0, 10, .., 40 of the 4800-matrix time set (480 matrices)", "snr_db": list(SNRS), "rows": []}
for label, folder, det in SOURCES:
    path = MIMO / folder / "per_matrix.npz"
    if not path.is_file():
        continue
    pm = np.load(path)
    assert np.array_equal(subset(pm["condition"]), condition), "subset does not match uma_time_condition"
    spm = int(pm["symbols_per_matrix"])
    dets = [str(d) for d in pm["detectors"]]
    snr_keys = [f"{s:g}" for s in pm["snr_db"]]
    errs = {det: {s: subset(pm["errors"][dets.index(det), snr_keys.index(s)]) for s in SNRS if s in snr_keys}}
    r = ser_by_condition(errs, condition, spm)
    row = {"label": label, "folder": folder, "detector": det, "bins": r["bins"],
           "errors": {s: int(errs[det][s].sum()) for s in errs[det]}, "symbols": 480 * spm,
           "ser": r["ser"][det], "error_share": r["error_share"][det]}
    out["rows"].append(row)
    for s in errs[det]:
        share = row["error_share"][s]
        sh = " / ".join(f"{100 * share[i]:.0f}%" for i in (3, 4, 5)) if share[0] is not None else "-"
        print(f"| {label} {s} dB ({row['errors'][s]}) | " + " | ".join(
            "0" if v == 0 else f"{v:.2g}" for v in row["ser"][s]) + f" | {sh} |")
(HERE / "bins.json").write_text(json.dumps(out, indent=1) + "\n")
