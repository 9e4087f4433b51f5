"""Release signatures for update packets: Ed25519 keys, statements and the signature block.

Specified in ``docs/spec/update-packet.md`` ("Release signatures"); the threat model is
``docs/design/threat-model.md``. Three kinds of key:

* the **root** key, kept offline; devices pin its public key (and its version);
* the **release** key, online (on the server or a signing host), valid while a **delegation**
  (a :class:`Statement` of kind ``RELEASE`` signed by the root) is not expired and not superseded
  by a delegation with a higher version;
* a **root rotation** (a :class:`Statement` of kind ``ROOT`` signed by the current root) moves trust
  to a new root key, version ``n + 1``.

A signed packet carries the signature block (``FLAG_SIGNED``, block length in header bytes 60..63)
between its payload and its CRC: the root rotations the device may not have seen, the delegation,
and the release key's Ed25519 signature over SHA-256 of the header (authenticated flag cleared) and
payload, the signer's key id and an expiry. libedgert verifies it in the slot
(``edgert_slot_set_trust``); :func:`verify_packet` here is the same check in Python (tests, CLI).
"""
from __future__ import annotations

import enum
import hashlib
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from edgert.harness.run import write_bytes_atomic
from edgert.updates.manifest import crc32c
from edgert.updates.packet import FLAG_AUTHENTICATED, FLAG_SIGNED, PACKET_HEADER_BYTES, PACKET_MAGIC, EncodedPacket

PacketLike = Union[bytes, EncodedPacket]
PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
KEY_ID_BYTES = 8
STATEMENT_BYTES = 128
PACKET_SIGNATURE_BYTES = 80
BLOCK_HEADER_BYTES = 8
MAX_ROTATIONS = 16
STATEMENT_MAGIC = b"ERTK"
BLOCK_MAGIC = b"ERSB"
BLOCK_VERSION = 1
TRUST_FILE = "trust.bin"
TRUST_MAGIC = b"ERTT"
TRUST_FILE_BYTES = 56
STATEMENT_DOMAIN = b"edgert key statement v1\x00"
PACKET_DOMAIN = b"edgert release packet v1\x00"


class Kind(enum.IntEnum):
    """What a :class:`Statement` makes its subject key: a new root, or the release key."""

    ROOT = 1
    RELEASE = 2


