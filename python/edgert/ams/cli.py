"""``edgert ams ...`` (AMS server, edge, evaluation) and ``edgert demo``.

``serve`` and ``edge`` are the two processes :mod:`edgert.ams.evaluate` starts; they read one JSON spec
(written by the evaluation) so both sides build the same student.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from edgert.transport.tls import TLSConfig, add_tls_arguments
from edgert.updates.release_cli import add_release_arguments, signer_from_args, trust_dir_from_args, trust_from_args


def _load_spec(path: str) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SystemExit(f"edgert ams: cannot read spec {path!r}: {exc}") from exc


def _logger(who: str) -> Callable[[str], None]:
    """A line logger that prefixes ``[who HH:MM:SS]`` and flushes (the processes' logs interleave)."""

    def log(line: str) -> None:
        print(f"[{who} {time.strftime('%H:%M:%S')}] {line}", flush=True)

    return log


def _keys(spec: dict[str, Any]) -> dict[str, bytes]:
    return {d: Path(p).read_bytes() for d, p in spec["keys"].items()}


def _cmd_serve(args: argparse.Namespace) -> int:
    import torch

    from edgert.ams.config import AMSConfig
    from edgert.ams.evaluate import build_student
    from edgert.ams.server import AMSServer
    from edgert.vision.teachers import load_teacher

    spec = _load_spec(args.spec)
    torch.set_num_threads(int(spec.get("threads", 1)))
    teacher = load_teacher(spec["teacher"], expect_task="segmentation")
    student = build_student(teacher.num_classes, spec["student_width"], spec["seed"], spec.get("student_init"))
    config = AMSConfig.from_dict(spec["ams"])
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    log = _logger("server")
    server = AMSServer(student, teacher, _keys(spec), config, size=(spec["width"], spec["height"]),
                       host=args.host, port=args.port, state_dir=args.state_dir, log=log,
                       tls=TLSConfig.from_args(args, "server", args.tls_name),
                       signer=signer_from_args(args)).start()
    if args.port_file:
        tmp = Path(args.port_file + ".tmp")
        tmp.write_text(str(server.address[1]))
        tmp.replace(args.port_file)
    log(f"AMS server ({spec.get('scheme', 'ams')}) on {server.address[0]}:{server.address[1]}")
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
        if args.report:
            Path(args.report).write_text(json.dumps(server.report(), indent=2))
    return 0


def _cmd_edge(args: argparse.Namespace) -> int:
    import torch

    from edgert.ams.config import EdgeConfig
    from edgert.ams.edge import AMSEdge, EdgeLoop, ModelStreamingLoop
    from edgert.ams.evaluate import build_student
    from edgert.vision.video import iter_frames, probe

    spec = _load_spec(args.spec)
    torch.set_num_threads(int(spec.get("threads", 1)))
    host, _, port = args.server.rpartition(":")
    student = build_student(spec["num_classes"], spec["student_width"], spec["seed"], spec.get("student_init"))
    edge_cfg = EdgeConfig(**spec["edge"])
    key = Path(spec["keys"][args.device]).read_bytes()
    log = _logger(f"edge {args.device}")
    loop: EdgeLoop = ModelStreamingLoop()
    if spec["ams"].get("trainer") == "remote":
        from edgert.ams.flow import FlowConfig, RemoteFlowLoop
        from edgert.ams.protocol import opencv

        opencv().setNumThreads(int(spec.get("threads", 1)))  # the flow step on as many threads as the student gets
        loop = RemoteFlowLoop(FlowConfig(**spec.get("flow", {})))
    edge = AMSEdge((host, int(port)), args.device, key, student, edge_cfg, log=log, loop=loop,
                   tls=TLSConfig.from_args(args, "device", args.device), trust=trust_from_args(args),
                   trust_dir=trust_dir_from_args(args))
    options = spec.get("source_options") or {}
    info = probe(spec["clip"], options)
    preds: list[np.ndarray] = []
    frames = ((f.time_s, f.rgb) for f in iter_frames(spec["clip"], (spec["width"], spec["height"]),
                                                      duration_s=spec.get("max_seconds"), options=options))
    progress_file = Path(args.progress_file) if args.progress_file else None
    if progress_file is not None:
        progress_file.parent.mkdir(parents=True, exist_ok=True)

    def on_frame(index: int, t: float, labels: np.ndarray) -> None:
        preds.append(labels.astype(np.uint8))
        if progress_file is not None and index % 10 == 9:
            progress_file.write_text(str(index + 1))

    report = edge.run(frames, info.fps, on_frame=on_frame)
    if progress_file is not None:
        progress_file.write_text(str(report.frames))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / "predictions.npz", labels=np.stack(preds))
    (out / "edge_report.json").write_text(json.dumps(dataclasses.asdict(report), indent=2))
    log(f"{report.frames} frames, {report.uploads} uploads, {report.model_swaps} model swaps, "
        f"up {report.wire_bytes_sent} B, down {report.wire_bytes_received} B")
    return 0


