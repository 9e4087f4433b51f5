"""Transport load (issue 19): one ModelServer process against thousands of connections, and what they cost a real
device's update delivery.

Every party is its own process on loopback, so the server's I/O loop competes for the CPU as it would in the field:

* ``server``: one :class:`~edgert.transport.ModelServer` (plain, and for ``capacity_tls`` and part 3 also a
  TLS 1.3 one with mutual authentication) serving the AMS student (MobileNetV2-0.5 segmentation, 532,826 float32
  parameters) as one shared stream; it raises its descriptor limit and reports its RSS and CPU time.
* ``swarm``: light-weight asyncio devices (no libedgert slot) in a few processes. ``keepalive``: the real
  handshake (HELLO, the server's HMAC proof checked, AUTH; with ``--tls-dir`` inside TLS 1.3, presenting its own
  certificate), then a PING every ``--ping-s`` seconds (±50 % jitter) answered by PONG; ``idle``: TCP
  connections that never send; ``slowloris``: connections that send one byte of a HELLO every ``--trickle-s``
  seconds. A connection the server closes is opened again.
* ``probe``: a real :class:`~edgert.transport.EdgeClient` (libedgert verifies, applies and ACKs every packet).

The swarm processes run at niceness ``--client-nice`` (10): on the 2-core machine they stand in for devices on
other machines, so they should not take the CPU from the server and the probe they load (0 measures that too).

Parts:

1. **Capacity** (``capacity``): ``--devices`` (10,000) keepalive devices connect; connect + handshake rate, the
   per-device handshake time and the server's CPU per handshake; then held for ``--hold-s`` seconds: server RSS,
   server CPU (% of one core), PONGs and the keepalive round trip.
   ``capacity_tls``: the same over TLS 1.3 with mutual authentication: a fresh ``edgert keys`` CA issues one
   client certificate per swarm device (CN = its id, as the server checks at HELLO) in one batch
   (:meth:`~edgert.transport.certs.CertificateAuthority.issue_devices`, timed, and ``singles`` issued one by one
   for comparison); each swarm process makes its devices' client contexts before the clock starts. The server
   issues one session ticket per handshake (``TLSConfig.session_tickets``; its default is none). After the hold,
   two reconnect storms: every device closes and reconnects at once, first with full handshakes, then resuming
   its session with its ticket: time until all are back, handshake times, sessions resumed, server CPU.
2. **Delivery under load**: the server publishes ``--updates`` 5 % updates of the student (26,641 coordinates
   changed, fp16 values) one by one; delivery = from ``publish()`` to the probe's ACK arriving at the server
   (encode, send, the device's verify + apply, ACK), also split at ``publish()``'s return (``wire+apply``).
   For each background (``idle``: ``--background`` connections that never send; ``slowloris``: as many sending
   a HELLO byte every ``--trickle-s``), ``--rounds`` pairs of chunks of ``--updates-per-round`` updates: the
   probe alone (baseline), then with the background open; the pooled loaded chunks are compared with the
   pooled baseline chunks (interleaved, as the shared machine drifts). The server holds up to 6,000
   connections in their handshake with a 600 s handshake timeout, so the background stays open for the whole
   measurement (the defaults, 1,024 and 10 s, would close most of it, which is the point of them). The loaded
   chunk starts ``--settle-s`` (6 s) after the background is open, past the server's first pause of each
   trickling connection (``preauth_read_interval``, 5 s), so it measures the defence's steady state, not the
   quiet first interval; the server's reads of connections in their handshake per second are reported.
3. **TLS vs plain**: the same updates to a plain and a TLS probe on two servers in one process, alternating in
   rounds, delivery medians compared.

Run: ``PYTHONPATH=python python -m bench.transport_load`` (about 12 minutes on 2 cores; ``--parts`` picks from
``capacity,capacity_tls,delivery,tls``; ``--quick``: 2,000 devices, fewer updates). Writes
``bench/results/transport_load-cpu[-quick][-TAG].json`` and ``.md`` (``--tag TAG``); every part records the
load average, since the shared machine's other work shows in every figure.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import json
import os
import platform
import queue
import resource
import secrets
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from bench.harness import RESULTS_DIR, child_env, git_commit, stop_process

#: the AMS student's label space and width (docs/results/ams.md)
STUDENT = {"num_classes": 2, "width_mult": 0.5, "seed": 0}
FRACTION = 0.05


# ------------------------------------------------------------------------------------------------- shared helpers


def device_key(device_id: str) -> bytes:
    """The benchmark's per-device HMAC key (derived, so that swarm processes need no key files)."""
    return hashlib.sha256(b"edgert-transport-load:" + device_id.encode()).digest()


def raise_nofile() -> int:
    """Raises this process's descriptor limit to its hard limit; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def quantiles(samples: list[float]) -> dict[str, float]:
    """Median, p95, IQR and count of ``samples`` (empty: zeros)."""
    if not samples:
        return {"n": 0, "median": 0.0, "p95": 0.0, "q1": 0.0, "q3": 0.0}
    a = np.asarray(samples, dtype=np.float64)
    return {"n": int(a.size), "median": float(np.median(a)), "p95": float(np.percentile(a, 95)),
            "q1": float(np.percentile(a, 25)), "q3": float(np.percentile(a, 75))}


def proc_usage() -> dict[str, float]:
    """This process's RSS (MiB), CPU seconds and thread count."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    rss = threads = 0.0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
        elif line.startswith("Threads:"):
            threads = float(line.split()[1])
    return {"rss_mib": rss, "cpu_s": usage.ru_utime + usage.ru_stime, "threads": threads}


def _commands(handler: Any) -> None:
    """Reads JSON commands from stdin, one a line, answers each with one JSON line on stdout."""
    for line in sys.stdin:
        if not line.strip():
            continue
        cmd = json.loads(line)
        if cmd["op"] == "quit":
            break
        print(json.dumps(handler(cmd)), flush=True)


# ------------------------------------------------------------------------------------------------------ server


def _student() -> Any:
    import torch

    from edgert.vision.models import segmentation_student

    torch.manual_seed(STUDENT["seed"])
    return segmentation_student(STUDENT["num_classes"], width_mult=STUDENT["width_mult"], pretrained=True).eval()


