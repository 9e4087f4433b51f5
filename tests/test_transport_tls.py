"""TLS 1.3 with mutual authentication between ModelServer and EdgeClient on localhost: an update reaches a
device, and peers with a certificate from another CA, for another device, expired, or none at all are refused
before any frame is read."""
from __future__ import annotations

import datetime as dt
import socket
import ssl
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("cryptography", reason="cryptography not installed (a core dependency)")

from conftest import wait_for  # noqa: E402
from edgert.transport import DeviceStatus, EdgeClient, ModelServer, ServerStats  # noqa: E402
from edgert.transport.certs import CertificateAuthority  # noqa: E402
from edgert.transport.frames import FrameType, Hello, encode_frame  # noqa: E402
from edgert.transport.tls import TLSConfig  # noqa: E402
from edgert.updates import Manifest, TensorSpec  # noqa: E402

MANIFEST = Manifest(bytes(range(16)), (TensorSpec("w", "float32", (64, 32)),))
KEYS = {"cam-1": b"k" * 32, "cam-2": b"q" * 32, "cam-old": b"o" * 32}


def _weights(seed: int = 0) -> dict[str, np.ndarray]:
    return {"w": np.random.default_rng(seed).standard_normal((64, 32)).astype(np.float32)}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, TLSConfig]:
    root = tmp_path_factory.mktemp("pki")
    ca = CertificateAuthority.init(root / "ca")
    ca.issue_server()
    ca.issue_device("cam-1")
    ca.issue_device("cam-2")
    ca.issue_device("cam-old", valid_from=dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=10), days=1)
    ca.issue_device("cam-9")  # a certificate from our CA for a device the server has no key for
    other = CertificateAuthority.init(root / "other")
    other.issue_device("cam-1")
    other.issue_server()
    return {
        "server": TLSConfig.from_dir(ca.folder, "server", "localhost"),
        "cam-1": TLSConfig.from_dir(ca.folder, "device", "cam-1"),
        "cam-2": TLSConfig.from_dir(ca.folder, "device", "cam-2"),
        "cam-old": TLSConfig.from_dir(ca.folder, "device", "cam-old"),
        "cam-9": TLSConfig.from_dir(ca.folder, "device", "cam-9"),
        "foreign": TLSConfig(other.folder / "device-cam-1.pem", other.folder / "device-cam-1.key", ca.bundle),
        "foreign-server": TLSConfig.from_dir(other.folder, "server", "localhost"),
    }


def test_an_update_reaches_a_device_over_mutual_tls(pki: dict[str, TLSConfig]) -> None:
    rng = np.random.default_rng(1)
    with ModelServer(MANIFEST, KEYS, _weights(), tls=pki["server"]) as server:
        client = EdgeClient(server.address, "cam-1", KEYS["cam-1"], tls=pki["cam-1"]).start()
        try:
            assert wait_for(lambda: client.version == server.version == 1, 10)
            idx = np.sort(rng.choice(64 * 32, 100, replace=False))
            server.publish({"w": (idx, rng.standard_normal(100).astype(np.float32))})
            assert wait_for(lambda: client.version == 2 and server.devices["cam-1"].acked_version == 2, 10)
            assert bytes(client.slot.weights()[0]) == server.weights_bytes()
            assert server.stats().tls_failed == 0 and server.stats().authenticated == 1
        finally:
            client.stop()


def _refused(server_tls: TLSConfig, device: str, client_tls: TLSConfig,
             counter: str) -> tuple[ServerStats, dict[str, DeviceStatus]]:
    """Runs ``device`` with ``client_tls`` against a server with ``server_tls`` until the server counts one refusal
    in ``counter``; checks the device never got through; returns the server's counters and device statuses."""
    with ModelServer(MANIFEST, KEYS, _weights(), tls=server_tls) as server:
        client = EdgeClient(server.address, device, KEYS[device], tls=client_tls).start()
        try:
            assert wait_for(lambda: getattr(server.stats(), counter) >= 1, 10)
            time.sleep(0.2)
            assert client.slot is None and client.connections == 0
            return server.stats(), dict(server.devices)
        finally:
            client.stop()


