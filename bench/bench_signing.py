"""Release-signature verification time per packet on one core (goal <= 0.2 ms, issue 19).

    python -m bench.bench_signing [--repeats 200] [--quick] [--name bench_signing]

What the device pays for a signature is the slot's check (docs/spec/update-packet.md, "Release signatures"):
SHA-256 over header and payload, then Ed25519 verification of the packet signature, plus one more for the
delegation when it is not the one the slot verified last (first packet, new release key, new root). It is
measured through the binding as the difference of two Slot.apply calls on the same packet that differ only in
the slot's trust:

* ``reject-stale``: the packet's target is not above the active version, so the slot stops with STALE right
  after the CRC (no trust) or after the full signature check (trust, set again after the packet was applied,
  which empties the delegation cache; a rejection never fills it: the uncached path, two Ed25519
  verifications);
* ``reject-stale`` with the delegation cached (the slot applied a packet with the same delegation before): one
  Ed25519 verification, the steady state of a device;
* the same two with the device key set (``+hmac``): every firmware node checks the packet's HMAC-SHA256 too,
  a second SHA-256 pass over the packet (a different chain: the MAC's inner hash starts from the keyed block);
* ``receive`` / ``reject-stale after last byte``: the packet hashed on arrival (docs/spec/update-packet.md,
  "Hashing on arrival"): fed to the slot's receiver in the firmware node's 64 KiB pieces (CPU spent while it
  arrives), then ``Slot.apply(received=True)``: the check after the last byte (CRC, the Ed25519
  verification, no SHA-256), delegation cached, with and without the device key; both parts are reported,
  so the total CPU per packet stays visible;
* ``apply-chain``: a chain of signed updates applied in order with and without trust (whole applies; the
  difference is noisier than the reject rows, which isolate the check).

Packets: a small one (one 256-element tensor); the real AMS update (bench_packet.real_update: the bikes.mp4
student, 0.53M parameters, gradient-guided 5 %, fp16 values) in format 2 (what an AMS server sends by default)
and format 3; and the synthetic worst case, a random 5 % fp16 update of bench_packet's 2.2M-parameter model in
format 1. Peer: the same check in Python (``edgert.updates.signing.verify_packet`` on the ``cryptography``
package's OpenSSL). CPU time of the calling thread (time.thread_time), the process pinned to one core.
Writes ``bench/results/<name>-cpu.json`` and ``.md``; the Ed25519 implementation libedgert was built with
(CMake ``EDGERT_SIGNATURES_BACKEND``) is in the config.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import time

import numpy as np

from bench.bench_packet import _model, _update, real_update
from bench.harness import Row, measure, summarize, write_json
from edgert import _edgert
from edgert._edgert import PacketError, Slot
from edgert.updates import Manifest, TensorSpec, authenticate, encode_snapshot, encode_update
from edgert.updates.signing import SigningKey, Trust, delegate, rotate_root, sign_packet, verify_packet

NOW = 1_800_000_000
ROOT0, ROOT1, RELEASE = (SigningKey(bytes([i]) * 32) for i in (1, 2, 3))


def _sign(packet: bytes) -> bytes:
    return sign_packet(packet, RELEASE, delegate(ROOT1, RELEASE.public, 1, NOW + 86_400), NOW + 86_400,
                       [rotate_root(ROOT0, ROOT1.public, 1)])


KEY = b"k" * 32


def _slot(manifest: Manifest, trusted: bool, keyed: bool = False) -> Slot:
    s = Slot(manifest.to_bytes())
    if trusted:
        s.set_trust(ROOT0.public, 0, 0, NOW)
    if keyed:
        s.set_key(KEY)
    return s


def _cases(chain: int, real: bool, seed: int = 0) -> dict[str, tuple[Manifest, bytes, list[bytes]]]:
    """name -> (manifest, signed snapshot v1, signed update chain v1 -> v1 + chain)."""
    rng = np.random.default_rng(seed)
    small = Manifest(b"\x33" * 16, (TensorSpec("w", "float32", (256,)),))
    out = {}

    def add(name: str, m: Manifest, make, fmt: int) -> None:
        weights = {t.name: rng.standard_normal(t.shape).astype(np.float32) for t in m.tensors}
        snap = _sign(encode_snapshot(m, 1, weights).data)
        ups = [_sign(encode_update(m, v, v + 1, make(), value_coding="fp16", max_format=fmt,
                                   packet_format=fmt).data) for v in range(1, chain + 1)]
        out[f"{name}, format {fmt}"] = (m, snap, ups)

    add("1 tensor x 256 fp32", small, lambda: {"w": (np.arange(0, 256, 20), np.ones(13, np.float32))}, 1)
    if real:
        try:
            real_m, delta = real_update()
        except (FileNotFoundError, ImportError) as exc:  # clip, teacher or PyAV not installed
            print(f"real AMS update skipped: {exc}")
        else:
            for fmt in (2, 3):  # 2: what an AMS server sends by default (AMSConfig.packet_format)
                add("real AMS update (0.53M params, 5%)", real_m, lambda: delta, fmt)
    big = _model()
    add("5% of 2.2M fp32 (fp16 values)", big, lambda: _update(big, rng), 1)
    return out


def _reject_time(m: Manifest, snap: bytes, packet: bytes, trusted: bool, repeats: int, cached: bool = False,
                 keyed: bool = False):
    s = _slot(m, trusted, keyed)
    if keyed:
        snap, packet = authenticate(snap, KEY), authenticate(packet, KEY)
    s.apply(snap)
    s.apply(packet)  # now active: applying it again is STALE
    if trusted and not cached:  # setting the trust again empties the delegation cache; a rejection never fills it
        t = s.trust()
        s.set_trust(t["root_key"], t["root_version"], t["min_release_version"], NOW)

    def again() -> None:
        try:
            s.apply(packet)
        except PacketError as exc:
            if exc.status_name != "EDGERT_ERR_PACKET_STALE":
                raise
            return
        raise AssertionError("expected STALE")
    return measure(again, repeats=repeats, warmup=5, clock=time.thread_time)


PIECE = 64 << 10  # the firmware node reads a frame body in 64 KiB pieces


def _received_time(m: Manifest, snap: bytes, packet: bytes, repeats: int, keyed: bool):
    """(CPU time of feeding the packet to the slot's receiver in 64 KiB pieces as it arrives, CPU time of the
    check after the last byte: Slot.apply(received=True) on the STALE path, delegation cached)."""
    s = _slot(m, True, keyed)
    if keyed:
        snap, packet = authenticate(snap, KEY), authenticate(packet, KEY)
    s.apply(snap)
    s.apply(packet)
    pieces = [packet[i:i + PIECE] for i in range(0, len(packet), PIECE)]
    feed, after = [], []
    for i in range(repeats + 5):
        t0 = time.thread_time()
        for piece in pieces:
            s.receive(piece)
        t1 = time.thread_time()
        try:
            s.apply(packet, received=True)
        except PacketError as exc:
            if exc.status_name != "EDGERT_ERR_PACKET_STALE":
                raise
        else:
            raise AssertionError("expected STALE")
        t2 = time.thread_time()
        if i >= 5:
            feed.append(t1 - t0)
            after.append(t2 - t1)
    return summarize(feed), summarize(after)


def _chain_time(m: Manifest, snap: bytes, chain: list[bytes], trusted: bool, rounds: int):
    samples = []
    for _ in range(rounds):
        s = _slot(m, trusted)
        s.apply(snap)
        for p in chain:
            t0 = time.thread_time()
            s.apply(p)
            samples.append(time.thread_time() - t0)
    return summarize(samples)


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--chain", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="skip the real AMS update (trains a student, ~1 min)")
    parser.add_argument("--name", default="bench_signing", help="results file stem (bench/results/<name>-cpu.*)")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    backend = _edgert.signatures_backend() if hasattr(_edgert, "signatures_backend") else "openssl (before the option)"
    rows: list[Row] = []
    summary = []
    for shapes, (m, snap, chain) in _cases(args.chain, real=not args.quick).items():
        size = f"{shapes}, {len(chain[0]) / 1024:.1f} KiB"
        t = {}
        for trusted in (False, True):
            impl = "edgert-cpu trust" if trusted else "edgert-cpu no trust"
            t[("reject", trusted)] = _reject_time(m, snap, chain[0], trusted, args.repeats)
            rows.append(Row("reject-stale", impl, "cpu", "fp16", size, t[("reject", trusted)],
                            extra={"peer": False}))
            t[("chain", trusted)] = _chain_time(m, snap, chain, trusted, args.rounds)
            rows.append(Row("apply-chain", impl, "cpu", "fp16", size, t[("chain", trusted)]))
        t["cached"] = _reject_time(m, snap, chain[0], True, args.repeats, cached=True)
        rows.append(Row("reject-stale", "edgert-cpu trust, delegation cached", "cpu", "fp16", size, t["cached"]))
        t["key"] = _reject_time(m, snap, chain[0], False, args.repeats, keyed=True)
        rows.append(Row("reject-stale", "edgert-cpu+hmac no trust", "cpu", "fp16", size, t["key"]))
        t["key cached"] = _reject_time(m, snap, chain[0], True, args.repeats, cached=True, keyed=True)
        rows.append(Row("reject-stale", "edgert-cpu+hmac trust, delegation cached", "cpu", "fp16", size,
                        t["key cached"]))
        for keyed in (False, True):
            mac = "+hmac" if keyed else ""
            t[("feed", keyed)], t[("after", keyed)] = _received_time(m, snap, chain[0], args.repeats, keyed)
            rows.append(Row("receive (hash on arrival)", f"edgert-cpu{mac} trust", "cpu", "fp16", size,
                            t[("feed", keyed)]))
            rows.append(Row("reject-stale after last byte", f"edgert-cpu{mac} trust, delegation cached, received",
                            "cpu", "fp16", size, t[("after", keyed)]))
        trust = Trust(ROOT0.public, now=NOW)
        py = measure(lambda: verify_packet(chain[0], trust), repeats=args.repeats, warmup=5, clock=time.thread_time)
        rows.append(Row("verify (python peer)", "cryptography", "cpu", "fp16", size, py, extra={"peer": True}))
        base = t[("reject", False)].median
        summary.append({"packet": size, "bytes": len(chain[0]),
                        "verify_uncached_s": t[("reject", True)].median - base,
                        "verify_cached_s": t["cached"].median - base,
                        "hmac_s": t["key"].median - base,
                        "hmac_and_verify_cached_s": t["key cached"].median - base,
                        "apply_chain_delta_s": t[("chain", True)].median - t[("chain", False)].median,
                        "after_last_byte_s": t[("after", False)].median - base,
                        "hash_on_arrival_s": t[("feed", False)].median,
                        "after_last_byte_hmac_s": t[("after", True)].median - base,
                        "hash_on_arrival_hmac_s": t[("feed", True)].median,
                        "sha256_hashlib_s": measure(lambda: hashlib.sha256(chain[0]).digest(), repeats=args.repeats,
                                                    warmup=5, clock=time.thread_time).median,
                        "python_verify_s": py.median})
    for s in summary:
        s["meets_0.2ms"] = s["verify_cached_s"] <= 0.2e-3
        s["meets_0.2ms_after_last_byte"] = s["after_last_byte_s"] <= 0.2e-3
    lines = [f"Ed25519: {backend or 'none'} (EDGERT_SIGNATURES_BACKEND). Check = slot time with trust (or key) minus "
             "without, same packet, STALE right after the check. SHA-256: hashlib (OpenSSL, SHA-NI) over the packet. "
             "Hashed on arrival: the packet fed to the slot's receiver in 64 KiB pieces (CPU spent while it "
             "arrives), then the check after its last byte (delegation cached).", "",
             "| packet | new delegation (2 Ed25519 + SHA-256) | repeated delegation (1 Ed25519 + SHA-256) | "
             "SHA-256 alone | <= 0.2 ms | hashed on arrival: during / after last byte | <= 0.2 ms after last byte | "
             "keyed device (HMAC): HMAC alone | HMAC + repeated delegation | hashed on arrival: during / after | "
             "Python peer (cryptography) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in summary:
        lines.append(f"| {s['packet']} | {_ms(s['verify_uncached_s'])} | {_ms(s['verify_cached_s'])} | "
                     f"{_ms(s['sha256_hashlib_s'])} | {'yes' if s['meets_0.2ms'] else 'no'} | "
                     f"{_ms(s['hash_on_arrival_s'])} / {_ms(s['after_last_byte_s'])} | "
                     f"{'yes' if s['meets_0.2ms_after_last_byte'] else 'no'} | {_ms(s['hmac_s'])} | "
                     f"{_ms(s['hmac_and_verify_cached_s'])} | {_ms(s['hash_on_arrival_hmac_s'])} / "
                     f"{_ms(s['after_last_byte_hmac_s'])} | {_ms(s['python_verify_s'])} |")
    raw = ["| op | impl | shapes | median | IQR | n |", "|---|---|---|---|---|---|"]
    raw += [f"| {r.op} | {r.impl} | {r.shapes} | {r.time.median * 1e6:.1f} us | {r.time.iqr * 1e6:.1f} us | "
            f"{r.time.repeats} |" for r in rows]
    table = "\n".join(lines) + "\n\nRaw timings (CPU time of the calling thread, one core):\n\n" + "\n".join(raw)
    print(table)
    write_json(args.name, rows, {}, {"device": "cpu", "repeats": args.repeats, "chain": args.chain,
                                     "rounds": args.rounds, "ed25519": backend, "summary": summary},
               markdown=table)


if __name__ == "__main__":
    main()