def five_percent_updates(weights: dict[str, np.ndarray], count: int, seed: int = 0) -> list[dict[str, Any]]:
    """``count`` updates that each set 5 % of all coordinates (chosen at random over the whole model, as the
    gradient-guided selection spreads them) to their value plus a small step."""
    rng = np.random.default_rng(seed)
    names = list(weights)
    sizes = np.array([weights[n].size for n in names])
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    total = int(offsets[-1])
    out = []
    for _ in range(count):
        chosen = np.sort(rng.choice(total, int(round(FRACTION * total)), replace=False))
        update: dict[str, Any] = {}
        for i, name in enumerate(names):
            lo, hi = np.searchsorted(chosen, [offsets[i], offsets[i + 1]])
            if hi > lo:
                idx = (chosen[lo:hi] - offsets[i]).astype(np.int64)
                flat = weights[name].reshape(-1)
                update[name] = (idx, (flat[idx] + 0.01 * rng.standard_normal(idx.size)).astype(np.float32))
        out.append(update)
    return out


def cmd_server(args: argparse.Namespace) -> None:
    from edgert.transport import ModelServer, TLSConfig
    from edgert.updates import module_manifest, module_weights

    limit = raise_nofile()
    student = _student()
    manifest = module_manifest(student, tag="transport-load")
    weights = module_weights(student)
    ids = ["probe", "probe-tls"] + [f"d{i:05d}" for i in range(args.devices)]
    keys = {d: device_key(d) for d in ids}
    acks: "queue.Queue[tuple[str, int, float]]" = queue.Queue()

    def on_ack(device: str, version: int) -> None:
        if device.startswith("probe"):
            acks.put((device, version, time.perf_counter()))

    common = dict(max_unauthenticated=args.max_unauthenticated, handshake_timeout=args.handshake_timeout,
                  on_ack=on_ack)
    servers = {"plain": ModelServer(manifest, keys, weights, **common).start()}  # type: ignore[arg-type]
    if args.tls_dir:
        tls = dataclasses.replace(TLSConfig.from_dir(args.tls_dir, "server", "localhost"),
                                  session_tickets=args.tls_tickets)
        servers["tls"] = ModelServer(manifest, keys, weights, tls=tls, **common).start()  # type: ignore[arg-type]
    updates = five_percent_updates(weights, 8)
    print(json.dumps({"ports": {k: s.address[1] for k, s in servers.items()}, "nofile": limit,
                      "model_id": manifest.model_id.hex(), "version": servers["plain"].version,
                      "params": int(sum(w.size for w in weights.values())),
                      "coords": int(sum(u[0].size for u in updates[0].values())), **proc_usage()}), flush=True)
    done = 0

    def deliver(kind: str, count: int, gap: float) -> dict[str, Any]:
        nonlocal done
        server = servers[kind]
        probe = "probe" if kind == "plain" else "probe-tls"
        total, wire = [], []
        for _ in range(count):
            time.sleep(gap)
            while not acks.empty():
                acks.get_nowait()
            t0 = time.perf_counter()
            packet = server.publish(updates[done % len(updates)])
            t1 = time.perf_counter()
            done += 1
            while True:
                try:
                    device, version, t2 = acks.get(timeout=10)
                except queue.Empty:
                    raise RuntimeError(f"{probe}: no ACK of version {packet.target_version} within 10 s") from None
                if device == probe and version >= packet.target_version:
                    break
            total.append(t2 - t0)
            wire.append(t2 - t1)
        return {"delivery": total, "wire": wire, "publish": [d - w for d, w in zip(total, wire)],
                "packet_bytes": len(packet.data)}

    def handle(cmd: dict[str, Any]) -> dict[str, Any]:
        if cmd["op"] == "stats":
            return {**proc_usage(), **{k: vars(s.stats()) for k, s in servers.items()}}
        if cmd["op"] == "deliver":
            return deliver(cmd.get("kind", "plain"), int(cmd["count"]), float(cmd.get("gap", 0.1)))
        raise ValueError(f"unknown command {cmd}")

    try:
        _commands(handle)
    finally:
        for s in servers.values():
            s.stop()


# ------------------------------------------------------------------------------------------------------- swarm


