"""``edgert recl serve`` / ``edgert recl device`` (``edgert.recl.service``) as real processes on localhost: a server and
two cameras over the classification task, SIGTERM, the zoo after it, a restart that continues the zoo; bad input."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Sequence

import pytest

import edgert
from conftest import needs_av, needs_cv2, needs_imagenet
from edgert.recl.config import RECLConfig
from edgert.recl.controller import weights_digest
from edgert.recl.gating import GatingConfig
from edgert.recl.service import main
from edgert.recl.zoo import ModelZoo
from edgert.transport.keys import load_keys, write_keys

#: the eval's QUICK selectors, retraining of a few epochs, experts admitted one at a time
TINY = RECLConfig.build(window_s=8, mu=1, micro_window_epochs=2, gamma=1, history_per_window=8,
                        gating=GatingConfig(hidden=64, train_steps=60, finetune_steps=30, history_samples=16))


def _env() -> dict[str, str]:
    """The test's own edgert first on the path; one thread per process (2 cores run 3 processes)."""
    src = str(Path(edgert.__file__).resolve().parent.parent)
    path = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH", "")) if p)
    return dict(os.environ, PYTHONPATH=path, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def _spawn(args: Sequence[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "edgert.recl.service", *args], stdout=open(log, "wb"),
                            stderr=subprocess.STDOUT, env=_env())


def _wait(proc: subprocess.Popen, log: Path, timeout: float) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"{proc.args} did not finish in {timeout} s:\n{log.read_text(errors='replace')[-3000:]}")


def _serve(tmp: Path, name: str, *extra: str) -> tuple[subprocess.Popen, int, Path]:
    """A server on the zoo in ``tmp/zoo``; returns it once its port file exists."""
    port_file, log = tmp / f"{name}.port", tmp / f"{name}.log"
    proc = _spawn(["serve", "--task", "classification", "--zoo", str(tmp / "zoo"), "--keys", str(tmp / "keys.json"),
                   "--config", str(tmp / "config.json"), "--port-file", str(port_file), "--gather-s", "60",
                   "--report", str(tmp / f"{name}.json"), *extra], log)
    for _ in range(1200):
        if port_file.exists():
            return proc, int(port_file.read_text()), log
        if proc.poll() is not None:
            break
        try:
            proc.wait(timeout=0.1)
        except subprocess.TimeoutExpired:
            pass
    proc.kill()
    pytest.fail(f"the server did not start:\n{log.read_text(errors='replace')[-3000:]}")


def _device(tmp: Path, port: int, device: str, clip: str, windows: int, *extra: str) -> tuple[subprocess.Popen, Path]:
    log = tmp / f"{device}-{clip}.log"
    return _spawn(["device", "--server", f"127.0.0.1:{port}", "--device", device, "--keys", str(tmp / "keys.json"),
                   "--clip", clip, "--window-frames", "6", "--windows", str(windows), "--out", str(tmp / device),
                   *extra], log), log


def _zoo_files_consistent(zoo: ModelZoo) -> None:
    """No expert quarantined on reopen (every active file checks out) and no file the zoo does not name."""
    every = zoo.experts(active_only=False)
    assert all(e.status == "active" for e in every), [(e.id, e.status, e.status_reason) for e in every]
    named = {e.file for e in every} | {q.file for q in zoo.queued()}
    assert {p.name for p in zoo.weights_dir.iterdir()} == named


