"""``edgert srvc ...``: encode a video to an SRVC container, decode one, run RD evaluations and ablations."""
from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any, Optional


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from exc


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from exc
    if w <= 0 or h <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive size, got {text!r}")
    return w, h


def _tau(text: str) -> float:
    if text.lower() in ("inf", "infinity", "none"):
        return math.inf
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"tau must be > 0 seconds or inf, got {text!r}")
    return value


def _add_encoder_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("SRVC encoder (defaults: the paper's)")
    g.add_argument("--scale", type=int, default=4, choices=(2, 3, 4), help="downsampling factor k (default 4)")
    g.add_argument("--features", type=int, default=32, help="F, adaptive-conv output channels (default 32)")
    g.add_argument("--residual", action="store_true", help="add bicubic(x) to the SR output (not in the paper)")
    g.add_argument("--input-offset", type=float, default=0.5,
                   help="subtracted from the pixels before the adaptive conv (default 0.5; 0 = the paper's literal "
                        "model, whose adaptive-conv channels die in training)")
    g.add_argument("--tau", type=_tau, default=5.0, help="segment length in seconds, or inf (default 5)")
    g.add_argument("--eta", type=float, default=0.01, help="fraction of parameters per update (default 0.01)")
    g.add_argument("--iterations", type=int, default=1000, help="training iterations per pass (default 1000)")
    g.add_argument("--first-iterations", type=int, default=None,
                   help="iterations for segment 0 (default: --iterations)")
    g.add_argument("--selection-iterations", type=int, default=None,
                   help="iterations of the selection pass (default: --iterations)")
    g.add_argument("--batch", type=int, default=4, help="crops per step (default 4)")
    g.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (default 1e-4)")
    g.add_argument("--value-coding", default="fp16", choices=("fp16", "fp32", "int8", "int8b", "int4b"),
                   help="sparse delta values (int8b/int4b: lossy, one fp16 scale per 64 values)")
    g.add_argument("--snapshot-coding", default="fp16", choices=("fp16", "fp32"), help="initial full model values")
    g.add_argument("--init", default="generic", choices=("generic", "scratch"), help="segment 0 starts from")
    g.add_argument("--send-generic", action="store_true",
                   help="also send the generic model's snapshot (for decoders without it; its bits are counted)")
    g.add_argument("--rd-skip", action="store_true",
                   help="skip a segment's update when its PSNR gain is worth fewer bits than it costs")
    g.add_argument("--rd-frames", type=int, default=4, help="frames per segment measured by --rd-skip (default 4)")
    g.add_argument("--train-crop", type=float, default=0.5,
                   help="training crop side as a fraction of the LR frame (default 0.5, the paper's)")
    g.add_argument("--preset", default="slow", help="libx265 preset of the content stream (default slow)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--generic-iterations", type=int, default=None, help="iterations of the generic model (cached)")
    g.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    g.add_argument("--generics-dir", default=None,
                   help="the decoders' generic models (default: <edgert cache>/srvc/generic-models)")


def _encoder_config(args: argparse.Namespace, crf: float = 30.0) -> Any:
    from edgert.srvc.encoder import EncoderConfig
    from edgert.srvc.model import SRConfig

    return EncoderConfig(model=SRConfig(scale=args.scale, features=args.features, residual=args.residual,
                                        input_offset=args.input_offset),
                         segment_s=args.tau, eta=args.eta, crf=crf, preset=args.preset, iterations=args.iterations,
                         selection_iterations=args.selection_iterations, first_iterations=args.first_iterations,
                         batch=args.batch, learning_rate=args.lr, value_coding=args.value_coding,
                         snapshot_coding=args.snapshot_coding, init=args.init, seed=args.seed,
                         send_generic=args.send_generic, rd_skip=args.rd_skip, rd_frames=args.rd_frames,
                         crop=args.train_crop)


def _generic_config(args: argparse.Namespace) -> Any:
    from edgert.srvc.generic import GenericConfig

    return GenericConfig() if args.generic_iterations is None else GenericConfig(iterations=args.generic_iterations)