class Swarm:
    """Light-weight devices on one asyncio loop (see the module docstring for the modes)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.host, self.port = "127.0.0.1", args.port
        self.model_id = bytes.fromhex(args.model_id)
        self.handshakes: list[float] = []
        self.rtts: list[float] = []
        self.connected = 0  # now (keepalive: authenticated; else: open)
        self.opened = 0  # connections opened in all
        self.closed_by_server = 0
        self.failures = 0
        self.pongs = 0
        self.first_open: Optional[float] = None
        self.all_ready: Optional[float] = None
        self.gate = asyncio.Semaphore(args.concurrency)
        # TLS: each device's own client context (its certificate, CN = its id), made before the clock starts
        self.contexts: dict[int, ssl.SSLContext] = {}
        self.sessions: dict[int, ssl.SSLSession] = {}  # the latest session (with its ticket) of each device
        self.contexts_s = 0.0
        # reconnect storms: setting `storm` makes every connected device close and reconnect at once
        self.storm = asyncio.Event()
        self.reconnected = 0
        self.resumed = 0
        self.storm_handshakes: list[float] = []
        self.storm_s = 0.0
        self.storm_devices = 0
        self.storm_failures0 = 0

    async def _open(self, ctx: Optional[ssl.SSLContext] = None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection(self.host, self.port, limit=1 << 16, ssl=ctx,
                                                       server_hostname=self.host if ctx is not None else None)
        self.opened += 1
        return reader, writer

    async def keepalive(self, index: int) -> None:
        from edgert.transport.frames import (
            HEADER,
            FrameType,
            Hello,
            decode_challenge,
            device_proof,
            encode_frame,
            encode_u64,
            server_proof,
        )

        device = f"d{index:05d}"
        key = device_key(device)
        ctx = self.contexts.get(index)
        loop = asyncio.get_running_loop()
        reconnecting = False
        while True:
            writer = None
            storm = False
            try:
                async with self.gate:  # a bounded number of handshakes in flight, as a real fleet ramps up
                    t0 = loop.time()
                    reader, writer = await self._open(ctx)
                    nonce = secrets.token_bytes(16)
                    hello = Hello(device, self.model_id, self.args.version, nonce, 3).encode()
                    writer.write(encode_frame(FrameType.HELLO, hello))
                    head = await reader.readexactly(HEADER.size)
                    frame_type, _, length = HEADER.unpack(head)
                    body = await reader.readexactly(length)
                    if frame_type != FrameType.CHALLENGE:
                        raise ConnectionError(f"expected CHALLENGE, got {frame_type}")
                    server_nonce, proof = decode_challenge(body)
                    if proof != server_proof(key, server_nonce, hello):
                        raise ConnectionError("bad server proof")
                    writer.write(encode_frame(FrameType.AUTH, device_proof(key, server_nonce, hello))
                                 + encode_frame(FrameType.PING, encode_u64(0)))
                    await self._pong(reader)
                    (self.storm_handshakes if reconnecting else self.handshakes).append(loop.time() - t0)
                    if ctx is not None:  # TLS 1.3 tickets arrive after the handshake: read by now
                        tls = writer.get_extra_info("ssl_object")
                        self.sessions[index] = tls.session
                        self.resumed += bool(reconnecting and tls.session_reused)
                if reconnecting:
                    self.reconnected += 1
                    reconnecting = False
                self.connected += 1
                event = self.storm
                try:
                    while True:
                        try:
                            await asyncio.wait_for(event.wait(), self.args.ping_s * (0.5 + np.random.random()))
                            storm = True
                            break
                        except asyncio.TimeoutError:
                            pass
                        t1 = loop.time()
                        writer.write(encode_frame(FrameType.PING, encode_u64(index)))
                        await asyncio.wait_for(self._pong(reader), 15)
                        self.rtts.append(loop.time() - t1)
                        self.pongs += 1
                finally:
                    self.connected -= 1
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError, ValueError):
                self.failures += 1
            finally:
                if writer is not None:
                    writer.close()
            if storm:
                reconnecting = True
                continue
            await asyncio.sleep(0.5 + np.random.random())

    async def reconnect_storm(self, resume: bool, timeout: float) -> None:
        """Every connected device closes its connection and reconnects at once (TLS: resuming its last session
        with its ticket when ``resume``); returns when all have, or after ``timeout``."""
        for index, ctx in self.contexts.items():
            ctx.edgert_session = self.sessions.get(index) if resume else None  # type: ignore[attr-defined]
        self.reconnected, self.resumed, self.storm_handshakes = 0, 0, []
        self.storm_failures0 = self.failures
        event, self.storm = self.storm, asyncio.Event()
        self.storm_devices = self.connected  # those connected now storm; one reconnecting after a failure does not
        t0 = time.perf_counter()
        event.set()
        deadline = t0 + timeout
        while self.reconnected < self.storm_devices and time.perf_counter() < deadline:
            await asyncio.sleep(0.05)
        self.storm_s = time.perf_counter() - t0

    async def _pong(self, reader: asyncio.StreamReader) -> None:
        from edgert.transport.frames import HEADER, FrameType

        while True:
            frame_type, _, length = HEADER.unpack(await reader.readexactly(HEADER.size))
            if length:
                await reader.readexactly(length)
            if frame_type == FrameType.PONG:
                return
            if frame_type == FrameType.ERROR:
                raise ConnectionError("server error")

    async def background(self, index: int) -> None:
        """``idle`` or ``slowloris``: hold a connection in its handshake; reopen it when the server closes it."""
        from edgert.transport.frames import FrameType, Hello, encode_frame

        hello = encode_frame(FrameType.HELLO, Hello(f"d{index:05d}", bytes(16), 0, bytes(16), 3).encode())
        while True:
            writer = None
            try:
                async with self.gate:
                    reader, writer = await self._open()
                self.connected += 1
                try:
                    if self.args.mode == "idle":
                        if not await reader.read(1):
                            self.closed_by_server += 1
                    else:
                        for i in range(len(hello)):
                            writer.write(hello[i:i + 1])
                            try:
                                if not await asyncio.wait_for(reader.read(1), self.args.trickle_s):
                                    self.closed_by_server += 1
                                    break
                            except asyncio.TimeoutError:
                                continue
                finally:
                    self.connected -= 1
            except (OSError, ConnectionError):
                self.failures += 1
            finally:
                if writer is not None:
                    writer.close()
            await asyncio.sleep(0.2 + np.random.random())

    def report(self) -> dict[str, Any]:
        return {"connected": self.connected, "opened": self.opened, "failures": self.failures,
                "closed_by_server": self.closed_by_server, "pongs": self.pongs,
                "handshake_s": quantiles(self.handshakes), "rtt_s": quantiles(self.rtts),
                "ready_s": (self.all_ready - self.first_open) if self.all_ready and self.first_open else None,
                "contexts_s": self.contexts_s, "reconnected": self.reconnected, "resumed": self.resumed,
                "storm_devices": self.storm_devices, "storm_failures": self.failures - self.storm_failures0,
                "storm_s": self.storm_s, "storm_handshake_s": quantiles(self.storm_handshakes), **proc_usage()}

    def make_contexts(self) -> None:
        """TLS: one client context per device, presenting its certificate from ``--tls-dir`` (an ``edgert keys``
        CA folder); its ``sslobject_class`` offers the session of ``ctx.edgert_session`` for resumption."""
        from edgert.transport.tls import TLSConfig

        t0 = time.perf_counter()
        for i in range(self.args.first, self.args.first + self.args.count):
            ctx = TLSConfig.from_dir(self.args.tls_dir, "device", f"d{i:05d}").client_context()
            ctx.sslobject_class = _Resuming
            ctx.edgert_session = None  # type: ignore[attr-defined]
            self.contexts[i] = ctx
        self.contexts_s = time.perf_counter() - t0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        lines: "asyncio.Queue[str]" = asyncio.Queue()

        def read_stdin() -> None:
            for line in iter(sys.stdin.readline, ""):
                if line.strip():
                    loop.call_soon_threadsafe(lines.put_nowait, line)
            loop.call_soon_threadsafe(lines.put_nowait, '{"op": "quit"}')

        threading.Thread(target=read_stdin, daemon=True).start()
        if self.args.tls_dir:
            self.make_contexts()
        self.first_open = time.perf_counter()
        work = self.keepalive if self.args.mode == "keepalive" else self.background
        tasks = [asyncio.create_task(work(self.args.first + i)) for i in range(self.args.count)]

        async def watch_ready() -> None:
            while self.connected < self.args.count:
                await asyncio.sleep(0.05)
            self.all_ready = time.perf_counter()

        watcher = asyncio.create_task(watch_ready())
        while True:
            cmd = json.loads(await lines.get())
            if cmd["op"] == "quit":
                break
            if cmd["op"] == "mark":  # the hold starts: keepalive figures from here on
                self.rtts, self.pongs, self.failures = [], 0, 0
            if cmd["op"] == "storm":
                await self.reconnect_storm(bool(cmd["resume"]), float(cmd.get("timeout", 120)))
            if cmd["op"] == "wait_ready":
                try:
                    await asyncio.wait_for(asyncio.shield(watcher), float(cmd.get("timeout", 120)))
                except asyncio.TimeoutError:
                    pass
            print(json.dumps(self.report()), flush=True)
        for t in tasks:
            t.cancel()


class _Resuming(ssl.SSLObject):
    """An SSLObject that resumes the session its context holds in ``edgert_session`` (asyncio's connections take
    no ``session`` argument)."""

    @classmethod
    def _create(cls, *args: Any, session: Optional[ssl.SSLSession] = None, context: Any = None,
                **kwargs: Any) -> ssl.SSLObject:
        session = session or getattr(context, "edgert_session", None)
        return super()._create(*args, session=session, context=context, **kwargs)  # type: ignore[misc]


def cmd_swarm(args: argparse.Namespace) -> None:
    raise_nofile()
    if args.nice:
        os.nice(args.nice)  # stands in for clients on other machines: they yield the CPU to server and device
    asyncio.run(Swarm(args).run())


# ------------------------------------------------------------------------------------------------------- probe


def cmd_probe(args: argparse.Namespace) -> None:
    from edgert.transport import EdgeClient, TLSConfig

    device = "probe-tls" if args.tls_dir else "probe"
    tls = TLSConfig.from_dir(args.tls_dir, "device", device) if args.tls_dir else None
    client = EdgeClient(("127.0.0.1", args.port), device, device_key(device), tls=tls).start()
    try:
        if not client.connected.wait(30):
            raise SystemExit(f"{device}: no connection")
        print(json.dumps({"connected": True}), flush=True)
        sys.stdin.read()  # until the orchestrator closes our stdin
    finally:
        client.stop()


# ------------------------------------------------------------------------------------------------ orchestrator


class Proc:
    """A child process of this module speaking JSON lines on stdin/stdout."""

    def __init__(self, *argv: str, cpus: Optional[set[int]] = None) -> None:
        root = Path(__file__).resolve().parents[1]
        env = child_env()
        self.p = subprocess.Popen([sys.executable, "-m", "bench.transport_load", *argv], cwd=root, env=env,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        if cpus:  # before the child starts threads (they inherit it): --server-cpus / --swarm-cpus
            os.sched_setaffinity(self.p.pid, cpus)

    def read(self) -> dict[str, Any]:
        assert self.p.stdout is not None
        line = self.p.stdout.readline()
        if not line:
            raise RuntimeError(f"child {self.p.args[3:5]} exited with {self.p.wait()}")
        return json.loads(line)  # type: ignore[no-any-return]

    def ask(self, **cmd: Any) -> dict[str, Any]:
        assert self.p.stdin is not None
        self.p.stdin.write(json.dumps(cmd) + "\n")
        self.p.stdin.flush()
        return self.read()

    def close(self) -> None:
        try:
            if self.p.stdin is not None:
                self.p.stdin.write('{"op": "quit"}\n')
                self.p.stdin.close()
        except (BrokenPipeError, ValueError):
            pass
        stop_process(self.p, timeout=15, terminate=False)


def _swarms(mode: str, total: int, procs: int, port: int, info: dict[str, Any], args: argparse.Namespace,
            first: int = 0, tls_dir: Optional[Path] = None) -> list[Proc]:
    per = -(-total // procs)
    out = []
    for k in range(procs):
        count = min(per, total - k * per)
        if count <= 0:
            break
        out.append(Proc("swarm", "--mode", mode, "--port", str(port), "--first", str(first + k * per),
                        "--count", str(count), "--model-id", info["model_id"], "--version", str(info["version"]),
                        "--ping-s", str(args.ping_s), "--trickle-s", str(args.trickle_s),
                        "--concurrency", str(args.concurrency), "--nice", str(args.client_nice),
                        *(("--tls-dir", str(tls_dir)) if tls_dir is not None else ()), cpus=_cpus(args.swarm_cpus)))
    return out


def _cpus(spec: str) -> Optional[set[int]]:
    """``"0"``, ``"0,1"`` or ``""`` (no pinning) as a CPU set for :func:`os.sched_setaffinity`."""
    return {int(c) for c in spec.split(",")} if spec else None


def _wait_swarms(swarms: list[Proc], timeout: float) -> list[dict[str, Any]]:
    for s in swarms:
        assert s.p.stdin is not None
        s.p.stdin.write(json.dumps({"op": "wait_ready", "timeout": timeout}) + "\n")
        s.p.stdin.flush()
    return [s.read() for s in swarms]


def _merge(reports: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("connected", "opened", "failures", "closed_by_server", "pongs")
    out: dict[str, Any] = {k: sum(r[k] for r in reports) for k in keys}
    out["ready_s"] = max((r["ready_s"] or float("nan")) for r in reports)
    out["handshake_median_s"] = statistics.median(r["handshake_s"]["median"] for r in reports)
    out["handshake_p95_s"] = max(r["handshake_s"]["p95"] for r in reports)
    out["rtt_median_s"] = statistics.median(r["rtt_s"]["median"] for r in reports)
    out["rtt_p95_s"] = max(r["rtt_s"]["p95"] for r in reports)
    out["swarm_rss_mib"] = sum(r["rss_mib"] for r in reports)
    out["contexts_s"] = max(r["contexts_s"] for r in reports)
    return out


def issue_fleet(folder: Path, devices: int, singles: int = 20) -> dict[str, Any]:
    """A CA in ``folder`` with a server certificate and one device certificate per swarm device (``d00000``...),
    issued as one batch (:meth:`CertificateAuthority.issue_devices`); also times ``singles`` certificates issued
    one by one (``edgert keys issue-device`` per device), for comparison."""
    from edgert.transport.certs import CertificateAuthority

    ca = CertificateAuthority.init(folder)
    ca.issue_server()
    t0 = time.perf_counter()
    for i in range(singles):
        ca.issue_device(f"single-{i}")
    single_s = (time.perf_counter() - t0) / singles
    t0 = time.perf_counter()
    ca.issue_devices([f"d{i:05d}" for i in range(devices)])
    batch_s = time.perf_counter() - t0
    print(f"issued {devices} device certificates in {batch_s:.1f} s ({1e3 * batch_s / devices:.2f} ms each; "
          f"one by one: {1e3 * single_s:.1f} ms each)", flush=True)
    return {"devices": devices, "batch_s": batch_s, "batch_per_cert_s": batch_s / max(1, devices),
            "single_per_cert_s": single_s, "singles": singles}


def part_capacity(args: argparse.Namespace, tls: bool = False) -> dict[str, Any]:
    """Part 1 (see the module docstring); ``tls``: over TLS 1.3 with one client certificate per device, then
    two reconnect storms (every device at once: full handshakes, then resuming with session tickets)."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "ca"
        issued = issue_fleet(folder, args.devices) if tls else None
        # one ticket per handshake: the second storm resumes with it (the server's default issues none)
        server = Proc("server", "--devices", str(args.devices),
                      *(("--tls-dir", str(folder), "--tls-tickets", "1") if tls else ()))
        kind = "tls" if tls else "plain"
        try:
            info = server.read()
            before = server.ask(op="stats")
            t0 = time.perf_counter()
            swarms = _swarms("keepalive", args.devices, args.swarm_procs, info["ports"][kind], info, args,
                             tls_dir=folder if tls else None)
            ready = _merge(_wait_swarms(swarms, args.connect_timeout))
            connect_s = time.perf_counter() - t0
            at_ready = server.ask(op="stats")
            for s in swarms:
                s.ask(op="mark")
            time.sleep(args.hold_s)
            held = _merge([s.ask(op="report") for s in swarms])
            after = server.ask(op="stats")
            cpu = (after["cpu_s"] - at_ready["cpu_s"]) / args.hold_s
            result = {
                "transport": kind, "load_avg": os.getloadavg(),
                "devices": args.devices, "connected": ready["connected"], "connected_after_hold": held["connected"],
                "connect_s": connect_s, "ready_s": ready["ready_s"],
                "connect_rate_per_s": ready["connected"] / ready["ready_s"],
                "handshake_median_s": ready["handshake_median_s"], "handshake_p95_s": ready["handshake_p95_s"],
                "hold_s": args.hold_s, "pongs_in_hold": held["pongs"], "failures_connect": ready["failures"],
                "failures_hold": held["failures"],
                "rtt_median_s": held["rtt_median_s"], "rtt_p95_s": held["rtt_p95_s"],
                "server_rss_idle_mib": before["rss_mib"], "server_rss_loaded_mib": after["rss_mib"],
                "server_rss_per_device_kib": 1024 * (after["rss_mib"] - before["rss_mib"]) / max(1, ready["connected"]),
                "server_cpu_hold_pct": 100 * cpu, "server_threads": after["threads"],
                "server_cpu_connect_s": at_ready["cpu_s"] - before["cpu_s"],
                "server_cpu_per_handshake_s": (at_ready["cpu_s"] - before["cpu_s"]) / max(1, ready["connected"]),
                "swarm_rss_mib": held["swarm_rss_mib"], "server_stats": after[kind],
            }
            if tls:
                result["issue"] = issued
                result["contexts_s"] = ready["contexts_s"]
                result["storms"] = [_storm(server, swarms, kind, resume, cpu, args) for resume in (False, True)]
            for s in swarms:
                s.close()
            print(f"capacity ({kind}): {result['connected']}/{args.devices} devices in {ready['ready_s']:.1f} s "
                  f"({result['connect_rate_per_s']:.0f}/s), server {after['rss_mib']:.0f} MiB, "
                  f"{result['server_cpu_hold_pct']:.1f} % CPU while holding", flush=True)
            return result
        finally:
            server.close()