@pytest.mark.parametrize("device,cert,why", [
    ("cam-1", "foreign", "a certificate from another CA"),
    ("cam-old", "cam-old", "an expired certificate"),
    ("cam-1", "cam-9", "a certificate for a device without a key"),
])
def test_bad_certificates_are_refused_before_any_frame(pki: dict[str, TLSConfig], device: str, cert: str,
                                                       why: str) -> None:
    stats, devices = _refused(pki["server"], device, pki[cert], "tls_failed")
    assert stats.authenticated == 0 and stats.auth_failed == 0 and device not in devices, why


def test_a_certificate_for_another_device_is_refused_at_hello(pki: dict[str, TLSConfig]) -> None:
    """cam-2's valid certificate cannot authenticate as cam-1, even with cam-1's HMAC key."""
    stats, devices = _refused(pki["server"], "cam-1", pki["cam-2"], "auth_failed")
    assert stats.authenticated == 0 and "cam-1" not in devices


def _raw_tls(address: tuple[str, int], ctx: ssl.SSLContext) -> bytes:
    """Connects with ``ctx``, sends a valid HELLO and returns what the server answers before closing."""
    hello = Hello("cam-1", bytes(16), 0, bytes(16), 3)
    with socket.create_connection(address, timeout=5) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                tls.sendall(encode_frame(FrameType.HELLO, hello.encode()))
                return tls.recv(4096)
        except (ssl.SSLError, OSError) as exc:
            return repr(exc).encode()


def test_no_client_certificate_and_plain_tcp_are_refused(pki: dict[str, TLSConfig]) -> None:
    with ModelServer(MANIFEST, KEYS, _weights(), tls=pki["server"]) as server:
        anonymous = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        anonymous.load_verify_locations(str(pki["server"].ca))
        answer = _raw_tls(server.address, anonymous)
        assert b"certificate required" in answer.lower() or answer == b"", answer
        assert wait_for(lambda: server.stats().tls_failed == 1, 5)
        old = pki["cam-1"].client_context()
        old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_2
        assert b"CHALLENGE" not in _raw_tls(server.address, old)
        assert wait_for(lambda: server.stats().tls_failed == 2, 5)
        # a plain-TCP device (the HMAC handshake alone) gets no CHALLENGE from a TLS server
        with socket.create_connection(server.address, timeout=5) as sock:
            sock.sendall(encode_frame(FrameType.HELLO, Hello("cam-1", bytes(16), 0, bytes(16), 3).encode()))
            try:
                data = sock.recv(4096)
            except ConnectionResetError:
                data = b""
            assert data[:1] != bytes([FrameType.CHALLENGE])
        assert server.stats().authenticated == 0


def test_the_device_refuses_a_server_from_another_ca(pki: dict[str, TLSConfig]) -> None:
    stats, _ = _refused(pki["foreign-server"], "cam-1", pki["cam-1"], "tls_failed")
    assert stats.authenticated == 0


def test_tls_config_from_files_and_errors(pki: dict[str, TLSConfig], tmp_path: Path) -> None:
    from edgert.transport.tls import TLSConfigError

    with pytest.raises(TLSConfigError, match="no such file"):
        TLSConfig(tmp_path / "x.pem", tmp_path / "x.key", tmp_path / "ca.pem").server_context()
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    with pytest.raises(TLSConfigError, match="bad.pem"):
        TLSConfig(bad, pki["cam-1"].key, pki["cam-1"].ca).client_context()


def test_cli_flags_build_the_settings(pki: dict[str, TLSConfig], tmp_path: Path) -> None:
    import argparse

    from edgert.transport.tls import TLSConfigError, add_tls_arguments

    parser = argparse.ArgumentParser()
    add_tls_arguments(parser, server=True)
    folder = pki["server"].cert.parent
    assert TLSConfig.from_args(parser.parse_args([]), "server", "localhost") is None
    assert TLSConfig.from_args(parser.parse_args(["--tls-dir", str(folder)]), "device", "cam-1") == pki["cam-1"]
    explicit = parser.parse_args(["--tls-cert", "c.pem", "--tls-key", "k.pem", "--tls-ca", "ca.pem"])
    assert TLSConfig.from_args(explicit, "device", "x") == TLSConfig(Path("c.pem"), Path("k.pem"), Path("ca.pem"))
    with pytest.raises(TLSConfigError, match="together"):
        TLSConfig.from_args(parser.parse_args(["--tls-cert", "c.pem"]), "device", "x")