def _cmd_encode(args: argparse.Namespace) -> int:
    import torch

    from edgert.srvc.encoder import encode
    from edgert.srvc.evaluate import EvalConfig, load_clip
    from edgert.srvc.generic import GenericLibrary, generic_model

    torch.set_num_threads(args.threads)
    cfg = _encoder_config(args, args.crf)
    try:
        cfg.validate()
        frames, fps = load_clip(EvalConfig(clip=args.input, crop=args.crop, start_s=args.start,
                                           duration_s=args.duration))
    except (ValueError, FileNotFoundError) as exc:
        print(f"edgert srvc encode: {exc}", file=sys.stderr)
        return 2
    initial = generic_model(cfg.model, _generic_config(args)) if cfg.init == "generic" else None
    res = encode(frames, fps, cfg, initial_model=initial, generics=GenericLibrary(args.generics_dir))
    with open(args.output, "wb") as f:
        f.write(res.container)
    summary = res.summary()
    print(json.dumps({k: v for k, v in summary.items() if k != "segments"}, indent=2))
    print(f"wrote {args.output}: {len(res.container)} bytes")
    return 0


def _cmd_decode(args: argparse.Namespace) -> int:
    import torch

    from edgert.srvc.container import ContainerError
    from edgert.srvc.decoder import ContentError, decode_file
    from edgert.srvc.generic import GenericLibrary

    torch.set_num_threads(args.threads)
    try:
        report = decode_file(args.input, args.output, backend=args.backend, device=args.device,
                             log=lambda m: print(f"edgert srvc decode: {m}", file=sys.stderr),
                             generics=GenericLibrary(args.generics_dir), allow_bicubic=args.allow_bicubic)
    except (ContainerError, ContentError, OSError) as exc:
        print(f"edgert srvc decode: {args.input}: {exc}", file=sys.stderr)
        return 1
    print(f"decoded {report.frames} frames {report.width}x{report.height} to {args.output}: "
          f"{report.sr_fps:.2f} fps SR, {report.fps:.2f} fps overall; {len(report.applied)} model packets applied, "
          f"{len(report.rejected)} rejected")
    return 0


def _eval_config(args: argparse.Namespace, methods: Optional[tuple[str, ...]] = None) -> Any:
    from edgert.srvc.evaluate import METHODS, EvalConfig

    return EvalConfig(clip=args.clip, crop=args.crop, start_s=args.start, duration_s=args.duration,
                      full_crfs=tuple(args.full_crfs), lr_crfs=tuple(args.lr_crfs),
                      methods=methods or tuple(args.methods or METHODS), encoder=_encoder_config(args),
                      generic=_generic_config(args), oneshot_iterations=args.oneshot_iterations, threads=args.threads,
                      ssim_every=args.ssim_every, psnr_every=args.psnr_every, generics_dir=args.generics_dir)


def _cmd_eval(args: argparse.Namespace) -> int:
    from edgert.srvc.evaluate import run_eval

    cfg = _eval_config(args)
    try:
        cfg.validate()
    except ValueError as exc:
        print(f"edgert srvc eval: {exc}", file=sys.stderr)
        return 2
    res = run_eval(cfg, args.out)
    for name, row in res["bd"].items():
        rate = "n/a" if row["bd_rate_percent"] is None else f"{row['bd_rate_percent']:+.1f}%"
        dpsnr = "n/a" if row["bd_psnr_db"] is None else f"{row['bd_psnr_db']:+.2f} dB"
        print(f"{name:24s} BD-rate {rate:>9s}  BD-PSNR {dpsnr}")
    return 0


def _cmd_ablate(args: argparse.Namespace) -> int:
    from edgert.srvc.evaluate import run_ablation

    cfg = _eval_config(args, ("srvc",))
    try:
        cfg.validate()
        res = run_ablation(cfg, args.param, args.values, args.out)
    except ValueError as exc:
        print(f"edgert srvc ablate: {exc}", file=sys.stderr)
        return 2
    first = next(iter(res["runs"]))
    for value, pts in res["runs"].items():
        line = f"{args.param}={value}: " + ", ".join(f"{p['bpp']:.4f} bpp {p['psnr']:.2f} dB" for p in pts)
        bd = res["bd_rate_vs_first_percent_without_initial_model"].get(value)
        dq = res["bd_psnr_vs_first_db_without_initial_model"].get(value)
        if value != first:
            line += (f"; vs {args.param}={first} without the initial model: BD-rate "
                     f"{'no overlap' if bd is None else f'{bd:+.1f}%'}, "
                     f"BD-PSNR {'no overlap' if dq is None else f'{dq:+.2f} dB'}")
        print(line)
    return 0


