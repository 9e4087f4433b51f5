"""Update delivery to the C++ firmware edge node over TLS 1.3 vs plain TCP, on loopback.

    python -m bench.tls_delivery [--updates 60] [--durable] [--width 0.5] [--classes 8] [--no-json]

Two :class:`edgert.transport.ModelServer` processes' worth of state in this process, one plain and one with
``tls=`` (TLS 1.3, mutual authentication with certificates from :mod:`edgert.transport.certs`), each serving
the AMS segmentation student (as ``bench/device_e2e.py``) to its own ``edgert_edge_node`` (the C++ binary,
``build/*/firmware`` or ``$EDGERT_EDGE_NODE``; the TLS one with ``--tls-ca/--tls-cert/--tls-key``).
Updates touch 5 % of every tensor's coordinates (N(0, 1e-2) steps, the packets ``ModelServer.publish``
encodes). They alternate between the two setups (the order inside each pair drawn at random), so drift in
the machine's load hits both alike; the next is published only when the previous was acknowledged.

Delivery time: ``publish()`` called -> the device's ACK of that version, stamped as the server's I/O loop
parses it (``ModelServer(on_ack=)``): encode, MAC, send, TLS record layer, the node's verify + apply (with
``--durable`` also its snapshot save with fsync), the ACK. Then, as a second series, the transport alone: a
PACKET frame encoded and MAC'd beforehand, written on the server's connection (``ModelServer.inject``, the
same I/O path, TLS-encrypted on the TLS server) -> its ACK.

Also reported: the node's CPU time per update of the first series (``/proc/PID/stat``, 10 ms ticks, so
summed over the run) and the time from starting a node to its first synced version (TCP + TLS handshake +
edgert handshake + manifest + snapshot). A benchmark: nothing is asserted. JSON and markdown in
``bench/results/tls_delivery[-durable]-cpu.*``.
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from bench.device_e2e import node_binary, proc_cpu_s, sparse_update, student
from bench.harness import git_commit, stop_process, write_report

DEVICE_ID = "bench-device"
KEY = bytes(range(40, 72))


class AckClock:
    """When each version was acknowledged: ``ModelServer(on_ack=)`` stamps every ACK on the server's I/O loop
    as it is parsed, so no polling thread competes with the server for the interpreter."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._acked: dict[int, float] = {}

    def on_ack(self, device_id: str, version: int) -> None:
        now = time.perf_counter()
        with self._cond:
            self._acked.setdefault(version, now)
            self._cond.notify_all()

    def wait(self, version: int, timeout: float) -> Optional[float]:
        """The time ``version`` was acknowledged, waiting at most ``timeout`` s for it (None: not in time)."""
        with self._cond:
            self._cond.wait_for(lambda: version in self._acked, timeout)
            return self._acked.get(version)


@dataclass
class Setup:
    """One server and its node."""

    name: str
    server: Any
    acks: AckClock
    node: subprocess.Popen
    log: Any
    connect_s: float = 0.0
    delivery_s: list[float] = field(default_factory=list)
    publish_s: list[float] = field(default_factory=list)  # of which publish() itself (encode, MAC, hand-off)
    wire_s: list[float] = field(default_factory=list)  # a pre-encoded PACKET frame written -> its ACK
    node_cpu_s: float = 0.0

    def wait_acked(self, version: int, timeout: float = 30.0) -> float:
        t = self.acks.wait(version, timeout)
        if t is None:
            raise SystemExit(f"{self.name}: version {version} not acknowledged within {timeout} s")
        return t


def start(name: str, manifest: Any, weights: Any, work: Path, tls: Optional[Any], node_args: list[str],
          durable: bool) -> Setup:
    from edgert.transport import ModelServer

    acks = AckClock()
    server = ModelServer(manifest, {DEVICE_ID: KEY}, weights, tls=tls, on_ack=acks.on_ack).start()
    folder = work / name
    folder.mkdir()
    (folder / "key").write_bytes(KEY)
    log = open(folder / "node.log", "wb")
    t0 = time.perf_counter()
    node = subprocess.Popen([str(node_binary()), "--server", f"127.0.0.1:{server.address[1]}", "--device-id",
                             DEVICE_ID, "--key-file", str(folder / "key"),
                             *(["--state-dir", str(folder / "state")] if durable else []), *node_args],
                            stdout=log, stderr=subprocess.STDOUT)
    setup = Setup(name, server, acks, node, log)
    try:
        setup.connect_s = setup.wait_acked(server.version, timeout=60.0) - t0
    except SystemExit as exc:
        raise SystemExit(f"{name}: the edge node did not sync:\n" + (folder / "node.log").read_text()) from exc
    return setup


def stop(setup: Setup) -> None:
    stop_process(setup.node)
    setup.log.close()
    setup.server.stop()


