"""AMS server phases trained as Ray tasks (AMSConfig.executor = "ray"): a real local Ray, a tiny student and a
colour-threshold teacher.

The server plans each phase (minibatches, coordinate set), a task trains the student copy from its
optimizer state, and the server publishes the update: the published packets, the device's weights and the
optimizer state must be bit-identical to the phase trained in the server's worker thread, and two devices'
phases must be in flight (and training) at the same time.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Iterator

import numpy as np
import pytest
import torch
from torch import nn

from conftest import needs_av, needs_ray
from edgert.ams.config import AMSConfig, EdgeConfig
from edgert.ams.protocol import SampleUpload
from edgert.ams.sampling import ASRConfig, ATRConfig
from edgert.ams.server import AMSServer
from edgert.harness.executors import LocalExecutor, RayExecutor, TaskExecutor
from edgert.updates.selection import AdamConfig, SelectionConfig
from test_ams_system import ColorTeacher

pytestmark = needs_ray
W, H, FPS = 64, 48, 25.0
KEYS = {"cam-1": b"a" * 32, "cam-2": b"b" * 32}


class TinyStudent(nn.Module):
    def __init__(self, classes: int = 2) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.d = nn.Dropout2d(0.1)  # random in training: each phase's torch seed must travel with it
        self.b = nn.Conv2d(8, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.d(torch.relu(self.a(x))))


def _student() -> TinyStudent:
    torch.manual_seed(0)
    return TinyStudent()


def _image(i: int) -> np.ndarray:
    img = np.full((H, W, 3), (40, 120, 60), np.uint8)
    x = (i * 2) % (W - 16)
    img[10:30, x:x + 16] = (200, 50, 50)
    return img


def _config(**kw: Any) -> AMSConfig:
    base = AMSConfig(t_horizon_s=24.0, iterations=30, batch_size=4,
                     selection=SelectionConfig("gradient", 0.2), adam=AdamConfig(lr=0.02),
                     asr=ASRConfig(r_min=1.0, r_max=10.0, r_init=6.0, period_s=1.0),
                     atr=ATRConfig(t_update_s=0.5, step_s=0.2, enter_below=2.5, exit_above=3.5, t_update_max_s=2.0))
    for k, v in kw.items():
        setattr(base, k, v)
    return base


def _uploads(device: int, phases: int = 3, per_phase: int = 6) -> list[tuple[SampleUpload, np.ndarray, np.ndarray]]:
    """Each phase's upload (no video: the decoded frames come with it) and the teacher's labels."""
    out = []
    for k in range(phases):
        idx = [7 * device + k * per_phase + i for i in range(per_phase)]
        frames = np.stack([_image(i) for i in idx])
        times = [i / FPS for i in idx]
        out.append((SampleUpload(k + 1, times[-1] + 1 / FPS, times, b""), frames, ColorTeacher().label(frames)))
    return out


@pytest.fixture(scope="module")
def ray_tasks() -> Iterator[RayExecutor]:
    import ray

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test file
    with RayExecutor(num_cpus=2, init_kwargs={"log_to_driver": False}) as tasks:
        tasks.run([(_warm, (0.3,)), (_warm, (0.3,))])  # both workers up, torch and edgert imported
        yield tasks


def _warm(sleep_s: float) -> None:
    import edgert.ams.policies  # noqa: F401

    time.sleep(sleep_s)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """The server trains on one torch thread, as a one-CPU Ray task does (same reductions, same bits)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _state(server: AMSServer) -> dict[str, Any]:
    out = {}
    for d in KEYS:
        dev = server._devices[d]
        opt = dev.optimizer.state_dict()
        out[d] = (server.models.version_of(d), server.models.weights_bytes(d),
                  dict(server.reports[d].update_sizes), opt["steps"],
                  [t.numpy().tobytes() for key in ("exp_avg", "exp_avg_sq", "accumulated") for t in opt[key]],
                  [p.detach().numpy().tobytes() for p in dev.model.parameters()])
    return out


def _run_threaded(cfg: AMSConfig) -> dict[str, Any]:
    server = AMSServer(_student(), ColorTeacher(), KEYS, cfg, size=(W, H))
    try:
        uploads = {d: _uploads(i) for i, d in enumerate(KEYS)}
        for k in range(3):
            for d in KEYS:
                dev = server._device(d)
                up, frames, labels = uploads[d][k]
                server.policy.handle(server, dev, up, frames, labels)
        return _state(server)
    finally:
        server.stop()


