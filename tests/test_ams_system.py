"""AMS server + edge over real TCP on localhost with a tiny student and a colour-threshold teacher.

The teacher is a real labelling rule (red-dominant pixels are class 1), the student a two-layer conv net,
the video generated frames of a moving red block; uploads are real libx264 videos and updates real
packets applied by the C++ slot. Time constants are scaled down so a run takes a few seconds.
"""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
from torch import nn

from conftest import needs_av, wait_for
from edgert.ams.config import AMSConfig, EdgeConfig
from edgert.ams.edge import AMSEdge
from edgert.ams.protocol import AMSFrame, Control, Join, SampleUpload, UploadStatus
from edgert.ams.sampling import ASRConfig, ATRConfig
from edgert.ams.server import AMSServer
from edgert.transport import EdgeClient
from edgert.transport.frames import FrameType, encode_frame
from edgert.updates.selection import AdamConfig, SelectionConfig

pytestmark = needs_av
W, H, FPS = 64, 48, 25.0
KEYS = {"cam-1": b"a" * 32, "cam-2": b"b" * 32}


class ColorTeacher:
    """Class 1 where red exceeds green by more than 20 levels."""

    num_classes = 2

    def label(self, frames: np.ndarray) -> np.ndarray:
        f = frames.astype(np.int16)
        return (f[..., 0] > f[..., 1] + 20).astype(np.int64)


class TinyStudent(nn.Module):
    def __init__(self, classes: int = 2) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)))


def _student() -> TinyStudent:
    torch.manual_seed(0)
    return TinyStudent()


def _frames(n: int, offset: int = 0, hook=None):
    for i in range(n):
        if hook is not None:
            hook(i)
        img = np.full((H, W, 3), (40, 120, 60), np.uint8)
        x = ((i + offset) * 2) % (W - 16)
        img[10:30, x:x + 16] = (200, 50, 50)
        yield i / FPS, img


def _config(**kw) -> AMSConfig:
    base = AMSConfig(t_horizon_s=24.0, iterations=4, batch_size=4,
                     selection=SelectionConfig("gradient", 0.2), adam=AdamConfig(lr=0.02),
                     asr=ASRConfig(r_min=1.0, r_max=10.0, r_init=6.0, period_s=1.0),
                     atr=ATRConfig(t_update_s=0.5, step_s=0.2, enter_below=2.5, exit_above=3.5, t_update_max_s=2.0))
    for k, v in kw.items():
        setattr(base, k, v)
    return base


EDGE = EdgeConfig(uplink_kbps=400, preset="ultrafast", apply_lag_s=0.04, lockstep_timeout_s=20,
                  first_model_timeout_s=20)




def _model_bytes(model: nn.Module, server: AMSServer) -> bytes:
    """A model's parameters laid out as the device buffer (for comparing with the slot)."""
    from edgert.updates import DeviceMirror, encode_snapshot

    m = DeviceMirror(server.manifest)
    m.apply(encode_snapshot(server.manifest, 1, {n: p.detach().numpy() for n, p in model.named_parameters()}))
    return m.weights_bytes()


