"""Property-based fuzzing of the Python side of the wire protocol: every parser that reads bytes from the network
either returns a value or raises its protocol error -- never another exception, never a hang -- and valid messages
round-trip; the handshake on both ends, a real ModelServer and a real EdgeClient over localhost, survives any byte
stream from an unauthenticated peer and never authenticates it. (The C++ decoders and the firmware node's frame
reader and handshake have libFuzzer targets in tests/fuzz; this covers the Python side.)"""
from __future__ import annotations

import secrets
import socket
import struct
import threading

import pytest

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis not installed (extra [dev])")
import numpy as np  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from edgert.ams import protocol as ams  # noqa: E402
from edgert.recl import protocol as recl  # noqa: E402
from edgert.transport import EdgeClient, ModelServer, frames  # noqa: E402
from edgert.transport.frames import ConnectionClosed, FrameType, ProtocolError  # noqa: E402
from edgert.updates import Manifest, TensorSpec  # noqa: E402

FUZZ = settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
blobs = st.binary(max_size=512)


def _only_protocol_errors(parse, body: bytes) -> None:
    try:
        parse(body)
    except ProtocolError:
        pass


@FUZZ
@given(st.binary(min_size=frames.HEADER.size, max_size=frames.HEADER.size))
def test_frame_header(header: bytes) -> None:
    code, reserved, announced = frames.HEADER.unpack(header)
    try:
        frame_type, length = frames.parse_header(header)
    except ProtocolError:
        known = code in frames.FrameType.__members__.values()
        assert not known or reserved != 0 or announced > frames.DEFAULT_MAX_FRAME  # refused for a reason
        return
    assert int(frame_type) == code and reserved == 0 and length == announced <= frames.DEFAULT_MAX_FRAME


@FUZZ
@given(blobs)
def test_core_bodies(body: bytes) -> None:
    _only_protocol_errors(frames.Hello.decode, body)
    _only_protocol_errors(frames.decode_challenge, body)
    _only_protocol_errors(lambda b: frames.decode_u64(b, "ACK"), body)
    _only_protocol_errors(frames.decode_nack, body)


@FUZZ
@given(st.text(min_size=1, max_size=frames.MAX_DEVICE_ID // 4), st.binary(min_size=frames.MODEL_ID_BYTES,
                                                                          max_size=frames.MODEL_ID_BYTES),
       st.integers(0, 2**64 - 1), st.binary(min_size=frames.NONCE_BYTES, max_size=frames.NONCE_BYTES),
       st.integers(1, 65535), st.sampled_from(sorted(frames.SUPPORTED_PROTOCOLS)))
def test_hello_round_trips(device: str, model_id: bytes, version: int, nonce: bytes, fmt: int, protocol: int) -> None:
    if not 1 <= len(device.encode()) <= frames.MAX_DEVICE_ID:
        return
    hello = frames.Hello(device, model_id, version, nonce, fmt if protocol >= 2 else 1, protocol)
    back = frames.Hello.decode(hello.encode())
    assert back == frames.Hello(device.encode().decode(errors="replace"), model_id, version, nonce,
                                fmt if protocol >= 2 else 1, protocol)


@FUZZ
@given(blobs)
def test_ams_bodies(body: bytes) -> None:
    for parse in (ams.Join.decode, ams.Control.decode, ams.SampleUpload.decode,
                  lambda b: ams.decode_labels(b, (4, 6))):
        _only_protocol_errors(parse, body)


@FUZZ
@given(blobs)
def test_recl_bodies(body: bytes) -> None:
    for parse in (recl.WindowUpload.decode, recl.DecisionFrame.decode, recl.Reject.decode):
        _only_protocol_errors(parse, body)


@FUZZ
@given(st.integers(1, 2**32 - 1), st.integers(1, ams.MAX_SAMPLES_PER_UPLOAD),
       st.floats(0, 1e6, allow_nan=False), st.binary(min_size=1, max_size=64))
def test_sample_upload_round_trips(seq: int, count: int, start: float, video: bytes) -> None:
    times = [start + i for i in range(count)]
    upload = ams.SampleUpload(seq, times[-1], times, video)
    assert ams.SampleUpload.decode(upload.encode()) == upload


@FUZZ
@given(st.integers(0, 2**32 - 1), st.sampled_from(list(recl.FrameCodec)), st.integers(1, recl.MAX_WINDOW_FRAMES),
       st.integers(1, 4096), st.integers(1, 4096), st.binary(min_size=1, max_size=64), st.booleans())
def test_window_upload_round_trips(seq: int, codec: recl.FrameCodec, count: int, width: int, height: int,
                                   payload: bytes, scene_cut: bool) -> None:
    upload = recl.WindowUpload(seq, codec, count, width, height, payload, scene_cut)
    body = upload.encode()
    assert recl.WindowUpload.decode(body) == upload
    assert body[3] == (recl.SCENE_CUT if scene_cut else 0)


@settings(max_examples=150, deadline=None, database=None)
@given(st.lists(st.binary(max_size=64), max_size=6), st.booleans())
def test_read_frame_on_a_random_stream(chunks: list[bytes], close: bool) -> None:
    """Random bytes on a real socket: frames, a protocol error or a closed connection within the timeout."""
    a, b = socket.socketpair()
    try:
        for chunk in chunks:
            b.sendall(chunk)
        if close:
            b.shutdown(socket.SHUT_WR)
        sent = sum(len(c) for c in chunks)
        read = 0
        for _ in range(len(chunks) + 1):
            try:
                frame_type, body = frames.read_frame(a, timeout=0.05)
            except (ProtocolError, ConnectionClosed):
                break
            assert isinstance(frame_type, frames.FrameType)
            read += frames.HEADER.size + len(body)
            assert read <= sent  # a frame is only ever made of bytes that arrived
    finally:
        a.close()
        b.close()