def _run_tasks(cfg: AMSConfig, tasks: TaskExecutor) -> tuple[dict[str, Any], AMSServer]:
    server = AMSServer(_student(), ColorTeacher(), KEYS, cfg, size=(W, H), executor=tasks)
    try:
        uploads = {d: _uploads(i) for i, d in enumerate(KEYS)}
        for k in range(3):  # both devices' phase k in flight together, then both landed
            flights = [server._dispatch(tasks, server._device(d), *uploads[d][k]) for d in KEYS]
            for flight in flights:
                server._land(flight, tasks.result(flight.handle))
        return _state(server), server
    finally:
        server.stop()


@pytest.mark.parametrize("trainer", ["ams", "jit"])
def test_a_phase_trained_on_ray_is_bit_identical_to_the_worker_thread(ray_tasks: RayExecutor, one_thread: None,
                                                                      trainer: str) -> None:
    cfg = _config(trainer=trainer, jit_target_miou=0.99)
    threaded = _run_threaded(cfg)
    local, _ = _run_tasks(cfg, LocalExecutor())
    remote, server = _run_tasks(cfg, ray_tasks)
    assert threaded == local == remote
    assert all(threaded[d][0] == 4 for d in KEYS)  # three updates published per device
    assert threaded["cam-1"][1] != threaded["cam-2"][1]
    if trainer == "ams":
        # two devices' phases trained at the same time, in the two workers
        spans = {d: server.reports[d].train_spans for d in KEYS}
        assert all(len(s) == 3 for s in spans.values())
        overlaps = [max(a[0], b[0]) < min(a[1], b[1]) for a, b in zip(spans["cam-1"], spans["cam-2"])]
        assert any(overlaps), spans


def test_executor_setting_is_validated() -> None:
    for bad in ({"executor": "gpu"}, {"max_parallel_phases": 0}, {"ray_cpus_per_phase": 0}, {"ray_num_cpus": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            _config(**bad).validate()
    assert AMSConfig.from_dict(_config(executor="ray", max_parallel_phases=2).to_dict()).max_parallel_phases == 2


def _frames(n: int, offset: int) -> Iterator[tuple[float, np.ndarray]]:
    for i in range(n):
        yield i / FPS, _image(i + offset)


def _two_edges(server: AMSServer) -> dict[str, Any]:
    import threading

    from edgert.ams.edge import AMSEdge

    edge_cfg = EdgeConfig(uplink_kbps=400, preset="ultrafast", apply_lag_s=0.04, lockstep_timeout_s=30,
                          first_model_timeout_s=30)
    edges = {d: AMSEdge(server.address, d, k, _student(), edge_cfg) for d, k in KEYS.items()}
    reports: dict[str, Any] = {}
    threads = [threading.Thread(target=lambda d=d, e=e, i=i: reports.__setitem__(d, e.run(_frames(40, 7 * i), FPS)))
               for i, (d, e) in enumerate(edges.items())]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=90)
    for d, e in edges.items():
        assert reports[d].uploads >= 3
        assert e.client.slot.weights()[0] == server.models.weights_bytes(d)  # the device holds the server's model
    return {d: (server.models.version_of(d), server.models.weights_bytes(d)) for d in KEYS}


@needs_av
def test_the_server_spreads_two_devices_phases_over_ray(ray_tasks: RayExecutor, one_thread: None) -> None:
    """Two lockstep edges over TCP: the worker keeps both devices' phases in flight on Ray, and every device
    ends with the very model the thread-trained server gives it."""
    cfg = _config(iterations=60)
    with AMSServer(_student(), ColorTeacher(), KEYS, cfg, size=(W, H)) as server:
        threaded = _two_edges(server)
        thread_wall = {d: sum(e - s for s, e in server.reports[d].train_spans) for d in KEYS}
    ray_cfg = _config(iterations=60, executor="ray", max_parallel_phases=2)
    with AMSServer(_student(), ColorTeacher(), KEYS, ray_cfg, size=(W, H)) as server:
        # the server made its own executor; Ray was running (the module's), so it joined it and leaves it
        assert isinstance(server.executor, RayExecutor) and not server.executor.owns_ray
        remote = _two_edges(server)
        spans = {d: server.reports[d].train_spans for d in KEYS}
    assert server.executor is None and ray_tasks.slots == 2  # stopped: its executor gone, Ray still up
    assert remote == threaded
    overlapping = sum(max(a[0], b[0]) < min(a[1], b[1]) for a in spans["cam-1"] for b in spans["cam-2"])
    print(f"\nphases: {[len(s) for s in spans.values()]}, overlapping pairs: {overlapping}, train s (thread): "
          f"{thread_wall}, train s (ray): { {d: sum(e - s for s, e in v) for d, v in spans.items()} }")
    assert overlapping >= 1
