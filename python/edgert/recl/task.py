"""What RECL needs to know about a vision task: its teacher, its experts, their accuracy and their retraining.

The controller, the safety checker, the gating labels and the evaluation are written against :class:`Task`
only, so image classification and person segmentation (:mod:`edgert.recl.tasks`) and face detection
(:mod:`edgert.recl.detection`) run through the same code.
"""
from __future__ import annotations

from typing import Optional, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from edgert.recl.scheduler import RetrainingJob


@runtime_checkable
class TrainableJob(RetrainingJob, Protocol):
    """A :class:`~edgert.recl.scheduler.RetrainingJob` whose trained weights can be taken out (the model the
    controller proposes to the zoo and offers the device), e.g. :class:`~edgert.recl.scheduler.TorchJob`."""

    def model_state(self) -> dict[str, torch.Tensor]:
        """A CPU copy of the current weights (a full ``state_dict``: parameters and buffers)."""
        ...


@runtime_checkable
class Task(Protocol):
    """A vision task with a teacher and lightweight experts.

    Frames are ``uint8 [N, H, W, 3]`` RGB at the camera's resolution; labels are what :meth:`label` returns
    (class ids ``int64 [N]`` for classification, masks ``int64 [N, h, w]`` for segmentation, padded boxes
    ``float32 [N, M, 5]`` for detection) and are only ever passed back to the same task.
    """

    #: short name used in the zoo, run folders and tables ("classification", "segmentation", "detection")
    name: str
    #: model tag of the experts' manifests (identifies the architecture a device must run)
    tag: str

    def label(self, frames: np.ndarray) -> np.ndarray:
        """The teacher's labels of ``frames`` (the ground truth of every accuracy RECL measures)."""
        ...

    def new_expert(self, seed: int = 0) -> nn.Module:
        """The generic expert every device starts from (same architecture for every expert of the task)."""
        ...

    def accuracy(self, expert: nn.Module, frames: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Per-frame accuracy in [0, 1] of ``expert`` against ``labels``: float ``[N]`` (agreement with the
        teacher's top-1 for classification, IoU over present classes for segmentation, F1 of the boxes at IoU
        0.5 for detection)."""
        ...

    def retraining_job(self, job_id: str, start: Optional[dict[str, torch.Tensor]], frames: np.ndarray,
                       labels: np.ndarray, holdout: float = 0.25, seed: int = 0) -> TrainableJob:
        """A retraining job that starts from ``start`` (a full ``state_dict`` of an expert: parameters and
        BatchNorm buffers, loaded strictly; ``None``: :meth:`new_expert`) and trains on ``frames`` with
        ``labels``; a ``holdout`` fraction of the frames measures its gain per micro-window: the frames
        :func:`edgert.recl.tasks.split_holdout` ``(len(frames), holdout, seed)`` holds out, in that order (the
        controller measures the other models of the window on the same frames for its reports)."""
        ...
