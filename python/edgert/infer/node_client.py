"""The inference process beside the firmware edge node: weights from the node's Unix socket, frames from a
camera (here a bundled clip played at its frame rate), one :class:`~edgert.infer.DeviceRuntime` in between.

The firmware node (``firmware/edge_node``, the ``edgert_edge_node`` binary) keeps the model slot in sync with
the server and serves the active weights on a Unix socket (``--serve PATH``); the protocol is
"Local serving" in ``docs/spec/wire-protocol.md``. This module is its client side:

    source = NodeWeights("/run/edgert/weights.sock").start()    # polls the node's version on a thread
    source.wait_ready()                                          # a manifest and weights have arrived
    runtime = DeviceRuntime(OnnxRuntimeBackend(ExportedModel.load("student.onnx")), lambda: source.slot,
                            preprocess=image_input, postprocess=argmax_labels)
    runtime.attach(source)                                       # source.on_version -> runtime.on_update
    runtime.start()
    while robot.running:
        labels = runtime.infer(camera.read())

and a runnable program:

    python -m edgert.infer.node_client --socket PATH --onnx student.onnx [--clip iscc-demo] [--seconds 10]
        [--fps F] [--json OUT]

which prints one line per weight version it switches to and, at the end, the frame loop's statistics
(latency and delay percentiles, late frames, swaps, the process's CPU share), also as JSON with ``--json``.

Times in the JSON (``t_*``) are ``time.monotonic()`` (CLOCK_MONOTONIC on Linux), comparable across the
processes of one machine, so a server in another process can time a swap from its publish to the first
frame that used it.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np

from edgert.updates.manifest import Manifest

_U64 = struct.Struct("<Q")


class NodeSocketError(OSError):
    """The node's socket could not be reached or answered something malformed."""


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            raise NodeSocketError(f"the node closed the connection after {got} of {n} bytes")
        got += k
    return bytes(buf)


class NodeSocket:
    """One connection to ``edgert_edge_node --serve PATH`` speaking its three requests (``V``, ``M``, ``W``).

    Thread-safe: requests are serialised by a lock over one connection, which is opened on first use and
    reopened once after a failure (the node closes a connection that sends nothing for 5 s, and serves one
    connection at a time). Each request raises :class:`NodeSocketError` if it fails twice.

    Args:
        path: the node's socket path (its ``--serve`` argument).
        timeout_s: per-request socket timeout.
    """

    def __init__(self, path: Union[str, Path], timeout_s: float = 5.0) -> None:
        self.path = str(path)
        self.timeout_s = timeout_s
        self._sock: Optional[socket.socket] = None
        self._lock = threading.Lock()

    def _connect(self) -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout_s)
        try:
            s.connect(self.path)
        except OSError:
            s.close()
            raise
        return s

    def _request(self, op: bytes, read: Callable[[socket.socket], Any]) -> Any:
        with self._lock:
            error: Optional[BaseException] = None
            for _ in range(2):
                try:
                    if self._sock is None:
                        self._sock = self._connect()
                    self._sock.sendall(op)
                    return read(self._sock)
                except (OSError, ValueError) as exc:
                    error = exc
                    if self._sock is not None:
                        self._sock.close()
                    self._sock = None
            raise NodeSocketError(f"edge node socket {self.path}: request {op.decode()} failed: {error}")

    def version(self) -> int:
        """``V``: the slot's active version (0 before the first manifest or packet)."""
        return int(self._request(b"V", lambda s: _U64.unpack(_recv_exact(s, 8))[0]))

    def manifest_bytes(self) -> bytes:
        """``M``: the serialized manifest the slot was created with (empty before the first MANIFEST)."""
        def read(s: socket.socket) -> bytes:
            (size,) = _U64.unpack(_recv_exact(s, 8))
            return _recv_exact(s, size) if size else b""
        return bytes(self._request(b"M", read))

    def weights(self) -> tuple[bytes, int]:
        """``W``: (the active weight buffer, its version), one consistent version read under the slot's pin;
        (b"", 0) when the slot has none yet."""
        def read(s: socket.socket) -> tuple[bytes, int]:
            version, size = struct.unpack("<QQ", _recv_exact(s, 16))
            return (_recv_exact(s, size) if size else b""), int(version)
        result: tuple[bytes, int] = self._request(b"W", read)
        return result

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
            self._sock = None


