"""SRVC decoder throughput: SR frames per second at 720p and 1080p output, x4 and x2, edgert's adaptive-conv
path (native kernel) against the same model with the pure-PyTorch reference (unfold + bmm), and against the
machine's flop limit; plus the decoder's whole per-frame step (``edgert.srvc.decoder.super_resolve``: uint8
LR frame in, rounded uint8 HR frame out).

    python -m bench.bench_srvc [--quick] [--threads N] [--device cpu|cuda] [--out DIR]

Writes ``bench/results/bench_srvc-<device>.json`` (or into --out, with the table as .md) and prints a
markdown table. The model is the paper's (F = 32, 2.2M parameters at x4) with random weights: speed does
not depend on the values.

Flops per frame = 2 x ``SRVCModel.macs_per_lr_pixel()`` x (LR pixels after padding to a multiple of P):
the multiply-adds of the kernel predictor's two convolutions (per patch, spread over its P^2 pixels), the
adaptive conv (27 F per pixel, zero-ring taps included), the body's convolutions and the output conv
(3 s^2 channels); bias adds, ReLUs, padding and the pixel shuffle are not counted. The flop limit is the
fp32 GEMM rate measured in the same run (torch.mm 1024^3 on CPU, same threads; 4096^3 on CUDA): ``limit fps`` =
GEMM rate / flops per frame, and the %GEMM column is the fraction of it a row reaches. On CUDA, cuDNN runs the
model's convolutions on TF32 tensor cores by default (``torch.backends.cudnn.allow_tf32``), so a frame can beat the
plain fp32 GEMM rate: the run also measures the TF32 GEMM rate (``gemm_tf32_gflops``) and ``limit_fps`` uses it
whenever cuDNN may use TF32.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from bench.harness import RESULTS_DIR, Row, cuda_sync, device_name, gemm_rate, markdown_table, measure, write_json
from edgert import ops
from edgert.srvc.decoder import super_resolve
from edgert.srvc.model import SRConfig, SRVCModel

# (scale, LR height, LR width): 720p and 1080p output, x4 (the paper's) and x2.
SIZES = ((4, 180, 320), (4, 270, 480), (2, 360, 640), (2, 540, 960))


def run(device: torch.device, quick: bool, gemm_gflops: float = 0.0) -> list[Row]:
    """One row per (scale, output size, implementation); extra['fps'] is SR frames per second and, given the
    measured GEMM rate, extra['limit_fps'] the frame rate at that rate. The PyTorch-reference peer runs at
    x4 only (at x2 the adaptive conv is an even smaller share of the frame)."""
    sizes = SIZES[:1] if quick else SIZES
    rows: list[Row] = []
    sync = cuda_sync(device)
    for scale, lr_h, lr_w in sizes:
        torch.manual_seed(0)
        model = SRVCModel(SRConfig(scale=scale)).to(device).eval()
        patch = model.config.patch
        padded = -(-lr_h // patch) * patch * (-(-lr_w // patch) * patch)
        flops = 2 * model.macs_per_lr_pixel() * padded
        x = torch.rand(1, 3, lr_h, lr_w, device=device)
        shape = f"x{scale} LR {lr_w}x{lr_h} -> {lr_w * scale}x{lr_h * scale}"
        # A GPU frame takes about a millisecond: many repeats cost nothing and tame the launch-time noise.
        repeats = 30 if device.type == "cuda" else 3 if quick or lr_h * lr_w > 200_000 else 5
        backends = [b for b in ops.available_backends(device) if b != "torch"]
        for backend in (["torch"] if scale == 4 else []) + backends:
            model.backend = backend
            with torch.no_grad():
                t = measure(lambda: model(x), repeats=repeats, warmup=1, sync=sync)
            impl = "torch-eager (reference adaptive conv)" if backend == "torch" else f"edgert-{backend}"
            extra = {"fps": 1.0 / t.median, "peer": backend == "torch", "backend": backend, "scale": scale,
                     "gflop_per_frame": flops / 1e9}
            if gemm_gflops:
                extra["limit_fps"] = gemm_gflops * 1e9 / flops
            rows.append(Row("srvc_sr_frame", impl, device_name(device), "float32", shape, t, flops=flops,
                            extra=extra))
        # the decoder's whole per-frame step (uint8 LR in, uint8 HR out, on the device and back), native kernel
        model.backend = backends[0] if backends else "torch"
        lr = torch.randint(0, 256, (lr_h, lr_w, 3), dtype=torch.uint8).numpy()
        t = measure(lambda: super_resolve(model, lr, scale, device), repeats=repeats, warmup=1, sync=sync)
        extra = {"fps": 1.0 / t.median, "peer": False, "backend": model.backend, "scale": scale,
                 "gflop_per_frame": flops / 1e9}
        if gemm_gflops:
            extra["limit_fps"] = gemm_gflops * 1e9 / flops
        rows.append(Row("srvc_decoder_frame", f"decoder step, edgert-{model.backend}", device_name(device), "uint8",
                        shape, t, flops=flops, extra=extra))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="720p x4 only, fewer repeats")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder for the JSON rows and .md table")
    parser.add_argument("--no-json", action="store_true", help="print the table only")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"torch {torch.__version__} cannot use CUDA here (no device, or a CPU-only build): nothing to "
              "benchmark on cuda", file=sys.stderr)
        sys.exit(2)
    gemm_n = 4096 if device.type == "cuda" else 1024
    roofline = {"gemm_fp32_gflops": gemm_rate(device, gemm_n)}
    limit = roofline["gemm_fp32_gflops"]
    if device.type == "cuda":
        roofline["gemm_tf32_gflops"] = gemm_rate(device, gemm_n, tf32=True)
        if torch.backends.cudnn.allow_tf32:
            limit = roofline["gemm_tf32_gflops"]
    print(f"device: {device_name(device)}  fp32 GEMM {roofline['gemm_fp32_gflops']:.1f} GFLOP/s  "
          + (f"TF32 GEMM {roofline['gemm_tf32_gflops']:.1f} GFLOP/s  " if "gemm_tf32_gflops" in roofline else "")
          + f"torch threads {torch.get_num_threads()}")
    rows = run(device, args.quick, limit)
    table = markdown_table(rows, roofline)
    print(table)
    for r in rows:
        print(f"{r.shapes:32s} {r.impl:40s} {r.extra['fps']:.2f} fps  (flop limit {r.extra['limit_fps']:.2f} fps, "
              f"{r.extra['gflop_per_frame']:.1f} GFLOP per frame)")
    if not args.no_json:
        config = {"device": args.device, "threads": torch.get_num_threads(), "quick": args.quick}
        path = write_json("bench_srvc", rows, roofline, config, args.out,
                          markdown=table if args.out != RESULTS_DIR else None)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
