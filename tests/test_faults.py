"""The fault-injecting proxy (edgert.transport.faults): every fault kind observably happens on real sockets.

A small TCP server on localhost plays the target (it echoes, or sends a fixed payload, or records what it
receives); a plain socket plays the device on the other side of the proxy.
"""
from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections import Counter
from typing import Iterator

import pytest

from conftest import wait_for
from edgert.transport.faults import FAULT_KINDS, FaultConfig, FaultProxy, draw_plan, flip_bit

PAYLOAD = bytes((i * 7 + i // 256) & 0xFF for i in range(1 << 16))


class _Target(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.received: list[bytes] = []
        self.errors: list[BaseException] = []
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server: _Target = self.server  # type: ignore[assignment]
        sock: socket.socket = self.request
        sock.settimeout(10)
        try:
            if server.mode == "send":
                sock.sendall(PAYLOAD)
                sock.shutdown(socket.SHUT_WR)
                sock.recv(1)
            elif server.mode == "echo":
                while data := sock.recv(65536):
                    sock.sendall(data)
            else:  # record
                got = bytearray()
                while data := sock.recv(65536):
                    got += data
                server.received.append(bytes(got))
        except OSError as exc:
            server.errors.append(exc)


@pytest.fixture
def target(request) -> Iterator[_Target]:
    server = _Target(request.param)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _connect(proxy: FaultProxy) -> socket.socket:
    sock = socket.create_connection(proxy.address, timeout=10)
    return sock


def _read_all(sock: socket.socket) -> bytes:
    out = bytearray()
    while data := sock.recv(65536):
        out += data
    return bytes(out)


def _flipped(data: bytes, bits: tuple[int, ...]) -> bytes:
    out = bytearray(data)
    for b in bits:
        flip_bit(out, b)
    return bytes(out)


@pytest.mark.parametrize("target", ["send"], indirect=True)
def test_flipped_bits_reach_the_device(target):
    cfg = FaultConfig(seed=3, flip=1.0, up=0.0, down_bytes=(0, len(PAYLOAD) - 1), flips=(2, 3))
    with FaultProxy(target.server_address, cfg) as proxy, _connect(proxy) as sock:
        got = _read_all(sock)
        plan = proxy.plans()[0]
        assert plan.kind == "flip" and plan.direction == "down" and len(plan.flip_bits) >= 2
        assert got != PAYLOAD and got == _flipped(PAYLOAD, plan.flip_bits)
        assert proxy.stats()["flip"] == len(plan.flip_bits)


@pytest.mark.parametrize("target", ["record"], indirect=True)
def test_flipped_bits_reach_the_server(target):
    cfg = FaultConfig(seed=4, flip=1.0, up=1.0, up_bytes=(0, 999), flips=(1, 1))
    with FaultProxy(target.server_address, cfg) as proxy:
        with _connect(proxy) as sock:
            sock.sendall(PAYLOAD[:1000])
        assert wait_for(lambda: target.received)
        (bit,) = proxy.plans()[0].flip_bits
        assert target.received[0] == _flipped(PAYLOAD[:1000], (bit,))
        assert bin(int.from_bytes(target.received[0], "little") ^ int.from_bytes(PAYLOAD[:1000], "little")) \
            .count("1") == 1


@pytest.mark.parametrize("target", ["echo"], indirect=True)
def test_reset_gives_econnreset(target):
    cfg = FaultConfig(reset=1.0, at_s=(0.2, 0.2), down_bytes=(1 << 30, 1 << 30))
    with FaultProxy(target.server_address, cfg) as proxy, _connect(proxy) as sock:
        with pytest.raises(ConnectionResetError):
            sock.recv(10)
        assert proxy.stats()["reset"] == 1


@pytest.mark.parametrize("target", ["send"], indirect=True)
def test_truncate_forwards_exactly_a_prefix(target):
    cfg = FaultConfig(truncate=1.0, up=0.0, down_bytes=(1000, 1000), at_s=(30, 30))
    with FaultProxy(target.server_address, cfg) as proxy, _connect(proxy) as sock:
        assert _read_all(sock) == PAYLOAD[:1000]  # then a clean EOF
        assert proxy.stats()["truncate"] == 1


@pytest.mark.parametrize("target", ["echo"], indirect=True)
def test_drop_closes_without_reset(target):
    cfg = FaultConfig(drop=1.0, at_s=(0.3, 0.3), down_bytes=(1 << 30, 1 << 30))
    with FaultProxy(target.server_address, cfg) as proxy, _connect(proxy) as sock:
        sock.sendall(b"ping")
        assert sock.recv(4) == b"ping"
        assert sock.recv(10) == b""  # FIN, not RST
        assert proxy.stats()["drop"] == 1


@pytest.mark.parametrize("target", ["echo"], indirect=True)
def test_delay_holds_every_chunk(target):
    cfg = FaultConfig(delay=1.0, delay_s=(0.25, 0.25))
    with FaultProxy(target.server_address, cfg) as proxy, _connect(proxy) as sock:
        start = time.monotonic()
        sock.sendall(b"x")
        assert sock.recv(1) == b"x"
        assert time.monotonic() - start >= 0.5  # 0.25 s on the way up and again on the way down
        assert proxy.stats()["delay"] == 1


@pytest.mark.parametrize("target", ["echo"], indirect=True)
def test_stall_pauses_then_resumes_and_calm_releases_it(target):
    cfg = FaultConfig(stall=1.0, stall_s=(0.6, 0.6), at_s=(0.0, 0.0), down_bytes=(1 << 30, 1 << 30))
    with FaultProxy(target.server_address, cfg) as proxy:
        with _connect(proxy) as sock:
            time.sleep(0.05)
            start = time.monotonic()
            sock.sendall(b"x")
            assert sock.recv(1) == b"x"
            assert time.monotonic() - start >= 0.4
            assert proxy.stats()["stall"] == 1
        proxy.config.stall_s = (60.0, 60.0)
        with _connect(proxy) as sock:
            time.sleep(0.1)
            sock.sendall(b"y")
            sock.settimeout(0.5)
            with pytest.raises(socket.timeout):
                sock.recv(1)  # stalled
            proxy.calm()
            sock.settimeout(10)
            assert sock.recv(1) == b"y"
        with _connect(proxy) as sock:  # calm: new connections are clean
            sock.sendall(b"z")
            assert sock.recv(1) == b"z"
        assert proxy.plans()[-1].kind == "none"


@pytest.mark.parametrize("target", ["echo"], indirect=True)
def test_many_connections_share_one_thread(target):
    cfg = FaultConfig(seed=1, delay=0.5, delay_s=(0.0, 0.01))
    with FaultProxy(target.server_address, cfg) as proxy:
        threads = threading.active_count()
        socks = [_connect(proxy) for _ in range(64)]
        try:
            for i, s in enumerate(socks):
                s.sendall(i.to_bytes(2, "little"))
            for i, s in enumerate(socks):
                assert s.recv(2) == i.to_bytes(2, "little")
            assert proxy.stats()["open"] == 64
            # the target's own handler threads are the only new ones: the proxy adds none per connection
            assert threading.active_count() - threads <= 64
        finally:
            for s in socks:
                s.close()


def test_plans_are_seeded_and_follow_the_probabilities():
    cfg = FaultConfig(seed=7, delay=0.1, drop=0.1, reset=0.1, truncate=0.1, flip=0.2, stall=0.1)
    plans = [draw_plan(cfg, i) for i in range(4000)]
    assert plans == [draw_plan(cfg, i) for i in range(4000)]
    assert plans != [draw_plan(FaultConfig(**{**cfg.__dict__, "seed": 8}), i) for i in range(4000)]
    counts = Counter(p.kind for p in plans)
    for kind in FAULT_KINDS:
        assert abs(counts[kind] / 4000 - getattr(cfg, kind)) < 0.03, (kind, counts)
    assert abs(counts["none"] / 4000 - 0.3) < 0.03
    assert all(p.flip_bits for p in plans if p.kind == "flip")


@pytest.mark.parametrize("bad, message", [
    ({"drop": 1.5}, "drop: expected a probability"),
    ({"drop": 0.6, "reset": 0.6}, "sum to 1.200"),
    ({"stall_s": (3.0, 1.0)}, "stall_s: expected 0 <= low <= high"),
    ({"bogus": 1}, "unknown fault config keys"),
])
def test_bad_config_is_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        FaultConfig.from_dict(bad)



@pytest.mark.parametrize("target", ["echo"], indirect=True)
def test_resume_gives_open_clean_connections_a_plan(target):
    cfg = FaultConfig(seed=2, reset=1.0, at_s=(0.2, 0.2), down_bytes=(1 << 30, 1 << 30))
    with FaultProxy(target.server_address, cfg) as proxy:
        proxy.calm()
        with _connect(proxy) as sock:
            sock.sendall(b"a")
            assert sock.recv(1) == b"a"
            assert proxy.plans()[0].kind == "none"
            proxy.resume()
            with pytest.raises(ConnectionResetError):
                sock.recv(1)
            assert proxy.plans()[0].kind == "reset" and proxy.stats()["reset"] == 1
