"""On-device inference fed by the model slot (edgert.infer): ONNX Runtime next to PyTorch eager and
torch.compile on CPU, the cost of a weight swap, and frame delays while updates arrive.

    python -m bench.inference_runtime [--quick] [--seconds 6] [--t-update 1.0] [--fps 30] [--no-compile]
    python -m bench.inference_runtime --quick --executorch-only --swaps 2   # ExecuTorch rows only (+ eager)

Three measurements per model (the AMS segmentation student and the SRVC SR model, random weights: speed
does not depend on the values), each a markdown table on stdout and rows in
``bench/results/inference_runtime-cpu.json`` (commit, machine, threads, load average):

1. *latency*: one frame after warm-up, p50/p99 and throughput (1 / mean, one stream), at 1 and 2 threads,
   for ONNX Runtime (optimised, weights copied into the session), ONNX Runtime zero-copy (weights read in
   place from the slot buffer; graph optimisations off), PyTorch eager and torch.compile (SRVC compiled with
   the pure-PyTorch adaptive conv: the native kernel is a graph break). With ``--executorch`` (or
   ``--executorch-only``: those rows and the eager peer, into ``inference_runtime_executorch-cpu.json``) also
   ExecuTorch + XNNPACK at one thread (``export_executorch``; needs ``pip install edgert[executorch]``).
2. *swap*: a real 5 %-dense fp16 update packet applied to a libedgert slot -> the runtime's builder
   thread reads the new version and builds its session -> ``infer`` uses it (``Swap.live_s``). One
   inference thread.
3. *loop*: frames at ``--fps`` for ``--seconds``, paced like a camera, on one inference thread while packets
   arrive every ``--t-update`` seconds on another thread (encoded beforehand: only the device's work is
   timed), and the same loop without updates. A frame is *late* when its result comes more than one
   frame period after its arrival. The goal: no frame late because of a swap.
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import threading
import time
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import nn

from bench.harness import Row, Timing, device_name, write_json
from edgert._edgert import Slot
from edgert.infer import (
    DeviceRuntime,
    ExecuTorchBackend,
    OnnxRuntimeBackend,
    TorchEagerBackend,
    WeightsSnapshot,
    export_executorch,
    export_onnx,
)
from edgert.srvc.model import SRConfig, SRVCModel
from edgert.updates import EncodedPacket, Manifest, PacketEncoder, module_manifest, module_weights
from edgert.vision import segmentation_student


def models(quick: bool) -> list[tuple[str, nn.Module, tuple[int, ...]]]:
    """(name, module, input shape): the AMS student (width 0.5, 8 classes) and the SRVC model (the paper's
    F = 32, 2.2M parameters), at frame sizes a 2-core CPU runs near 30 fps on one thread."""
    torch.manual_seed(0)
    seg = segmentation_student(8, width_mult=0.5, pretrained=False).eval()
    sr = SRVCModel(SRConfig()).eval()
    if quick:
        return [("ams-seg", seg, (1, 3, 96, 160)), ("srvc-sr", sr, (1, 3, 20, 32))]
    return [("ams-seg", seg, (1, 3, 144, 256)), ("srvc-sr", sr, (1, 3, 36, 64))]


def samples_of(fn: Callable[[], Any], repeats: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def timing(samples: list[float]) -> Timing:
    q = np.percentile(samples, [25, 50, 75])
    return Timing(median=float(q[1]), q1=float(q[0]), q3=float(q[2]), repeats=len(samples))


def p99(samples: list[float]) -> float:
    return float(np.percentile(samples, 99))


def shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def compile_target(module: nn.Module) -> nn.Module:
    """The module torch.compile gets: SRVC with the pure-PyTorch adaptive conv (the native one is opaque)."""
    if isinstance(module, SRVCModel):
        module = copy.deepcopy(module)
        module.backend = "torch"
    return module


def latency_rows(name: str, module: nn.Module, shape: tuple[int, ...], exported: Any, manifest: Manifest,
                 repeats: int, compile_peer: bool) -> list[Row]:
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    snapshot = WeightsSnapshot.from_weights(manifest, module_weights(module), version=1)
    rows = []
    torch_threads = torch.get_num_threads()
    eager = TorchEagerBackend(module).prepare(snapshot)
    compiled: Optional[Callable[[], Any]] = None
    compile_s = 0.0
    if compile_peer:  # compiled once: the thread count is a runtime setting, not a guard
        torch.set_num_threads(1)
        module_c = torch.compile(compile_target(module))
        xt = torch.from_numpy(x)

        def run_compiled() -> Any:
            with torch.inference_mode():
                return module_c(xt)

        t0 = time.perf_counter()
        run_compiled()
        compile_s = time.perf_counter() - t0
        compiled = run_compiled
    for threads in (1, 2):
        torch.set_num_threads(threads)
        impls: list[tuple[str, Callable[[], Any]]] = [("torch-eager", lambda: eager.run(x))]
        if compiled is not None:
            impls.append(("torch-compile", compiled))
        for label, backend in (("onnxruntime", OnnxRuntimeBackend(exported, threads=threads)),
                               ("onnxruntime-zero-copy", OnnxRuntimeBackend(exported, threads=threads,
                                                                            zero_copy=True))):
            session = backend.prepare(snapshot)
            impls.append((label, lambda s=session: s.run(x)))
        for label, fn in impls:
            s = samples_of(fn, repeats, warmup=3)
            extra: dict[str, Any] = {"threads": threads, "p99_s": p99(s), "fps": 1.0 / statistics.fmean(s),
                                     "peer": label.startswith("torch"), "kind": "latency"}
            if label == "torch-compile":
                extra["compile_s"] = compile_s
            rows.append(Row(f"{name}_infer", label, device_name(torch.device("cpu")), "float32", shape_text(shape),
                            timing(s), extra=extra))
    torch.set_num_threads(torch_threads)
    return rows


def executorch_rows(name: str, module: nn.Module, shape: tuple[int, ...], manifest: Manifest, repeats: int,
                    swaps: int, only: bool) -> list[Row]:
    """ExecuTorch + XNNPACK at one thread: latency (with the eager peer when ``only``) and swaps (each one a
    new XNNPACK lowering on the builder thread)."""
    t0 = time.perf_counter()
    exported = export_executorch(module, torch.rand(shape))
    print(f"{name}: ExecuTorch export + XNNPACK lowering {time.perf_counter() - t0:.1f} s", flush=True)
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    snapshot = WeightsSnapshot.from_weights(manifest, module_weights(module), version=1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    backend = ExecuTorchBackend(exported, threads=1)
    impls: list[tuple[str, Callable[[], Any]]] = [("executorch-xnnpack", lambda s=backend.prepare(snapshot): s.run(x))]
    if only:
        eager = TorchEagerBackend(module).prepare(snapshot)
        impls.insert(0, ("torch-eager", lambda: eager.run(x)))
    rows = []
    for label, fn in impls:
        s = samples_of(fn, repeats, warmup=3)
        rows.append(Row(f"{name}_infer", label, device_name(torch.device("cpu")), "float32", shape_text(shape),
                        timing(s), extra={"threads": 1, "p99_s": p99(s), "fps": 1.0 / statistics.fmean(s),
                                          "peer": label.startswith("torch"), "kind": "latency"}))
    rows += swap_rows(name, module, shape, exported, manifest, swaps, [("executorch-xnnpack", backend)])
    torch.set_num_threads(threads)
    return rows


def packet_chain(module: nn.Module, manifest: Manifest, count: int, density: float = 0.05
                 ) -> tuple[EncodedPacket, list[EncodedPacket]]:
    """A snapshot and ``count`` sparse fp16 updates (``density`` of every tensor's coordinates, N(0, 1e-2))."""
    rng = np.random.default_rng(1)
    encoder = PacketEncoder(manifest, value_coding="fp16")
    snapshot = encoder.snapshot(module_weights(module))
    updates = []
    for _ in range(count):
        upd = {}
        for t in manifest.tensors:
            k = max(1, int(t.numel * density))
            idx = np.sort(rng.choice(t.numel, size=k, replace=False)).astype(np.int64)
            upd[t.name] = (idx, rng.normal(0, 1e-2, k).astype(np.float32))
        updates.append(encoder.update(upd))
    return snapshot, updates


def backends_for_device(module: nn.Module, exported: Any) -> list[tuple[str, Any]]:
    return [("onnxruntime", OnnxRuntimeBackend(exported, threads=1)),
            ("onnxruntime-zero-copy", OnnxRuntimeBackend(exported, threads=1, zero_copy=True)),
            ("torch-eager", TorchEagerBackend(module))]


def swap_rows(name: str, module: nn.Module, shape: tuple[int, ...], exported: Any, manifest: Manifest,
              swaps: int, backends: Optional[list[tuple[str, Any]]] = None) -> list[Row]:
    rows = []
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    snapshot, updates = packet_chain(module, manifest, swaps)
    for label, backend in backends if backends is not None else backends_for_device(module, exported):
        slot = Slot(manifest.to_bytes())
        slot.apply(snapshot.data)
        latency, build, apply = [], [], []
        with DeviceRuntime(backend, slot, poll_s=1.0) as runtime:
            runtime.infer(x)
            for packet in updates:
                t0 = time.perf_counter()
                slot.apply(packet.data)
                applied = time.perf_counter()
                runtime.on_update()
                if not runtime.wait_for_version(packet.target_version, timeout=600):
                    raise RuntimeError(f"{label}: version {packet.target_version} never went live "
                                       f"({runtime.last_error})")
                swap = runtime.swaps[-1]
                latency.append(swap.live_s - applied)
                build.append(swap.build_s)
                apply.append(applied - t0)
                runtime.infer(x)
        rows.append(Row(f"{name}_swap", label, device_name(torch.device("cpu")), "float32",
                        f"{manifest.weights_size / 1e6:.2f} MB weights, 5% fp16 update", timing(latency),
                        extra={"kind": "swap", "p99_s": p99(latency), "build_median_s": statistics.median(build),
                               "slot_apply_median_s": statistics.median(apply), "threads": 1,
                               "packet_bytes": int(statistics.median(len(p.data) for p in updates))}))
    return rows


def loop_rows(name: str, module: nn.Module, shape: tuple[int, ...], exported: Any, manifest: Manifest,
              seconds: float, t_update: float, fps: float) -> list[Row]:
    rows = []
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    frames = int(seconds * fps)
    snapshot, updates = packet_chain(module, manifest, int(seconds / t_update) + 1)
    period = 1.0 / fps
    for label, backend in backends_for_device(module, exported)[::2]:  # onnxruntime and torch-eager
        for with_updates in (False, True):
            slot = Slot(manifest.to_bytes())
            slot.apply(snapshot.data)
            with DeviceRuntime(backend, slot, poll_s=1.0) as runtime:
                runtime.infer(x)
                stop = threading.Event()

                def network(rt: DeviceRuntime = runtime, s: Any = slot, done: threading.Event = stop) -> None:
                    for packet in updates:
                        if done.wait(t_update):
                            return
                        s.apply(packet.data)
                        rt.on_update()

                net: Optional[threading.Thread] = None
                if with_updates:
                    net = threading.Thread(target=network, daemon=True)
                    net.start()
                latency, delay, versions = [], [], []
                start = time.perf_counter() + period
                for i in range(frames):
                    arrival = start + i * period
                    wait = arrival - time.perf_counter()
                    if wait > 0:
                        time.sleep(wait)
                    t0 = time.perf_counter()
                    _, version = runtime.infer_versioned(x)
                    done = time.perf_counter()
                    latency.append(done - t0)
                    delay.append(done - arrival)
                    versions.append(version)
                stop.set()
                if net is not None:
                    net.join()
                swapped = len(runtime.swaps) - 1
            late = sum(d > period for d in delay)
            rows.append(Row(f"{name}_loop", label, device_name(torch.device("cpu")), "float32", shape_text(shape),
                            timing(latency),
                            extra={"kind": "loop", "updates": with_updates, "t_update_s": t_update, "fps": fps,
                                   "frames": frames, "swaps": swapped, "p99_s": p99(latency),
                                   "max_s": max(latency), "delay_p50_s": statistics.median(delay),
                                   "delay_p99_s": p99(delay), "delay_max_s": max(delay), "late_frames": late,
                                   "threads": 1}))
    return rows


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f}"


