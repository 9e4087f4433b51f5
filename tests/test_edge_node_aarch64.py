"""The aarch64 cross-built firmware edge node, run under qemu-user, against the Python model server on localhost.

A functional check of the cross-build, not a device measurement: the node that ``.ci/test`` cross-builds into
``build/ci-aarch64`` (the newest ``build/*/firmware/edgert_edge_node`` that is an aarch64 ELF file, or
``EDGERT_EDGE_NODE_AARCH64``) runs through ``cmake/run-aarch64``, completes a TLS 1.3 handshake with mutual
authentication against :class:`~edgert.transport.ModelServer` and applies release-signed packets, checked
against its pinned root key, with the arm64 OpenSSL (Debian ``libssl-dev:arm64``) inside qemu.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import wait_for
from edgert.transport import ModelServer
from test_edge_node import DEVICE, KEY, MANIFEST, ROOT, Node, _in_sync, _update, _weights

certs = pytest.importorskip("edgert.transport.certs", reason="needs the cryptography package (a core dependency)")
from edgert.transport.tls import TLSConfig  # noqa: E402
from edgert.updates.signing import Signer, SigningKey, decode_trust_state, delegate  # noqa: E402

RUN_AARCH64 = ROOT / "cmake" / "run-aarch64"
EM_AARCH64 = 183  # e_machine of an aarch64 ELF file


def _is_aarch64_elf(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(20)
    return head[:4] == b"\x7fELF" and int.from_bytes(head[18:20], "little") == EM_AARCH64


@pytest.fixture(scope="module")
def aarch64_node() -> Path:
    """The cross-built node, checked to be aarch64 and built with TLS (skips saying why when there is none)."""
    explicit = os.environ.get("EDGERT_EDGE_NODE_AARCH64")
    if explicit:
        binary = Path(explicit)
        if not (binary.is_file() and _is_aarch64_elf(binary)):
            pytest.fail(f"EDGERT_EDGE_NODE_AARCH64={explicit} is not an aarch64 executable")
    else:
        found = [p for p in (ROOT / "build").glob("*/firmware/edgert_edge_node") if _is_aarch64_elf(p)]
        if not found:
            pytest.skip("no aarch64 edgert_edge_node: the cross-build makes one (.ci/test, cmake --preset aarch64)")
        binary = max(found, key=lambda p: p.stat().st_mtime)
    if shutil.which("qemu-aarch64") is None:
        pytest.skip("qemu-aarch64 not installed (Debian qemu-user)")
    usage = subprocess.run([str(RUN_AARCH64), str(binary)], capture_output=True, text=True, timeout=60).stderr
    assert "usage:" in usage, f"{binary} does not start under qemu: {usage}"
    if "has no TLS" in usage:
        pytest.skip(f"{binary} was built without TLS (no arm64 OpenSSL: .ci/setup installs libssl-dev:arm64)")
    return binary


def test_aarch64_node_under_qemu_takes_signed_updates_over_tls(aarch64_node: Path, tmp_path: Path) -> None:
    ca = certs.CertificateAuthority.init(tmp_path / "ca")
    ca.issue_server("localhost", hosts=("localhost", "127.0.0.1"))
    ca.issue_device(DEVICE)
    root, release = SigningKey(b"\x21" * 32), SigningKey(b"\x22" * 32)
    (tmp_path / "root.pub").write_bytes(root.public)
    signer = Signer(release, delegate(root, release.public, 4, int(time.time()) + 3600))
    folder = tmp_path / "ca"
    args = ["--tls-ca", str(folder / "bundle.pem"), "--tls-crl", str(folder / "crl.pem"),
            "--tls-cert", str(folder / f"device-{DEVICE}.pem"), "--tls-key", str(folder / f"device-{DEVICE}.key"),
            "--root-key", str(tmp_path / "root.pub")]
    (tmp_path / "node").mkdir()
    tls = TLSConfig.from_dir(folder, "server", "localhost")
    with ModelServer(MANIFEST, {DEVICE: KEY}, _weights(), signer=signer, tls=tls) as server:
        node = Node(aarch64_node, server.address[1], tmp_path / "node", extra_args=args, runner=[str(RUN_AARCH64)])
        try:
            assert wait_for(lambda: _in_sync(node, server), timeout=60.0), node.log_text()  # version 1
            server.publish(_update(np.random.default_rng(5)))  # version 2: a signed sparse update
            assert wait_for(lambda: _in_sync(node, server), timeout=60.0), node.log_text()
            assert wait_for(lambda: server.devices[DEVICE].acked_version == server.version == 2, timeout=30.0)
            assert "connected and authenticated (TLSv1.3 " in node.own_log()
            stats = server.stats()
            assert stats.authenticated == 1 and stats.tls_failed == 0 and stats.auth_failed == 0
        finally:
            node.stop()
    # The signatures were checked against the pinned root (libedgert's trust, saved by the node): the delegation's
    # release version 4 became the floor.
    saved = decode_trust_state((tmp_path / "node" / "state" / "trust.bin").read_bytes())
    assert (saved.root_key, saved.root_version, saved.min_release_version) == (root.public, 0, 4)