def test_edge_converges_to_the_servers_weights_byte_for_byte():
    student = _student()
    with AMSServer(student, ColorTeacher(), {"cam-1": KEYS["cam-1"]}, _config(), size=(W, H)) as server:
        edge = AMSEdge(server.address, "cam-1", KEYS["cam-1"], student, EDGE)
        report = edge.run(_frames(60), FPS)
        rep = server.report()["cam-1"]
        assert report.frames == 60 and report.uploads == rep["uploads"] >= 4
        assert rep["phases"] == rep["updates"] == report.uploads and rep["uploads_rejected"] == 0
        assert server.models.version_of("cam-1") == 1 + rep["updates"]
        assert report.versions[-1] == server.models.version_of("cam-1")  # lockstep: every update in before the end
        # device slot == server mirror == the edge's active torch model, byte for byte
        slot_bytes = edge.client.slot.weights()[0]
        assert slot_bytes == server.models.weights_bytes("cam-1")
        assert _model_bytes(edge._active, server) == slot_bytes
        # sparse: each phase changed ~20 % of the coordinates
        total = sum(p.numel() for p in student.parameters())
        initial = _model_bytes(student, server)
        changed = np.count_nonzero(np.frombuffer(slot_bytes, np.float32) != np.frombuffer(initial, np.float32))
        assert 0.2 * total * 0.9 <= changed <= total
        dense_packet = 72 + 48 * 2 + 2 * total + 4 + 32
        assert max(rep["update_sizes"].values()) < dense_packet
        assert rep["wire_bytes_from_device"] >= rep["upload_bytes"] > 0
        # training made the student agree with the teacher better than the initial model
        frames = np.stack([f for _, f in _frames(60)])
        labels = ColorTeacher().label(frames)
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
        y = torch.from_numpy(labels)
        with torch.no_grad():
            loss0 = nn.functional.cross_entropy(student(x), y).item()
            loss1 = nn.functional.cross_entropy(edge._active(x), y).item()
        assert loss1 < 0.8 * loss0


@pytest.mark.parametrize("coding", ["int4b", "int8b"])
def test_lossy_block_values_do_not_drift(coding):
    """With lossy values the device, the server's mirror and the server's training copy (which the next phase
    starts from) hold the same bytes after every phase: quantisation error is fed back, never accumulated."""
    student = _student()
    with AMSServer(student, ColorTeacher(), {"cam-1": KEYS["cam-1"]},
                   _config(value_coding=coding, size_codings=("fp16", coding)), size=(W, H)) as server:
        edge = AMSEdge(server.address, "cam-1", KEYS["cam-1"], student, EDGE)
        report = edge.run(_frames(60), FPS)
        rep = server.report()["cam-1"]
        assert rep["updates"] >= 4 and report.versions[-1] == server.models.version_of("cam-1")
        slot_bytes = edge.client.slot.weights()[0]
        assert slot_bytes == server.models.weights_bytes("cam-1")
        assert _model_bytes(edge._active, server) == slot_bytes
        assert _model_bytes(server._devices["cam-1"].model, server) == slot_bytes
        for version, size in rep["update_sizes"].items():
            sizes = rep["coding_sizes"][version]
            assert set(sizes) == {"fp16/f1", "fp16/f2", f"{coding}/f1", f"{coding}/f2"}
            assert size == sizes[f"{coding}/f2"] < sizes["fp16/f2"]  # the packet sent carried the block coding
            assert rep["reference_sizes"][version] > 0
        # the updates are sparse but did change the model (~20 % of the coordinates per phase)
        total = sum(p.numel() for p in student.parameters())
        changed = np.frombuffer(slot_bytes, np.float32) != np.frombuffer(_model_bytes(student, server), np.float32)
        assert 0.2 * total * 0.9 <= np.count_nonzero(changed) <= total


def test_two_devices_share_one_server_with_separate_streams():
    student = _student()
    with AMSServer(student, ColorTeacher(), KEYS, _config(), size=(W, H)) as server:
        edges = {d: AMSEdge(server.address, d, k, student, EDGE) for d, k in KEYS.items()}
        reports = {}
        threads = [threading.Thread(
                       target=lambda d=d, e=e, i=i: reports.__setitem__(d, e.run(_frames(40, offset=7 * i), FPS)))
                   for i, (d, e) in enumerate(edges.items())]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        for d, e in edges.items():
            assert reports[d].uploads >= 3
            assert e.client.slot.weights()[0] == server.models.weights_bytes(d)
        assert server.models.weights_bytes("cam-1") != server.models.weights_bytes("cam-2")
        rep = server.report()
        assert rep["cam-1"]["updates"] >= 3 and rep["cam-2"]["updates"] >= 3