def print_tables(rows: list[Row]) -> None:
    print("\n### Latency (one frame)\n")
    print("| model | impl | threads | input | p50 ms | p99 ms | frames/s | vs torch-eager p50 |")
    print("|---|---|---|---|---|---|---|---|")
    eager = {(r.op, r.extra["threads"]): r.time.median for r in rows
             if r.extra["kind"] == "latency" and r.impl == "torch-eager"}
    for r in rows:
        if r.extra["kind"] == "latency":
            ratio = eager.get((r.op, r.extra["threads"]), float("nan")) / r.time.median
            print(f"| {r.op} | {r.impl} | {r.extra['threads']} | {r.shapes} | {ms(r.time.median)} | "
                  f"{ms(r.extra['p99_s'])} | {r.extra['fps']:.1f} | {ratio:.2f}x |")
    print("\n### Swap (update applied -> new weights in use; one inference thread)\n")
    print("| model | impl | weights | p50 ms | p99 ms | build p50 ms | slot apply p50 ms |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        if r.extra["kind"] == "swap":
            print(f"| {r.op} | {r.impl} | {r.shapes} | {ms(r.time.median)} | {ms(r.extra['p99_s'])} | "
                  f"{ms(r.extra['build_median_s'])} | {ms(r.extra['slot_apply_median_s'])} |")
    if not any(r.extra["kind"] == "loop" for r in rows):
        return
    print("\n### Frame loop (paced; late = result after the next frame arrived)\n")
    print("| model | impl | updates | frames | swaps | infer p50/p99/max ms | delay p50/p99/max ms | late |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r.extra["kind"] == "loop":
            e = r.extra
            upd = f"every {e['t_update_s']:g} s" if e["updates"] else "none"
            print(f"| {r.op} | {r.impl} | {upd} | {e['frames']} | {e['swaps']} | {ms(r.time.median)} / "
                  f"{ms(e['p99_s'])} / {ms(e['max_s'])} | {ms(e['delay_p50_s'])} / {ms(e['delay_p99_s'])} / "
                  f"{ms(e['delay_max_s'])} | {e['late_frames']} |")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller frames, fewer repeats")
    parser.add_argument("--repeats", type=int, default=None, help="timed frames per latency row")
    parser.add_argument("--swaps", type=int, default=8, help="timed swaps per backend")
    parser.add_argument("--seconds", type=float, default=6.0, help="length of each frame loop")
    parser.add_argument("--t-update", type=float, default=1.0, help="seconds between updates in the loop")
    parser.add_argument("--fps", type=float, default=30.0, help="frame rate of the loop")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile peer")
    parser.add_argument("--executorch", action="store_true", help="also ExecuTorch + XNNPACK rows")
    parser.add_argument("--executorch-only", action="store_true", help="only the ExecuTorch rows and eager")
    parser.add_argument("--no-json", action="store_true")
    args = parser.parse_args(argv)
    repeats = args.repeats or (20 if args.quick else 40)
    rows: list[Row] = []
    t_start = time.perf_counter()
    load_before = list(os.getloadavg())  # a shared machine: other jobs' load skews every row
    for name, module, shape in models(args.quick):
        manifest = module_manifest(module)
        if args.executorch or args.executorch_only:
            rows += executorch_rows(name, module, shape, manifest, repeats, args.swaps, args.executorch_only)
            if args.executorch_only:
                continue
        t0 = time.perf_counter()
        exported = export_onnx(module, torch.rand(shape))
        export_s = time.perf_counter() - t0
        print(f"{name}: {sum(t.numel for t in manifest.tensors)} parameters, input {shape_text(shape)}, "
              f"ONNX export {export_s:.1f} s", flush=True)
        rows += latency_rows(name, module, shape, exported, manifest, repeats, not args.no_compile)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # the device loop: one inference thread (the builder gets the other core)
        rows += swap_rows(name, module, shape, exported, manifest, args.swaps)
        rows += loop_rows(name, module, shape, exported, manifest, args.seconds, args.t_update, args.fps)
        torch.set_num_threads(threads)
    print_tables(rows)
    config = {"device": "cpu", "quick": args.quick, "repeats": repeats, "swaps": args.swaps,
              "seconds": args.seconds, "t_update_s": args.t_update, "fps": args.fps,
              "torch_threads": torch.get_num_threads(), "onnxruntime": _ort_version(),
              "executorch": _dist_version("executorch"),
              "load_average_before": load_before, "load_average_after": list(os.getloadavg()),
              "wall_s": time.perf_counter() - t_start}
    if not args.no_json:
        stem = "inference_runtime_executorch" if args.executorch_only else "inference_runtime"
        print(f"\nwrote {write_json(stem, rows, {}, config)}")
    return 0


def _dist_version(name: str) -> Optional[str]:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _ort_version() -> str:
    import onnxruntime

    return str(onnxruntime.__version__)


if __name__ == "__main__":
    raise SystemExit(main())
