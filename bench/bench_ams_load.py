"""AMS server throughput (issue 17): what one phase costs, and how many devices one server sustains at the
paper's T_update = 10 s of wall time (unscaled).

1. **Stages of a phase** (``ams_phase``): the steps of :meth:`TrainingPolicy.handle` called one by one on a
   real :class:`AMSServer` for one JOINed device, with the paper's defaults (K = 20 Adam iterations on
   minibatches of 8, gradient-guided 5 %, T_horizon 240 s): ``decode`` the H.264 upload (10 frames of the
   clip sampled at 1 fps, libx264 ``slow`` at 200 kbps, as the device sends it), ``label`` them with the
   teacher, ``select`` (buffer the samples, choose the phase's 5 % coordinates and draw the minibatches),
   ``train`` (K iterations), ``delta`` (the update of the chosen coordinates), ``publish`` (encode the packet,
   send it, reset the training copy to the device's weights) and ``deliver`` (from the end of ``publish``
   until the device's C++ slot holds the new version, over TCP on localhost: the packet is written inside
   ``publish``, so this is what remains after it, usually nothing); ``phase`` is the server's compute,
   decode to publish. Median and IQR over phases, for each torch thread count.
2. **Devices** (``ams_load``): one real server on localhost and N simulated devices in this process (real
   :class:`AMSEdge` clients: real JOIN, real libx264 uploads of the clip's frames sampled at 1 fps, real
   update packets verified and applied by the slot and swapped in; they skip the per-frame student
   inference, ``ModelStreamingLoop(infer=False)``, so that the server gets the CPU). Device i starts
   ``i * T_update / N`` after the first, so uploads arrive evenly; each uploads ``rounds`` buffers. A device's
   latency is from writing an upload to receiving its CONTROL (its update packet precedes it on the stream
   and is applied by then); phases/s counts the phases answered between the first upload and the last answer.
   ``server s/phase`` is the teacher + training time per phase inside the run (against the stage table's
   isolated figure it shows what the devices and the rest of the machine took), ``CPU %`` this process's
   CPU time over the run's wall time (200 % = both cores of the 2-core box), ``load avg`` the machine's.
   N *sustains* when every upload's update arrives within T_update and none was
   dropped. N grows until it no longer sustains (or the time budget ends).

ASR and ATR are switched off (a fixed 1 fps and T_update 10 s: the paper's highest sampling rate, so the
most frames per upload to decode and label); they do not change the training cost (K x batch).

Run: ``python -m bench.bench_ams_load`` (about 4-5 minutes; ``--quick`` about 2). Prints two tables, writes
``bench/results/bench_ams_load-cpu.json`` and ``.md``.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch
from torch import nn

from bench.harness import Row, markdown_table, summarize, write_json
from edgert.ams.config import AMSConfig, EdgeConfig
from edgert.ams.edge import AMSEdge, ModelStreamingLoop, encode_samples
from edgert.ams.policies import TrainingPolicy, run_plan
from edgert.ams.protocol import AMSFrame, Control, Join, SampleUpload, UploadStatus
from edgert.ams.sampling import ASRConfig, ATRConfig
from edgert.ams.server import AMSServer
from edgert.harness.executors import RayExecutor
from edgert.transport import EdgeClient

STAGES = ("decode", "label", "select", "train", "delta", "publish", "phase", "deliver")


def fixed_rate_config(t_update_s: float = 10.0, rate_fps: float = 1.0, **kw: Any) -> AMSConfig:
    """The paper's AMSConfig with a fixed sampling rate and T_update (ASR and ATR off); ``kw`` overrides."""
    asr = ASRConfig(r_min=rate_fps, r_max=rate_fps, r_init=rate_fps, period_s=t_update_s, enabled=False)
    atr = ATRConfig(t_update_s=t_update_s, t_update_max_s=t_update_s, enabled=False)
    return dataclasses.replace(AMSConfig(asr=asr, atr=atr), **kw)


def device_keys(n: int) -> dict[str, bytes]:
    """Keys of devices ``dev-0 .. dev-<n-1>`` (distinct, deterministic: this is a benchmark)."""
    return {f"dev-{i}": bytes([i % 251 + 1]) * 32 for i in range(n)}


def _join_client(server: AMSServer, device_id: str, key: bytes, fps: float) -> tuple[EdgeClient, list[Control]]:
    """A raw device connection that JOINs and collects the server's CONTROL answers."""
    controls: list[Control] = []
    w, h = server.size
    client = EdgeClient(server.address, device_id, key,
                        on_connect=lambda: client.send(AMSFrame.JOIN, Join(fps, w, h).encode()),
                        handlers={AMSFrame.CONTROL: lambda body: controls.append(Control.decode(body))})
    client.start()
    return client, controls


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.001)