def _cmd_model(args: argparse.Namespace) -> int:
    from edgert.srvc.model import SRConfig, SRVCModel, model_summary

    print(json.dumps(model_summary(SRVCModel(SRConfig(scale=args.scale, features=args.features))), indent=2))
    return 0


def register(sub: "argparse._SubParsersAction") -> None:
    """Adds ``edgert srvc {encode,decode,eval,ablate,model}``."""
    p = sub.add_parser("srvc", help="SRVC: LR H.265 content stream + streamed content-adaptive SR model")
    s = p.add_subparsers(dest="srvc_command", required=True)

    enc = s.add_parser("encode", help="encode a video (or a bundled clip name) to an SRVC container")
    enc.add_argument("input", help="video file, bundled clip (bigbuckbunny, bikes, carphone) or mate:WIDTHxHEIGHT")
    enc.add_argument("-o", "--output", required=True, help="container to write (.srvc)")
    enc.add_argument("--crf", type=float, default=30.0, help="libx265 CRF of the content stream (default 30)")
    enc.add_argument("--crop", type=_size, default=None, help="centre crop WIDTHxHEIGHT")
    enc.add_argument("--start", type=float, default=0.0, help="start time (s)")
    enc.add_argument("--duration", type=float, default=None, help="seconds to encode (default: all)")
    _add_encoder_args(enc)
    enc.set_defaults(func=_cmd_encode)

    dec = s.add_parser("decode", help="decode an SRVC container to a lossless FFV1 .mkv")
    dec.add_argument("input")
    dec.add_argument("-o", "--output", required=True, help="video to write (.mkv, FFV1 RGB, lossless)")
    dec.add_argument("--backend", default="auto", choices=("auto", "cpu", "cuda", "torch"),
                     help="adaptive-conv backend (default auto)")
    dec.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"), help="where the SR model runs")
    dec.add_argument("--generics-dir", default=None,
                     help="the decoder's generic models (default: <edgert cache>/srvc/generic-models)")
    dec.add_argument("--threads", type=int, default=1)
    dec.add_argument("--allow-bicubic", action="store_true",
                     help="decode bicubically (with a warning) when the generic model the container names is missing")
    dec.set_defaults(func=_cmd_decode)

    for name, helptext in (("eval", "RD curves vs x264/x265/bicubic/generic SR/one-shot"),
                           ("ablate", "SRVC ablation over F, eta or tau")):
        e = s.add_parser(name, help=helptext)
        e.add_argument("--clip", default="bigbuckbunny",
                       help="bundled clip name, video file, or mate:WIDTHxHEIGHT (pan/zoom over mate-backgrounds)")
        e.add_argument("--out", required=True, help="run folder")
        e.add_argument("--crop", type=_size, default=None, help="centre crop WIDTHxHEIGHT")
        e.add_argument("--start", type=float, default=0.0)
        e.add_argument("--duration", type=float, default=None)
        e.add_argument("--full-crfs", type=_floats, default=[30.0, 34.0, 38.0, 42.0], help="x264/x265 CRF ladder")
        e.add_argument("--lr-crfs", type=_floats, default=[22.0, 26.0, 30.0, 34.0], help="low-res x265 CRF ladder")
        e.add_argument("--oneshot-iterations", type=int, default=None)
        e.add_argument("--ssim-every", type=int, default=1, help="SSIM on every n-th measured frame")
        e.add_argument("--psnr-every", type=int, default=1,
                       help="measure quality on every n-th frame (bits: always all frames; default 1)")
        if name == "eval":
            e.add_argument("--methods", type=lambda t: [v for v in t.split(",") if v], default=None,
                           help="subset of x264,x265,bicubic,generic,oneshot,srvc")
            e.set_defaults(func=_cmd_eval)
        else:
            e.add_argument("--param", required=True, choices=("features", "eta", "tau"))
            e.add_argument("--values", required=True, type=lambda t: [_tau(v) for v in t.split(",") if v],
                           help="e.g. 8,16,32,64 | 0.005,0.01,0.05,0.1 | 5,10,20,inf")
            e.set_defaults(func=_cmd_ablate)
        _add_encoder_args(e)

    m = s.add_parser("model", help="parameter count and cost of the SR model")
    m.add_argument("--scale", type=int, default=4, choices=(2, 3, 4))
    m.add_argument("--features", type=int, default=32)
    m.set_defaults(func=_cmd_model)
