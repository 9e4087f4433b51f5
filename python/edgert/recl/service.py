"""``edgert recl serve`` and ``edgert recl device``: RECL's server and a camera, each as a process.

* ``serve`` opens (or creates) the persistent :class:`~edgert.recl.zoo.ModelZoo` in ``--zoo``, builds the
  :class:`~edgert.recl.controller.RECLController` and the :class:`~edgert.recl.protocol.RECLServer` for the devices
  of ``--keys``, writes ``--port-file`` once listening, logs every window, and on SIGTERM/SIGINT (or after
  ``--windows`` windows) stops: the window in progress is finished, the zoo closed, ``--report`` written. A zoo
  reopened by a later ``serve`` continues: windows are numbered after the last one the zoo records.
* ``device`` replays a clip (a bundled one of :data:`edgert.data.CLIPS` or a video file) as a camera: the clip's
  timeline is cut into windows of ``--window-s`` seconds (default: the clip split into ``--windows``; the clip
  loops when the windows run past its end), each window uploads ``--window-frames`` frames evenly spaced in it and
  waits for the DECISION, whose digest :meth:`~edgert.recl.protocol.RECLDevice.wait` checks against the slot's
  weights. ``--out`` receives ``device_log.json`` (rewritten after every window).

Keys are :mod:`edgert.transport.keys` files (the format AMS's evaluation writes): a JSON object of device id ->
raw key file. Exit codes: 0 success; 1 a window failed (rejected, unverified, no answer); 2 bad input (arguments,
keys, clip, zoo, teacher); 3 the server cannot be reached or does not accept the device.

``register_service`` adds both to an ``edgert recl`` subcommand group; ``python -m edgert.recl.service serve|device
...`` runs them directly.
"""
from __future__ import annotations

import argparse
import json
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np

from edgert.harness.run import write_bytes_atomic
from edgert.transport.tls import TLSConfig, TLSConfigError, add_tls_arguments
from edgert.updates.release_cli import add_release_arguments, signer_from_args, trust_dir_from_args, trust_from_args

Log = Callable[[str], None]

EXIT_WINDOW_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_UNREACHABLE = 3

TASKS = ("classification", "segmentation", "detection")
CODECS = ("png", "jpeg", "h264")
DEVICE_LOG = "device_log.json"


