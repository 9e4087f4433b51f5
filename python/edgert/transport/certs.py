"""A small certificate authority for the transport's TLS (``edgert keys``; ``docs/design/transport.md``).

One folder holds the CA and everything it issued; every key is ECDSA P-256 (accepted for TLS 1.3 client
authentication by OpenSSL 3, Python's :mod:`ssl` and mbedTLS alike), every signature SHA-256::

    ca.key, ca.pem               the current CA (generation n): signs certificates and its CRL
    ca-<g>.key, ca-<g>.pem       a previous CA kept while its certificates are still in the field (rotation)
    bundle.pem                   the CAs a peer trusts: the current one and those kept (servers and devices load it)
    crl.pem                      one CRL per CA in the bundle: the serials revoked
    device-<id>.key/.pem         a device's key and certificate: subject CN = the device id, clientAuth
    server-<name>.key/.pem       a server's key and certificate: SAN = its host names / addresses, serverAuth
    index.json                   what was issued (kind, name, serial, CA generation, validity) and revoked

Every file is written atomically (temporary file, fsync, rename); keys are mode 0600.

**Rotation** (:meth:`CertificateAuthority.rotate`) makes a new CA key (generation n+1), keeps the old CA in the
bundle, and re-issues every live certificate with a new key under the new CA. Servers and devices that load the
new bundle accept peers holding either generation, so the fleet moves over one device at a time;
:meth:`CertificateAuthority.retire` then drops the old generations from the bundle, after which an old
certificate is refused. **Revocation** (:meth:`CertificateAuthority.revoke`) puts a certificate's serial on its
CA's CRL; an endpoint whose TLS settings name ``crl.pem`` refuses it at the next connection.

This module needs the ``cryptography`` package (a core dependency); the TLS connections themselves use only
the standard library (:mod:`edgert.transport.tls`).
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Optional, Union

from edgert.transport.keys import check_device_id

PathLike = Union[str, "os.PathLike[str]"]

DEFAULT_CA_DAYS = 3650
DEFAULT_CERT_DAYS = 365
INDEX = "index.json"


class CertificateError(ValueError):
    """A CA folder that is missing, malformed, or asked to do something it cannot (the message says what)."""


@dataclass
class IssuedCert:
    """One certificate the CA issued (a row of ``index.json``)."""

    kind: str  # "device" or "server"
    name: str  # device id, or server name
    serial: int
    generation: int  # of the CA that signed it
    not_before: str  # ISO 8601, UTC
    not_after: str
    hosts: list[str]  # servers: SAN entries; devices: empty
    revoked: bool = False

    @property
    def stem(self) -> str:
        return f"{self.kind}-{self.name}"


def write_atomic(path: Path, data: bytes, mode: int = 0o644, *, fsync: bool = True) -> None:
    """Writes ``data`` to ``path`` through a temporary file in the same folder (fsync, rename), with ``mode``.

    ``fsync=False`` leaves flushing to the caller (a batch that calls :func:`os.sync` once for all its files)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _crypto() -> Any:
    try:
        import cryptography  # noqa: F401
    except ImportError as exc:  # pragma: no cover - a core dependency, installed in CI
        raise CertificateError("the certificate authority needs the 'cryptography' package "
                               "(pip install cryptography)") from exc
    from cryptography import x509

    return x509


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


