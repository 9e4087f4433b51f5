"""The C++ firmware edge node (firmware/edge_node) against the Python model server on localhost.

The node is the real binary: it connects over TCP, authenticates, applies packets
to its slot, saves snapshots and serves weights on a Unix socket, which these
tests read to compare bytes with the server's device mirror.
"""
from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import pytest

from conftest import wait_for
from edgert.transport import ModelServer
from edgert.transport.frames import FrameType, encode_frame
from edgert.updates import Manifest, TensorSpec, encode_update

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = Manifest(bytes(range(100, 116)), (
    TensorSpec("conv.weight", "float32", (32, 16, 3, 3)),
    TensorSpec("conv.bias", "float32", (32,)),
    TensorSpec("fc.weight", "float16", (10, 512)),
))
KEY = bytes(range(7, 39))
DEVICE = "drone-1"


def _find_or_build_node() -> Path:
    explicit = os.environ.get("EDGERT_EDGE_NODE")
    if explicit:
        return Path(explicit)
    for build in sorted((ROOT / "build").glob("*/firmware/edgert_edge_node")):
        if os.access(build, os.X_OK) and "aarch64" not in str(build):
            return build
    if shutil.which("cmake") is None or shutil.which("c++") is None:
        pytest.skip("no edge node binary and no C++ toolchain to build one")
    out = ROOT / "build" / "pytest-firmware"
    subprocess.run(["cmake", "-S", str(ROOT), "-B", str(out), "-DEDGERT_CUDA=OFF", "-DEDGERT_TESTS=OFF",
                    "-DEDGERT_PYTHON=OFF"], check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(out), "--target", "edgert_edge_node", "-j2"], check=True,
                   capture_output=True)
    return out / "firmware" / "edgert_edge_node"


@pytest.fixture(scope="module")
def node_binary() -> Path:
    return _find_or_build_node()


class Node:
    """One edgert_edge_node process with its state dir and local socket; ``runner`` is a command that runs the
    binary (``cmake/run-aarch64`` for the cross-built one), empty to run it directly."""

    def __init__(self, binary: Path, port: int, workdir: Path, key: bytes = KEY,
                 extra_args: Sequence[str] = (), runner: Sequence[str] = ()) -> None:
        self.workdir = workdir
        (workdir / "key").write_bytes(key)
        self.sock_path = str(workdir / "weights.sock")
        self.log = open(workdir / "node.log", "ab")
        self.log_start = self.log.tell()  # where this process's lines begin (the log survives restarts)
        self.proc = subprocess.Popen(
            [*runner, str(binary), "--server", f"127.0.0.1:{port}", "--device-id", DEVICE,
             "--key-file", str(workdir / "key"), "--state-dir", str(workdir / "state"), "--serve", self.sock_path,
             *extra_args],
            stdout=self.log, stderr=subprocess.STDOUT)

    def request(self, op: bytes) -> bytes:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(self.sock_path)
            s.sendall(op)
            head = _recv(s, 8 if op in (b"V", b"M") else 16)
            if op == b"V":
                return head
            size = struct.unpack_from("<Q", head, 0 if op == b"M" else 8)[0]
            return head + _recv(s, size)

    def version(self) -> int:
        try:
            return struct.unpack("<Q", self.request(b"V"))[0]
        except OSError:
            return -1

    def weights(self) -> tuple[int, bytes]:
        reply = self.request(b"W")
        version, size = struct.unpack_from("<QQ", reply)
        return version, reply[16:16 + size]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()

    def log_text(self) -> str:
        return (self.workdir / "node.log").read_text(errors="replace")

    def own_log(self) -> str:
        """The lines this process wrote (not those of earlier runs in the same folder)."""
        return (self.workdir / "node.log").read_bytes()[self.log_start:].decode(errors="replace")


