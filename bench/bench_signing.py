"""Release-signature verification time per packet on one core (goal <= 0.2 ms, issue 19).

    python -m bench.bench_signing [--repeats 200]

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
* ``apply-chain``: a chain of signed 5% updates applied in order with and without trust (whole applies; the
  difference is noisier than the reject rows, which isolate the check).

Packets: a small one (one 256-element tensor) and the 5%-dense fp16 update of bench_packet's 2.2M-parameter
model. Peer: the same check in Python (``edgert.updates.signing.verify_packet`` on the ``cryptography``
package's OpenSSL). CPU time of the calling thread (time.thread_time), the process pinned to one core.
Writes ``bench/results/bench_signing-cpu.json`` and ``.md``.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

from bench.bench_packet import _model, _update
from bench.harness import Row, measure, summarize, write_json
from edgert._edgert import PacketError, Slot
from edgert.updates import Manifest, TensorSpec, encode_snapshot, encode_update
from edgert.updates.signing import SigningKey, Trust, delegate, rotate_root, sign_packet, verify_packet

NOW = 1_800_000_000
ROOT0, ROOT1, RELEASE = (SigningKey(bytes([i]) * 32) for i in (1, 2, 3))


def _sign(packet: bytes) -> bytes:
    return sign_packet(packet, RELEASE, delegate(ROOT1, RELEASE.public, 1, NOW + 86_400), NOW + 86_400,
                       [rotate_root(ROOT0, ROOT1.public, 1)])


def _slot(manifest: Manifest, trusted: bool) -> Slot:
    s = Slot(manifest.to_bytes())
    if trusted:
        s.set_trust(ROOT0.public, 0, 0, NOW)
    return s


def _cases(chain: int, seed: int = 0) -> dict[str, tuple[Manifest, bytes, list[bytes]]]:
    """name -> (manifest, signed snapshot v1, signed update chain v1 -> v1 + chain)."""
    rng = np.random.default_rng(seed)
    small = Manifest(b"\x33" * 16, (TensorSpec("w", "float32", (256,)),))
    out = {}
    for name, m in (("1 tensor x 256 fp32", small), ("5% of 2.2M fp32 (fp16 values)", _model())):
        weights = {t.name: rng.standard_normal(t.shape).astype(np.float32) for t in m.tensors}
        snap = _sign(encode_snapshot(m, 1, weights).data)
        ups = []
        for v in range(1, chain + 1):
            upd = _update(m, rng) if m is not small else {"w": (np.arange(0, 256, 20), np.ones(13, np.float32))}
            ups.append(_sign(encode_update(m, v, v + 1, upd, value_coding="fp16").data))
        out[name] = (m, snap, ups)
    return out


def _reject_time(m: Manifest, snap: bytes, packet: bytes, trusted: bool, repeats: int, cached: bool = False):
    s = _slot(m, trusted)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--chain", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    rows: list[Row] = []
    summary = []
    for shapes, (m, snap, chain) in _cases(args.chain).items():
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
        trust = Trust(ROOT0.public, now=NOW)
        py = measure(lambda: verify_packet(chain[0], trust), repeats=args.repeats, warmup=5, clock=time.thread_time)
        rows.append(Row("verify (python peer)", "cryptography", "cpu", "fp16", size, py, extra={"peer": True}))
        uncached = t[("reject", True)].median - t[("reject", False)].median
        cached = t["cached"].median - t[("reject", False)].median
        chain_delta = t[("chain", True)].median - t[("chain", False)].median
        summary.append({"packet": size, "bytes": len(chain[0]), "verify_uncached_s": uncached,
                        "verify_cached_s": cached, "apply_chain_delta_s": chain_delta, "python_verify_s": py.median})
    lines = ["| packet | signature check, new delegation (2 Ed25519) | repeated delegation (1 Ed25519) | "
             "Python peer (cryptography) |", "|---|---|---|---|"]
    for s in summary:
        lines.append(f"| {s['packet']} | {s['verify_uncached_s'] * 1e3:.3f} ms | {s['verify_cached_s'] * 1e3:.3f} ms"
                     f" | {s['python_verify_s'] * 1e3:.3f} ms |")
    raw = ["| op | impl | shapes | median | IQR | n |", "|---|---|---|---|---|---|"]
    raw += [f"| {r.op} | {r.impl} | {r.shapes} | {r.time.median * 1e6:.1f} us | {r.time.iqr * 1e6:.1f} us | "
            f"{r.time.repeats} |" for r in rows]
    table = "\n".join(lines) + "\n\nRaw timings (CPU time of the calling thread, one core):\n\n" + "\n".join(raw)
    print(table)
    write_json("bench_signing", rows, {}, {"device": "cpu", "repeats": args.repeats, "chain": args.chain,
                                          "rounds": args.rounds, "summary": summary}, markdown=table)


if __name__ == "__main__":
    main()