@pytest.mark.slow  # 35 s of CPU in 5 processes; 67-91 s of wall time on 2 busy cores
@needs_av
@needs_cv2
@needs_imagenet
def test_server_and_two_cameras_as_processes_then_sigterm_and_a_restart(tmp_path: Path) -> None:
    write_keys(tmp_path, ["cam1", "cam2"])
    (tmp_path / "config.json").write_text(json.dumps(TINY.to_dict()))
    server, port, server_log = _serve(tmp_path, "first")
    cams = [_device(tmp_path, port, "cam1", "carphone", 2, "--task", "classification"),
            _device(tmp_path, port, "cam2", "bikes", 2, "--codec", "jpeg", "--scene-cuts")]
    try:
        for proc, log in cams:
            assert _wait(proc, log, 240) == 0, log.read_text(errors="replace")[-3000:]
    finally:
        server.send_signal(signal.SIGTERM)  # the second window may still be retraining: it is finished first
    assert _wait(server, server_log, 120) == 0, server_log.read_text(errors="replace")[-3000:]

    report = json.loads((tmp_path / "first.json").read_text())
    assert report["first_window"] == 0 and [w["window"] for w in report["windows"]] == [0, 1]
    assert report["rejects"] == [] and report["task"] == "classification"
    logs = {d: json.loads((tmp_path / d / "device_log.json").read_text()) for d in ("cam1", "cam2")}
    # cam2 detects a cut at its second sampled frame of bikes and uploads the 4 frames from there before window 0
    cuts = [rec for rec in logs["cam2"]["windows"] if "scene_cut" in rec]
    assert [(rec["window"], rec["scene_cut"], rec["frames"]) for rec in cuts] == [(0, 1, 4)]
    assert cuts[0]["verified"] and cuts[0]["decision"]["window"] == 0
    assert [(c["device"], c["window"], c["frames"]) for c in report["scene_cuts"]] == [("cam2", 0, 4)]
    assert report["scene_cuts"][0]["delivery"]["kind"] == cuts[0]["delivery"]
    logs = {d: {**log, "windows": [rec for rec in log["windows"] if "scene_cut" not in rec]}
            for d, log in logs.items()}
    with ModelZoo(tmp_path / "zoo") as zoo:
        _zoo_files_consistent(zoo)
        assert zoo.last_window() == 1
        assert [e.id for e in zoo.experts("classification")] == report["zoo"]["active_experts"]
        assert report["zoo"]["active_experts"], "the first window's retrained models joined the zoo (gamma = 1)"
        for device, log in logs.items():
            assert log["failed_windows"] == 0 and len(log["windows"]) == 2
            for w, rec in enumerate(log["windows"]):
                server_side = report["windows"][w]["devices"][device]
                assert rec["verified"] and rec["decision"]["window"] == w
                assert rec["delivery"] == server_side["delivery"]["kind"]
                assert rec["packet_bytes"] == server_side["delivery"]["packet_bytes"]
                assert rec["bytes_received"] >= rec["packet_bytes"]
                expert = server_side["chosen_expert"]
                assert rec["decision"]["expert_id"] == (-1 if expert is None else expert)
                if expert is not None:  # the camera's slot holds exactly the zoo's expert
                    assert rec["decision"]["digest"] == weights_digest(zoo.weights(expert), zoo.manifest(expert))
        assert len(logs["cam1"]["windows"][1]["predicted"]) == 6  # cam1 ran each received model
        reusable = logs["cam1"]["windows"][1]["decision"]["expert_id"]

    # a restart on the same zoo continues it: windows are numbered after the last, experts are served at once
    server, port, server_log = _serve(tmp_path, "second", "--windows", "1", "--expect", "cam1")
    cam, log = _device(tmp_path, port, "cam1", "carphone", 1)
    assert _wait(cam, log, 180) == 0, log.read_text(errors="replace")[-3000:]
    assert _wait(server, server_log, 120) == 0, server_log.read_text(errors="replace")[-3000:]
    report = json.loads((tmp_path / "second.json").read_text())
    assert report["first_window"] == 2 and [w["window"] for w in report["windows"]] == [2]
    rec = json.loads((tmp_path / "cam1" / "device_log.json").read_text())["windows"][0]
    assert rec["verified"] and rec["decision"]["window"] == 2
    if reusable >= 0:  # the expert cam1 ran before the restart is a candidate again (the zoo kept it)
        assert f"expert:{reusable}" in report["windows"][0]["devices"]["cam1"]["accuracy"]
    with ModelZoo(tmp_path / "zoo") as zoo:
        _zoo_files_consistent(zoo)
        assert zoo.last_window() == 2


