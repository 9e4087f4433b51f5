"""``edgert adapt eval``: OneAdapt against its baselines (:mod:`edgert.adapt.evaluate`)."""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any


def _tuple(text: str, kind: Any) -> tuple[Any, ...]:
    return tuple(kind(v.strip()) for v in text.split(",") if v.strip())


def _config(args: argparse.Namespace) -> Any:
    from edgert.adapt.evaluate import QUICK, EvalConfig

    cfg = EvalConfig(**QUICK) if args.quick else EvalConfig()  # type: ignore[arg-type]
    changes: dict[str, Any] = {}
    if args.pipelines:
        changes["pipelines"] = _tuple(args.pipelines, str)
    if args.clips:
        changes["clips"] = _tuple(args.clips, str)
    if args.duration is not None:
        changes["duration_s"] = args.duration
    if args.lams:
        changes["lams"] = _tuple(args.lams, float)
    if args.regions:
        changes["region_grids"] = _tuple(args.regions, int)
    changes["threads"] = args.threads
    return dataclasses.replace(cfg, **changes)


def _cmd_eval(args: argparse.Namespace) -> int:
    from edgert.adapt.ascent import AdaptError
    from edgert.adapt.evaluate import format_table, run_eval
    from edgert.harness import RunFolderError

    try:
        cfg = _config(args)
        cfg.validate()
    except (ValueError, TypeError) as exc:
        print(f"edgert adapt eval: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out or f"runs/adapt-{time.strftime('%Y%m%d-%H%M%S')}")
    t0 = time.time()
    try:
        results = run_eval(cfg, out, plots=not args.no_plots)
    except (RunFolderError, AdaptError, ValueError) as exc:
        print(f"edgert adapt eval: {exc}", file=sys.stderr)
        return 2
    table = format_table(results)
    (out / "table.md").write_text(table + "\n", encoding="utf-8")
    print(table)
    print(f"\n{time.time() - t0:.0f} s; results in {out}")
    return 0


def register(sub: "argparse._SubParsersAction") -> None:
    """Adds ``edgert adapt ...`` to the top-level parser."""
    p = sub.add_parser("adapt", help="OneAdapt: knobs adapted by gradient ascent (codec, frame filtering, audio)")
    asub = p.add_subparsers(dest="adapt_command", required=True)
    ev = asub.add_parser("eval", help="OneAdapt vs uniform sweep, periodic profiling and each pipeline's heuristic: "
                                      "table.md, plots, config.json, results.json")
    ev.add_argument("--out", default=None, help="run folder (default: runs/adapt-<time>)")
    ev.add_argument("--pipelines", default=None,
                    help="comma-separated of codec,codec-faces,filtering,audio (default: all)")
    ev.add_argument("--clips", default=None, help="comma-separated clip names or files (default: iscc-demo,bikes,"
                                                  "carphone)")
    ev.add_argument("--duration", type=float, default=None, help="seconds of each clip (default 30)")
    ev.add_argument("--lams", default=None, help="OneAdapt lambdas, comma-separated (default 0.1,0.3,1,3)")
    ev.add_argument("--regions", default=None, help="codec region grids n (n x n knobs), first for the lambda sweep "
                                                    "(default 4,2,8)")
    ev.add_argument("--threads", type=int, default=2, help="torch threads")
    ev.add_argument("--quick", action="store_true", help="one short clip, one point per scheme: about a minute")
    ev.add_argument("--no-plots", action="store_true")
    ev.set_defaults(func=_cmd_eval)
