"""The per-frame API of a device: :class:`DeviceRuntime` runs the slot's current model on every frame.

    backend = OnnxRuntimeBackend(exported)             # or TorchEagerBackend(student)
    runtime = DeviceRuntime(backend, lambda: client.slot, preprocess=image_input).start()
    client.on_version = runtime.on_update              # or runtime.attach(client); polling also works
    while robot.running:
        labels = runtime.infer(camera.read())          # never waits for an update

Threads: :meth:`DeviceRuntime.infer` runs on the caller's (inference) thread and only reads one
reference, the active session; a builder thread, woken by :meth:`DeviceRuntime.on_update` or by
``infer`` noticing a newer slot version (and every ``poll_s`` seconds), reads the slot's weights under its
pin, builds the new version's session and swaps the reference between two frames. A frame therefore sees
one version's weights from start to end, and a build that fails leaves the previous session running.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

import numpy as np

from edgert.infer.backends import BackendSession, InferenceBackend, WeightsSnapshot, slot_manifest
from edgert.updates.manifest import Manifest

logger = logging.getLogger("edgert.infer")

SlotSource = Union[Any, Callable[[], Any]]  # a native Slot, or a callable returning the current one (or None)


class RefusedVersion(RuntimeError):
    """A slot version the runtime did not switch to; the previous session kept running.

    Attributes:
        version: the refused slot version.
        cause: what went wrong (the backend's exception, or a ValueError for a bad manifest/weights).
    """

    def __init__(self, version: int, cause: BaseException) -> None:
        super().__init__(f"slot version {version} refused, the previous model keeps running: "
                         f"{type(cause).__name__}: {cause}")
        self.version = version
        self.cause = cause


@dataclass(frozen=True)
class Swap:
    """One version switch: when the runtime learnt of it, how long the build took, when it went live."""

    version: int
    noticed_s: float  # time.perf_counter() when the builder picked the version up
    build_s: float  # snapshot + session build
    live_s: float  # time.perf_counter() when infer() started using it


@dataclass
class _Active:
    session: BackendSession
    slot: Any


def image_input(frame: np.ndarray) -> np.ndarray:
    """``uint8 [H, W, 3]`` RGB -> float32 ``[1, 3, H, W]`` in [0, 1] (the students' input convention)."""
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frame: expected uint8 [H, W, 3], got {frame.dtype} {list(frame.shape)}")
    return np.ascontiguousarray(frame.transpose(2, 0, 1)[None], dtype=np.float32) / np.float32(255.0)


def argmax_labels(logits: np.ndarray) -> np.ndarray:
    """``[1, K, H, W]`` logits -> int64 ``[H, W]`` labels (what :meth:`edgert.ams.edge.AMSEdge.infer` returns)."""
    return np.asarray(logits[0].argmax(0), dtype=np.int64)


class DeviceRuntime:
    """Runs the model slot's current version on every frame with a swappable backend session.

    Args:
        backend: :class:`~edgert.infer.OnnxRuntimeBackend`, :class:`~edgert.infer.TorchEagerBackend`, or any
            :class:`~edgert.infer.InferenceBackend`.
        slot: the native ``edgert._edgert.Slot``, or a callable returning the current one or None (e.g.
            ``lambda: client.slot`` for an :class:`edgert.transport.EdgeClient`, whose slot is replaced when a
            new manifest arrives).
        preprocess: frame -> model input (default: the frame is the input), e.g. :func:`image_input`.
        postprocess: model output -> result (default: the output), e.g. :func:`argmax_labels`.
        poll_s: the builder also checks the slot's version this often (besides :meth:`on_update` and ``infer``).
        reject_nonfinite: refuse a version whose weights hold a NaN or an infinity.
        log: optional line logger (refusals and swaps); the ``edgert.infer`` logger is always used.
    """

    def __init__(self, backend: InferenceBackend, slot: SlotSource, *,
                 preprocess: Optional[Callable[[Any], np.ndarray]] = None,
                 postprocess: Optional[Callable[[np.ndarray], Any]] = None, poll_s: float = 0.05,
                 reject_nonfinite: bool = True, log: Optional[Callable[[str], None]] = None) -> None:
        self.backend = backend
        self._source: Callable[[], Any] = slot if callable(slot) and not hasattr(slot, "weights") else (lambda: slot)
        self.preprocess = preprocess
        self.postprocess = postprocess
        self.poll_s = poll_s
        self.reject_nonfinite = reject_nonfinite
        self._log = log or (lambda line: None)
        self._active: Optional[_Active] = None
        self._manifests: dict[int, Manifest] = {}  # id(slot) -> its checked manifest
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._changed = threading.Condition()
        #: refused versions: version -> :class:`RefusedVersion` (the previous session kept running)
        self.refused: dict[int, RefusedVersion] = {}
        self.last_error: Optional[RefusedVersion] = None
        self.swaps: list[Swap] = []

    # ---- setup ------------------------------------------------------------------------------------------
    def start(self) -> "DeviceRuntime":
        """Checks the slot's manifest against the backend, builds the current version's session (here, so
        that errors surface before the loop starts) and starts the builder thread.

        Raises:
            ValueError: the slot's manifest does not match the model (every mismatch listed), or its weights
                are not finite.
            RuntimeError: no slot yet (the callable returned None).
            Exception: whatever the backend raises building the first session.
        """
        if self._thread is not None:
            raise RuntimeError("DeviceRuntime.start: already started")
        slot = self._source()
        if slot is None:
            raise RuntimeError("DeviceRuntime.start: no model in the slot yet (no manifest received)")
        manifest = self._manifest_of(slot)
        snapshot = WeightsSnapshot.from_slot(slot, manifest)
        self._check_weights(snapshot)
        t0 = time.perf_counter()
        session = self.backend.prepare(snapshot)
        self._activate(_Active(session, slot), Swap(snapshot.version, t0, time.perf_counter() - t0, 0.0))
        self._thread = threading.Thread(target=self._builder, name="edgert-infer-builder", daemon=True)
        self._thread.start()
        return self

    def attach(self, client: Any) -> None:
        """Makes ``client`` (an :class:`edgert.transport.EdgeClient`) call :meth:`on_update` after each applied
        version, after its own ``on_version`` callback if it has one."""
        previous = client.on_version

        def notify(version: int) -> None:
            if previous is not None:
                previous(version)
            self.on_update(version)

        client.on_version = notify

    def stop(self) -> None:
        """Stops the builder thread (the active session stays usable)."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> "DeviceRuntime":
        return self if self._thread is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- any thread -------------------------------------------------------------------------------------
    def on_update(self, *_: object) -> None:
        """Tells the runtime the slot has a new version (never blocks). Fits ``EdgeClient(on_version=...)``
        and ``Slot.set_hook`` (whose hook runs inside ``Slot.apply``)."""
        self._wake.set()

    poll = on_update

    @property
    def version(self) -> int:
        """The version :meth:`infer` runs now."""
        active = self._active
        return active.session.version if active is not None else -1

    def wait_for_version(self, version: int, timeout: float = 10.0) -> bool:
        """Blocks until the active version is at least ``version``, or ``version`` is refused (True if it is
        active), or ``timeout`` seconds pass (False). For tests and tools, not for the frame loop."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self.version < version and version not in self.refused:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
        return self.version >= version

    # ---- inference thread -------------------------------------------------------------------------------
    def infer(self, frame: Any) -> Any:
        """The active model's result for ``frame`` (preprocessed and postprocessed); never waits for a swap."""
        return self.infer_versioned(frame)[0]

    def infer_versioned(self, frame: Any) -> tuple[Any, int]:
        """(:meth:`infer`'s result, the slot version that produced it)."""
        active = self._active  # one reference read: the whole frame runs on this session
        if active is None:
            raise RuntimeError("DeviceRuntime.infer: call start() first")
        slot = self._source()
        if slot is not active.slot or slot.version != active.session.version:
            self._wake.set()  # a newer version (or a new slot): the builder picks it up
        x = frame if self.preprocess is None else self.preprocess(frame)
        out = active.session.run(x)
        return (out if self.postprocess is None else self.postprocess(out)), active.session.version

    # ---- builder thread ---------------------------------------------------------------------------------
    def _builder(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self.poll_s)
            self._wake.clear()
            if self._stopping.is_set():
                return
            try:
                self._build_next()
            except Exception as exc:  # never let the builder die: report and keep polling
                logger.exception("edgert.infer builder: %s", exc)

    def _build_next(self) -> None:
        slot = self._source()
        active = self._active
        if slot is None or active is None:
            return
        version = slot.version
        if (slot is active.slot and version == active.session.version) or version in self.refused:
            return
        noticed = time.perf_counter()
        try:
            manifest = self._manifest_of(slot)
            snapshot = WeightsSnapshot.from_slot(slot, manifest)
            version = snapshot.version
            if version in self.refused:
                return
            self._check_weights(snapshot)
            session = self.backend.prepare(snapshot)
        except Exception as exc:
            self._refuse(version, exc)
            return
        self._activate(_Active(session, slot), Swap(version, noticed, time.perf_counter() - noticed, 0.0))

    def _activate(self, active: _Active, swap: Swap) -> None:
        self._active = active  # the swap: infer() reads this reference once per frame
        live = time.perf_counter()
        self.swaps.append(Swap(swap.version, swap.noticed_s, swap.build_s, live))
        self._log(f"{self.backend.name}: running slot version {swap.version} (built in {swap.build_s * 1e3:.1f} ms)")
        with self._changed:
            self._changed.notify_all()

    def _refuse(self, version: int, cause: BaseException) -> None:
        refusal = RefusedVersion(version, cause)
        self.refused[version] = refusal
        self.last_error = refusal
        logger.warning("%s", refusal)
        self._log(str(refusal))
        with self._changed:
            self._changed.notify_all()

    def _manifest_of(self, slot: Any) -> Manifest:
        key = id(slot)
        manifest = self._manifests.get(key)
        if manifest is None:
            manifest = slot_manifest(slot)
            self.backend.check_manifest(manifest)
            self._manifests = {key: manifest}  # only the newest slot's: an old id may be reused
        return manifest

    def _check_weights(self, snapshot: WeightsSnapshot) -> None:
        if self.reject_nonfinite:
            bad = snapshot.nonfinite()
            if bad:
                raise ValueError(f"version {snapshot.version}: non-finite weights in {bad}")


__all__ = ["DeviceRuntime", "RefusedVersion", "SlotSource", "Swap", "argmax_labels", "image_input"]
