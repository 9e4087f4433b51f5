"""``edgert release``: offline key management and packet signing for release signatures.

    edgert release keygen root                      # root.key (keep offline) + root.pub (pin on devices)
    edgert release keygen release
    edgert release delegate --root root.key --release release.pub --version 1 --days 30 -o release.stmt
    edgert release rotate --root root.key --new-root root2.pub --version 1 -o rotate1.stmt
    edgert release sign update.bin --key release.key --delegation release.stmt [--rotation rotate1.stmt] -o signed.bin
    edgert release verify signed.bin --root root.pub

Keys are raw 32-byte Ed25519 values (private: the seed, written with mode 0600); statements are the 128-byte
records of ``docs/spec/update-packet.md``. ``verify`` prints the status libedgert's slot would give and exits 1
on a rejection.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any, Optional

from edgert.updates.signing import (
    SignatureError,
    Signer,
    SigningKey,
    Statement,
    Trust,
    delegate,
    parse_block,
    resume_trust,
    rotate_root,
    sign_packet,
    verify_packet,
)

DAY = 86_400


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _key(path: str) -> SigningKey:
    return SigningKey(Path(path).read_bytes())


def _cmd_keygen(args: argparse.Namespace) -> int:
    out = Path(args.dir)
    out.mkdir(parents=True, exist_ok=True)
    key = SigningKey.generate()
    _write_private(out / f"{args.name}.key", key.seed)
    (out / f"{args.name}.pub").write_bytes(key.public)
    print(f"{out / args.name}.key (private, keep offline for a root), {out / args.name}.pub  id {key.key_id.hex()}")
    return 0


def _expiry(args: argparse.Namespace) -> int:
    return args.expiry if args.expiry is not None else int(time.time()) + int(args.days * DAY)


def _cmd_delegate(args: argparse.Namespace) -> int:
    stmt = delegate(_key(args.root), Path(args.release).read_bytes(), args.version, _expiry(args))
    Path(args.out).write_bytes(stmt.encode())
    print(f"{args.out}: delegation {args.version} to {stmt.subject.hex()[:16]}.. until {stmt.expiry}")
    return 0


def _cmd_rotate(args: argparse.Namespace) -> int:
    stmt = rotate_root(_key(args.root), Path(args.new_root).read_bytes(), args.version)
    Path(args.out).write_bytes(stmt.encode())
    print(f"{args.out}: root version {args.version} is {stmt.subject.hex()[:16]}..")
    return 0


def _cmd_sign(args: argparse.Namespace) -> int:
    rotations = [Statement.decode(Path(p).read_bytes()) for p in args.rotation]
    delegation = Statement.decode(Path(args.delegation).read_bytes())
    expiry = _expiry(args)
    signed = sign_packet(Path(args.packet).read_bytes(), _key(args.key), delegation, expiry, rotations)
    Path(args.out).write_bytes(signed)
    print(f"{args.out}: {len(signed)} bytes, signed until {expiry}")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    data = Path(args.packet).read_bytes()
    trust = Trust(Path(args.root).read_bytes(), args.root_version, args.min_release_version, args.now)
    try:
        after = verify_packet(data, trust)
    except SignatureError as exc:
        print(f"{exc.status}: {exc}")
        return 1
    block = parse_block(data)
    assert block is not None
    print(f"EDGERT_OK: signed by {block.signer_id.hex()} until {block.expiry}; device trust after: root version "
          f"{after.root_version}, delegations >= {after.min_release_version}")
    return 0


def add_release_arguments(parser: Any, server: bool = False) -> None:
    """Adds the release-signature options of a server (``--release-key``, ``--delegation``, ``--rotation``,
    ``--signature-days``: sign every packet sent) or of a device (``--root-key``, ``--root-version``,
    ``--min-release-version``: refuse every packet without a valid signature) to an argparse parser."""
    if server:
        parser.add_argument("--release-key", default=None,
                            help="sign every packet with this release private key (`edgert release keygen`); "
                                 "needs --delegation")
        parser.add_argument("--delegation", default=None, help="the root's delegation statement for --release-key")
        parser.add_argument("--rotation", action="append", default=[],
                            help="root rotation statements devices may still need, oldest first")
        parser.add_argument("--signature-days", type=float, default=7.0,
                            help="each signed packet expires this many days after it is sent (default 7)")
    else:
        parser.add_argument("--root-key", default=None,
                            help="pin this root public key: packets without a valid release signature are refused")
        parser.add_argument("--root-version", type=int, default=0, help="the pinned root's version (default 0)")
        parser.add_argument("--min-release-version", type=int, default=0,
                            help="refuse delegations below this version (default 0)")
        parser.add_argument("--trust-dir", default=None,
                            help="keep the trust reached (root rotations, delegation floor) in DIR/trust.bin and "
                                 "resume it at start, as the firmware node does (needs --root-key)")


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"{what} {path}: {exc.strerror or exc}") from exc


def signer_from_args(args: argparse.Namespace) -> Optional[Signer]:
    """The :class:`Signer` that :func:`add_release_arguments` (server) describes, or None without
    ``--release-key``. Raises ValueError naming the file or option that is wrong."""
    if getattr(args, "release_key", None) is None:
        if getattr(args, "delegation", None) is not None:
            raise ValueError("--delegation needs --release-key")
        return None
    if args.delegation is None:
        raise ValueError("--release-key needs --delegation (`edgert release delegate`)")
    if args.signature_days <= 0:
        raise ValueError(f"--signature-days: expected > 0, got {args.signature_days}")
    try:
        key = SigningKey(_read(args.release_key, "--release-key"))
    except ValueError as exc:
        raise ValueError(f"--release-key {args.release_key}: {exc}") from exc
    delegation = _statement(args.delegation, "--delegation")
    rotations = [_statement(r, "--rotation") for r in args.rotation]
    try:
        return Signer(key, delegation, rotations, validity=int(args.signature_days * DAY))
    except ValueError as exc:
        raise ValueError(f"--release-key {args.release_key} with --delegation {args.delegation}: {exc}") from exc


def _statement(path: str, what: str) -> Statement:
    try:
        return Statement.decode(_read(path, what))
    except SignatureError as exc:
        raise ValueError(f"{what} {path}: {exc}") from exc


def trust_from_args(args: argparse.Namespace) -> Optional[Trust]:
    """The :class:`Trust` that :func:`add_release_arguments` (device) describes, or None without ``--root-key``."""
    if getattr(args, "root_key", None) is None:
        return None
    if args.root_version < 0 or args.min_release_version < 0:
        raise ValueError("--root-version and --min-release-version must be >= 0")
    root = _read(args.root_key, "--root-key")
    if len(root) != 32:
        raise ValueError(f"--root-key {args.root_key}: an Ed25519 public key has 32 bytes, got {len(root)}")
    return Trust(root, args.root_version, args.min_release_version)


def trust_dir_from_args(args: argparse.Namespace) -> Optional[Path]:
    """The ``--trust-dir`` of a device (:func:`add_release_arguments`; pass it as ``EdgeClient(state_dir=)``), or
    None. Raises ValueError without ``--root-key``, or naming the file when its ``trust.bin`` is damaged (the
    device must not start then: :class:`~edgert.updates.signing.TrustStateError`)."""
    folder = getattr(args, "trust_dir", None)
    if folder is None:
        return None
    trust = trust_from_args(args)
    if trust is None:
        raise ValueError("--trust-dir needs --root-key")
    resume_trust(folder, trust)
    return Path(folder)


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Adds ``edgert release`` (keygen, delegate, rotate, sign, verify) to the top-level parser."""
    p = sub.add_parser("release", help="release-signature keys, delegations, rotations; sign and verify packets")
    rs = p.add_subparsers(dest="release_command", required=True)

    k = rs.add_parser("keygen", help="a new Ed25519 key pair: NAME.key (mode 0600) and NAME.pub")
    k.add_argument("name")
    k.add_argument("--dir", default=".")
    k.set_defaults(func=_cmd_keygen)

    def expiry_args(q: argparse.ArgumentParser, days: float) -> None:
        q.add_argument("--days", type=float, default=days, help=f"valid for this many days (default {days:g})")
        q.add_argument("--expiry", type=int, help="absolute expiry, Unix seconds (overrides --days)")

    d = rs.add_parser("delegate", help="root delegates to a release key (versioned, expiring)")
    d.add_argument("--root", required=True, help="root private key file")
    d.add_argument("--release", required=True, help="release public key file")
    d.add_argument("--version", type=int, required=True, help="delegation number; devices then refuse lower ones")
    d.add_argument("-o", "--out", required=True)
    expiry_args(d, 30.0)
    d.set_defaults(func=_cmd_delegate)

    r = rs.add_parser("rotate", help="the current root names the next root (version = current + 1)")
    r.add_argument("--root", required=True, help="current root private key file")
    r.add_argument("--new-root", required=True, help="new root public key file")
    r.add_argument("--version", type=int, required=True)
    r.add_argument("-o", "--out", required=True)
    r.set_defaults(func=_cmd_rotate)

    s = rs.add_parser("sign", help="sign an update packet with the release key")
    s.add_argument("packet")
    s.add_argument("--key", required=True, help="release private key file")
    s.add_argument("--delegation", required=True, help="the root's delegation statement")
    s.add_argument("--rotation", action="append", default=[], help="root rotation statements, oldest first")
    s.add_argument("-o", "--out", required=True)
    expiry_args(s, 7.0)
    s.set_defaults(func=_cmd_sign)

    v = rs.add_parser("verify", help="check a signed packet against a pinned root (as the device does)")
    v.add_argument("packet")
    v.add_argument("--root", required=True, help="pinned root public key file")
    v.add_argument("--root-version", type=int, default=0)
    v.add_argument("--min-release-version", type=int, default=0)
    v.add_argument("--now", type=int, default=None, help="clock for expiry checks (default: now)")
    v.set_defaults(func=_cmd_verify)
