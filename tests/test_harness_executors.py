"""The task executors of the foundation (edgert.harness.executors): in process and on a real local Ray.

Both give results in the order of the calls, a raising call's error as a value next to the others' results,
and handles that can be waited on; on Ray the calls run in worker processes, at once.
"""
from __future__ import annotations

import math
import os
import sys
import time
from typing import Iterator

import numpy as np
import pytest

from conftest import needs_ray
from edgert.harness.executors import LocalExecutor, RayExecutor, TaskExecutor, TaskResult


def square_after(x: int, sleep_s: float = 0.0) -> tuple[int, int]:
    if sleep_s:
        time.sleep(sleep_s)
    return x * x, os.getpid()


def fail(message: str) -> None:
    raise ValueError(message)


def scale_in_place(a: np.ndarray, factor: float) -> np.ndarray:
    if not a.flags.writeable:  # Ray hands out numpy arguments read-only (zero-copy from its object store)
        a = a.copy()
    a *= factor
    return a


@pytest.fixture(scope="module")
def ray_tasks() -> Iterator[RayExecutor]:
    ray = pytest.importorskip("ray")
    # the workers cannot import this test file: its functions travel by value
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    with RayExecutor(num_cpus=2, init_kwargs={"log_to_driver": False}) as tasks:
        yield tasks


def _contract(tasks: TaskExecutor) -> list[TaskResult]:
    calls = [(square_after, (3,)), (fail, ("no good",)), (square_after, (4,)), (square_after, (5,))]
    results = tasks.run(calls)
    assert [r.value[0] if r.ok else None for r in results] == [9, None, 16, 25]
    bad = results[1]
    assert not bad.ok and bad.error == "ValueError: no good" and bad.value is None
    assert all(r.wall_s >= 0 and r.started <= r.ended for r in results)
    # submit / wait / result
    handles = [tasks.submit(square_after, i) for i in range(3)]
    done: list = []
    while len(done) < 3:
        done += [h for h in tasks.wait([h for h in handles if h not in done], timeout=5.0) if h not in done]
    assert [tasks.result(h).value[0] for h in handles] == [0, 1, 4]
    with pytest.raises(ValueError, match="already taken"):
        tasks.result(handles[0])
    return results


def test_local_executor_runs_in_process_in_order_with_errors_as_values() -> None:
    tasks = LocalExecutor()
    results = _contract(tasks)
    assert {r.value[1] for r in results if r.ok} == {os.getpid()} and tasks.slots == 1
    a = np.ones(3)
    assert tasks.run([(scale_in_place, (a, 2.0))])[0].ok and a.tolist() == [2.0, 2.0, 2.0]  # by reference


@needs_ray
def test_ray_executor_runs_tasks_in_workers_at_once(ray_tasks: RayExecutor) -> None:
    import ray

    assert ray_tasks.owns_ray and ray_tasks.slots == 2
    results = _contract(ray_tasks)
    assert os.getpid() not in {r.value[1] for r in results if r.ok}
    # arguments travel pickled: the caller's array is untouched, the changed copy comes back
    a = np.ones(3)
    back = ray_tasks.run([(scale_in_place, (a, 2.0))])[0]
    assert a.tolist() == [1.0, 1.0, 1.0] and back.value.tolist() == [2.0, 2.0, 2.0]
    # two slots: two sleeping calls overlap in time, in two worker processes
    slow = ray_tasks.run([(square_after, (i, 0.5)) for i in range(2)])
    assert slow[0].value[1] != slow[1].value[1]
    assert max(r.started for r in slow) < min(r.ended for r in slow)
    # a call that cannot run at all (an argument that does not unpickle in the worker) is an error value
    handle = ray_tasks.submit(square_after, _Unpicklable())
    assert ray_tasks.wait([handle], timeout=30.0) == [handle]
    res = ray_tasks.result(handle)
    assert not res.ok and res.error and math.isnan(res.started)
    # wait with a short timeout returns nothing while the call still runs
    h = ray_tasks.submit(square_after, 2, 1.0)
    assert ray_tasks.wait([h], timeout=0.05) == []
    assert ray_tasks.result(h).value[0] == 4
    assert ray.is_initialized()


class _Unpicklable:
    def __reduce__(self) -> tuple:
        return (fail, ("cannot be rebuilt",))


@needs_ray
def test_ray_executor_leaves_a_running_ray_alone(ray_tasks: RayExecutor) -> None:
    import ray

    guest = RayExecutor(num_cpus=8)  # Ray is running: joined as it is, num_cpus ignored
    assert not guest.owns_ray and guest.slots == 2
    guest.shutdown()
    assert ray.is_initialized()
