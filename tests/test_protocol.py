"""Wire protocol: frame codec, Python model server <-> Python edge client on localhost."""
from __future__ import annotations

import secrets
import socket
import struct
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import wait_for
from edgert.transport import EdgeClient, ModelServer
from edgert.transport.frames import (
    ConnectionClosed,
    ErrorCode,
    FrameType,
    Hello,
    ProtocolError,
    UnsupportedProtocol,
    decode_challenge,
    device_proof,
    encode_frame,
    parse_header,
    read_frame,
    server_proof,
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
    hello = Hello("cam-1", bytes(16), 7, bytes(range(16)), max_packet_format=2)
    assert Hello.decode(hello.encode()) == hello
    for cut in range(len(hello.encode())):
        with pytest.raises(ProtocolError):
            Hello.decode(hello.encode()[:cut])
    for old in (1, 2, 4):  # 1 and 2 did not authenticate HELLO
        with pytest.raises(UnsupportedProtocol, match=f"unsupported protocol version {old} "):
            Hello.decode(Hello("c", bytes(16), 0, bytes(16), 2, protocol=old).encode())


def test_golden_handshake_proofs():
    """tests/data/wire/handshake_v3.txt (written from the spec's formulas), also checked by the C++ suite."""
    rows = dict(line.split() for line in (Path(__file__).parent / "data" / "wire" / "handshake_v3.txt")
                .read_text().splitlines())
    key, body, nonce = (bytes.fromhex(rows[k]) for k in ("key", "hello", "server_nonce"))
    hello = Hello.decode(body)
    assert (hello.device_id, hello.active_version, hello.max_packet_format) == ("golden-dev", 0x0102030405060708, 3)
    assert hello.encode() == body
    assert server_proof(key, nonce, body).hex() == rows["server_proof"]
    assert device_proof(key, nonce, body).hex() == rows["device_proof"]
    for i in range(len(body)):  # every byte of HELLO is bound: a flipped bit changes both proofs
        flipped = body[:i] + bytes([body[i] ^ 0x40]) + body[i + 1:]
        assert server_proof(key, nonce, flipped).hex() != rows["server_proof"]
        assert device_proof(key, nonce, flipped).hex() != rows["device_proof"]


def _handshake(server: ModelServer, hello: Hello, key: bytes, *, proved: bytes = b"") -> tuple[FrameType, bytes]:
    """A raw device: sends ``hello``, answers CHALLENGE with the device proof over ``proved`` (default: the HELLO
    sent), and returns the next frame after AUTH (ERROR, or whatever the server sends an accepted device)."""
    sent = hello.encode()
    with socket.create_connection(server.address, timeout=5) as sock:
        sock.sendall(encode_frame(FrameType.HELLO, sent))
        frame_type, body = read_frame(sock, 5.0)
        if frame_type != FrameType.CHALLENGE:
            return frame_type, body
        server_nonce, _ = decode_challenge(body)
        sock.sendall(encode_frame(FrameType.AUTH, device_proof(key, server_nonce, proved or sent)))
        return read_frame(sock, 5.0)


def test_protocol_2_device_is_refused_with_an_error_naming_the_version():
    with ModelServer(MANIFEST, KEYS, _weights()) as server:
        old = Hello("cam-1", MANIFEST.model_id, 0, bytes(16), 2, protocol=2)
        frame_type, body = _handshake(server, old, KEYS["cam-1"])
        assert frame_type == FrameType.ERROR
        code, message = struct.unpack_from("<I", body)[0], body[4:].decode()
        assert code == ErrorCode.PROTOCOL
        assert "unsupported protocol version 2 " in message and "speaks 3" in message
        assert server.stats().auth_failed == 1 and server.stats().authenticated == 0


def test_a_hello_changed_on_the_way_fails_the_handshake():
    """Without TLS a bit flip (or an attacker) may change HELLO in transit: both proofs then disagree."""
    with ModelServer(MANIFEST, KEYS, _weights()) as server:
        meant = Hello("cam-1", MANIFEST.model_id, 0, secrets.token_bytes(16), 2)
        arrived = Hello("cam-1", MANIFEST.model_id, 2**63, meant.client_nonce, 2)  # one flipped bit
        with socket.create_connection(server.address, timeout=5) as sock:
            sock.sendall(encode_frame(FrameType.HELLO, arrived.encode()))
            server_nonce, proof = decode_challenge(read_frame(sock, 5.0)[1])
            # the device, checking the server's proof over the HELLO it sent, disconnects here ...
            assert proof == server_proof(KEYS["cam-1"], server_nonce, arrived.encode())
            assert proof != server_proof(KEYS["cam-1"], server_nonce, meant.encode())
        # ... and a device proof over what was sent does not authenticate what arrived
        frame_type, body = _handshake(server, arrived, KEYS["cam-1"], proved=meant.encode())
        assert frame_type == FrameType.ERROR and struct.unpack_from("<I", body)[0] == ErrorCode.AUTH_FAILED
        assert server.version == 1 and server.stats().authenticated == 0


def test_a_device_claiming_a_huge_version_does_not_move_the_shared_stream():
    """The soak's finding: a device (a stolen key, or a flipped bit before protocol 3) claiming version 2^63 made
    the server publish a snapshot at 2^63 + 1 on the stream every device shares. Now it is refused with ERROR
    VERSION_AHEAD; the stream and the other devices carry on."""
    rng = np.random.default_rng(5)
    with ModelServer(MANIFEST, KEYS, _weights()) as server:
        clients = [EdgeClient(server.address, d, k).start() for d, k in KEYS.items()]
        try:
            server.publish(_sparse_update(rng))
            assert wait_for(lambda: all(c.version == server.version == 2 for c in clients))
            liar = Hello("cam-2", MANIFEST.model_id, 2**63, secrets.token_bytes(16), 2)
            frame_type, body = _handshake(server, liar, KEYS["cam-2"])  # holds cam-2's real key
            assert frame_type == FrameType.ERROR
            code, message = struct.unpack_from("<I", body)[0], body[4:].decode()
            assert code == ErrorCode.VERSION_AHEAD
            assert f"device version {2**63} is ahead of the server's version 2" in message
            assert server.version == 2 and server.stats().version_ahead == 1
            assert [p.target_version for p in server.history][-1] == 2
            server.publish(_sparse_update(rng))
            assert wait_for(lambda: all(c.version == server.version == 3 for c in clients))
            for c in clients:
                assert c.slot.weights()[0] == server.weights_bytes()
            assert wait_for(lambda: all(server.devices[d].acked_version == 3 for d in KEYS))
        finally:
            for c in clients:
                c.stop()


def test_a_device_ahead_of_its_own_stream_moves_only_that_stream():
    """per_device: the stream is the device's alone, so a device ahead of it (the server lost its state) is moved
    past its version by a snapshot, as before; the other device's stream does not move."""
    with ModelServer(MANIFEST, KEYS, _weights(), per_device=True) as server:
        ahead = Hello("cam-1", MANIFEST.model_id, 40, secrets.token_bytes(16), 2)
        frame_type, body = _handshake(server, ahead, KEYS["cam-1"])
        assert frame_type == FrameType.PACKET
        assert server.version_of("cam-1") == 41 and server.version_of("cam-2") == 1


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
