"""SRVC decoder throughput: SR frames per second at 720p and 360p output (x4), edgert's adaptive-conv
path (native kernel) against the same model with the pure-PyTorch reference (unfold + bmm).

    python -m bench.bench_srvc [--quick] [--threads N] [--device cpu|cuda] [--out DIR]

Writes ``bench/results/bench_srvc-<device>.json`` (or into --out, with the table as .md) and prints a
markdown table. The model is the
paper's (F = 32, 2.2M parameters) with random weights: speed does not depend on the values.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from bench.harness import RESULTS_DIR, Row, cuda_sync, device_name, markdown_table, measure, write_json
from edgert import ops
from edgert.srvc.model import SRConfig, SRVCModel


def run(device: torch.device, quick: bool) -> list[Row]:
    """One row per (output size, implementation); extra['fps'] is SR frames per second."""
    sizes = [(720, 1280)] if quick else [(720, 1280), (360, 640)]
    repeats = 3 if quick else 5
    rows: list[Row] = []
    sync = cuda_sync(device)
    torch.manual_seed(0)
    model = SRVCModel(SRConfig()).to(device).eval()
    macs = model.macs_per_lr_pixel()
    backends = ["torch"] + [b for b in ops.available_backends(device) if b != "torch"]
    for h, w in sizes:
        x = torch.rand(1, 3, h // 4, w // 4, device=device)
        shape = f"LR {w // 4}x{h // 4} -> {w}x{h}"
        for backend in backends:
            model.backend = backend
            with torch.no_grad():
                t = measure(lambda: model(x), repeats=repeats, warmup=1, sync=sync)
            impl = "torch-eager (reference adaptive conv)" if backend == "torch" else f"edgert-{backend}"
            rows.append(Row("srvc_sr_frame", impl, device_name(device), "float32", shape, t,
                            flops=2 * macs * x.shape[-1] * x.shape[-2],
                            extra={"fps": 1.0 / t.median, "peer": backend == "torch", "backend": backend}))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="720p only, fewer repeats")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder for the JSON rows and .md table")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"torch {torch.__version__} cannot use CUDA here (no device, or a CPU-only build): nothing to "
              "benchmark on cuda", file=sys.stderr)
        sys.exit(2)
    rows = run(device, args.quick)
    table = markdown_table(rows, {})
    print(table)
    for r in rows:
        print(f"{r.shapes:24s} {r.impl:40s} {r.extra['fps']:.2f} fps")
    path = write_json("bench_srvc", rows, {}, {"device": args.device, "threads": torch.get_num_threads(),
                                               "quick": args.quick}, args.out,
                      markdown=table if args.out != RESULTS_DIR else None)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
