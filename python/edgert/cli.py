"""The ``edgert`` command: ``info``, ``data``, ``release`` (signed releases), and a subcommand group per
application (``mimo``, ``srvc``, ``ams``, ``recl``), plus ``demo``."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Optional, Sequence


def _cmd_info(args: argparse.Namespace) -> int:
    from edgert import info

    runtime = info()
    print(json.dumps(runtime.as_dict(), indent=2) if args.json else runtime)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgert", description="edgert edge runtime for continuous learning")
    sub = parser.add_subparsers(dest="command", required=True)
    p_info = sub.add_parser("info", help="version, backends, devices and build flags")
    p_info.add_argument("--json", action="store_true", help="print as JSON")
    p_info.set_defaults(func=_cmd_info)
    from edgert.adapt.cli import register as register_adapt
    from edgert.ams.cli import register as register_ams
    from edgert.ams.cli import register_demo
    from edgert.data import register as register_data
    from edgert.mimo.cli import register as register_mimo
    from edgert.recl.cli import register as register_recl
    from edgert.srvc.cli import register as register_srvc
    from edgert.updates.release_cli import register as register_release

    for register in (register_mimo, register_data, register_srvc, register_ams, register_recl, register_adapt,
                     register_demo, register_release):
        register(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``edgert`` console script."""
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
