"""Fault soak (issue 19): one model server, N devices behind a fault-injecting proxy, invariants checked throughout.

One :class:`~edgert.transport.ModelServer` (in this process) publishes a stream of updates of a real model, the
AMS segmentation student (0.53 M float32 parameters, ImageNet-initialised encoder when the weights are
installed): every ``update_every_s`` a sparse delta of ``density`` (5 %) of every tensor's coordinates, every
``snapshot_every``-th version a full snapshot. The devices are real: ``firmware`` ``edgert_edge_node``
processes (C++) and ``python`` :class:`~edgert.transport.EdgeClient` s (hosted by one child process,
``python -m bench.soak edges``). Every device connects through one :class:`~edgert.transport.faults.FaultProxy`
process (``python -m edgert.transport.faults``) that injects delays, drops, resets, truncations, bit flips in
both directions and stalls (:func:`soak_faults`), and closes every connection after a random lifetime so that
faults keep coming. After ``duration_s`` the proxy calms (no more faults), the server publishes one last
version, and the soak measures how long every device takes to hold it.

Invariants (:class:`Invariants`), checked while it runs and at the end:

* **Right weights.** Every (version, weights) pair a device reports hashes (SHA-256) to the server's weights
  at that version. The server's history of hashes per version (:class:`ChainRecord`) is rebuilt
  independently by replaying the server's published packets on a separate
  :class:`~edgert.updates.DeviceMirror`. Python devices report every applied version from the slot's
  ``on_version`` callback and their state twice a second; firmware nodes are read (``W`` on their Unix socket)
  twice a second, and every ``applied version N`` line of their log is checked.
* **On the chain.** A device's versions only move forward along the server's chain: every version it applies
  or reports was published, and none is lower than one it held before.
* **Convergence.** Once faults stop, every device holds the server's latest version (right hash) within
  ``converge_within_s``.
* **No crash.** Every device process, the edge host and the proxy are alive at the end (nothing restarts them).
* **No leak.** The server's and the proxy's RSS, open descriptors and threads are sampled from ``/proc`` every second
  (the server's RSS right after ``malloc_trim(0)``, which returns the pages glibc keeps after frees, so that it counts
  live memory; the untrimmed figure is kept too). The RSS drift, the median of the last third of the fault phase minus
  the median of its middle third (the first third holds the warm-up of the server's 64-packet history), must stay
  below ``rss_growth_mib``; and after convergence, with every
  device connected again, each process holds no more descriptors and threads than after the warm-up (every device
  connected then too) plus ``fd_slack``. (The descriptor count moves with the number of devices connected at the
  moment, so its slope during the faults is reported, not judged; so are the least-squares RSS growth over the second
  half and the server's count of Python objects, ``sys.getallocatedblocks()``.)

Run ``python -m bench.soak`` (5 minutes of faults, about 6 with warm-up and convergence; ``--duration`` to
change it). Prints progress every few seconds and writes ``bench/results/soak.json`` and ``soak.md``
(``--out``); ``tests/test_soak.py`` runs the same code for 10 s of faults (about 25 s in all) with a fixed seed.
"""
from __future__ import annotations

import argparse
import ctypes
import dataclasses
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Optional

import numpy as np

from bench.device_e2e import node_binary
from bench.harness import RESULTS_DIR, child_env, git_commit, stop_process
from edgert.infer.node_client import NodeSocket, NodeSocketError
from edgert.transport import EdgeClient, ModelServer
from edgert.transport.faults import FAULT_KINDS, FaultConfig
from edgert.transport.keys import load_key, load_keys, write_keys
from edgert.updates import DeviceMirror, Manifest, TensorUpdate, module_manifest, module_weights

ROOT = Path(__file__).resolve().parent.parent
Progress = Callable[[str], None]


def soak_faults(seed: int = 0, short: bool = False) -> FaultConfig:
    """The soak's fault mix: 85 % of connections get a fault, every connection dies after 4-20 s (``short``:
    1-5 s, faults within 3 s, stalls up to 4 s, for the CI run)."""
    return FaultConfig(seed=seed, delay=0.15, drop=0.1, reset=0.1, truncate=0.1, flip=0.3, stall=0.1,
                       delay_s=(0.005, 0.1), stall_s=(0.5, 4.0) if short else (1.0, 20.0),
                       at_s=(0.0, 3.0) if short else (0.0, 10.0), down_bytes=(0, 1 << 20), up_bytes=(0, 256),
                       up=0.25, flips=(1, 3), lifetime_s=(1.0, 5.0) if short else (4.0, 20.0))


