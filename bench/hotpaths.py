"""Hot-path benchmarks: every edgert kernel against its natural peer, same process.

    python -m bench.hotpaths [--quick] [--device cpu|cuda] [--threads N] [--only OP] [--peers compile,cupy]
                             [--out DIR]

Prints a markdown table (median, IQR, GB/s, % of the measured memcpy bandwidth,
GFLOP/s, speedup vs peer) and writes JSON rows to bench/results/ (or --out, with the
table beside them as .md). --peers adds torch.compile of the PyTorch formulations and,
on CUDA, cupy formulations where one is natural (block_average, sparse_patch).
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

import torch

from bench.harness import PEERS, RESULTS_DIR, device_name, gemm_rate, markdown_table, memcpy_bandwidth, write_json

# One module per hot path; each exposes run(device, quick, peers=frozenset()) -> list[Row].
OP_MODULES = {
    "adaptive_conv": "bench.bench_adaptive_conv",
    "block_average": "bench.bench_block_average",
    "mmnet_detect": "bench.bench_mmnet",
    "packet": "bench.bench_packet",
    "sparse_patch": "bench.bench_sparse",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="few shapes and repeats (CI / README smoke run)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=0, help="torch and edgert CPU threads (0 = default)")
    parser.add_argument("--only", action="append", choices=sorted(OP_MODULES), help="run only these ops")
    parser.add_argument("--peers", default="", help=f"extra peers, comma-separated: {', '.join(PEERS)}")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder for the JSON rows and .md table")
    parser.add_argument("--no-json", action="store_true", help="do not write bench/results/*.json")
    args = parser.parse_args(argv)
    peers = frozenset(p for p in args.peers.split(",") if p)
    if peers - set(PEERS):
        parser.error(f"--peers: unknown {', '.join(sorted(peers - set(PEERS)))} (known: {', '.join(PEERS)})")

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"torch {torch.__version__} cannot use CUDA here (no device, or a CPU-only build): nothing to "
              "benchmark on cuda", file=sys.stderr)
        return 2
    if args.threads:
        # Same thread count for the peer (torch) and edgert (OpenMP reads OMP_NUM_THREADS at start-up).
        torch.set_num_threads(args.threads)
    # 1024^3 does not fill a datacenter GPU: the CUDA roofline uses 4096^3.
    roofline = {"memcpy_gbps": memcpy_bandwidth(device),
                "gemm_fp32_gflops": gemm_rate(device, 4096 if device.type == "cuda" else 1024)}
    print(f"device: {device_name(device)}  memcpy {roofline['memcpy_gbps']:.1f} GB/s  "
          f"fp32 GEMM {roofline['gemm_fp32_gflops']:.1f} GFLOP/s  torch threads {torch.get_num_threads()}")
    rows = []
    for name in args.only or OP_MODULES:
        rows.extend(importlib.import_module(OP_MODULES[name]).run(device, args.quick, peers))
    table = markdown_table(rows, roofline)
    print(table)
    if not args.no_json:
        config = {"device": device.type, "device_name": device_name(device), "quick": args.quick,
                  "threads": torch.get_num_threads(), "ops": args.only or list(OP_MODULES), "peers": sorted(peers)}
        # A partial run (--only, --peers, --threads) gets its own file so it never overwrites the full table.
        name = ("hotpaths" + ("-" + "-".join(sorted(args.only)) if args.only else "")
                + ("-peers-" + "-".join(sorted(peers)) if peers else "") + ("-quick" if args.quick else "")
                + (f"-t{args.threads}" if args.threads else ""))
        path = write_json(name, rows, roofline, config, args.out, markdown=table if args.out != RESULTS_DIR else None)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
