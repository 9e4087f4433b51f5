"""Wire protocol: frame codec, Python model server <-> Python edge client on localhost."""
from __future__ import annotations

import socket
import struct
import time

import numpy as np
import pytest

from conftest import wait_for
from edgert.transport import EdgeClient, ModelServer
from edgert.transport.frames import (
    ConnectionClosed,
    FrameType,
    Hello,
    ProtocolError,
    encode_frame,
    parse_header,
    read_frame,
)
from edgert.updates import Manifest, TensorSpec, authenticate, encode_update

MANIFEST = Manifest(bytes(range(16)), (TensorSpec("w", "float32", (64, 32)), TensorSpec("b", "float16", (32,))))
KEYS = {"cam-1": b"k" * 32, "cam-2": b"q" * 24}


def _weights(seed=0):
    rng = np.random.default_rng(seed)
    return {"w": rng.standard_normal((64, 32)).astype(np.float32), "b": rng.standard_normal(32).astype(np.float16)}


def _sparse_update(rng):
    idx = np.sort(rng.choice(64 * 32, 100, replace=False))
    return {"w": (idx, (0.01 * rng.standard_normal(100)).astype(np.float32))}




def test_frame_header_is_validated_before_the_body():
    assert parse_header(encode_frame(FrameType.ACK, b"x" * 8)[:6]) == (FrameType.ACK, 8)
    with pytest.raises(ProtocolError, match="unknown frame type 99"):
        parse_header(struct.pack("<BBI", 99, 0, 0))
    with pytest.raises(ProtocolError, match="reserved header byte"):
        parse_header(struct.pack("<BBI", 5, 1, 0))
    with pytest.raises(ProtocolError, match="exceeds the limit"):
        parse_header(struct.pack("<BBI", 5, 0, 2**32 - 1))
    for hello in (Hello("cam-1", bytes(16), 7, bytes(range(16)), max_packet_format=2),
                  Hello("cam-1", bytes(16), 7, bytes(range(16)), protocol=1)):
        assert Hello.decode(hello.encode()) == hello
        for cut in range(len(hello.encode())):
            with pytest.raises(ProtocolError):
                Hello.decode(hello.encode()[:cut])
    assert len(Hello("c", bytes(16), 0, bytes(16), 2).encode()) == len(Hello("c", bytes(16), 0, bytes(16),
                                                                             protocol=1).encode()) + 2
    with pytest.raises(ProtocolError, match="unsupported protocol version 3"):
        Hello.decode(Hello("c", bytes(16), 0, bytes(16), protocol=3).encode())


def test_authenticate_matches_encoding_with_the_key():
    rng = np.random.default_rng(1)
    update = _sparse_update(rng)
    plain = encode_update(MANIFEST, 3, 4, update)
    keyed = encode_update(MANIFEST, 3, 4, update, key=KEYS["cam-1"])
    assert authenticate(plain, KEYS["cam-1"]) == keyed.data
    assert authenticate(keyed, KEYS["cam-1"]) == keyed.data


def test_two_python_devices_follow_the_server(tmp_path):
    rng = np.random.default_rng(2)
    with ModelServer(MANIFEST, KEYS, _weights()) as server:
        clients = [EdgeClient(server.address, d, k).start() for d, k in KEYS.items()]
        try:
            for _ in range(5):
                server.publish(_sparse_update(rng))
            assert wait_for(lambda: all(c.version == server.version for c in clients))
            for c in clients:
                assert c.slot.weights()[0] == server.weights_bytes()
            assert wait_for(lambda: all(server.devices[d].acked_version == server.version for d in KEYS))
            assert server.devices["cam-1"].bytes_sent > 0
        finally:
            for c in clients:
                c.stop()


def test_devices_get_packets_in_the_format_they_announce():
    """A format 1 device gets exact transcodes of the format 2 stream and ends byte-identical."""
    rng = np.random.default_rng(3)
    with ModelServer(MANIFEST, KEYS, _weights()) as server:
        new = EdgeClient(server.address, "cam-1", KEYS["cam-1"]).start()
        old = EdgeClient(server.address, "cam-2", KEYS["cam-2"], max_packet_format=1).start()
        try:
            assert wait_for(lambda: server.devices.get("cam-2") is not None and server.devices["cam-2"].connected)
            formats = [server.publish(_sparse_update(rng)).format_version for _ in range(4)]
            assert formats == [2] * 4
            assert wait_for(lambda: new.version == old.version == server.version)
            assert new.slot.weights()[0] == old.slot.weights()[0] == server.weights_bytes()
            assert server.devices["cam-2"].bytes_sent > server.devices["cam-1"].bytes_sent
        finally:
            new.stop()
            old.stop()


def test_unknown_device_and_wrong_key_are_refused():
    with ModelServer(MANIFEST, KEYS, _weights()) as server:
        stranger = EdgeClient(server.address, "cam-9", b"k" * 32).start()
        impostor = EdgeClient(server.address, "cam-1", b"z" * 32).start()
        try:
            time.sleep(0.5)
            assert stranger.slot is None and impostor.slot is None
        finally:
            stranger.stop()
            impostor.stop()
        # A raw peer sending garbage is dropped without harming the server.
        with socket.create_connection(server.address) as sock:
            sock.sendall(struct.pack("<BBI", 77, 0, 0))
            with pytest.raises(ConnectionClosed):
                read_frame(sock, 2.0)
        assert server.version == 1


def test_reads_work_on_descriptors_past_fd_setsize():
    """select() cannot watch descriptors >= 1024 and raised "filedescriptor out of range" once a server held about
    a thousand connections; the reads now poll."""
    import resource

    from edgert.transport.frames import recv_exact, wait_readable

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:
        if hard != resource.RLIM_INFINITY and hard < 1200:
            pytest.skip(f"descriptor limit {hard} < 1200")
        resource.setrlimit(resource.RLIMIT_NOFILE, (1200, hard))
    filler = []
    try:
        while len(filler) < 1100:
            filler.append(socket.socket())
        a, b = socket.socketpair()
        try:
            assert a.fileno() >= 1024
            assert not wait_readable(a, 0.01)
            b.sendall(b"hello")
            assert recv_exact(a, 5, 1.0) == b"hello"
            a.close()
            with pytest.raises(ValueError):
                wait_readable(a, 0.01)
        finally:
            a.close()
            b.close()
    finally:
        for s in filler:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
