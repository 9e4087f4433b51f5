"""``edgert recl eval``: RECL against its baselines on the camera workload (:mod:`edgert.recl.evaluate`)."""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path
from typing import Any, Optional


def _eval_config(args: argparse.Namespace) -> Any:
    from edgert.recl.evaluate import QUICK, SCHEMES, EvalConfig

    preset: dict[str, Any] = copy.deepcopy(QUICK) if args.quick else {}
    schemes = tuple(s.strip() for s in args.schemes.split(",") if s.strip()) if args.schemes else tuple(SCHEMES)
    cameras = args.cameras if args.cameras is not None else preset.get("cameras", 4)
    windows = args.windows if args.windows is not None else preset.get("windows")
    return EvalConfig(task=args.task, cameras=cameras, windows=windows, workload=preset.get("workload", {}),
                      schemes=schemes, budget_s=args.budget, recl=preset.get("recl", {}), seed=args.seed,
                      threads=args.threads)


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
    print(f"\n{time.time() - t0:.0f} s; results in {out}")
    return 0


def register(sub: "argparse._SubParsersAction") -> None:
    """Adds ``edgert recl ...`` to the top-level parser."""
    from edgert.recl.evaluate import SCHEMES, TASKS

    p = sub.add_parser("recl", help="RECL model reuse with an expert zoo: evaluation")
    rsub = p.add_subparsers(dest="recl_command", required=True)
    ev = rsub.add_parser("eval", help="RECL vs baselines on the camera workload: table.md, accuracy.png, "
                                      "config.json, results.json")
    ev.add_argument("--out", default=None, help="run folder (default: runs/recl-<time>)")
    ev.add_argument("--task", choices=TASKS, default="classification")
    ev.add_argument("--cameras", type=int, default=None, help="cameras (default: 4; --quick: 2)")
    ev.add_argument("--windows", type=int, default=None,
                    help="at most this many windows per camera (default: all; --quick: 3)")
    ev.add_argument("--schemes", default=None, help=f"comma-separated, of {','.join(SCHEMES)} (default: all)")
    ev.add_argument("--budget", type=float, default=None,
                    help="retraining compute per window in GPU seconds, the same for every scheme (default: the "
                         "whole window)")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--threads", type=int, default=1, help="torch threads")
    ev.add_argument("--quick", action="store_true",
                    help="tiny workload and selectors (3 short clips, 2 cameras, 3 windows): about a minute")
    ev.add_argument("--no-plots", action="store_true")
    ev.set_defaults(func=_cmd_eval)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgert.recl.cli")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(["recl", *(argv if argv is not None else sys.argv[1:])])
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
