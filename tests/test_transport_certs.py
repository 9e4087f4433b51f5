"""The transport's certificate authority (``edgert keys``): issue, revoke, rotate, retire, with real TLS 1.3
handshakes on localhost checking what each step means for a peer."""
from __future__ import annotations

import datetime as dt
import json
import socket
import ssl
import stat
import threading
from pathlib import Path
from typing import Optional

import pytest

pytest.importorskip("cryptography", reason="cryptography not installed (a core dependency)")

from edgert.cli import main  # noqa: E402
from edgert.transport.certs import CertificateAuthority, CertificateError  # noqa: E402
from edgert.transport.tls import TLSConfig, peer_device_id  # noqa: E402


def _handshake(server: TLSConfig, device: TLSConfig) -> tuple[Optional[str], Optional[str]]:
    """One TLS 1.3 handshake plus a byte each way on localhost: (the device id the server saw or its error,
    the client's error or None)."""
    listener = socket.create_server(("127.0.0.1", 0))
    seen: list[Optional[str]] = []

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with server.server_context().wrap_socket(conn, server_side=True) as tls:
                seen.append(peer_device_id(tls.getpeercert()))
                tls.sendall(tls.recv(1))
        except (ssl.SSLError, OSError) as exc:
            seen.append(f"error: {exc}")

    thread = threading.Thread(target=serve)
    thread.start()
    client_error = None
    try:
        with socket.create_connection(listener.getsockname()[:2], timeout=5) as raw:
            with device.client_context().wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                tls.sendall(b"x")
                if tls.recv(1) != b"x":
                    client_error = "closed"
    except (ssl.SSLError, OSError) as exc:
        client_error = str(exc)
    thread.join(5)
    listener.close()
    return seen[0] if seen else None, client_error


def test_ca_files_modes_and_a_mutual_handshake(tmp_path: Path) -> None:
    ca = CertificateAuthority.init(tmp_path / "ca")
    ca.issue_device("cam-1")
    ca.issue_server()
    for key in ("ca.key", "device-cam-1.key", "server-localhost.key"):
        assert stat.S_IMODE((ca.folder / key).stat().st_mode) == 0o600
    assert not list(ca.folder.glob(".*"))  # no temporary files left behind
    server = TLSConfig.from_dir(ca.folder, "server", "localhost")
    device = TLSConfig.from_dir(ca.folder, "device", "cam-1")
    assert _handshake(server, device) == ("cam-1", None)
    # a device certificate cannot serve, nor a server certificate act as a device
    swapped = TLSConfig(device.cert, device.key, device.ca)
    seen, err = _handshake(swapped, device)
    assert err is not None and seen is not None and seen.startswith("error")
    with pytest.raises(CertificateError, match="already holds a CA"):
        CertificateAuthority.init(ca.folder)
    with pytest.raises(ValueError, match="device id"):
        ca.issue_device("a/b")


def test_unknown_ca_expired_and_revoked_certificates_are_refused(tmp_path: Path) -> None:
    ca = CertificateAuthority.init(tmp_path / "ca")
    other = CertificateAuthority.init(tmp_path / "other")
    ca.issue_server()
    other.issue_device("cam-1")
    ca.issue_device("old", valid_from=dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=30), days=2)
    ca.issue_device("gone")
    server = TLSConfig.from_dir(ca.folder, "server", "localhost")
    stranger = TLSConfig(other.folder / "device-cam-1.pem", other.folder / "device-cam-1.key", ca.bundle)
    expired = TLSConfig.from_dir(ca.folder, "device", "old")
    gone = TLSConfig.from_dir(ca.folder, "device", "gone")
    assert _handshake(server, gone) == ("gone", None)
    revoked_cert, revoked_key = gone.cert.read_bytes(), gone.key.read_bytes()
    ca.revoke("device", "gone")
    assert not gone.cert.exists()
    gone.cert.write_bytes(revoked_cert)  # the device still holds its files
    gone.key.write_bytes(revoked_key)
    for peer, reason in ((stranger, "unable to get local issuer"), (expired, "expired"),
                         (gone, "revoked")):
        seen, err = _handshake(server, peer)
        assert seen is not None and seen.startswith("error") and reason in seen.lower(), (reason, seen)
        assert err is not None
    # and a device refuses a server from another CA
    other.issue_server()
    seen, err = _handshake(TLSConfig.from_dir(other.folder, "server", "localhost"),
                           TLSConfig.from_dir(ca.folder, "device", "old"))
    assert err is not None and "certificate verify failed" in err