def _source_options(pairs: Optional[list[str]]) -> dict[str, str]:
    options = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"edgert ams eval: --source-option expects KEY=VALUE, got {pair!r}")
        options[key] = value
    return options


def _eval_config(args: argparse.Namespace) -> Any:
    from edgert.ams.evaluate import EvalConfig
    from edgert.updates import SelectionConfig

    cfg = EvalConfig(clip=args.clip, width=args.width, height=args.height, max_seconds=args.max_seconds,
                     time_scale=args.time_scale, schemes=tuple(s.strip() for s in args.schemes.split(",") if s.strip()),
                     teacher=args.teacher, student_width=args.student_width, devices=args.devices, seed=args.seed,
                     threads=args.threads, pretrain_iterations=args.pretrain_iterations, cache_dir=args.cache_dir,
                     remote_rate_fps=args.remote_rate, source_options=_source_options(args.source_option),
                     jobs=args.jobs)
    cfg.ams.iterations = args.iterations
    cfg.ams.selection = SelectionConfig(cfg.ams.selection.strategy, args.fraction, args.seed)
    cfg.ams.t_horizon_s = args.t_horizon
    cfg.ams.atr.t_update_s = args.t_update
    cfg.ams.atr.t_update_max_s = max(cfg.ams.atr.t_update_max_s, args.t_update)
    cfg.ams.value_coding = args.value_coding
    cfg.ams.size_codings = tuple(c.strip() for c in args.size_codings.split(",") if c.strip())
    cfg.edge.uplink_kbps = args.uplink_kbps
    cfg.edge.preset = args.preset
    if args.live:
        cfg.edge.lockstep, cfg.edge.pace = False, True
    return cfg


def _cmd_eval(args: argparse.Namespace) -> int:
    from edgert.ams.evaluate import format_table, run_eval
    from edgert.harness import RunFolderError

    cfg = _eval_config(args)
    try:
        cfg.validate()
    except ValueError as exc:
        print(f"edgert ams eval: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out or f"runs/ams-{time.strftime('%Y%m%d-%H%M%S')}")
    t0 = time.time()
    try:
        results = run_eval(cfg, out, plots=not args.no_plots, merge=args.merge)
    except RunFolderError as exc:  # the folder holds another experiment (or nothing to merge into)
        print(f"edgert ams eval: {exc}", file=sys.stderr)
        return 2
    print()
    print(format_table(results))
    print(f"\n{time.time() - t0:.0f} s; results in {out}")
    return 0


def _add_eval_args(p: argparse.ArgumentParser, schemes: str, clip: str = "bikes", width: int = 320, height: int = 144,
                   time_scale: Optional[float] = None) -> None:
    from edgert.ams.evaluate import SCHEMES

    p.add_argument("--clip", default=clip,
                   help="bundled clip name, video file, or live source (rtsp:// or other FFmpeg URL, "
                        f"camera device), recorded for --max-seconds (default: {clip})")
    p.add_argument("--schemes", default=schemes,
                   help=f"comma-separated: {', '.join(SCHEMES)}, or ams:<gradient|random|first|last>@<fraction>")
    p.add_argument("--width", type=int, default=width, help=f"student input width (default: {width})")
    p.add_argument("--height", type=int, default=height, help=f"student input height (default: {height})")
    p.add_argument("--max-seconds", type=float, default=None,
                   help="use only the first seconds of the clip (a live source is recorded for this long)")
    p.add_argument("--source-option", action="append", metavar="KEY=VALUE",
                   help="FFmpeg input option for a live --clip (rtsp_transport=tcp, rtsp_flags=listen, ...); "
                        "repeatable")
    p.add_argument("--time-scale", type=float, default=time_scale,
                   help="factor on all time constants (default: "
                        + (f"{time_scale:g})" if time_scale is not None else "clip seconds / 100, at most 1)"))
    p.add_argument("--teacher", default="mediapipe-selfie")
    p.add_argument("--student-width", type=float, default=0.5)
    p.add_argument("--iterations", type=int, default=20, help="K, Adam iterations per phase (paper: 20)")
    p.add_argument("--fraction", type=float, default=0.05, help="gamma, fraction of coordinates per phase (5%%)")
    p.add_argument("--t-update", type=float, default=10.0, help="T_update in paper seconds before scaling (10)")
    p.add_argument("--t-horizon", type=float, default=240.0, help="T_horizon in paper seconds before scaling (240)")
    p.add_argument("--value-coding", default="fp16",
                   help="update values on the wire: fp16 (default), fp32, int8, or the lossy block codings "
                        "int8b / int4b (one fp16 scale per 64 values)")
    p.add_argument("--size-codings", default="",
                   help="comma-separated value codings each update is also encoded in (not sent) to record its "
                        "size (server report: coding_sizes)")
    p.add_argument("--uplink-kbps", type=float, default=200.0, help="H.264 target in paper-time kbit/s (200)")
    p.add_argument("--preset", default="slow", help="libx264 preset of the uploads (slow)")
    p.add_argument("--remote-rate", type=float, default=1.0,
                   help="remote-flow: frames per second (paper clock) sent for labelling (1)")
    p.add_argument("--devices", type=int, default=1, help="edge processes sharing the server")
    p.add_argument("--live", action="store_true",
                   help="edges play the clip in real time and never wait for the server (updates arrive when "
                        "the shared CPU has trained them); default: lockstep with the server's phases")
    p.add_argument("--pretrain-iterations", type=int, default=300,
                   help="generic pretraining of the student on other footage (0: ImageNet encoder, random head)")
    p.add_argument("--cache-dir", default=None,
                   help="cache of the pretrained generic student "
                        "(default: $EDGERT_CACHE_DIR/ams or ~/.cache/edgert/ams)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--jobs", type=int, default=0,
                   help="networked schemes run this many at a time (0: one per core); each runs in lockstep with "
                        "its server, so the results do not depend on it")
    p.add_argument("--out", default=None, help="run folder (default: runs/ams-<time>)")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--merge", action="store_true",
                   help="--out holds an earlier run with the same settings: run only --schemes and add them to it")