def sampled_uploads(frames: np.ndarray, fps: float, count: int, t_update_s: float, rate_fps: float,
                    edge: EdgeConfig) -> tuple[list[SampleUpload], list[float]]:
    """``count`` consecutive uploads as a device sends them: the clip's frames (looped) sampled at ``rate_fps``,
    one buffer per ``t_update_s``, encoded by :func:`edgert.ams.edge.encode_samples`; and the seconds each
    encoding took (the device's cost)."""
    per = max(1, int(round(t_update_s * rate_fps)))
    step = max(1, int(round(fps / rate_fps)))
    out, seconds = [], []
    for k in range(count):
        idx = [((k * per + j) * step) % len(frames) for j in range(per)]
        times = [k * t_update_s + j / rate_fps for j in range(per)]
        t0 = time.perf_counter()
        upload, _ = encode_samples(k + 1, (k + 1) * t_update_s, times, [frames[i] for i in idx], rate_fps, edge)
        seconds.append(time.perf_counter() - t0)
        out.append(upload)
    return out, seconds


def phase_stages(server: AMSServer, device_id: str, key: bytes, uploads: list[SampleUpload],
                 warmup: int = 1) -> dict[str, list[float]]:
    """Seconds of each stage (:data:`STAGES`) of one phase per upload (the first ``warmup`` not kept), run on
    ``server`` (started, a training trainer) for ``device_id``, which JOINs over the transport first."""
    policy = server.policy
    if not isinstance(policy, TrainingPolicy):
        raise ValueError("phase_stages: the server's trainer must train (ams, jit)")
    client, controls = _join_client(server, device_id, key, 25.0)
    try:
        _wait(lambda: bool(controls) and client.version == 1, 60, f"{device_id} to join")
        dev = server._device(device_id)
        out: dict[str, list[float]] = {s: [] for s in STAGES}
        for i, upload in enumerate(uploads):
            t0 = time.perf_counter()
            frames = server._decode(dev, upload)
            if isinstance(frames, Control):
                raise RuntimeError(f"upload {upload.seq} rejected: {frames.message}")
            t1 = time.perf_counter()
            labels = server._label(dev, frames)
            t2 = time.perf_counter()
            server.add_samples(dev, upload, frames, labels)
            plan = policy.plan(server, dev, frames, labels)
            assert plan is not None
            t3 = time.perf_counter()
            stats = run_plan(plan, dev.model, dev.optimizer)
            t4 = time.perf_counter()
            updates = policy.updates(server, dev, plan, stats)
            t5 = time.perf_counter()
            control = server.finish_phase(dev, upload.seq, updates)
            t6 = time.perf_counter()
            _wait(lambda: client.version == control.model_version, 60, f"version {control.model_version}")
            t7 = time.perf_counter()
            if control.status != UploadStatus.OK:
                raise RuntimeError(f"phase {i}: {control.status.name} {control.message}")
            if i >= warmup:
                for stage, dt in zip(STAGES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5, t6 - t0, t7 - t6)):
                    out[stage].append(dt)
        return out
    finally:
        client.stop()


# ---- N devices on one server ---------------------------------------------------------------------------------


@dataclass
class LoadResult:
    """One server with ``devices`` devices for ``rounds`` uploads each (JSON-ready)."""

    devices: int
    t_update_s: float
    uploads: int = 0
    updates: int = 0  # uploads answered OK (update applied on the device)
    dropped: int = 0  # uploads refused BUSY (the device's queue at the server was full)
    missed: int = 0  # uploads without an update within T_update (late, dropped, or never answered)
    phases: int = 0  # phases answered within the run (OK or NO_UPDATE reached the device)
    phases_per_s: float = 0.0  # phases / window_s
    latencies_s: list[float] = field(default_factory=list)  # upload written -> update applied, per OK upload
    max_backlog: int = 0  # most uploads queued at the server at once (all devices)
    window_s: float = 0.0  # first upload -> last answer
    wall_s: float = 0.0
    server_phase_s: float = 0.0  # the server's teacher + training seconds per phase, measured in the run
    cpu_s: float = 0.0  # CPU seconds of this process (server, devices, all threads) during the run
    loadavg: float = 0.0  # the machine's 1-minute load average at the end (other processes included)

    @property
    def sustained(self) -> bool:
        return self.uploads > 0 and self.missed == 0 and self.dropped == 0

    def latency(self, q: float) -> float:
        return float(np.quantile(self.latencies_s, q)) if self.latencies_s else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "sustained": self.sustained, "latency_median_s": self.latency(0.5),
                "latency_p95_s": self.latency(0.95)}