@dataclass
class SoakConfig:
    """One soak run. Defaults: the 5-minute run of ``docs/results/soak.md``."""

    duration_s: float = 300.0  # the fault phase
    firmware: int = 4  # edgert_edge_node processes
    python: int = 4  # EdgeClients (in one child process)
    update_every_s: float = 1.0
    snapshot_every: int = 20  # every n-th version is a full snapshot
    density: float = 0.05
    seed: int = 0
    faults: Optional[FaultConfig] = None  # None: soak_faults(seed)
    warmup_within_s: float = 60.0
    converge_within_s: float = 30.0  # the stated bound (device silence timeout 15 s + backoff <= 6.25 s + transfer)
    poll_every_s: float = 0.5  # firmware weight reads
    sample_every_s: float = 1.0  # RSS / descriptor samples
    progress_every_s: float = 10.0
    rss_growth_mib: float = 16.0
    fd_slack: int = 2
    width_mult: float = 0.5
    edge_node: Optional[str] = None  # None: EDGERT_EDGE_NODE or build/*/firmware/edgert_edge_node

    def fault_config(self) -> FaultConfig:
        return self.faults if self.faults is not None else soak_faults(self.seed)


# ---- the model and its update stream ----------------------------------------------------------------
def soak_model(width_mult: float = 0.5) -> tuple[Manifest, dict[str, np.ndarray], bool]:
    """The AMS student's manifest and weights, and whether its encoder has the ImageNet weights."""
    from edgert.data import model_available
    from edgert.vision.models import segmentation_student

    pretrained = model_available("mobilenetv2-imagenet")
    model = segmentation_student(2, width_mult=width_mult, pretrained=pretrained)
    return module_manifest(model, tag="soak"), module_weights(model), pretrained


def sparse_delta(mirror: DeviceMirror, rng: np.random.Generator, density: float) -> dict[str, TensorUpdate]:
    """``density`` of each tensor's coordinates moved by 1 % of the tensor's spread (an AMS-sized update)."""
    out: dict[str, TensorUpdate] = {}
    for t in mirror.manifest.tensors:
        w = mirror.tensor(t.name).ravel()
        count = max(1, int(round(density * w.size)))
        idx = np.sort(rng.choice(w.size, size=count, replace=False)).astype(np.int64)
        scale = 0.01 * (float(w.std()) or 1.0)
        out[t.name] = TensorUpdate(values=(scale * rng.standard_normal(count)).astype(np.float32), indices=idx)
    return out


def digest(weights: bytes) -> str:
    return hashlib.sha256(weights).hexdigest()


class ChainRecord:
    """The server's chain: the weights hash of every published version, rebuilt by replaying the server's
    packets (``server.history``) on an independent :class:`DeviceMirror`."""

    def __init__(self, manifest: Manifest) -> None:
        self.mirror = DeviceMirror(manifest)
        self.hashes: dict[int, str] = {}
        self.gaps = 0  # packets the replay could not chain (history trimmed past the recorder)
        self.jumps: list[tuple[int, int]] = []  # (from, to) where the server's version skipped numbers
        self._lock = threading.Lock()

    def sync(self, server: ModelServer) -> None:
        with self._lock:
            for _ in range(5):
                try:
                    packets = list(server.history)
                    break
                except RuntimeError:  # the deque grew while it was copied
                    continue
            else:
                return
            for p in packets:
                if p.target_version <= self.mirror.version:
                    continue
                if not p.full_snapshot and p.base_version != self.mirror.version:
                    self.gaps += 1
                    continue
                if self.mirror.version and p.target_version != self.mirror.version + 1:
                    self.jumps.append((self.mirror.version, p.target_version))
                self.mirror.apply(p)
                self.hashes[p.target_version] = digest(self.mirror.weights_bytes())

    @property
    def latest(self) -> int:
        return self.mirror.version


class Invariants:
    """Every observation of a device is checked against the chain; a failed check is a violation."""

    def __init__(self, chain: ChainRecord, server: ModelServer) -> None:
        self.chain = chain
        self.server = server
        self.violations: list[str] = []
        self.last: dict[tuple[str, str], int] = {}
        self.observations = 0
        self._lock = threading.Lock()

    def _known(self, version: int) -> Optional[str]:
        if version not in self.chain.hashes:
            self.chain.sync(self.server)
        return self.chain.hashes.get(version)

    def observe(self, device: str, version: int, weights_sha256: Optional[str], what: str,
                sequence: str = "") -> bool:
        """A device reported ``version`` (and the hash of its active weights, if read); False on a violation.

        ``sequence`` names the ordered stream the observation belongs to: versions must not go back within one
        (a firmware node's log and its weight reads are two streams, read at different times).
        """
        if version == 0:  # no model yet, or a fresh slot after a manifest: nothing applied
            return True
        expected = self._known(version)
        with self._lock:
            self.observations += 1
            problem = None
            if expected is None:
                problem = f"version {version} is not on the server's chain"
            elif weights_sha256 is not None and weights_sha256 != expected:
                problem = f"weights at version {version} hash to {weights_sha256[:16]}, the server's to {expected[:16]}"
            elif version < self.last.get((device, sequence), 0):
                problem = f"version went back from {self.last[device, sequence]} to {version}"
            if problem is not None:
                self.violations.append(f"{device} ({what}): {problem}")
                return False
            self.last[device, sequence] = max(version, self.last.get((device, sequence), 0))
            return True


