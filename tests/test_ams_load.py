"""The machinery of the AMS server load benchmark (bench/bench_ams_load.py) on a tiny student and the colour
teacher of test_ams_system: real server, real devices over TCP on localhost, a scaled T_update. It checks that
updates are delivered and every stage is timed; speed is measured by the benchmark, never asserted here."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from conftest import needs_av
from edgert.ams.config import EdgeConfig
from edgert.ams.server import AMSServer
from edgert.updates.selection import AdamConfig, SelectionConfig
from test_ams_system import FPS, ColorTeacher, H, W, _frames, _student

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # bench/ is a top-level package of the checkout, not installed

from bench.bench_ams_load import (  # noqa: E402
    STAGES,
    device_keys,
    fixed_rate_config,
    phase_stages,
    run_devices,
    sampled_uploads,
)

pytestmark = needs_av
EDGE = EdgeConfig(uplink_kbps=400, preset="ultrafast", lockstep=False, pace=True)


def _config():
    return fixed_rate_config(0.5, rate_fps=10.0, t_horizon_s=24.0, iterations=4, batch_size=4,
                             selection=SelectionConfig("gradient", 0.2), adam=AdamConfig(lr=0.02))


def _clip() -> np.ndarray:
    return np.stack([f for _, f in _frames(50)])


def test_simulated_devices_get_every_update_from_a_real_server():
    student, keys = _student(), device_keys(2)
    with AMSServer(student, ColorTeacher(), keys, _config(), size=(W, H)) as server:
        # the devices wait for their last answers however loaded the machine is (no timing is asserted)
        res = run_devices(server, keys, student, _clip(), FPS, rounds=2, source_fps=10.0, edge_config=EDGE,
                          drain_s=60.0)
        assert res.devices == 2 and res.uploads == 4 and res.dropped == 0
        # every upload was trained on and its update applied on the device before the CONTROL was read
        assert res.updates == res.phases == 4 and len(res.latencies_s) == 4
        assert all(latency > 0 for latency in res.latencies_s)
        assert all(server.models.version_of(d) == 3 for d in keys)
        row = res.to_dict()
        assert row["latency_median_s"] > 0 and row["sustained"] == res.sustained


def test_phase_stages_time_every_stage_of_published_phases():
    student, keys = _student(), device_keys(1)
    uploads, encode_s = sampled_uploads(_clip(), FPS, 3, 0.5, 10.0, EDGE)
    assert len(uploads) == 3 and len(encode_s) == 3 and [u.seq for u in uploads] == [1, 2, 3]
    with AMSServer(student, ColorTeacher(), keys, _config(), size=(W, H)) as server:
        stages = phase_stages(server, "dev-0", keys["dev-0"], uploads)
        assert set(stages) == set(STAGES) and all(len(v) == 2 for v in stages.values())  # first is warm-up
        assert server.models.version_of("dev-0") == 4  # three phases published, each delivered to the device
        assert server.report()["dev-0"]["phases"] == 3
