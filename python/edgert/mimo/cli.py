"""``edgert mimo ...``: SER sweeps, per-layer noise analysis, complexity tables, online-training timing, 3GPP
channel generation."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Optional

import numpy as np

from edgert.mimo.detectors import DETECTORS


def _floats(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from exc
    return values


def _names(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def _snr_list(text: str) -> list[float]:
    """``8,10,12`` or ``lo:hi:step`` (inclusive)."""
    if ":" in text:
        parts = _floats(text.replace(":", ","))
        if len(parts) != 3 or parts[2] <= 0 or parts[1] < parts[0]:
            raise argparse.ArgumentTypeError(f"expected lo:hi:step with step > 0 and hi >= lo, got {text!r}")
        lo, hi, step = parts
        n = int(round((hi - lo) / step)) + 1
        if n > 1000:
            raise argparse.ArgumentTypeError(f"{text!r} gives {n} SNR points (at most 1000)")
        return [round(lo + i * step, 6) for i in range(n)]
    return _floats(text)


def _cmd_sweep(args: argparse.Namespace) -> int:
    from edgert.mimo.evaluate import SweepConfig, run_sweep

    cfg = SweepConfig(detectors=args.detectors, channels=args.channels, nr=args.nr, nt=args.nt,
                      modulation=args.modulation, snr_db=args.snr, matrices=args.matrices,
                      vectors_per_matrix=args.vectors, seed=args.seed, layers=args.layers, kbest_k=args.kbest_k,
                      ml_node_budget=args.ml_node_budget, train_snr_db=args.train_snr,
                      offline_iterations=args.offline_iterations, online_psi=args.psi, online_phi=args.phi,
                      online_batch=args.batch, online_warm_start=args.warm_start, online_order=args.order,
                      online_phi_time=args.phi_time, online_parallel=args.parallel,
                      online_lr_time=args.lr_time, online_linear_stage=args.linear_stage,
                      online_lr_scalars=args.lr_scalars, threads=args.threads,
                      count=args.count, csi_error=args.csi_error,
                      oampnet_online_iterations=args.oampnet_iterations)
    try:
        cfg.validate()
    except ValueError as exc:
        print(f"edgert mimo sweep: {exc}", file=sys.stderr)
        return 2
    try:
        results = run_sweep(cfg, args.out, plots=not args.no_plots, redo=args.redo)
    except ValueError as exc:
        print(f"edgert mimo sweep: {exc}", file=sys.stderr)
        return 2
    for name, s in results["summary"].items():
        snr = "not reached" if s["snr_at_target"] is None else f"{s['snr_at_target']:.2f} dB"
        gap = "" if s["gap_db"] is None else f", gap {s['gap_db']:+.2f} dB"
        print(f"{name:10s} SNR at SER {cfg.target_ser:g}: {snr}{gap}, "
              f"{s['complexity']['amortized_per_vector']:.3g} mults/vector")
    print(f"results in {args.out}")
    return 0


def _cmd_analyze(args: argparse.Namespace) -> int:
    from edgert.mimo.analysis import AnalysisConfig, run_analysis

    cfg = AnalysisConfig(channels=args.channels, nr=args.nr, nt=args.nt, modulation=args.modulation,
                         snr_db=args.snr, matrices=args.matrices, vectors_per_matrix=args.vectors,
                         layers=args.layers, offline_iterations=args.offline_iterations,
                         train_snr_db=args.train_snr, model=args.model, seed=args.seed, threads=args.threads)
    try:
        cfg.validate()
    except ValueError as exc:
        print(f"edgert mimo analyze: {exc}", file=sys.stderr)
        return 2
    run_analysis(cfg, args.out, plots=not args.no_plots)
    print(f"results in {args.out}")
    return 0


def _cmd_complexity(args: argparse.Namespace) -> int:
    from edgert.mimo.complexity import multiplications

    rows = {}
    for name in args.detectors:
        rows[name] = multiplications(name, args.nr, args.nt, args.modulation, args.vectors,
                                     training_iterations=args.training_iterations).as_dict()
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(f"| detector | per vector | per channel | amortized over {args.vectors} vectors |")
        print("| --- | ---: | ---: | ---: |")
        for name, r in rows.items():
            print(f"| {name} | {r['per_vector']:.3g} | {r['per_channel']:.3g} | {r['amortized_per_vector']:.3g} |")
    return 0


def _cmd_time_online(args: argparse.Namespace) -> int:
    import torch

    from edgert.mimo.channels import iid_rayleigh
    from edgert.mimo.online import OnlineConfig, train_online

    H = iid_rayleigh(1, args.nr, args.nt, torch.Generator().manual_seed(0))
    cfg = OnlineConfig(modulation=args.modulation, psi=args.iterations, batch=args.batch, threads=args.threads)
    res = train_online(H[:, None], cfg)
    print(f"{args.iterations} iterations (batch {args.batch}, {args.nr}x{args.nt} QAM{args.modulation}, "
          f"{args.threads} thread(s)): {res.seconds:.2f} s = "
          f"{1e3 * res.seconds / max(args.iterations, 1):.2f} ms/iteration, "
          f"final loss {float(res.final_loss[0, 0]):.4f}")
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    from edgert.mimo.generate import UMaConfig, generate_uma, relative_change

    cfg = UMaConfig(drops=args.drops, users=args.users, seed=args.seed, time_steps=args.time_steps,
                    time_step_s=args.time_step_ms * 1e-3, subcarrier_stride=args.subcarrier_stride)
    try:
        cfg.validate()
    except ValueError as exc:
        print(f"edgert mimo generate: {exc}", file=sys.stderr)
        return 2
    H = generate_uma(cfg, args.out)
    print(f"wrote {args.out}: H {list(H.shape)}")
    if cfg.time_steps > 1:
        r = relative_change(H)
        print(f"||H[k+1] - H[k]|| / ||H[k]|| over {cfg.time_step_s * 1e3:g} ms: mean {r.mean():.4f}, "
              f"90th percentile {float(np.percentile(r, 90)):.4f} (max Doppler {cfg.max_doppler_hz():.1f} Hz)")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds the ``mimo`` command group to the ``edgert`` parser."""
    p = subparsers.add_parser("mimo", help="massive-MIMO detection: SER sweeps, complexity, MMNet online training")
    sub = p.add_subparsers(dest="mimo_command", required=True)

    s = sub.add_parser("sweep", help="SER vs SNR per detector (resumable run folder)")
    s.add_argument("--detectors", type=_names, default=["mmse", "ep"], help=f"comma list of {', '.join(DETECTORS)}")
    s.add_argument("--channels", default="iid", help="'iid' or a channel .npz (H complex64 [..., Nr, Nt])")
    s.add_argument("--nr", type=int, default=64)
    s.add_argument("--nt", type=int, default=16)
    s.add_argument("--modulation", type=int, default=16, help="QAM order: 4, 16 or 64")
    s.add_argument("--snr", type=_snr_list, default=[8.0, 10.0, 12.0, 14.0], help="'8,10,12' or 'lo:hi:step' (dB)")
    s.add_argument("--train-snr", type=_floats, default=None, help="training SNR range 'lo,hi' (default: sweep range)")
    s.add_argument("--matrices", type=int, default=256, help="i.i.d. matrices (files use all)")
    s.add_argument("--vectors", type=int, default=32, help="vectors per matrix and SNR point")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--layers", type=int, default=10)
    s.add_argument("--kbest-k", type=int, default=32)
    s.add_argument("--ml-node-budget", type=int, default=200_000)
    s.add_argument("--offline-iterations", type=int, default=2000, help="MMNet-iid / OAMPNet training iterations")
    s.add_argument("--psi", type=int, default=1000, help="online MMNet: iterations on the first subcarrier")
    s.add_argument("--phi", type=int, default=5, help="online MMNet: iterations per further subcarrier")
    s.add_argument("--batch", type=int, default=500, help="online MMNet / oampnet_online training batch")
    s.add_argument("--warm-start", choices=["copy", "channel", "restart"], default="copy",
                   help="online MMNet: copy the neighbour's A_t (paper), move it to the new channel, or "
                        "restart A_t from the matched filter (theta2 and Adam moments carried over)")
    s.add_argument("--order", choices=["paper", "time"], default="paper",
                   help="online MMNet: Algorithm 1's order (frequency chain, first subcarrier chained over time) "
                        "or 'time' (every subcarrier its own chain over time: --psi at the first time step, "
                        "--phi-time per later one)")
    s.add_argument("--phi-time", type=int, default=3, help="online MMNet, --order time: iterations per later time step")
    s.add_argument("--lr-time", type=float, default=None,
                   help="online MMNet, --order time: Adam step size from the second time step on (default: 1e-3)")
    s.add_argument("--linear-stage", choices=["free", "regularised", "corrected"], default="free",
                   help="online MMNet: learned A_t (paper), A_t = alpha_t (H^H H + lam_t I)^-1 H^H with learned "
                        "per-layer scalars, or that plus a learned correction (needs --warm-start copy)")
    s.add_argument("--lr-scalars", type=float, default=0.02,
                   help="online MMNet, --linear-stage regularised/corrected: Adam step of alpha, log lam, theta2")
    s.add_argument("--parallel", type=int, default=0,
                   help="online MMNet, --order time: chains per batched graph (0 = all; bounds memory)")
    s.add_argument("--oampnet-iterations", type=int, default=100,
                   help="oampnet_online: Adam iterations per channel (from OAMP's gamma = theta = 1; batch --batch)")
    s.add_argument("--csi-error", type=float, default=0.0,
                   help="channel-estimation error variance per entry (E|h|^2 = 1): detectors and online training "
                        "see H + E, E ~ CN(0, value); the data goes over H")
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--no-plots", action="store_true")
    s.add_argument("--count", choices=["symbol", "real"], default="symbol",
                   help="SER per QAM symbol (default) or per real component (the MMNet authors' counting)")
    s.add_argument("--redo", type=_names, default=[],
                   help="comma list of detectors to measure again in an existing run folder (their code changed)")
    s.add_argument("--out", required=True, help="run folder (config.json, results.json, plots)")
    s.set_defaults(func=_cmd_sweep)

    a = sub.add_parser("analyze", help="MMNet per layer: noise power and Gaussianity of the denoiser input")
    a.add_argument("--channels", default="iid", help="'iid' or a channel .npz (H complex64 [..., Nr, Nt])")
    a.add_argument("--nr", type=int, default=64)
    a.add_argument("--nt", type=int, default=16)
    a.add_argument("--modulation", type=int, default=16, help="QAM order: 4, 16 or 64")
    a.add_argument("--snr", type=_snr_list, default=[12.0], help="'12' or '8,12' or 'lo:hi:step' (dB)")
    a.add_argument("--train-snr", type=_floats, default=None,
                   help="MMNet-iid training SNR range 'lo,hi' (default: the --snr range)")
    a.add_argument("--matrices", type=int, default=64, help="i.i.d. matrices (files use all)")
    a.add_argument("--vectors", type=int, default=32, help="vectors per matrix and SNR point")
    a.add_argument("--layers", type=int, default=10)
    a.add_argument("--offline-iterations", type=int, default=300, help="MMNet-iid training iterations")
    a.add_argument("--model", default=None,
                   help="analyze an online MMNet (a sweep's models/mmnet_online.pt, trained on --channels) "
                        "instead of training MMNet-iid")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--threads", type=int, default=1)
    a.add_argument("--no-plots", action="store_true")
    a.add_argument("--out", required=True, help="results folder (config.json, results.json, noise.png)")
    a.set_defaults(func=_cmd_analyze)

    c = sub.add_parser("complexity", help="analytic multiplications per detected vector")
    c.add_argument("--detectors", type=_names,
                   default=[d for d in DETECTORS if d not in ("ep64", "ep64_wide", "oampnet")])
    c.add_argument("--nr", type=int, default=64)
    c.add_argument("--nt", type=int, default=16)
    c.add_argument("--modulation", type=int, default=16)
    c.add_argument("--vectors", type=int, default=32, help="vectors sharing one channel")
    c.add_argument("--training-iterations", type=float, default=10.0,
                   help="online MMNet / oampnet_online iterations per channel")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=_cmd_complexity)

    t = sub.add_parser("time-online", help="wall time of online MMNet training on one i.i.d. channel")
    t.add_argument("--iterations", type=int, default=1000)
    t.add_argument("--batch", type=int, default=500)
    t.add_argument("--nr", type=int, default=64)
    t.add_argument("--nt", type=int, default=16)
    t.add_argument("--modulation", type=int, default=16)
    t.add_argument("--threads", type=int, default=1)
    t.set_defaults(func=_cmd_time_online)

    g = sub.add_parser("generate", help="3GPP UMa NLOS channels with sionna-no-rt (optional extra [mimo])")
    g.add_argument("--drops", type=int, default=1)
    g.add_argument("--users", type=int, default=32)
    g.add_argument("--seed", type=int, default=20240601)
    g.add_argument("--time-steps", type=int, default=1,
                   help="samples per drop along time (> 1 writes axes (drop, time, subcarrier))")
    g.add_argument("--time-step-ms", type=float, default=1.0, help="spacing of the time samples (ms)")
    g.add_argument("--subcarrier-stride", type=int, default=1,
                   help="keep every n-th of the 256 kept subcarriers (16: 16 subcarriers 1.25 MHz apart)")
    g.add_argument("--out", required=True, help="output .npz")
    g.set_defaults(func=_cmd_generate)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="edgert")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)
