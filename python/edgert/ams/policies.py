"""What the AMS server does with a device's labelled upload: one small policy object per scheme.

* :class:`GradientGuidedTraining` (``trainer="ams"``): append the samples to the device's buffer, train
  ``K`` Adam iterations on minibatches from the last ``T_horizon`` seconds, changing only the coordinates
  the selection rule picked (gradient-guided gamma = 5 %; ``selection.strategy="full"`` is full-model
  streaming), and send their deltas.
* :class:`JustInTimeTraining` (``trainer="jit"``): train on the newest frame until the student reaches a
  target mIoU on it, then send the whole model.
* :class:`RemoteInference` (``trainer="remote"``): no model at all; every uploaded frame's label map goes back
  in a LABELS frame (the device tracks it with optical flow, :mod:`edgert.ams.flow`).

A policy sees the server only through :meth:`AMSServer.add_samples`, :meth:`AMSServer.finish_phase`,
:meth:`AMSServer.control` and its model server, so new schemes need no change to the server.

A training policy's phase is a :class:`PhasePlan` made on the server (every random choice: minibatches,
coordinate set) and a pure training function of (student copy, optimizer state, the plan's frames and
labels, seed), so that the server can run it in place (``AMSConfig.executor = "thread"``) or as a task on
Ray (``"ray"``, :func:`train_phase_task`) with bit-identical weights.
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Protocol

import numpy as np
import torch
from torch import nn

from edgert.ams.protocol import AMSFrame, Control, SampleUpload, UploadStatus, encode_labels
from edgert.updates import AdamConfig, MaskedAdam, TensorUpdate, parameter_delta
from edgert.vision.distill import distill_step, predict_labels
from edgert.vision.metrics import confusion_matrix, mean_iou

if TYPE_CHECKING:
    from edgert.ams.config import AMSConfig
    from edgert.ams.server import AMSServer, DeviceState


class UploadPolicy(Protocol):
    """Handles one decoded, teacher-labelled upload of one device and returns the CONTROL answer."""

    def check(self, server: "AMSServer") -> None:
        """Raises ValueError when the policy cannot serve this server's student/teacher."""
        ...

    def handle(self, server: "AMSServer", dev: "DeviceState", upload: SampleUpload, frames: np.ndarray,
               labels: np.ndarray) -> Control:
        """``frames`` ``uint8 [N, H, W, 3]`` and the teacher's ``labels`` ``[N, H, W]`` of ``upload``."""
        ...


def distill(dev: "DeviceState", frames: np.ndarray, labels: np.ndarray) -> float:
    """One distillation step of the device's student (BatchNorm statistics frozen); returns the loss."""
    return distill_step(dev.model, dev.optimizer, frames, labels.astype(np.int64), freeze_bn=True).loss


@dataclass
class PhasePlan:
    """A phase's training, fixed on the server before it runs.

    ``fn(model, optimizer, *args)`` trains ``model`` in place with ``optimizer`` (a :class:`MaskedAdam` over
    its parameters) and returns small statistics; it reads nothing else, so the same plan gives the same
    weights in this process and in a Ray worker. ``fn`` is a module-level function (it travels by reference)
    and ``args`` hold the phase's data (frames, labels, minibatch indices: numpy arrays). Torch's generator
    is seeded with ``seed`` for the phase (students with dropout train the same wherever they run).
    ``context`` is what the policy needs afterwards on the server (e.g. the coordinate masks) and never
    travels.
    """

    fn: Callable[..., Any]
    args: tuple[Any, ...]
    seed: int
    context: Any = None