class NodeSlot:
    """A read-only stand-in for a native ``edgert._edgert.Slot`` whose weights live in the edge node.

    It offers what :class:`~edgert.infer.DeviceRuntime` and :class:`~edgert.infer.WeightsSnapshot` read
    (``version``, ``model_id``, ``tensor_count``, ``tensor_info``, ``weights()``). ``version`` is the value
    the :class:`NodeWeights` watcher last saw (no socket I/O on the inference thread); ``weights()`` asks the
    node, and its version is the one the bytes belong to. One object per manifest: a new manifest from the
    server makes a new ``NodeSlot``, which the runtime checks against its model again.
    """

    def __init__(self, sock: NodeSocket, manifest_bytes: bytes, version: int = 0) -> None:
        self._sock = sock
        self.manifest_bytes = manifest_bytes
        self.manifest = Manifest.from_bytes(manifest_bytes)
        self.version = version

    @property
    def model_id(self) -> bytes:
        return self.manifest.model_id

    @property
    def tensor_count(self) -> int:
        return len(self.manifest.tensors)

    def tensor_info(self, index: int) -> dict[str, Any]:
        t = self.manifest.tensors[index]
        return {"name": t.name, "dtype": t.dtype, "shape": list(t.shape)}

    def weights(self) -> tuple[bytes, int]:
        """(weight buffer, version) from the node.

        Raises:
            NodeSocketError: the node is unreachable, has no weights yet, or returned a buffer of the wrong
                size (its manifest changed since this object was made).
        """
        buffer, version = self._sock.weights()
        if len(buffer) != self.manifest.weights_size:
            raise NodeSocketError(f"edge node returned {len(buffer)} weight bytes at version {version}, the "
                                  f"manifest needs {self.manifest.weights_size}")
        return buffer, version


