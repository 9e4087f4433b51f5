"""AMS: adaptive model streaming (Khani et al., "Real-Time Video Inference on Edge Devices via Adaptive Model
Streaming", ICCV 2021), an application on the update format and the transport.

* :mod:`~edgert.ams.config`: :class:`AMSConfig` (the paper's defaults) and :class:`EdgeConfig`.
* :mod:`~edgert.ams.server`: :class:`AMSServer` -- labels each device's uploads with the teacher, trains the
  device's copy of the student and streams sparse updates; :mod:`~edgert.ams.policies` holds what it does
  with an upload (AMS, Just-In-Time, remote inference).
* :mod:`~edgert.ams.edge`: :class:`AMSEdge`, the device (student on every frame, samples up, updates down).
* :mod:`~edgert.ams.sampling`: adaptive sampling rate (phi-score) and adaptive training rate.
* :mod:`~edgert.ams.flow`: the remote-inference + optical-flow baseline.
* :mod:`~edgert.ams.protocol`: AMS's extension frames (JOIN, CONTROL, SAMPLES, LABELS).
* :mod:`~edgert.ams.evaluate`, :mod:`~edgert.ams.cli`: the evaluation and ``edgert ams`` / ``edgert demo``.

Design and results: ``docs/design/ams.md``, ``docs/results/ams.md``.
"""
from __future__ import annotations

from edgert.ams.config import AMSConfig, EdgeConfig
from edgert.ams.edge import AMSEdge, EdgeLoop, EdgeReport, ModelStreamingLoop
from edgert.ams.evaluate import EvalConfig, run_eval
from edgert.ams.flow import FlowConfig, RemoteFlowLoop
from edgert.ams.policies import GradientGuidedTraining, JustInTimeTraining, RemoteInference, UploadPolicy, policy_for
from edgert.ams.protocol import AMSFrame
from edgert.ams.sampling import ASRConfig, ATRConfig, SamplingController
from edgert.ams.server import AMSServer, DeviceReport

__all__ = [
    "AMSConfig",
    "AMSEdge",
    "AMSFrame",
    "AMSServer",
    "ASRConfig",
    "ATRConfig",
    "DeviceReport",
    "EdgeConfig",
    "EdgeLoop",
    "EdgeReport",
    "EvalConfig",
    "FlowConfig",
    "GradientGuidedTraining",
    "JustInTimeTraining",
    "ModelStreamingLoop",
    "RemoteFlowLoop",
    "RemoteInference",
    "SamplingController",
    "UploadPolicy",
    "policy_for",
    "run_eval",
]