def _storm(server: Proc, swarms: list[Proc], kind: str, resume: bool, hold_cpu_s: float,
           args: argparse.Namespace) -> dict[str, Any]:
    """One reconnect storm: every connected device closes and reconnects at once; the time until all are back,
    the handshakes' times, how many resumed their session, failed attempts (retried), the server's CPU and,
    net of ``hold_cpu_s`` per second (what holding the devices costs), per reconnection."""
    time.sleep(2)  # the previous storm's stragglers settle
    before = server.ask(op="stats")
    t0 = time.perf_counter()
    for s in swarms:
        assert s.p.stdin is not None
        s.p.stdin.write(json.dumps({"op": "storm", "resume": resume, "timeout": args.connect_timeout}) + "\n")
        s.p.stdin.flush()
    reports = [s.read() for s in swarms]
    wall = time.perf_counter() - t0
    after = server.ask(op="stats")
    out = {"resume": resume, "devices": sum(r["storm_devices"] for r in reports),
           "reconnected": sum(r["reconnected"] for r in reports),
           "resumed": sum(r["resumed"] for r in reports), "all_back_s": max(r["storm_s"] for r in reports),
           "wall_s": wall, "handshake_median_s": statistics.median(r["storm_handshake_s"]["median"] for r in reports),
           "handshake_p95_s": max(r["storm_handshake_s"]["p95"] for r in reports),
           "failures": sum(r["storm_failures"] for r in reports), "server_cpu_s": after["cpu_s"] - before["cpu_s"],
           "server": {k: after[kind][k] - before[kind][k] for k in ("accepted", "tls_failed", "handshake_timeouts",
                                                                   "refused_over_limit", "preauth_throttled")},
           "load_avg": os.getloadavg()}
    out["rate_per_s"] = out["reconnected"] / max(1e-9, out["all_back_s"])
    out["server_cpu_per_handshake_s"] = (out["server_cpu_s"] - hold_cpu_s * wall) / max(1, out["reconnected"])
    print(f"reconnect storm ({'resuming' if resume else 'full handshakes'}): {out['reconnected']} back in "
          f"{out['all_back_s']:.1f} s, {out['resumed']} resumed, server CPU {out['server_cpu_s']:.1f} s", flush=True)
    return out