def test_a_valid_frame_reads_back() -> None:
    a, b = socket.socketpair()
    try:
        frames.send_frame(b, frames.FrameType.PING, struct.pack("<Q", 7))
        frame_type, body = frames.read_frame(a, timeout=1.0)
        assert frame_type == frames.FrameType.PING and frames.decode_u64(body, "PING") == 7
    finally:
        a.close()
        b.close()


# ---- the handshake on a real server and a real client over localhost ----------------------------------------------

MANIFEST = Manifest(bytes(range(16)), (TensorSpec("w", "float32", (8, 4)),))
KEY = bytes(range(32))
SERVER_FRAMES = st.sampled_from([t for t in frames.FrameType])


def _hello(device: str, nonce: bytes) -> bytes:
    return frames.encode_frame(FrameType.HELLO, frames.Hello(device, MANIFEST.model_id, 0, nonce).encode())


def _read_all(sock: socket.socket, timeout: float = 5.0) -> list[tuple[FrameType, bytes]]:
    """Frames the peer sends until it closes (a protocol error here is a test failure: peers send valid frames)."""
    out = []
    while True:
        try:
            out.append(frames.read_frame(sock, timeout))
        except ConnectionClosed:
            return out


@pytest.fixture(scope="module")
def server():
    # a stream ending in part of a frame pauses reading (the slowloris defence), so the server sees the peer's
    # close only when reading resumes: a short interval keeps each example fast and still takes that path
    with ModelServer(MANIFEST, {"dev": KEY}, {"w": np.ones((8, 4), np.float32)}, preauth_read_interval=0.05) as s:
        yield s


def _still_authenticates(server: ModelServer) -> None:
    """A fresh HELLO from the known device gets a CHALLENGE with the right proof: the server survived."""
    nonce = secrets.token_bytes(frames.NONCE_BYTES)
    with socket.create_connection(server.address, timeout=5) as sock:
        sock.sendall(_hello("dev", nonce))
        frame_type, body = frames.read_frame(sock, 5.0)
        assert frame_type == FrameType.CHALLENGE
        server_nonce, proof = frames.decode_challenge(body)
        hello_body = frames.Hello("dev", MANIFEST.model_id, 0, nonce).encode()
        assert proof == frames.server_proof(KEY, server_nonce, hello_body)


@settings(max_examples=60, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.sampled_from(["none", "known", "unknown"]),
       st.lists(st.one_of(st.binary(max_size=80), st.tuples(SERVER_FRAMES, st.binary(max_size=64))), max_size=4))
def test_server_handshake_on_random_streams(server: ModelServer, hello: str, parts: list) -> None:
    """Whatever an unauthenticated peer sends (after a valid HELLO or not), the server answers at most CHALLENGE and
    then ERROR, closes, never sends a model, and goes on authenticating real devices."""
    stream = b"" if hello == "none" else _hello("dev" if hello == "known" else "stranger", bytes(16))
    for part in parts:
        stream += part if isinstance(part, bytes) else frames.encode_frame(part[0], part[1])
    with socket.create_connection(server.address, timeout=5) as sock:
        try:
            sock.sendall(stream)
            sock.shutdown(socket.SHUT_WR)
        except OSError:  # the server may close as soon as it has seen enough
            pass
        try:
            replies = [t for t, _ in _read_all(sock)]
        except OSError:  # reset after an early close
            replies = []
    assert replies in ([], [FrameType.ERROR], [FrameType.CHALLENGE], [FrameType.CHALLENGE, FrameType.ERROR]), replies
    if hello == "unknown":
        assert FrameType.CHALLENGE not in replies
    _still_authenticates(server)


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.booleans(), st.lists(st.one_of(st.binary(max_size=80), st.tuples(SERVER_FRAMES, st.binary(max_size=64))),
                               max_size=4))
def test_client_handshake_on_random_server_bytes(challenge_first: bool, parts: list) -> None:
    """A hostile server: the real EdgeClient's handshake refuses it (no AUTH, never connected) without any
    exception escaping its network thread, then reconnects."""
    errors: list[BaseException] = []
    previous_hook = threading.excepthook
    threading.excepthook = lambda args: errors.append(args.exc_value)  # type: ignore[assignment]
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(5)
    client = EdgeClient(listener.getsockname(), "dev", KEY)
    try:
        client.start()
        for _ in range(2):  # the second connection shows the client survived the first
            conn, _ = listener.accept()
            with conn:
                frame_type, body = frames.read_frame(conn, 5.0)
                assert frame_type == FrameType.HELLO
                frames.Hello.decode(body)
                stream = b""
                if challenge_first:
                    stream = frames.encode_frame(FrameType.CHALLENGE,
                                                 frames.encode_challenge(bytes(16), secrets.token_bytes(32)))
                for part in parts:
                    stream += part if isinstance(part, bytes) else frames.encode_frame(part[0], part[1])
                try:
                    conn.sendall(stream)
                    conn.shutdown(socket.SHUT_WR)
                    replies = [t for t, _ in _read_all(conn)]
                except OSError:
                    replies = []
                assert FrameType.AUTH not in replies
                assert not client.connected.is_set()
    finally:
        client.stop()
        listener.close()
        threading.excepthook = previous_hook
    assert client.connections == 0
    assert not errors, errors
