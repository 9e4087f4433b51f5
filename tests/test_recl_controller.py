"""RECL's controller, safety checker and network delivery (edgert.recl.config / safety / controller / protocol) on
real frames of the bundled clips, labelled by the real ImageNet MobileNetV2 teacher (ClassificationTask).

Scenes (128x96, the workload's geometry): ``car`` (carphone: the teacher says "Windsor tie" for ~97 % of the
frames), ``street`` (bikes: mostly "other") and ``stage`` (iscc-demo: "front curtain", "home theater", "torch",
"other"). Windows are tiny (10 frames, a few micro-windows of a few epochs) so the whole file runs in well under
two minutes on two busy cores; the teacher's labels are cached by frame content across tests (the frames repeat).
"""
from __future__ import annotations

import importlib.util
import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import edgert._edgert as _edgert
from conftest import needs_av, needs_cv2, needs_imagenet
from edgert.recl.config import RECLConfig
from edgert.recl.controller import RECLController, WindowReport, weights_digest
from edgert.recl.gating import FrameEncoder, GatingConfig, GatingNetwork
from edgert.recl.odin import OdinConfig
from edgert.recl.protocol import (
    Delivery,
    FrameCodec,
    RECLDevice,
    RECLServer,
    RejectCode,
    WindowRejected,
    WindowUpload,
    choose_packet,
)
from edgert.recl.safety import CURRENT, expert_key
from edgert.recl.scheduler import SchedulerConfig
from edgert.recl.zoo import ModelZoo, ZooConfig
from edgert.updates import encode_snapshot, encode_update
from edgert.updates.weights import module_manifest, module_weights

pytestmark = [needs_av, needs_imagenet, needs_cv2]

SIZE = (128, 96)  # width, height
N = 10  # frames per device window
KEYS = {"cam1": b"k" * 32, "cam2": b"q" * 32, "cam3": b"z" * 32}


@pytest.fixture(scope="module", autouse=True)
def _one_thread_module():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def scenes() -> dict[str, np.ndarray]:
    from edgert.data import clip_path
    from edgert.vision.video import read_clip

    def clip(name: str, fps: float, start_s: float = 0.0) -> np.ndarray:
        return read_clip(clip_path(name), SIZE, start_s=start_s, fps=fps, max_frames=3 * N)[0]

    return {"car": clip("carphone", 8), "street": clip("bikes", 8), "stage": clip("iscc-demo", 2, start_s=5)}


def _window(scenes: dict[str, np.ndarray], scene: str, part: int) -> np.ndarray:
    return scenes[scene][part * N:(part + 1) * N]


@pytest.fixture(scope="module")
def task() -> Any:
    from edgert.recl.tasks import ClassificationTask

    class LabelCache(ClassificationTask):
        """The real teacher, asked once per distinct frame."""

        cache: dict[bytes, int] = {}
        teacher_frames = 0

        def label(self, frames: np.ndarray) -> np.ndarray:
            keys = [FrameEncoder.key(f) for f in frames]
            missing = [i for i, k in enumerate(keys) if k not in self.cache]
            if missing:
                for i, y in zip(missing, super().label(frames[missing])):
                    self.cache[keys[i]] = int(y)
                type(self).teacher_frames += len(missing)
            return np.array([self.cache[k] for k in keys], np.int64)

    return LabelCache()


@pytest.fixture(scope="module")
def encoder() -> FrameEncoder:
    return FrameEncoder((112, 112))


RETRAIN = SchedulerConfig(window_s=8, micro_window_s=1, micro_window_epochs=6)
GATING = GatingConfig(hidden=64, train_steps=60, finetune_steps=30, history_samples=16)


def _config(zoo: ZooConfig, **settings: Any) -> RECLConfig:
    parts = {"retraining": RETRAIN, "gating": GATING, "history_per_window": 8,
             "odin": OdinConfig(input_size=(32, 32), channels=(8, 16), latent_dim=8, train_steps=20)}
    return RECLConfig(zoo=zoo, **{**parts, **settings})


def _controller(task: Any, root: Path, encoder: FrameEncoder, zoo_config: ZooConfig, **settings: Any
                ) -> RECLController:
    zoo = ModelZoo(root, zoo_config)
    cfg = _config(zoo_config, **settings)
    gating = GatingNetwork((), cfg.gating, encoder) if cfg.selection == "gating" else None
    return RECLController(task, zoo, cfg, gating=gating)