def part_delivery(args: argparse.Namespace) -> dict[str, Any]:
    server = Proc("server", "--devices", str(args.background), "--max-unauthenticated", "6000",
                  "--handshake-timeout", "600", cpus=_cpus(args.server_cpus))
    probe = None
    try:
        info = server.read()
        probe = Proc("probe", "--port", str(info["ports"]["plain"]), cpus=_cpus(args.server_cpus))
        probe.read()
        server.ask(op="deliver", count=3, gap=0.05)  # warm-up
        out: dict[str, Any] = {"packet_coords": info["coords"], "params": info["params"]}
        for mode in ("idle", "slowloris"):
            samples: dict[str, dict[str, list[float]]] = {k: {"delivery": [], "wire": [], "cpu": [], "reads": []}
                                                          for k in ("baseline", "loaded")}
            opened, held, server_open, rss = [], [], 0, 0.0
            for _ in range(args.rounds):  # baseline and loaded chunks alternate: the shared machine drifts
                for phase in ("baseline", "loaded"):
                    swarms: list[Proc] = []
                    if phase == "loaded":
                        swarms = _swarms(mode, args.background, 2, info["ports"]["plain"], info, args)
                        opened.append(_merge(_wait_swarms(swarms, args.connect_timeout))["connected"])
                        time.sleep(args.settle_s)
                    stats0 = server.ask(op="stats")
                    r = server.ask(op="deliver", count=args.updates_per_round, gap=args.gap)
                    stats1 = server.ask(op="stats")
                    samples[phase]["delivery"] += r["delivery"]
                    samples[phase]["wire"] += r["wire"]
                    chunk_s = max(1e-9, args.updates_per_round * args.gap)
                    samples[phase]["cpu"].append((stats1["cpu_s"] - stats0["cpu_s"]) / chunk_s)
                    samples[phase]["reads"].append((stats1["plain"]["preauth_reads"]
                                                    - stats0["plain"]["preauth_reads"]) / chunk_s)
                    if swarms:
                        held.append(_merge([s.ask(op="report") for s in swarms])["connected"])
                        server_open, rss = stats1["plain"]["open"], stats1["rss_mib"]
                    for s in swarms:
                        s.close()
                    time.sleep(1)
            result = {phase: {"delivery_s": quantiles(v["delivery"]), "wire_s": quantiles(v["wire"]),
                              "server_cpu_pct": 100 * statistics.mean(v["cpu"]),
                              "preauth_reads_per_s": statistics.mean(v["reads"])} for phase, v in samples.items()}
            result["loaded"].update(background_open_min=min(opened), background_open_after_min=min(held),
                                    server_open=server_open, server_rss_mib=rss)
            result["packet_bytes"] = r["packet_bytes"]
            result["load_avg"] = os.getloadavg()
            for q, key in (("median", "vs_baseline"), ("p95", "p95_vs_baseline")):
                result[key] = result["loaded"]["delivery_s"][q] / result["baseline"]["delivery_s"][q]
            out[mode] = result
            print(f"delivery with {mode}: median {1e3 * result['loaded']['delivery_s']['median']:.2f} ms vs "
                  f"{1e3 * result['baseline']['delivery_s']['median']:.2f} ms ({result['vs_baseline']:.3f}x), p95 "
                  f"{result['p95_vs_baseline']:.3f}x ({server_open} open)", flush=True)
        return out
    finally:
        if probe is not None:
            probe.close()
        server.close()