class CertificateAuthority:
    """The CA in ``folder`` (see the module docstring for its files). Create one with :meth:`init`.

    Raises:
        CertificateError: ``folder`` holds no CA (no ``index.json``/``ca.pem``/``ca.key``) or a malformed one.
    """

    def __init__(self, folder: PathLike) -> None:
        self.folder = Path(folder)
        index = self.folder / INDEX
        if not index.exists() or not (self.folder / "ca.pem").exists() or not (self.folder / "ca.key").exists():
            raise CertificateError(f"{str(self.folder)!r} holds no CA (run `edgert keys init-ca --dir "
                                   f"{self.folder}`)")
        try:
            data = json.loads(index.read_text())
            self.name = str(data["name"])
            self.generation = int(data["generation"])
            self.generations = [int(g) for g in data["generations"]]
            self.certs = [IssuedCert(**row) for row in data["certs"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CertificateError(f"{str(index)!r}: malformed CA index ({exc})") from exc

    # ---- creation ------------------------------------------------------------------------------------
    @classmethod
    def init(cls, folder: PathLike, name: str = "edgert fleet CA", *, days: int = DEFAULT_CA_DAYS,
             force: bool = False) -> "CertificateAuthority":
        """Creates a CA (generation 1) in ``folder``.

        Raises:
            CertificateError: ``folder`` already holds a CA and ``force`` is False.
        """
        root = Path(folder)
        if (root / INDEX).exists() and not force:
            raise CertificateError(f"{str(root)!r} already holds a CA (pass force=True / --force to replace it)")
        root.mkdir(parents=True, exist_ok=True)
        os.chmod(root, 0o700)
        key, cert = _make_ca(name, 1, days)
        _write_key(root / "ca.key", key)
        write_atomic(root / "ca.pem", _pem(cert))
        _write_index(root, {"name": name, "generation": 1, "generations": [1], "certs": []})
        ca = cls(root)
        ca._write_trust()
        return ca

    # ---- issuing -------------------------------------------------------------------------------------
    def issue_device(self, device_id: str, *, days: int = DEFAULT_CERT_DAYS,
                     valid_from: Optional[dt.datetime] = None) -> Path:
        """A fresh key and certificate for ``device_id`` (subject CN = the device id, extended key usage
        clientAuth); replaces an earlier one (which is revoked). Returns the certificate's path
        (``device-<id>.pem``; the key is ``device-<id>.key``, mode 0600).

        ``valid_from`` backdates the validity (default now); ``days`` counts from it.
        """
        return self.issue_devices([device_id], days=days, valid_from=valid_from)[0]

    def issue_devices(self, device_ids: Iterable[str], *, days: int = DEFAULT_CERT_DAYS,
                      valid_from: Optional[dt.datetime] = None) -> list[Path]:
        """:meth:`issue_device` for many devices at once (a fleet's provisioning): the index, the bundle and the
        CRLs are written once for the whole batch instead of once per certificate, and a batch of more than one
        is made durable by one :func:`os.sync` before the index names it instead of an fsync per file
        (``bench/transport_load.py`` measures both). Returns the certificates' paths, in order.

        Raises:
            CertificateError: a device id is invalid or given twice, or ``days`` < 1 (nothing is issued then).
        """
        ids = list(device_ids)
        for device_id in ids:
            check_device_id(device_id)
        if len(set(ids)) != len(ids):
            raise CertificateError("device ids: each may be issued once per batch")
        return self._issue_batch([("device", d, [], days) for d in ids], valid_from, replace=True)

    def issue_server(self, name: str = "localhost", hosts: Iterable[str] = ("localhost", "127.0.0.1", "::1"), *,
                     days: int = DEFAULT_CERT_DAYS, valid_from: Optional[dt.datetime] = None) -> Path:
        """A fresh key and certificate for the server ``name``, valid for ``hosts`` (DNS names or IP
        addresses: what devices connect to), extended key usage serverAuth. Returns ``server-<name>.pem``."""
        check_device_id(name)
        hosts = [str(h) for h in hosts]
        if not hosts:
            raise CertificateError("a server certificate needs at least one host name or address")
        return self._issue_batch([("server", name, hosts, days)], valid_from, replace=True)[0]

    def _issue_batch(self, batch: list[tuple[str, str, list[str], int]], valid_from: Optional[dt.datetime],
                     replace: bool) -> list[Path]:
        """Issues a certificate for each (kind, name, hosts, days) of ``batch`` and saves the index once.
        ``replace``: revoke the earlier certificates of those names (a rotation keeps them until retire)."""
        for _, _, _, days in batch:
            if days < 1:
                raise CertificateError(f"days: expected >= 1, got {days}")
        stems = {(kind, name) for kind, name, _, _ in batch}
        for old in self.certs:
            if replace and (old.kind, old.name) in stems and not old.revoked:
                old.revoked = True
        ca_key, ca_cert = self._ca(self.generation)
        single = len(batch) == 1
        paths = []
        for kind, name, hosts, days in batch:
            key, cert = _make_leaf(kind, name, hosts, ca_key, ca_cert, days, valid_from)
            stem = f"{kind}-{name}"
            _write_key(self.folder / f"{stem}.key", key, fsync=single)
            write_atomic(self.folder / f"{stem}.pem", _pem(cert), fsync=single)
            self.certs.append(IssuedCert(kind, name, cert.serial_number, self.generation,
                                         cert.not_valid_before_utc.isoformat(), cert.not_valid_after_utc.isoformat(),
                                         hosts))
            paths.append(self.folder / f"{stem}.pem")
        if not single:
            os.sync()  # the files are on disk before the index names them
        self._save()
        return paths

    # ---- revocation and rotation ---------------------------------------------------------------------------
    def revoke(self, kind: str, name: str) -> IssuedCert:
        """Revokes device/server ``name``: the serials of its certificates (every CA generation still trusted)
        go on their CA's CRL (``crl.pem``) and its key and certificate files are deleted. Returns the newest.

        Raises:
            CertificateError: no live certificate of that kind and name.
        """
        live = self.live(kind, name)
        for row in self.certs:
            if row.kind == kind and row.name == name:
                row.revoked = True
        for suffix in (".key", ".pem"):
            (self.folder / f"{live.stem}{suffix}").unlink(missing_ok=True)
        self._save()
        return live

    def rotate(self, *, days: int = DEFAULT_CA_DAYS) -> int:
        """A new CA (generation n+1) that re-issues every live certificate with a fresh key; the old CA stays
        trusted (in ``bundle.pem``) until :meth:`retire`. Returns the new generation."""
        old = self.generation
        os.replace(self.folder / "ca.key", self.folder / f"ca-{old}.key")
        os.replace(self.folder / "ca.pem", self.folder / f"ca-{old}.pem")
        key, cert = _make_ca(self.name, old + 1, days)
        _write_key(self.folder / "ca.key", key)
        write_atomic(self.folder / "ca.pem", _pem(cert))
        self.generation = old + 1
        self.generations.append(self.generation)
        self._save()
        batch = []
        for row in [c for c in self.certs if not c.revoked]:
            valid = dt.datetime.fromisoformat(row.not_after) - dt.datetime.fromisoformat(row.not_before)
            batch.append((row.kind, row.name, row.hosts, max(1, valid.days)))
        if batch:
            self._issue_batch(batch, None, replace=False)
        return self.generation

    def retire(self) -> list[int]:
        """Stops trusting every CA generation but the current one (after a :meth:`rotate`, once every
        device holds its new certificate); returns the generations dropped."""
        dropped = [g for g in self.generations if g != self.generation]
        for g in dropped:
            for suffix in (".key", ".pem"):
                (self.folder / f"ca-{g}{suffix}").unlink(missing_ok=True)
        self.generations = [self.generation]
        for row in self.certs:
            if row.generation in dropped:
                row.revoked = True
        self._save()
        return dropped

    # ---- queries --------------------------------------------------------------------------------------
    def live(self, kind: str, name: str) -> IssuedCert:
        """The newest certificate of ``kind`` ("device"/"server") ``name`` that is not revoked."""
        for row in reversed(self.certs):
            if row.kind == kind and row.name == name and not row.revoked:
                return row
        raise CertificateError(f"no live {kind} certificate named {name!r} in {str(self.folder)!r}")

    def paths(self, kind: str, name: str) -> tuple[Path, Path]:
        """(certificate, key) files of the live certificate ``kind``-``name``."""
        stem = self.live(kind, name).stem
        return self.folder / f"{stem}.pem", self.folder / f"{stem}.key"

    @property
    def bundle(self) -> Path:
        """The trust bundle (every CA generation still trusted)."""
        return self.folder / "bundle.pem"

    @property
    def crl(self) -> Path:
        """The CRLs of every trusted CA generation."""
        return self.folder / "crl.pem"

    # ---- files ------------------------------------------------------------------------------------------
    def _ca(self, generation: int) -> tuple[Any, Any]:
        from cryptography.hazmat.primitives import serialization

        x509 = _crypto()
        stem = "ca" if generation == self.generation else f"ca-{generation}"
        key = serialization.load_pem_private_key((self.folder / f"{stem}.key").read_bytes(), password=None)
        cert = x509.load_pem_x509_certificate((self.folder / f"{stem}.pem").read_bytes())
        return key, cert

    def _save(self) -> None:
        _write_index(self.folder, {"name": self.name, "generation": self.generation, "generations": self.generations,
                                   "certs": [asdict(c) for c in self.certs]})
        self._write_trust()

    def _write_trust(self) -> None:
        bundle, crls = b"", b""
        for g in sorted(self.generations, reverse=True):
            key, cert = self._ca(g)
            bundle += _pem(cert)
            revoked = [c.serial for c in self.certs if c.revoked and c.generation == g]
            crls += _make_crl(key, cert, revoked)
        write_atomic(self.bundle, bundle)
        write_atomic(self.crl, crls)


def _write_index(folder: Path, data: dict[str, Any]) -> None:
    write_atomic(folder / INDEX, (json.dumps(data, indent=2) + "\n").encode())


def _pem(cert: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return bytes(cert.public_bytes(serialization.Encoding.PEM))


def _write_key(path: Path, key: Any, *, fsync: bool = True) -> None:
    from cryptography.hazmat.primitives import serialization

    write_atomic(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()), 0o600, fsync=fsync)


def _new_key() -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _make_ca(name: str, generation: int, days: int) -> tuple[Any, Any]:
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    x509 = _crypto()
    key = _new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} (generation {generation})")])
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(ski, critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
            .sign(key, hashes.SHA256()))
    return key, cert


def _make_leaf(kind: str, name: str, hosts: list[str], ca_key: Any, ca_cert: Any, days: int,
               valid_from: Optional[dt.datetime]) -> tuple[Any, Any]:
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    x509 = _crypto()
    key = _new_key()
    start = valid_from or (_now() - dt.timedelta(minutes=5))  # a little slack for clock skew
    usage = ExtendedKeyUsageOID.CLIENT_AUTH if kind == "device" else ExtendedKeyUsageOID.SERVER_AUTH
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
               .issuer_name(ca_cert.subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(start)
               .not_valid_after(start + dt.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                            crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                              critical=False))
    if hosts:
        names: list[Any] = []
        for h in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(h)))
            except ValueError:
                names.append(x509.DNSName(h))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def _make_crl(ca_key: Any, ca_cert: Any, serials: list[int]) -> bytes:
    from cryptography.hazmat.primitives import hashes, serialization

    x509 = _crypto()
    now = _now()
    builder = (x509.CertificateRevocationListBuilder().issuer_name(ca_cert.subject).last_update(now)
               .next_update(ca_cert.not_valid_after_utc)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                              critical=False)
               .add_extension(x509.CRLNumber(int(now.timestamp())), critical=False))
    for serial in serials:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build())
    return bytes(builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))


__all__ = ["DEFAULT_CA_DAYS", "DEFAULT_CERT_DAYS", "CertificateAuthority", "CertificateError", "IssuedCert",
           "write_atomic"]
