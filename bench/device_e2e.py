"""End to end on one machine: server -> firmware edge node -> inference process -> labels, on a real clip.

    python -m bench.device_e2e [--clip iscc-demo] [--seconds 30] [--t-update 2] [--width 0.5] [--classes 8]

Three processes, as on a device:

* this one: the :class:`edgert.transport.ModelServer` holding the AMS segmentation student (MobileNetV2
  encoder from the bundled ImageNet weights when installed) and publishing a sparse update every
  ``--t-update`` seconds (5 % of every tensor's coordinates, N(0, 1e-2) steps, the packets
  ``ModelServer.publish`` encodes: real packets, synthetic steps: no teacher trains the student here);
* ``edgert_edge_node`` (the C++ firmware binary, ``build/*/firmware`` or ``$EDGERT_EDGE_NODE``): receives,
  verifies and applies each packet into its slot, serves the weights on a Unix socket;
* ``python -m edgert.infer.node_client``: plays the clip at its frame rate through ``DeviceRuntime`` on ONNX
  Runtime (one thread), switching to each new weight version between frames.

Reported (markdown on stdout; JSON and markdown in ``bench/results/device_e2e-cpu.*``): frame latency
(``infer``) and delay (arrival -> labels) p50/p99/max, frames late (delay > one frame period), swap latency
(the server's publish -> the first frame run on that version, across processes by CLOCK_MONOTONIC; it
includes TCP, the node's verify + apply, the client's poll interval, the socket copy and the session
build), and the CPU share of the inference process (``getrusage``) and of the node (``/proc/PID/stat``), in
units of one core. A benchmark, not a test: nothing is asserted.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from bench.harness import git_commit, stop_process, write_report

ROOT = Path(__file__).resolve().parent.parent
DEVICE_ID = "bench-device"
KEY = bytes(range(40, 72))


def node_binary() -> Path:
    explicit = os.environ.get("EDGERT_EDGE_NODE")
    if explicit:
        return Path(explicit)
    for path in sorted((ROOT / "build").glob("*/firmware/edgert_edge_node")):
        if os.access(path, os.X_OK) and "aarch64" not in str(path):
            return path
    raise SystemExit("no edgert_edge_node binary under build/*/firmware: build it first "
                     "(cmake -S . -B build/dev -DEDGERT_CUDA=OFF && cmake --build build/dev --target edgert_edge_node) "
                     "or set EDGERT_EDGE_NODE")


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a process, seconds (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def student(classes: int, width: float) -> tuple[torch.nn.Module, bool]:
    from edgert.vision import segmentation_student

    torch.manual_seed(0)
    try:
        return segmentation_student(classes, width_mult=width, pretrained=True).eval(), True
    except (FileNotFoundError, ImportError, OSError):
        return segmentation_student(classes, width_mult=width, pretrained=False).eval(), False


def sparse_update(manifest: Any, rng: np.random.Generator, density: float = 0.05) -> dict:
    out = {}
    for t in manifest.tensors:
        k = max(1, int(t.numel * density))
        idx = np.sort(rng.choice(t.numel, size=k, replace=False)).astype(np.int64)
        out[t.name] = (idx, rng.normal(0, 1e-2, k).astype(np.float32))
    return out


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f}"


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", default="iscc-demo")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the frame loop")
    parser.add_argument("--t-update", type=float, default=2.0, help="seconds between published updates")
    parser.add_argument("--classes", type=int, default=8)
    parser.add_argument("--width", type=float, default=0.5, help="the student's width multiplier")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads in the inference process")
    parser.add_argument("--no-json", action="store_true")
    args = parser.parse_args(argv)

    import av

    from edgert.data import clip_path
    from edgert.infer import export_onnx
    from edgert.transport import ModelServer
    from edgert.updates import module_manifest, module_weights

    with av.open(str(clip_path(args.clip))) as c:
        stream = c.streams.video[0]
        width, height, fps = stream.width, stream.height, float(stream.average_rate or 30)
    model, pretrained = student(args.classes, args.width)
    manifest = module_manifest(model)
    load_before = list(os.getloadavg())
    t_start = time.monotonic()
    rng = np.random.default_rng(0)
    published: dict[int, float] = {}
    with tempfile.TemporaryDirectory(prefix="edgert-e2e-") as tmp:
        work = Path(tmp)
        onnx_path = export_onnx(model, torch.rand(1, 3, height, width)).save(work / "student.onnx")
        (work / "key").write_bytes(KEY)
        sock = str(work / "weights.sock")
        server = ModelServer(manifest, {DEVICE_ID: KEY}, module_weights(model)).start()
        node_log = open(work / "node.log", "wb")
        node = subprocess.Popen([str(node_binary()), "--server", f"127.0.0.1:{server.address[1]}", "--device-id",
                                 DEVICE_ID, "--key-file", str(work / "key"), "--serve", sock],
                                stdout=node_log, stderr=subprocess.STDOUT)
        stop = threading.Event()
        try:
            deadline = time.monotonic() + 20
            while not (server.devices.get(DEVICE_ID) and server.devices[DEVICE_ID].acked_version == server.version):
                if time.monotonic() > deadline:
                    raise SystemExit("the edge node did not sync: " + (work / "node.log").read_text())
                time.sleep(0.05)
            client = subprocess.Popen([sys.executable, "-m", "edgert.infer.node_client", "--socket", sock, "--onnx",
                                       str(onnx_path), "--clip", args.clip, "--seconds", str(args.seconds),
                                       "--fps", str(fps), "--threads", str(args.threads), "--json",
                                       str(work / "stats.json")], stderr=subprocess.PIPE, text=True)
            assert client.stderr is not None
            started = threading.Event()
            client_log: list[str] = []

            def read_log() -> None:
                assert client.stderr is not None
                for line in client.stderr:
                    client_log.append(line)
                    if "frames" in line and "fps" in line:
                        started.set()

            reader = threading.Thread(target=read_log, daemon=True)
            reader.start()
            if not started.wait(120):
                raise SystemExit("the inference process did not start:\n" + "".join(client_log))
            node_cpu0, t_loop0 = proc_cpu_s(node.pid), time.monotonic()

            def publish() -> None:
                while not stop.wait(args.t_update):
                    server.publish(sparse_update(manifest, rng))
                    published[server.version] = time.monotonic()

            publisher = threading.Thread(target=publish, daemon=True)
            publisher.start()
            rc = client.wait(timeout=args.seconds + 120)
            node_cpu, t_loop = proc_cpu_s(node.pid) - node_cpu0, time.monotonic() - t_loop0
            stop.set()
            publisher.join()
            reader.join(timeout=5)
            if rc != 0:
                raise SystemExit(f"node_client exited with {rc}:\n" + "".join(client_log))
            stats = json.loads((work / "stats.json").read_text())
            packet_bytes = [len(p.data) for p in server.history]
        finally:
            stop.set()
            stop_process(node)
            node_log.close()
            server.stop()

    first_frame = {int(v): t for v, t in stats["t_first_frame"].items()}
    swap_s = [first_frame[v] - published[v] for v in sorted(published) if v in first_frame]
    skipped = [v for v in sorted(published) if v not in first_frame]  # superseded before a frame ran on it
    result = {
        "commit": git_commit(), "date": time.strftime("%Y-%m-%dT%H:%M:%S"), "host": platform.node(),
        "machine": platform.machine(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
        "onnxruntime": _ort_version(),
        "config": {"clip": args.clip, "size": [width, height], "fps": fps, "seconds": args.seconds,
                   "t_update_s": args.t_update, "classes": args.classes, "width_mult": args.width,
                   "pretrained_encoder": pretrained, "parameters": sum(t.numel for t in manifest.tensors),
                   "weights_bytes": manifest.weights_size,
                   "update": "5% of each tensor, N(0, 1e-2), ModelServer.publish",
                   "threads": args.threads, "load_average_before": load_before,
                   "load_average_after": list(os.getloadavg()), "wall_s": time.monotonic() - t_start},
        "client": stats,
        "published": len(published), "swaps_seen": len(swap_s), "versions_skipped": skipped,
        "packet_bytes_median": float(np.median(packet_bytes)) if packet_bytes else 0.0,
        "swap_p50_s": float(np.percentile(swap_s, 50)) if swap_s else None,
        "swap_p99_s": float(np.percentile(swap_s, 99)) if swap_s else None,
        "swap_max_s": max(swap_s) if swap_s else None,
        "swap_s": swap_s,
        "node_cpu_share": node_cpu / t_loop,
    }
    md = markdown(result)
    print(md)
    if not args.no_json:
        path = write_report("device_e2e-cpu", result, md, "bench/device_e2e.py")
        print(f"\nwrote {path}")
    return 0


def markdown(r: dict) -> str:
    c, s = r["config"], r["client"]
    swap = ("n/a" if r["swap_p50_s"] is None else
            f"{ms(r['swap_p50_s'])} / {ms(r['swap_p99_s'])} / {ms(r['swap_max_s'])}")
    return "\n".join([
        f"{c['clip']} {c['size'][0]}x{c['size'][1]} at {c['fps']:g} fps for {c['seconds']:g} s; AMS student "
        f"({c['parameters']} parameters, {c['weights_bytes'] / 1e6:.1f} MB, "
        f"{'ImageNet' if c['pretrained_encoder'] else 'random'} encoder) on {s['backend']} "
        f"({c['threads']} thread); an update every {c['t_update_s']:g} s "
        f"(median packet {r['packet_bytes_median'] / 1e3:.0f} kB); load average before "
        f"{c['load_average_before'][0]:.1f} on {r['cpu_count']} cores",
        "",
        "| frames | infer p50 / p99 / max ms | delay p50 / p99 / max ms | late (> "
        f"{ms(s['period_s'])} ms) | updates published / run | swap p50 / p99 / max ms | "
        "CPU inference process | CPU node |",
        "|---|---|---|---|---|---|---|---|",
        f"| {s['frames']} | {ms(s['infer_p50_s'])} / {ms(s['infer_p99_s'])} / {ms(s['infer_max_s'])} | "
        f"{ms(s['delay_p50_s'])} / {ms(s['delay_p99_s'])} / {ms(s['delay_max_s'])} | {s['late_frames']} | "
        f"{r['published']} / {r['swaps_seen']} | {swap} | {100 * s['cpu_share']:.0f}% | "
        f"{100 * r['node_cpu_share']:.1f}% |",
    ])


def _ort_version() -> str:
    import onnxruntime

    return str(onnxruntime.__version__)


if __name__ == "__main__":
    raise SystemExit(main())
