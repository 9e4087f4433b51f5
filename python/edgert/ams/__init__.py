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

from importlib import import_module
from typing import Any

_LAZY = {
    "AMSConfig": "config", "EdgeConfig": "config",
    "AMSServer": "server", "DeviceReport": "server",
    "AMSEdge": "edge", "EdgeReport": "edge", "EdgeLoop": "edge", "ModelStreamingLoop": "edge",
    "GradientGuidedTraining": "policies", "JustInTimeTraining": "policies", "RemoteInference": "policies",
    "UploadPolicy": "policies", "policy_for": "policies",
    "ASRConfig": "sampling", "ATRConfig": "sampling", "SamplingController": "sampling",
    "FlowConfig": "flow", "RemoteFlowLoop": "flow",
    "AMSFrame": "protocol",
    "EvalConfig": "evaluate", "run_eval": "evaluate",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    """Imports the public names above from their submodule on first use (``import edgert.ams`` stays light)."""
    if name in _LAZY:
        return getattr(import_module(f"edgert.ams.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'edgert.ams' has no attribute {name!r}")
