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
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Optional, Protocol

import numpy as np

from edgert.ams.protocol import AMSFrame, Control, SampleUpload, UploadStatus, encode_labels
from edgert.updates import TensorUpdate, parameter_delta
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


class TrainingPolicy(ABC):
    """A policy that trains the device's student copy and streams the change as one packet per phase."""

    def check(self, server: "AMSServer") -> None:  # noqa: B027 - optional hook, a no-op by default
        """Every student/teacher pair the server accepted can be trained: nothing to check by default."""

    def handle(self, server: "AMSServer", dev: "DeviceState", upload: SampleUpload, frames: np.ndarray,
               labels: np.ndarray) -> Control:
        server.add_samples(dev, upload, frames, labels)
        t0 = time.perf_counter()
        updates = self.train(server, dev, frames, labels)
        server.reports[dev.device_id].train_seconds += time.perf_counter() - t0
        return server.finish_phase(dev, upload.seq, updates)

    @abstractmethod
    def train(self, server: "AMSServer", dev: "DeviceState", frames: np.ndarray,
              labels: np.ndarray) -> Optional[dict[str, TensorUpdate]]:
        """Trains ``dev.model`` on this phase; returns the updates to publish (None: nothing to send)."""


class GradientGuidedTraining(TrainingPolicy):
    """AMS (Algorithm 2): K iterations over the horizon buffer on the coordinates the selector chose."""

    def train(self, server: "AMSServer", dev: "DeviceState", frames: np.ndarray,
              labels: np.ndarray) -> Optional[dict[str, TensorUpdate]]:
        cfg = server.config
        n = len(dev.times)
        if n == 0:
            return None
        first = dev.phase == 1 or dev.optimizer.steps == 0
        masks = dev.selector.next_masks(None if first else dev.optimizer.accumulated)
        full = cfg.selection.strategy == "full"
        dev.optimizer.set_masks(None if full else masks)
        dev.optimizer.reset_accumulator()
        buffer_frames, buffer_labels = list(dev.frames), list(dev.labels)
        for _ in range(cfg.iterations):
            idx = dev.rng.integers(0, n, size=min(cfg.batch_size, n)) if n > cfg.batch_size else np.arange(n)
            distill(dev, np.stack([buffer_frames[i] for i in idx]), np.stack([buffer_labels[i] for i in idx]))
        mirror = server.models.mirror_of(dev.device_id)
        return parameter_delta(dev.model, mirror, None if full else dict(zip(dev.names, masks)))


class JustInTimeTraining(TrainingPolicy):
    """Just-In-Time: train on the newest sample until its mIoU reaches the target, then send the whole model."""

    def train(self, server: "AMSServer", dev: "DeviceState", frames: np.ndarray,
              labels: np.ndarray) -> Optional[dict[str, TensorUpdate]]:
        cfg = server.config
        frame, label = frames[-1], labels[-1]
        dev.optimizer.set_masks(None)
        trained = False
        for _ in range(cfg.jit_max_iterations):
            pred = predict_labels(dev.model, frame[None])
            miou = mean_iou(confusion_matrix(label[None].astype(np.int64), pred, server.teacher.num_classes))
            if miou >= cfg.jit_target_miou:
                break
            distill(dev, frame[None], label[None])
            trained = True
        if not trained:
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


__all__ = ["GradientGuidedTraining", "JustInTimeTraining", "RemoteInference", "TrainingPolicy", "UploadPolicy",
           "distill", "policy_for"]