def _free_port() -> int:
    """A port nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bad_device_input(tmp: Path, case: str) -> tuple[list[str], int, str]:
    keys = write_keys(tmp, ["cam1"])
    args = ["device", "--server", f"127.0.0.1:{_free_port()}", "--device", "cam1", "--keys", str(keys),
            "--out", str(tmp / "out")]
    if case == "unknown clip":
        return [*args, "--clip", "no-such-clip"], 2, "neither a bundled clip"
    if case == "clip that does not decode":
        (tmp / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
        return [*args, "--clip", str(tmp / "broken.mp4")], 2, "does not decode"
    if case == "device without a key":
        return ["device", "--server", "127.0.0.1:1", "--device", "cam9", "--keys", str(keys), "--out",
                str(tmp / "out"), "--clip", "carphone"], 2, "no key for device 'cam9'"
    assert case == "server unreachable"
    return [*args, "--clip", "carphone", "--windows", "1"], 3, "cannot reach the server"


@needs_av
@pytest.mark.parametrize("case", ["unknown clip", "device without a key", "clip that does not decode",
                                  "server unreachable"])
def test_bad_device_input_fails_with_a_message(tmp_path: Path, capsys: pytest.CaptureFixture, case: str) -> None:
    """In process (the command's own entry point; a process would spend its time importing torch)."""
    args, code, message = _bad_device_input(tmp_path, case)
    assert main(args) == code
    err = capsys.readouterr().err
    assert err.startswith("edgert recl device: ") and message in err, err
    assert not (tmp_path / "out" / "device_log.json").exists()


def test_bad_server_input_fails_with_a_message(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "keys.json").write_text(json.dumps({"cam1": "missing.key"}))
    assert main(["serve", "--zoo", str(tmp_path / "zoo"), "--keys", str(tmp_path / "keys.json")]) == 2
    assert "missing.key" in capsys.readouterr().err
    write_keys(tmp_path, ["cam1"])
    (tmp_path / "config.json").write_text(json.dumps({"zoo": {"alpha": -1}}))
    assert main(["serve", "--zoo", str(tmp_path / "zoo"), "--keys", str(tmp_path / "keys.json"), "--config",
                 str(tmp_path / "config.json")]) == 2
    assert "alpha" in capsys.readouterr().err
    assert not (tmp_path / "zoo").exists()


def test_key_files_round_trip_and_bad_ones_are_named(tmp_path: Path) -> None:
    path = write_keys(tmp_path / "k", ["cam1", "cam2"])
    keys = load_keys(path)
    assert sorted(keys) == ["cam1", "cam2"] and len(set(keys.values())) == 2
    assert all(len(k) == 32 for k in keys.values())
    assert (tmp_path / "k" / "cam1.key").stat().st_mode & 0o777 == 0o600
    (tmp_path / "k" / "cam2.key").write_bytes(b"short")
    from edgert.transport.keys import KeyFileError

    with pytest.raises(KeyFileError, match="cam2.key.*16..64 bytes, got 5"):
        load_keys(path)
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(KeyFileError, match="JSON object"):
        load_keys(tmp_path / "bad.json")


def test_serve_flags_go_over_the_config_file(tmp_path: Path) -> None:
    import argparse

    from edgert.recl.service import register_service, serve_config

    parser = argparse.ArgumentParser()
    register_service(parser.add_subparsers(dest="recl_command"))
    (tmp_path / "config.json").write_text(json.dumps(TINY.to_dict()))
    args = parser.parse_args(["serve", "--zoo", "z", "--keys", "k", "--config", str(tmp_path / "config.json"),
                              "--K", "3", "--alpha", "0.1", "--eta", "2", "--q", "50", "--window-s", "20", "--mu", "2",
                              "--budget", "10", "--ray-address", "ray://head:10001"])
    cfg = serve_config(args)
    assert (cfg.K, cfg.odin.top_k, cfg.alpha, cfg.eta, cfg.q, cfg.window_s, cfg.mu) == (3, 3, 0.1, 2, 50, 20.0, 2.0)
    assert cfg.retraining.budget_s == 10.0 and (cfg.executor, cfg.ray_address) == ("ray", "ray://head:10001")
    # the file's settings stay where no flag is given
    assert (cfg.gating.hidden, cfg.history_samples, cfg.gamma) == (64, 16, 1)
    assert cfg.retraining.micro_window_epochs == 2
    assert serve_config(parser.parse_args(["serve", "--zoo", "z", "--keys", "k"])) == RECLConfig()
