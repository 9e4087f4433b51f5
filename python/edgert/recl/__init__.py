"""RECL (Khani et al., NSDI 2023): continuous learning by reusing a shared zoo of expert models.

A controller serves many cameras. Every model-update window each camera uploads sampled frames; the
controller picks candidate experts with a gating network, checks them against the teacher (safety
checker), sends the best, and time-shares its trainer between retraining jobs with an iterative
scheduler. Promising retrained models join the zoo; experts that are rarely chosen are pruned.

* :mod:`~edgert.recl.task` / :mod:`~edgert.recl.tasks`: the ``Task`` protocol; image classification (ImageNet
  MobileNetV2 teacher) and person segmentation (MediaPipe teacher).
* :mod:`~edgert.recl.zoo`: the shared model zoo (SQLite + atomic snapshot files, admission, pruning).
* :mod:`~edgert.recl.gating`, :mod:`~edgert.recl.odin`: expert selection (gating network; ODIN baseline).
* :mod:`~edgert.recl.safety`: the teacher-checked choice among the candidates.
* :mod:`~edgert.recl.scheduler`: iterative scheduler (Algorithm 4), round-robin and Ekya's thief scheduler,
  run in process or on Ray.
* :mod:`~edgert.recl.controller`: one model-update window for all devices; :mod:`~edgert.recl.protocol`: the
  controller behind the transport (``RECLServer``) and the device client (``RECLDevice``).
* :mod:`~edgert.recl.workload`: cameras replaying scenes of the bundled real clips.
"""
from __future__ import annotations

from edgert.recl.config import RECLConfig
from edgert.recl.controller import RECLController, WindowReport
from edgert.recl.gating import GatingConfig, GatingNetwork
from edgert.recl.odin import OdinConfig, OdinSelector
from edgert.recl.protocol import RECLDevice, RECLServer
from edgert.recl.safety import SafetyChecker, SafetyResult
from edgert.recl.scheduler import (
    EkyaScheduler,
    IterativeScheduler,
    LeastRecentlyTrained,
    LocalExecutor,
    RayExecutor,
    RetrainingJob,
    RoundRobinScheduler,
    SchedulerConfig,
    TorchJob,
    make_scheduler,
)
from edgert.recl.task import Task, TrainableJob
from edgert.recl.tasks import ClassificationTask, SegmentationTask
from edgert.recl.workload import WorkloadConfig, build_workload, iter_windows
from edgert.recl.zoo import ModelZoo, ZooConfig, ZooError

__all__ = [
    "ClassificationTask", "EkyaScheduler", "GatingConfig", "GatingNetwork", "IterativeScheduler",
    "LeastRecentlyTrained", "LocalExecutor", "ModelZoo", "OdinConfig", "OdinSelector", "RECLConfig",
    "RECLController", "RECLDevice", "RECLServer", "RayExecutor", "RetrainingJob", "RoundRobinScheduler",
    "SafetyChecker", "SafetyResult", "SchedulerConfig", "SegmentationTask", "Task", "TorchJob", "TrainableJob",
    "WindowReport", "WorkloadConfig", "ZooConfig", "ZooError", "build_workload", "iter_windows", "make_scheduler",
]
