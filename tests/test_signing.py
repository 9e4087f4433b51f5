"""Release signatures: golden signed packets (shared with tests/cpp/test_signing.cpp), the Python
signer/verifier, libedgert's slot trust, and signed delivery from ModelServer to EdgeClient on localhost."""
from __future__ import annotations

import importlib.util
import socket
import struct
import time
from pathlib import Path

import numpy as np
import pytest

import edgert._edgert as _edgert
from conftest import needs_signatures, wait_for
from edgert.transport import EdgeClient, ModelServer
from edgert.transport.frames import FrameType, encode_frame
from edgert.updates import Manifest, TensorSpec, authenticate, crc32c, encode_update, transcode
from edgert.updates.signing import (
    TRUST_FILE,
    Kind,
    SignatureError,
    Signer,
    SigningKey,
    Trust,
    TrustStateError,
    block_bytes,
    decode_trust_state,
    delegate,
    encode_trust_state,
    parse_block,
    resume_trust,
    rotate_root,
    save_trust,
    sign_packet,
    sign_statement,
    strip_signature,
    verify_packet,
)

SIGNED = Path(__file__).parent / "data" / "signed"
PACKETS = Path(__file__).parent / "data" / "packets"


def _make_signed():
    spec = importlib.util.spec_from_file_location("make_signed", SIGNED / "make_signed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cases():
    """(now, initial trust, [(file, expected status)], expected final trust) from cases.txt."""
    now, trust, applies, final = 0, None, [], None
    for line in (SIGNED / "cases.txt").read_text().splitlines():
        word, *rest = line.split()
        if word == "now":
            now = int(rest[0])
        elif word == "trust":
            trust = Trust((SIGNED / rest[0]).read_bytes(), int(rest[1]), int(rest[2]), now)
        elif word == "apply":
            applies.append((rest[0], rest[1]))
        elif word == "expect_trust":
            final = Trust((SIGNED / rest[0]).read_bytes(), int(rest[1]), int(rest[2]), now)
    return now, trust, applies, final


def test_golden_signed_packets_are_reproduced_byte_for_byte():
    for name, data in _make_signed().generate().items():
        assert (SIGNED / name).read_bytes() == data, name


@needs_signatures
@pytest.mark.parametrize("piece,key", [(0, None), (1, None), (333, None), (65536, b"m" * 32), (5, b"m" * 32)])
def test_slot_gives_each_golden_case_its_status_and_keeps_the_weights(piece, key):
    """Whole packets (piece 0), and packets hashed while they arrive in pieces (``Slot.receive``, then
    ``apply(received=True)``), with and without a device key (HMAC): the same statuses and weights."""
    now, trust, applies, final = _cases()
    slot = _edgert.Slot((PACKETS / "manifest.bin").read_bytes())
    slot.set_trust(trust.root_key, trust.root_version, trust.min_release_version, now)
    if key is not None:
        slot.set_key(key)
    statuses = set()
    for name, expected in applies:
        before = slot.weights()
        packet = (SIGNED / name).read_bytes()
        if key is not None:
            packet = authenticate(packet, key)
        for at in range(0, len(packet), piece) if piece else ():
            slot.receive(packet[at:at + piece])
        try:
            slot.apply(packet, received=piece > 0)
            got = "EDGERT_OK"
        except _edgert.PacketError as exc:
            got = exc.status_name
            assert slot.weights() == before, name  # rejected: weights and version untouched
        assert got == expected, name
        statuses.add(got)
        weights, version = slot.weights()
        if version:
            assert weights == (PACKETS / f"weights_v{version}.bin").read_bytes(), name
    assert {"EDGERT_ERR_PACKET_UNSIGNED", "EDGERT_ERR_PACKET_BAD_SIGNATURE", "EDGERT_ERR_PACKET_UNKNOWN_KEY",
            "EDGERT_ERR_PACKET_EXPIRED", "EDGERT_ERR_PACKET_BAD_ROTATION", "EDGERT_ERR_PACKET_STALE"} <= statuses
    assert slot.version == 3
    assert slot.trust() == {"root_key": final.root_key, "root_version": 1, "min_release_version": 2, "now": now}


def test_python_verifier_agrees_with_the_golden_statuses():
    _, trust, applies, final = _cases()
    for name, expected in applies:
        try:
            after = verify_packet((SIGNED / name).read_bytes(), trust)
            got = "EDGERT_OK"
        except SignatureError as exc:
            got = exc.status
        if expected == "EDGERT_ERR_PACKET_STALE":  # a valid signature; the version check is the slot's
            assert got == "EDGERT_OK", name
            continue
        assert got == expected, name
        if got == "EDGERT_OK":
            trust = after
    assert (trust.root_key, trust.root_version, trust.min_release_version) == (final.root_key, 1, 2)


@needs_signatures
def test_signed_packets_verify_without_trust_and_with_a_mac():
    """A slot without trust ignores a well-formed block; the MAC covers the block and is not signed."""
    now, trust, _, _ = _cases()
    key = (PACKETS / "key.bin").read_bytes()
    plain = _edgert.Slot((PACKETS / "manifest.bin").read_bytes())
    plain.apply((SIGNED / "signed_v1.bin").read_bytes())
    assert plain.version == 1
    slot = _edgert.Slot((PACKETS / "manifest.bin").read_bytes())
    slot.set_key(key)
    slot.set_trust(trust.root_key, 0, 0, now)
    slot.apply(authenticate((SIGNED / "signed_v1.bin").read_bytes(), key))
    slot.apply(authenticate((SIGNED / "signed_v2.bin").read_bytes(), key))
    assert slot.version == 2
    header = _edgert.inspect_packet((SIGNED / "signed_v2.bin").read_bytes())
    assert header["signed"] and header["signature_length"] == block_bytes(1)


@needs_signatures
def test_every_truncation_and_byte_flip_of_the_signature_block_is_rejected():
    now, trust, _, _ = _cases()
    data = (SIGNED / "signed_v2.bin").read_bytes()
    start = len(data) - 4 - block_bytes(1)
    slot = _edgert.Slot((PACKETS / "manifest.bin").read_bytes())
    slot.set_trust(trust.root_key, 0, 0, now)
    slot.apply((SIGNED / "signed_v1.bin").read_bytes())
    before = slot.weights()
    for cut in range(start, len(data)):
        with pytest.raises(_edgert.PacketError):
            slot.apply(data[:cut])
    for pos in range(start, len(data) - 4):
        bad = bytearray(data)
        bad[pos] ^= 0x01
        struct.pack_into("<I", bad, len(bad) - 4, crc32c(bytes(bad[:-4])))
        with pytest.raises(_edgert.PacketError):
            slot.apply(bytes(bad))
        assert slot.weights() == before
    slot.apply(data)
    assert slot.version == 2


@needs_signatures
def test_set_trust_checks_its_argument_and_none_removes_it():
    slot = _edgert.Slot((PACKETS / "manifest.bin").read_bytes())
    with pytest.raises(ValueError, match="32-byte"):
        slot.set_trust(b"short")
    assert slot.trust() is None
    slot.set_trust(bytes(32))
    with pytest.raises(_edgert.PacketError, match="requires release signatures"):
        slot.apply((PACKETS / "full_snapshot.bin").read_bytes())
    slot.set_trust(None)
    slot.apply((PACKETS / "full_snapshot.bin").read_bytes())
    assert slot.version == 1


def test_signing_strips_and_survives_transcoding():
    root, rel = SigningKey(bytes(range(32))), SigningKey(bytes(range(1, 33)))
    trust = Trust(root.public, now=1000)
    signer = Signer(rel, delegate(root, rel.public, 1, 5000), validity=60)
    manifest = Manifest.from_bytes((PACKETS / "manifest.bin").read_bytes())
    v2 = (PACKETS / "v2_sparse_fp16.bin").read_bytes()
    signed = signer.sign(v2, expiry=2000)
    assert parse_block(signed) is not None and parse_block(strip_signature(signed)) is None
    down = transcode(signed, manifest, max_format=1)  # loses the block: the server signs after transcoding
    assert parse_block(down) is None
    verify_packet(signer.sign(down, expiry=2000), trust)
    with pytest.raises(SignatureError) as err:
        verify_packet(down, trust)
    assert err.value.status == "EDGERT_ERR_PACKET_UNSIGNED"
    with pytest.raises(ValueError, match="does not name this release key"):
        Signer(root, signer.delegation)
    with pytest.raises(ValueError, match="does not expire"):
        sign_statement(root, Kind.ROOT, rel.public, 1, expiry=5)


MANIFEST = Manifest(bytes(range(16)), (TensorSpec("w", "float32", (64, 32)), TensorSpec("b", "float16", (32,))))
KEYS = {"cam-1": b"k" * 32}


def _weights(seed=0):
    rng = np.random.default_rng(seed)
    return {"w": rng.standard_normal((64, 32)).astype(np.float32), "b": rng.standard_normal(32).astype(np.float16)}


@needs_signatures
def test_server_signs_and_the_edge_verifies_rotations_and_rejects_forgeries():
    """Real TCP on localhost: a signing server delivers, a root rotation carries over, a server whose
    release key the device does not trust gets NACKs and the device's weights stay as they were."""
    root0, root1, rel = SigningKey(b"\x01" * 32), SigningKey(b"\x02" * 32), SigningKey(b"\x03" * 32)
    far = int(time.time()) + 3600
    signer = Signer(rel, delegate(root1, rel.public, 5, far), [rotate_root(root0, root1.public, 1)])
    trust = Trust(root0.public)
    with ModelServer(MANIFEST, KEYS, _weights(), signer=signer) as server:
        client = EdgeClient(server.address, "cam-1", KEYS["cam-1"], trust=trust).start()
        try:
            assert wait_for(lambda: client.version == 1)
            rng = np.random.default_rng(1)
            idx = np.sort(rng.choice(64 * 32, 50, replace=False))
            server.publish({"w": (idx, (0.01 * rng.standard_normal(50)).astype(np.float32))})
            assert wait_for(lambda: client.version == 2)
            assert client.slot.weights()[0] == server.weights_bytes()
            assert (client.trust.root_key, client.trust.root_version, client.trust.min_release_version) == (
                root1.public, 1, 5)
        finally:
            client.stop()
    forged = Signer(rel, delegate(rel, rel.public, 9, far))  # the release key posing as a root
    with ModelServer(MANIFEST, KEYS, _weights(1), signer=forged) as server:
        for _ in range(2):  # past the device's version 2 (a device ahead of a shared stream is refused, not served)
            server.publish({"w": (idx, (0.01 * rng.standard_normal(50)).astype(np.float32))})
        before = client.slot.weights()
        client2 = EdgeClient(server.address, "cam-1", KEYS["cam-1"], trust=client.trust)
        client2.slot, client2._manifest = client.slot, MANIFEST.to_bytes()
        client2.start()
        try:
            assert wait_for(lambda: server.devices.get("cam-1") is not None and server.devices["cam-1"].nacks)
            assert "not signed by the root key" in server.devices["cam-1"].nacks[0]
            assert client2.slot.weights() == before
        finally:
            client2.stop()


def test_encoded_packets_sign_for_each_format():
    root, rel = SigningKey(b"\x05" * 32), SigningKey(b"\x06" * 32)
    d = delegate(root, rel.public, 1, 10**10)
    rng = np.random.default_rng(3)
    idx = np.sort(rng.choice(64 * 32, 80, replace=False))
    for fmt in (1, 2, 3):
        pkt = encode_update(MANIFEST, 0, 1, {"w": (idx, rng.standard_normal(80).astype(np.float32))},
                            max_format=fmt, value_coding="fp16")
        signed = sign_packet(pkt, rel, d, 10**10)
        assert verify_packet(signed, Trust(root.public, now=1)).min_release_version == 1


@needs_signatures
def test_firmware_node_with_a_pinned_root_applies_signed_and_refuses_unsigned(tmp_path):
    """The real edgert_edge_node binary with --root-key: signed delivery converges, the trust it reached
    survives a restart (trust.bin), and a server without the release key gets NACKs and no weights."""
    from test_edge_node import DEVICE, KEY, Node, _find_or_build_node
    from test_edge_node import MANIFEST as NODE_MANIFEST
    from test_edge_node import _weights as node_weights

    binary = _find_or_build_node()
    root0, root1, rel = SigningKey(b"\x11" * 32), SigningKey(b"\x12" * 32), SigningKey(b"\x13" * 32)
    (tmp_path / "root.pub").write_bytes(root0.public)
    signer = Signer(rel, delegate(root1, rel.public, 3, int(time.time()) + 3600), [rotate_root(root0, root1.public, 1)])
    extra = ("--root-key", str(tmp_path / "root.pub"))
    with ModelServer(NODE_MANIFEST, {DEVICE: KEY}, node_weights(), signer=signer) as server:
        node = Node(binary, server.address[1], tmp_path, extra_args=extra)
        try:
            assert wait_for(lambda: node.version() == server.version == 1, timeout=15.0), node.log_text()
            assert node.weights()[1] == server.weights_bytes()
        finally:
            node.stop()
    saved = (tmp_path / "state" / TRUST_FILE).read_bytes()
    assert decode_trust_state(saved) == Trust(root1.public, 1, 3)  # the file EdgeClient(state_dir=) reads
    assert saved == encode_trust_state(Trust(root1.public, 1, 3))
    with ModelServer(NODE_MANIFEST, {DEVICE: KEY}, node_weights(1)) as server:  # no release key
        server.publish_snapshot(node_weights(2))  # version 2: the node (at 1) is sent a packet
        node = Node(binary, server.address[1], tmp_path, extra_args=extra)
        try:
            assert wait_for(lambda: bool(server.devices.get(DEVICE) and server.devices[DEVICE].nacks), timeout=15.0)
            assert "EDGERT_ERR_PACKET_UNSIGNED" in server.devices[DEVICE].nacks[0]
            assert "resumed trust: root version 1" in node.log_text()
            version, weights = node.weights()
            assert version == 1 and weights != server.weights_bytes()
        finally:
            node.stop()


def test_release_cli_keygen_delegate_rotate_sign_verify(tmp_path, capsys):
    from edgert.cli import main

    def run(*argv: str) -> int:
        return main(["release", *argv])

    for name in ("root", "root2", "rel"):
        assert run("keygen", name, "--dir", str(tmp_path)) == 0
    assert (tmp_path / "root.key").stat().st_mode & 0o777 == 0o600
    t = {n: str(tmp_path / n) for n in ("root.key", "root.pub", "root2.key", "root2.pub", "rel.key", "rel.pub",
                                       "d.stmt", "rot.stmt", "s.bin", "bad.stmt")}
    assert run("rotate", "--root", t["root.key"], "--new-root", t["root2.pub"], "--version", "1", "-o",
               t["rot.stmt"]) == 0
    assert run("delegate", "--root", t["root2.key"], "--release", t["rel.pub"], "--version", "4", "-o",
               t["d.stmt"]) == 0
    assert run("sign", str(PACKETS / "sparse_fp16.bin"), "--key", t["rel.key"], "--delegation", t["d.stmt"],
               "--rotation", t["rot.stmt"], "-o", t["s.bin"]) == 0
    capsys.readouterr()
    assert run("verify", t["s.bin"], "--root", t["root.pub"]) == 0
    assert "root version 1, delegations >= 4" in capsys.readouterr().out
    assert run("verify", t["s.bin"], "--root", t["root2.pub"], "--root-version", "1", "--min-release-version",
               "5") == 1
    assert "EDGERT_ERR_PACKET_UNKNOWN_KEY" in capsys.readouterr().out
    # a rotation signed by the release key instead of the current root
    assert run("rotate", "--root", t["rel.key"], "--new-root", t["root2.pub"], "--version", "1", "-o",
               t["bad.stmt"]) == 0
    assert run("sign", str(PACKETS / "sparse_fp16.bin"), "--key", t["rel.key"], "--delegation", t["d.stmt"],
               "--rotation", t["bad.stmt"], "-o", t["s.bin"]) == 0
    assert run("verify", t["s.bin"], "--root", t["root.pub"]) == 1
    assert "EDGERT_ERR_PACKET_BAD_ROTATION" in capsys.readouterr().out
    assert run("verify", str(PACKETS / "sparse_fp16.bin"), "--root", t["root.pub"]) == 1
    assert "EDGERT_ERR_PACKET_UNSIGNED" in capsys.readouterr().out


@needs_signatures
def test_edge_client_nacks_each_bad_golden_packet_with_its_status_and_keeps_its_weights():
    """The golden bad packets, MAC'd for the device and pushed over TCP to an EdgeClient that pins root 0:
    each is NACKed with its own status, the client's weights never move, and a good one still applies."""
    gen = _make_signed()
    now, _, applies, _ = _cases()
    manifest = Manifest.from_bytes((PACKETS / "manifest.bin").read_bytes())
    key = b"d" * 32
    rel_a = gen.key("release A")
    signer = Signer(rel_a, delegate(gen.key("root 0"), rel_a.public, 1, now + 86_400), validity=10**8)
    weights = {t.name: np.zeros(t.shape, t.np_dtype) for t in manifest.tensors}
    with ModelServer(manifest, {"cam": key}, weights, signer=signer) as server:
        client = EdgeClient(server.address, "cam", key,
                            trust=Trust((SIGNED / "root0.pub").read_bytes(), now=now)).start()
        try:
            assert wait_for(lambda: client.version == 1)
            before = client.slot.weights()
            expected = [(n, s) for n, s in applies if s not in ("EDGERT_OK", "EDGERT_ERR_PACKET_STALE")][:6]
            for i, (name, status) in enumerate(expected):
                packet = authenticate((SIGNED / name).read_bytes(), key)
                assert server.inject("cam", encode_frame(FrameType.PACKET, packet))
                assert wait_for(lambda: len(server.devices["cam"].nacks) > i), name
                assert server.devices["cam"].nacks[i].startswith(status), (name, server.devices["cam"].nacks[i])
                assert client.slot.weights() == before, name
            assert len({n.split(":")[0] for n in server.devices["cam"].nacks}) == 5  # EXPIRED twice
        finally:
            client.stop()


def test_server_and_device_options_build_the_signer_and_trust_that_deliver(tmp_path):
    """The options the AMS and RECL servers and devices take (``add_release_arguments``): files made by
    ``edgert release`` become a Signer and a Trust that deliver a signed update over TCP; a device pinned to
    another root refuses it; every wrong option is refused naming the file or the option."""
    import argparse

    from edgert.cli import main
    from edgert.updates.release_cli import add_release_arguments, signer_from_args, trust_dir_from_args, trust_from_args

    for name in ("root", "other", "rel"):
        assert main(["release", "keygen", name, "--dir", str(tmp_path)]) == 0
    stmt = tmp_path / "d.stmt"
    assert main(["release", "delegate", "--root", str(tmp_path / "root.key"), "--release",
                 str(tmp_path / "rel.pub"), "--version", "2", "-o", str(stmt)]) == 0
    server_parser, device_parser = argparse.ArgumentParser(), argparse.ArgumentParser()
    add_release_arguments(server_parser, server=True)
    add_release_arguments(device_parser)
    signer = signer_from_args(server_parser.parse_args(
        ["--release-key", str(tmp_path / "rel.key"), "--delegation", str(stmt), "--signature-days", "1"]))
    device_args = device_parser.parse_args(["--root-key", str(tmp_path / "root.pub"), "--trust-dir",
                                            str(tmp_path / "trust")])
    trust, trust_dir = trust_from_args(device_args), trust_dir_from_args(device_args)
    assert signer is not None and trust is not None and signer.validity == 86_400
    assert trust_dir == tmp_path / "trust"
    assert trust_dir_from_args(device_parser.parse_args([])) is None
    assert signer_from_args(server_parser.parse_args([])) is None
    assert trust_from_args(device_parser.parse_args([])) is None

    keys = {**KEYS, "cam-2": b"q" * 32}
    with ModelServer(MANIFEST, keys, _weights(), signer=signer) as server:
        client = EdgeClient(server.address, "cam-1", keys["cam-1"], trust=trust, state_dir=trust_dir).start()
        try:
            assert wait_for(lambda: client.version == 1)
            assert client.slot.weights()[0] == server.weights_bytes()
            assert client.trust.min_release_version == 2
        finally:
            client.stop()
        assert decode_trust_state((tmp_path / "trust" / TRUST_FILE).read_bytes()).min_release_version == 2
        stranger = trust_from_args(device_parser.parse_args(["--root-key", str(tmp_path / "other.pub")]))
        refused = EdgeClient(server.address, "cam-2", keys["cam-2"], trust=stranger).start()
        try:
            assert wait_for(lambda: server.devices.get("cam-2") is not None and server.devices["cam-2"].nacks)
            assert refused.version == 0
        finally:
            refused.stop()

    def fails(parser: argparse.ArgumentParser, build, argv: list[str], message: str) -> None:
        with pytest.raises(ValueError, match=message):
            build(parser.parse_args(argv))

    fails(server_parser, signer_from_args, ["--release-key", str(tmp_path / "rel.key")], "needs --delegation")
    fails(server_parser, signer_from_args, ["--delegation", str(stmt)], "needs --release-key")
    fails(server_parser, signer_from_args, ["--release-key", str(tmp_path / "missing.key"), "--delegation",
                                            str(stmt)], "missing.key")
    fails(server_parser, signer_from_args, ["--release-key", str(tmp_path / "rel.key"), "--delegation",
                                            str(tmp_path / "rel.pub")], "--delegation .*rel.pub")
    fails(server_parser, signer_from_args, ["--release-key", str(tmp_path / "other.key"), "--delegation",
                                            str(stmt)], "does not name this release key")
    fails(server_parser, signer_from_args, ["--release-key", str(tmp_path / "rel.key"), "--delegation", str(stmt),
                                            "--signature-days", "0"], "--signature-days")
    fails(device_parser, trust_from_args, ["--root-key", str(stmt)], "32 bytes, got 128")
    fails(device_parser, trust_dir_from_args, ["--trust-dir", str(tmp_path / "trust")], "--trust-dir needs --root-key")
    (tmp_path / "trust" / TRUST_FILE).write_bytes(b"\0" * 56)
    fails(device_parser, trust_dir_from_args, ["--root-key", str(tmp_path / "root.pub"), "--trust-dir",
                                               str(tmp_path / "trust")], "trust.bin: bad magic")
    fails(device_parser, trust_from_args, ["--root-key", str(tmp_path / "root.pub"), "--root-version", "-1"],
          "must be >= 0")


def test_trust_state_file_round_trips_and_resumes_only_when_not_older_than_the_pinned_root(tmp_path):
    root0, root1 = SigningKey(b"\x21" * 32).public, SigningKey(b"\x22" * 32).public
    assert resume_trust(tmp_path, Trust(root0, 0, 2, now=7)) == (Trust(root0, 0, 2, now=7), False)  # no file
    save_trust(tmp_path, Trust(root1, 1, 5))
    data = (tmp_path / TRUST_FILE).read_bytes()
    assert len(data) == 56 and data[:4] == b"ERTT" and data[4:36] == root1
    assert resume_trust(tmp_path, Trust(root0, 0, 0, now=7)) == (Trust(root1, 1, 5, now=7), True)
    assert resume_trust(tmp_path, Trust(root0, 1, 9)) == (Trust(root1, 1, 9), True)  # the higher floor wins
    assert resume_trust(tmp_path, Trust(root0, 2, 0)) == (Trust(root0, 2, 0), False)  # re-provisioned, newer root
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("damage,message", [
    (lambda d: d[:40], "40 bytes, expected 56"),
    (lambda d: b"", "0 bytes, expected 56"),
    (lambda d: d + b"\x00", "57 bytes, expected 56"),
    (lambda d: b"XXXX" + d[4:], "bad magic"),
    (lambda d: d[:40] + bytes([d[40] ^ 1]) + d[41:], "checksum mismatch"),  # root version bit flip
])
def test_edge_client_refuses_a_truncated_or_corrupted_trust_file(tmp_path, damage, message):
    """No silent fall-back to the pinned root (which could re-admit a rotated-out root): the client is not
    created, the message names the file and the fault, and the file is left for the operator."""
    root0, root1 = SigningKey(b"\x21" * 32).public, SigningKey(b"\x22" * 32).public
    save_trust(tmp_path, Trust(root1, 3, 4))
    bad = damage((tmp_path / TRUST_FILE).read_bytes())
    (tmp_path / TRUST_FILE).write_bytes(bad)
    with pytest.raises(TrustStateError, match=f"trust.bin: {message}.*refusing to fall back"):
        EdgeClient(("127.0.0.1", 1), "cam-1", KEYS["cam-1"], trust=Trust(root0), state_dir=tmp_path)
    assert (tmp_path / TRUST_FILE).read_bytes() == bad
    EdgeClient(("127.0.0.1", 1), "cam-1", KEYS["cam-1"], state_dir=tmp_path)  # without trust the file is unused


@needs_signatures
def test_restarted_edge_client_keeps_the_rotated_root_and_the_delegation_floor(tmp_path):
    """Real TCP on localhost: an EdgeClient with a state dir applies a rotation (root 0 -> 1) and delegation 5;
    a new EdgeClient on the same state dir, started with only root 0 pinned, resumes root 1 and floor 5, and
    NACKs a packet under a delegation by the rotated-out root 0 and one under the revoked delegation 4, keeping
    its weights; without the saved state root 0's packet would verify."""
    root0, root1 = SigningKey(b"\x31" * 32), SigningKey(b"\x32" * 32)
    rel, rel_old, evil = SigningKey(b"\x33" * 32), SigningKey(b"\x34" * 32), SigningKey(b"\x35" * 32)
    far = int(time.time()) + 3600
    signer = Signer(rel, delegate(root1, rel.public, 5, far), [rotate_root(root0, root1.public, 1)])
    state = tmp_path / "edge"
    pinned = Trust(root0.public)
    with ModelServer(MANIFEST, KEYS, _weights(), signer=signer) as server:
        first = EdgeClient(server.address, "cam-1", KEYS["cam-1"], trust=pinned, state_dir=state).start()
        try:
            assert wait_for(lambda: first.version == 1)
        finally:
            first.stop()
        assert decode_trust_state((state / TRUST_FILE).read_bytes()) == Trust(root1.public, 1, 5)

        lines: list[str] = []
        client = EdgeClient(server.address, "cam-1", KEYS["cam-1"], trust=pinned, state_dir=state,
                            log=lines.append)
        assert (client.trust.root_key, client.trust.root_version, client.trust.min_release_version) == (
            root1.public, 1, 5)
        assert any("resumed trust: root version 1, delegations >= 5" in line for line in lines)
        client.start()
        try:
            assert wait_for(lambda: client.version == 1)
            before = client.slot.weights()
            rng = np.random.default_rng(4)
            idx = np.sort(rng.choice(64 * 32, 40, replace=False))
            update = encode_update(MANIFEST, 1, 2, {"w": (idx, rng.standard_normal(40).astype(np.float32))})
            old_root = sign_packet(update, evil, delegate(root0, evil.public, 9, far), far)
            revoked = sign_packet(update, rel_old, delegate(root1, rel_old.public, 4, far), far)
            assert verify_packet(old_root, pinned).root_version == 0  # the hole the saved state closes
            for i, (packet, status, words) in enumerate([
                    (old_root, "EDGERT_ERR_PACKET_UNKNOWN_KEY", "not signed by the root key"),
                    (revoked, "EDGERT_ERR_PACKET_UNKNOWN_KEY", "delegation 4 was revoked")]):
                assert server.inject("cam-1", encode_frame(FrameType.PACKET, authenticate(packet, KEYS["cam-1"])))
                assert wait_for(lambda: len(server.devices["cam-1"].nacks) > i)
                nack = server.devices["cam-1"].nacks[i]
                assert nack.startswith(status) and words in nack, nack
                assert client.version == 1 and client.slot.weights() == before
        finally:
            client.stop()
    assert decode_trust_state((state / TRUST_FILE).read_bytes()) == Trust(root1.public, 1, 5)


@needs_signatures
def test_firmware_node_resumes_a_python_trust_file_and_refuses_a_corrupted_one(tmp_path):
    """The node and EdgeClient share trust.bin: the node resumes a file written by ``save_trust``, and refuses to
    start (exit 2, the fault in its log) on a truncated or corrupted one instead of falling back to the pinned root."""
    from test_edge_node import Node, _find_or_build_node

    binary = _find_or_build_node()
    root0, root1 = SigningKey(b"\x41" * 32), SigningKey(b"\x42" * 32)
    (tmp_path / "root.pub").write_bytes(root0.public)
    extra = ("--root-key", str(tmp_path / "root.pub"))
    with socket.socket() as probe:  # a port nobody listens on: the node only loads its state and retries
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    save_trust(tmp_path / "state", Trust(root1.public, 1, 3))
    good = (tmp_path / "state" / TRUST_FILE).read_bytes()
    node = Node(binary, port, tmp_path, extra_args=extra)
    try:
        assert wait_for(lambda: "resumed trust: root version 1, delegations >= 3" in node.own_log(), timeout=10.0)
    finally:
        node.stop()
    for bad, message in [(good[:48], "48 bytes, expected 56"), (good[:44] + b"\x07" + good[45:], "checksum mismatch")]:
        (tmp_path / "state" / TRUST_FILE).write_bytes(bad)
        node = Node(binary, port, tmp_path, extra_args=extra)
        try:
            assert node.proc.wait(timeout=10) == 2
            assert f"trust.bin: {message}" in node.own_log() and "refusing to start" in node.own_log()
        finally:
            node.stop()
        assert (tmp_path / "state" / TRUST_FILE).read_bytes() == bad