def _recv(s: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise OSError("closed")
        data += chunk
    return bytes(data)


def _weights(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {t.name: rng.standard_normal(t.shape).astype(t.np_dtype) for t in MANIFEST.tensors}


def _update(rng) -> dict:
    out = {}
    for t in MANIFEST.tensors:
        idx = np.flatnonzero(rng.random(t.numel) < 0.05)
        out[t.name] = (idx, (0.01 * rng.standard_normal(idx.size)).astype(np.float32))
    return out


def _in_sync(node: Node, server: ModelServer) -> bool:
    if node.version() != server.version:
        return False
    version, weights = node.weights()
    return version == server.version and weights == server.weights_bytes()


def _sync_publish_sync(node: Node, server: ModelServer, rng, updates: int = 3) -> None:
    """Asserts the node syncs, takes ``updates`` published updates and acknowledges the last."""
    assert wait_for(lambda: _in_sync(node, server), timeout=15.0), node.log_text()
    for _ in range(updates):
        server.publish(_update(rng))
    assert wait_for(lambda: _in_sync(node, server), timeout=15.0), node.log_text()
    assert wait_for(lambda: server.devices[DEVICE].acked_version == server.version, timeout=15.0)


@pytest.fixture
def workdir():
    with tempfile.TemporaryDirectory(prefix="edgert-node-") as d:
        yield Path(d)


def test_node_converges_and_survives_server_restart_and_dropped_connection(node_binary, workdir):
    rng = np.random.default_rng(0)
    state = workdir / "server-state"
    server = ModelServer(MANIFEST, {DEVICE: KEY}, _weights(), state_dir=state).start()
    port = server.address[1]
    node = Node(node_binary, port, workdir)
    try:
        _sync_publish_sync(node, server, rng)

        # Dropped connection mid-packet: half a PACKET frame, then the socket closes.
        half = encode_frame(FrameType.PACKET, encode_update(MANIFEST, server.version, server.version + 1,
                                                           _update(rng)).data)
        assert server.inject(DEVICE, half[: len(half) // 2], close=True)
        version_before, weights_before = node.weights()
        assert version_before == server.version and weights_before == server.weights_bytes()

        # The server is killed (connections reset), restarted from its state dir on the same port.
        server.stop(abrupt=True)
        server = ModelServer(MANIFEST, {DEVICE: KEY}, state_dir=state, port=port).start()
        assert server.version == version_before
        for _ in range(2):
            server.publish(_update(rng))
        assert wait_for(lambda: _in_sync(node, server), timeout=15.0), node.log_text()
        assert "disconnected; retrying" in node.log_text()
    finally:
        node.stop()
        server.stop()


def test_version_gap_bad_packet_and_node_restart(node_binary, workdir):
    rng = np.random.default_rng(1)
    server = ModelServer(MANIFEST, {DEVICE: KEY}, _weights(), history=2).start()
    node = Node(node_binary, server.address[1], workdir)
    try:
        assert wait_for(lambda: _in_sync(node, server), timeout=15.0), node.log_text()
        node.stop()
        # While the node is down the server moves further than its 2-packet history reaches.
        for _ in range(5):
            server.publish(_update(rng))
        node = Node(node_binary, server.address[1], workdir)
        assert wait_for(lambda: _in_sync(node, server), timeout=15.0), node.log_text()
        assert "resumed from" in node.log_text()  # it restarted from its own snapshot, then got a full snapshot

        # A corrupted packet (bad CRC) is rejected with a NACK; the weights stay; a snapshot resyncs.
        good_version, good_weights = node.weights()
        bad = bytearray(encode_update(MANIFEST, server.version, server.version + 1, _update(rng), key=KEY).data)
        bad[100] ^= 0xFF
        assert server.inject(DEVICE, encode_frame(FrameType.PACKET, bytes(bad)))
        assert wait_for(lambda: any("BAD_CRC" in n for n in server.devices[DEVICE].nacks),
                        timeout=15.0), node.log_text()
        assert node.weights() == (good_version, good_weights)
        server.publish(_update(rng))
        assert wait_for(lambda: _in_sync(node, server), timeout=15.0), node.log_text()
    finally:
        node.stop()
        server.stop()


def test_wrong_key_gets_no_weights(node_binary, workdir):
    server = ModelServer(MANIFEST, {DEVICE: KEY}, _weights()).start()
    node = Node(node_binary, server.address[1], workdir, key=b"x" * 32)
    try:
        assert wait_for(lambda: "does not know this device's key" in node.log_text() or
                         "server refused" in node.log_text() or "server error" in node.log_text(), 10), node.log_text()
        assert node.version() == 0
        assert node.request(b"M") == struct.pack("<Q", 0)  # never received a manifest
    finally:
        node.stop()
        server.stop()
