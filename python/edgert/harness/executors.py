"""Run picklable callables as tasks: in this process or on Ray, behind one small interface.

Every application that spreads independent pieces of work (RECL's retraining micro-windows, the AMS server's
training phases) uses these two executors instead of talking to Ray itself:

* :class:`LocalExecutor`: runs each call in this process when it is submitted; arguments go by reference, so
  a call may change them in place.
* :class:`RayExecutor`: runs each call as a Ray task, a local Ray by default (``ray.init(num_cpus=...)``) or
  a cluster by address. The callable and its arguments travel pickled to the worker and the return value
  comes back pickled: a call must return what it changed (numpy arguments may arrive read-only, straight from
  Ray's object store: copy one before changing it).

Both share the same contract: :meth:`~TaskExecutor.submit` gives a :class:`TaskHandle`,
:meth:`~TaskExecutor.wait` says which handles are done, :meth:`~TaskExecutor.result` gives a
:class:`TaskResult`, and :meth:`~TaskExecutor.run` does all three for a batch, results in the order of the
calls. An exception of the callable (or a worker that died, or arguments that could not be pickled) comes
back as :attr:`TaskResult.error`, never raised into the caller, so one failing piece of work cannot stop a
scheduler that is waiting on others.

Ray is optional (extras ``[ray]`` or ``[recl]``): it is imported only when a :class:`RayExecutor` is made.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Optional, Protocol, Sequence

if TYPE_CHECKING:
    from typing_extensions import Self

#: one call for :meth:`TaskExecutor.run`: a picklable callable and its positional arguments
Call = tuple[Callable[..., Any], Sequence[Any]]


@dataclass(frozen=True)
class TaskResult:
    """What one call gave.

    Attributes:
        value: the callable's return value (``None`` after an error).
        error: ``None``, or ``"TypeName: message"`` of the exception the call raised (or of the failure to
            run it at all: a dead worker, arguments or a result that could not be pickled).
        wall_s: seconds the callable ran where it ran (0 when it never ran).
        started, ended: ``time.time()`` on the machine it ran on when the callable started and returned (nan
            when it never ran); on one machine they show which calls overlapped.
    """

    value: Any
    error: Optional[str]
    wall_s: float
    started: float
    ended: float

    @property
    def ok(self) -> bool:
        return self.error is None


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def call(fn: Callable[..., Any], *args: Any) -> TaskResult:
    """Runs ``fn(*args)`` here, timed, with its exception as the result's ``error``."""
    started = time.time()
    t0 = time.perf_counter()
    try:
        value, error = fn(*args), None
    except Exception as exc:  # reported as a value, never raised into the caller's scheduler
        value, error = None, _error(exc)
    wall_s = time.perf_counter() - t0
    return TaskResult(value, error, wall_s, started, time.time())


class TaskHandle:
    """A submitted call: pass it to the executor's :meth:`~TaskExecutor.wait` and
    :meth:`~TaskExecutor.result`. Opaque; only the executor that made it understands it."""

    __slots__ = ("_done", "_ref")

    def __init__(self, ref: Any = None, done: Optional[TaskResult] = None) -> None:
        self._ref = ref
        self._done = done


class TaskExecutor(Protocol):
    """Runs calls as tasks; calls submitted together may run at once, in any order."""

    @property
    def slots(self) -> int:
        """Calls that can run at the same time."""
        ...

    def submit(self, fn: Callable[..., Any], *args: Any) -> TaskHandle:
        """Starts ``fn(*args)``; ``fn`` must be picklable by reference (a module-level function) for Ray."""
        ...

    def wait(self, handles: Sequence[TaskHandle], timeout: Optional[float] = None) -> list[TaskHandle]:
        """The handles among ``handles`` whose calls are done, after waiting at most ``timeout`` seconds
        (``None``: until at least one is) for one to finish. Empty if none finished in time."""
        ...

    def result(self, handle: TaskHandle) -> TaskResult:
        """The call's result, waiting for it if needed; each handle's result is taken once."""
        ...

    def run(self, calls: Iterable[Call]) -> list[TaskResult]:
        """Submits every call, then waits for all: results in the order of ``calls``."""
        ...

    def shutdown(self) -> None:
        """Frees what the executor started (a local Ray); it cannot be used afterwards."""
        ...


class LocalExecutor:
    """Runs each call in this process, at once, when it is submitted (one slot).

    Arguments are passed by reference: a call that trains a model in place leaves it trained.
    """

    slots = 1

    def submit(self, fn: Callable[..., Any], *args: Any) -> TaskHandle:
        return TaskHandle(done=call(fn, *args))

    def wait(self, handles: Sequence[TaskHandle], timeout: Optional[float] = None) -> list[TaskHandle]:
        return list(handles)

    def result(self, handle: TaskHandle) -> TaskResult:
        if handle._done is None:
            raise ValueError("result: not a handle of a LocalExecutor (or its result was already taken)")
        done, handle._done = handle._done, None
        return done

    def run(self, calls: Iterable[Call]) -> list[TaskResult]:
        return [self.result(self.submit(fn, *args)) for fn, args in calls]

    def shutdown(self) -> None:
        pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ImportError("RayExecutor needs Ray, an optional dependency: pip install 'edgert[ray]' "
                          "(the [recl] extra installs it too)") from exc
    return ray


