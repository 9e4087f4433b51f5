"""TLS 1.3 with mutual authentication between the C++ firmware edge node and the model server, on localhost.

The node is the real binary built with OpenSSL (``EDGERT_TLS``); the server is :class:`~edgert.transport.ModelServer`
with ``tls=`` (Python's :mod:`ssl`, TLS 1.3 only, a client certificate from the CA bundle required, its CN the
HELLO's device id); certificates come from the transport's CA (:mod:`edgert.transport.certs`, ``edgert keys``).
"""
from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from pathlib import Path
from typing import Optional

import numpy as np
import pytest

from conftest import wait_for
from edgert.transport import ModelServer
from test_edge_node import (
    DEVICE,
    KEY,
    MANIFEST,
    Node,
    _find_or_build_node,
    _in_sync,
    _sync_publish_sync,
    _update,
    _weights,
)

certs = pytest.importorskip("edgert.transport.certs", reason="needs the cryptography package (a core dependency)")
from edgert.transport.tls import TLSConfig  # noqa: E402


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


def _tls_server(folder: Path, name: str = "localhost", log: Optional[list[str]] = None,
                state_dir: Optional[Path] = None) -> ModelServer:
    """A TLS model server at version 1 (or restored from ``state_dir``) with the certificate ``server-<name>`` of
    the CA folder ``folder`` (its log lines appended to ``log``)."""
    return ModelServer(MANIFEST, {DEVICE: KEY}, _weights(), log=None if log is None else log.append,
                       state_dir=state_dir,
                       tls=TLSConfig.from_dir(folder, "server", name, crl=(folder / "crl.pem").exists())).start()


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
    server = _tls_server(pki["ca"], state_dir=tmp_path / "server")
    node = Node(node_binary, server.address[1], tmp_path, extra_args=_device_args(pki))  # checked: 127.0.0.1
    try:
        _sync_publish_sync(node, server, rng)
        assert "connected and authenticated (TLSv1.3 " in node.log_text()
        stats = server.stats()
        assert stats.authenticated == 1 and stats.tls_failed == 0 and stats.auth_failed == 0
    finally:
        node.stop()
        server.stop()

    # The same node by host name (SNI and the DNS SAN) continues from its snapshot over TLS, with the server
    # restored from its state (a server without it would be behind the node, which it refuses).
    server = _tls_server(pki["ca"], state_dir=tmp_path / "server")
    server.publish(_update(rng))
    node = Node(node_binary, server.address[1], tmp_path, extra_args=_device_args(pki, server_name="localhost"))
    try:
        assert wait_for(lambda: _in_sync(node, server), timeout=15.0), node.own_log()
        assert "TLSv1.3" in node.own_log() and "resumed from" in node.own_log()
    finally:
        node.stop()
        server.stop()


@pytest.mark.parametrize("case", ["wrong CA", "expired", "revoked", "no device certificate", "wrong host name"])
def test_refused_peer_never_reaches_the_protocol(node_binary: Path, pki: dict[str, Path], tmp_path: Path,
                                                 case: str) -> None:
    rng = np.random.default_rng(3)
    server = _tls_server(pki["ca"])
    node = Node(node_binary, server.address[1], tmp_path, extra_args=_device_args(pki))
    try:
        assert wait_for(lambda: _in_sync(node, server), timeout=15.0), node.log_text()
    finally:
        node.stop()
        server.stop()
    synced = (server.version, server.weights_bytes())
    server_log: list[str] = []

    if case == "wrong CA":  # a server certificate from a CA the node does not trust
        bad, args, expect = _tls_server(pki["other"]), _device_args(pki), "server certificate of 127.0.0.1 is refused"
    elif case == "expired":  # the right CA and name, but no longer valid
        bad, args, expect = _tls_server(pki["ca"], "expired"), _device_args(pki), "certificate has expired"
    elif case == "revoked":  # the right CA and name, but on the CRL the node was given
        bad, args, expect = _tls_server(pki["revoked"], "revoked"), _device_args(pki), "certificate revoked"
    elif case == "no device certificate":  # the server demands one; the node has none to present
        bad, args = _tls_server(pki["ca"], log=server_log), _device_args(pki, cert=False)
        expect = "it may require a device certificate"
    else:  # a certificate from the right CA, but not for this name
        bad, args = _tls_server(pki["ca"]), _device_args(pki, server_name="model-server.example")
        expect = "is refused: hostname mismatch"
    for _ in range(2):
        bad.publish(_update(rng))  # something the node would take if it got through
    node = Node(node_binary, bad.address[1], tmp_path, extra_args=args)
    try:
        assert wait_for(lambda: expect in node.own_log() and "retrying" in node.own_log(), timeout=15.0), \
            node.own_log()
        assert wait_for(lambda: bad.stats().tls_failed >= 1, timeout=5.0)
        assert node.weights() == synced  # resumed from its snapshot, untouched
        assert "connected and authenticated" not in node.own_log()
        stats = bad.stats()  # refused in TLS: no HELLO was read, nobody authenticated
        assert stats.authenticated == 0 and stats.auth_failed == 0, stats
        assert bad.devices.get(DEVICE) is None or bad.devices[DEVICE].acked_version == 0
        if case == "no device certificate":
            assert any("TLS handshake refused" in line and "certificate" in line for line in server_log), server_log
    finally:
        node.stop()
        bad.stop()


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