@pytest.mark.slow
def test_server_killed_and_restarted_mid_run(tmp_path):
    student = _student()
    cfg = _config()
    server = AMSServer(student, ColorTeacher(), {"cam-1": KEYS["cam-1"]}, cfg, size=(W, H)).start()
    port = server.address[1]
    state: dict = {}
    edge = AMSEdge(server.address, "cam-1", KEYS["cam-1"], student, EDGE)

    def hook(i: int) -> None:
        if i == 30:  # kill the server: connections reset, all its state lost
            state["before"] = edge.active_version
            server.stop()
            assert wait_for(lambda: not edge.client.connected.is_set())
        if 30 <= i < 40:
            state.setdefault("during", set()).add(edge.active_version)  # inference goes on with the last model
        if i == 40:  # a new server process on the same port
            state["server"] = AMSServer(student, ColorTeacher(), {"cam-1": KEYS["cam-1"]}, cfg, size=(W, H),
                                        port=port).start()
            assert wait_for(lambda: edge.client.connected.is_set() and edge.client.connections >= 2, 15)

    try:
        report = edge.run(_frames(80, hook=hook), FPS)
        new = state["server"]
        assert state["during"] == {state["before"]} and state["before"] > 1
        assert report.frames == 80 and report.reconnects >= 1
        # the device was ahead of the fresh server: it was moved past its version by a snapshot, then trained on
        assert new.models.version_of("cam-1") > state["before"] + 1
        assert wait_for(lambda: edge.client.slot.weights()[0] == new.models.weights_bytes("cam-1"))
        assert new.report()["cam-1"]["updates"] >= 2
    finally:
        server.stop()
        if "server" in state:
            state["server"].stop()


def _raw_client(server: AMSServer, device: str, controls: list) -> EdgeClient:
    client = EdgeClient(server.address, device, KEYS[device],
                        on_connect=lambda: client.send(AMSFrame.JOIN, Join(FPS, W, H).encode()),
                        handlers={AMSFrame.CONTROL: lambda body: controls.append(Control.decode(body))})
    return client.start()


def _video(n: int) -> bytes:
    from edgert.vision.video import encode

    return encode(np.stack([f for _, f in _frames(n)]), fps=5, codec="libx264", preset="ultrafast").data


def test_corrupt_and_inconsistent_uploads_are_rejected_and_the_model_is_kept():
    with AMSServer(_student(), ColorTeacher(), KEYS, _config(), size=(W, H)) as server:
        controls: list[Control] = []
        client = _raw_client(server, "cam-1", controls)
        try:
            assert wait_for(lambda: controls and client.version == 1)
            before = server.models.weights_bytes("cam-1")
            client.send(AMSFrame.SAMPLES, SampleUpload(1, 1.0, [0.0, 0.2, 0.4], b"\x00garbage" * 50).encode())
            client.send(AMSFrame.SAMPLES, SampleUpload(2, 2.0, [1.0, 1.2], _video(3)).encode())  # 2 stamps, 3 frames
            assert wait_for(lambda: len(controls) >= 3)
            assert [c.status for c in controls[1:3]] == [UploadStatus.BAD_VIDEO, UploadStatus.BAD_UPLOAD]
            assert "decod" in controls[1].message and "3 decoded frames" in controls[2].message
            assert server.models.weights_bytes("cam-1") == before and server.models.version_of("cam-1") == 1
            # the session survived: a valid upload is trained on
            client.send(AMSFrame.SAMPLES, SampleUpload(3, 3.0, [2.0, 2.2, 2.4], _video(3)).encode())
            assert wait_for(lambda: len(controls) >= 4 and client.version == 2)
            assert controls[3].status == UploadStatus.OK and controls[3].model_version == 2
            assert server.report()["cam-1"]["uploads_rejected"] == 2
        finally:
            client.stop()


