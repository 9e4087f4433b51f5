"""TLS 1.3 with mutual authentication for the transport, on the standard library's :mod:`ssl`.

A :class:`TLSConfig` names an endpoint's certificate and key and the CA bundle it trusts (and optionally the
CRLs); :mod:`edgert.transport.certs` (``edgert keys``) creates them. Both sides require TLS 1.3 and a
certificate from the bundle; the server also checks that the device id in the client certificate (subject CN)
is the one the device's HELLO names. The HMAC handshake still runs inside TLS (``docs/spec/wire-protocol.md``).
"""
from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

PathLike = Union[str, "os.PathLike[str]"]


class TLSConfigError(ValueError):
    """TLS settings that name missing files or files that do not load (the message says which)."""


@dataclass(frozen=True)
class TLSConfig:
    """One endpoint's TLS settings.

    Args:
        cert: this endpoint's certificate (PEM).
        key: its private key (PEM, unencrypted; keep it mode 0600).
        ca: the CA bundle (PEM) peers' certificates must chain to.
        crl: CRLs (PEM) of every CA in ``ca``; when given, a revoked peer certificate is refused.
        server_hostname: the name (or address) the device checks the server certificate against (None: the
            host it connects to).
        session_tickets: servers: TLS 1.3 session tickets issued per handshake, with which a device may resume
            its session on reconnecting (no certificate signatures or verification: about half the server's CPU
            per handshake in a reconnect storm, ``docs/results/transport.md``). 0 (default): every connection is
            a full handshake; a resumed session is not checked against the CRL again, so a revoked device could
            resume until its ticket expires (OpenSSL: 2 h). No device in this repository resumes today.
    """

    cert: Path
    key: Path
    ca: Path
    crl: Optional[Path] = None
    server_hostname: Optional[str] = None
    session_tickets: int = 0

    @classmethod
    def from_dir(cls, folder: PathLike, kind: str, name: str, *, crl: bool = True,
                 server_hostname: Optional[str] = None) -> "TLSConfig":
        """The settings for ``kind`` ("device" or "server") ``name`` out of an ``edgert keys`` CA folder
        (``<kind>-<name>.pem/.key``, ``bundle.pem``, ``crl.pem`` when ``crl``)."""
        if kind not in ("device", "server"):
            raise TLSConfigError(f"kind: expected 'device' or 'server', got {kind!r}")
        root = Path(folder)
        return cls(root / f"{kind}-{name}.pem", root / f"{kind}-{name}.key", root / "bundle.pem",
                   root / "crl.pem" if crl else None, server_hostname)

    @classmethod
    def from_args(cls, args: Any, kind: str, name: str) -> Optional["TLSConfig"]:
        """From the CLI flags of :func:`add_tls_arguments` (None when none is given)."""
        if getattr(args, "tls_dir", None):
            return cls.from_dir(args.tls_dir, kind, name)
        cert, key, ca = (getattr(args, "tls_cert", None), getattr(args, "tls_key", None),
                         getattr(args, "tls_ca", None))
        if cert is None and key is None and ca is None:
            return None
        if cert is None or key is None or ca is None:
            raise TLSConfigError("TLS needs --tls-cert, --tls-key and --tls-ca together (or --tls-dir)")
        return cls(Path(cert), Path(key), Path(ca))

    def _context(self, purpose: ssl.Purpose) -> ssl.SSLContext:
        for what, path in (("certificate", self.cert), ("key", self.key), ("CA bundle", self.ca), ("CRL", self.crl)):
            if path is not None and not Path(path).is_file():
                raise TLSConfigError(f"TLS {what} {str(path)!r}: no such file")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if purpose is ssl.Purpose.CLIENT_AUTH
                             else ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.verify_mode = ssl.CERT_REQUIRED
        try:
            ctx.load_cert_chain(str(self.cert), str(self.key))
            ctx.load_verify_locations(cafile=str(self.ca))
            if self.crl is not None:
                ctx.load_verify_locations(cafile=str(self.crl))
                ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
        except (ssl.SSLError, OSError) as exc:
            raise TLSConfigError(f"TLS files {str(self.cert)!r}, {str(self.key)!r}, {str(self.ca)!r}: {exc}") from exc
        return ctx

    def server_context(self) -> ssl.SSLContext:
        """A server context: TLS 1.3 only, a client certificate from the bundle required, ``session_tickets``
        tickets per handshake."""
        if self.session_tickets < 0:
            raise TLSConfigError(f"session_tickets: expected >= 0, got {self.session_tickets}")
        ctx = self._context(ssl.Purpose.CLIENT_AUTH)
        ctx.num_tickets = self.session_tickets
        return ctx

    def client_context(self) -> ssl.SSLContext:
        """A device context: TLS 1.3 only, the server certificate checked against the bundle and the host name."""
        ctx = self._context(ssl.Purpose.SERVER_AUTH)
        ctx.check_hostname = True
        return ctx


def peer_device_id(peercert: Optional[dict[str, Any]]) -> Optional[str]:
    """The subject CN of a verified peer certificate (``SSLSocket.getpeercert()``), or None."""
    if not peercert:
        return None
    for rdn in peercert.get("subject", ()):
        for name, value in rdn:
            if name == "commonName":
                return str(value)
    return None


def add_tls_arguments(parser: Any, server: bool = False) -> None:
    """Adds ``--tls-dir`` / ``--tls-cert`` / ``--tls-key`` / ``--tls-ca`` to an argparse parser (a server's also
    ``--tls-name``, the ``server-<name>`` certificate of ``--tls-dir``)."""
    parser.add_argument("--tls-dir", default=None,
                        help="TLS 1.3 with the certificates of this `edgert keys` CA folder (server-<name>, "
                             "device-<id>, bundle.pem, crl.pem)")
    if server:
        parser.add_argument("--tls-name", default="localhost", help="with --tls-dir: use server-<name>.pem/.key")
    parser.add_argument("--tls-cert", default=None, help="TLS: this endpoint's certificate (PEM)")
    parser.add_argument("--tls-key", default=None, help="TLS: its private key (PEM)")
    parser.add_argument("--tls-ca", default=None, help="TLS: the CA bundle peers must chain to (PEM)")


__all__ = ["TLSConfig", "TLSConfigError", "add_tls_arguments", "peer_device_id"]
