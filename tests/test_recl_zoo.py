"""RECL's persistent model zoo (edgert.recl.zoo): storage, integrity, admission, pruning, crash consistency.

Everything runs on real SQLite files under tmp_path with real (small) torch modules. The crash test kills
worker processes with SIGKILL, at chosen points and at random times, and checks the zoo's invariants after each
reopen. Its workers are forked from one helper process (this file run as a script), so the ~2 s import of torch
is paid once rather than per kill.
"""
from __future__ import annotations

import hashlib
import os
import random
import select
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional

import numpy as np
import pytest
import torch

import edgert
import edgert._edgert as _edgert
from edgert.recl.zoo import ModelZoo, ZooConfig, ZooError
from edgert.updates import buffer_tensors, module_manifest, module_weights
from edgert.vision.models import tiny_classifier

TASK = "classify"
TAG = "tiny-w4"


def _model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return tiny_classifier(3, width=4)


def _params(module: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in module.named_parameters()}


def _files(root: Path) -> set[str]:
    return {p.name for p in (root / "experts").iterdir()}


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


# ---- storage ---------------------------------------------------------------------------------------------


def test_add_expert_round_trips_weights_and_snapshot(tmp_path: Path) -> None:
    model = _model(0)
    with ModelZoo(tmp_path) as zoo:
        info = zoo.add_expert(model, task=TASK, tag=TAG, device="cam0", window=7)
        assert (info.id, info.task, info.tag, info.device, info.window) == (1, TASK, TAG, "cam0", 7)
        assert (info.status, info.origin) == ("active", "direct")
        data = (tmp_path / "experts" / info.file).read_bytes()
        assert (info.size, info.sha256) == (len(data), hashlib.sha256(data).hexdigest())
        assert info.model_id == module_manifest(model, tag=TAG).model_id

        fresh = _model(1)
        assert zoo.load(info.id, fresh) is fresh
        for name, value in _params(model).items():
            np.testing.assert_array_equal(_params(fresh)[name], value)
        stored = zoo.weights(info.id)
        assert stored.keys() == module_weights(model).keys()
        stored["features.0.0.weight"][...] = 0  # a writable copy: the zoo's copy is unaffected
        np.testing.assert_array_equal(zoo.weights(info.id)["features.0.0.weight"],
                                      _params(model)["features.0.0.weight"])

        # the served bytes are a full-snapshot packet a device slot applies as is
        packet = zoo.snapshot_bytes(info.id)
        assert packet == data
        slot = _edgert.Slot(zoo.manifest(info.id).to_bytes())
        slot.apply(packet)
        weights, version = slot.weights()
        assert version == 1
        for name, value in buffer_tensors(zoo.manifest(info.id), weights).items():
            np.testing.assert_array_equal(value, _params(model)[name])
        again = zoo.snapshot_bytes(info.id, target_version=9, base_version=3)
        assert _edgert.inspect_packet(again)["target_version"] == 9
        assert _edgert.inspect_packet(again)["base_version"] == 3


def test_arrays_by_name_are_stored_and_wrong_module_is_rejected(tmp_path: Path) -> None:
    weights = {"w": np.arange(12, dtype=np.float64).reshape(3, 4), "b": torch.ones(3)}
    with ModelZoo(tmp_path) as zoo:
        info = zoo.add_expert(weights, task="lin", tag="lin3x4", device="cam1", window=0)
        got = zoo.weights(info.id)
        np.testing.assert_array_equal(got["w"], weights["w"].astype(np.float32))
        np.testing.assert_array_equal(got["b"], np.ones(3, np.float32))
        model = _model(0)
        before = _params(model)
        with pytest.raises(ValueError, match="no parameters named"):
            zoo.load(info.id, model)
        for name, value in before.items():
            np.testing.assert_array_equal(_params(model)[name], value)
        with pytest.raises(ZooError, match="no expert 99"):
            zoo.weights(99)