def test_device_disconnecting_mid_upload_is_freed():
    with AMSServer(_student(), ColorTeacher(), KEYS, _config(session_ttl_s=0.0), size=(W, H)) as server:
        controls: list[Control] = []
        client = _raw_client(server, "cam-1", controls)
        assert wait_for(lambda: controls and client.version == 1)
        assert server.active_sessions() == ["cam-1"]
        body = SampleUpload(1, 1.0, [0.0, 0.2, 0.4], _video(3)).encode()
        frame = encode_frame(AMSFrame.SAMPLES, body)
        with client._send_lock:  # half a SAMPLES frame, then the device vanishes
            client._sock.sendall(frame[: len(frame) // 2])
        client.stop()
        assert wait_for(lambda: server.active_sessions() == [], 5)
        assert server.report()["cam-1"]["phases"] == 0 and server.models.version_of("cam-1") == 1
        # the server keeps serving others
        others: list[Control] = []
        other = _raw_client(server, "cam-2", others)
        try:
            assert wait_for(lambda: others and other.version == 1)
        finally:
            other.stop()


def test_dropped_connection_mid_packet_keeps_the_last_model_and_resyncs():
    student = _student()
    with AMSServer(student, ColorTeacher(), {"cam-1": KEYS["cam-1"]}, _config(), size=(W, H)) as server:
        edge = AMSEdge(server.address, "cam-1", KEYS["cam-1"], student, EDGE)

        def hook(i: int) -> None:
            if i == 20:
                v = edge.active_version
                raw = encode_frame(FrameType.PACKET, b"\x00" * 5000)
                assert server.models.inject("cam-1", raw[:2000], close=True)  # half a packet, then the link dies
                assert wait_for(lambda: edge.client.connections >= 2 and edge.client.connected.is_set())
                assert edge.active_version == v

        report = edge.run(_frames(50, hook=hook), FPS)
        assert report.reconnects >= 1 and report.frames == 50
        assert wait_for(lambda: edge.client.slot.weights()[0] == server.models.weights_bytes("cam-1"))


def test_label_space_and_frame_size_mismatches_fail_early():
    with pytest.raises(ValueError, match="student predicts 3 classes but the teacher labels 2"):
        AMSServer(TinyStudent(3), ColorTeacher(), KEYS, _config(), size=(W, H))
    with AMSServer(_student(), ColorTeacher(), KEYS, _config(), size=(W, H)) as server:
        client = EdgeClient(server.address, "cam-1", KEYS["cam-1"],
                            on_connect=lambda: client.send(AMSFrame.JOIN, Join(FPS, 2 * W, H).encode()))
        client.start()
        try:
            assert wait_for(lambda: client.version == 1)
            assert wait_for(lambda: "cam-1" not in server.active_sessions() or client.connections >= 2, 5)
            assert server.report()["cam-1"]["uploads"] == 0
        finally:
            client.stop()


def test_live_edge_never_waits_and_still_converges():
    student = _student()
    live = EdgeConfig(uplink_kbps=400, preset="ultrafast", lockstep=False, pace=True)
    with AMSServer(student, ColorTeacher(), {"cam-1": KEYS["cam-1"]}, _config(), size=(W, H)) as server:
        edge = AMSEdge(server.address, "cam-1", KEYS["cam-1"], student, live)
        t0 = time.monotonic()
        report = edge.run(_frames(40), FPS)
        assert time.monotonic() - t0 >= 39 / FPS  # paced at the source rate
        assert report.frames == 40 and report.uploads >= 3 and report.lockstep_timeouts == 0
        assert len(report.latency_ms) == 40
        # uploads still queued when the device left are dropped with its connection; every phase that ran published
        time.sleep(0.5)
        rep = server.report()["cam-1"]
        assert 2 <= rep["phases"] <= report.uploads and server.active_sessions() == ["cam-1"]
        assert server.models.version_of("cam-1") == 1 + rep["updates"] and rep["updates"] == rep["phases"]