class SignatureError(ValueError):
    """A signed packet or statement that does not verify; ``status`` is libedgert's status name."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status


def key_id(public_key: bytes) -> bytes:
    """The 8-byte id of an Ed25519 public key: SHA-256(raw key)[0:8]."""
    if len(public_key) != PUBLIC_KEY_BYTES:
        raise ValueError(f"an Ed25519 public key has {PUBLIC_KEY_BYTES} bytes, got {len(public_key)}")
    return hashlib.sha256(public_key).digest()[:KEY_ID_BYTES]


@dataclass(frozen=True)
class SigningKey:
    """An Ed25519 private key (32-byte seed) with its public key and id."""

    seed: bytes

    def __post_init__(self) -> None:
        if len(self.seed) != 32:
            raise ValueError(f"an Ed25519 private key (seed) has 32 bytes, got {len(self.seed)}")

    @classmethod
    def generate(cls) -> "SigningKey":
        """A fresh random key (the OS's CSPRNG)."""
        raw = Ed25519PrivateKey.generate().private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        return cls(raw)

    @property
    def public(self) -> bytes:
        return Ed25519PrivateKey.from_private_bytes(self.seed).public_key().public_bytes(Encoding.Raw,
                                                                                         PublicFormat.Raw)

    @property
    def key_id(self) -> bytes:
        return key_id(self.public)

    def sign(self, message: bytes) -> bytes:
        return Ed25519PrivateKey.from_private_bytes(self.seed).sign(message)


def _verify(public_key: bytes, signature: bytes, message: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except InvalidSignature:
        return False
    return True


@dataclass(frozen=True)
class Statement:
    """A signed key statement (128 bytes): ``signer`` makes ``subject`` the root (``Kind.ROOT``, version
    = the new root version, expiry 0) or the release key (``Kind.RELEASE``, version = delegation number,
    expiry in Unix seconds)."""

    kind: Kind
    version: int
    expiry: int
    subject: bytes
    signer_id: bytes
    signature: bytes

    def signed_bytes(self) -> bytes:
        return (STATEMENT_MAGIC + struct.pack("<B3xQQ", int(self.kind), self.version, self.expiry) + self.subject
                + self.signer_id)

    def encode(self) -> bytes:
        return self.signed_bytes() + self.signature

    @classmethod
    def decode(cls, data: bytes) -> "Statement":
        if len(data) != STATEMENT_BYTES or data[:4] != STATEMENT_MAGIC:
            raise SignatureError("EDGERT_ERR_PACKET_MALFORMED", "not an edgert key statement (ERTK, 128 bytes)")
        kind, r0, r1, version, expiry = struct.unpack_from("<BBHQQ", data, 4)
        if kind not in (Kind.ROOT, Kind.RELEASE) or r0 or r1:
            raise SignatureError("EDGERT_ERR_PACKET_MALFORMED", f"key statement of unknown kind {kind}")
        return cls(Kind(kind), version, expiry, data[24:56], data[56:64], data[64:128])

    def verifies_under(self, public_key: bytes) -> bool:
        return self.signer_id == key_id(public_key) and _verify(public_key, self.signature,
                                                                STATEMENT_DOMAIN + self.signed_bytes())


def sign_statement(signer: SigningKey, kind: Kind, subject: bytes, version: int, expiry: int = 0) -> Statement:
    """A statement by ``signer`` about ``subject`` (a raw public key)."""
    if kind == Kind.ROOT and expiry != 0:
        raise ValueError("a root rotation does not expire (expiry must be 0)")
    if len(subject) != PUBLIC_KEY_BYTES:
        raise ValueError(f"subject must be a {PUBLIC_KEY_BYTES}-byte Ed25519 public key")
    unsigned = Statement(kind, version, expiry, subject, signer.key_id, b"")
    return Statement(kind, version, expiry, subject, signer.key_id,
                     signer.sign(STATEMENT_DOMAIN + unsigned.signed_bytes()))


def delegate(root: SigningKey, release_public: bytes, version: int, expiry: int) -> Statement:
    """The root's delegation to a release key, valid until ``expiry`` (Unix s) and until a delegation
    with a higher ``version`` reaches the device (which then refuses this one as revoked)."""
    return sign_statement(root, Kind.RELEASE, release_public, version, expiry)


def rotate_root(current: SigningKey, new_public: bytes, new_version: int) -> Statement:
    """The current root's statement that ``new_public`` is root version ``new_version`` (= current + 1)."""
    return sign_statement(current, Kind.ROOT, new_public, new_version)


@dataclass
class Trust:
    """What a device pins: the root public key and its version, and the lowest delegation version it
    still accepts (raised by every verified delegation). ``now`` None reads the wall clock."""

    root_key: bytes
    root_version: int = 0
    min_release_version: int = 0
    now: Optional[int] = None

    def clock(self) -> int:
        return int(time.time()) if self.now is None else self.now


class TrustStateError(ValueError):
    """A saved trust state (``trust.bin``) that exists but cannot be used: unreadable, truncated or corrupted.
    The device must not fall back to its pinned root (that could re-admit a rotated-out root or a revoked
    delegation), so it refuses to start until the operator restores or re-provisions the trust."""


def encode_trust_state(trust: Trust) -> bytes:
    """``trust.bin`` (56 bytes, the firmware node's format, ``docs/spec/update-packet.md``): ``ERTT``, root key
    (32), root version (u64 LE), delegation floor (u64 LE), CRC32C of the 52 bytes before it (u32 LE)."""
    if len(trust.root_key) != PUBLIC_KEY_BYTES:
        raise ValueError(f"root key must be a {PUBLIC_KEY_BYTES}-byte Ed25519 public key")
    body = TRUST_MAGIC + trust.root_key + struct.pack("<QQ", trust.root_version, trust.min_release_version)
    return body + struct.pack("<I", crc32c(body))


def decode_trust_state(data: bytes, source: str = TRUST_FILE) -> Trust:
    """The trust saved by :func:`encode_trust_state`; raises :class:`TrustStateError` naming ``source``
    and what is wrong (length, magic, checksum)."""
    if len(data) != TRUST_FILE_BYTES:
        raise TrustStateError(f"{source}: {len(data)} bytes, expected {TRUST_FILE_BYTES} (truncated or not a "
                              f"trust state); refusing to fall back to the pinned root")
    if data[:4] != TRUST_MAGIC:
        raise TrustStateError(f"{source}: bad magic {data[:4]!r} (expected {TRUST_MAGIC!r}); refusing to fall back "
                              f"to the pinned root")
    (stored,) = struct.unpack_from("<I", data, TRUST_FILE_BYTES - 4)
    if crc32c(data[:TRUST_FILE_BYTES - 4]) != stored:
        raise TrustStateError(f"{source}: checksum mismatch (corrupted); refusing to fall back to the pinned root")
    root_version, floor = struct.unpack_from("<QQ", data, 4 + PUBLIC_KEY_BYTES)
    return Trust(data[4:4 + PUBLIC_KEY_BYTES], root_version, floor)


def save_trust(folder: Union[str, Path], trust: Trust) -> Path:
    """Writes ``folder/trust.bin`` atomically and durably (temporary file, fsync, rename, fsync of the folder)."""
    return write_bytes_atomic(Path(folder) / TRUST_FILE, encode_trust_state(trust))


def resume_trust(folder: Union[str, Path], pinned: Trust) -> tuple[Trust, bool]:
    """The trust a device starts from: the one saved in ``folder/trust.bin`` when its root version is not below
    the pinned one (floor: the higher of both), else ``pinned`` (a device re-provisioned with a newer root).
    The second value says whether the saved state was used. A missing file means ``pinned``; a file that
    exists but cannot be read or decoded raises :class:`TrustStateError` (the firmware node refuses to start
    the same way)."""
    path = Path(folder) / TRUST_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return pinned, False
    except OSError as exc:
        raise TrustStateError(f"{path}: cannot be read ({exc}); refusing to fall back to the pinned root") from exc
    saved = decode_trust_state(data, str(path))
    if saved.root_version < pinned.root_version:
        return pinned, False
    return Trust(saved.root_key, saved.root_version, max(saved.min_release_version, pinned.min_release_version),
                 pinned.now), True


@dataclass
class Signer:
    """An online release key with its delegation (and the root rotations devices may still need):
    signs packets with an expiry ``validity`` seconds after signing."""

    release: SigningKey
    delegation: Statement
    rotations: Sequence[Statement] = field(default_factory=tuple)
    validity: int = 7 * 24 * 3600

    def __post_init__(self) -> None:
        if self.delegation.kind != Kind.RELEASE or self.delegation.subject != self.release.public:
            raise ValueError("the delegation does not name this release key")
        if len(self.rotations) > MAX_ROTATIONS:
            raise ValueError(f"at most {MAX_ROTATIONS} root rotations fit in a signature block")

    def sign(self, packet: PacketLike, expiry: Optional[int] = None) -> bytes:
        """``packet`` signed (see :func:`sign_packet`), expiring ``validity`` s from now unless given."""
        when = int(time.time()) + self.validity if expiry is None else expiry
        return sign_packet(packet, self.release, self.delegation, when, self.rotations)


def _split(data: bytes) -> tuple[int, int, int, int]:
    """(flags, payload length, signature block length, offset of the trailer) of a packet."""
    if len(data) < PACKET_HEADER_BYTES + 4 or data[:4] != PACKET_MAGIC:
        raise ValueError("not an edgert update packet")
    (flags,) = struct.unpack_from("<H", data, 6)
    sig_len, payload_len = struct.unpack_from("<IQ", data, 60)
    if not flags & FLAG_SIGNED:
        sig_len = 0
    end = PACKET_HEADER_BYTES + payload_len + sig_len
    if end + 4 > len(data):
        raise ValueError("truncated packet")
    return flags, payload_len, sig_len, end


def block_bytes(rotations: int) -> int:
    """Length of a signature block carrying ``rotations`` root rotations."""
    return BLOCK_HEADER_BYTES + STATEMENT_BYTES * (rotations + 1) + PACKET_SIGNATURE_BYTES


def packet_digest(header: bytes, payload: bytes) -> bytes:
    """SHA-256 of the header (authenticated flag cleared, so a per-device MAC does not change it) and
    the payload: everything that determines the applied weights."""
    h = bytearray(header)
    (flags,) = struct.unpack_from("<H", h, 6)
    struct.pack_into("<H", h, 6, flags & ~FLAG_AUTHENTICATED)
    return hashlib.sha256(bytes(h) + payload).digest()


def _packet_message(digest: bytes, signer_id: bytes, expiry: int) -> bytes:
    return PACKET_DOMAIN + digest + signer_id + struct.pack("<Q", expiry)


def sign_packet(packet: PacketLike, release: SigningKey, delegation: Statement, expiry: int,
                rotations: Sequence[Statement] = ()) -> bytes:
    """The packet with a signature block (replacing any earlier one): sets ``FLAG_SIGNED`` and the block
    length, inserts the block before the CRC and recomputes the CRC. A MAC is dropped: authenticate
    the signed packet afterwards (the signature does not cover the MAC, the MAC covers the block)."""
    data = bytes(packet)
    flags, payload_len, _, _ = _split(data)
    if len(rotations) > MAX_ROTATIONS:
        raise ValueError(f"at most {MAX_ROTATIONS} root rotations fit in a signature block")
    block_len = block_bytes(len(rotations))
    header = bytearray(data[:PACKET_HEADER_BYTES])
    struct.pack_into("<H", header, 6, (flags | FLAG_SIGNED) & ~FLAG_AUTHENTICATED)
    struct.pack_into("<I", header, 60, block_len)
    payload = data[PACKET_HEADER_BYTES:PACKET_HEADER_BYTES + payload_len]
    message = _packet_message(packet_digest(bytes(header), payload), release.key_id, expiry)
    block = BLOCK_MAGIC + struct.pack("<BBH", BLOCK_VERSION, len(rotations), 0)
    block += b"".join(r.encode() for r in rotations) + delegation.encode()
    block += release.key_id + struct.pack("<Q", expiry) + release.sign(message)
    body = bytes(header) + payload + block
    return body + struct.pack("<I", crc32c(body))


def strip_signature(packet: PacketLike) -> bytes:
    """The packet without its signature block (and without a MAC): what transcoding starts from."""
    data = bytes(packet)
    flags, payload_len, _, _ = _split(data)
    header = bytearray(data[:PACKET_HEADER_BYTES])
    struct.pack_into("<H", header, 6, flags & ~(FLAG_SIGNED | FLAG_AUTHENTICATED))
    struct.pack_into("<I", header, 60, 0)
    body = bytes(header) + data[PACKET_HEADER_BYTES:PACKET_HEADER_BYTES + payload_len]
    return body + struct.pack("<I", crc32c(body))


@dataclass(frozen=True)
class SignatureBlock:
    """A parsed signature block."""

    rotations: tuple[Statement, ...]
    delegation: Statement
    signer_id: bytes
    expiry: int
    signature: bytes
    digest: bytes


def parse_block(packet: PacketLike) -> Optional[SignatureBlock]:
    """The signature block of a packet (None when unsigned); malformed blocks raise SignatureError."""
    data = bytes(packet)
    flags, payload_len, sig_len, _ = _split(data)
    if not flags & FLAG_SIGNED:
        return None
    bad = "EDGERT_ERR_PACKET_MALFORMED"
    block = data[PACKET_HEADER_BYTES + payload_len:PACKET_HEADER_BYTES + payload_len + sig_len]
    if len(block) < BLOCK_HEADER_BYTES or block[:4] != BLOCK_MAGIC:
        raise SignatureError(bad, "signature block: bad magic (expected 'ERSB')")
    version, count, reserved = struct.unpack_from("<BBH", block, 4)
    if version != BLOCK_VERSION or reserved:
        raise SignatureError("EDGERT_ERR_PACKET_UNSUPPORTED_VERSION", f"signature block version {version}")
    if count > MAX_ROTATIONS or sig_len != block_bytes(count):
        raise SignatureError(bad, f"signature block of {sig_len} bytes with {count} rotations")
    stmts = [Statement.decode(block[BLOCK_HEADER_BYTES + STATEMENT_BYTES * i:][:STATEMENT_BYTES])
             for i in range(count + 1)]
    if stmts[count].kind != Kind.RELEASE or any(r.kind != Kind.ROOT for r in stmts[:count]):
        raise SignatureError(bad, "signature block: expected root rotations, then one delegation")
    versions = [r.version for r in stmts[:count]]
    if any(r.expiry for r in stmts[:count]) or any(b <= a for a, b in zip(versions, versions[1:])):
        raise SignatureError(bad, "signature block: a root rotation has an expiry or is out of version order")
    tail = block[BLOCK_HEADER_BYTES + STATEMENT_BYTES * (count + 1):]
    (expiry,) = struct.unpack_from("<Q", tail, 8)
    digest = packet_digest(data[:PACKET_HEADER_BYTES], data[PACKET_HEADER_BYTES:PACKET_HEADER_BYTES + payload_len])
    return SignatureBlock(tuple(stmts[:count]), stmts[count], tail[:8], expiry, tail[16:80], digest)


def verify_packet(packet: PacketLike, trust: Trust) -> Trust:
    """Checks a packet's signature block against ``trust`` exactly as libedgert's slot does (same
    order, same statuses) and returns the trust state the device holds after applying it (rotated
    root, raised delegation floor); ``trust`` itself is unchanged. Raises :class:`SignatureError`.

    Covers the signature checks only: CRC, MAC and version-chain checks (``STALE`` for a rolled-back
    target) stay with the slot.
    """
    block = parse_block(packet)
    if block is None:
        raise SignatureError("EDGERT_ERR_PACKET_UNSIGNED", "packet is not signed and the device requires signatures")
    root, root_version = trust.root_key, trust.root_version
    for r in block.rotations:
        if r.version <= root_version:
            continue  # already applied earlier
        if r.version != root_version + 1 or not r.verifies_under(root):
            raise SignatureError("EDGERT_ERR_PACKET_BAD_ROTATION",
                                 f"root rotation to version {r.version} is not signed by root version {root_version}")
        root, root_version = r.subject, r.version
    d = block.delegation
    if d.signer_id != key_id(root):
        raise SignatureError("EDGERT_ERR_PACKET_UNKNOWN_KEY", "delegation is signed by a key that is not the root")
    if not d.verifies_under(root):
        raise SignatureError("EDGERT_ERR_PACKET_BAD_SIGNATURE", "delegation signature does not verify")
    if d.version < trust.min_release_version:
        raise SignatureError("EDGERT_ERR_PACKET_UNKNOWN_KEY",
                             f"release key delegation {d.version} was revoked (device accepts >= "
                             f"{trust.min_release_version})")
    now = trust.clock()
    if d.expiry <= now:
        raise SignatureError("EDGERT_ERR_PACKET_EXPIRED", f"delegation expired at {d.expiry} (now {now})")
    if block.signer_id != key_id(d.subject):
        raise SignatureError("EDGERT_ERR_PACKET_UNKNOWN_KEY", "packet is signed by a key the delegation does not name")
    if not _verify(d.subject, block.signature, _packet_message(block.digest, block.signer_id, block.expiry)):
        raise SignatureError("EDGERT_ERR_PACKET_BAD_SIGNATURE", "packet signature does not verify")
    if block.expiry <= now:
        raise SignatureError("EDGERT_ERR_PACKET_EXPIRED", f"packet expired at {block.expiry} (now {now})")
    return Trust(root, root_version, max(trust.min_release_version, d.version), trust.now)