def run_plan(plan: PhasePlan, model: nn.Module, optimizer: MaskedAdam) -> Any:
    """Runs ``plan`` on ``model`` and ``optimizer`` in place (under the phase's torch seed); returns its stats."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(plan.seed)
        return plan.fn(model, optimizer, *plan.args)


def train_phase_task(fn: Callable[..., Any], args: tuple[Any, ...], seed: int, model: nn.Module,
                     optimizer_state: Mapping[str, Any], adam: AdamConfig,
                     threads: Optional[int]) -> tuple[dict[str, torch.Tensor], dict[str, Any], Any]:
    """A phase's training as a task (:mod:`edgert.harness.executors`): ``model`` (the device's student copy,
    arrived pickled) and a :class:`MaskedAdam` rebuilt from ``optimizer_state`` are trained by
    :func:`run_plan` on ``threads`` torch threads (``None``: as they are).

    Returns ``(parameters by name, optimizer state, stats)``: what the server loads back into the device's
    copy before it computes and publishes the update, exactly as if the phase had trained there.
    """
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        optimizer = MaskedAdam([p for _, p in model.named_parameters()], adam)
        optimizer.load_state_dict(optimizer_state)
        stats = run_plan(PhasePlan(fn, args, seed), model, optimizer)
    finally:
        torch.set_num_threads(before)
    return {n: p.detach() for n, p in model.named_parameters()}, optimizer.state_dict(), stats


def iterate_minibatches(model: nn.Module, optimizer: MaskedAdam, frames: np.ndarray, labels: np.ndarray,
                        batches: list[np.ndarray]) -> list[float]:
    """AMS's K iterations: one distillation step (BatchNorm frozen) per index array of ``batches`` into
    ``frames`` ``uint8 [M, H, W, 3]`` and ``labels`` ``[M, H, W]``; returns the losses."""
    return [distill_step(model, optimizer, frames[idx], labels[idx].astype(np.int64), freeze_bn=True).loss
            for idx in batches]


def train_until_target(model: nn.Module, optimizer: MaskedAdam, frame: np.ndarray, label: np.ndarray,
                       num_classes: int, target_miou: float, max_iterations: int) -> bool:
    """Just-In-Time: distillation steps on one frame until the student's mIoU on it reaches ``target_miou``
    (at most ``max_iterations``); returns whether it trained at all."""
    if not frame.flags.writeable:  # read-only straight from Ray's object store; torch wants to own a copy
        frame = frame.copy()
    trained = False
    for _ in range(max_iterations):
        pred = predict_labels(model, frame[None])
        miou = mean_iou(confusion_matrix(label[None].astype(np.int64), pred, num_classes))
        if miou >= target_miou:
            break
        distill_step(model, optimizer, frame[None], label[None].astype(np.int64), freeze_bn=True)
        trained = True
    return trained


def phase_seed(seed: int, device_seed: int, phase: int) -> int:
    """The torch seed of a device's phase: the same in every process, independent of other devices."""
    return int(np.random.SeedSequence([seed & 0xFFFFFFFF, device_seed & 0xFFFFFFFF, phase & 0xFFFFFFFF])
               .generate_state(1, np.uint32)[0])


class TrainingPolicy(ABC):
    """A policy that trains the device's student copy and streams the change as one packet per phase.

    A phase is cut in three so its training can run elsewhere (``AMSConfig.executor = "ray"``): :meth:`plan`
    on the server (draws the minibatches and the coordinate set: every random choice), the plan's function
    on the student copy and its optimizer (here or in a task), and :meth:`updates` on the server again
    (the delta against the device's mirror).
    """

    def check(self, server: "AMSServer") -> None:  # noqa: B027 - optional hook, a no-op by default
        """Every student/teacher pair the server accepted can be trained: nothing to check by default."""

    def handle(self, server: "AMSServer", dev: "DeviceState", upload: SampleUpload, frames: np.ndarray,
               labels: np.ndarray) -> Control:
        server.add_samples(dev, upload, frames, labels)
        t0 = time.perf_counter()
        updates = self.train(server, dev, frames, labels)
        server.reports[dev.device_id].train_seconds += time.perf_counter() - t0
        return server.finish_phase(dev, upload.seq, updates)

    def train(self, server: "AMSServer", dev: "DeviceState", frames: np.ndarray,
              labels: np.ndarray) -> Optional[dict[str, TensorUpdate]]:
        """Trains ``dev.model`` on this phase here; returns the updates to publish (None: nothing to send)."""
        plan = self.plan(server, dev, frames, labels)
        if plan is None:
            return None
        started = time.time()
        stats = run_plan(plan, dev.model, dev.optimizer)
        server.reports[dev.device_id].train_spans.append((started, time.time()))
        return self.updates(server, dev, plan, stats)

    @abstractmethod
    def plan(self, server: "AMSServer", dev: "DeviceState", frames: np.ndarray,
             labels: np.ndarray) -> Optional[PhasePlan]:
        """The phase's training (None: nothing to train). Called after :meth:`AMSServer.add_samples`; may
        change the device's server-side state (its sampling generator, selector, optimizer masks)."""

    @abstractmethod
    def updates(self, server: "AMSServer", dev: "DeviceState", plan: PhasePlan,
                stats: Any) -> Optional[dict[str, TensorUpdate]]:
        """What to publish once ``dev.model`` holds the trained weights (None: nothing to send)."""


