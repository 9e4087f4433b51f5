"""TLS 1.3 with mutual authentication between the C++ firmware edge node and a model server, on localhost.

The node is the real binary built with OpenSSL (``EDGERT_TLS``); certificates come from the transport's CA
(:mod:`edgert.transport.certs`). The server end is Python's :mod:`ssl` (TLS 1.3 only, a client certificate
from the CA bundle required, :class:`edgert.transport.tls.TLSConfig`) in front of a plain
:class:`~edgert.transport.ModelServer`: a TLS terminator that relays the decrypted stream, so the edgert
handshake and every frame still travel inside TLS from the node's point of view.
"""
from __future__ import annotations

import datetime as dt
import select
import shutil
import socket
import ssl
import subprocess
import threading
from pathlib import Path
from typing import Optional

import numpy as np
import pytest

from conftest import wait_for
from edgert.transport import ModelServer
from test_edge_node import DEVICE, KEY, MANIFEST, Node, _find_or_build_node, _in_sync, _update, _weights

certs = pytest.importorskip("edgert.transport.certs", reason="needs the cryptography package (extra [tls])")
from edgert.transport.tls import TLSConfig, peer_device_id  # noqa: E402


class TLSTerminator:
    """A TLS 1.3 server socket (``ssl``, mutual authentication) relaying each connection to a plain server.

    ``refused`` collects the handshake errors of connections it turned away (those never reach the backend);
    ``peers`` the device ids (certificate CN) of those it accepted.
    """

    def __init__(self, context: ssl.SSLContext, backend: tuple[str, int]) -> None:
        self.context = context
        self.backend = backend
        self.refused: list[str] = []
        self.peers: list[Optional[str]] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self._stopping = threading.Event()
        self._threads = [threading.Thread(target=self._accept_loop, daemon=True)]
        self._threads[0].start()

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                raw, _ = self._listener.accept()
            except (socket.timeout, TimeoutError):
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._relay, args=(raw,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _relay(self, raw: socket.socket) -> None:
        raw.settimeout(5.0)
        try:
            tls = self.context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            self.refused.append(str(exc))
            raw.close()
            return
        self.peers.append(peer_device_id(tls.getpeercert()))
        plain = socket.create_connection(self.backend)
        try:
            while not self._stopping.is_set():
                ready = tls.pending() > 0 or bool(select.select([tls, plain], [], [], 0.2)[0])
                if not ready:
                    continue
                if tls.pending() > 0 or select.select([tls], [], [], 0)[0]:
                    data = tls.recv(1 << 16)
                    if not data:
                        break
                    plain.sendall(data)
                if select.select([plain], [], [], 0)[0]:
                    data = plain.recv(1 << 16)
                    if not data:
                        break
                    tls.sendall(data)
        except (ssl.SSLError, OSError):
            pass
        finally:
            plain.close()
            tls.close()

    def stop(self) -> None:
        self._stopping.set()
        self._listener.close()
        for t in self._threads:
            t.join(timeout=5)


@pytest.fixture(scope="module")
def node_binary() -> Path:
    binary = _find_or_build_node()
    usage = subprocess.run([str(binary)], capture_output=True, text=True).stderr
    if "--tls-ca" not in usage or "has no TLS" in usage:
        pytest.skip("this edgert_edge_node was built without TLS (EDGERT_TLS=OFF or no OpenSSL 3)")
    return binary


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The fleet CA (server 'localhost' for localhost and 127.0.0.1, device DEVICE; servers 'expired', whose
    certificate ran out yesterday, and 'revoked', on the CRL, with its files kept in 'revoked/') and a second,
    unrelated CA."""
    root = tmp_path_factory.mktemp("pki")
    hosts = ("localhost", "127.0.0.1")
    ca = certs.CertificateAuthority.init(root / "ca")
    ca.issue_server("localhost", hosts=hosts)
    ca.issue_device(DEVICE)
    ca.issue_server("expired", hosts=hosts, valid_from=dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=3),
                    days=2)
    ca.issue_server("revoked", hosts=hosts)
    (root / "revoked").mkdir()
    for suffix in (".pem", ".key"):
        shutil.copy(root / "ca" / f"server-revoked{suffix}", root / "revoked" / f"server-revoked{suffix}")
    shutil.copy(root / "ca" / "bundle.pem", root / "revoked" / "bundle.pem")
    ca.revoke("server", "revoked")
    other = certs.CertificateAuthority.init(root / "other", name="some other CA")
    other.issue_server("localhost", hosts=hosts)
    return {"ca": root / "ca", "other": root / "other", "revoked": root / "revoked"}


def _server_context(folder: Path, name: str = "localhost") -> ssl.SSLContext:
    return TLSConfig.from_dir(folder, "server", name, crl=False).server_context()


def _device_args(pki: dict[str, Path], *, cert: bool = True, server_name: Optional[str] = None) -> list[str]:
    ca = pki["ca"]
    args = ["--tls-ca", str(ca / "bundle.pem"), "--tls-crl", str(ca / "crl.pem")]
    if cert:
        args += ["--tls-cert", str(ca / f"device-{DEVICE}.pem"), "--tls-key", str(ca / f"device-{DEVICE}.key")]
    if server_name is not None:
        args += ["--tls-server-name", server_name]
    return args


def test_update_delivered_and_applied_over_tls(node_binary: Path, pki: dict[str, Path], tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    server = ModelServer(MANIFEST, {DEVICE: KEY}, _weights()).start()
    front = TLSTerminator(_server_context(pki["ca"]), server.address)
    node = Node(node_binary, front.port, tmp_path, extra_args=_device_args(pki))  # the name checked: 127.0.0.1
    try:
        assert wait_for(lambda: _in_sync(node, server), timeout=15.0), node.log_text()
        for _ in range(3):
            server.publish(_update(rng))
        assert wait_for(lambda: _in_sync(node, server), timeout=15.0), node.log_text()
        assert wait_for(lambda: server.devices[DEVICE].acked_version == server.version, timeout=15.0)
        assert "connected and authenticated (TLSv1.3 " in node.log_text()
        assert front.peers == [DEVICE] and front.refused == []  # the node presented its own certificate
    finally:
        node.stop()
        front.stop()
        server.stop()

    # The same node by host name (SNI and the DNS SAN) continues from its snapshot over TLS.
    server = ModelServer(MANIFEST, {DEVICE: KEY}, _weights()).start()
    front = TLSTerminator(_server_context(pki["ca"]), server.address)
    node = Node(node_binary, front.port, tmp_path, extra_args=_device_args(pki, server_name="localhost"))
    try:
        assert wait_for(lambda: _in_sync(node, server), timeout=15.0), node.own_log()
        assert "TLSv1.3" in node.own_log()
    finally:
        node.stop()
        front.stop()
        server.stop()


@pytest.mark.parametrize("case", ["wrong CA", "expired", "revoked", "no device certificate", "wrong host name"])
def test_refused_peer_never_reaches_the_protocol(node_binary: Path, pki: dict[str, Path], tmp_path: Path,
                                                 case: str) -> None:
    rng = np.random.default_rng(3)
    server = ModelServer(MANIFEST, {DEVICE: KEY}, _weights()).start()
    good = TLSTerminator(_server_context(pki["ca"]), server.address)
    node = Node(node_binary, good.port, tmp_path, extra_args=_device_args(pki))
    try:
        assert wait_for(lambda: _in_sync(node, server), timeout=15.0), node.log_text()
        node.stop()
        synced_version, synced_weights = server.version, server.weights_bytes()
        server.publish(_update(rng))  # something the node would take if it got through

        if case == "wrong CA":  # a server certificate from a CA the node does not trust
            front = TLSTerminator(_server_context(pki["other"]), server.address)
            args, expect = _device_args(pki), "server certificate of 127.0.0.1 is refused"
        elif case == "expired":  # the right CA and name, but no longer valid
            front = TLSTerminator(_server_context(pki["ca"], "expired"), server.address)
            args, expect = _device_args(pki), "is refused: certificate has expired"
        elif case == "revoked":  # the right CA and name, but on the CRL the node was given
            front = TLSTerminator(_server_context(pki["revoked"], "revoked"), server.address)
            args, expect = _device_args(pki), "is refused: certificate revoked"
        elif case == "no device certificate":  # the server demands one; the node has none to present
            front = TLSTerminator(_server_context(pki["ca"]), server.address)
            args, expect = _device_args(pki, cert=False), "certificate required"
        else:  # a certificate from the right CA, but not for this name
            front = TLSTerminator(_server_context(pki["ca"]), server.address)
            args, expect = _device_args(pki, server_name="model-server.example"), "is refused: hostname mismatch"
        node = Node(node_binary, front.port, tmp_path, extra_args=args)
        try:
            assert wait_for(lambda: expect in node.own_log() and "retrying" in node.own_log(), timeout=15.0), \
                node.own_log()
            assert node.weights() == (synced_version, synced_weights)  # resumed from its snapshot, untouched
            assert "connected and authenticated" not in node.own_log()
            assert front.peers == []  # no connection got past TLS, so the model server read no frame
            if case == "no device certificate":
                assert wait_for(lambda: len(front.refused) > 0, timeout=5.0)
                assert "certificate" in front.refused[0]
        finally:
            front.stop()
    finally:
        node.stop()
        good.stop()
        server.stop()


def test_tls_files_that_do_not_load_stop_the_node(node_binary: Path, pki: dict[str, Path], tmp_path: Path) -> None:
    ca = pki["ca"]
    bad = [
        (["--tls-ca", str(tmp_path / "missing.pem")], "TLS CA bundle"),
        (["--tls-ca", str(ca / "bundle.pem"), "--tls-cert", str(ca / f"device-{DEVICE}.pem"), "--tls-key",
          str(ca / "server-localhost.key")], "does not match the certificate"),
        (["--tls-ca", str(ca / "bundle.pem"), "--tls-cert", str(ca / f"device-{DEVICE}.pem")],
         "go together"),
    ]
    (tmp_path / "key").write_bytes(KEY)
    for args, expect in bad:
        out = subprocess.run([str(node_binary), "--server", "127.0.0.1:9", "--device-id", DEVICE, "--key-file",
                              str(tmp_path / "key"), *args], capture_output=True, text=True, timeout=10)
        assert out.returncode == 2 and expect in out.stderr, out.stderr