class _Fail(Exception):
    """Ends a command with ``code`` and a one-line message on stderr."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _logger(who: str) -> Log:
    """A line logger that prefixes ``[who HH:MM:SS]`` and flushes (the processes' logs interleave)."""

    def log(line: str) -> None:
        print(f"[{who} {time.strftime('%H:%M:%S')}] {line}", flush=True)

    return log


def _run(command: str, body: Callable[[], int]) -> int:
    try:
        return body()
    except _Fail as exc:
        print(f"edgert recl {command}: {exc}", file=sys.stderr, flush=True)
        return exc.code
    except KeyboardInterrupt:  # the device on Ctrl-C (the server handles SIGINT as SIGTERM once it runs)
        print(f"edgert recl {command}: interrupted", file=sys.stderr, flush=True)
        return 130


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise _Fail(EXIT_BAD_INPUT, f"--server: expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def _size(text: str) -> tuple[int, int]:
    w, sep, h = text.lower().partition("x")
    if not sep or not w.isdigit() or not h.isdigit() or int(w) < 1 or int(h) < 1:
        raise _Fail(EXIT_BAD_INPUT, f"--size: expected WIDTHxHEIGHT, got {text!r}")
    return int(w), int(h)


def _make_task(name: str, threads: int) -> Any:
    from edgert.recl.detection import DetectionTask
    from edgert.recl.tasks import ClassificationTask, SegmentationTask

    factories = {"classification": ClassificationTask, "segmentation": SegmentationTask, "detection": DetectionTask}
    return factories[name](num_threads=threads)


# ------------------------------------------------------------------------------------------------------- serve


#: ``serve`` flags mapped onto :meth:`RECLConfig.build` names (None: not given, the config file's value stays)
_SETTINGS = {"K": "K", "alpha": "alpha", "gamma": "gamma", "eta": "eta", "q": "q", "window_s": "window_s",
             "mu": "mu", "budget": "budget_s", "selection": "selection", "scheduler": "scheduler",
             "executor": "executor", "ray_address": "ray_address", "seed": "seed"}


def serve_config(args: argparse.Namespace) -> Any:
    """The :class:`~edgert.recl.config.RECLConfig` of ``serve``: ``--config`` (JSON as ``RECLConfig.to_dict``
    writes it; default: the defaults) with the flags given on top (``--ray-address`` alone implies
    ``--executor ray``).

    Raises:
        ValueError: an unreadable or stale config file, or a bad value.
    """
    from edgert.recl.config import RECLConfig

    if args.config:
        try:
            data = json.loads(Path(args.config).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"--config {args.config!r}: cannot read it ({exc})") from exc
        if not isinstance(data, dict):
            raise ValueError(f"--config {args.config!r}: expected a JSON object")
        config = RECLConfig.from_dict(data)
    else:
        config = RECLConfig()
    flags = {name: getattr(args, dest) for dest, name in _SETTINGS.items() if getattr(args, dest) is not None}
    if "ray_address" in flags:  # an address means Ray unless --executor says otherwise
        flags.setdefault("executor", "ray")
    return config.replace(**flags) if flags else config


def _describe(report: Any) -> str:
    parts = []
    for device, r in report.devices.items():
        kind, nbytes = r.delivery.get("kind", "-"), r.delivery.get("packet_bytes", 0)
        parts.append(f"{device} {r.chosen} acc {r.chosen_accuracy:.3f} ({kind} {nbytes} B)")
    return (f"window {report.window}: {'; '.join(parts)}; admitted {report.admitted}, pruned {report.pruned}, "
            f"{report.experts} experts, {report.queued} queued; {report.cost.total_s:.1f} s")


def _serve(args: argparse.Namespace) -> int:
    log = _logger("recl server")
    if args.windows is not None and args.windows < 1:
        raise _Fail(EXIT_BAD_INPUT, f"--windows: expected >= 1, got {args.windows}")
    if not args.gather_s > 0:
        raise _Fail(EXIT_BAD_INPUT, f"--gather-s: expected > 0, got {args.gather_s}")
    from edgert.transport.keys import KeyFileError, load_keys

    try:
        keys = load_keys(args.keys)
        config = serve_config(args)
        tls = _tls(args, "server", args.tls_name)
        signer = signer_from_args(args)
    except (KeyFileError, ValueError) as exc:
        raise _Fail(EXIT_BAD_INPUT, str(exc)) from exc
    expected = None
    if args.expect:
        expected = [d.strip() for d in args.expect.split(",") if d.strip()]
        unknown = sorted(set(expected) - set(keys))
        if unknown:
            raise _Fail(EXIT_BAD_INPUT, f"--expect: devices {unknown} have no key in {args.keys}")

    import torch

    from edgert.recl.controller import RECLController
    from edgert.recl.protocol import RECLServer
    from edgert.recl.zoo import ModelZoo, ZooError
    from edgert.vision.teachers import TeacherError

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    torch.set_num_threads(args.threads)
    task = _make_task(args.task, args.threads)
    try:
        _ = task.teacher  # loaded now: a missing teacher fails here, not at the first window
    except TeacherError as exc:
        raise _Fail(EXIT_BAD_INPUT, str(exc)) from exc
    try:
        zoo = ModelZoo(args.zoo, config.zoo)
    except (ZooError, OSError) as exc:
        raise _Fail(EXIT_BAD_INPUT, f"--zoo {args.zoo!r}: {exc}") from exc
    controller: Optional[RECLController] = None
    server: Optional[RECLServer] = None
    first = seen = 0
    address: Optional[tuple[str, int]] = None
    try:
        controller = RECLController(task, zoo, config, log=log)
        last = zoo.last_window()
        if last is not None:  # a zoo reopened after a restart: its sample keys and provenance stay unique
            first = controller.next_window = last + 1
        try:
            server = RECLServer(controller, keys, expected=expected, gather_s=args.gather_s, host=args.host,
                                port=args.port, log=log, tls=tls, signer=signer).start()
        except OSError as exc:
            raise _Fail(EXIT_BAD_INPUT, f"cannot listen on {args.host}:{args.port}: {exc}") from exc
        host, port = address = server.address
        if args.port_file:
            write_bytes_atomic(Path(args.port_file), str(port).encode())
        experts = len(zoo.experts(task.name))
        log(f"RECL server ({task.name}) on {host}:{port} for {sorted(keys)}; zoo {args.zoo}: {experts} experts, "
            f"first window {first}" + (f", stopping after {args.windows} windows" if args.windows else ""))
        while not stop.wait(0.2):
            reports = list(server.reports)
            for report in reports[seen:]:
                log(_describe(report))
            seen = len(reports)
            if args.windows is not None and seen >= args.windows:
                break
        log("stopping" + (" (signal)" if stop.is_set() else ""))
    finally:
        if server is not None:
            server.stop()  # finishes the window in progress
            for report in server.reports[seen:]:
                log(_describe(report))
        if controller is not None:
            controller.close()
        summary: dict[str, Any] = {}
        try:
            summary = {"root": str(zoo.root), "active_experts": [e.id for e in zoo.experts(task.name)],
                       "queued": len(zoo.queued(task.name)), "last_window": zoo.last_window()}
        except ZooError as exc:
            summary = {"root": str(zoo.root), "error": str(exc)}
        zoo.close()
        if args.report:
            from edgert.harness import write_json

            write_json(args.report, {
                "task": task.name, "address": list(address) if address is not None else None,
                "config": config.to_dict(), "first_window": first,
                "windows": [r.to_dict() for r in (server.reports if server is not None else [])],
                "rejects": [{"device": d, "seq": r.seq, "code": r.code.name, "message": r.message}
                            for d, r in (server.rejects if server is not None else [])],
                "scene_cuts": [{"device": c.device, "window": c.window, "chosen": c.key, "expert_id": c.expert_id,
                                "accuracy": c.accuracy, "frames": c.report.frames, "delivery": c.report.delivery}
                               for c in (server.reselections if server is not None else [])],
                "zoo": summary})
    return 0


# ------------------------------------------------------------------------------------------------------ device


def _camera(path: Path, size: tuple[int, int]) -> Iterator[tuple[float, np.ndarray]]:
    """The clip's frames as ``(camera seconds, rgb)``, looping forever (each pass continues the clock).

    Raises:
        VideoError: the clip cannot be decoded, or holds no frame.
    """
    from edgert.vision.video import VideoError, iter_frames, probe

    info = probe(path)
    period = 1.0 / info.fps if info.fps > 0 else 1.0 / 30.0
    offset = 0.0
    while True:
        last: Optional[float] = None
        for f in iter_frames(path, size):
            last = f.time_s
            yield offset + f.time_s, f.rgb
        if last is None:
            raise VideoError(f"video {str(path)!r}: no frames")
        offset += last + period


def window_seconds(path: Path, windows: int, window_s: Optional[float] = None) -> float:
    """``window_s``, or by default the clip's duration / ``windows`` (the windows tile the clip once).

    Raises:
        VideoError: the clip does not open. ValueError: its duration is unknown and ``window_s`` not given.
    """
    from edgert.vision.video import probe

    if window_s is not None:
        return float(window_s)
    duration = probe(path).duration_s
    if not duration > 0:
        raise ValueError(f"{path}: the clip's duration is unknown; give --window-s")
    return duration / windows


def clip_windows(path: Path, size: tuple[int, int], windows: int, frames_per_window: int,
                 window_s: float) -> Iterator[np.ndarray]:
    """The windows a camera replaying ``path`` uploads: ``windows`` arrays ``uint8 [frames_per_window, H, W, 3]``.

    Window ``k`` covers camera seconds ``[k * window_s, (k + 1) * window_s)``; its frames are the ones on screen at
    ``frames_per_window`` evenly spaced instants (``(j + 0.5) * window_s / frames_per_window`` into the window).
    The clip loops past its end.

    Raises:
        VideoError: the clip does not open or decode.
    """
    frames = _camera(path, size)
    current = next(frames)
    upcoming = next(frames)
    for k in range(windows):
        picks = []
        for j in range(frames_per_window):
            target = window_s * (k + (j + 0.5) / frames_per_window)
            while upcoming[0] <= target:
                current, upcoming = upcoming, next(frames)
            picks.append(current[1])
        yield np.stack(picks)


def _predictions(task: Any, model: Any, frames: np.ndarray) -> dict[str, Any]:
    """What the device's current model says about ``frames`` (no labels here: the teacher is on the server)."""
    from edgert.vision.distill import predict_labels

    t0 = time.perf_counter()
    if task.name == "detection":  # decoded boxes [N, M, 5], the last column marking real ones
        boxes = task.predict(model, frames)
        return {"inference_s": time.perf_counter() - t0, "faces": [int(v) for v in boxes[..., 4].sum(axis=1)]}
    labels = predict_labels(model, task.preprocess(frames), batch_size=16)
    out: dict[str, Any] = {"inference_s": time.perf_counter() - t0}
    if labels.ndim == 1:
        out["predicted"] = [int(v) for v in labels]
    else:
        out["foreground"] = [float(v) for v in (labels > 0).reshape(len(labels), -1).mean(axis=1)]
    return out


def _tls(args: argparse.Namespace, kind: str, name: str) -> Optional[TLSConfig]:
    """The TLS settings of the flags, checked now (a missing or bad file fails before anything starts)."""
    tls = TLSConfig.from_args(args, kind, name)
    if tls is not None:
        tls.server_context() if kind == "server" else tls.client_context()
    return tls


def _device(args: argparse.Namespace) -> int:
    from edgert.data import clip_path

    address = _address(args.server)
    size = _size(args.size)
    for name in ("windows", "window_frames", "cut_frames"):
        if getattr(args, name) < 1:
            raise _Fail(EXIT_BAD_INPUT, f"--{name.replace('_', '-')}: expected >= 1, got {getattr(args, name)}")
    if args.window_s is not None and not args.window_s > 0:
        raise _Fail(EXIT_BAD_INPUT, f"--window-s: expected > 0, got {args.window_s}")
    try:
        clip = clip_path(args.clip)
    except FileNotFoundError as exc:
        raise _Fail(EXIT_BAD_INPUT, f"--clip: {exc}") from exc
    from edgert.transport.keys import KeyFileError, load_key, read_key_file

    try:
        key = read_key_file(args.key_file, args.device) if args.key_file else load_key(args.keys, args.device)
        tls = _tls(args, "device", args.device)
        trust = trust_from_args(args)
        trust_dir = trust_dir_from_args(args)
    except (KeyFileError, TLSConfigError, ValueError) as exc:
        raise _Fail(EXIT_BAD_INPUT, str(exc)) from exc

    import torch

    from edgert.recl.protocol import RECLDevice
    from edgert.recl.workload import SceneCutDetector
    from edgert.vision.video import VideoError

    log = _logger(f"recl device {args.device}")
    try:
        window_s = window_seconds(clip, args.windows, args.window_s)
        windows = clip_windows(clip, size, args.windows, args.window_frames, window_s)
        first = next(windows)  # decodes the clip's first window before connecting: a bad clip fails here
    except (VideoError, ValueError) as exc:
        raise _Fail(EXIT_BAD_INPUT, f"--clip {args.clip!r} does not decode: {exc}") from exc
    try:
        socket.create_connection(address, timeout=args.connect_timeout).close()
    except OSError as exc:
        raise _Fail(EXIT_UNREACHABLE, f"cannot reach the server at {args.server}: {exc}") from exc
    torch.set_num_threads(args.threads)
    task = model = None
    if args.task:
        task = _make_task(args.task, args.threads)
        model = task.new_expert()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = RECLDevice(address, args.device, key, codec=args.codec, log=log, tls=tls, trust=trust,
                        state_dir=trust_dir).start()
    records: list[dict[str, Any]] = []
    failed = 0
    state: dict[str, Any] = {"device": args.device, "server": args.server, "clip": str(clip), "size": list(size),
                             "codec": args.codec, "window_s": window_s, "window_frames": args.window_frames,
                             "windows": records}

    def save() -> None:
        state["failed_windows"] = failed
        write_bytes_atomic(out / DEVICE_LOG, (json.dumps(state, indent=2) + "\n").encode())

    try:
        if not device.wait_ready(args.connect_timeout):
            raise _Fail(EXIT_UNREACHABLE, f"connected to {args.server}, but no model within {args.connect_timeout:g} "
                                          "s: is the device in the server's keys, with this key? (see its log)")
        log(f"connected to {args.server}: model version {device.version}, weights {device.weights_digest()[:12]}")
        start = time.monotonic()
        detector = SceneCutDetector(refractory=args.cut_frames) if args.scene_cuts else None
        for k, frames in enumerate(_chain(first, windows)):
            uploads: list[tuple[Optional[int], np.ndarray]] = []
            if detector is not None:  # each cut with cut_frames frames after it in the window, then the window
                uploads += [(j, frames[j:j + args.cut_frames]) for j in detector.cuts(frames)
                            if j + args.cut_frames <= len(frames)]
            uploads.append((None, frames))
            outcome = None
            for cut, upload in uploads:
                if args.realtime:  # an upload leaves when its last frame has been sampled
                    end = (k + 1) if cut is None else k + (cut + len(upload)) / len(frames)
                    time.sleep(max(0.0, start + end * window_s - time.monotonic()))
                record: dict[str, Any] = {"window": k, "frames": int(upload.shape[0])}
                if cut is not None:
                    record["scene_cut"] = cut
                records.append(record)
                outcome = _exchange(device, upload, record, args, log, task, model, scene_cut=cut is not None)
                if outcome is not None:
                    failed += 1
                save()
                if outcome == "give up":
                    break
            if outcome == "give up":
                break
    finally:
        device.stop()
    save()
    log(f"{len(records)} windows, {failed} failed; log in {out / DEVICE_LOG}")
    return EXIT_WINDOW_FAILED if failed else 0


def _exchange(device: Any, frames: np.ndarray, record: dict[str, Any], args: argparse.Namespace, log: Log,
              task: Any, model: Any, scene_cut: bool) -> Optional[str]:
    """One upload and its answer, logged into ``record``; returns None when the device got a verified model,
    ``"failed"`` (rejected, or not verified) or ``"give up"`` (no answer, or the connection is gone)."""
    from edgert.recl.protocol import WindowRejected
    from edgert.transport import ConnectionClosed

    what = f"window {record['window']}" + (f" scene cut at frame {record['scene_cut']}" if scene_cut else "")
    received, sent = device.client.bytes_received, device.upload_bytes
    t0 = time.monotonic()
    try:
        seq = _send(device, frames, args.connect_timeout, scene_cut)
        record["seq"] = seq
        answer = device.wait(seq, timeout=args.timeout)
    except WindowRejected as exc:
        record["rejected"] = {"code": exc.reject.code.name, "message": exc.reject.message}
        log(str(exc))
        return "failed"
    except (TimeoutError, ConnectionClosed) as exc:
        record["error"] = f"{type(exc).__name__}: {exc}"
        log(f"{what}: {record['error']}; giving up")
        return "give up"
    frame = answer.frame
    record.update({
        "latency_s": time.monotonic() - t0,
        "decision": {"window": frame.window, "expert_id": frame.expert_id, "source": frame.source,
                     "version": frame.version, "accuracy": frame.accuracy, "digest": frame.digest.hex()},
        "delivery": frame.delivery.name.lower(), "packet_bytes": frame.packet_bytes,
        "verified": answer.verified, "slot_version": answer.slot_version,
        "bytes_received": device.client.bytes_received - received,
        "bytes_sent": device.upload_bytes - sent})
    if not answer.verified:
        log(f"{what}: the slot's weights do not hash to the decision's digest {frame.digest.hex()}")
    if model is not None:
        device.load_into(model)
        record.update(_predictions(task, model, frames))
    chosen = "own model" if frame.expert_id < 0 else f"expert {frame.expert_id}"
    log(f"{what} (server window {frame.window}): {chosen} ({frame.source}), "
        f"accuracy {frame.accuracy:.3f}, {record['delivery']} {frame.packet_bytes} B, "
        f"{record['latency_s']:.1f} s" + ("" if answer.verified else ", NOT VERIFIED"))
    return None if answer.verified else "failed"


def _chain(first: np.ndarray, rest: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    yield first
    yield from rest


def _send(device: Any, frames: np.ndarray, timeout: float, scene_cut: bool = False) -> int:
    """Uploads ``frames``; after a dropped connection, waits for the client's reconnect once and retries."""
    from edgert.transport import ConnectionClosed

    try:
        return int(device.send_window(frames, scene_cut=scene_cut))
    except ConnectionClosed:
        if not device.wait_ready(timeout):
            raise
        return int(device.send_window(frames, scene_cut=scene_cut))


# ------------------------------------------------------------------------------------------------------ parsers


def _add_serve_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("--task", choices=TASKS, default="classification")
    s.add_argument("--zoo", required=True, help="the zoo's folder (created if missing; reopened, it continues)")
    s.add_argument("--keys", required=True, metavar="KEYS.json",
                   help="JSON object of device id -> key file (edgert.transport.keys): the devices served")
    s.add_argument("--expect", default=None, metavar="ID,ID",
                   help="devices a window waits for (default: every device in --keys)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=0, help="0: any free port (see --port-file)")
    s.add_argument("--port-file", default=None, help="write the listening port here once ready")
    s.add_argument("--gather-s", type=float, default=5.0,
                   help="a window closes this long after its first upload even if expected devices are missing")
    s.add_argument("--windows", type=int, default=None, help="stop after this many windows (default: on SIGTERM)")
    s.add_argument("--report", default=None, help="write the window reports (JSON) here on exit")
    add_tls_arguments(s, server=True)
    add_release_arguments(s, server=True)
    s.add_argument("--config", default=None, metavar="CONFIG.json",
                   help="RECLConfig as JSON (RECLConfig.to_dict); the flags below override it")
    g = s.add_argument_group("RECL settings (default: --config's, else RECLConfig's)")
    g.add_argument("--K", "--top-k", dest="K", type=int, default=None, help="experts the gating network shortlists")
    g.add_argument("--alpha", type=float, default=None, help="admission margin (accuracy fraction)")
    g.add_argument("--gamma", type=int, default=None, help="promising models admitted together")
    g.add_argument("--eta", type=int, default=None, help="pruning: fewest selections an expert needs to stay")
    g.add_argument("--q", type=int, default=None, help="pruning: selections counted")
    g.add_argument("--window-s", type=float, default=None, help="model-update window in seconds")
    g.add_argument("--mu", type=float, default=None, help="micro-window in seconds")
    g.add_argument("--budget", type=float, default=None,
                   help="retraining GPU seconds per window (default: the whole window)")
    g.add_argument("--selection", choices=("gating", "odin", "oracle", "none"), default=None)
    g.add_argument("--scheduler", choices=("recl", "round_robin", "ekya"), default=None)
    g.add_argument("--executor", choices=("local", "ray"), default=None, help="where retraining runs")
    g.add_argument("--ray-address", default=None,
                   help="Ray cluster address (implies --executor ray; default: a local Ray)")
    g.add_argument("--seed", type=int, default=None)
    s.add_argument("--threads", type=int, default=1, help="torch threads")


def _add_device_args(d: argparse.ArgumentParser) -> None:
    d.add_argument("--server", required=True, help="HOST:PORT")
    d.add_argument("--device", required=True, help="this camera's device id")
    key = d.add_mutually_exclusive_group(required=True)
    key.add_argument("--keys", metavar="KEYS.json", help="the keys file; this device's entry is used")
    key.add_argument("--key-file", help="this device's raw key file")
    d.add_argument("--clip", required=True, help="a bundled clip name or a video file, replayed as the camera")
    d.add_argument("--size", default="128x96", help="frame size WIDTHxHEIGHT, the same on every device (128x96)")
    d.add_argument("--windows", type=int, default=3, help="windows to upload (3)")
    d.add_argument("--window-frames", type=int, default=8, help="frames uploaded per window (8)")
    d.add_argument("--window-s", type=float, default=None,
                   help="clip seconds per window (default: the clip split into --windows)")
    d.add_argument("--realtime", action="store_true",
                   help="upload each window when it ends in real time (default: as soon as the last is answered)")
    d.add_argument("--scene-cuts", action="store_true",
                   help="detect scene cuts in the sampled frames and upload the --cut-frames frames after each "
                        "at once, for a selection before the window's upload")
    d.add_argument("--cut-frames", type=int, default=4, help="frames uploaded after a scene cut (4)")
    d.add_argument("--codec", choices=CODECS, default="png", help="how frames travel (png)")
    d.add_argument("--task", choices=TASKS, default=None,
                   help="run each received model on its window's frames and log its predictions")
    d.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for a decision (600)")
    d.add_argument("--connect-timeout", type=float, default=15.0, help="seconds to connect and get a model (15)")
    d.add_argument("--threads", type=int, default=1, help="torch threads")
    d.add_argument("--out", required=True, help=f"folder for {DEVICE_LOG}")
    add_tls_arguments(d)
    add_release_arguments(d)


def register_service(ssub: "argparse._SubParsersAction") -> None:
    """Adds ``serve`` and ``device`` to the ``edgert recl`` subcommand group ``ssub``."""
    s = ssub.add_parser("serve", help="run a RECL server: zoo, controller, devices of a keys file")
    _add_serve_args(s)
    s.set_defaults(func=main_serve_args)
    d = ssub.add_parser("device", help="run a RECL camera that replays a clip, window by window")
    _add_device_args(d)
    d.set_defaults(func=main_device_args)


def main_serve_args(args: argparse.Namespace) -> int:
    """``edgert recl serve`` on parsed arguments."""
    return _run("serve", lambda: _serve(args))


def main_device_args(args: argparse.Namespace) -> int:
    """``edgert recl device`` on parsed arguments."""
    return _run("device", lambda: _device(args))


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m edgert.recl.service serve|device ...``."""
    parser = argparse.ArgumentParser(prog="python -m edgert.recl.service")
    register_service(parser.add_subparsers(dest="recl_command", required=True))
    args = parser.parse_args(list(argv) if argv is not None else sys.argv[1:])
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