def _constant_expert(task: Any, cls: int, seed: int = 0, shift: float = 0.0) -> torch.nn.Module:
    """The generic expert of ``seed`` with its classifier bias rigged to always answer ``cls`` (only the 16 bias
    values differ from ``task.new_expert(seed)``); ``shift`` is added to every parameter first (then every
    coordinate differs from any other seed's, BatchNorm's affine parameters included)."""
    model = task.new_expert(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(shift)
        bias = model.classifier[1].bias
        bias.fill_(-50.0)
        bias[cls] = 50.0
    return model


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


# ----------------------------------------------------------------------------------------------------- config


def test_config_composes_the_parts_and_round_trips() -> None:
    cfg = RECLConfig()
    assert (cfg.window_s, cfg.K, cfg.q, cfg.selection, cfg.scheduler) == (30.0, 10, 3000, "gating", "recl")
    assert (cfg.alpha, cfg.gamma, cfg.eta, cfg.mu) == (cfg.zoo.alpha, cfg.zoo.gamma, cfg.zoo.eta,
                                                        cfg.retraining.micro_window_s)
    built = RECLConfig.build(window_s=20, mu=5, K=3, alpha=0.1, gamma=2, q=50, history_samples=8, reuse=False)
    assert (built.retraining.window_s, built.retraining.micro_window_s, built.gating.top_k, built.odin.top_k) == \
        (20, 5, 3, 3)
    assert (built.zoo.alpha, built.zoo.gamma, built.zoo.q, built.gating.history_samples, built.reuse) == \
        (0.1, 2, 50, 8, False)
    assert RECLConfig.from_dict(json.loads(json.dumps(built.to_dict()))) == built
    assert built.replace(K=4, selection="oracle").K == 4 and built.replace(K=4).alpha == 0.1
    with pytest.raises(ValueError, match="unknown RECL setting 'windw_s'"):
        RECLConfig.build(windw_s=3)
    with pytest.raises(ValueError, match="belongs to"):
        RECLConfig.build(lr=0.1)  # the gating network's and ODIN's: ambiguous
    for bad in ({"selection": "best"}, {"scheduler": "fifo"}, {"holdout": 1.0}, {"executor": "dask"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            RECLConfig(**bad)
    with pytest.raises(ValueError, match="unknown settings"):
        RECLConfig.from_dict({"zoo": {"alpha": 0.1, "beta": 2}})


# -------------------------------------------------------------------------------------------------- controller


def test_controller_chooses_retrains_admits_reuses_and_prunes(task: Any, scenes: dict, encoder: FrameEncoder,
                                                             tmp_path: Path) -> None:
    """Two cameras: cam1 on the car, cam2 on the street; then cam1 moves to the street, which only cam2 has seen,
    and cam2 to a new scene (the stage). gamma = 2 (both first experts join together), eta = 1 over the last q = 2
    selections."""
    ctl = _controller(task, tmp_path, encoder, ZooConfig(alpha=0.05, gamma=2, eta=1, q=2))
    reports: list[WindowReport] = []
    decisions: list[tuple[str, str]] = []
    heads: list[list[int]] = []
    counts: list[dict[int, int]] = []
    plan = [{"cam1": ("car", 0), "cam2": ("street", 0)},
            {"cam1": ("car", 1), "cam2": ("street", 1)},
            {"cam1": ("street", 2), "cam2": ("stage", 0)}]
    for w, devices in enumerate(plan):
        frames = {d: _window(scenes, s, p) for d, (s, p) in devices.items()}
        rep = ctl.run_window(frames, on_decision=lambda dec: decisions.append((dec.device, dec.key)))
        reports.append(rep)
        heads.append(list(ctl.gating.expert_ids) if ctl.gating is not None else [])
        counts.append(ctl.zoo.selection_counts("classification", last=100))
        assert rep.window == w and set(rep.devices) == {"cam1", "cam2"}
        json.dumps(rep.to_dict())  # the evaluation writes it
        for r in rep.devices.values():  # every decision is the best measured model, never worse than before
            assert r.chosen_accuracy == max(r.accuracy.values()) >= r.before_accuracy
    r0, r1, r2 = reports

    # window 0: empty zoo, only the devices' own (generic) models; both retrain and both are promising
    for r in r0.devices.values():
        assert r.candidates == [] and r.chosen == CURRENT and r.retrain_start == CURRENT
        assert r.retrained_final > r.retrained_initial and r.promising and r.queued
    assert len(r0.admitted) == 2 and r0.experts == 2  # gamma = 2: they join together
    assert heads[0] == r0.admitted  # the gating network has one output per expert
    assert r0.gating_update[0]["added"] == r0.admitted and r0.gating_update[0]["steps"] == GATING.train_steps
    assert r0.schedule["used_units"] <= r0.schedule["budget_units"] == RETRAIN.budget_units()
    car_expert, street_expert = (next(e.id for e in ctl.zoo.experts(active_only=False) if e.device == d)
                                 for d in ("cam1", "cam2"))

    # window 1: each device's own new expert (its last retrained model) beats the generic model it runs
    for d, own in (("cam1", car_expert), ("cam2", street_expert)):
        r = r1.devices[d]
        assert set(r.candidates) == {car_expert, street_expert}
        assert r.chosen_expert == own and r.chosen_accuracy > r.before_accuracy, (d, r.accuracy)
        assert r.retrain_start == expert_key(own)
    assert counts[1] == {car_expert: 1, street_expert: 1}  # the selection history pruning counts
    assert ctl.zoo.accuracy_table("classification", ["cam1/1"]).accuracy.shape == (1, len(ctl.zoo.experts()))

    # window 2: cam1 comes to the street, a scene only cam2 has seen: it gets cam2's expert, far better than its own
    r = r2.devices["cam1"]
    assert r.chosen_expert == street_expert and r.before == expert_key(car_expert)
    assert r.chosen_accuracy >= r.before_accuracy + 0.5, r.accuracy
    assert r2.devices["cam2"].chosen_expert != car_expert
    # the car expert was not chosen in the last q = 2 selections: pruned, its gating output gone
    assert car_expert in r2.pruned and ctl.zoo.expert(car_expert).status == "pruned"
    assert car_expert in heads[1] and car_expert not in heads[2]
    assert ctl.devices["cam1"].expert_id == street_expert

    # decisions were handed out in order, one per device window, before retraining
    assert decisions == [(d, rep.devices[d].chosen) for rep in reports for d in ("cam1", "cam2")]
    cost = r2.cost
    assert cost.label_s > 0 and cost.gating_s > 0 and cost.safety_s > 0 and cost.retrain_s > 0
    assert cost.total_s >= cost.label_s + cost.gating_s + cost.safety_s + cost.retrain_s
    assert r0.cost.gating_update_s > 0 and cost.retrain_compute_s == RETRAIN.budget_units() * RETRAIN.micro_window_s
    ctl.zoo.close()


MODES = {
    "recl": {},
    "oracle": {"selection": "oracle"},
    "odin": {"selection": "odin"},
    "ams": {"selection": "none", "reuse": False, "scheduler": "round_robin"},
    "ekya": {"selection": "none", "reuse": False, "scheduler": "ekya"},
    "one_time": {"retrain": False},
}


@pytest.fixture(scope="module")
def mode_runs(task: Any, scenes: dict, encoder: FrameEncoder, tmp_path_factory: pytest.TempPathFactory
              ) -> dict[str, list[WindowReport]]:
    """Every mode through the same controller over the same windows: two windows on their own scene, then the
    cameras swap scenes (each comes to a scene the other one has seen)."""
    plan = [{"cam1": ("car", 0), "cam2": ("street", 0)},
            {"cam1": ("car", 1), "cam2": ("street", 1)},
            {"cam1": ("street", 2), "cam2": ("car", 2)}]
    runs = {}
    for mode, settings in MODES.items():
        ctl = _controller(task, tmp_path_factory.mktemp(mode), encoder, ZooConfig(alpha=0.05, gamma=1), **settings)
        runs[mode] = [ctl.run_window({d: _window(scenes, s, p) for d, (s, p) in w.items()}) for w in plan]
        OWNERS[mode] = {e.id: e.device for e in ctl.zoo.experts(active_only=False)}
        ctl.zoo.close()
    return runs


OWNERS: dict[str, dict[int, str]] = {}  # mode -> expert id -> the device whose frames trained it


def test_baseline_modes_run_through_the_same_controller(mode_runs: dict[str, list[WindowReport]]) -> None:
    for mode, reports in mode_runs.items():
        assert [r.window for r in reports] == [0, 1, 2], mode
        assert all(r.scheduler == (MODES[mode].get("scheduler", "recl")) for r in reports)
        for r in reports:
            json.dumps(r.to_dict())
            for d in r.devices.values():
                assert d.chosen_accuracy == max(d.accuracy.values()), (mode, d)
        if MODES[mode].get("selection") == "none":  # no reuse: a device only ever sees models of its own frames
            owners = OWNERS[mode]
            for r in reports:
                for d in r.devices.values():
                    assert all(owners[e] == d.device for e in d.candidates), (mode, d)
                    assert d.chosen_expert is None or owners[d.chosen_expert] == d.device, (mode, d)
    # oracle tests every active expert
    for r in mode_runs["oracle"][1:]:
        for d in r.devices.values():
            assert sorted(d.candidates) == sorted(k for k in range(1, 100) if expert_key(k) in d.accuracy
                                                  and k in d.candidates)
            assert len(d.candidates) == r.experts - len(r.admitted) or len(d.candidates) >= 2
    # Ekya profiles before it schedules (charged to the budget); round robin splits evenly
    assert all(r.schedule["profile_units"] > 0 for r in mode_runs["ekya"])
    for r in mode_runs["ams"]:
        mw = list(r.schedule["micro_windows"].values())
        assert max(mw) - min(mw) <= 1
    # one-time adaptation: a device retrains in its first window only
    one = mode_runs["one_time"]
    assert all(d.retrain_start is not None for d in one[0].devices.values())
    assert all(d.retrain_start is None and d.micro_windows == 0 for r in one[1:] for d in r.devices.values())
    assert all(r.cost.retrain_compute_s == 0 for r in one[1:])  # nominal compute: no wall-clock threshold


def test_the_controller_serves_the_least_recently_trained_device_first(mode_runs: dict[str, list[WindowReport]]
                                                                       ) -> None:
    """Every window's service order is the devices with a job, least recently trained first (never trained first,
    then by when their last micro-window ended; ties in the order the devices came)."""
    for mode, reports in mode_runs.items():
        last: dict[str, tuple[int, float]] = {}
        for r in reports:
            jobs = [d for d, rep in r.devices.items() if rep.retrain_start is not None]
            if not jobs:
                continue
            assert r.schedule["order"] == sorted(jobs, key=lambda d: last.get(d, (-1, -1.0))), (mode, r.window)
            for d in jobs:
                if r.devices[d].retrain_trace:
                    last[d] = (r.window, r.devices[d].retrain_trace[-1]["end_s"])


@pytest.mark.parametrize("scheduler", ["recl", "round_robin"])
def test_a_window_with_one_micro_window_trains_the_devices_in_turn(task: Any, scenes: dict, encoder: FrameEncoder,
                                                                  tmp_path: Path, scheduler: str) -> None:
    """One micro-window per window for two cameras: the controller's order rotates, so each camera trains in one
    of two windows (served in the order they came, cam1 would train in both and cam2 never)."""
    one = SchedulerConfig(window_s=1, micro_window_s=1, micro_window_epochs=1)
    ctl = _controller(task, tmp_path, encoder, ZooConfig(), selection="none", reuse=False, scheduler=scheduler,
                      retraining=one)
    trained = []
    for part in range(2):
        r = ctl.run_window({"cam1": _window(scenes, "car", part), "cam2": _window(scenes, "street", part)})
        trained.append(sorted(d for d, rep in r.devices.items() if rep.micro_windows > 0))
    ctl.zoo.close()
    assert trained == [["cam1"], ["cam2"]]


def test_reuse_beats_continuous_retraining_when_cameras_swap_scenes(mode_runs: dict[str, list[WindowReport]]
                                                                    ) -> None:
    swap = {mode: reports[2] for mode, reports in mode_runs.items()}
    ams = swap["ams"].mean_chosen_accuracy
    for mode in ("recl", "oracle"):
        rep = swap[mode]
        for d in rep.devices.values():  # each camera gets the other camera's expert, better than its own model
            assert d.chosen_expert is not None and not d.chosen_source.startswith(f"retrained:{d.device}/"), d
            assert d.chosen_accuracy >= d.before_accuracy + 0.2, (mode, d.device, d.accuracy)
        assert rep.mean_chosen_accuracy >= ams + 0.2, (mode, rep.mean_chosen_accuracy, ams)
    # ODIN picks by the frames' embedding clusters: it finds the car expert for the car frames at least
    odin = swap["odin"].devices["cam2"]
    assert odin.chosen_accuracy >= swap["ams"].devices["cam2"].chosen_accuracy + 0.2, odin.accuracy


# ----------------------------------------------------------------------------------------- damaged experts


def test_a_damaged_expert_is_skipped_and_the_next_best_served(task: Any, scenes: dict, encoder: FrameEncoder,
                                                              tmp_path: Path) -> None:
    no_training = SchedulerConfig(window_s=8, micro_window_s=1, budget_s=0)  # only the rigged experts compete
    ctl = _controller(task, tmp_path, encoder, ZooConfig(), selection="oracle", retraining=no_training)
    zoo = ctl.zoo
    frames = _window(scenes, "car", 1)
    counts = np.bincount(task.label(frames), minlength=16)
    top, second = (int(c) for c in np.argsort(counts)[::-1][:2])
    assert counts[top] > counts[second] > 0
    best = zoo.add_expert(_constant_expert(task, top), task=task.name, tag=task.tag, device="seed", window=0)
    runner = zoo.add_expert(_constant_expert(task, second, seed=3), task=task.name, tag=task.tag, device="seed",
                            window=0)
    _flip_byte(zoo.weights_dir / best.file, best.size // 2)  # before the window: found while measuring
    served: list[str] = []
    rep = ctl.run_window({"cam1": frames}, on_decision=lambda d: served.append(d.digest))
    r = rep.devices["cam1"]
    assert r.micro_windows == 0 and ctl.devices["cam1"].retrained is None
    assert best.id in r.skipped and "fails its checksum" in r.skipped[best.id]
    assert zoo.expert(best.id).status == "quarantined" and rep.quarantined == [best.id]
    assert expert_key(best.id) not in r.accuracy
    assert r.chosen_expert == runner.id and r.chosen_accuracy > r.before_accuracy
    assert served == [weights_digest(zoo.weights(runner.id), ctl.manifest)]

    # damaged after the measurement, right before it is handed out: the next best is served instead
    best2 = zoo.add_expert(_constant_expert(task, top, seed=5), task=task.name, tag=task.tag, device="seed",
                           window=0)
    evaluate = ctl.safety.evaluate

    def evaluate_then_damage(*args: Any, **kwargs: Any) -> Any:
        result = evaluate(*args, **kwargs)
        assert result.best == expert_key(best2.id)
        _flip_byte(zoo.weights_dir / best2.file, 100)
        return result

    ctl.safety.evaluate = evaluate_then_damage  # type: ignore[method-assign]
    served.clear()
    rep = ctl.run_window({"cam1": frames}, on_decision=lambda d: served.append(d.digest))
    r = rep.devices["cam1"]
    assert best2.id in r.skipped and zoo.expert(best2.id).status == "quarantined" and rep.quarantined == [best2.id]
    assert r.accuracy[expert_key(best2.id)] > r.accuracy[expert_key(runner.id)]  # it was the best measured
    assert r.chosen == expert_key(runner.id) and r.before == r.chosen  # the runner-up stays: nothing to send
    assert served == [weights_digest(zoo.weights(runner.id), ctl.manifest)]
    assert zoo.selection_counts(task.name) == {runner.id: 2}

    # the expert the device runs is damaged: the device's own copy is measured instead, and it keeps it
    ctl.safety.evaluate = evaluate  # type: ignore[method-assign]
    runner_digest = weights_digest(zoo.weights(runner.id), ctl.manifest)
    _flip_byte(zoo.weights_dir / runner.file, runner.size // 3)
    served.clear()
    rep = ctl.run_window({"cam1": frames}, on_decision=lambda d: served.append(d.digest))
    r = rep.devices["cam1"]
    assert runner.id in r.skipped and r.before == CURRENT == r.chosen and set(r.accuracy) == {CURRENT}
    assert served == [runner_digest] and ctl.devices["cam1"].expert_id is None
    assert zoo.experts(task.name) == []
    zoo.close()


def test_gating_learns_experts_it_never_saw(task: Any, scenes: dict, encoder: FrameEncoder, tmp_path: Path) -> None:
    """A zoo seeded before the controller started: at the first window the gating network gets an output per
    expert, trained on their measured accuracy on the window's frames, and shortlists the right one."""
    no_training = SchedulerConfig(window_s=8, micro_window_s=1, budget_s=0)
    ctl = _controller(task, tmp_path, encoder, ZooConfig(), retraining=no_training)
    near = ctl.zoo.add_expert(_constant_expert(task, 0), task=task.name, tag=task.tag, device="seed", window=0)
    far = ctl.zoo.add_expert(_constant_expert(task, 15, seed=2), task=task.name, tag=task.tag, device="seed",
                             window=0)
    rep = ctl.run_window({"cam1": _window(scenes, "car", 0), "cam2": _window(scenes, "street", 0)})
    (update,) = rep.gating_update
    assert update["reason"] == "sync" and update["added"] == [near.id, far.id] and update["steps"] > 0
    assert update["measured_frames"] == 4 * N  # two experts on two device windows; no history yet
    assert rep.cost.gating_update_s > 0 and ctl.gating is not None and ctl.gating.expert_ids == [near.id, far.id]
    assert rep.devices["cam1"].candidates == [near.id, far.id] and rep.devices["cam1"].chosen_expert == near.id
    assert rep.devices["cam2"].candidates == [far.id, near.id] and rep.devices["cam2"].chosen_expert == far.id
    assert ctl.zoo.accuracy_table(task.name, ["cam1/0"]).accuracy[0].tolist() == pytest.approx(
        [rep.devices["cam1"].accuracy[expert_key(near.id)], rep.devices["cam1"].accuracy[expert_key(far.id)]])
    ctl.zoo.close()


# ------------------------------------------------------------------------------------------- packets, frames


def test_delta_or_snapshot_whichever_is_smaller_and_exact(task: Any) -> None:
    generic = module_weights(task.new_expert(0))
    man = module_manifest(task.new_expert(0), tag=task.tag)
    near = module_weights(_constant_expert(task, 3))  # 16 bias values differ
    other = module_weights(_constant_expert(task, 3, seed=1))  # another init: all but BatchNorm's affine differ
    far = module_weights(_constant_expert(task, 3, seed=1, shift=1e-3))  # every coordinate differs
    assert choose_packet(man, generic, dict(generic), 1).delivery == Delivery.UNCHANGED
    small = choose_packet(man, generic, near, 1)
    assert small.delivery == Delivery.DELTA and small.changed_coordinates <= 16
    assert small.packet_bytes < small.snapshot_bytes / 100
    big = choose_packet(man, generic, far, 1)
    assert big.delivery == Delivery.SNAPSHOT and big.packet_bytes == big.snapshot_bytes <= big.delta_bytes
    mid = choose_packet(man, generic, other, 1)  # the unchanged BatchNorm tensors stay out of the delta
    assert mid.delivery == Delivery.DELTA and mid.packet_bytes < mid.snapshot_bytes
    assert mid.changed_coordinates < sum(t.numel for t in man.tensors) == big.changed_coordinates
    # the delta is exact on a real slot: its buffer equals the target bit for bit
    slot = _edgert.Slot(man.to_bytes())
    slot.apply(encode_snapshot(man, 1, generic).data)
    slot.apply(encode_update(man, 1, 2, small.updates, "fp32").data)
    assert bytes(slot.weights()[0]) == b"".join(near[t.name].tobytes() for t in man.tensors)


@pytest.mark.parametrize("codec", list(FrameCodec))
def test_window_frames_round_trip(scenes: dict, codec: FrameCodec) -> None:
    frames = _window(scenes, "street", 0)[:4]
    upload = WindowUpload.decode(WindowUpload.of(7, frames, codec).encode())
    assert (upload.seq, upload.count, upload.width, upload.height) == (7, 4, *SIZE)
    back = upload.frames()
    assert back.shape == frames.shape
    if codec == FrameCodec.PNG:
        np.testing.assert_array_equal(back, frames)
    else:
        assert np.abs(back.astype(int) - frames).mean() < 6
    body = WindowUpload.of(7, frames, codec).encode()
    with pytest.raises(ValueError, match="truncated|does not|decoded 2 frames|decode"):
        WindowUpload.decode(body[:len(body) // 2]).frames()  # half the frames' bytes


# ---------------------------------------------------------------------------------------------- the network


def _seeded_server(task: Any, root: Path, **settings: Any) -> tuple[RECLController, RECLServer, dict[str, int]]:
    """A server whose zoo holds two rigged experts: 'near' (the generic expert answering the car's majority class:
    16 bias values away from every device's model) and 'far' (another seed answering 'other', the street's)."""
    zoo = ModelZoo(root, ZooConfig(alpha=0.05, gamma=1))
    cfg = _config(zoo.config, selection="oracle", **settings)
    ctl = RECLController(task, zoo, cfg)
    near = zoo.add_expert(_constant_expert(task, 0), task=task.name, tag=task.tag, device="seed", window=0)
    far = zoo.add_expert(_constant_expert(task, 15, seed=2, shift=1e-3), task=task.name, tag=task.tag,
                         device="seed", window=0)
    server = RECLServer(ctl, KEYS, expected={"cam1", "cam2"}, gather_s=30.0)
    return ctl, server, {"near": near.id, "far": far.id}


def _expected_digest(ctl: RECLController, device: str) -> str:
    return weights_digest(ctl.devices[device].weights, ctl.manifest)


def test_server_and_devices_exchange_windows_and_models(task: Any, scenes: dict, tmp_path: Path) -> None:
    ctl, server, seeded = _seeded_server(task, tmp_path)
    with server, RECLDevice(server.address, "cam1", KEYS["cam1"]) as cam1, \
            RECLDevice(server.address, "cam2", KEYS["cam2"], codec="jpeg") as cam2:
        assert cam1.wait_ready() and cam2.wait_ready()
        generic = weights_digest(ctl.generic, ctl.manifest)
        assert cam1.weights_digest() == cam2.weights_digest() == generic  # version 1: the generic expert
        plan = [("car", "street"), ("car", "street"), ("street", "car")]
        seen: list[dict[str, Any]] = []
        for w, (s1, s2) in enumerate(plan):
            seqs = {cam1: cam1.send_window(_window(scenes, s1, w)), cam2: cam2.send_window(_window(scenes, s2, w))}
            answers = {dev.device_id: dev.wait(seq, timeout=60) for dev, seq in seqs.items()}
            rep = server.wait_reports(w + 1)[w]
            for dev in (cam1, cam2):
                a, r = answers[dev.device_id], rep.devices[dev.device_id]
                assert a.verified and a.frame.window == w
                assert a.frame.digest.hex() == dev.weights_digest() == _expected_digest(ctl, dev.device_id)
                assert a.frame.expert_id == (r.chosen_expert if r.chosen_expert is not None else -1)
                if r.chosen_expert is not None:  # the device runs exactly the zoo's expert
                    assert dev.weights_digest() == weights_digest(ctl.zoo.weights(r.chosen_expert), ctl.manifest)
                assert r.delivery["kind"] == a.frame.delivery.name.lower()
                assert a.frame.version == dev.version == server.models.version_of(dev.device_id)
            seen.append({d: (r.chosen, r.delivery["kind"], r.delivery["packet_bytes"], r.delivery["snapshot_bytes"])
                         for d, r in rep.devices.items()})
        # window 0: cam1 (car) gets 'near', 16 bias values away from its generic model: a tiny delta
        key, kind, nbytes, snap = seen[0]["cam1"]
        assert key == expert_key(seeded["near"]) and kind == "delta" and nbytes < snap / 100
        # cam2 (street): 'far' answers its majority class; every tensor differs from its model: a snapshot
        key, kind, nbytes, snap = seen[0]["cam2"]
        assert key == expert_key(seeded["far"]) and kind == "snapshot" and nbytes == snap
        # an unchanged model costs nothing; windows 1 and 2 deliver what the controller decided
        assert all(k != "unchanged" or b == 0 for s in seen for (_, k, b, _) in s.values())
        assert ctl.reports[-1].devices["cam2"].chosen_accuracy > 0.5  # cam2 came to the car scene

        # a device that lost its model (unknown model id: a fresh slot) gets the manifest and a full snapshot
        cam1.stop()
        with RECLDevice(server.address, "cam1", KEYS["cam1"]) as fresh:
            assert fresh.wait_ready()
            assert fresh.weights_digest() == _expected_digest(ctl, "cam1")
            assert fresh.version == server.models.version_of("cam1")
            assert fresh.client.bytes_received >= seen[0]["cam2"][3]  # at least one snapshot's bytes
    ctl.zoo.close()


def test_bad_windows_are_rejected_and_change_nothing(task: Any, scenes: dict, tmp_path: Path) -> None:
    ctl, server, seeded = _seeded_server(task, tmp_path, retrain=False)
    near = ctl.zoo.expert(seeded["near"])
    with server, RECLDevice(server.address, "cam1", KEYS["cam1"]) as cam1:
        assert cam1.wait_ready()

        def rejected(send: Any) -> RejectCode:
            before = (cam1.weights_digest(), cam1.version, ctl.next_window, len(server.reports))
            with pytest.raises(WindowRejected) as info:
                cam1.wait(send(), timeout=30)
            assert (cam1.weights_digest(), cam1.version, ctl.next_window, len(server.reports)) == before
            return info.value.reject.code

        frames = _window(scenes, "car", 0)
        empty = np.zeros((0, SIZE[1], SIZE[0], 3), np.uint8)
        assert rejected(lambda: cam1.send_window(empty)) == RejectCode.EMPTY
        garbage = WindowUpload(41, FrameCodec.PNG, 1, *SIZE, struct.pack("<I", 5) + b"nopng").encode()
        assert rejected(lambda: (cam1.send_raw(garbage), 41)[1]) == RejectCode.BAD_FRAMES
        bad_video = WindowUpload(42, FrameCodec.H264, 2, *SIZE, b"\x1aE\xdf\xa3" + bytes(64)).encode()
        assert rejected(lambda: (cam1.send_raw(bad_video), 42)[1]) == RejectCode.BAD_FRAMES
        lying = WindowUpload.of(43, frames[:3]).encode()  # 3 frames in the payload, 4 announced
        lying = lying[:10] + struct.pack("<H", 4) + lying[12:]
        assert rejected(lambda: (cam1.send_raw(lying), 43)[1]) == RejectCode.BAD_FRAMES
        assert rejected(lambda: (cam1.send_raw(struct.pack("<HBBI", 9, 1, 0, 44)), 44)[1]) == RejectCode.BAD_WINDOW
        assert rejected(lambda: cam1.send_window(frames[:1])) == RejectCode.BAD_WINDOW  # retraining needs 2
        assert server.reports == [] and len(server.rejects) == 6

        # a damaged expert is never served: 'near' would win on the car frames; it fails its checksum
        _flip_byte(ctl.zoo.weights_dir / near.file, near.size // 2)
        seq = cam1.send_window(frames)
        # cam2 never uploads: a second window of cam1 while the first waits is BUSY
        assert rejected(lambda: cam1.send_window(frames)) == RejectCode.BUSY
        server.close_window()
        answer = cam1.wait(seq, timeout=60)
        r = server.wait_reports(1)[0].devices["cam1"]
        assert near.id in r.skipped and ctl.zoo.expert(near.id).status == "quarantined"
        assert r.chosen_expert != near.id and answer.frame.expert_id != near.id
        assert cam1.weights_digest() != weights_digest(
            {k: v for k, v in module_weights(_constant_expert(task, 0)).items()}, ctl.manifest)
        assert answer.verified and cam1.weights_digest() == _expected_digest(ctl, "cam1")
        # after the first window the frame size is fixed: another size is rejected up front
        small = np.zeros((4, 48, 64, 3), np.uint8)
        assert rejected(lambda: cam1.send_window(small)) == RejectCode.BAD_WINDOW

        # a window the controller fails on is rejected, and the device keeps its model
        def broken(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("the trainer is gone")

        ctl.run_window = broken  # type: ignore[method-assign]

        def failing() -> int:
            seq = cam1.send_window(frames)
            server.close_window()
            return seq

        assert rejected(failing) == RejectCode.FAILED
        assert "the trainer is gone" in server.rejects[-1][1].message
    ctl.zoo.close()


def test_a_scene_cut_upload_is_answered_at_once_with_a_selection(task: Any, scenes: dict, tmp_path: Path) -> None:
    ctl, server, seeded = _seeded_server(task, tmp_path, retrain=False)
    with server, RECLDevice(server.address, "cam1", KEYS["cam1"]) as cam1:
        assert cam1.wait_ready()
        # no window is gathered (cam2 never uploads): the selection answers on its own, one frame is enough
        seq = cam1.send_window(_window(scenes, "car", 0)[:1], scene_cut=True)
        answer = cam1.wait(seq, timeout=60)
        assert answer.verified and answer.frame.expert_id == seeded["near"]
        assert cam1.weights_digest() == weights_digest(ctl.zoo.weights(seeded["near"]), ctl.manifest)
        assert answer.frame.window == 0 and ctl.next_window == 0 and server.reports == []
        assert [d.key for d in server.reselections] == [expert_key(seeded["near"])]
        assert server.reselections[0].report.delivery["kind"] == "delta"
        # unknown flags are refused by the parser, and nothing changes
        body = bytearray(WindowUpload.of(50, _window(scenes, "car", 0)[:2], scene_cut=True).encode())
        body[3] = 0x03
        cam1.send_raw(bytes(body))
        with pytest.raises(WindowRejected) as info:
            cam1.wait(50, timeout=30)
        assert info.value.reject.code == RejectCode.BAD_WINDOW and "unknown flags 0x03" in info.value.reject.message
        assert cam1.weights_digest() == _expected_digest(ctl, "cam1") and len(server.reselections) == 1
        # the window that follows starts from the selected model
        seq = cam1.send_window(_window(scenes, "car", 0))
        server.close_window()
        cam1.wait(seq, timeout=60)
        assert server.wait_reports(1)[0].devices["cam1"].before == expert_key(seeded["near"])
    ctl.zoo.close()


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray not installed (extra [recl])")
def test_ray_executor_retrains_the_same_models_as_in_process(task: Any, scenes: dict, tmp_path: Path) -> None:
    """config.executor = "ray": the window's jobs run as Ray tasks (two at a time) and, training being
    deterministic, give the very models the in-process executor gives."""
    frames = {"cam1": _window(scenes, "car", 0), "cam2": _window(scenes, "street", 0)}
    retrained = {}
    for executor in ("local", "ray"):
        retraining = SchedulerConfig(window_s=4, micro_window_s=1, micro_window_epochs=4, parallel=2)
        zoo = ModelZoo(tmp_path / executor, ZooConfig(alpha=2.0))  # nothing admitted: the models stay retrained
        cfg = _config(zoo.config, selection="none", executor=executor, ray_num_cpus=2, retraining=retraining)
        with RECLController(task, zoo, cfg) as ctl:
            rep = ctl.run_window(frames)
            assert type(ctl.executor).__name__ == ("RayExecutor" if executor == "ray" else "LocalExecutor")
            assert rep.schedule["micro_windows"] == {"cam1": 4, "cam2": 4}
            retrained[executor] = {d: ctl.digest(ctl.devices[d].retrained) for d in frames}
        zoo.close()
    assert retrained["ray"] == retrained["local"]


def test_reports_hold_what_the_responsiveness_timeline_needs(mode_runs: dict[str, list[WindowReport]]) -> None:
    """Per device: selection seconds, held-out accuracies on the retraining job's own split, and the job's
    micro-windows on the scheduler's clock with the accuracies the scheduler measured."""
    for mode, reports in mode_runs.items():
        for r in reports:
            assert sum(d.gating_s for d in r.devices.values()) <= r.cost.gating_s + 1e-6
            assert sum(d.safety_s for d in r.devices.values()) <= r.cost.safety_s + 1e-6
            for d in r.devices.values():
                if d.retrain_start is None:  # one-time adaptation after its first window: no job, no split
                    assert d.holdout_accuracy == {} and d.retrain_trace == []
                    continue
                assert {"before", "chosen"} <= set(d.holdout_accuracy)
                if d.retrain_start == d.chosen:  # the job starts from the decision: same model, same frames
                    assert d.holdout_accuracy["chosen"] == pytest.approx(d.retrained_initial, abs=1e-9), (mode, d)
                assert len(d.retrain_trace) == d.micro_windows
                ends = [m["end_s"] for m in d.retrain_trace]
                assert ends == sorted(ends) and all(m["end_s"] > m["start_s"] >= 0 for m in d.retrain_trace)
                if d.retrain_trace:
                    assert d.retrain_trace[-1]["accuracy"] == pytest.approx(d.retrained_final)
                for m in d.retrain_trace:  # per held-out frame, in the split's order; their mean is the accuracy
                    assert len(m["frame_scores"]) == len(d.holdout_index)
                    assert np.mean(m["frame_scores"]) == pytest.approx(m["accuracy"])
                for name, v in d.holdout_frames.items():
                    assert np.mean(v) == pytest.approx(d.holdout_accuracy[name])
        later = [d for r in reports[1:] for d in r.devices.values() if d.retrain_start is not None]
        assert all("last_retrained" in d.holdout_accuracy for d in later if mode != "one_time"), mode


def test_a_scene_change_upload_selects_at_once_and_the_window_goes_on_from_there(
        task: Any, scenes: dict, encoder: FrameEncoder, tmp_path: Path) -> None:
    no_training = SchedulerConfig(window_s=8, micro_window_s=1, budget_s=0)
    ctl = _controller(task, tmp_path, encoder, ZooConfig(), selection="oracle", retraining=no_training)
    zoo = ctl.zoo
    street = _window(scenes, "street", 1)
    top = int(np.bincount(task.label(street), minlength=16).argmax())
    expert = zoo.add_expert(_constant_expert(task, top), task=task.name, tag=task.tag, device="seed", window=0)
    ctl.run_window({"cam1": _window(scenes, "car", 0)})
    before = {k: v.copy() for k, v in ctl.devices["cam1"].weights.items()}

    # bad uploads are refused and change nothing
    for bad, match in [(street[:0], "empty batch"), (street[..., 0], "uint8 \\[N, H, W, 3\\]"),
                       (street[:, :50], "one frame size per controller"), (street.astype(np.float32), "uint8")]:
        with pytest.raises(ValueError, match=match):
            ctl.reselect("cam1", bad)
    with pytest.raises(ValueError, match="device ids must be non-empty"):
        ctl.reselect("", street[:4])
    assert all(np.array_equal(before[k], v) for k, v in ctl.devices["cam1"].weights.items())

    # four frames of the new scene: the zoo expert for it is chosen and becomes the device's model
    dec = ctl.reselect("cam1", street[:4])
    assert dec.window == 1 and dec.key == expert_key(expert.id) and dec.changed and dec.expert_id == expert.id
    r = dec.report
    assert r.frames == 4 and r.candidates == [expert.id] and r.before == CURRENT
    assert r.chosen_accuracy == max(r.accuracy.values()) > r.before_accuracy
    assert r.label_s > 0 and r.safety_s > 0 and r.gating_s >= 0
    assert dec.digest == weights_digest(zoo.weights(expert.id), ctl.manifest)
    assert ctl.devices["cam1"].expert_id == expert.id and zoo.selection_counts(task.name) == {expert.id: 1}
    # the window's upload then starts from it: nothing better, nothing to send
    rep = ctl.run_window({"cam1": street})
    assert rep.devices["cam1"].before == expert_key(expert.id) == rep.devices["cam1"].chosen
    # a device seen for the first time is registered on its generic model
    dec = ctl.reselect("cam9", street[:2], window=7)
    assert dec.window == 7 and dec.report.before == CURRENT and "cam9" in ctl.devices
    zoo.close()
