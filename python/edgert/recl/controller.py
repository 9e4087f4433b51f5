"""RECL's controller: one model-update window for every camera that sent frames (Khani et al., NSDI 2023, Sec. 4).

Per window (:meth:`RECLController.run_window`), for the devices that uploaded sampled frames:

1. **label** every device's frames with the task's teacher;
2. **gating**: shortlist zoo experts for each device (``selection``: the gating network's top-K, ODIN's nearest
   clusters, every active expert, or none); an empty zoo shortlists nothing;
3. **safety check** (:mod:`edgert.recl.safety`): measure the shortlist, the device's current model and its last
   retrained model on the labelled frames; the best servable one is the **decision** (the model to send), handed
   to ``on_decision`` as soon as it is made (the network server ships it while retraining runs);
4. **retraining**: one job per device, started from the decision (``reuse=True``) or from the device's own lineage
   (``reuse=False``, AMS-style), all jobs of the window time-shared by the configured scheduler (RECL's iterative
   one by default) on the executor (in-process, or Ray), the device least recently trained served first (the
   controller carries a :class:`~edgert.recl.scheduler.LeastRecentlyTrained` order across windows, so a window
   too short for every job starves no device for good). The retrained model is not deployed now: it is the
   device's *last retrained model*, a candidate of its next safety check;
5. **admission**: each retrained model is proposed to the zoo with its accuracy gain over the best zoo candidate;
   promising ones queue and join the zoo ``gamma`` at a time (``alpha``, ``gamma``: :class:`ZooConfig`);
6. **gating update** when experts joined: every expert (old and new) is measured on the window's frames and a
   sub-sample of the task's frame history, and the gating network grows one output per new expert and is
   fine-tuned on that table (ODIN: the autoencoder is refitted and the new experts' clusters added);
7. **pruning**: experts chosen fewer than ``eta`` times in the task's last ``q`` selections leave the zoo, and
   their gating outputs go with them.

:class:`WindowReport` holds what happened, with a cost breakdown in seconds (labelling, gating, safety evaluation,
retraining, gating update, admission, pruning) for the evaluation's plots.

**Admission gain.** A retrained model's accuracy is measured on its job's held-out frames (the scheduler's last
evaluation), the only frames of the window it has not trained on. Its reference is the best zoo candidate of the
safety check; that candidate was measured on the whole window, so its held-out accuracy is estimated as the
retraining start's held-out accuracy plus the window-level difference between the two (exact when the start *is*
the best candidate, RECL's usual case; when the device's own model beat every candidate, the start is the
reference). With an empty shortlist the reference is the start model.

Frames are ``uint8 [N, H, W, 3]`` RGB; one controller serves one task and one frame size (the history and the
gating tables stack frames). Not thread-safe: one window at a time.
"""
from __future__ import annotations

import hashlib
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping, NamedTuple, Optional, Sequence

import numpy as np
import torch
from torch import nn

from edgert.recl.config import RECLConfig
from edgert.recl.gating import AccuracyTable, GatingNetwork, check_frames
from edgert.recl.odin import OdinSelector
from edgert.recl.safety import CURRENT, RETRAINED, Choice, OwnModel, SafetyChecker, SafetyResult, expert_key, sample_key
from edgert.recl.scheduler import (
    Executor,
    LeastRecentlyTrained,
    LocalExecutor,
    RayExecutor,
    ScheduleResult,
    make_scheduler,
)
from edgert.recl.task import Task, TrainableJob
from edgert.recl.tasks import split_holdout
from edgert.recl.zoo import Admission, ModelZoo, ZooError
from edgert.updates.manifest import Manifest
from edgert.updates.weights import load_weights, module_manifest, module_weights

Weights = dict[str, np.ndarray]


def weights_digest(weights: Mapping[str, np.ndarray], manifest: Manifest) -> str:
    """SHA-256 (hex) of ``weights`` laid out as a device slot holds them (the manifest's tensor order, float32)."""
    return hashlib.sha256(manifest.pack(weights)).hexdigest()


# ------------------------------------------------------------------------------------------------------ state


@dataclass
class DeviceState:
    """What the controller knows of one device.

    Attributes:
        device_id: its id.
        weights: the parameters the device runs (exactly: the server's mirror of its slot holds the same).
        source: where they came from: ``"initial"`` (the task's generic expert), ``"expert:<id>"`` or
            ``"retrained:<device>/<window>"``.
        expert_id: the zoo expert the device runs (None when its model is not, or no longer, a zoo expert).
        retrained: its last retrained model, not deployed (a candidate of the next safety check), or None.
        retrained_source: ``"retrained:<device>/<window>"`` of :attr:`retrained`.
        retrained_expert: the zoo expert its last retrained model became when admitted (then :attr:`retrained` is
            None and the expert is a candidate of the device's next safety check, whatever the selector says).
        windows: windows this device took part in.
        retrained_windows: windows in which a retraining job ran for it.
    """

    device_id: str
    weights: Weights
    source: str = "initial"
    expert_id: Optional[int] = None
    retrained: Optional[Weights] = None
    retrained_source: Optional[str] = None
    retrained_expert: Optional[int] = None
    windows: int = 0
    retrained_windows: int = 0


