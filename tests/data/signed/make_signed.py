"""Generates the golden signed packets shared by tests/cpp/test_signing.cpp and tests/test_signing.py.

    PYTHONPATH=python python tests/data/signed/make_signed.py   # rewrites the files here

Deterministic: fixed key seeds, fixed times (Ed25519 signatures are deterministic), and the unsigned
golden packets of ../packets (same manifest, same weights). ``cases.txt`` lists, in order, what a slot
with trust (``root0.pub``, root version 0, delegation floor 0, clock ``NOW``) answers to each file;
a rejected packet leaves the weights and version as they were, an accepted one reaches
``../packets/weights_vN.bin``. The last line is the trust the slot holds at the end.

    signed_v1.bin           v0 -> v1  full snapshot, release key A (delegation 1 by root 0): accepted
    unsigned_v2.bin         v1 -> v2  no signature block: UNSIGNED
    flipped_bit_v2.bin      v1 -> v2  signed by A, one payload bit flipped after signing (CRC fixed): BAD_SIGNATURE
    wrong_key_v2.bin        v1 -> v2  an attacker's root delegates to the attacker's key: UNKNOWN_KEY
    expired_v2.bin          v1 -> v2  packet signature expired one second before NOW: EXPIRED
    expired_delegation_v2   v1 -> v2  the delegation expired: EXPIRED
    bad_rotation_v2.bin     v1 -> v2  root 0 -> root 1 "rotation" signed by the attacker: BAD_ROTATION
    signed_v2.bin           v1 -> v2  rotation root 0 -> root 1 (signed by root 0), delegation 2 by root 1 to
                                      release key B: accepted; the slot now trusts root 1 and delegations >= 2
    rolled_back_v1.bin      v0 -> v1  a valid signature (B, root 1) on an old version: STALE
    revoked_v3.bin          v2 -> v3  release key A under delegation 1 by root 1 (below the floor 2): UNKNOWN_KEY
    old_root_v3.bin         v2 -> v3  delegation 3 by root 0, no rotation (root 0 was rotated out): UNKNOWN_KEY
    signed_v3.bin           v2 -> v3  B under delegation 2, rotation included again (already applied): accepted
"""
from __future__ import annotations

import hashlib
import struct
import sys
from pathlib import Path

from edgert.updates.manifest import crc32c
from edgert.updates.signing import SigningKey, delegate, rotate_root, sign_packet

HERE = Path(__file__).resolve().parent
PACKETS = HERE.parent / "packets"
NOW = 1_800_000_000
DAY = 86_400


def key(name: str) -> SigningKey:
    """A fixed key derived from its name (test keys only: never derive real keys like this)."""
    return SigningKey(hashlib.sha256(b"edgert golden " + name.encode()).digest())


def flip_payload_bit(packet: bytes) -> bytes:
    """Flips bit 0 of the first payload byte's neighbour and recomputes the CRC (so only the signature catches it)."""
    data = bytearray(packet)
    data[72 + 40] ^= 1
    struct.pack_into("<I", data, len(data) - 4, crc32c(bytes(data[:-4])))
    return bytes(data)


def generate() -> dict[str, bytes]:
    """Every file's bytes, by name."""
    root0, root1, attacker = key("root 0"), key("root 1"), key("attacker")
    rel_a, rel_b = key("release A"), key("release B")
    snapshot = (PACKETS / "full_snapshot.bin").read_bytes()
    sparse = (PACKETS / "sparse_fp16.bin").read_bytes()
    dense = (PACKETS / "dense_fp32.bin").read_bytes()
    exp = NOW + DAY
    del_a = delegate(root0, rel_a.public, 1, exp)
    rotation = rotate_root(root0, root1.public, 1)
    del_b = delegate(root1, rel_b.public, 2, exp)
    out = {
        "root0.pub": root0.public,
        "root1.pub": root1.public,
        "signed_v1.bin": sign_packet(snapshot, rel_a, del_a, exp),
        "unsigned_v2.bin": sparse,
        "flipped_bit_v2.bin": flip_payload_bit(sign_packet(sparse, rel_a, del_a, exp)),
        "wrong_key_v2.bin": sign_packet(sparse, attacker, delegate(attacker, attacker.public, 1, exp), exp),
        "expired_v2.bin": sign_packet(sparse, rel_a, del_a, NOW - 1),
        "expired_delegation_v2.bin": sign_packet(sparse, rel_a, delegate(root0, rel_a.public, 1, NOW - DAY), exp),
        "bad_rotation_v2.bin": sign_packet(sparse, rel_b, del_b, exp, [rotate_root(attacker, root1.public, 1)]),
        "signed_v2.bin": sign_packet(sparse, rel_b, del_b, exp, [rotation]),
        "rolled_back_v1.bin": sign_packet(snapshot, rel_b, del_b, exp, [rotation]),
        "revoked_v3.bin": sign_packet(dense, rel_a, delegate(root1, rel_a.public, 1, exp), exp, [rotation]),
        "old_root_v3.bin": sign_packet(dense, rel_a, delegate(root0, rel_a.public, 3, exp), exp),
        "signed_v3.bin": sign_packet(dense, rel_b, del_b, exp, [rotation]),
    }
    cases = [
        ("signed_v1.bin", "EDGERT_OK"),
        ("unsigned_v2.bin", "EDGERT_ERR_PACKET_UNSIGNED"),
        ("flipped_bit_v2.bin", "EDGERT_ERR_PACKET_BAD_SIGNATURE"),
        ("wrong_key_v2.bin", "EDGERT_ERR_PACKET_UNKNOWN_KEY"),
        ("expired_v2.bin", "EDGERT_ERR_PACKET_EXPIRED"),
        ("expired_delegation_v2.bin", "EDGERT_ERR_PACKET_EXPIRED"),
        ("bad_rotation_v2.bin", "EDGERT_ERR_PACKET_BAD_ROTATION"),
        ("signed_v2.bin", "EDGERT_OK"),
        ("rolled_back_v1.bin", "EDGERT_ERR_PACKET_STALE"),
        ("revoked_v3.bin", "EDGERT_ERR_PACKET_UNKNOWN_KEY"),
        ("old_root_v3.bin", "EDGERT_ERR_PACKET_UNKNOWN_KEY"),
        ("signed_v3.bin", "EDGERT_OK"),
    ]
    lines = [f"now {NOW}", "trust root0.pub 0 0"] + [f"apply {f} {s}" for f, s in cases]
    lines.append("expect_trust root1.pub 1 2")
    out["cases.txt"] = ("\n".join(lines) + "\n").encode()
    return out


def main() -> int:
    for name, data in generate().items():
        (HERE / name).write_bytes(data)
    print(f"wrote {len(generate())} files to {HERE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