def test_a_failed_store_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with ModelZoo(tmp_path, ZooConfig(gamma=1)) as zoo:
        for bad in ({"task": ""}, {"device": ""}, {"tag": ""}):
            with pytest.raises(ValueError, match="non-empty string"):
                zoo.add_expert(_model(0), **{"task": TASK, "tag": TAG, "device": "cam0", "window": 0, **bad})

        def fail(*args: object) -> int:
            raise sqlite3.OperationalError("disk I/O error")

        monkeypatch.setattr(ModelZoo, "_insert_expert", staticmethod(fail))
        with pytest.raises(sqlite3.OperationalError):
            zoo.add_expert(_model(0), task=TASK, tag=TAG, device="cam0", window=0)
        with pytest.raises(sqlite3.OperationalError):  # admitting (gamma = 1) fails: queueing is rolled back too
            zoo.propose(_model(0), 1.0, task=TASK, tag=TAG, device="cam0", window=0)
        assert _files(tmp_path) == set()
        assert zoo.queued() == [] and zoo.experts() == []
    with pytest.raises(ValueError, match="value_coding"):
        ZooConfig(value_coding="fp8")


def test_reopen_keeps_everything_and_ids_keep_growing(tmp_path: Path) -> None:
    config = ZooConfig(gamma=3)
    with ModelZoo(tmp_path, config) as zoo:
        a = zoo.add_expert(_model(0), task=TASK, tag=TAG, device="cam0", window=0)
        b = zoo.add_expert(_model(1), task=TASK, tag=TAG, device="cam1", window=0)
        zoo.record_window("cam0", 0, start_s=0.0, end_s=60.0, frames=30)
        zoo.record_selection(1, "cam0", a.id, [a.id, b.id])
        zoo.record_selection(1, "cam1", b.id, [b.id, a.id])
        zoo.record_selection(2, "cam1", b.id)
        zoo.record_accuracy(a.id, "cam0/1", 0.75)
        zoo.record_accuracy(b.id, "cam0/1", 0.5, source="gating")
        queued = zoo.propose(_model(2), 0.2, task=TASK, tag=TAG, device="cam2", window=1)
        before = (zoo.experts(), zoo.queued(), zoo.accuracy_table(), zoo.selection_counts(TASK))
    with ModelZoo(tmp_path, config) as zoo:
        after = (zoo.experts(), zoo.queued(), zoo.accuracy_table(), zoo.selection_counts(TASK))
        assert after[0] == before[0] and after[1] == before[1] and after[3] == before[3] == {a.id: 1, b.id: 2}
        assert after[2].expert_ids == before[2].expert_ids == (a.id, b.id) and after[2].samples == ("cam0/1",)
        np.testing.assert_array_equal(after[2].accuracy, [[0.75, 0.5]])
        assert [q.id for q in after[1]] == [queued.queue_id]
        window = zoo.training_window("cam0", 0)
        assert window is not None and (window.start_s, window.end_s, window.frames) == (0.0, 60.0, 30)
        assert zoo.record_window("cam0", 0, frames=31).start_s == 0.0  # None keeps the stored value
        assert zoo.training_window("cam9", 0) is None
        np.testing.assert_array_equal(zoo.weights(b.id)["classifier.1.bias"], _params(_model(1))["classifier.1.bias"])
        c = zoo.add_expert(_model(3), task=TASK, tag=TAG, device="cam0", window=2)
        assert c.id == 3
    assert _files(tmp_path) == {a.file, b.file, c.file, after[1][0].file}