# ---- devices ------------------------------------------------------------------------------------------
def find_edge_node(explicit: Optional[str] = None) -> Path:
    """The edgert_edge_node binary: ``explicit``, else :func:`bench.device_e2e.node_binary` ($EDGERT_EDGE_NODE or
    a host build under build/; it exits with instructions when there is none)."""
    return Path(explicit) if explicit else node_binary()


_APPLIED = re.compile(r"applied version (\d+)")
_REJECTED = re.compile(r"rejected packet: (EDGERT_\w+)")


class FirmwareDevice:
    """One ``edgert_edge_node`` process: its log is tailed, its weights read on its Unix socket."""

    def __init__(self, binary: Path, device: str, key_file: Path, address: tuple[str, int], workdir: Path) -> None:
        self.device = device
        workdir.mkdir(parents=True)
        self.log_path = workdir / "node.log"
        self.sock_path = workdir / "weights.sock"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [str(binary), "--server", f"{address[0]}:{address[1]}", "--device-id", device, "--key-file",
             str(key_file), "--state-dir", str(workdir / "state"), "--serve", str(self.sock_path)],
            stdout=self._log, stderr=subprocess.STDOUT)
        self._socket: Optional[NodeSocket] = None
        self._offset = 0
        self._partial = b""
        self.applied = 0
        self.connections = 0
        self.rejections: Counter[str] = Counter()

    def read_weights(self) -> Optional[tuple[int, bytes]]:
        """(version, active weights) or None when the socket is not up yet."""
        if self._socket is None:
            if not self.sock_path.exists():
                return None
            self._socket = NodeSocket(self.sock_path, timeout_s=5.0)
        try:
            weights, version = self._socket.weights()
        except NodeSocketError:
            return None
        return version, weights

    def new_log_lines(self) -> list[str]:
        with open(self.log_path, "rb") as f:
            f.seek(self._offset)
            data = f.read()
        self._offset += len(data)
        data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()
        return [line.decode(errors="replace") for line in lines]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self._socket is not None:
            self._socket.close()
        stop_process(self.proc)
        self._log.close()


class PythonEdges:
    """The child process hosting the Python EdgeClients (``python -m bench.soak edges``); its JSON lines are
    read on a thread."""

    def __init__(self, devices: list[str], keys: Path, address: tuple[str, int], on_line: Callable[[dict], None],
                 log_path: Path) -> None:
        self.devices = devices
        self._stderr = open(log_path, "wb")
        env = child_env()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.soak", "edges", "--server", f"{address[0]}:{address[1]}",
             "--keys", str(keys), *devices], stdout=subprocess.PIPE, stdin=subprocess.PIPE,
            stderr=self._stderr, cwd=ROOT, env=env)
        self.on_line = on_line
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.on_line(json.loads(raw))

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            try:
                self.proc.stdin.write(b"quit\n")
                self.proc.stdin.flush()
            except OSError:
                pass
            stop_process(self.proc, timeout=15, terminate=False)
        self.thread.join(timeout=5)
        self._stderr.close()