class NodeWeights:
    """Watches an edge node's socket and exposes its model as :attr:`slot` (a :class:`NodeSlot`).

    A thread asks for the node's version every ``poll_s`` seconds (this also keeps the connection inside the
    node's 5 s idle limit); when it changes, the manifest is fetched too and a new :attr:`slot` made if the
    manifest differs, then ``on_version(version)`` is called (the attribute an
    :class:`edgert.transport.EdgeClient` has, so ``DeviceRuntime.attach`` works on this object too).

    Args:
        path: the node's socket path.
        poll_s: how often to ask for the version (the swap latency's floor, on top of the session build).
        on_version: called on the watcher thread with each new version.
    """

    def __init__(self, path: Union[str, Path], *, poll_s: float = 0.02,
                 on_version: Optional[Callable[[int], None]] = None) -> None:
        self.socket = NodeSocket(path)
        self.poll_s = poll_s
        self.on_version = on_version
        self.slot: Optional[NodeSlot] = None
        #: the last error the watcher met (it keeps polling); None while the node answers
        self.last_error: Optional[BaseException] = None
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def start(self) -> "NodeWeights":
        self._thread = threading.Thread(target=self._watch, name="edgert-node-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.socket.close()

    def __enter__(self) -> "NodeWeights":
        return self if self._thread is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_ready(self, timeout: float = 30.0) -> NodeSlot:
        """Blocks until the node has a manifest and a version > 0, returns :attr:`slot`.

        Raises:
            TimeoutError: not within ``timeout`` seconds (with the watcher's last error, if any).
        """
        if not self._ready.wait(timeout) or self.slot is None:
            raise TimeoutError(f"edge node {self.socket.path}: no model within {timeout:g} s "
                               f"(last error: {self.last_error})")
        return self.slot

    def _watch(self) -> None:
        seen = -1
        while not self._stopping.is_set():
            try:
                version = self.socket.version()
                slot = self.slot
                if version != seen or slot is None:
                    manifest = self.socket.manifest_bytes() if version > 0 else b""
                    if manifest and (slot is None or manifest != slot.manifest_bytes):
                        slot = NodeSlot(self.socket, manifest, version)
                        self.slot = slot
                    if slot is not None:
                        slot.version = version
                        seen = version
                        if version > 0:
                            self._ready.set()
                            if self.on_version is not None:
                                self.on_version(version)
                self.last_error = None
            except (OSError, ValueError) as exc:  # node restarting, socket not there yet: keep polling
                self.last_error = exc
            self._stopping.wait(self.poll_s)


# ---- the runnable inference process ------------------------------------------------------------------------

def clip_frames(clip: str, size: tuple[int, int], seconds: Optional[float]) -> tuple[np.ndarray, float]:
    """The clip's frames resized to ``size`` = (width, height) as uint8 [N, H, W, 3] RGB, and its frame rate.
    ``clip``: a bundled clip name (``edgert data list``) or a video file. Decoded before the loop starts, as
    a camera driver hands over decoded frames."""
    import av

    from edgert.data import clip_path

    frames = []
    with av.open(str(clip_path(clip))) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or 30)
        limit = None if seconds is None else max(1, int(round(seconds * fps)))
        for frame in container.decode(stream):
            frames.append(frame.reformat(width=size[0], height=size[1], format="rgb24").to_ndarray())
            if limit is not None and len(frames) >= limit:
                break
    if not frames:
        raise ValueError(f"clip {clip!r}: no frames")
    return np.stack(frames), fps


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def run_loop(runtime: Any, frames: np.ndarray, fps: float, *, seconds: Optional[float] = None,
             log: Callable[[str], None] = lambda line: None) -> dict[str, Any]:
    """Plays ``frames`` at ``fps`` (looping the clip until ``seconds`` pass, or once) through
    ``runtime.infer_versioned``; returns the statistics (times in seconds, ``t_*`` in ``time.monotonic()``).

    A frame *arrives* at its slot in the schedule; its *delay* is arrival to result; it is *late* when the
    delay exceeds one frame period. A frame that arrives while the previous one still runs waits (no
    frames are dropped), as a camera queue with room for one would make it."""
    period = 1.0 / fps
    count = len(frames) if seconds is None else max(1, int(round(seconds * fps)))
    latency, delay, versions = [], [], []
    first_frame: dict[int, float] = {}
    classes = np.zeros(0, dtype=np.int64)
    cpu0, wall0 = _cpu_s(), time.monotonic()
    start = wall0 + period
    for i in range(count):
        arrival = start + i * period
        wait = arrival - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        t0 = time.monotonic()
        out, version = runtime.infer_versioned(frames[i % len(frames)])
        done = time.monotonic()
        latency.append(done - t0)
        delay.append(done - arrival)
        versions.append(version)
        if version not in first_frame:
            first_frame[version] = done
            log(f"frame {i}: running version {version}")
        if isinstance(out, np.ndarray) and out.dtype == np.int64 and out.size:
            hist = np.bincount(out.ravel(), minlength=len(classes))
            hist[:len(classes)] += classes
            classes = hist
    wall = time.monotonic() - wall0
    cpu = _cpu_s() - cpu0
    return {
        "frames": count, "fps": fps, "period_s": period, "wall_s": wall,
        "infer_p50_s": _pct(latency, 50), "infer_p99_s": _pct(latency, 99), "infer_max_s": max(latency),
        "delay_p50_s": _pct(delay, 50), "delay_p99_s": _pct(delay, 99), "delay_max_s": max(delay),
        "late_frames": int(sum(d > period for d in delay)),
        "versions": sorted(first_frame), "t_first_frame": {str(v): t for v, t in first_frame.items()},
        "cpu_s": cpu, "cpu_share": cpu / wall if wall > 0 else float("nan"), "cpu_count": os.cpu_count(),
        "label_histogram": classes.tolist(),
    }


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgert.infer.node_client", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--socket", required=True, help="the edge node's --serve path")
    parser.add_argument("--onnx", required=True, help="the model exported by edgert.infer.export_onnx (.save)")
    parser.add_argument("--clip", default="iscc-demo", help="bundled clip name or video file (the camera)")
    parser.add_argument("--seconds", type=float, default=None, help="run this long (default: the clip once)")
    parser.add_argument("--fps", type=float, default=None, help="frame rate (default: the clip's)")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    parser.add_argument("--zero-copy", action="store_true", help="OnnxRuntimeBackend(zero_copy=True)")
    parser.add_argument("--wait", type=float, default=30.0, help="seconds to wait for the node's first model")
    parser.add_argument("--json", default=None, help="write the statistics here")
    args = parser.parse_args(argv)

    from edgert.infer.backends import OnnxRuntimeBackend
    from edgert.infer.export import ExportedModel
    from edgert.infer.runtime import DeviceRuntime, argmax_labels, image_input

    def log(line: str) -> None:
        print(f"[node_client {time.monotonic():.3f}] {line}", file=sys.stderr, flush=True)

    exported = ExportedModel.load(args.onnx)
    _, _, height, width = exported.input_shape
    frames, clip_fps = clip_frames(args.clip, (width, height), args.seconds)
    fps = args.fps or clip_fps
    source = NodeWeights(args.socket).start()
    try:
        source.wait_ready(args.wait)
        runtime = DeviceRuntime(OnnxRuntimeBackend(exported, threads=args.threads, zero_copy=args.zero_copy),
                                lambda: source.slot, preprocess=image_input, postprocess=argmax_labels, log=log)
        runtime.attach(source)
        with runtime.start():
            log(f"{len(frames)} frames {width}x{height} at {fps:g} fps, model version {runtime.version}")
            stats = run_loop(runtime, frames, fps, seconds=args.seconds, log=log)
            swaps = [{"version": s.version, "build_s": s.build_s} for s in runtime.swaps[1:]]
            refused = {str(v): str(r) for v, r in runtime.refused.items()}
    finally:
        source.stop()
    stats.update({"clip": args.clip, "size": [width, height], "backend": runtime.backend.name,
                  "threads": args.threads, "swaps": swaps, "refused": refused})
    log(f"{stats['frames']} frames, infer p50/p99/max {stats['infer_p50_s'] * 1e3:.1f}/"
        f"{stats['infer_p99_s'] * 1e3:.1f}/{stats['infer_max_s'] * 1e3:.1f} ms, late {stats['late_frames']}, "
        f"versions {stats['versions']}, CPU {100 * stats['cpu_share']:.0f}% of one core")
    if args.json:
        Path(args.json).write_text(json.dumps(stats, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