def _device_frames(edge: AMSEdge, frames: np.ndarray, fps: float, source_fps: float, offset: int,
                   duration_s: float, drain_s: float) -> Iterator[tuple[float, np.ndarray]]:
    """The clip (looped, from ``offset``) at ``source_fps`` for ``duration_s`` of stream time; then waits up to
    ``drain_s`` for the answers to the device's uploads (the connection closes when the source ends)."""
    step = max(1, int(round(fps / source_fps)))
    n = int(duration_s * source_fps) + 1
    for i in range(n + 1):
        yield i / source_fps, frames[(offset + i * step) % len(frames)]
    deadline = time.monotonic() + drain_s
    while time.monotonic() < deadline:
        answered = {c["seq"] for c in edge.report.controls}
        if all(u["seq"] in answered for u in edge.report.upload_log):
            return
        time.sleep(0.05)


def run_devices(server: AMSServer, keys: dict[str, bytes], student: nn.Module, frames: np.ndarray, fps: float,
                rounds: int, source_fps: float = 5.0, edge_config: Optional[EdgeConfig] = None,
                drain_s: Optional[float] = None) -> LoadResult:
    """One simulated device per entry of ``keys`` against ``server`` (started, fresh, serving those keys), each
    uploading ``rounds`` buffers of ``frames`` (the clip, ``fps``; ``uint8 [N, H, W, 3]`` at the server's
    size) in real time at the server's T_update (``source_fps`` frames per second reach the device's
    sampler); device i starts ``i * T_update / len(keys)`` after device 0 and, after its last upload, waits
    ``drain_s`` (default T_update) for the answers before it disconnects. Returns what the devices and the
    server saw."""
    t_update = server.config.atr.t_update_s
    drain = t_update if drain_s is None else drain_s
    edge_cfg = edge_config or EdgeConfig(lockstep=False, pace=True)
    edges = {d: AMSEdge(server.address, d, k, student, edge_cfg, loop=ModelStreamingLoop(infer=False))
             for d, k in keys.items()}
    devices = len(edges)
    errors: list[BaseException] = []
    start = time.monotonic()

    def device(i: int, edge: AMSEdge) -> None:
        time.sleep(i * t_update / devices)
        offset = i * len(frames) // devices
        try:
            edge.run(_device_frames(edge, frames, fps, source_fps, offset, rounds * t_update, drain), source_fps)
        except BaseException as exc:  # noqa: BLE001 (reported after the run)
            errors.append(exc)

    threads = [threading.Thread(target=device, args=(i, e), daemon=True) for i, e in enumerate(edges.values())]
    cpu0 = time.process_time()
    for t in threads:
        t.start()
    backlog = 0
    while any(t.is_alive() for t in threads):
        backlog = max(backlog, sum(server.queued().values()))
        time.sleep(0.1)
    if errors:
        raise RuntimeError(f"a simulated device failed: {errors[0]!r}") from errors[0]
    res = LoadResult(devices, t_update, max_backlog=backlog, wall_s=time.monotonic() - start,
                     cpu_s=time.process_time() - cpu0, loadavg=os.getloadavg()[0])
    srv = server.report().values()
    done = sum(r["phases"] for r in srv)
    res.server_phase_s = sum(r["label_seconds"] + r["train_seconds"] for r in srv) / done if done else 0.0
    first, last = float("inf"), 0.0
    for edge in edges.values():
        rep = edge.report
        answers = {c["seq"]: c for c in rep.controls if c["seq"] > 0}
        for up in rep.upload_log:
            res.uploads += 1
            first = min(first, up["sent_s"])
            c = answers.get(up["seq"])
            if c is None:
                res.missed += 1
                continue
            last = max(last, c["received_s"])
            res.phases += c["status"] in (UploadStatus.OK.name, UploadStatus.NO_UPDATE.name)
            if c["status"] == UploadStatus.BUSY.name:
                res.dropped += 1
                res.missed += 1
            elif c["status"] == UploadStatus.OK.name:
                latency = c["received_s"] - up["sent_s"]
                res.updates += 1
                res.latencies_s.append(latency)
                res.missed += latency > t_update
            else:
                res.missed += 1
    res.window_s = max(0.0, last - first)
    res.phases_per_s = res.phases / res.window_s if res.window_s > 0 else 0.0
    return res


