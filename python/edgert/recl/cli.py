"""``edgert recl eval``: RECL against its baselines on the camera workload (:mod:`edgert.recl.evaluate`);
``edgert recl study``: the full evaluation, many points (:mod:`edgert.recl.study`)."""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path
from typing import Any, Optional


def _eval_config(args: argparse.Namespace) -> Any:
    from edgert.recl.evaluate import DEFAULT_SCHEMES, QUICK, STANDARD_WORKLOAD, EvalConfig

    preset: dict[str, Any] = copy.deepcopy(QUICK) if args.quick else {}
    schemes = tuple(s.strip() for s in args.schemes.split(",") if s.strip()) if args.schemes else DEFAULT_SCHEMES
    cameras = args.cameras if args.cameras is not None else preset.get("cameras", 4)
    windows = args.windows if args.windows is not None else preset.get("windows")
    workload = preset.get("workload", copy.deepcopy(STANDARD_WORKLOAD))
    return EvalConfig(task=args.task, cameras=cameras, windows=windows, workload=workload,
                      schemes=schemes, budget_s=args.budget, recl=preset.get("recl", {}), seed=args.seed,
                      threads=args.threads, cut_frames=args.cut_frames)


def _cmd_eval(args: argparse.Namespace) -> int:
    from edgert.harness import RunFolderError
    from edgert.recl.evaluate import format_table, run_eval

    cfg = _eval_config(args)
    try:
        cfg.validate()
    except ValueError as exc:
        print(f"edgert recl eval: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out or f"runs/recl-{time.strftime('%Y%m%d-%H%M%S')}")
    t0 = time.time()
    try:
        results = run_eval(cfg, out, plots=not args.no_plots)
    except RunFolderError as exc:  # the folder holds another experiment
        print(f"edgert recl eval: {exc}", file=sys.stderr)
        return 2
    print()
    print(format_table(results))
    _write_responsiveness(cfg, results, out, plots=not args.no_plots)
    print(f"\n{time.time() - t0:.0f} s; results in {out}")
    return 0


def _write_responsiveness(cfg: Any, results: Any, out: Path, plots: bool) -> None:
    """``responsiveness.md`` (and ``responsiveness.png``) in an eval's run folder when RECL and a retraining
    baseline ran: time to accuracy after recurring scenes on the paper clock and in whole windows."""
    from edgert.recl.study import (
        RETRAINING_BASELINES,
        format_responsiveness,
        plot_responsiveness,
        point_responsiveness,
    )

    if "recl" not in results["schemes"] or not any(s in results["schemes"] for s in RETRAINING_BASELINES):
        return
    a = point_responsiveness(results, cfg.workload_config().window_s, cfg.recl_config("recl").mu)
    text = "\n".join([f"# RECL {cfg.task}: responsiveness ({cfg.cameras} cameras)", *format_responsiveness(a)])
    (out / "responsiveness.md").write_text(text + "\n")
    if plots and a["responsiveness_clock"]:
        plot_responsiveness(a, out / "responsiveness.png", cfg.task)


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(",") if v.strip())


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip())


def _cmd_study(args: argparse.Namespace) -> int:
    from edgert.recl.evaluate import QUICK
    from edgert.recl.study import StudyConfig, format_report, run_study

    settings: dict[str, Any] = {}
    if args.quick:
        settings.update(workload=copy.deepcopy(QUICK["workload"]), recl=copy.deepcopy(QUICK["recl"]),
                        windows=QUICK["windows"], cameras=(2,), base_cameras=2, budgets=(30.0, 60.0),
                        ablations={"K": [("K=1", {"gating": {"top_k": 1}})]})
    for name in ("cameras", "budgets"):
        if getattr(args, name) is not None:
            settings[name] = (_ints if name == "cameras" else _floats)(getattr(args, name))
    if args.base_cameras is not None:
        settings["base_cameras"] = args.base_cameras
    if args.base_budget is not None:
        settings["base_budget"] = args.base_budget
    if args.no_ablations:
        settings["ablations"] = {}
    cfg = StudyConfig(task=args.task, seed=args.seed, threads=args.threads, **settings)
    try:
        cfg.validate()
    except ValueError as exc:
        print(f"edgert recl study: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out or f"runs/recl-study-{time.strftime('%Y%m%d-%H%M%S')}")
    t0 = time.time()
    analysis = run_study(cfg, out, plots=not args.no_plots)
    print()
    print(format_report(cfg, analysis))
    print(f"\n{time.time() - t0:.0f} s; results in {out}")
    return 0


def register(sub: "argparse._SubParsersAction") -> None:
    """Adds ``edgert recl ...`` to the top-level parser."""
    from edgert.recl.evaluate import SCHEMES, TASKS

    p = sub.add_parser("recl", help="RECL model reuse with an expert zoo: server, camera device, evaluation, study")
    rsub = p.add_subparsers(dest="recl_command", required=True)
    ev = rsub.add_parser("eval", help="RECL vs baselines on the camera workload: table.md, accuracy.png, "
                                      "config.json, results.json (and responsiveness.md when RECL and a "
                                      "retraining baseline ran)")
    ev.add_argument("--out", default=None, help="run folder (default: runs/recl-<time>)")
    ev.add_argument("--task", choices=TASKS, default="classification")
    ev.add_argument("--cameras", type=int, default=None, help="cameras (default: 4; --quick: 2)")
    ev.add_argument("--windows", type=int, default=None,
                    help="at most this many windows per camera (default: all; --quick: 3)")
    ev.add_argument("--schemes", default=None,
                    help=f"comma-separated, of {','.join(SCHEMES)} (default: all but recl_cut)")
    ev.add_argument("--budget", type=float, default=None,
                    help="retraining compute per window in GPU seconds, the same for every scheme (default: the "
                         "whole window)")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--threads", type=int, default=1, help="torch threads")
    ev.add_argument("--cut-frames", type=int, default=4,
                    help="frames a camera of recl_cut uploads after a scene cut it detects (default: 4)")
    ev.add_argument("--quick", action="store_true",
                    help="tiny workload and selectors (3 short clips, 2 cameras, 3 windows): about a minute")
    ev.add_argument("--no-plots", action="store_true")
    ev.set_defaults(func=_cmd_eval)

    st = rsub.add_parser("study", help="the full evaluation: accuracy vs cameras and vs compute, compute to match, "
                                       "responsiveness, cost over time, ablations (report.md, plots)")
    st.add_argument("--out", default=None, help="study folder (default: runs/recl-study-<time>)")
    st.add_argument("--task", choices=TASKS, default="classification")
    st.add_argument("--cameras", default=None, help="camera counts, comma-separated (default: 2,4,8)")
    st.add_argument("--budgets", default=None,
                    help="retraining GPU seconds per window, comma-separated (default: 15,30,60,120)")
    st.add_argument("--base-cameras", type=int, default=None, help="cameras of the compute sweep (default: 4)")
    st.add_argument("--base-budget", type=float, default=None, help="budget of the cameras sweep (default: 30)")
    st.add_argument("--no-ablations", action="store_true")
    st.add_argument("--seed", type=int, default=0)
    st.add_argument("--threads", type=int, default=1, help="torch threads")
    st.add_argument("--quick", action="store_true", help="tiny study (the eval's --quick workload): minutes")
    st.add_argument("--no-plots", action="store_true")
    st.set_defaults(func=_cmd_study)

    from edgert.recl.service import register_service

    register_service(rsub)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgert.recl.cli")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(["recl", *(argv if argv is not None else sys.argv[1:])])
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