def deliver(setup: Setup, manifest: Any, rng: np.random.Generator) -> tuple[float, float, int]:
    """(publish -> ACK seconds, of which publish() itself, packet bytes)."""
    update = sparse_update(manifest, rng)
    t0 = time.perf_counter()
    packet = setup.server.publish(update)
    t_published = time.perf_counter()
    t1 = setup.wait_acked(setup.server.version)
    return t1 - t0, t_published - t0, len(packet.data)


def deliver_encoded(setup: Setup, manifest: Any, rng: np.random.Generator, version: int) -> float:
    """Seconds from writing a pre-encoded PACKET (``version`` -> ``version + 1``, MAC'd for the device) on the
    server's connection to its ACK: the transport and the node, without the server's encoding."""
    from edgert.transport.frames import FrameType, encode_frame
    from edgert.updates import encode_update

    packet = encode_update(manifest, version, version + 1, sparse_update(manifest, rng), "fp16", key=KEY,
                           max_format=setup.server.packet_format)
    frame = encode_frame(FrameType.PACKET, packet.data)
    t0 = time.perf_counter()
    if not setup.server.inject(DEVICE_ID, frame):
        raise SystemExit(f"{setup.name}: the node is not connected")
    return setup.wait_acked(version + 1) - t0


def stats(samples: list[float]) -> dict[str, float]:
    q = np.percentile(samples, [25, 50, 75, 90])
    return {"median_s": float(q[1]), "q1_s": float(q[0]), "q3_s": float(q[2]), "p90_s": float(q[3]),
            "min_s": float(min(samples)), "n": len(samples)}