def _tls_handshake_to_challenge(address: tuple[str, int], ctx: ssl.SSLContext, device: str,
                                session: "ssl.SSLSession | None") -> tuple[ssl.SSLSession, bool, int]:
    """Connects with ``session`` offered for resumption, sends HELLO; (the session, whether it was resumed, the
    type of the server's answer)."""
    from edgert.transport.frames import read_frame

    with socket.create_connection(address, timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1", session=session) as sock:
            sock.sendall(encode_frame(FrameType.HELLO, Hello(device, MANIFEST.model_id, 0, bytes(16), 3).encode()))
            frame_type, _ = read_frame(sock, 10)  # the ticket, sent after the handshake, was read before it
            return sock.session, sock.session_reused, int(frame_type)


def test_session_tickets_let_a_device_resume_and_keep_the_certificate_check(pki: dict[str, TLSConfig]) -> None:
    """Servers issue no tickets by default (a resumed session skips the CRL); with ``session_tickets`` a device
    resumes, and the server still holds its certificate's device id for the HELLO check."""
    device = pki["cam-1"].client_context()  # a session resumes only with the context it came from
    with ModelServer(MANIFEST, KEYS, _weights(), tls=pki["server"]) as server:
        session, _, answer = _tls_handshake_to_challenge(server.address, device, "cam-1", None)
        assert answer == FrameType.CHALLENGE and not session.has_ticket
    tickets = TLSConfig(pki["server"].cert, pki["server"].key, pki["server"].ca, pki["server"].crl, session_tickets=1)
    with ModelServer(MANIFEST, KEYS, _weights(), tls=tickets) as server:
        session, reused, answer = _tls_handshake_to_challenge(server.address, device, "cam-1", None)
        assert answer == FrameType.CHALLENGE and session.has_ticket and not reused
        _, reused, answer = _tls_handshake_to_challenge(server.address, device, "cam-1", session)
        assert reused and answer == FrameType.CHALLENGE
        _, reused, answer = _tls_handshake_to_challenge(server.address, device, "cam-2", session)
        assert reused and answer == FrameType.ERROR  # the resumed certificate is still cam-1's
        assert server.stats().auth_failed == 1 and server.stats().tls_failed == 0
    with pytest.raises(ValueError, match="session_tickets"):
        TLSConfig(pki["server"].cert, pki["server"].key, pki["server"].ca, session_tickets=-1).server_context()


def test_a_trickled_tls_record_before_auth_pauses_reading(pki: dict[str, TLSConfig]) -> None:
    """The slowloris defence also covers a HELLO whose TLS record arrives in parts: reading pauses after the
    first part, and the whole HELLO is answered once the rest has arrived."""
    from edgert.transport.frames import HEADER

    with ModelServer(MANIFEST, KEYS, _weights(), tls=pki["server"], preauth_read_interval=0.3) as server:
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = pki["cam-1"].client_context().wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
        with socket.create_connection(server.address, timeout=10) as raw:
            while True:  # the TLS handshake by hand, so that the record below can be cut
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    raw.sendall(outgoing.read())
                    incoming.write(raw.recv(65536))
            reads = server.stats().preauth_reads
            raw.sendall(outgoing.read())  # the client's last flight, read on its own
            assert wait_for(lambda: server.stats().preauth_reads > reads, 5)
            tls.write(encode_frame(FrameType.HELLO, Hello("cam-1", MANIFEST.model_id, 0, bytes(16), 3).encode()))
            record = outgoing.read()
            raw.sendall(record[:20])
            assert wait_for(lambda: server.stats().preauth_throttled == 1, 5)
            raw.sendall(record[20:])
            plain = b""
            while len(plain) < HEADER.size:
                try:
                    plain += tls.read(65536)
                except ssl.SSLWantReadError:
                    incoming.write(raw.recv(65536))
            assert HEADER.unpack(plain[:HEADER.size])[0] == FrameType.CHALLENGE