# ---- the command ---------------------------------------------------------------------------------------------


def _setup(clip: str, size: tuple[int, int], teacher_spec: str, width: float,
           seconds: float) -> tuple[Any, nn.Module, np.ndarray, float]:
    from edgert.ams.evaluate import build_student
    from edgert.data import clip_path
    from edgert.vision.teachers import load_teacher
    from edgert.vision.video import read_clip

    teacher = load_teacher(teacher_spec, expect_task="segmentation")
    student = build_student(teacher.num_classes, width, seed=0)
    frames, times = read_clip(clip_path(clip), size=size, duration_s=seconds)
    fps = (len(times) - 1) / float(times[-1] - times[0]) if len(times) > 1 else 25.0
    return teacher, student, frames, fps


def _stage_rows(result: dict[str, list[float]], threads: int, shapes: str) -> list[Row]:
    return [Row("ams_phase", stage, "cpu", "float32", f"{threads} thread{'s' if threads > 1 else ''}; {shapes}",
                summarize(result[stage]), extra={"threads": threads, "samples_s": result[stage]})
            for stage in STAGES]


def load_table(results: list[LoadResult], threads: int) -> str:
    """The device sweep as a markdown table."""
    lines = ["| devices | trainer threads | uploads | updates | dropped | late or missing | max backlog | "
             "latency median | latency p95 | phases/s | demand phases/s | server s/phase | CPU % of wall | load avg | "
             "sustains T_update |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        lines.append(f"| {r.devices} | {threads} | {r.uploads} | {r.updates} | {r.dropped} | {r.missed} | "
                     f"{r.max_backlog} | {r.latency(0.5):.2f} s | {r.latency(0.95):.2f} s | {r.phases_per_s:.3f} | "
                     f"{r.devices / r.t_update_s:.3f} | {r.server_phase_s:.2f} | {100 * r.cpu_s / r.wall_s:.0f} | "
                     f"{r.loadavg:.1f} | {'yes' if r.sustained else '**no**'} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", default="bikes")
    parser.add_argument("--size", default="128x96",
                        help="student input WxH (default 128x96, as `edgert demo`; 320x144 is `ams eval`'s)")
    parser.add_argument("--teacher", default="mediapipe-selfie")
    parser.add_argument("--student-width", type=float, default=0.5)
    parser.add_argument("--stage-threads", default="1,2", help="torch thread counts of the stage breakdown")
    parser.add_argument("--stage-repeats", type=int, default=5, help="phases timed per thread count (+1 warm-up)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads of the server in the device sweep (0: the stage count with the "
                             "shortest phase)")
    parser.add_argument("--devices", default="1,2,3,4,6,8,12,16",
                        help="device counts, tried in order until one fails (or the budget ends)")
    parser.add_argument("--rounds", type=int, default=3, help="uploads per device at each device count")
    parser.add_argument("--t-update", type=float, default=10.0, help="T_update in wall seconds (paper: 10)")
    parser.add_argument("--budget", type=float, default=280.0,
                        help="seconds for the whole command: a device count that would end past it is skipped")
    parser.add_argument("--executor", choices=("thread", "ray"), default="thread",
                        help="thread: the server's worker trains one phase at a time (default); ray: up to "
                             "--parallel phases of different devices at once as Ray tasks (AMSConfig.executor)")
    parser.add_argument("--parallel", type=int, default=2, help="ray: phases in flight (one Ray CPU each)")
    parser.add_argument("--quick", action="store_true", help="3 phases per thread count, rounds 2")
    args = parser.parse_args()
    t_start = time.monotonic()
    w, h = (int(v) for v in args.size.lower().split("x"))
    repeats = 3 if args.quick else args.stage_repeats
    rounds = 2 if args.quick else args.rounds
    teacher, student, frames, fps = _setup(args.clip, (w, h), args.teacher, args.student_width, 60.0)
    params = sum(p.numel() for p in student.parameters())
    config = fixed_rate_config(args.t_update)
    edge_cfg = EdgeConfig(lockstep=False, pace=True)
    shapes = (f"K={config.iterations}, batch {config.batch_size}, {w}x{h}, "
              f"{int(args.t_update)} frames/upload, {params / 1e6:.2f}M params")

    rows: list[Row] = []
    uploads, encode_s = sampled_uploads(frames, fps, repeats + 1, args.t_update, 1.0, EdgeConfig())
    rows.append(Row("ams_device", "encode-upload", "cpu", "uint8", f"{int(args.t_update)} frames {w}x{h}, libx264 "
                    "slow 200 kbps (device side)", summarize(encode_s), extra={"bytes": len(uploads[0].video)}))
    phase_s: dict[int, float] = {}
    for threads in (int(t) for t in args.stage_threads.split(",")):
        torch.set_num_threads(threads)
        keys = device_keys(1)
        with AMSServer(student, teacher, keys, config, size=(w, h)) as server:
            stages = phase_stages(server, "dev-0", keys["dev-0"], uploads)
        rows += _stage_rows(stages, threads, shapes)
        phase_s[threads] = statistics.median(stages["phase"])
    print(markdown_table(rows, {}))

    sweep_threads = args.threads or min(phase_s, key=lambda t: phase_s[t])
    torch.set_num_threads(sweep_threads)
    per_phase = phase_s.get(sweep_threads) or min(phase_s.values())
    executor: Optional[RayExecutor] = None
    sweep_config, slots = config, 1
    if args.executor == "ray":
        executor = RayExecutor(num_cpus=args.parallel, cpus_per_task=1, init_kwargs={"log_to_driver": False})
        sweep_config = dataclasses.replace(config, executor="ray", max_parallel_phases=args.parallel,
                                           ray_cpus_per_phase=sweep_threads)
        slots = args.parallel
    results: list[LoadResult] = []
    try:
        for n in (int(v) for v in args.devices.split(",")):
            if time.monotonic() - t_start + args.t_update * (rounds + 2) > args.budget:
                print(f"\n{n} devices skipped: would end past the {args.budget:.0f} s budget")
                break
            keys = device_keys(n)
            with AMSServer(student, teacher, keys, sweep_config, size=(w, h), executor=executor) as server:
                res = run_devices(server, keys, student, frames, fps, rounds, edge_config=edge_cfg)
            results.append(res)
            print(f"{n} devices: {res.updates}/{res.uploads} updates, latency median {res.latency(0.5):.2f} s, "
                  f"p95 {res.latency(0.95):.2f} s, {'sustains' if res.sustained else 'does not sustain'}", flush=True)
            if not res.sustained:
                break
    finally:
        if executor is not None:
            executor.shutdown()
    sweep = load_table(results, sweep_threads)
    good = [r for r in results if r.sustained]
    best = max(good, key=lambda r: r.devices) if good else None
    predicted = slots * args.t_update / per_phase  # phases in flight x T_update / phase (thread: one)
    analysis = {
        "phase_s_by_threads": {str(k): v for k, v in phase_s.items()},
        "predicted_max_devices": predicted,
        "predicted_phases_per_s": slots / per_phase,
        "max_sustained_devices": best.devices if best else 0,
        "phases_per_s_at_max": best.phases_per_s if best else 0.0,
    }
    stage_share = {r.impl: r.time.median / per_phase for r in rows if r.op == "ams_phase"
                   and r.extra["threads"] == sweep_threads and r.impl not in ("phase", "deliver")}
    analysis["stage_share_of_phase"] = stage_share
    shares = ", ".join(f"{k} {100 * v:.1f} %" for k, v in sorted(stage_share.items(), key=lambda kv: -kv[1]))
    summary = (f"phase ({sweep_threads} thread{'s' if sweep_threads > 1 else ''}): {per_phase:.2f} s median "
               f"({shares}) -> {args.executor} executor, {slots} phase(s) at once: "
               f"predicted capacity {slots / per_phase:.3f} phases/s = {predicted:.1f} devices at T_update "
               f"{args.t_update:g} s; measured: largest sustained N = {analysis['max_sustained_devices']} at "
               f"{analysis['phases_per_s_at_max']:.3f} phases/s")
    print("\n" + sweep + "\n\n" + summary)
    markdown = markdown_table(rows, {}) + "\n\n" + sweep + "\n\n" + summary
    name = "bench_ams_load" + ("" if args.executor == "thread" else f"-ray{args.parallel}")
    path = write_json(name, rows, analysis, {
        "device": "cpu", "clip": args.clip, "size": [w, h], "teacher": args.teacher, "quick": args.quick,
        "sweep_threads": sweep_threads, "executor": args.executor,
        "phases_in_flight": slots, "ams_sweep": sweep_config.to_dict(), "stage_threads": args.stage_threads,
        "rounds": rounds,
        "t_update_s": args.t_update, "ams": config.to_dict(), "edge": dataclasses.asdict(edge_cfg),
        "sweep": [r.to_dict() for r in results], "wall_s": time.monotonic() - t_start}, markdown=markdown)
    print(f"\nJSON: {path} ({time.monotonic() - t_start:.0f} s)")


if __name__ == "__main__":
    main()