def edges_main(argv: list[str]) -> int:
    """``python -m bench.soak edges --server HOST:PORT --keys KEYS DEVICE...``: runs the EdgeClients and prints
    ``{"applied": ...}`` at every applied version and ``{"state": ...}`` for every client twice a second."""
    ap = argparse.ArgumentParser(prog="python -m bench.soak edges")
    ap.add_argument("--server", required=True)
    ap.add_argument("--keys", required=True)
    ap.add_argument("devices", nargs="+")
    args = ap.parse_args(argv)
    host, _, port = args.server.rpartition(":")
    out = threading.Lock()
    report = threading.Lock()

    def emit(obj: dict[str, Any]) -> None:
        with out:
            sys.stdout.write(json.dumps(obj) + "\n")
            sys.stdout.flush()

    clients: dict[str, EdgeClient] = {}

    def applied(device: str) -> Callable[[int], None]:
        def on_version(version: int) -> None:  # on the client's network thread, right after the swap
            slot = clients[device].slot
            assert slot is not None
            with report:  # read and print as one step, so that the lines of a device are in version order
                weights, v = slot.weights()
                emit({"applied": device, "version": v, "sha256": digest(weights)})
        return on_version

    for device in args.devices:
        clients[device] = EdgeClient((host, int(port)), device, load_key(args.keys, device),
                                     on_version=applied(device))
    for c in clients.values():
        c.start()
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
    while not stop.wait(0.5):
        for device, c in clients.items():
            with report:
                slot = c.slot
                weights, version = slot.weights() if slot is not None else (b"", 0)
                emit({"state": device, "version": version, "sha256": digest(weights) if weights else None,
                      "connections": c.connections})
    for c in clients.values():
        c.stop()
    return 0


