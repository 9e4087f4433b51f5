"""Writes handshake_v3.txt: one protocol 3 handshake (key, HELLO body, server nonce, both proofs) that
tests/test_protocol.py and tests/cpp/firmware/test_edge_node.cpp (WireProtocol.GoldenHandshakeProofs) check.

    PYTHONPATH=python python tests/data/wire/make_handshake.py

The proofs are computed here from the spec's definition (docs/spec/wire-protocol.md), not by edgert.
"""
from __future__ import annotations

import hashlib
import hmac
import struct
from pathlib import Path

KEY = bytes(range(32))
SERVER_NONCE = bytes(range(200, 216))
# HELLO: magic, protocol 3, device id, model id, active version, max packet format 3, client nonce
DEVICE = b"golden-dev"
HELLO = (b"ERTW" + struct.pack("<HH", 3, len(DEVICE)) + DEVICE + bytes(range(16))
         + struct.pack("<QH", 0x0102030405060708, 3) + bytes(range(100, 116)))


def proof(label: bytes) -> bytes:
    return hmac.new(KEY, label + SERVER_NONCE + hashlib.sha256(HELLO).digest(), hashlib.sha256).digest()


def main() -> None:
    rows = {"key": KEY, "hello": HELLO, "server_nonce": SERVER_NONCE,
            "server_proof": proof(b"edgert-server-v3"), "device_proof": proof(b"edgert-device-v3")}
    text = "".join(f"{name} {value.hex()}\n" for name, value in rows.items())
    (Path(__file__).resolve().parent / "handshake_v3.txt").write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