def paired(tls: list[float], plain: list[float], seed: int = 0) -> dict[str, float]:
    """Median of the per-pair differences TLS - plain (each pair: the same update, back to back, so load
    drift cancels), with a 95 % bootstrap interval; and the same relative to the plain median."""
    d = np.asarray(tls) - np.asarray(plain)
    rng = np.random.default_rng(seed)
    boot = np.median(rng.choice(d, size=(2000, d.size), replace=True), axis=1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    base = float(np.median(plain))
    return {"median_diff_s": float(np.median(d)), "ci95_s": [float(lo), float(hi)],
            "median_diff_rel": float(np.median(d)) / base, "ci95_rel": [float(lo) / base, float(hi) / base]}


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--updates", type=int, default=60, help="timed updates per setup")
    parser.add_argument("--warmup", type=int, default=5, help="untimed updates per setup first")
    parser.add_argument("--classes", type=int, default=8)
    parser.add_argument("--width", type=float, default=0.5, help="the student's width multiplier")
    parser.add_argument("--gap", type=float, default=0.05, help="seconds between updates")
    parser.add_argument("--durable", action="store_true",
                        help="nodes keep a state dir: each ACK waits for the snapshot's fsync (results file "
                             "tls_delivery-durable-cpu.*)")
    parser.add_argument("--no-json", action="store_true")
    args = parser.parse_args(argv)

    from edgert.transport.certs import CertificateAuthority
    from edgert.transport.tls import TLSConfig
    from edgert.updates import module_manifest, module_weights

    model, pretrained = student(args.classes, args.width)
    manifest, weights = module_manifest(model), module_weights(model)
    rng = np.random.default_rng(0)
    order_rng = np.random.default_rng(1)
    load_before = list(os.getloadavg())
    t_start = time.monotonic()
    packet_bytes: list[int] = []
    with tempfile.TemporaryDirectory(prefix="edgert-tls-bench-") as tmp:
        work = Path(tmp)
        ca = CertificateAuthority.init(work / "ca")
        ca.issue_server("localhost", hosts=("localhost", "127.0.0.1"))
        ca.issue_device(DEVICE_ID)
        device_tls = ["--tls-ca", str(ca.bundle), "--tls-crl", str(ca.crl),
                      "--tls-cert", str(ca.folder / f"device-{DEVICE_ID}.pem"),
                      "--tls-key", str(ca.folder / f"device-{DEVICE_ID}.key")]
        setups = [start("plain", manifest, weights, work, None, [], args.durable),
                  start("tls", manifest, weights, work, TLSConfig.from_dir(ca.folder, "server", "localhost"),
                        device_tls, args.durable)]
        try:
            for _ in range(args.warmup):
                for s in setups:
                    deliver(s, manifest, rng)
            cpu0 = [proc_cpu_s(s.node.pid) for s in setups]
            for _ in range(args.updates):
                seed = int(order_rng.integers(1 << 31))  # the same update for both setups in a pair
                for i in order_rng.permutation(len(setups)):
                    s = setups[int(i)]
                    dt, dt_publish, size = deliver(s, manifest, np.random.default_rng(seed))
                    s.delivery_s.append(dt)
                    s.publish_s.append(dt_publish)
                    packet_bytes.append(size)
                    time.sleep(args.gap)
            for s, c0 in zip(setups, cpu0):
                s.node_cpu_s = proc_cpu_s(s.node.pid) - c0
            # Then the transport alone: the nodes move past the servers' streams from here on.
            versions = {s.name: s.server.version for s in setups}
            for _ in range(args.updates):
                seed = int(order_rng.integers(1 << 31))
                for i in order_rng.permutation(len(setups)):
                    s = setups[int(i)]
                    s.wire_s.append(deliver_encoded(s, manifest, np.random.default_rng(seed), versions[s.name]))
                    versions[s.name] += 1
                    time.sleep(args.gap)
            tls_lines = [line for line in (work / "tls" / "node.log").read_text().splitlines()
                         if "connected and authenticated" in line]
        finally:
            for s in setups:
                stop(s)

    plain, tls = setups
    result = {
        "commit": git_commit(), "date": time.strftime("%Y-%m-%dT%H:%M:%S"), "host": platform.node(),
        "machine": platform.machine(), "cpu_count": os.cpu_count(),
        "openssl_node": tls_lines[0].split("(")[-1].rstrip(")") if tls_lines else "",
        "config": {"model": "AMS segmentation student", "classes": args.classes, "width_mult": args.width,
                   "pretrained_encoder": pretrained, "parameters": sum(t.numel for t in manifest.tensors),
                   "weights_bytes": manifest.weights_size,
                   "update": "5% of each tensor, N(0, 1e-2), ModelServer.publish", "updates": args.updates,
                   "warmup": args.warmup, "gap_s": args.gap, "durable": args.durable,
                   "load_average_before": load_before, "load_average_after": list(os.getloadavg()),
                   "wall_s": time.monotonic() - t_start},
        "packet_bytes_median": float(np.median(packet_bytes)),
        "setups": {s.name: {"delivery": stats(s.delivery_s), "delivery_s": s.delivery_s,
                            "publish": stats(s.publish_s), "wire": stats(s.wire_s), "wire_s": s.wire_s,
                            "connect_s": s.connect_s, "node_cpu_per_update_s": s.node_cpu_s / args.updates}
                   for s in setups},
        "tls_over_plain_median": stats(tls.delivery_s)["median_s"] / stats(plain.delivery_s)["median_s"],
        "tls_minus_plain_median_s": stats(tls.delivery_s)["median_s"] - stats(plain.delivery_s)["median_s"],
        "wire_tls_over_plain_median": stats(tls.wire_s)["median_s"] / stats(plain.wire_s)["median_s"],
        "wire_tls_minus_plain_median_s": stats(tls.wire_s)["median_s"] - stats(plain.wire_s)["median_s"],
        "paired_delivery": paired(tls.delivery_s, plain.delivery_s),
        "paired_wire": paired(tls.wire_s, plain.wire_s),
    }
    md = markdown(result)
    print(md)
    if not args.no_json:
        stem = "tls_delivery-durable-cpu" if args.durable else "tls_delivery-cpu"
        print(f"\nwrote {write_report(stem, result, md, 'bench/tls_delivery.py')}")
    return 0


def markdown(r: dict) -> str:
    c = r["config"]

    def ms(seconds: float) -> str:
        return f"{seconds * 1e3:.2f}"

    lines = [
        f"AMS student ({c['parameters']} parameters, {c['weights_bytes'] / 1e6:.2f} MB), 5 % updates "
        f"(median packet {r['packet_bytes_median'] / 1e3:.1f} kB), {c['updates']} per setup, alternating; "
        f"firmware node {r['openssl_node'] or 'TLS'}; load average before {c['load_average_before'][0]:.1f} on "
        f"{r['cpu_count']} cores; " + ("each ACK after the node's snapshot save (fsync)" if c["durable"] else
                                        "no snapshot save on the node (ACK after verify + apply)"),
        "",
        "| transport | delivery median ms | IQR ms | p90 ms | of which publish() ms | pre-encoded frame -> ACK "
        "median ms (IQR) | node CPU per update ms | connect + sync ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, s in r["setups"].items():
        d = s["delivery"]
        lines.append(f"| {'TLS 1.3 (mutual auth)' if name == 'tls' else 'plain TCP'} | {ms(d['median_s'])} | "
                     f"{ms(d['q1_s'])}–{ms(d['q3_s'])} | {ms(d['p90_s'])} | {ms(s['publish']['median_s'])} | "
                     f"{ms(s['wire']['median_s'])} ({ms(s['wire']['q1_s'])}–{ms(s['wire']['q3_s'])}) | "
                     f"{ms(s['node_cpu_per_update_s'])} | {ms(s['connect_s'])} |")
    lines += ["", "| TLS - plain, paired (same update, back to back) | median difference ms [95 % CI] | "
              "relative to the plain median [95 % CI] |", "|---|---|---|"]
    for label, key in (("publish() -> ACK", "paired_delivery"), ("pre-encoded frame -> ACK", "paired_wire")):
        p = r[key]
        lines.append(f"| {label} | {ms(p['median_diff_s'])} [{ms(p['ci95_s'][0])}, {ms(p['ci95_s'][1])}] | "
                     f"{100 * p['median_diff_rel']:+.1f} % [{100 * p['ci95_rel'][0]:+.1f}, "
                     f"{100 * p['ci95_rel'][1]:+.1f}] |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
