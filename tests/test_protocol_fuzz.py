"""Property-based fuzzing of the Python side of the wire protocol: every parser that reads bytes from the network
either returns a value or raises its protocol error -- never another exception, never a hang -- and valid messages
round-trip. (The C++ decoders have libFuzzer targets; this covers the server's Python parsers.)"""
from __future__ import annotations

import socket
import struct

import pytest

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis not installed (extra [dev])")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from edgert.ams import protocol as ams  # noqa: E402
from edgert.recl import protocol as recl  # noqa: E402
from edgert.transport import frames  # noqa: E402
from edgert.transport.frames import ConnectionClosed, ProtocolError  # noqa: E402

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