def test_rotation_keeps_old_certificates_until_retired(tmp_path: Path) -> None:
    ca = CertificateAuthority.init(tmp_path / "ca")
    ca.issue_server()
    ca.issue_device("cam-1")
    old_dir = tmp_path / "old"
    old_dir.mkdir()
    for name in ("device-cam-1.pem", "device-cam-1.key", "server-localhost.pem", "server-localhost.key"):
        (old_dir / name).write_bytes((ca.folder / name).read_bytes())
    assert ca.rotate() == 2
    assert ca.live("device", "cam-1").generation == 2
    new_server = TLSConfig.from_dir(ca.folder, "server", "localhost")
    old_device = TLSConfig(old_dir / "device-cam-1.pem", old_dir / "device-cam-1.key", ca.bundle, ca.crl)
    new_device = TLSConfig.from_dir(ca.folder, "device", "cam-1")
    assert _handshake(new_server, old_device) == ("cam-1", None)  # the overlap
    assert _handshake(new_server, new_device) == ("cam-1", None)
    assert CertificateAuthority(ca.folder).retire() == [1]
    seen, _ = _handshake(TLSConfig.from_dir(ca.folder, "server", "localhost"), old_device)
    assert seen is not None and seen.startswith("error")
    assert _handshake(TLSConfig.from_dir(ca.folder, "server", "localhost"), new_device) == ("cam-1", None)


def test_keys_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = str(tmp_path / "ca")
    assert main(["keys", "init-ca", "--dir", folder]) == 0
    assert main(["keys", "issue-device", "--dir", folder, "cam-1", "cam-2"]) == 0
    assert main(["keys", "issue-server", "--dir", folder, "--host", "edge.example", "--host", "10.0.0.5"]) == 0
    assert main(["keys", "revoke", "--dir", folder, "device", "cam-2"]) == 0
    assert main(["keys", "rotate", "--dir", folder]) == 0
    capsys.readouterr()
    assert main(["keys", "list", "--dir", folder, "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing["generation"] == 2 and listing["trusted"] == [1, 2]
    live = sorted((c["kind"], c["name"], c["generation"]) for c in listing["certs"] if c["live"])
    assert live == [("device", "cam-1", 1), ("device", "cam-1", 2), ("server", "localhost", 1),
                    ("server", "localhost", 2)]
    assert [c["hosts"] for c in listing["certs"] if c["kind"] == "server"][-1] == ["edge.example", "10.0.0.5"]
    assert main(["keys", "revoke", "--dir", folder, "device", "cam-9"]) == 2
    assert "no live device certificate named 'cam-9'" in capsys.readouterr().err
    assert main(["keys", "list", "--dir", str(tmp_path / "none")]) == 2


def test_a_batch_issues_a_fleet_at_once_and_refuses_bad_batches_whole(tmp_path: Path) -> None:
    ca = CertificateAuthority.init(tmp_path / "ca")
    ca.issue_server()
    first = ca.issue_device("cam-1")
    old_serial = ca.live("device", "cam-1").serial
    paths = ca.issue_devices(["cam-1", "cam-2", "cam-3"])
    assert paths == [ca.folder / f"device-cam-{i}.pem" for i in (1, 2, 3)] and paths[0] == first
    assert not list(ca.folder.glob(".*"))
    assert all(stat.S_IMODE((ca.folder / f"device-cam-{i}.key").stat().st_mode) == 0o600 for i in (1, 2, 3))
    reread = CertificateAuthority(ca.folder)  # the index names the batch
    assert [c.name for c in reread.certs if c.kind == "device" and not c.revoked] == ["cam-1", "cam-2", "cam-3"]
    assert [c.serial for c in reread.certs if c.revoked] == [old_serial]  # the re-issued one is revoked
    server = TLSConfig.from_dir(ca.folder, "server", "localhost")
    assert _handshake(server, TLSConfig.from_dir(ca.folder, "device", "cam-3")) == ("cam-3", None)
    before = (ca.folder / "index.json").read_bytes()
    with pytest.raises(CertificateError, match="once per batch"):
        ca.issue_devices(["cam-4", "cam-4"])
    with pytest.raises(ValueError, match="device id"):
        ca.issue_devices(["cam-5", "a/b"])
    assert (ca.folder / "index.json").read_bytes() == before
    assert not (ca.folder / "device-cam-4.pem").exists() and not (ca.folder / "device-cam-5.pem").exists()