class GradientGuidedTraining(TrainingPolicy):
    """AMS (Algorithm 2): K iterations over the horizon buffer on the coordinates the selector chose."""

    def plan(self, server: "AMSServer", dev: "DeviceState", frames: np.ndarray,
             labels: np.ndarray) -> Optional[PhasePlan]:
        cfg = server.config
        n = len(dev.times)
        if n == 0:
            return None
        first = dev.phase == 1 or dev.optimizer.steps == 0
        masks = dev.selector.next_masks(None if first else dev.optimizer.accumulated)
        full = cfg.selection.strategy == "full"
        dev.optimizer.set_masks(None if full else masks)
        dev.optimizer.reset_accumulator()
        draws = [dev.rng.integers(0, n, size=min(cfg.batch_size, n)) if n > cfg.batch_size else np.arange(n)
                 for _ in range(cfg.iterations)]
        used = np.unique(np.concatenate(draws))  # only the frames the minibatches use travel
        buffer_frames, buffer_labels = list(dev.frames), list(dev.labels)
        batch_frames = np.stack([buffer_frames[i] for i in used])
        batch_labels = np.stack([buffer_labels[i] for i in used])
        batches = [np.searchsorted(used, d) for d in draws]
        return PhasePlan(iterate_minibatches, (batch_frames, batch_labels, batches),
                         phase_seed(cfg.seed, dev.device_seed, dev.phase),
                         None if full else dict(zip(dev.names, masks)))

    def updates(self, server: "AMSServer", dev: "DeviceState", plan: PhasePlan,
                stats: Any) -> Optional[dict[str, TensorUpdate]]:
        return parameter_delta(dev.model, server.models.mirror_of(dev.device_id), plan.context)


class JustInTimeTraining(TrainingPolicy):
    """Just-In-Time: train on the newest sample until its mIoU reaches the target, then send the whole model."""

    def plan(self, server: "AMSServer", dev: "DeviceState", frames: np.ndarray,
             labels: np.ndarray) -> Optional[PhasePlan]:
        cfg = server.config
        dev.optimizer.set_masks(None)
        return PhasePlan(train_until_target, (frames[-1], labels[-1], server.teacher.num_classes,
                                              cfg.jit_target_miou, cfg.jit_max_iterations),
                         phase_seed(cfg.seed, dev.device_seed, dev.phase))

    def updates(self, server: "AMSServer", dev: "DeviceState", plan: PhasePlan,
                stats: Any) -> Optional[dict[str, TensorUpdate]]:
        if not stats:
            return None
        return parameter_delta(dev.model, server.models.mirror_of(dev.device_id))


class RemoteInference:
    """Remote inference: one LABELS frame per uploaded frame (before the CONTROL answer), no training."""

    def check(self, server: "AMSServer") -> None:
        if server.teacher.num_classes > 256:
            raise ValueError(f"trainer 'remote' sends uint8 label maps: {server.teacher.num_classes} classes do "
                             f"not fit")

    def handle(self, server: "AMSServer", dev: "DeviceState", upload: SampleUpload, frames: np.ndarray,
               labels: np.ndarray) -> Control:
        rep = server.reports[dev.device_id]
        rep.phases += 1
        rep.samples += len(upload.times)
        for t, y in zip(upload.times, labels):
            body = encode_labels(upload.seq, t, y.astype(np.uint8))
            server.models.send_to(dev.device_id, AMSFrame.LABELS, body)
            rep.update_bytes += len(body) + 6
        rep.updates += len(upload.times)
        return server.control(dev, upload.seq, UploadStatus.OK)


def policy_for(config: "AMSConfig") -> UploadPolicy:
    """The policy of ``config.trainer`` (``ams``, ``jit`` or ``remote``)."""
    policies = {"ams": GradientGuidedTraining, "jit": JustInTimeTraining, "remote": RemoteInference}
    if config.trainer not in policies:
        raise ValueError(f"trainer: expected one of {sorted(policies)}, got {config.trainer!r}")
    return policies[config.trainer]()


__all__ = ["GradientGuidedTraining", "JustInTimeTraining", "PhasePlan", "RemoteInference", "TrainingPolicy",
           "UploadPolicy", "distill", "iterate_minibatches", "phase_seed", "policy_for", "run_plan",
           "train_phase_task", "train_until_target"]
