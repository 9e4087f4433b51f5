"""The ``edgert`` command: ``info``, ``data``, ``keys`` (the transport's TLS certificate authority),
``release`` (signed releases), and a subcommand group per application (``mimo``, ``srvc``, ``ams``, ``recl``),
plus ``demo``."""
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


def _cmd_keys(args: argparse.Namespace) -> int:
    from edgert.transport.certs import CertificateAuthority, CertificateError

    try:
        if args.keys_command == "init-ca":
            ca = CertificateAuthority.init(args.dir, args.name, days=args.days, force=args.force)
            print(f"CA {ca.name!r} (generation 1) in {ca.folder}: trust bundle {ca.bundle}")
            return 0
        ca = CertificateAuthority(args.dir)
        if args.keys_command == "issue-device":
            for path in ca.issue_devices(args.device, days=args.days):
                print(path)
        elif args.keys_command == "issue-server":
            print(ca.issue_server(args.name, args.host or ("localhost", "127.0.0.1", "::1"), days=args.days))
        elif args.keys_command == "revoke":
            row = ca.revoke(args.kind, args.name)
            print(f"revoked {row.kind} {row.name!r} (serial {row.serial:x}); CRLs in {ca.crl}")
        elif args.keys_command == "rotate":
            generation = ca.rotate(days=args.days)
            print(f"CA generation {generation}; every live certificate re-issued; {ca.bundle} trusts generations "
                  f"{ca.generations} until `edgert keys retire`")
        elif args.keys_command == "retire":
            print(f"no longer trusted: CA generations {ca.retire()}")
        else:  # list
            rows = [dict(vars(c), live=not c.revoked) for c in ca.certs]
            if args.json:
                print(json.dumps({"name": ca.name, "generation": ca.generation, "trusted": ca.generations,
                                  "certs": rows}, indent=2))
            else:
                print(f"CA {ca.name!r}: generation {ca.generation}, trusted {ca.generations}")
                for c in ca.certs:
                    state = "revoked" if c.revoked else "live"
                    print(f"  {c.kind:6} {c.name:24} gen {c.generation}  {state:7}  until {c.not_after}  "
                          f"serial {c.serial:x}" + (f"  hosts {','.join(c.hosts)}" if c.hosts else ""))
    except CertificateError as exc:
        print(f"edgert keys: {exc}", file=sys.stderr)
        return 2
    return 0


def _register_keys(sub: "argparse._SubParsersAction") -> None:
    from edgert.transport.certs import DEFAULT_CA_DAYS, DEFAULT_CERT_DAYS

    p = sub.add_parser("keys", help="TLS certificate authority for servers and devices (create, issue, revoke, "
                                    "rotate, list)")
    ksub = p.add_subparsers(dest="keys_command", required=True)
    commands = {
        "init-ca": "create a CA (ECDSA P-256) in --dir",
        "issue-device": "a key and client certificate per device (CN = device id)",
        "issue-server": "a key and server certificate (SAN = --host names/addresses)",
        "revoke": "put a device's or server's certificates on the CRL (crl.pem)",
        "rotate": "new CA generation; re-issue every live certificate; the old CA stays trusted until retire",
        "retire": "stop trusting the CA generations before the current one",
        "list": "what the CA issued, live or revoked",
    }
    for name, text in commands.items():
        c = ksub.add_parser(name, help=text)
        c.add_argument("--dir", required=True, help="the CA folder")
        c.set_defaults(func=_cmd_keys)
        if name == "init-ca":
            c.add_argument("--name", default="edgert fleet CA", help="the CA's name (subject CN)")
            c.add_argument("--force", action="store_true", help="replace a CA already in --dir")
        if name in ("init-ca", "rotate"):
            c.add_argument("--days", type=int, default=DEFAULT_CA_DAYS, help="CA validity")
        if name in ("issue-device", "issue-server"):
            c.add_argument("--days", type=int, default=DEFAULT_CERT_DAYS, help="certificate validity")
        if name == "issue-device":
            c.add_argument("device", nargs="+", help="device ids")
        if name == "issue-server":
            c.add_argument("--name", default="localhost", help="the server's name (server-<name>.pem)")
            c.add_argument("--host", action="append", help="a DNS name or IP address devices connect to "
                                                             "(repeatable; default localhost, 127.0.0.1, ::1)")
        if name == "revoke":
            c.add_argument("kind", choices=("device", "server"))
            c.add_argument("name", help="device id or server name")
        if name == "list":
            c.add_argument("--json", action="store_true", help="print as JSON")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgert", description="edgert edge runtime for continuous learning")
    sub = parser.add_subparsers(dest="command", required=True)
    p_info = sub.add_parser("info", help="version, backends, devices and build flags")
    p_info.add_argument("--json", action="store_true", help="print as JSON")
    p_info.set_defaults(func=_cmd_info)
    _register_keys(sub)
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