def packet_round_trip(folder: Path, packet_bytes: int, repeats: int) -> dict[str, Any]:
    """What the connection itself adds per packet: one ``packet_bytes`` frame written, read whole by the peer
    (a thread), answered by a 14-byte ACK frame, on a plain and on a TLS 1.3 (mutual) loopback connection in this
    process; median and p95 over ``repeats``, alternating plain and TLS."""
    import socket

    from edgert.transport.frames import FrameType, encode_frame, encode_u64, read_frame, send_frame
    from edgert.transport.tls import TLSConfig

    server_tls = TLSConfig.from_dir(folder, "server", "localhost").server_context()
    device_tls = TLSConfig.from_dir(folder, "device", "probe-tls").client_context()
    frame = encode_frame(FrameType.PACKET, secrets.token_bytes(packet_bytes))
    pairs = {}
    for kind in ("plain", "tls"):
        listener = socket.create_server(("127.0.0.1", 0))
        client = socket.create_connection(listener.getsockname()[:2])
        peer, _ = listener.accept()
        listener.close()
        if kind == "tls":
            done: list[socket.socket] = []
            t = threading.Thread(target=lambda: done.append(server_tls.wrap_socket(peer, server_side=True)))
            t.start()
            client = device_tls.wrap_socket(client, server_hostname="127.0.0.1")
            t.join()
            peer = done[0]
        for s in (client, peer):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pairs[kind] = (client, peer)

    def echo(sock: socket.socket) -> None:  # the device: read the whole packet, ACK it
        try:
            while True:
                read_frame(sock, 30.0)
                send_frame(sock, FrameType.ACK, encode_u64(1))
        except (OSError, ValueError):
            pass

    threads = [threading.Thread(target=echo, args=(peer,), daemon=True) for _, peer in pairs.values()]
    for t in threads:
        t.start()
    times: dict[str, list[float]] = {"plain": [], "tls": []}
    for i in range(repeats + 10):
        for kind, (client, _) in pairs.items():
            t0 = time.perf_counter()
            client.sendall(frame)
            read_frame(client, 30.0)
            if i >= 10:  # warm-up
                times[kind].append(time.perf_counter() - t0)
    for client, peer in pairs.values():
        client.close()
        peer.close()
    out: dict[str, Any] = {k: quantiles(v) for k, v in times.items()}
    out["tls_minus_plain_median_s"] = out["tls"]["median"] - out["plain"]["median"]
    return out


