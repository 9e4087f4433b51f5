"""A fault-injecting TCP proxy for soak tests and drills (``bench/soak.py``, ``tests/test_faults.py``).

:class:`FaultProxy` listens on a local address and forwards every accepted connection to a target (a
:class:`~edgert.transport.ModelServer`), on one asyncio event loop in one background thread however many
connections it carries. Each connection draws one :class:`FaultPlan` from a generator seeded by
``(FaultConfig.seed, connection number)``, so the plan of the n-th connection is reproducible:

* ``delay``: every chunk of both directions waits ``delay_s`` before it is forwarded;
* ``drop``: the connection is closed (FIN on both sides), the chunk in flight discarded;
* ``reset``: both sides are reset (``SO_LINGER`` 0, the peers see ``ECONNRESET``);
* ``truncate``: one direction forwards exactly ``at_byte`` bytes of its stream, then both sides close;
* ``flip``: single bits flip at the given bit offsets of one direction's stream;
* ``stall``: nothing is forwarded in either direction for ``stall_s`` seconds, then traffic resumes.

``drop``, ``reset``, ``truncate`` and ``stall`` strike when the chosen direction's stream reaches ``at_byte``
or ``at_s`` seconds after the connection opened, whichever comes first (a ``truncate`` struck by time
forwards a random prefix of the next chunk). ``direction`` is ``"down"`` (target to client, i.e. server to
device) or ``"up"``. :meth:`FaultProxy.calm` stops all injection, including pending faults of open
connections, so a soak can check that devices converge once the network is healthy again.

``python -m edgert.transport.faults --target HOST:PORT --config JSON`` runs one as a process: it prints
``{"listening": [host, port]}``, then a stats line every ``--stats-every`` seconds, and obeys ``calm``,
``resume``, ``stats`` and ``quit`` lines on stdin (``--calm``: start without injecting).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import struct
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable, Optional

FAULT_KINDS = ("delay", "drop", "reset", "truncate", "flip", "stall")
DIRECTIONS = ("down", "up")
CHUNK = 1 << 16

Log = Callable[[str], None]


@dataclass
class FaultConfig:
    """What the proxy injects. Each connection gets at most one fault kind, drawn with these probabilities
    (their sum is at most 1; the rest of the connections are clean).

    Attributes:
        seed: seeds every connection's plan (with the connection's number).
        delay, drop, reset, truncate, flip, stall: probability that a connection gets this fault.
        delay_s: (low, high) of the per-chunk delay of a ``delay`` connection, seconds.
        stall_s: (low, high) of a stall's length, seconds.
        at_s: (low, high) of when drop/reset/truncate/stall strike, seconds after the connection opened.
        down_bytes: (low, high) of the stream offset at which a fault of the server-to-device direction
            strikes (and of flipped bits' byte offsets).
        up_bytes: the same for the device-to-server direction (its traffic is small: HELLO, AUTH, ACKs).
        up: probability that a fault targets the device-to-server direction.
        flips: (low, high) of the number of bits flipped on a ``flip`` connection.
        lifetime_s: (low, high) of every connection's lifetime: the proxy closes it (FIN) then, if nothing
            else has, so that a long soak keeps drawing faults; (0, 0): connections live until a fault or a peer
            ends them.
    """

    seed: int = 0
    delay: float = 0.0
    drop: float = 0.0
    reset: float = 0.0
    truncate: float = 0.0
    flip: float = 0.0
    stall: float = 0.0
    delay_s: tuple[float, float] = (0.005, 0.1)
    stall_s: tuple[float, float] = (1.0, 10.0)
    at_s: tuple[float, float] = (0.0, 10.0)
    down_bytes: tuple[int, int] = (0, 1 << 20)
    up_bytes: tuple[int, int] = (0, 256)
    up: float = 0.25
    flips: tuple[int, int] = (1, 3)
    lifetime_s: tuple[float, float] = (0.0, 0.0)

    def validate(self) -> None:
        """Raises ValueError naming the first bad field."""
        for kind in FAULT_KINDS + ("up",):
            p = getattr(self, kind)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{kind}: expected a probability in [0, 1], got {p}")
        total = sum(getattr(self, k) for k in FAULT_KINDS)
        if total > 1.0 + 1e-9:
            raise ValueError(f"fault probabilities sum to {total:.3f}, at most 1 (one fault per connection)")
        for name in ("delay_s", "stall_s", "at_s", "down_bytes", "up_bytes", "flips", "lifetime_s"):
            low, high = getattr(self, name)
            if not 0 <= low <= high:
                raise ValueError(f"{name}: expected 0 <= low <= high, got ({low}, {high})")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FaultConfig":
        """Inverse of :func:`dataclasses.asdict` (lists become tuples); unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown fault config keys {unknown} (known: {sorted(known)})")
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        cfg = cls(**values)
        cfg.validate()
        return cfg


@dataclass(frozen=True)
class FaultPlan:
    """The fault of one connection (``kind`` "none": a clean connection)."""

    kind: str = "none"
    direction: str = "down"
    at_byte: int = 0
    at_s: float = 0.0
    delay_s: float = 0.0
    stall_s: float = 0.0
    flip_bits: tuple[int, ...] = ()
    lifetime_s: float = 0.0  # 0: unlimited


def draw_plan(config: FaultConfig, connection: int) -> FaultPlan:
    """The plan of connection number ``connection`` (0, 1, ...): a pure function of the config and the number."""
    rng = random.Random(config.seed * 1_000_003 + connection)
    u = rng.random()
    kind = "none"
    for k in FAULT_KINDS:
        p = getattr(config, k)
        if u < p:
            kind = k
            break
        u -= p
    direction = "up" if rng.random() < config.up else "down"
    low, high = config.up_bytes if direction == "up" else config.down_bytes
    at_byte = rng.randint(low, high)
    flips = tuple(sorted(rng.randint(8 * low, 8 * high + 7) for _ in range(rng.randint(*config.flips))))
    return FaultPlan(kind=kind, direction=direction, at_byte=at_byte, at_s=rng.uniform(*config.at_s),
                     delay_s=rng.uniform(*config.delay_s), stall_s=rng.uniform(*config.stall_s),
                     flip_bits=flips if kind == "flip" else (),
                     lifetime_s=rng.uniform(*config.lifetime_s) if config.lifetime_s[1] > 0 else 0.0)


def flip_bit(data: bytearray, bit: int) -> None:
    """Flips bit ``bit`` of ``data`` (bit 0 is the least significant bit of byte 0)."""
    data[bit >> 3] ^= 1 << (bit & 7)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Closes with an RST: SO_LINGER on, timeout 0, then abort."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()


class _Connection:
    """One proxied connection: its plan, both writers, the stall gate, what has struck."""

    def __init__(self, number: int, plan: FaultPlan, client: asyncio.StreamWriter,
                 server: asyncio.StreamWriter) -> None:
        self.number = number
        self.plan = plan
        self.writers = {"down": client, "up": server}  # the writer each direction writes to
        self.active = False  # armed (FaultProxy._arm); False again once a one-shot fault struck or the proxy calmed
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.cut_next = False  # a truncate struck by time: cut the next chunk of its direction
        self.rng = random.Random(plan.at_byte * 31 + number)
        self.closed = False
        self.delayed = False  # a delay connection counts once, at its first delayed chunk
        self.timer: Optional[asyncio.Task[None]] = None
        self.expiry: Optional[asyncio.Task[None]] = None

    def close(self, reset: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        self.flowing.set()
        for w in self.writers.values():
            if reset:
                _reset(w)
            else:
                w.close()


class FaultProxy:
    """A fault-injecting TCP proxy on one asyncio event loop (see the module docstring).

    Args:
        target: (host, port) every connection is forwarded to.
        config: what to inject; :meth:`calm` and :meth:`resume` switch injection off and on.
        listen: where to listen (port 0 picks a free one; see :attr:`address`).
        log: called with one line per struck fault (on the loop thread).
    """

    def __init__(self, target: tuple[str, int], config: Optional[FaultConfig] = None, *,
                 listen: tuple[str, int] = ("127.0.0.1", 0), log: Optional[Log] = None) -> None:
        self.config = config or FaultConfig()
        self.config.validate()
        self.target = target
        self.listen = listen
        self._log = log or (lambda line: None)
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._plans: list[FaultPlan] = []
        self._enabled = True
        self._connections: set[_Connection] = set()
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._stop: Optional[asyncio.Event] = None
        self._ready = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._address: Optional[tuple[str, int]] = None
        self._error: Optional[BaseException] = None

    # ---- lifecycle -------------------------------------------------------------------------------
    @property
    def address(self) -> tuple[str, int]:
        """Where the proxy listens (after :meth:`start`)."""
        if self._address is None:
            raise RuntimeError("the proxy is not started")
        return self._address

    def start(self) -> "FaultProxy":
        """Starts the event loop thread and returns once the proxy listens.

        Raises:
            OSError: the listen address cannot be bound.
        """
        self._thread = threading.Thread(target=self._run, name="edgert-fault-proxy", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        """Closes the listener and every proxied connection, then ends the loop thread."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:  # the loop ended meanwhile
                pass
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def calm(self) -> None:
        """Stops injecting: new connections are clean, pending faults of open ones are cancelled, stalls end."""
        self._call(self._set_enabled, False)

    def resume(self) -> None:
        """Injects again: connections accepted from now on draw their plans, and so do the clean connections
        that are open now (their timers start now; byte offsets count from the connection's start)."""
        self._call(self._set_enabled, True)

    def stats(self) -> dict[str, Any]:
        """Counters: ``connections``, ``open``, ``injecting``, ``drawn_<kind>`` (plans drawn), ``<kind>`` (faults
        that struck, per connection: ``delay`` once its first chunk waited; ``flip`` counts bits, ``flip_down`` /
        ``flip_up`` by direction), ``expire`` (connections closed at the end of their lifetime), ``bytes_down`` /
        ``bytes_up`` (forwarded), ``target_refused``."""
        with self._lock:
            out: dict[str, Any] = {k: 0 for k in FAULT_KINDS + ("expire",)}
            out.update(self._counts)
            out["open"] = len(self._connections)
            out["injecting"] = self._enabled
        return out

    def plans(self) -> list[FaultPlan]:
        """The plan of every connection accepted so far, by connection number."""
        with self._lock:
            return list(self._plans)

    # ---- loop thread ---------------------------------------------------------------------------------
    def _call(self, fn: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is None:
            fn(*args)
            return
        done = threading.Event()

        def run() -> None:
            try:
                fn(*args)
            finally:
                done.set()
        loop.call_soon_threadsafe(run)
        done.wait(timeout=10)

    def _set_enabled(self, enabled: bool) -> None:
        with self._lock:
            self._enabled = enabled
        if enabled:
            for conn in self._connections:
                if conn.plan.kind == "none" and conn.plan.lifetime_s == 0 and not conn.closed:
                    with self._lock:
                        conn.plan = draw_plan(self.config, conn.number)
                        self._plans[conn.number] = conn.plan
                        if conn.plan.kind != "none":
                            self._counts[f"drawn_{conn.plan.kind}"] += 1
                    self._arm(conn)
        else:
            for conn in self._connections:
                conn.active = False
                conn.cut_next = False
                conn.flowing.set()
                for task in (conn.timer, conn.expiry):
                    if task is not None:
                        task.cancel()

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counts[key] += n

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by start() when it happens before listening
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._handle, self.listen[0], self.listen[1], reuse_address=True)
        self._address = server.sockets[0].getsockname()[:2]
        self._ready.set()
        async with server:
            await self._stop.wait()
            server.close()
            for conn in list(self._connections):
                conn.close()
            await asyncio.sleep(0)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self._lock:
            number = len(self._plans)
            plan = draw_plan(self.config, number) if self._enabled else FaultPlan()
            self._plans.append(plan)
            self._counts["connections"] += 1
            if plan.kind != "none":
                self._counts[f"drawn_{plan.kind}"] += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            self._count("target_refused")
            writer.close()
            return
        for w in (writer, up_writer):
            sock = w.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = _Connection(number, plan, writer, up_writer)
        self._connections.add(conn)
        self._arm(conn)
        pumps = [asyncio.create_task(self._pump(conn, up_reader, "down")),
                 asyncio.create_task(self._pump(conn, reader, "up"))]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            conn.close()
            for task in pumps + [t for t in (conn.timer, conn.expiry) if t is not None]:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            self._connections.discard(conn)

    def _arm(self, conn: _Connection) -> None:
        """Activates the connection's plan: its fault and lifetime timers start now."""
        conn.active = conn.plan.kind != "none"
        if conn.plan.kind in ("drop", "reset", "truncate", "stall"):
            conn.timer = asyncio.create_task(self._timer(conn))
        if conn.plan.lifetime_s > 0:
            conn.expiry = asyncio.create_task(self._expire(conn))

    async def _timer(self, conn: _Connection) -> None:
        await asyncio.sleep(conn.plan.at_s)
        if conn.active:
            if conn.plan.kind == "truncate":
                conn.cut_next = True
            else:
                await self._strike(conn, conn.plan.direction)

    async def _expire(self, conn: _Connection) -> None:
        await asyncio.sleep(conn.plan.lifetime_s)
        if self._enabled and not conn.closed:
            self._count("expire")
            self._log(f"connection {conn.number}: expired after {conn.plan.lifetime_s:.1f} s")
            conn.close()

    async def _strike(self, conn: _Connection, direction: str) -> None:
        """A one-shot fault (drop, reset, stall; truncate is done by the pump) strikes now."""
        kind = conn.plan.kind
        conn.active = False
        self._count(kind)
        self._log(f"connection {conn.number}: {kind} ({direction})")
        if kind == "drop":
            conn.close()
        elif kind == "reset":
            conn.close(reset=True)
        elif kind == "stall":
            conn.flowing.clear()
            try:
                await asyncio.wait_for(self._released(conn), timeout=conn.plan.stall_s)
            except asyncio.TimeoutError:
                pass
            conn.flowing.set()

    async def _released(self, conn: _Connection) -> None:
        """Returns when the proxy calms or the connection closes (a stall ends early then)."""
        while self._enabled and not conn.closed:
            await asyncio.sleep(0.05)

    async def _pump(self, conn: _Connection, reader: asyncio.StreamReader, direction: str) -> None:
        writer = conn.writers[direction]
        offset = 0
        while True:
            try:
                data = await reader.read(CHUNK)
            except OSError:
                return
            if not data:
                return
            plan = conn.plan  # resume() may give an open connection a plan
            if conn.active and plan.kind == "delay":
                if not conn.delayed:
                    conn.delayed = True
                    self._count("delay")
                await asyncio.sleep(plan.delay_s)
            end = offset + len(data)
            if conn.active and plan.direction == direction:
                if plan.kind == "flip":
                    data = self._flip(conn, data, offset)
                elif plan.kind == "truncate" and (conn.cut_next or end > plan.at_byte):
                    cut = plan.at_byte - offset if not conn.cut_next else conn.rng.randrange(len(data))
                    cut = max(0, min(cut, len(data)))
                    conn.active = False
                    self._count("truncate")
                    self._log(f"connection {conn.number}: truncate ({direction}) at byte {offset + cut}")
                    await self._write(writer, data[:cut], direction)
                    conn.close()
                    return
                elif plan.kind in ("drop", "reset", "stall") and end > plan.at_byte:
                    if plan.kind == "stall":
                        cut = plan.at_byte - offset
                        await self._write(writer, data[:cut], direction)
                        data, offset = data[cut:], plan.at_byte
                    await self._strike(conn, direction)
                    if conn.closed:
                        return
            await conn.flowing.wait()
            if conn.closed:
                return
            if not await self._write(writer, data, direction):
                return
            offset += len(data)

    def _flip(self, conn: _Connection, data: bytes, offset: int) -> bytes:
        """Flips the plan's bits that fall in this chunk (stream bytes offset .. offset + len)."""
        hits = [b for b in conn.plan.flip_bits if offset <= b >> 3 < offset + len(data)]
        if not hits:
            return data
        out = bytearray(data)
        for bit in hits:
            flip_bit(out, bit - 8 * offset)
        self._count("flip", len(hits))
        self._count(f"flip_{conn.plan.direction}", len(hits))
        self._log(f"connection {conn.number}: flipped bits {hits} ({conn.plan.direction})")
        if max(conn.plan.flip_bits) >> 3 < offset + len(data):
            conn.active = False
        return bytes(out)

    async def _write(self, writer: asyncio.StreamWriter, data: bytes, direction: str) -> bool:
        if not data:
            return True
        try:
            writer.write(data)
            await writer.drain()
        except (OSError, RuntimeError):
            return False
        self._count(f"bytes_{direction}", len(data))
        return True


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def main(argv: Optional[list[str]] = None) -> int:
    """``python -m edgert.transport.faults``: a proxy process for soaks (see the module docstring)."""
    ap = argparse.ArgumentParser(prog="python -m edgert.transport.faults", description=__doc__.split("\n")[0])
    ap.add_argument("--target", type=_address, required=True, help="HOST:PORT to forward to")
    ap.add_argument("--listen", type=_address, default=("127.0.0.1", 0), help="HOST:PORT (default: a free port)")
    ap.add_argument("--config", default="{}", help="FaultConfig fields as JSON")
    ap.add_argument("--stats-every", type=float, default=1.0, help="seconds between stats lines (0: none)")
    ap.add_argument("--calm", action="store_true", help="start without injecting (until a 'resume' line)")
    args = ap.parse_args(argv)
    proxy = FaultProxy(args.target, FaultConfig.from_dict(json.loads(args.config)), listen=args.listen)
    proxy.start()
    if args.calm:
        proxy.calm()  # before the address is printed: no client can have connected yet
    out_lock = threading.Lock()

    def emit(obj: dict[str, Any]) -> None:
        with out_lock:
            sys.stdout.write(json.dumps(obj) + "\n")
            sys.stdout.flush()

    emit({"listening": list(proxy.address), "config": asdict(proxy.config)})
    quit_event = threading.Event()

    def commands() -> None:
        for line in sys.stdin:
            cmd = line.strip()
            if cmd == "calm":
                proxy.calm()
            elif cmd == "resume":
                proxy.resume()
            elif cmd == "quit":
                break
            emit({"t": time.time(), "stats": proxy.stats(), "command": cmd})
        quit_event.set()

    threading.Thread(target=commands, daemon=True).start()
    while not quit_event.wait(args.stats_every if args.stats_every > 0 else None):
        emit({"t": time.time(), "stats": proxy.stats()})
    proxy.stop()
    emit({"t": time.time(), "stats": proxy.stats(), "stopped": True})
    return 0


__all__ = ["FAULT_KINDS", "FaultConfig", "FaultPlan", "FaultProxy", "draw_plan", "flip_bit", "main"]

if __name__ == "__main__":
    sys.exit(main())