# ---- integrity ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("found_by", ["read", "open"])
def test_damaged_file_quarantines_its_expert_for_good(tmp_path: Path, found_by: str) -> None:
    with ModelZoo(tmp_path) as zoo:
        good = zoo.add_expert(_model(0), task=TASK, tag=TAG, device="cam0", window=0)
        bad = zoo.add_expert(_model(1), task=TASK, tag=TAG, device="cam1", window=0)
    path = tmp_path / "experts" / bad.file
    _flip_byte(path, path.stat().st_size // 2)  # a weight value: the packet's own CRC would catch it too
    with ModelZoo(tmp_path, ZooConfig(verify_on_open=found_by == "open")) as zoo:
        if found_by == "read":
            assert [e.id for e in zoo.experts()] == [good.id, bad.id]
            model = _model(5)
            before = _params(model)
            with pytest.raises(ZooError, match=f"expert {bad.id} quarantined: .*fails its checksum"):
                zoo.load(bad.id, model)
            for name, value in before.items():
                np.testing.assert_array_equal(_params(model)[name], value)
        assert [e.id for e in zoo.experts()] == [good.id]
        info = zoo.expert(bad.id)
        assert info.status == "quarantined" and "checksum" in (info.status_reason or "")
        for serve in (zoo.weights, zoo.snapshot_bytes):
            with pytest.raises(ZooError, match="is quarantined"):
                serve(bad.id)
        zoo.weights(good.id)
    with ModelZoo(tmp_path) as zoo:  # still quarantined after a reopen; the file is kept for inspection
        assert zoo.expert(bad.id).status == "quarantined"
        assert [e.id for e in zoo.experts()] == [good.id]
    assert _files(tmp_path) == {good.file, bad.file}


def test_missing_or_truncated_file_quarantines_on_open(tmp_path: Path) -> None:
    with ModelZoo(tmp_path) as zoo:
        gone = zoo.add_expert(_model(0), task=TASK, tag=TAG, device="cam0", window=0)
        short = zoo.add_expert(_model(1), task=TASK, tag=TAG, device="cam0", window=1)
        kept = zoo.add_expert(_model(2), task=TASK, tag=TAG, device="cam0", window=2)
    (tmp_path / "experts" / gone.file).unlink()
    path = tmp_path / "experts" / short.file
    path.write_bytes(path.read_bytes()[:-1])
    with ModelZoo(tmp_path) as zoo:
        assert [e.id for e in zoo.experts()] == [kept.id]
        assert "missing" in (zoo.expert(gone.id).status_reason or "")
        assert "bytes, expected" in (zoo.expert(short.id).status_reason or "")
        with pytest.raises(ZooError, match="quarantined"):
            zoo.snapshot_bytes(short.id)


def test_orphans_and_temporary_files_are_removed_on_open(tmp_path: Path) -> None:
    with ModelZoo(tmp_path, ZooConfig(gamma=2)) as zoo:
        expert = zoo.add_expert(_model(0), task=TASK, tag=TAG, device="cam0", window=0)
        queued = zoo.propose(_model(1), 0.5, task=TASK, tag=TAG, device="cam0", window=1)
    with ModelZoo(tmp_path) as zoo:
        queue_file = zoo.queued()[0].file
    weights = tmp_path / "experts"
    (weights / "0123456789abcdef01234567.ertp").write_bytes(b"written, never committed")
    (weights / f".{expert.file}.123.456.tmp").write_bytes(b"half a file")
    with ModelZoo(tmp_path) as zoo:
        assert [q.id for q in zoo.queued()] == [queued.queue_id]
        assert zoo.weights(expert.id)
    assert _files(tmp_path) == {expert.file, queue_file}


def test_a_second_opener_leaves_files_of_live_writers_alone(tmp_path: Path) -> None:
    first = ModelZoo(tmp_path)
    pending = tmp_path / "experts" / "pending-write.ertp"  # as if `first` were between a file write and its commit
    pending.write_bytes(b"x")
    with ModelZoo(tmp_path) as second:  # cannot take the exclusive lock while `first` is open: no recovery
        info = second.add_expert(_model(0), task=TASK, tag=TAG, device="cam0", window=0)
        assert pending.exists()
        assert [e.id for e in first.experts()] == [info.id]  # both see the same database
    first.close()
    with ModelZoo(tmp_path):
        assert not pending.exists()
    with pytest.raises(ZooError, match="closed"):
        first.experts()


# ---- admission ------------------------------------------------------------------------------------------


def test_promising_models_queue_until_gamma_then_join_together(tmp_path: Path) -> None:
    config = ZooConfig(alpha=0.05, gamma=3)
    with ModelZoo(tmp_path, config) as zoo:
        seed = zoo.add_expert(_model(0), task=TASK, tag=TAG, device="cam0", window=0)
        weak = zoo.propose(_model(1), 0.049, task=TASK, tag=TAG, device="cam0", window=1)
        assert (weak.promising, weak.queue_id, weak.admitted) == (False, None, ())
        assert _files(tmp_path) == {seed.file}  # nothing stored for a model that is not promising

        first = zoo.propose(_model(2), 0.05, task=TASK, tag=TAG, device="cam0", window=2)
        other_task = zoo.propose({"w": np.ones((2, 2))}, 0.3, task="detect", tag="lin", device="cam1", window=2)
        second = zoo.propose(_model(3), 0.10, task=TASK, tag=TAG, device="cam1", window=2)
        assert first.promising and second.promising and not first.admitted and not second.admitted
        assert [q.id for q in zoo.queued(TASK)] == [first.queue_id, second.queue_id]
        assert [e.id for e in zoo.experts()] == [seed.id]

        third = zoo.propose(_model(4), 0.20, task=TASK, tag=TAG, device="cam2", window=3)
        assert [e.id for e in third.admitted] == [2, 3, 4]
        assert [(e.origin, e.accuracy_gain, e.device) for e in third.admitted] == [
            ("admitted", 0.05, "cam0"), ("admitted", 0.10, "cam1"), ("admitted", 0.20, "cam2")]
        assert zoo.queued(TASK) == []
        assert [q.id for q in zoo.queued()] == [other_task.queue_id]
        np.testing.assert_array_equal(zoo.weights(3)["classifier.1.weight"],
                                      _params(_model(3))["classifier.1.weight"])

        flushed = zoo.flush_admissions()
        assert [(e.id, e.task) for e in flushed] == [(5, "detect")] and zoo.queued() == []
        assert zoo.flush_admissions() == []
    with pytest.raises(ValueError, match="finite"):
        ModelZoo(tmp_path).propose(_model(1), float("nan"), task=TASK, tag=TAG, device="cam0", window=1)


# ---- selections, accuracy, pruning -----------------------------------------------------------------------


def test_record_selection_checks_its_experts(tmp_path: Path) -> None:
    with ModelZoo(tmp_path) as zoo:
        a = zoo.add_expert(_model(0), task=TASK, tag=TAG, device="cam0", window=0)
        b = zoo.add_expert({"w": np.ones(2)}, task="detect", tag="lin", device="cam0", window=0)
        with pytest.raises(ValueError, match="not among the candidates"):
            zoo.record_selection(0, "cam0", a.id, [b.id])
        with pytest.raises(ZooError, match=r"no experts \[42\]"):
            zoo.record_selection(0, "cam0", a.id, [a.id, 42])
        with pytest.raises(ValueError, match="not experts of task"):
            zoo.record_selection(0, "cam0", a.id, [a.id, b.id])
        assert zoo.selection_counts(TASK) == {}
        with pytest.raises(ZooError):
            zoo.record_accuracy(42, "cam0/0", 0.5)
        for bad in (float("nan"), -0.1, 1.5):
            with pytest.raises(ValueError, match=r"in \[0, 1\]"):
                zoo.record_accuracy(a.id, "cam0/0", bad)


def test_accuracy_table_rows_are_the_served_experts(tmp_path: Path) -> None:
    with ModelZoo(tmp_path) as zoo:
        ids = [zoo.add_expert(_model(i), task=TASK, tag=TAG, device="cam0", window=i).id for i in range(3)]
        zoo.record_accuracy(ids[0], "s1", 0.9)
        zoo.record_accuracy(ids[0], "s2", 0.8)
        zoo.record_accuracy(ids[0], "s2", 0.7)  # measured again: replaced
        zoo.record_accuracy(ids[2], "s1", 0.4)
        zoo.quarantine(ids[1], "the safety checker found it harmful")
        table = zoo.accuracy_table(TASK)
        assert table.expert_ids == (ids[0], ids[2]) and table.samples == ("s1", "s2")
        np.testing.assert_array_equal(table.accuracy, np.float32([[0.9, 0.4], [0.7, np.nan]]))
        everyone = zoo.accuracy_table(samples=["s2", "s9"], active_only=False)
        assert everyone.expert_ids == tuple(ids) and everyone.accuracy.dtype == np.float32
        np.testing.assert_array_equal(everyone.accuracy, np.float32([[0.7, np.nan, np.nan], [np.nan] * 3]))
        with pytest.raises(ZooError, match="not active"):
            zoo.quarantine(ids[1], "again")


def test_prune_removes_rarely_chosen_experts_of_the_last_q_selections(tmp_path: Path) -> None:
    config = ZooConfig(q=6, eta=2, min_experts=1)
    with ModelZoo(tmp_path, config) as zoo:
        a, b, c = (zoo.add_expert(_model(i), task=TASK, tag=TAG, device="cam0", window=0).id for i in range(3))
        other = zoo.add_expert({"w": np.ones(2)}, task="detect", tag="lin", device="cam0", window=0)
        for window, chosen in enumerate([a, a, b, a, b]):
            zoo.record_selection(window, "cam0", chosen, [a, b, c])
        assert zoo.prune(10) == []  # five selections: too few to judge anyone
        late = zoo.add_expert(_model(3), task=TASK, tag=TAG, device="cam1", window=5).id
        zoo.record_selection(5, "cam0", a, [a, b, c, late])
        assert zoo.selection_counts(TASK) == {a: 4, b: 2}
        # c: 0 < eta; b: 2 == eta stays; `late` joined during the window, `other`'s task has no selections
        assert zoo.prune(11) == [c]
        info = zoo.expert(c)
        assert (info.status, info.status_window) == ("pruned", 11)
        assert [e.id for e in zoo.experts()] == [a, b, other.id, late]
        assert info.file not in _files(tmp_path)
        with pytest.raises(ZooError, match="is pruned"):
            zoo.weights(c)
        for window in range(6, 12):
            zoo.record_selection(window, "cam0", late, [a, b, late])
        assert zoo.prune(12) == [a, b]  # not chosen in the last 6 selections; `late` was, 6 times
        zoo.record_selection(12, "cam0", late)
        kept = {zoo.expert(late).file, other.file}
    with ModelZoo(tmp_path, ZooConfig(q=1, eta=5, min_experts=1)) as zoo:
        assert zoo.prune(13) == []  # `late` is chosen too rarely now, but it is the task's last active expert
        assert zoo.selection_counts(TASK, last=3) == {late: 3}
    assert _files(tmp_path) == kept


def test_one_zoo_object_is_safe_across_threads(tmp_path: Path) -> None:
    weights = {"w": np.ones((4, 4), np.float32)}
    errors: list[BaseException] = []
    with ModelZoo(tmp_path, ZooConfig(gamma=4)) as zoo:
        seed = zoo.add_expert(weights, task=TASK, tag="lin", device="cam0", window=0)

        def work(k: int) -> None:
            try:
                for i in range(5):
                    zoo.propose(weights, 0.5, task=TASK, tag="lin", device=f"cam{k}", window=i)
                    zoo.record_selection(i, f"cam{k}", seed.id)
                    zoo.weights(seed.id)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert len(zoo.experts()) == 1 + 20 and zoo.queued() == []  # 20 proposals, 5 batches of gamma = 4
        assert zoo.selection_counts(TASK) == {seed.id: 20}


def test_config_rejects_nonsense() -> None:
    for bad in ({"gamma": 0}, {"eta": 0}, {"q": 0}, {"alpha": -0.1}, {"alpha": float("nan")}, {"min_experts": -1}):
        with pytest.raises(ValueError):
            ZooConfig(**bad)  # type: ignore[arg-type]


# ---- crash consistency: SIGKILL at any point -------------------------------------------------------------

CRASH_CONFIG = ZooConfig(gamma=3, q=8, eta=2, min_experts=1)
CRASH_TASKS = ("classify", "detect")


def _worker(root: Path, mode: str, seed: int) -> None:
    """Runs in a forked process until killed: admits, selects, measures and prunes at random (mode 'random'),
    or kills itself at one chosen point ('after-write': a snapshot file is durable but its row is not
    committed; 'before-unlink': pruned rows are committed but their files not yet deleted)."""
    import edgert.recl.zoo as zoo_module

    rng = random.Random(seed)
    zoo = ModelZoo(root, CRASH_CONFIG)
    if mode == "after-write":
        write = zoo_module.write_bytes_atomic

        def write_then_die(path: Path, data: bytes) -> Path:
            write(path, data)
            os.kill(os.getpid(), signal.SIGKILL)
            return path

        zoo_module.write_bytes_atomic = write_then_die  # type: ignore[assignment]
    elif mode == "before-unlink":
        zoo_module._remove_file = lambda path: os.kill(os.getpid(), signal.SIGKILL)
    os.write(1, f"ready {os.getpid()}\n".encode())

    def weights() -> dict[str, np.ndarray]:
        return {"w": np.full((4, 4), rng.random(), np.float32), "b": np.zeros(4, np.float32)}

    if mode == "after-write":
        zoo.add_expert(weights(), task="classify", tag="lin", device="cam0", window=0)
    elif mode == "before-unlink":
        ids = [zoo.add_expert(weights(), task="scripted", tag="lin", device="cam0", window=0).id for _ in range(3)]
        for window in range(CRASH_CONFIG.q):
            zoo.record_selection(window, "cam0", ids[0], ids)
        zoo.prune(CRASH_CONFIG.q)
    window = 0
    while mode == "random":
        window += 1
        task = rng.choice(CRASH_TASKS)
        device = f"cam{rng.randrange(4)}"
        op = rng.random()
        if op < 0.35:
            zoo.propose(weights(), rng.choice([0.0, 0.1, 0.2]), task=task, tag="lin", device=device, window=window)
        elif op < 0.45:
            zoo.add_expert(weights(), task=task, tag="lin", device=device, window=window)
        elif op < 0.85:
            active = [e.id for e in zoo.experts(task)]
            if active:  # mostly the oldest, so that the others fall below eta and get pruned
                chosen = active[0] if rng.random() < 0.7 else rng.choice(active)
                zoo.record_selection(window, device, chosen, active[:4] if chosen in active[:4] else [chosen])
                zoo.record_accuracy(chosen, f"{device}/{window}", rng.random())
        else:
            zoo.prune(window)


def _zygote(root: str) -> None:
    """This file as a script: forks a worker per 'run <mode> <seed>' line on stdin and reports its end."""
    for line in sys.stdin:
        _, mode, seed = line.split()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                _worker(Path(root), mode, int(seed))
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0
        os.write(1, f"ended {pid} {sig}\n".encode())


class _Lines:
    """Lines from a pipe, with a deadline (a stuck helper fails the test instead of hanging it)."""

    def __init__(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        self.fd = proc.stdout.fileno()
        self.buffer = b""

    def next(self, timeout: float = 60.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            assert left > 0, "the crash helper stopped answering"
            if select.select([self.fd], [], [], left)[0]:
                chunk = os.read(self.fd, 4096)
                assert chunk, "the crash helper exited"
                self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode().split()


def _stored(root: Path) -> tuple[list[sqlite3.Row], list[sqlite3.Row], int]:
    """The rows as SQLite holds them, read without the zoo (experts, admission queue, selection count)."""
    conn = sqlite3.connect(root / "zoo.sqlite")
    conn.row_factory = sqlite3.Row
    try:
        experts = conn.execute("SELECT * FROM experts ORDER BY id").fetchall()
        queue = conn.execute("SELECT * FROM admission_queue ORDER BY id").fetchall()
        selections = conn.execute("SELECT COUNT(*) FROM selections").fetchone()[0]
    finally:
        conn.close()
    return experts, queue, selections


def _check_consistent(root: Path, previous: Optional[dict]) -> dict:
    """Reopens the zoo (recovery), then checks it from outside: every active or queued row has its file with
    the recorded size and SHA-256, no file lacks a row, nothing was quarantined (a crash must never damage a
    committed file), each queue is below gamma, admitted batches are whole, and nothing that was stored went
    missing since ``previous``."""
    with ModelZoo(root, CRASH_CONFIG) as zoo:
        served = {e.id for e in zoo.experts()}
    experts, queue, selections = _stored(root)
    assert [r["id"] for r in experts if r["status"] == "quarantined"] == []
    live = [r for r in experts if r["status"] == "active"] + list(queue)
    assert _files(root) == {r["file"] for r in live}, "orphan or missing files"
    for r in live:
        data = (root / "experts" / r["file"]).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (r["size"], r["sha256"])
    assert served == {r["id"] for r in experts if r["status"] == "active"}
    for task in {r["task"] for r in queue}:
        assert sum(r["task"] == task for r in queue) < CRASH_CONFIG.gamma
    for task in {r["task"] for r in experts}:  # batches join whole (the workers never flush short of gamma)
        assert sum(r["task"] == task and r["origin"] == "admitted" for r in experts) % CRASH_CONFIG.gamma == 0
    state = {"ids": [r["id"] for r in experts], "pruned": {r["id"] for r in experts if r["status"] == "pruned"},
             "queue_files": {r["file"] for r in queue}, "expert_files": {r["file"] for r in experts},
             "selections": selections, "admitted": sum(r["origin"] == "admitted" for r in experts)}
    if previous is not None:
        assert state["ids"][:len(previous["ids"])] == previous["ids"], "an expert row went missing"
        assert previous["pruned"] <= state["pruned"], "a pruned expert came back"
        assert state["selections"] >= previous["selections"]
        lost = previous["queue_files"] - state["queue_files"] - state["expert_files"]
        assert not lost, f"queued models vanished without joining the zoo: {lost}"
    return state


def test_sigkill_during_admission_and_pruning_leaves_the_zoo_consistent(tmp_path: Path,
                                                                        deterministic_seed: int) -> None:
    root = tmp_path / "zoo"
    ModelZoo(root, CRASH_CONFIG).close()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(Path(edgert.__file__).resolve().parent.parent), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, __file__, "zygote", str(root)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, env=env)
    assert proc.stdin is not None
    lines = _Lines(proc)
    rng = random.Random(deterministic_seed)

    def run(mode: str, kill_after: Optional[float] = None) -> int:
        assert proc.stdin is not None
        proc.stdin.write(f"run {mode} {rng.randrange(2**31)}\n".encode())
        proc.stdin.flush()
        word, pid = lines.next()
        assert word == "ready"
        if kill_after is not None:
            time.sleep(kill_after)
            os.kill(int(pid), signal.SIGKILL)
        word, ended, sig = lines.next()
        assert (word, ended) == ("ended", pid)
        return int(sig)

    try:
        state = _check_consistent(root, None)
        # a snapshot file is durable, its row never committed: an orphan until the next open
        assert run("after-write") == signal.SIGKILL
        experts, queue, _ = _stored(root)
        assert len(_files(root) - {r["file"] for r in [*experts, *queue]}) == 1
        state = _check_consistent(root, state)
        # pruned rows committed, files not yet deleted: the next open deletes them
        assert run("before-unlink") == signal.SIGKILL
        experts, _, _ = _stored(root)
        pruned = {r["file"] for r in experts if r["status"] == "pruned"}
        assert len(pruned) == 2 and pruned <= _files(root)
        state = _check_consistent(root, state)
        # random instants, mostly inside a file write or a transaction
        for _ in range(6):
            assert run("random", kill_after=rng.uniform(0.05, 0.4)) == signal.SIGKILL
            state = _check_consistent(root, state)
        # the workers got work done: batches admitted, experts pruned beyond the two scripted ones
        assert state["admitted"] >= CRASH_CONFIG.gamma and len(state["pruned"]) > 2
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0


if __name__ == "__main__" and sys.argv[1:2] == ["zygote"]:
    _zygote(sys.argv[2])
