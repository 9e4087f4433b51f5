"""Inference backends a device runtime runs the slot's model with: ONNX Runtime, ExecuTorch and PyTorch eager.

A backend turns one consistent version of the slot's weights (:class:`WeightsSnapshot`) into a
:class:`BackendSession` (:meth:`InferenceBackend.prepare`, slow, on the runtime's builder thread) and
runs sessions on model inputs (:meth:`BackendSession.run`, on the inference thread). A session never
changes after it is built: a new version is a new session, so a frame sees one version's weights.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Protocol, Union

import numpy as np
import torch
from torch import nn

from edgert.infer.export import (
    ExecuTorchExport,
    ExportedModel,
    lower_executorch,
    manifest_mismatches,
    require,
    require_executorch,
)
from edgert.updates.manifest import Manifest, TensorSpec
from edgert.updates.weights import buffer_tensors, load_weights, module_manifest


@dataclass(frozen=True)
class WeightsSnapshot:
    """One version of a slot's weights: the buffer (``Slot.weights()``, read under a pin, so one
    consistent version) and read-only NumPy views of every tensor into it (no copies).

    The views alias ``buffer``; whoever keeps a view (an ONNX Runtime session's initializers) keeps the
    snapshot.
    """

    version: int
    manifest: Manifest
    buffer: bytes
    tensors: dict[str, np.ndarray] = field(repr=False)

    @classmethod
    def from_slot(cls, slot: Any, manifest: Manifest) -> "WeightsSnapshot":
        """The slot's active weights (one copy out of the slot, made under its pin)."""
        buffer, version = slot.weights()
        return cls(int(version), manifest, buffer, buffer_tensors(manifest, buffer))

    @classmethod
    def from_weights(cls, manifest: Manifest, weights: dict[str, Any], version: int = 0) -> "WeightsSnapshot":
        """``weights`` (name -> array) laid out as a slot holds them (:meth:`Manifest.pack`)."""
        buffer = manifest.pack(weights)
        return cls(version, manifest, buffer, buffer_tensors(manifest, buffer))

    def nonfinite(self) -> list[str]:
        """Names of the tensors holding a NaN or an infinity."""
        return [name for name, t in self.tensors.items() if not np.isfinite(t).all()]


def slot_manifest(slot: Any) -> Manifest:
    """The manifest a native ``Slot`` was created with (its model id and tensor table)."""
    specs = []
    for i in range(slot.tensor_count):
        info = slot.tensor_info(i)
        specs.append(TensorSpec(info["name"], info["dtype"], tuple(info["shape"])))
    return Manifest(bytes(slot.model_id), tuple(specs))


class BackendSession(Protocol):
    """A model with one version's weights, ready to run."""

    version: int

    def run(self, x: np.ndarray) -> np.ndarray:
        """The model's output for input ``x`` (thread-safe; never blocks on a weight update)."""
        ...


class InferenceBackend(Protocol):
    """Builds :class:`BackendSession` objects from slot weights."""

    name: str

    def check_manifest(self, manifest: Manifest) -> None:
        """Raises ValueError listing every difference between ``manifest`` and what the model needs."""
        ...

    def prepare(self, weights: WeightsSnapshot) -> BackendSession:
        """A session running ``weights`` (slow: called off the inference thread)."""
        ...


def _check_input(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    x = np.ascontiguousarray(x)
    if x.dtype != np.float32 or len(x.shape) != len(shape) or any(
            s >= 0 and s != d for s, d in zip(shape, x.shape)):
        want = "[" + ", ".join("?" if s < 0 else str(s) for s in shape) + "]"
        raise ValueError(f"input: expected float32 {want} (the shape the model was exported at), "
                         f"got {x.dtype} {list(x.shape)}")
    return x


class OrtSession:
    """An ``onnxruntime.InferenceSession`` built on one version of the slot's weights.

    In zero-copy mode it holds the snapshot and the ``OrtValue`` wrappers: ONNX Runtime reads those
    initializers from the snapshot's memory for as long as the session lives.
    """

    def __init__(self, session: Any, weights: WeightsSnapshot, values: Optional[list[Any]],
                 exported: ExportedModel) -> None:
        self.session = session
        self.version = weights.version
        self.weights = weights if values is not None else None  # ORT copied them otherwise
        self._values = values
        self._input, self._output = exported.input_name, [exported.output_name]
        self._shape = exported.input_shape

    def run(self, x: np.ndarray) -> np.ndarray:
        out = self.session.run(self._output, {self._input: _check_input(x, self._shape)})
        return np.asarray(out[0])


#: where the graph-only model says its slot tensors live (they come from add_external_initializers)
SLOT_LOCATION = "edgert-slot"


class OnnxRuntimeBackend:
    """ONNX Runtime (CPU by default) on a model exported by :func:`edgert.infer.export_onnx`.

    Each :meth:`prepare` builds an ``InferenceSession`` whose slot tensors are one version of the slot's
    weights, in one of two ways (ONNX Runtime 1.32 measured; ``docs/inference.md``):

    * ``zero_copy=False`` (default): the graph is loaded with its slot tensors marked external and supplied
      by ``SessionOptions.add_external_initializers``; ONNX Runtime copies them while loading, then every
      graph optimisation (``optimization``) sees the new values. The snapshot is dropped after the build.
    * ``zero_copy=True``: ``SessionOptions.add_initializer`` with an ``OrtValue`` over the snapshot's NumPy
      view of the slot buffer, which ONNX Runtime reads in place for the session's lifetime. Graph
      optimisations are then disabled: at any higher level ONNX Runtime folds initializers (Conv+BatchNorm
      fusion, NCHWc reordering) from the *file's* values, ignoring the override, and computes with stale
      weights without an error.

    Args:
        model: the :class:`ExportedModel`, an ``.onnx`` path or its bytes.
        manifest: the slot manifest to check now (optional; the runtime checks the slot's manifest at start).
        threads: ONNX Runtime intra-op threads per session (inter-op: 1).
        providers: execution providers (default ``["CPUExecutionProvider"]``).
        optimization: graph optimisation level, "disable", "basic", "extended" or "all" (with
            ``zero_copy=False``; zero-copy sessions always use "disable").
        zero_copy: read the slot tensors in place (see above).

    Raises:
        ImportError: onnxruntime (or onnx) is not installed, naming ``pip install edgert[onnx]``.
        ValueError: the file is not a model ONNX Runtime accepts, or ``manifest`` does not match it.
    """

    name = "onnxruntime"

    def __init__(self, model: Union[ExportedModel, bytes, str, Path], manifest: Optional[Manifest] = None, *,
                 threads: int = 1, providers: Optional[list[str]] = None, optimization: str = "all",
                 zero_copy: bool = False) -> None:
        self._ort = require("onnxruntime")
        self.exported = ExportedModel.load(model)
        self.threads = threads
        self.providers = providers or ["CPUExecutionProvider"]
        levels = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
                  "all": "ORT_ENABLE_ALL"}
        if optimization not in levels:
            raise ValueError(f"optimization: expected one of {sorted(levels)}, got {optimization!r}")
        self.zero_copy = zero_copy
        self.optimization = "disable" if zero_copy else optimization
        self._level = getattr(self._ort.GraphOptimizationLevel, levels[self.optimization])
        if zero_copy:
            self.name = "onnxruntime-zero-copy"
        try:  # the file's own weights: does the runtime accept the graph at all?
            self._ort.InferenceSession(self.exported.model, self._options(), providers=self.providers)
        except Exception as exc:  # onnxruntime's Fail/InvalidGraph/NotImplemented... share no public base
            raise ValueError(f"onnxruntime {self._ort.__version__} rejects the model: {exc}") from exc
        self._graph = self.exported.model if zero_copy else _without_slot_data(self.exported)
        if manifest is not None:
            self.check_manifest(manifest)

    def _options(self) -> Any:
        options = self._ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = self._level
        return options

    def check_manifest(self, manifest: Manifest) -> None:
        self.exported.check_manifest(manifest)

    def prepare(self, weights: WeightsSnapshot) -> OrtSession:
        """A session on ``weights`` (their dtypes and shapes must match the graph: see :meth:`check_manifest`)."""
        options = self._options()
        names = [spec.name for spec in self.exported.slot_tensors]
        values = [self._ort.OrtValue.ortvalue_from_numpy(weights.tensors[name]) for name in names]
        if self.zero_copy:
            for name, value in zip(names, values):
                options.add_initializer(name, value)
        else:
            options.add_external_initializers(names, values)
        session = self._ort.InferenceSession(self._graph, options, providers=self.providers)
        return OrtSession(session, weights, values if self.zero_copy else None, self.exported)


def _without_slot_data(exported: ExportedModel) -> bytes:
    """The exported model with its slot tensors' data removed (marked external: supplied per version)."""
    onnx = require("onnx")
    proto = onnx.load_from_string(exported.model)
    names = {t.name for t in exported.slot_tensors}
    for tensor in proto.graph.initializer:
        if tensor.name in names:
            for fieldname in ("raw_data", "float_data", "int32_data"):
                tensor.ClearField(fieldname)
            tensor.data_location = onnx.TensorProto.EXTERNAL
            del tensor.external_data[:]
            entry = tensor.external_data.add()
            entry.key, entry.value = "location", SLOT_LOCATION
    return bytes(proto.SerializeToString())


class TorchSession:
    """A private copy of the module with one version's weights."""

    def __init__(self, module: nn.Module, version: int, shape: Optional[tuple[int, ...]]) -> None:
        self.module = module
        self.version = version
        self._shape = shape

    def run(self, x: np.ndarray) -> np.ndarray:
        x = _check_input(x, self._shape) if self._shape is not None else np.ascontiguousarray(x, dtype=np.float32)
        with torch.inference_mode():
            return self.module(torch.from_numpy(x)).numpy()


class TorchEagerBackend:
    """PyTorch eager on a copy of ``module`` per version (the same interface as :class:`OnnxRuntimeBackend`).

    :meth:`prepare` copies the module and loads the snapshot's tensors into its parameters
    (:func:`edgert.updates.load_weights`); buffers keep the values ``module`` has. Torch's thread count
    is the process's (``torch.set_num_threads``).

    Args:
        module: the student architecture (copied, never modified).
        input_shape: check inputs against this shape (None: any shape the module takes).
    """

    name = "torch-eager"

    def __init__(self, module: nn.Module, *, input_shape: Optional[tuple[int, ...]] = None) -> None:
        self._template = copy.deepcopy(module).cpu().eval()
        self._manifest = module_manifest(self._template)
        self.input_shape = input_shape

    def check_manifest(self, manifest: Manifest) -> None:
        names = {t.name for t in self._manifest.tensors}
        initializers = {t.name: (t.dtype, t.shape) for t in self._manifest.tensors}
        problems = manifest_mismatches(initializers, names, manifest)
        if problems:
            raise ValueError("the slot's manifest does not match the module:\n  " + "\n  ".join(problems))

    def prepare(self, weights: WeightsSnapshot) -> TorchSession:
        module = copy.deepcopy(self._template)
        load_weights(module, weights.tensors)
        return TorchSession(module, weights.version, self.input_shape)



class ExecuTorchSession:
    """An ExecuTorch program (XNNPACK-delegated) lowered from one version of the slot's weights."""

    def __init__(self, program: Any, method: Any, version: int, shape: tuple[int, ...], pte_bytes: int) -> None:
        self.program = program  # keeps the method's program alive
        self.method = method
        self.version = version
        self.pte_bytes = pte_bytes
        self._shape = shape

    def run(self, x: np.ndarray) -> np.ndarray:
        out = self.method.execute([torch.from_numpy(_check_input(x, self._shape))])
        return np.asarray(out[0].numpy())


class ExecuTorchBackend:
    """ExecuTorch with the XNNPACK delegate on a model exported by :func:`edgert.infer.export_executorch`.

    Each :meth:`prepare` lowers the exported program again with the snapshot's tensors as its parameters
    (:func:`edgert.infer.export.lower_executorch`: ``to_edge_transform_and_lower`` with XNNPACK, then
    ``to_executorch``) and loads the ``.pte`` with ``executorch.runtime``: a new program per slot version,
    built on the runtime's builder thread. Why not a per-version ``.ptd`` data file: XNNPACK stores its
    weights preprocessed (BatchNorm folded, NHWC) under hashes of those bytes, so the slot's tensors map to
    them only through that preprocessing (``docs/inference.md``). The lowering takes seconds and needs torch
    on the device.

    Args:
        exported: the :class:`~edgert.infer.export.ExecuTorchExport`, or the ``.pte``/``.pt2`` path it was saved to.
        manifest: the slot manifest to check now (optional; the runtime checks the slot's manifest at start).
        threads: XNNPACK's thread pool size (process-wide in executorch's pybindings; None leaves it alone).

    Raises:
        ImportError: executorch is not installed, naming ``pip install edgert[executorch]``.
        ValueError: the runtime cannot load the exported ``.pte``, or ``manifest`` does not match it.
    """

    name = "executorch-xnnpack"

    def __init__(self, exported: Union[ExecuTorchExport, str, Path], manifest: Optional[Manifest] = None, *,
                 threads: Optional[int] = 1) -> None:
        et = require_executorch()
        from executorch.runtime import Runtime

        self.exported = exported if isinstance(exported, ExecuTorchExport) else ExecuTorchExport.load(exported)
        self._runtime = Runtime.get()
        if threads is not None:
            from executorch.extension.pybindings import portable_lib

            portable_lib._unsafe_reset_threadpool(int(threads))
        try:  # the export-time program: does the runtime load it at all?
            self._load(self.exported.pte)
        except Exception as exc:  # the pybindings raise RuntimeError with an error code
            version = getattr(et, "__version__", "?")
            raise ValueError(f"executorch {version} rejects the program: {exc}") from exc
        if manifest is not None:
            self.check_manifest(manifest)

    def _load(self, pte: bytes) -> tuple[Any, Any]:
        program = self._runtime.load_program(pte)
        method = program.load_method("forward")
        if method is None:
            raise ValueError("the program has no method 'forward'")
        return program, method

    def check_manifest(self, manifest: Manifest) -> None:
        self.exported.check_manifest(manifest)

    def prepare(self, weights: WeightsSnapshot) -> ExecuTorchSession:
        """A program lowered from ``weights`` (slow: seconds of CPU, on the builder thread); the export's own
        ``.pte`` when ``weights`` equal the program's parameters."""
        names = [spec.name for spec in self.exported.slot_tensors]
        state = self.exported.program.state_dict
        if all(np.array_equal(weights.tensors[n], state[n].detach().numpy()) for n in names):
            pte = self.exported.pte  # the export-time weights (a first version, typically): already lowered
        else:
            pte = lower_executorch(self.exported.program, {name: weights.tensors[name] for name in names})
        program, method = self._load(pte)
        return ExecuTorchSession(program, method, weights.version, self.exported.input_shape, len(pte))


__all__ = ["BackendSession", "ExecuTorchBackend", "ExecuTorchSession", "InferenceBackend", "OnnxRuntimeBackend",
           "OrtSession", "TorchEagerBackend", "TorchSession", "WeightsSnapshot", "slot_manifest"]