def register(sub: "argparse._SubParsersAction") -> None:
    """Adds ``edgert ams ...`` to the top-level parser."""
    p = sub.add_parser("ams", help="AMS adaptive model streaming: server, edge, evaluation")
    ssub = p.add_subparsers(dest="ams_command", required=True)
    s = ssub.add_parser("serve", help="run an AMS server from a spec (as started by `ams eval`)")
    s.add_argument("--spec", required=True)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=0)
    s.add_argument("--port-file", default=None, help="write the listening port here once ready")
    s.add_argument("--state-dir", default=None, help="persist each device's model stream here")
    s.add_argument("--report", default=None, help="write per-device counters (JSON) here on exit")
    add_tls_arguments(s, server=True)
    add_release_arguments(s, server=True)
    s.set_defaults(func=_cmd_serve)
    e = ssub.add_parser("edge", help="run an AMS edge device from a spec over its clip")
    e.add_argument("--spec", required=True)
    e.add_argument("--server", required=True, help="HOST:PORT")
    e.add_argument("--device", required=True)
    e.add_argument("--out", required=True)
    e.add_argument("--progress-file", default=None, help="write the number of frames processed here (every 10)")
    add_tls_arguments(e)
    add_release_arguments(e)
    e.set_defaults(func=_cmd_edge)
    ev = ssub.add_parser("eval", help="AMS vs baselines on a clip: table, plots, config.json, results.json")
    _add_eval_args(ev, "no-custom,one-time,jit,full,ams,remote-flow")
    ev.set_defaults(func=_cmd_eval)


#: ``edgert demo``: the 60 s iscc-demo clip (a real band performance, many shots, people most of the time) at
#: 128x96 with the paper's clock compressed 5x (29 AMS updates): AMS clearly above the constant predictor and
#: no customisation, about 5-6 minutes on 2 cores (docs/results/ams.md, "The demo")
DEMO_DEFAULTS = {"clip": "iscc-demo", "width": 128, "height": 96, "time_scale": 0.2}


def register_demo(sub: "argparse._SubParsersAction") -> None:
    """Adds ``edgert demo``: every scheme on iscc-demo with server and edge as separate processes on localhost."""
    d = sub.add_parser("demo", help="AMS demo: server + edge processes on localhost over the iscc-demo clip, "
                                    "comparison table (about 5 min on 2 cores)")
    _add_eval_args(d, "no-custom,one-time,jit,full,ams,remote-flow", **DEMO_DEFAULTS)
    d.set_defaults(func=_cmd_eval)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgert.ams.cli")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(["ams", *(argv if argv is not None else sys.argv[1:])])
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