class RayExecutor:
    """Runs each call as a Ray task of ``cpus_per_task`` CPUs and ``gpus_per_task`` GPUs.

    Args:
        address: ``None`` starts a local Ray (``ray.init(num_cpus=num_cpus)``); otherwise
            ``ray.init(address=address)`` joins a cluster (``"auto"``, ``"ray://head:10001"``). If Ray is
            already initialized it is used as it is, and :meth:`shutdown` leaves it running.
        num_cpus: CPUs of the local Ray (``None``: all of this machine's); ignored with ``address``.
        cpus_per_task, gpus_per_task: resources each call asks for (Ray runs as many at once as fit).
        init_kwargs: more ``ray.init`` arguments (e.g. ``log_to_driver=False``, or a ``runtime_env`` that
            makes ``edgert`` and the callables' modules importable on a cluster's workers).

    Callables, and the classes of their arguments and results, must be importable by the workers (defined in
    an installed module, not ``__main__`` or a test file, unless registered with
    ``ray.cloudpickle.register_pickle_by_value``). Use as a context manager or call :meth:`shutdown`.

    Raises:
        ImportError: Ray is not installed.
    """

    def __init__(self, address: Optional[str] = None, num_cpus: Optional[int] = None, *,
                 cpus_per_task: float = 1.0, gpus_per_task: float = 0.0,
                 init_kwargs: Optional[Mapping[str, Any]] = None) -> None:
        if not cpus_per_task > 0 or gpus_per_task < 0:
            raise ValueError(f"cpus_per_task > 0 and gpus_per_task >= 0 expected, got {cpus_per_task}, "
                             f"{gpus_per_task}")
        ray = _import_ray()
        self._owns_ray = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False}
            if address is None:
                kwargs["num_cpus"] = num_cpus
            else:
                kwargs["address"] = address
            kwargs.update(init_kwargs or {})
            ray.init(**kwargs)
            self._owns_ray = True
        self._remote = ray.remote(call).options(num_cpus=cpus_per_task, num_gpus=gpus_per_task)
        self.cpus_per_task = float(cpus_per_task)
        self.gpus_per_task = float(gpus_per_task)

    @property
    def owns_ray(self) -> bool:
        """Whether this executor started Ray (and :meth:`shutdown` will stop it)."""
        return self._owns_ray

    @property
    def slots(self) -> int:
        """Tasks the cluster can run at once (its CPUs over ``cpus_per_task``, at least 1)."""
        ray = _import_ray()
        return max(1, int(ray.cluster_resources().get("CPU", 1) // self.cpus_per_task))

    def submit(self, fn: Callable[..., Any], *args: Any) -> TaskHandle:
        try:
            return TaskHandle(ref=self._remote.remote(fn, *args))
        except Exception as exc:  # e.g. an argument that cannot be pickled
            return TaskHandle(done=TaskResult(None, _error(exc), 0.0, math.nan, math.nan))

    def wait(self, handles: Sequence[TaskHandle], timeout: Optional[float] = None) -> list[TaskHandle]:
        ray = _import_ray()
        pending = [h._ref for h in handles if h._done is None and h._ref is not None]
        finished: set[Any] = set()
        if pending:
            some_ready = any(h._done is not None for h in handles)
            first, _ = ray.wait(pending, num_returns=1, timeout=0 if some_ready else timeout, fetch_local=False)
            if first:  # then everything else that is ready by now
                rest, _ = ray.wait(pending, num_returns=len(pending), timeout=0, fetch_local=False)
                finished = set(first) | set(rest)
        return [h for h in handles if h._done is not None or (h._ref is not None and h._ref in finished)]

    def result(self, handle: TaskHandle) -> TaskResult:
        if handle._done is not None:
            done, handle._done = handle._done, None
            return done
        if handle._ref is None:
            raise ValueError("result: not a handle of a RayExecutor (or its result was already taken)")
        ray = _import_ray()
        ref, handle._ref = handle._ref, None
        try:
            result = ray.get(ref)
        except Exception as exc:  # the worker died, or the arguments or the result could not be (un)pickled
            return TaskResult(None, _error(exc), 0.0, math.nan, math.nan)
        assert isinstance(result, TaskResult)
        return result

    def run(self, calls: Iterable[Call]) -> list[TaskResult]:
        handles = [self.submit(fn, *args) for fn, args in calls]
        return [self.result(h) for h in handles]

    def shutdown(self) -> None:
        """Shuts Ray down if this executor started it."""
        ray = _import_ray()
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()
        self._owns_ray = False

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


__all__ = ["Call", "LocalExecutor", "RayExecutor", "TaskExecutor", "TaskHandle", "TaskResult", "call"]
