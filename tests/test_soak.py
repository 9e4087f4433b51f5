"""The fault soak (bench/soak.py) in CI: the same code as the 5-minute run, for ~10 s of faults with a fixed seed,
and proof that its invariant checks fire when a device holds wrong weights or leaves the server's chain."""
from __future__ import annotations

import socket
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # bench/ is a top-level package of the checkout, not installed

from bench.soak import (  # noqa: E402
    ChainRecord,
    Invariants,
    SoakConfig,
    digest,
    run_soak,
    soak_faults,
    sparse_delta,
)
from edgert.transport import ModelServer  # noqa: E402
from edgert.transport.faults import FaultConfig, FaultProxy  # noqa: E402
from edgert.updates import Manifest, TensorSpec  # noqa: E402
from test_edge_node import _find_or_build_node  # noqa: E402

MANIFEST = Manifest(bytes(range(16)), (TensorSpec("w", "float32", (64, 64)), TensorSpec("b", "float32", (64,))))


@pytest.fixture
def chain_server():
    rng = np.random.default_rng(0)
    weights = {t.name: rng.standard_normal(t.shape).astype(np.float32) for t in MANIFEST.tensors}
    server = ModelServer(MANIFEST, {"d": bytes(32)}, weights)
    for _ in range(3):
        server.publish(sparse_delta(server.mirror, rng, 0.05))
    chain = ChainRecord(MANIFEST)
    chain.sync(server)
    yield server, chain
    server.stop()


def test_invariants_fire_on_wrong_weights_and_off_chain_versions(chain_server):
    server, chain = chain_server
    inv = Invariants(chain, server)
    good = server.weights_bytes()
    assert chain.latest == 4 and chain.hashes[4] == digest(good)
    assert inv.observe("d", 4, digest(good), "read") and not inv.violations
    corrupted = bytearray(good)
    corrupted[1234] ^= 0x10
    assert not inv.observe("d", 4, digest(bytes(corrupted)), "read")
    assert not inv.observe("d", 3, None, "log")  # went back from 4
    assert not inv.observe("e", 9, None, "log")  # never published
    assert len(inv.violations) == 3
    assert "hash to" in inv.violations[0] and "went back" in inv.violations[1] and "not on the server's chain" in \
        inv.violations[2]


def test_bit_flips_without_an_integrity_check_are_caught(chain_server):
    """A device that took the weights off the wire with no CRC or MAC (raw bytes through the flipping proxy)
    reports a hash the checker rejects."""
    server, chain = chain_server
    inv = Invariants(chain, server)
    payload = server.weights_bytes()
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.sendall(payload)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    cfg = FaultConfig(seed=5, flip=1.0, up=0.0, down_bytes=(0, len(payload) - 1), flips=(1, 1))
    try:
        with FaultProxy(listener.getsockname()[:2], cfg) as proxy, socket.create_connection(proxy.address) as s:
            got = bytearray()
            while len(got) < len(payload) and (chunk := s.recv(65536)):
                got += chunk
    finally:
        thread.join(timeout=5)
        listener.close()
    assert len(got) == len(payload) and got != payload
    assert not inv.observe("naive-device", chain.latest, digest(bytes(got)), "read")


def test_short_soak_holds_every_invariant():
    binary = _find_or_build_node()
    cfg = SoakConfig(duration_s=10.0, firmware=4, python=4, seed=19, faults=soak_faults(19, short=True),
                     progress_every_s=5.0, edge_node=str(binary))
    lines: list[str] = []
    summary = run_soak(cfg, progress=lines.append)
    report = "\n".join(lines + summary["violations"])
    assert summary["checks"] == {k: True for k in summary["checks"]}, (summary["checks"], summary["leak"], report)
    assert summary["ok"]
    # the run was not vacuous: faults struck, devices reconnected and kept applying versions
    assert sum(summary["faults"].values()) >= 10, summary["faults"]
    assert summary["flipped_bits"]["down"] + summary["flipped_bits"]["up"] > 0
    assert summary["reconnects"] > 0
    assert all(summary["applied"][d] > 0 for d in summary["devices"]["firmware"] + summary["devices"]["python"])
    assert summary["observations_checked"] > 100
    # protocol 3: no flipped HELLO and no device's claim moves the shared stream, so its versions never skip
    assert summary["server_version_jumps"] == [], summary["server_version_jumps"]