def part_tls(args: argparse.Namespace) -> dict[str, Any]:
    from edgert.transport.certs import CertificateAuthority

    with tempfile.TemporaryDirectory() as tmp:
        ca = CertificateAuthority.init(Path(tmp) / "ca")
        ca.issue_server()
        ca.issue_device("probe-tls")
        server = Proc("server", "--devices", "0", "--tls-dir", str(ca.folder))
        probes: list[Proc] = []
        try:
            info = server.read()
            probes = [Proc("probe", "--port", str(info["ports"]["plain"])),
                      Proc("probe", "--port", str(info["ports"]["tls"]), "--tls-dir", str(ca.folder))]
            for p in probes:
                p.read()
            for kind in ("plain", "tls"):
                server.ask(op="deliver", kind=kind, count=3, gap=0.05)
            samples: dict[str, dict[str, list[float]]] = {k: {"delivery": [], "wire": [], "publish": []}
                                                          for k in ("plain", "tls")}
            for _ in range(args.tls_rounds):
                for kind in ("plain", "tls"):
                    r = server.ask(op="deliver", kind=kind, count=args.tls_per_round, gap=args.gap)
                    samples[kind]["delivery"] += r["delivery"]
                    samples[kind]["wire"] += r["wire"]
                    samples[kind]["publish"] += r["publish"]
            out: dict[str, Any] = {k: {"delivery_s": quantiles(v["delivery"]), "wire_s": quantiles(v["wire"]),
                                       "publish_s": quantiles(v["publish"])} for k, v in samples.items()}
            out["packet_bytes"] = r["packet_bytes"]
            out["tls_vs_plain"] = out["tls"]["delivery_s"]["median"] / out["plain"]["delivery_s"]["median"]
            out["tls_vs_plain_wire"] = out["tls"]["wire_s"]["median"] / out["plain"]["wire_s"]["median"]
            rt = out["round_trip"] = packet_round_trip(ca.folder, out["packet_bytes"], args.round_trips)
            out["tls_added_vs_plain_delivery"] = rt["tls_minus_plain_median_s"] / out["plain"]["delivery_s"]["median"]
            print(f"TLS vs plain: delivery median {1e3 * out['tls']['delivery_s']['median']:.2f} vs "
                  f"{1e3 * out['plain']['delivery_s']['median']:.2f} ms ({out['tls_vs_plain']:.3f}x)", flush=True)
            return out
        finally:
            for p in probes:
                p.close()
            server.close()


