"""On-device inference fed by the model slot (``docs/inference.md``).

* :mod:`~edgert.infer.export`: :func:`export_onnx` exports any ``nn.Module`` (the AMS student, the SRVC
  model, ...) with every streamed parameter as a named ONNX initializer, checked against the manifest.
* :mod:`~edgert.infer.backends`: :class:`OnnxRuntimeBackend` (one ``InferenceSession`` per slot version,
  its initializers read from the slot's buffer), :class:`ExecuTorchBackend` (one XNNPACK program lowered per
  slot version from :func:`export_executorch`'s program) and :class:`TorchEagerBackend`, behind one interface.
* :mod:`~edgert.infer.runtime`: :class:`DeviceRuntime`, the per-frame API of a robot loop: ``infer(frame)``
  on the active session while a builder thread prepares the next version and swaps it in between frames.
* :mod:`~edgert.infer.node_client`: the inference process beside the firmware edge node: the node's weights
  from its Unix socket (:class:`~edgert.infer.node_client.NodeWeights`) into a ``DeviceRuntime``, and
  ``python -m edgert.infer.node_client``, a runnable per-frame loop over a clip.

``onnx`` and ``onnxruntime`` (``pip install edgert[onnx]``) and ``executorch``
(``pip install edgert[executorch]``) are optional; importing this package never needs them.
"""
from __future__ import annotations

from edgert.infer.backends import (
    BackendSession,
    ExecuTorchBackend,
    ExecuTorchSession,
    InferenceBackend,
    OnnxRuntimeBackend,
    OrtSession,
    TorchEagerBackend,
    TorchSession,
    WeightsSnapshot,
    slot_manifest,
)
from edgert.infer.export import (
    EXECUTORCH_INSTALL_HINT,
    INSTALL_HINT,
    ExecuTorchExport,
    ExportedModel,
    export_executorch,
    export_onnx,
    manifest_mismatches,
)
from edgert.infer.runtime import DeviceRuntime, RefusedVersion, Swap, argmax_labels, image_input

__all__ = [
    "EXECUTORCH_INSTALL_HINT",
    "INSTALL_HINT",
    "BackendSession",
    "DeviceRuntime",
    "ExecuTorchBackend",
    "ExecuTorchExport",
    "ExecuTorchSession",
    "ExportedModel",
    "InferenceBackend",
    "OnnxRuntimeBackend",
    "OrtSession",
    "RefusedVersion",
    "Swap",
    "TorchEagerBackend",
    "TorchSession",
    "WeightsSnapshot",
    "argmax_labels",
    "export_executorch",
    "export_onnx",
    "image_input",
    "manifest_mismatches",
    "slot_manifest",
]