# ---- processes: the proxy, /proc sampling ------------------------------------------------------------------
class ProxyProcess:
    """``python -m edgert.transport.faults`` as a child process; its stats lines are read on a thread."""

    def __init__(self, target: tuple[str, int], config: FaultConfig) -> None:
        env = child_env()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edgert.transport.faults", "--target", f"{target[0]}:{target[1]}",
             "--config", json.dumps(dataclasses.asdict(config)), "--stats-every", "1", "--calm"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        assert self.proc.stdout is not None
        first = json.loads(self.proc.stdout.readline() or b"{}")
        if "listening" not in first:
            raise RuntimeError(f"the fault proxy did not start (exit code {self.proc.poll()})")
        self.address: tuple[str, int] = (first["listening"][0], int(first["listening"][1]))
        self.stats: dict[str, Any] = {}
        self.thread = threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True)
        self.thread.start()

    def _read(self, stream: IO[bytes]) -> None:
        for raw in stream:
            line = json.loads(raw)
            if "stats" in line:
                self.stats = line["stats"]

    def command(self, cmd: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(cmd.encode() + b"\n")
        self.proc.stdin.flush()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.command("quit")
            except OSError:
                pass
            stop_process(self.proc, timeout=15, terminate=False)
        self.thread.join(timeout=5)


def release_free_heap() -> None:
    """Hands the C heap's free pages back to the OS (glibc ``malloc_trim(0)``; nothing elsewhere), so that RSS
    measures live memory rather than what the allocator keeps after freeing (per-thread arenas, 2 MiB snapshot
    buffers)."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def proc_sample(pid: int) -> dict[str, float]:
    """RSS (MiB), open descriptors and threads of a process, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    fields_ = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {"rss_mib": int(fields_["VmRSS"].split()[0]) / 1024.0, "fds": float(len(os.listdir(f"/proc/{pid}/fd"))),
            "threads": float(int(fields_["Threads"]))}


def drift(values: list[float]) -> float:
    """Median of the last third of ``values`` minus the median of the middle third (0 with < 3 values)."""
    n = len(values)
    if n < 3:
        return 0.0
    return float(np.median(values[2 * n // 3:]) - np.median(values[n // 3:2 * n // 3]))


def growth(times: list[float], values: list[float]) -> float:
    """Least-squares slope of ``values`` over ``times`` times the span of ``times`` (0 with < 3 points)."""
    if len(times) < 3 or times[-1] == times[0]:
        return 0.0
    slope = float(np.polyfit(np.asarray(times) - times[0], np.asarray(values), 1)[0])
    return slope * (times[-1] - times[0])


def classify_rejection(message: str) -> str:
    """The status of a NACK's message: firmware nodes send the status name, EdgeClients libedgert's message."""
    match = re.match(r"(EDGERT_\w+)", message)
    if match:
        return match.group(1)
    for text, status in (("CRC32C mismatch", "BAD_CRC"), ("HMAC", "BAD_MAC"), ("bad magic", "BAD_MAGIC"),
                         ("carries no MAC", "MAC_REQUIRED"), ("differs from the slot", "WRONG_MODEL"),
                         ("format version", "UNSUPPORTED_VERSION"), ("flag bits", "UNSUPPORTED_VERSION"),
                         ("reserved header", "UNSUPPORTED_VERSION"), ("header announces", "TRUNCATED"),
                         ("header alone", "TRUNCATED")):
        if text in message:
            return "EDGERT_ERR_PACKET_" + status
    return "other: " + re.sub(r"\d+", "#", message)[:60]


# ---- the soak -----------------------------------------------------------------------------------------------
@dataclass
class _Tally:
    applied: Counter[str] = field(default_factory=Counter)
    connections: dict[str, int] = field(default_factory=dict)
    rejections: Counter[str] = field(default_factory=Counter)
    server_connects: Counter[str] = field(default_factory=Counter)
    state: dict[str, tuple[int, Optional[str]]] = field(default_factory=dict)


def run_soak(cfg: SoakConfig, progress: Progress = print, workdir: Optional[Path] = None) -> dict[str, Any]:
    """Runs one soak and returns its summary (``summary["ok"]``: every invariant held)."""
    with tempfile.TemporaryDirectory(prefix="edgert-soak-") as tmp:
        return _run(cfg, progress, Path(workdir) if workdir is not None else Path(tmp))


def _run(cfg: SoakConfig, progress: Progress, work: Path) -> dict[str, Any]:
    faults = cfg.fault_config()
    faults.validate()
    binary = find_edge_node(cfg.edge_node) if cfg.firmware else None
    rng = np.random.default_rng(cfg.seed)
    manifest, weights, pretrained = soak_model(cfg.width_mult)
    fw_ids = [f"fw-{i}" for i in range(cfg.firmware)]
    py_ids = [f"py-{i}" for i in range(cfg.python)]
    keys_file = write_keys(work / "keys", fw_ids + py_ids)
    tally = _Tally()
    lock = threading.Lock()

    def server_log(line: str) -> None:
        device, _, rest = line.partition(": ")
        with lock:
            if rest.startswith("connected at version"):
                tally.server_connects[device] += 1
            elif rest.startswith("rejected a packet"):
                tally.rejections[classify_rejection(rest.split(": ", 1)[1] if ": " in rest else rest)] += 1

    server = ModelServer(manifest, load_keys(keys_file), weights, log=server_log).start()
    chain = ChainRecord(manifest)
    chain.sync(server)
    inv = Invariants(chain, server)

    def edge_line(line: dict[str, Any]) -> None:
        if "applied" in line:
            with lock:
                tally.applied[line["applied"]] += 1
            inv.observe(line["applied"], line["version"], line["sha256"], "applied")
        elif "state" in line:
            with lock:
                tally.state[line["state"]] = (line["version"], line["sha256"])
                tally.connections[line["state"]] = line["connections"]
            inv.observe(line["state"], line["version"], line["sha256"], "state")

    proxy = ProxyProcess(server.address, faults)  # calm until the warm-up ends ("resume")
    nodes = [FirmwareDevice(binary, d, work / "keys" / f"{d}.key", proxy.address, work / d)
             for d in fw_ids] if binary is not None else []
    edges = PythonEdges(py_ids, keys_file, proxy.address, edge_line, work / "edges.log") if py_ids else None
    samples: dict[str, list[dict[str, float]]] = {"server": [], "proxy": []}
    start = time.monotonic()
    phase = "warmup"
    marks: dict[str, float] = {}

    def poll_nodes() -> None:
        for node in nodes:
            for line in node.new_log_lines():
                m = _APPLIED.search(line)
                if m:
                    node.applied += 1
                    inv.observe(node.device, int(m.group(1)), None, "log", sequence="log")
                elif "connected and authenticated" in line:
                    node.connections += 1
                else:
                    r = _REJECTED.search(line)
                    if r:
                        node.rejections[r.group(1)] += 1
            got = node.read_weights()
            if got is not None:
                version, buf = got
                with lock:
                    tally.state[node.device] = (version, digest(buf) if buf else None)
                inv.observe(node.device, version, digest(buf) if buf else None, "read", sequence="read")

    def in_sync() -> int:
        target = chain.latest
        want = chain.hashes.get(target)
        with lock:
            return sum(1 for d in fw_ids + py_ids if tally.state.get(d) == (target, want))

    def sample() -> None:
        t = time.monotonic() - start
        raw = proc_sample(os.getpid())["rss_mib"]
        release_free_heap()
        for name, pid in (("server", os.getpid()), ("proxy", proxy.proc.pid)):
            try:
                row = {"t": t, "phase_fault": float(phase == "faults"), **proc_sample(pid)}
            except (OSError, KeyError):
                continue
            if name == "server":
                row["rss_mib_untrimmed"] = raw
                row["py_blocks"] = float(sys.getallocatedblocks())
            samples[name].append(row)

    def struck() -> int:
        return sum(int(proxy.stats.get(k, 0)) for k in FAULT_KINDS + ("expire",))

    reported = [0]

    def progress_line() -> None:
        for v in inv.violations[reported[0]:]:
            progress(f"VIOLATION {v}")
        reported[0] = len(inv.violations)
        s, p = samples["server"][-1], (samples["proxy"] or [{}])[-1]
        progress(f"[{time.monotonic() - start:6.1f} s {phase:8}] server v{server.version} "
                 f"in sync {in_sync()}/{len(fw_ids) + len(py_ids)} | faults {struck()} "
                 f"({', '.join(f'{k} {proxy.stats.get(k, 0)}' for k in FAULT_KINDS + ('expire',))}) | "
                 f"connects {sum(tally.server_connects.values())} nacks {sum(tally.rejections.values())} | "
                 f"server {s['rss_mib']:.0f} MiB {s['fds']:.0f} fds {s['threads']:.0f} thr | "
                 f"proxy {p.get('rss_mib', 0):.0f} MiB {p.get('fds', 0):.0f} fds | violations {len(inv.violations)}")

    next_update = next_poll = next_sample = next_progress = time.monotonic()
    published = 0
    converge_s: Optional[float] = None
    warm: dict[str, dict[str, float]] = {}
    try:
        progress(f"soak: {len(fw_ids)} firmware + {len(py_ids)} Python devices, model {manifest.weights_size} bytes "
                 f"({len(manifest.tensors)} tensors), faults for {cfg.duration_s:.0f} s via {proxy.address}")
        while True:
            now = time.monotonic()
            if now >= next_poll:
                poll_nodes()
                next_poll = now + cfg.poll_every_s
            if now >= next_sample:
                sample()
                next_sample = now + cfg.sample_every_s
            if now >= next_progress:
                progress_line()
                next_progress = now + cfg.progress_every_s
            if phase == "warmup":
                if in_sync() == len(fw_ids) + len(py_ids):
                    marks["warm"] = now - start
                    sample()
                    warm = {name: rows[-1] for name, rows in samples.items() if rows}
                    phase = "faults"
                    proxy.command("resume")
                    marks["faults_start"] = now
                    next_update = now
                elif now - start > cfg.warmup_within_s:
                    inv.violations.append(f"warm-up: only {in_sync()} devices in sync after {cfg.warmup_within_s} s")
                    break
            elif phase == "faults":
                if now >= next_update:
                    published += 1
                    if published % cfg.snapshot_every == 0:
                        base = {t.name: server.mirror.tensor(t.name) for t in manifest.tensors}
                        server.publish_snapshot({k: v + (0.01 * (float(v.std()) or 1.0) * rng.standard_normal(v.shape)
                                                         ).astype(v.dtype) for k, v in base.items()})
                    else:
                        server.publish(sparse_delta(server.mirror, rng, cfg.density))
                    chain.sync(server)
                    next_update = now + cfg.update_every_s
                if now - marks["faults_start"] >= cfg.duration_s:
                    proxy.command("calm")
                    time.sleep(0.2)  # the proxy has applied it before the last version goes out
                    server.publish(sparse_delta(server.mirror, rng, cfg.density))
                    chain.sync(server)
                    phase = "converge"
                    marks["calm"] = time.monotonic()
                    progress_line()
            elif phase == "converge":
                if in_sync() == len(fw_ids) + len(py_ids):
                    converge_s = now - marks["calm"]
                    time.sleep(1.0)  # let the last ACKs and closes settle before the final samples
                    poll_nodes()
                    sample()
                    progress_line()
                    break
                if now - marks["calm"] > cfg.converge_within_s:
                    poll_nodes()
                    progress_line()
                    break
            time.sleep(0.05)
        alive = {**{n.device: n.alive() for n in nodes}, "edges": edges.alive() if edges else True,
                 "proxy": proxy.alive()}
        chain.sync(server)
        final_ok = chain.hashes.get(server.version) == digest(server.weights_bytes())
    finally:
        if edges is not None:
            edges.stop()
        for node in nodes:
            node.stop()
        proxy.stop()
        server.stop()

    # ---- verdicts -------------------------------------------------------------------------------------------
    leak: dict[str, Any] = {}
    for name, rows in samples.items():
        fault_rows = [r for r in rows if r["phase_fault"]]
        half = fault_rows[len(fault_rows) // 2:]
        t = [r["t"] for r in half]
        leak[name] = {
            "rss_mib_first": rows[0]["rss_mib"] if rows else None,
            "rss_mib_last": rows[-1]["rss_mib"] if rows else None,
            "rss_mib_max": max((r["rss_mib"] for r in rows), default=None),
            "fds_first": rows[0]["fds"] if rows else None, "fds_last": rows[-1]["fds"] if rows else None,
            "fds_max": max((r["fds"] for r in rows), default=None),
            "threads_last": rows[-1]["threads"] if rows else None,
            "rss_drift_mib": drift([r["rss_mib"] for r in fault_rows]),
            "rss_growth_mib_second_half": growth(t, [r["rss_mib"] for r in half]),
            "fd_growth_second_half": growth(t, [r["fds"] for r in half]),
        }
        if rows and "py_blocks" in rows[0]:
            blocks = [r["py_blocks"] for r in fault_rows]
            leak[name]["py_blocks_middle_third"] = float(np.median(blocks[len(blocks) // 3:2 * len(blocks) // 3])) \
                if len(blocks) >= 3 else None
            leak[name]["py_blocks_drift"] = drift(blocks)
        ok = leak[name]["rss_drift_mib"] < cfg.rss_growth_mib
        if name in warm and rows and converge_s is not None:
            leak[name]["fds_after_warmup"] = warm[name]["fds"]
            leak[name]["threads_after_warmup"] = warm[name]["threads"]
            ok = ok and rows[-1]["fds"] <= warm[name]["fds"] + cfg.fd_slack \
                and rows[-1]["threads"] <= warm[name]["threads"] + cfg.fd_slack
        leak[name]["ok"] = bool(ok)
    for node in nodes:
        tally.applied[node.device] = node.applied
        tally.connections[node.device] = node.connections
    fw_rejections: Counter[str] = Counter()
    for node in nodes:
        fw_rejections.update(node.rejections)
    stats = proxy.stats
    checks = {
        "right_weights_and_chain": not inv.violations,
        "converged": converge_s is not None and converge_s <= cfg.converge_within_s,
        "no_crash": all(alive.values()),
        "no_leak": all(v["ok"] for v in leak.values()),
        "server_mirror_matches_replay": bool(final_ok) and chain.gaps == 0,
    }
    summary = {
        "ok": all(checks.values()), "checks": checks, "violations": inv.violations[:50],
        "config": {**dataclasses.asdict(cfg), "faults": dataclasses.asdict(faults)},
        "model": {"name": "AMS segmentation student", "width_mult": cfg.width_mult, "imagenet_encoder": pretrained,
                  "weights_bytes": manifest.weights_size, "tensors": len(manifest.tensors)},
        "devices": {"firmware": fw_ids, "python": py_ids},
        "warmup_s": marks.get("warm"),
        "fault_phase_s": (marks["calm"] - marks["faults_start"]) if "calm" in marks else None,
        "converge_s": converge_s, "converge_within_s": cfg.converge_within_s,
        "server_version": server.version, "server_version_jumps": chain.jumps,
        "published": published + (1 if "calm" in marks else 0),
        "faults": {k: int(stats.get(k, 0)) for k in FAULT_KINDS + ("expire",)},
        "faults_drawn": {k: int(stats.get(f"drawn_{k}", 0)) for k in FAULT_KINDS},
        "flipped_bits": {"down": int(stats.get("flip_down", 0)), "up": int(stats.get("flip_up", 0))},
        "proxy_connections": int(stats.get("connections", 0)), "proxy_open_at_end": int(stats.get("open", 0)),
        "proxy_bytes": {"down": int(stats.get("bytes_down", 0)), "up": int(stats.get("bytes_up", 0))},
        "server_connects": dict(tally.server_connects),
        "reconnects": sum(tally.server_connects.values()) - len(fw_ids + py_ids),
        "device_connections": dict(tally.connections), "applied": dict(tally.applied),
        "rejections_by_status": dict(tally.rejections), "firmware_rejections_by_status": dict(fw_rejections),
        "observations_checked": inv.observations, "alive": alive, "leak": leak, "samples": samples,
    }
    return summary


# ---- results ------------------------------------------------------------------------------------------------
def markdown(summary: dict[str, Any]) -> str:
    """The summary as markdown tables."""
    c = summary["checks"]
    lines = ["| invariant | held |", "|---|---|"]
    lines += [f"| {k.replace('_', ' ')} | {'yes' if v else '**no**'} |" for k, v in c.items()]
    lines += ["", "| quantity | value |", "|---|---|"]
    devs = summary["devices"]
    converge = "not reached" if summary["converge_s"] is None else f"{summary['converge_s']:.2f} s"
    lines += [
        f"| devices | {len(devs['firmware'])} firmware nodes + {len(devs['python'])} Python EdgeClients |",
        f"| model | {summary['model']['name']} x{summary['model']['width_mult']}, {summary['model']['weights_bytes']} "
        f"bytes, {summary['model']['tensors']} tensors |",
        f"| fault phase | {summary['fault_phase_s'] or 0:.0f} s, {summary['published']} versions published |",
        "| faults struck | " + ", ".join(f"{k} {v}" for k, v in summary["faults"].items()) + " |",
        f"| bits flipped | down {summary['flipped_bits']['down']}, up {summary['flipped_bits']['up']} |",
        f"| proxied connections | {summary['proxy_connections']} |",
        f"| reconnects (server handshakes beyond the first per device) | {summary['reconnects']} |",
        f"| versions applied (all devices) | {sum(summary['applied'].values())} |",
        "| rejections (NACK) by status | "
        + (", ".join(f"{k} {v}" for k, v in sorted(summary["rejections_by_status"].items())) or "none") + " |",
        f"| observations checked | {summary['observations_checked']} |",
        f"| server version at the end / versions published | {summary['server_version']} / {summary['published']} "
        f"({len(summary['server_version_jumps'])} jumps of the server's version: "
        f"{', '.join(f'{a} -> {b}' for a, b in summary['server_version_jumps'][:3]) or 'none'}) |",
        f"| convergence after faults stop | {converge} (bound {summary['converge_within_s']} s) |",
    ]
    lines += ["", "| process | RSS first / last / max (MiB) | RSS drift, last vs middle third of faults (MiB) | "
                  "RSS fitted growth, 2nd half (MiB, not judged) | "
                  "fds after warm-up / at the end / max | threads after warm-up / at the end | "
                  "fd growth, 2nd half (not judged) | ok |", "|---|---|---|---|---|---|---|---|"]
    for name, v in summary["leak"].items():
        lines.append(f"| {name} | {v['rss_mib_first']:.1f} / {v['rss_mib_last']:.1f} / {v['rss_mib_max']:.1f} | "
                     f"{v['rss_drift_mib']:+.2f} | {v['rss_growth_mib_second_half']:+.2f} | "
                     f"{v.get('fds_after_warmup', float('nan')):.0f} / {v['fds_last']:.0f} / {v['fds_max']:.0f} | "
                     f"{v.get('threads_after_warmup', float('nan')):.0f} / {v['threads_last']:.0f} | "
                     f"{v['fd_growth_second_half']:+.2f} | {'yes' if v['ok'] else '**no**'} |")
    server = summary["leak"].get("server", {})
    if server.get("py_blocks_middle_third"):
        lines += ["", "Server Python objects (`sys.getallocatedblocks()`): median "
                      f"{server['py_blocks_middle_third']:.0f} in the middle third of the faults, drift "
                      f"{server['py_blocks_drift']:+.0f} in the last third."]
    return "\n".join(lines) + "\n"


def plot(summary: dict[str, Any], path: Path) -> bool:
    """RSS and descriptors over time for the server and the proxy (False without matplotlib)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(2, 1, figsize=(8, 5), sharex=True)
    for name, rows in summary["samples"].items():
        t = [r["t"] for r in rows]
        axes[0].plot(t, [r["rss_mib"] for r in rows], label=name)
        if rows and "rss_mib_untrimmed" in rows[0]:
            axes[0].plot(t, [r["rss_mib_untrimmed"] for r in rows], "--", label=f"{name} (before malloc_trim)")
        axes[1].plot(t, [r["fds"] for r in rows], label=name)
    axes[0].set_ylabel("RSS (MiB)")
    axes[1].set_ylabel("open descriptors")
    axes[1].set_xlabel("time (s)")
    for ax in axes:
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "edges":
        return edges_main(argv[1:])
    ap = argparse.ArgumentParser(prog="python -m bench.soak", description="Fault soak of the model server "
                                 "and its devices (see the module docstring).")
    ap.add_argument("--duration", type=float, default=300.0, help="seconds of faults (default 300)")
    ap.add_argument("--firmware", type=int, default=4)
    ap.add_argument("--python", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--edge-node", default=None, help="edgert_edge_node binary")
    ap.add_argument("--out", default=str(RESULTS_DIR), help="folder for soak.json / soak.md / soak.png")
    ap.add_argument("--name", default="soak")
    args = ap.parse_args(argv)
    cfg = SoakConfig(duration_s=args.duration, firmware=args.firmware, python=args.python, seed=args.seed,
                     edge_node=args.edge_node)
    summary = run_soak(cfg)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary["commit"] = git_commit()
    (out / f"{args.name}.json").write_text(json.dumps(summary, indent=1) + "\n")
    table = markdown(summary)
    (out / f"{args.name}.md").write_text(table)
    if plot(summary, out / f"{args.name}.png"):
        print(f"plot: {out / f'{args.name}.png'}")
    print(table)
    print("violations:", *summary["violations"][:10], sep="\n  ") if summary["violations"] else None
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