def _ms(x: float) -> str:
    return f"{1e3 * x:.2f} ms"


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    """A markdown table (and a blank line after it)."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(str(c) for c in row) + " |" for row in rows), ""]


def markdown(result: dict[str, Any]) -> str:
    lines = []
    caps = [result[k] for k in ("capacity", "capacity_tls") if result.get(k)]
    if caps:
        lines += _table(["transport", "devices", "connected (after hold)", "connect + handshake", "rate",
                         "handshake median / p95", "server CPU per handshake", "server RSS idle -> loaded",
                         "per device", "server CPU holding", "keepalive RTT median / p95", "PONGs in hold",
                         "failures connect / hold", "load avg"],
                        [[c["transport"], c["devices"], f"{c['connected']} ({c['connected_after_hold']})",
                          f"{c['ready_s']:.1f} s", f"{c['connect_rate_per_s']:.0f}/s",
                          f"{_ms(c['handshake_median_s'])} / {_ms(c['handshake_p95_s'])}",
                          _ms(c["server_cpu_per_handshake_s"]),
                          f"{c['server_rss_idle_mib']:.0f} -> {c['server_rss_loaded_mib']:.0f} MiB",
                          f"{c['server_rss_per_device_kib']:.1f} KiB", f"{c['server_cpu_hold_pct']:.1f} %",
                          f"{_ms(c['rtt_median_s'])} / {_ms(c['rtt_p95_s'])}", c["pongs_in_hold"],
                          f"{c['failures_connect']} / {c['failures_hold']}", f"{c['load_avg'][0]:.1f}"]
                         for c in caps])
    tcap = result.get("capacity_tls")
    if tcap:
        iss = tcap["issue"]
        lines += [f"Device certificates: {iss['devices']} issued as one batch in {iss['batch_s']:.1f} s "
                  f"({_ms(iss['batch_per_cert_s'])} each; one by one: {_ms(iss['single_per_cert_s'])} each); "
                  f"the swarm's {iss['devices']} client contexts took {tcap['contexts_s']:.1f} s per process.", ""]
        lines += _table(["reconnect storm", "back", "resumed", "all back in", "rate", "handshake median / p95",
                         "server CPU", "per handshake (net of holding)", "failed attempts (retried)", "load avg"],
                        [["session tickets" if st["resume"] else "full handshakes",
                          f"{st['reconnected']} of {st['devices']}", st["resumed"],
                          f"{st['all_back_s']:.1f} s", f"{st['rate_per_s']:.0f}/s",
                          f"{_ms(st['handshake_median_s'])} / {_ms(st['handshake_p95_s'])}",
                          f"{st['server_cpu_s']:.1f} s", _ms(st["server_cpu_per_handshake_s"]), st["failures"],
                          f"{st['load_avg'][0]:.1f}"] for st in tcap["storms"]])
    dl = result.get("delivery")
    if dl:
        lines += ["| background | chunks | open connections | delivery median | p95 | IQR | wire+apply median | "
                  "loaded / baseline (median / p95) | server CPU | handshake reads/s |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for mode in ("idle", "slowloris"):
            for phase in ("baseline", "loaded"):
                r = dl[mode][phase]
                d = r["delivery_s"]
                m = dl[mode]
                vs = f"**{m['vs_baseline']:.3f}** / {m['p95_vs_baseline']:.3f}" if phase == "loaded" else ""
                lines.append(f"| {mode} | {phase} | {r.get('server_open', 1)} | {_ms(d['median'])} | "
                             f"{_ms(d['p95'])} | {_ms(d['q3'] - d['q1'])} | {_ms(r['wire_s']['median'])} | {vs} | "
                             f"{r['server_cpu_pct']:.0f} % | {r.get('preauth_reads_per_s', 0):.0f} |")
        lines.append("")
    tl = result.get("tls")
    if tl:
        lines += ["| transport | delivery median | p95 | wire+apply median | packet |", "|---|---|---|---|---|"]
        for k in ("plain", "tls"):
            lines.append(f"| {k} | {_ms(tl[k]['delivery_s']['median'])} | {_ms(tl[k]['delivery_s']['p95'])} | "
                         f"{_ms(tl[k]['wire_s']['median'])} | {tl['packet_bytes']} B |")
        lines.append(f"\nTLS / plain: {tl['tls_vs_plain']:.3f} (delivery), {tl['tls_vs_plain_wire']:.3f} "
                     "(wire+apply)")
        rt = tl["round_trip"]
        lines.append(f"\nOne {tl['packet_bytes']} B packet + ACK on a connection: plain {_ms(rt['plain']['median'])} "
                     f"(p95 {_ms(rt['plain']['p95'])}), TLS {_ms(rt['tls']['median'])} (p95 {_ms(rt['tls']['p95'])}): "
                     f"TLS adds {1e6 * rt['tls_minus_plain_median_s']:.0f} us, "
                     f"{100 * tl['tls_added_vs_plain_delivery']:.2f} % of the plain delivery median")
    return "\n".join(lines)


def cmd_run(args: argparse.Namespace) -> None:
    raise_nofile()
    if args.quick:
        args.devices, args.background, args.rounds, args.hold_s, args.tls_rounds = 2000, 1000, 2, 10, 2
    result: dict[str, Any] = {"commit": git_commit(), "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
                              "host": platform.node(), "cpu_count": os.cpu_count(),
                              "load_avg_start": os.getloadavg(), "config": {k: v for k, v in vars(args).items()
                                                                            if k != "func"}}
    parts = args.parts.split(",")
    if "capacity" in parts:
        result["capacity"] = part_capacity(args)
    if "capacity_tls" in parts:
        result["capacity_tls"] = part_capacity(args, tls=True)
    if "delivery" in parts:
        result["delivery"] = part_delivery(args)
    if "tls" in parts:
        result["tls"] = part_tls(args)
    result["load_avg_end"] = os.getloadavg()
    table = markdown(result)
    print(table)
    if not args.no_write:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        name = "transport_load-cpu" + ("-quick" if args.quick else "") + (f"-{args.tag}" if args.tag else "")
        (RESULTS_DIR / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
        (RESULTS_DIR / f"{name}.md").write_text(table + "\n")
        print(f"wrote {RESULTS_DIR / name}.json and .md")


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd")
    run = sub.add_parser("run", help="the benchmark (default)")
    for p in (parser, run):
        p.add_argument("--parts", default="capacity,capacity_tls,delivery,tls")
        p.add_argument("--devices", type=int, default=10_000, help="keepalive devices of part 1")
        p.add_argument("--swarm-procs", type=int, default=4)
        p.add_argument("--hold-s", type=float, default=30.0)
        p.add_argument("--background", type=int, default=5000, help="idle / slowloris connections of part 2")
        p.add_argument("--rounds", type=int, default=4, help="part 2: baseline/loaded chunk pairs per background")
        p.add_argument("--updates-per-round", type=int, default=15, help="part 2: updates per chunk")
        p.add_argument("--gap", type=float, default=0.25, help="seconds between updates")
        p.add_argument("--server-cpus", default="",
                       help="part 2: pin the server and the probe device to these CPUs (e.g. 0; default: no pinning)")
        p.add_argument("--swarm-cpus", default="",
                       help="pin the load clients to these CPUs (e.g. 1: with --server-cpus 0 they stand in for "
                            "devices on other machines without taking the server's CPU)")
        p.add_argument("--settle-s", type=float, default=6.0,
                       help="part 2: seconds from the background being open to the loaded chunk (past the server's "
                            "first pause of a trickling connection, preauth_read_interval = 5 s)")
        p.add_argument("--tls-rounds", type=int, default=4)
        p.add_argument("--tls-per-round", type=int, default=15)
        p.add_argument("--ping-s", type=float, default=5.0)
        p.add_argument("--trickle-s", type=float, default=2.0)
        p.add_argument("--concurrency", type=int, default=128, help="connects in flight per swarm process")
        p.add_argument("--connect-timeout", type=float, default=180.0)
        p.add_argument("--client-nice", type=int, default=10,
                       help="niceness of the swarm processes (0: compete with the server as equals)")
        p.add_argument("--round-trips", type=int, default=400, help="part 3: packet round trips per transport")
        p.add_argument("--tag", default="", help="suffix of the result files")
        p.add_argument("--quick", action="store_true")
        p.add_argument("--no-write", action="store_true")
    s = sub.add_parser("server")
    s.add_argument("--devices", type=int, required=True)
    s.add_argument("--max-unauthenticated", type=int, default=1024)
    s.add_argument("--handshake-timeout", type=float, default=10.0)
    s.add_argument("--tls-dir", default=None)
    s.add_argument("--tls-tickets", type=int, default=0, help="TLS session tickets per handshake")
    w = sub.add_parser("swarm")
    w.add_argument("--mode", choices=("keepalive", "idle", "slowloris"), required=True)
    w.add_argument("--port", type=int, required=True)
    w.add_argument("--first", type=int, default=0)
    w.add_argument("--count", type=int, required=True)
    w.add_argument("--model-id", required=True)
    w.add_argument("--version", type=int, required=True)
    w.add_argument("--ping-s", type=float, default=5.0)
    w.add_argument("--trickle-s", type=float, default=2.0)
    w.add_argument("--concurrency", type=int, default=128)
    w.add_argument("--nice", type=int, default=0)
    w.add_argument("--tls-dir", default=None, help="keepalive over TLS 1.3: device-d<i> certificates of this CA")
    pr = sub.add_parser("probe")
    pr.add_argument("--port", type=int, required=True)
    pr.add_argument("--tls-dir", default=None)
    args = parser.parse_args(argv)
    {"server": cmd_server, "swarm": cmd_swarm, "probe": cmd_probe}.get(args.cmd or "run", cmd_run)(args)


if __name__ == "__main__":
    main()