class FrameHistory:
    """A bounded ring buffer of frames and their teacher labels (the task's history; oldest out)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = int(capacity)
        self._frames: Optional[np.ndarray] = None
        self._labels: Optional[np.ndarray] = None
        self._next = 0
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, frames: np.ndarray, labels: np.ndarray) -> None:
        """Appends frames (``uint8 [n, H, W, 3]``, the history's frame size) with their labels."""
        if self.capacity == 0 or len(frames) == 0:
            return
        labels = np.asarray(labels)
        if self._frames is None or self._labels is None:
            self._frames = np.empty((self.capacity, *frames.shape[1:]), np.uint8)
            self._labels = np.empty((self.capacity, *labels.shape[1:]), labels.dtype)
        if frames.shape[1:] != self._frames.shape[1:] or labels.shape[1:] != self._labels.shape[1:]:
            raise ValueError(f"history: frames {list(frames.shape[1:])} / labels {list(labels.shape[1:])} do not match "
                             f"the history's {list(self._frames.shape[1:])} / {list(self._labels.shape[1:])}")
        for f, y in zip(frames[-self.capacity:], labels[-self.capacity:]):
            self._frames[self._next] = f
            self._labels[self._next] = y
            self._next = (self._next + 1) % self.capacity
            self._count = min(self._count + 1, self.capacity)

    def _order(self) -> np.ndarray:
        """Indices oldest first."""
        if self._count < self.capacity:
            return np.arange(self._count)
        return (np.arange(self.capacity) + self._next) % self.capacity

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Up to ``n`` frames and labels drawn uniformly without replacement (sorted oldest first)."""
        order = self._order()
        if n <= 0 or order.size == 0 or self._frames is None or self._labels is None:
            return np.empty((0,), np.uint8), np.empty((0,))
        pick = order[np.sort(rng.choice(order.size, size=min(n, order.size), replace=False))]
        return self._frames[pick].copy(), self._labels[pick].copy()

    def newest(self, n: int) -> np.ndarray:
        """The ``n`` newest frames (fewer if the history holds fewer), oldest first."""
        order = self._order()[-n:] if n > 0 else np.empty(0, np.int64)
        if order.size == 0 or self._frames is None:
            return np.empty((0,), np.uint8)
        return self._frames[order].copy()


class _Checked(NamedTuple):
    """A device's safety check: the result, the winner, its own zoo expert (if any), the key its model had in
    the check, whether the winner differs from it, and the weights it ran."""

    result: SafetyResult
    choice: Choice
    own_expert: Optional[int]
    before: str
    changed: bool
    previous: Weights


# ----------------------------------------------------------------------------------------------------- reports


@dataclass
class Cost:
    """Seconds a window spent, by stage (measured wall time), and the retraining compute charged by the scheduler
    (``retrain_compute_s`` = micro-windows x mu: the nominal GPU time, independent of this machine)."""

    label_s: float = 0.0
    gating_s: float = 0.0
    safety_s: float = 0.0
    retrain_s: float = 0.0
    gating_update_s: float = 0.0
    admission_s: float = 0.0
    prune_s: float = 0.0
    total_s: float = 0.0
    retrain_compute_s: float = 0.0


@dataclass
class Decision:
    """The model a device gets this window (handed to ``on_decision`` right after its safety check).

    Attributes:
        device, window: whose.
        key: the winning candidate (``"expert:<id>"``, ``"current"`` or ``"retrained"``).
        expert_id: the zoo expert (None for the device's own models).
        weights: the parameters to run (verified, for a zoo expert, right before being handed out).
        previous: the parameters the device ran before (what a delta is computed against).
        changed: whether ``weights`` differ from ``previous`` (False: nothing to send).
        accuracy: the decision's mean accuracy on the window's frames.
        digest: :func:`weights_digest` of ``weights``.
        report: the device's report of this window (filled in as the window goes on; a server may add its
            delivery details to ``report.delivery``).
    """

    device: str
    window: int
    key: str
    expert_id: Optional[int]
    weights: Weights
    previous: Weights
    changed: bool
    accuracy: float
    digest: str
    report: "DeviceReport"


@dataclass
class DeviceReport:
    """One device's part of a window.

    Attributes:
        device, frames: whose window, how many frames.
        candidates: the selector's shortlist (expert ids, best first).
        accuracy: the safety checker's table: mean accuracy on the window's frames per candidate key.
        before, before_accuracy: the device's model before the decision (its candidate key) and its accuracy.
        chosen, chosen_expert, chosen_accuracy: the decision.
        chosen_source: its lineage (``"expert:<id>"``, ``"retrained:<device>/<window>"``, ``"initial"``).
        skipped: shortlisted experts that could not be read or served (quarantined), with why.
        retrain_start: the candidate key retraining started from (None: no retraining this window).
        retrained_initial, retrained_final: the job's held-out accuracy before and after retraining.
        micro_windows: micro-windows the job trained.
        retrain_error: why the job failed (it then yields no model).
        accuracy_gain: the retrained model's admission gain (see the module docstring).
        promising, queued: whether it beat ``alpha`` (and entered the admission queue).
        delivery: filled in by a network server: how the decision reached the device.
        label_s, gating_s, safety_s: measured seconds of this device's teacher labels, shortlist and safety check
            (the window labels every device's frames first, then runs every shortlist, then the safety checks in
            device order, then retraining).
        holdout_accuracy: accuracy on the retraining job's held-out frames (the frames no model of this window
            trained on; empty when no job runs) of ``"before"`` (the model the device ran), ``"chosen"`` (the
            decision) and ``"last_retrained"`` (its last retrained model, when the safety check measured it): the
            responsiveness timeline's accuracies (:func:`edgert.recl.study.window_timeline`).
        holdout_index, holdout_frames: the held-out frames (indices into the window's frames, as the job splits
            them: :func:`~edgert.recl.tasks.split_holdout` with the job's seed) and the per-frame scores behind
            :attr:`holdout_accuracy`.
        retrain_trace: the job's micro-windows in the order they ran: ``start_s``/``end_s`` (the scheduler's
            nominal seconds from the trainer's start), ``accuracy`` (held-out accuracy after it; None if it
            failed), ``frame_scores`` (per held-out frame, in :attr:`holdout_index` order, when the job reports
            them) and ``wall_s`` (measured).
    """

    device: str
    frames: int
    candidates: list[int] = field(default_factory=list)
    accuracy: dict[str, float] = field(default_factory=dict)
    before: str = ""
    before_accuracy: float = math.nan
    chosen: str = ""
    chosen_expert: Optional[int] = None
    chosen_accuracy: float = math.nan
    chosen_source: str = ""
    skipped: dict[int, str] = field(default_factory=dict)
    retrain_start: Optional[str] = None
    retrained_initial: Optional[float] = None
    retrained_final: Optional[float] = None
    micro_windows: int = 0
    retrain_error: Optional[str] = None
    accuracy_gain: Optional[float] = None
    promising: bool = False
    queued: bool = False
    delivery: dict[str, Any] = field(default_factory=dict)
    label_s: float = 0.0
    gating_s: float = 0.0
    safety_s: float = 0.0
    holdout_accuracy: dict[str, float] = field(default_factory=dict)
    holdout_index: list[int] = field(default_factory=list)
    holdout_frames: dict[str, list[float]] = field(default_factory=dict)
    retrain_trace: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class WindowReport:
    """What one window did (:meth:`to_dict` is JSON-ready).

    Attributes:
        window: the controller's window number.
        devices: per device that sent frames.
        cost: seconds by stage.
        admitted: experts that joined the zoo this window (ids).
        pruned: experts pruned this window.
        quarantined: experts found damaged this window (skipped, never served).
        experts: active experts after the window; queued: models waiting for admission.
        scheduler: the retraining policy; schedule: its service order, budget, use and micro-windows per job.
        gating_update: each update of the selector this window (``reason``: ``sync`` for experts it never saw,
            ``admission``): experts added, frames labelled, fine-tuning steps.
    """

    window: int
    devices: dict[str, DeviceReport] = field(default_factory=dict)
    cost: Cost = field(default_factory=Cost)
    admitted: list[int] = field(default_factory=list)
    pruned: list[int] = field(default_factory=list)
    quarantined: list[int] = field(default_factory=list)
    experts: int = 0
    queued: int = 0
    scheduler: str = ""
    schedule: dict[str, Any] = field(default_factory=dict)
    gating_update: list[dict[str, Any]] = field(default_factory=list)

    @property
    def mean_chosen_accuracy(self) -> float:
        """Mean over devices of the decision's accuracy on the window's frames."""
        vals = [d.chosen_accuracy for d in self.devices.values()]
        return float(np.mean(vals)) if vals else math.nan

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["devices"] = {k: {**asdict(v), "skipped": {str(e): r for e, r in v.skipped.items()}}
                        for k, v in self.devices.items()}
        d["mean_chosen_accuracy"] = self.mean_chosen_accuracy
        return d


OnDecision = Callable[[Decision], None]


# -------------------------------------------------------------------------------------------------- controller


class RECLController:
    """RECL's controller for one task (see the module docstring for the window flow).

    Args:
        task: the vision task (teacher, experts, accuracy, retraining jobs).
        zoo: the expert zoo (shared with other controllers/processes is fine; this one serves ``task.name``).
        config: :class:`RECLConfig` (its zoo settings should match ``zoo.config``: admission and pruning use the
            zoo's own).
        executor: where retraining micro-windows run; default from ``config.executor`` (in-process, or a Ray
            executor created on first use and shut down by :meth:`close`).
        gating: a gating network to use (e.g. sharing a feature cache); default built from ``config.gating`` when
            ``config.selection == "gating"``.
        odin: an ODIN selector to use; default built from ``config.odin`` when ``config.selection == "odin"``.
        log: optional line logger.

    Devices are registered on first sight (or with :meth:`register_device`) and start on the task's generic
    expert (``task.new_expert(config.seed)``).
    """

    def __init__(self, task: Task, zoo: ModelZoo, config: RECLConfig = RECLConfig(),
                 executor: Optional[Executor] = None, *, gating: Optional[GatingNetwork] = None,
                 odin: Optional[OdinSelector] = None, log: Optional[Callable[[str], None]] = None) -> None:
        self.task = task
        self.zoo = zoo
        self.config = config
        self._log = log or (lambda line: None)
        self.safety = SafetyChecker(task, zoo)
        self.scheduler = make_scheduler(config.scheduler, config.retraining)
        self.service = LeastRecentlyTrained()  # who the trainer serves first, rotating across windows
        self._executor = executor
        self._owns_executor = False
        generic = task.new_expert(config.seed)
        self.manifest = module_manifest(generic, tag=task.tag)
        self.generic: Weights = module_weights(generic)
        self._template = generic  # its buffers (BatchNorm statistics) go with every retraining start
        self.gating: Optional[GatingNetwork] = None
        self.odin: Optional[OdinSelector] = None
        if config.selection == "gating":
            self.gating = gating if gating is not None else GatingNetwork((), config.gating)
        elif config.selection == "odin":
            self.odin = odin if odin is not None else OdinSelector(config.odin)
        self.devices: dict[str, DeviceState] = {}
        self.history = FrameHistory(config.history_frames)
        self.frame_shape: Optional[tuple[int, ...]] = None
        self.next_window = 0
        self._expert_frames: dict[tuple[str, int], np.ndarray] = {}  # ODIN: frames of queued/admitted models
        self.reports: list[WindowReport] = []

    # ---- lifecycle ---------------------------------------------------------------------------
    @property
    def executor(self) -> Executor:
        """The executor of retraining micro-windows (created on first use from ``config.executor``)."""
        if self._executor is None:
            if self.config.executor == "ray":
                self._executor = RayExecutor(self.config.ray_address, self.config.ray_num_cpus)
            else:
                self._executor = LocalExecutor()
            self._owns_executor = True
        return self._executor

    def close(self) -> None:
        """Shuts down an executor this controller created (Ray); the zoo stays open (it is the caller's)."""
        if self._owns_executor and isinstance(self._executor, RayExecutor):
            self._executor.shutdown()
        self._executor = None
        self._owns_executor = False

    def __enter__(self) -> "RECLController":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- devices -----------------------------------------------------------------------------
    def register_device(self, device_id: str, weights: Optional[Mapping[str, Any]] = None) -> DeviceState:
        """Registers ``device_id`` running ``weights`` (default: the generic expert); returns its state.

        Raises:
            ValueError: an empty id, or weights that do not match the task's expert architecture.
        """
        if not isinstance(device_id, str) or not device_id:
            raise ValueError(f"device_id: expected a non-empty string, got {device_id!r}")
        w = self._as_weights(weights) if weights is not None else {k: v.copy() for k, v in self.generic.items()}
        state = DeviceState(device_id, w)
        self.devices[device_id] = state
        return state

    def device(self, device_id: str) -> DeviceState:
        """The state of a registered device (KeyError otherwise)."""
        return self.devices[device_id]

    def _as_weights(self, weights: Mapping[str, Any]) -> Weights:
        out = {}
        for spec in self.manifest.tensors:
            if spec.name not in weights:
                raise ValueError(f"weights: missing tensor {spec.name!r} of the task's expert")
            v = weights[spec.name]
            arr = np.array(v.detach().cpu().numpy() if hasattr(v, "detach") else v, dtype=np.float32)
            if tuple(arr.shape) != tuple(spec.shape):
                raise ValueError(f"weights: tensor {spec.name!r} has shape {list(arr.shape)}, expected "
                                 f"{list(spec.shape)}")
            out[spec.name] = arr
        unknown = sorted(set(weights) - {s.name for s in self.manifest.tensors})
        if unknown:
            raise ValueError(f"weights: tensors {unknown} are not in the task's expert")
        return out

    def digest(self, weights: Mapping[str, np.ndarray]) -> str:
        """:func:`weights_digest` under the task's manifest."""
        return weights_digest(weights, self.manifest)

    # ---- validation --------------------------------------------------------------------------
    def check_window(self, frames: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The window's frames, checked (nothing changes when this raises).

        Raises:
            ValueError: no device, a device with no frames or malformed ones, too many frames, or a frame size
                other than the controller's (fixed by the first window).
        """
        if not frames:
            raise ValueError("window: no device sent frames")
        out: dict[str, np.ndarray] = {}
        shape = self.frame_shape
        for device, f in frames.items():
            arr = self._check_upload(device, f, "frames", shape)
            if arr.shape[0] < 2 and self._retrains(device):
                raise ValueError(f"frames of {device}: a window needs at least 2 frames (one to train on, one held "
                                 f"out), got {arr.shape[0]}")
            shape = tuple(arr.shape[1:])
            out[device] = arr
        return out

    def _check_upload(self, device: Any, frames: np.ndarray, what: str, shape: Optional[tuple[int, ...]]
                      ) -> np.ndarray:
        """One device's uploaded frames, checked: a non-empty device id, frames as :func:`check_frames` wants
        them, at most a window's worth, of frame size ``shape`` (None: any). Raises ValueError naming the problem."""
        if not isinstance(device, str) or not device:
            raise ValueError(f"{what}: device ids must be non-empty strings, got {device!r}")
        arr = check_frames(frames, f"{what} of {device}")
        if arr.shape[0] > self.config.max_window_frames:
            raise ValueError(f"{what} of {device}: {arr.shape[0]} frames, at most {self.config.max_window_frames} "
                             f"per window")
        if shape is not None and tuple(arr.shape[1:]) != shape:
            raise ValueError(f"{what} of {device}: {arr.shape[2]}x{arr.shape[1]}, expected {shape[1]}x{shape[0]} "
                             f"(one frame size per controller)")
        return arr

    def check_scene_cut(self, device: str, frames: np.ndarray) -> np.ndarray:
        """A scene-change upload's frames, checked as :meth:`reselect` wants them (nothing changes when this
        raises ValueError)."""
        return self._check_upload(device, frames, "scene-change frames", self.frame_shape)

    def _retrains(self, device: str) -> bool:
        state = self.devices.get(device)
        return self.config.retrain or state is None or state.retrained_windows == 0

    # ---- the window --------------------------------------------------------------------------
    def run_window(self, frames: Mapping[str, np.ndarray], window: Optional[int] = None,
                   on_decision: Optional[OnDecision] = None) -> WindowReport:
        """Runs one model-update window over the devices in ``frames`` (device id -> its sampled frames) and
        returns its report. ``on_decision`` is called with each device's :class:`Decision` as soon as its safety
        check is done (before retraining). ``window`` defaults to :attr:`next_window`.

        Raises:
            ValueError: bad frames (see :meth:`check_window`): then nothing changed.
        """
        t_start = time.perf_counter()
        batch = self.check_window(frames)
        w = self.next_window if window is None else int(window)
        self.next_window = max(self.next_window, w + 1)
        if self.frame_shape is None:
            self.frame_shape = tuple(next(iter(batch.values())).shape[1:])
        rep = WindowReport(w, scheduler=self.config.scheduler)
        for device, f in batch.items():
            if device not in self.devices:
                self.register_device(device)
            self.zoo.record_window(device, w, frames=int(f.shape[0]))
            rep.devices[device] = DeviceReport(device, int(f.shape[0]))

        # 1. labels
        t0 = time.perf_counter()
        labels = {}
        for d, f in batch.items():
            t1 = time.perf_counter()
            labels[d] = np.asarray(self.task.label(f))
            rep.devices[d].label_s = time.perf_counter() - t1
        rep.cost.label_s = time.perf_counter() - t0

        # selectors follow the zoo (experts pruned or quarantined elsewhere; experts they never saw)
        self._sync_selectors(batch, labels, rep)

        # 2. gating
        t0 = time.perf_counter()
        shortlist: dict[str, list[int]] = {}
        for d, f in batch.items():
            t1 = time.perf_counter()
            shortlist[d] = self._shortlist(f)
            rep.devices[d].gating_s = time.perf_counter() - t1
        rep.cost.gating_s = time.perf_counter() - t0

        # 3. safety check and decision
        t0 = time.perf_counter()
        checks: dict[str, SafetyResult] = {}
        starts: dict[str, Optional[tuple[str, Weights]]] = {}
        for d, f in batch.items():
            t1 = time.perf_counter()
            checks[d], starts[d] = self._decide(d, w, f, labels[d], shortlist[d], rep.devices[d], on_decision)
            rep.devices[d].safety_s = time.perf_counter() - t1
        rep.cost.safety_s = time.perf_counter() - t0
        rep.quarantined = sorted({e for c in checks.values() for e in c.skipped
                                  if self.zoo.expert(e).status == "quarantined"})

        # 4. retraining
        t0 = time.perf_counter()
        trained = self._retrain(w, batch, labels, starts, rep)
        rep.cost.retrain_s = time.perf_counter() - t0

        # 5. admission
        t0 = time.perf_counter()
        admitted: list[int] = []
        for d, model in trained.items():
            admission = self._propose(d, w, model, checks[d], batch[d], rep.devices[d])
            admitted += [e.id for e in admission.admitted]
            for info in admission.admitted:
                self._link(info.id, f"retrained:{info.device}/{info.window}")
        rep.admitted = sorted(admitted)
        rep.cost.admission_s = time.perf_counter() - t0

        # 6. gating update
        t0 = time.perf_counter()
        if admitted:
            grown = self._grow_selectors(admitted, w, batch, labels, checks)
            rep.gating_update.append({"reason": "admission", **grown})
        rep.cost.gating_update_s += time.perf_counter() - t0
        self._remember(batch, labels)

        # 7. pruning
        t0 = time.perf_counter()
        rep.pruned = self.zoo.prune(w)
        self._drop_from_selectors(rep.pruned)
        for state in self.devices.values():
            if state.expert_id in rep.pruned:
                state.expert_id = None  # the device keeps running its copy; it is no longer a zoo expert
        rep.cost.prune_s = time.perf_counter() - t0

        rep.experts = len(self.zoo.experts(self.task.name))
        rep.queued = len(self.zoo.queued(self.task.name))
        rep.cost.total_s = time.perf_counter() - t_start
        self.reports.append(rep)
        self._log(f"window {w}: {len(batch)} devices, chosen "
                  f"{ {d: r.chosen for d, r in rep.devices.items()} }, admitted {rep.admitted}, pruned {rep.pruned}")
        return rep

    # ---- scene-change uploads ------------------------------------------------------------------
    def reselect(self, device: str, frames: np.ndarray, window: Optional[int] = None) -> Decision:
        """Selection only, between windows: the device saw a scene change and uploaded the frames it sampled since
        (RECL's lever for responsiveness: a zoo expert can be sent seconds after the change instead of after the
        window's upload). Labels ``frames``, shortlists experts for them, safety-checks the shortlist, the device's
        current model and its last retrained model on them, and makes the best the device's model, like steps 1-3
        of :meth:`run_window` for one device; nothing is retrained, admitted or pruned. The window's own upload
        later runs the whole window as usual (the model chosen here is then its current model).

        ``window``: the window the frames belong to (zoo records; default the one in progress,
        :attr:`next_window`). The returned decision's report holds the shortlist, the accuracy table (on these
        frames) and the measured ``label_s``, ``gating_s`` and ``safety_s``.

        Raises:
            ValueError: malformed frames, none, more than a window holds, or another frame size than the
                controller's; then nothing changed.
        """
        arr = self.check_scene_cut(device, frames)
        w = self.next_window if window is None else int(window)
        state = self.devices.get(device) or self.register_device(device)
        report = DeviceReport(device, int(arr.shape[0]))
        t0 = time.perf_counter()
        labels = np.asarray(self.task.label(arr))
        report.label_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        shortlist = self._shortlist(arr)
        report.gating_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        c = self._check(state, w, arr, labels, shortlist, report)
        self._adopt(state, c.choice, c.own_expert)
        report.chosen_source = state.source
        report.safety_s = time.perf_counter() - t0
        self._log(f"scene change on {device} (window {w}): {len(arr)} frames, chosen {c.choice.key}")
        return Decision(device, w, c.choice.key, c.choice.expert_id, c.choice.weights, c.previous, c.changed,
                        c.choice.accuracy, self.digest(c.choice.weights), report)

    # ---- stages ------------------------------------------------------------------------------
    def _shortlist(self, frames: np.ndarray) -> list[int]:
        sel = self.config.selection
        if sel == "none":
            return []
        if sel == "oracle":
            return [e.id for e in self.zoo.experts(self.task.name)]
        if sel == "gating":
            assert self.gating is not None
            return self.gating.select(frames, self.config.K)
        assert self.odin is not None
        return self.odin.select(frames, self.config.K)

    def _candidates(self, state: DeviceState, shortlist: list[int]) -> tuple[list[int], Optional[int]]:
        """The safety check's experts: the shortlist plus the device's last retrained model if it joined the zoo
        (and is still active); returns them and that expert's id (None if none)."""
        own_expert = state.retrained_expert
        if own_expert is not None and self.zoo.expert(own_expert).status != "active":
            own_expert = state.retrained_expert = None
        candidates = shortlist + ([own_expert] if own_expert is not None and own_expert not in shortlist else [])
        return candidates, own_expert

    def _check(self, state: DeviceState, window: int, frames: np.ndarray, labels: np.ndarray, shortlist: list[int],
               report: DeviceReport) -> _Checked:
        """The safety check of ``state``'s device on ``frames`` (the shortlist, its own expert, its current and
        last retrained models), recorded in ``report``; the device does not adopt the choice yet."""
        current = OwnModel(state.weights, state.expert_id)
        candidates, own_expert = self._candidates(state, shortlist)
        result = self.safety.check(state.device_id, window, frames, candidates, current, state.retrained, labels)
        choice = result.choice
        assert choice is not None  # the device's current model is always measurable and servable
        before = expert_key(state.expert_id) if state.expert_id is not None and expert_key(
            state.expert_id) in result.accuracy else CURRENT
        report.candidates = list(shortlist)
        report.accuracy = dict(result.accuracy)
        report.before, report.before_accuracy = before, result.accuracy[before]
        report.chosen, report.chosen_expert, report.chosen_accuracy = choice.key, choice.expert_id, choice.accuracy
        report.skipped = dict(result.skipped)
        changed = not (choice.key == before or _same(choice.weights, state.weights))
        return _Checked(result, choice, own_expert, before, changed, state.weights)

    @staticmethod
    def _adopt(state: DeviceState, choice: Choice, own_expert: Optional[int]) -> None:
        """The device now runs ``choice``: its weights, expert id and lineage."""
        if choice.key == RETRAINED:
            state.source = state.retrained_source or "retrained"
            state.retrained, state.retrained_source = None, None
        elif choice.expert_id is not None and choice.expert_id == own_expert:
            state.source = state.retrained_source or expert_key(choice.expert_id)
            state.retrained_expert, state.retrained_source = None, None
        elif choice.expert_id is not None:
            state.source = expert_key(choice.expert_id)
        state.weights = choice.weights
        state.expert_id = choice.expert_id

    def _decide(self, device: str, window: int, frames: np.ndarray, labels: np.ndarray, shortlist: list[int],
                report: DeviceReport, on_decision: Optional[OnDecision]
                ) -> tuple[SafetyResult, Optional[tuple[str, Weights]]]:
        state = self.devices[device]
        result, choice, own_expert, before, changed, previous = self._check(state, window, frames, labels, shortlist,
                                                                            report)
        # the device's own lineage (reuse=False starts there): its current model or its last retrained one
        retrained_key = expert_key(own_expert) if own_expert is not None else RETRAINED
        own = [k for k in result.ranking if k in (before, retrained_key)]
        own_key = own[0] if own else before
        own_weights = state.weights
        if own_key == RETRAINED and state.retrained is not None:
            own_weights = state.retrained
        elif own_key != before and own_key == retrained_key and own_expert is not None:
            if own_key == choice.key:
                own_weights = choice.weights
            else:
                try:
                    own_weights = self.zoo.weights(own_expert)
                except ZooError:
                    own_key = before
        self._adopt(state, choice, own_expert)
        state.windows += 1
        report.chosen_source = state.source
        if self._retrains(device):
            _, val = split_holdout(len(frames), self.config.holdout, self._job_seed(device, window))
            measured = {"before": before, "chosen": choice.key, "last_retrained": retrained_key}
            report.holdout_index = [int(i) for i in val]
            report.holdout_frames = {name: [float(v) for v in result.per_frame[key][val]]
                                     for name, key in measured.items() if key in result.per_frame}
            report.holdout_accuracy = {name: float(np.mean(v)) for name, v in report.holdout_frames.items()}
        decision = Decision(device, window, choice.key, choice.expert_id, choice.weights, previous, changed,
                            choice.accuracy, self.digest(choice.weights), report)
        if on_decision is not None:
            on_decision(decision)
        if not self._retrains(device):
            return result, None
        if self.config.reuse:
            return result, (choice.key, choice.weights)
        return result, (own_key, {k: v.copy() for k, v in own_weights.items()})

    def _start_state(self, weights: Weights) -> dict[str, torch.Tensor]:
        """A full ``state_dict`` for a retraining job: ``weights`` as parameters, the generic expert's buffers."""
        load_weights(self._template, weights)
        return {k: v.detach().clone() for k, v in self._template.state_dict().items()}

    def _job_seed(self, device: str, window: int) -> int:
        digest = hashlib.sha256(f"{self.config.seed}/{device}/{window}".encode()).digest()
        return int.from_bytes(digest[:4], "little")

    def _retrain(self, window: int, batch: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray],
                 starts: Mapping[str, Optional[tuple[str, Weights]]], rep: WindowReport) -> dict[str, Weights]:
        jobs = []
        for d, start in starts.items():
            if start is None:
                continue
            rep.devices[d].retrain_start = start[0]
            jobs.append(self.task.retraining_job(d, self._start_state(start[1]), batch[d], labels[d],
                                                 holdout=self.config.holdout, seed=self._job_seed(d, window)))
            self.devices[d].retrained_windows += 1
        if not jobs:
            return {}
        order = self.service.order([j.job_id for j in jobs])
        result: ScheduleResult = self.scheduler.run(jobs, self.executor, order)
        self.service.record(result)
        rep.cost.retrain_compute_s = result.used_s
        rep.schedule = {"order": order, "budget_units": result.budget_units, "used_units": result.used_units,
                        "profile_units": result.profile_units, "micro_windows": dict(result.micro_windows),
                        "failed": dict(result.failed), "wall_s": result.wall_s}
        trained: dict[str, Weights] = {}
        for d in starts:
            if starts[d] is None:
                continue
            r = rep.devices[d]
            r.retrained_initial = result.initial_accuracy.get(d)
            r.retrained_final = result.final_accuracy.get(d)
            r.micro_windows = int(result.micro_windows.get(d, 0))
            r.retrain_trace = [{"start_s": m.start_s, "end_s": m.end_s, "accuracy": m.accuracy_after,
                                "frame_scores": None if m.frame_scores is None else list(m.frame_scores),
                                "wall_s": m.wall_s} for m in result.trace if m.job_id == d and m.kind == "train"]
            if d in result.failed:
                r.retrain_error = result.failed[d]
            if r.micro_windows == 0:
                continue  # nothing trained (failed first, or no budget): no new model
            job = result.jobs[d]
            if not isinstance(job, TrainableJob):
                raise TypeError(f"task {self.task.name!r}: its retraining jobs ({type(job).__name__}) must expose "
                                f"model_state() (TrainableJob: the trained state_dict) for the controller to keep "
                                f"the model")
            state = job.model_state()
            model = self._as_weights({s.name: state[s.name] for s in self.manifest.tensors})
            trained[d] = model
            dev = self.devices[d]
            dev.retrained, dev.retrained_source, dev.retrained_expert = model, f"retrained:{d}/{window}", None
        return trained

    def _propose(self, device: str, window: int, model: Weights, check: SafetyResult, frames: np.ndarray,
                 report: DeviceReport) -> Admission:
        if report.retrained_final is None or report.retrained_initial is None:
            return Admission(False, None, ())
        gain = report.retrained_final - report.retrained_initial
        experts = check.expert_accuracy()
        start = report.retrain_start
        if experts and start is not None and start in check.accuracy:
            reference = max(experts.values())
            gain -= max(0.0, reference - check.accuracy[start])
        report.accuracy_gain = float(gain)
        admission = self.zoo.propose(model, gain, task=self.task.name, tag=self.task.tag, device=device,
                                     window=window)
        report.promising = admission.promising
        report.queued = admission.queue_id is not None
        if admission.promising and self.odin is not None:
            self._expert_frames[(device, window)] = _spread(frames, self.config.odin.frames_per_expert)
        return admission

    def _link(self, expert_id: int, source: str) -> None:
        """An admitted expert is some device's retrained model: that device's state now names the expert."""
        for state in self.devices.values():
            if state.retrained_source == source and state.retrained is not None:
                state.retrained, state.retrained_expert = None, expert_id
            if state.source == source and self.zoo.config.value_coding in (None, "fp32"):
                state.expert_id = expert_id  # the device runs exactly the expert's (losslessly stored) weights

    # ---- selectors ---------------------------------------------------------------------------
    def _sync_selectors(self, batch: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray],
                        rep: WindowReport) -> None:
        active = {e.id for e in self.zoo.experts(self.task.name)}
        held = set(self.gating.expert_ids) if self.gating is not None else (
            set(self.odin.expert_ids) if self.odin is not None else set())
        self._drop_from_selectors(sorted(held - active))
        if self.gating is not None:
            missing = sorted(active - held)
            if missing:  # experts the network never saw (a seeded zoo, another controller's admissions)
                t0 = time.perf_counter()
                grown = self._grow_selectors(missing, rep.window, batch, labels, {})
                rep.gating_update.append({"reason": "sync", **grown})
                rep.cost.gating_update_s += time.perf_counter() - t0

    def _drop_from_selectors(self, ids: Sequence[int]) -> None:
        if self.gating is not None:
            gone = [e for e in ids if e in set(self.gating.expert_ids)]
            if gone:
                self.gating.remove_experts(gone)
        if self.odin is not None:
            for e in ids:
                if e in self.odin.clusters:
                    self.odin.remove_expert(e)

    def _grow_selectors(self, new: Sequence[int], window: int, batch: Mapping[str, np.ndarray],
                        labels: Mapping[str, np.ndarray], checks: Mapping[str, SafetyResult]) -> dict[str, Any]:
        """The incremental update when ``new`` experts join (see the module docstring)."""
        if self.gating is not None:
            return self._grow_gating(list(new), window, batch, labels, checks)
        if self.odin is not None:
            return self._grow_odin(list(new), batch)
        return {}

    def _grow_gating(self, new: list[int], window: int, batch: Mapping[str, np.ndarray],
                     labels: Mapping[str, np.ndarray], checks: Mapping[str, SafetyResult]) -> dict[str, Any]:
        assert self.gating is not None
        net = self.gating
        new = [e for e in new if e not in set(net.expert_ids)]
        segments: list[tuple[Optional[str], np.ndarray, np.ndarray]] = [(d, batch[d], labels[d]) for d in batch]
        rng = np.random.default_rng([self.config.seed, window, 17])
        hist_f, hist_y = self.history.sample(self.config.history_samples, rng)
        if len(hist_f):
            segments.append((None, hist_f, hist_y))
        columns: dict[int, np.ndarray] = {}
        broken: list[int] = []
        measured = 0
        for e in net.expert_ids + new:
            key = expert_key(e)
            weights: Optional[Weights] = None
            col = []
            for d, f, y in segments:
                known = checks[d].per_frame.get(key) if d is not None and d in checks else None
                if known is None:
                    if weights is None:
                        try:
                            weights = self.zoo.weights(e)
                        except ZooError:  # quarantined by the zoo: it leaves the selector
                            broken.append(e)
                            break
                    known = self.safety.measure(weights, f, y)
                    measured += len(f)
                col.append(np.asarray(known, np.float32))
            if e not in broken:
                columns[e] = np.concatenate(col)
        stale = [e for e in broken if e in set(net.expert_ids)]
        if stale:
            net.remove_experts(stale)
        added = [e for e in new if e not in broken]
        steps = 0
        if added:
            ids = net.expert_ids + added
            table = AccuracyTable(np.concatenate([s[1] for s in segments]), tuple(ids),
                                  np.stack([columns[e] for e in ids], axis=1))
            result = net.add_experts(added, table) if net.expert_ids else net.fit(table)
            steps = len(result.losses)
            for d in batch:  # the new experts' measured accuracy on each device window, for the zoo's table
                rows = _rows(segments, d)
                for e in added:
                    self.zoo.record_accuracy(e, sample_key(d, window), float(columns[e][rows].mean()), source="gating")
        return {"added": added, "frames": int(sum(len(s[1]) for s in segments)), "history_frames": int(len(hist_f)),
                "measured_frames": measured, "steps": steps, "broken": broken}

    def _grow_odin(self, new: list[int], batch: Mapping[str, np.ndarray]) -> dict[str, Any]:
        assert self.odin is not None
        window_frames = np.concatenate(list(batch.values()))
        fit_frames = self.history.newest(self.config.odin_fit_frames)
        fit = np.concatenate([fit_frames, window_frames]) if len(fit_frames) else window_frames
        self.odin.fit(fit)
        added = []
        for e in new:
            info = self.zoo.expert(e)
            frames = self._expert_frames.pop((info.device, info.window), None)
            if frames is None:
                continue  # ODIN clusters an expert by its training frames; unknown ones are never selected
            self.odin.add_expert(e, frames)
            added.append(e)
        return {"added": added, "frames": int(len(fit))}

    def _remember(self, batch: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray]) -> None:
        n = self.config.history_per_window
        for d, f in batch.items():
            idx = _spread_index(len(f), n)
            self.history.add(f[idx], labels[d][idx])


def _same(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def _spread_index(n: int, k: int) -> np.ndarray:
    if k <= 0:
        return np.empty(0, np.int64)
    if n <= k:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, k).round().astype(np.int64))


def _spread(frames: np.ndarray, k: int) -> np.ndarray:
    return frames[_spread_index(len(frames), k)].copy()


def _rows(segments: Sequence[tuple[Optional[str], np.ndarray, np.ndarray]], device: str) -> np.ndarray:
    start = 0
    for d, f, _ in segments:
        if d == device:
            return np.arange(start, start + len(f))
        start += len(f)
    return np.empty(0, np.int64)


def as_module(task: Task, weights: Mapping[str, np.ndarray], seed: int = 0) -> nn.Module:
    """The task's expert architecture (``task.new_expert(seed)``) holding ``weights``."""
    module = task.new_expert(seed)
    load_weights(module, weights)
    return module


__all__ = ["Cost", "Decision", "DeviceReport", "DeviceState", "FrameHistory", "OnDecision", "RECLController",
           "WindowReport", "as_module", "weights_digest"]
