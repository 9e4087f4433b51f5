"""Exporting a student to ONNX so that a device runtime can feed its weights from the model slot.

Every tensor the slot streams (the manifest's tensors: the module's ``named_parameters()``, see
:mod:`edgert.updates.weights`) becomes a *named graph initializer* whose name is the manifest's tensor
name, with the manifest's shape and dtype. The device then builds one inference session per slot
version whose initializers are the slot's buffer (:class:`edgert.infer.OnnxRuntimeBackend`).

Everything else the module holds (BatchNorm running statistics, normalisation constants: buffers the
slot does not stream) stays in the file as constants fixed at export, exactly as the PyTorch edge keeps
its shipped buffers when it loads streamed parameters (:func:`edgert.updates.load_weights`).

The export uses PyTorch's TorchScript-based exporter (``dynamo=False``): with
``keep_initializers_as_inputs=True`` it neither deduplicates equal-valued initializers (a zero bias
would otherwise vanish into another tensor's name) nor folds BatchNorm into convolutions, so every
parameter keeps its own name. The graph inputs that are initializers are then removed again, so the
file has exactly one data input. The input shape is fixed at export (one export per camera resolution).

:func:`export_executorch` is the ExecuTorch counterpart: ``torch.export`` once, then an XNNPACK-delegated
``.pte`` lowered from that program per slot version (:func:`lower_executorch`, :class:`ExecuTorchExport`).
"""
from __future__ import annotations

import copy
import io
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Mapping, Optional, Union

import numpy as np
import torch
from torch import nn

from edgert.updates.manifest import Manifest, TensorSpec
from edgert.updates.weights import module_manifest

#: the extra that installs ``onnx`` and ``onnxruntime``
INSTALL_HINT = "pip install edgert[onnx]"
#: metadata key of the exported file listing the initializers the slot feeds (JSON list of names)
SLOT_TENSORS_KEY = "edgert.slot_tensors"
#: ONNX TensorProto element types of the slot's dtypes
_ONNX_DTYPES = {1: "float32", 10: "float16"}
DEFAULT_OPSET = 17


def require(module: str) -> ModuleType:
    """Imports ``onnx`` or ``onnxruntime``; ImportError naming the extra when it is not installed."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"{module} is not installed: the ONNX Runtime backend needs the extra [onnx] "
                          f"({INSTALL_HINT})") from exc


@dataclass(frozen=True)
class ExportedModel:
    """An exported ONNX model and what the device runtime needs to know about it.

    Attributes:
        model: the serialized ``onnx.ModelProto``.
        input_name, input_shape: the one data input (float32, shape fixed at export).
        output_name, output_shape: the first output.
        slot_tensors: the initializers the slot feeds (name, dtype, shape), in manifest order.
        constants: the other initializers (buffers fixed at export), by name.
    """

    model: bytes
    input_name: str
    input_shape: tuple[int, ...]
    output_name: str
    output_shape: tuple[int, ...]
    slot_tensors: tuple[TensorSpec, ...]
    constants: tuple[str, ...]

    def save(self, path: Union[str, Path]) -> Path:
        """Writes the ``.onnx`` file (the slot tensor list travels in its metadata)."""
        out = Path(path)
        out.write_bytes(self.model)
        return out

    @classmethod
    def load(cls, source: Union[bytes, str, Path, "ExportedModel"]) -> "ExportedModel":
        """Parses an ``.onnx`` file or its bytes.

        Files written by :func:`export_onnx` name their slot tensors in their metadata; for any other
        file every float initializer counts as a slot tensor (check it against the manifest with
        :meth:`check_manifest`, which then reports the extra ones).

        Raises:
            ValueError: not a parseable ONNX model, or it does not have exactly one input.
            ImportError: ``onnx`` is not installed.
        """
        if isinstance(source, ExportedModel):
            return source
        onnx = require("onnx")
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
        try:
            proto = onnx.load_from_string(data)
        except Exception as exc:  # DecodeError and friends: the protobuf runtime's own types
            raise ValueError(f"not an ONNX model ({type(exc).__name__}: {exc})") from exc
        return _describe(proto, data)

    def initializers(self) -> dict[str, tuple[str, tuple[int, ...]]]:
        """Every initializer of the graph: name -> (dtype, shape); dtype is e.g. 'float32' or 'onnx:7'."""
        onnx = require("onnx")
        proto = onnx.load_from_string(self.model)
        return {t.name: (_ONNX_DTYPES.get(t.data_type, f"onnx:{t.data_type}"), tuple(int(d) for d in t.dims))
                for t in proto.graph.initializer}

    def check_manifest(self, manifest: Manifest) -> None:
        """Checks that ``manifest`` (a slot's) feeds exactly this graph's slot tensors.

        Every manifest tensor must be an initializer of the same name, shape and dtype, and every slot
        tensor of the export must be in the manifest. Constants (buffers) are not compared.

        Raises:
            ValueError: listing every mismatch.
        """
        problems = manifest_mismatches(self.initializers(), {t.name for t in self.slot_tensors}, manifest)
        if problems:
            raise ValueError("the slot's manifest does not match the exported model:\n  " + "\n  ".join(problems))


def manifest_mismatches(initializers: dict[str, tuple[str, tuple[int, ...]]], slot_names: set[str],
                        manifest: Manifest) -> list[str]:
    """Human-readable differences between a graph's initializers and a manifest (empty: they match).

    ``initializers``: name -> (dtype, shape) of every initializer; ``slot_names``: the ones the slot must
    feed (the export's slot tensors).
    """
    problems: list[str] = []
    wanted = {t.name: t for t in manifest.tensors}
    missing = [n for n in wanted if n not in initializers]
    if missing:
        problems.append(f"manifest tensors that are not initializers of the graph: {missing}")
    for name, spec in wanted.items():
        if name not in initializers:
            continue
        dtype, shape = initializers[name]
        if shape != spec.shape:
            problems.append(f"{name}: shape {list(shape)} in the graph, {list(spec.shape)} in the manifest")
        if dtype != spec.dtype:
            problems.append(f"{name}: dtype {dtype} in the graph, {spec.dtype} in the manifest")
    unfed = sorted(slot_names - set(wanted))
    if unfed:
        problems.append(f"slot tensors of the graph that the manifest lacks: {unfed}")
    return problems


def export_onnx(module: nn.Module, example_input: torch.Tensor, manifest: Optional[Manifest] = None, *,
                path: Union[str, Path, None] = None, opset: int = DEFAULT_OPSET,
                input_name: str = "input", output_name: str = "output") -> ExportedModel:
    """Exports ``module`` (in eval mode, on a copy) to ONNX for the device runtime.

    Args:
        module: any ``nn.Module`` whose ``forward`` takes one tensor (the AMS student, the SRVC model, ...).
        example_input: float32 ``[N, C, H, W]`` (or any shape the module takes): fixes the graph's input shape.
        manifest: the slot's manifest to check the graph against; None uses
            :func:`edgert.updates.module_manifest` of ``module`` (what an application's server streams).
        path: also write the ``.onnx`` file there.
        opset: the ONNX opset.
        input_name, output_name: the graph's input and output names.

    Returns:
        The :class:`ExportedModel`; its ``slot_tensors`` are the module's parameters.

    Raises:
        ValueError: the graph's initializers do not match ``manifest`` (names, shapes, dtypes), listing every
            mismatch.
        ImportError: ``onnx`` is not installed.
    """
    onnx = require("onnx")
    model = copy.deepcopy(module).cpu().eval()
    manifest = manifest if manifest is not None else module_manifest(model)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # the TorchScript exporter is deprecated in favour of the dynamo one (which needs onnxscript);
        # tracing warnings about Python-level shape checks are expected
        warnings.simplefilter("ignore")
        target: Any = buffer  # the exporter writes to file objects too (its annotation says paths only)
        torch.onnx.export(model, (example_input,), target, dynamo=False, export_params=True,
                          keep_initializers_as_inputs=True, do_constant_folding=False,
                          training=torch.onnx.TrainingMode.PRESERVE, opset_version=opset,
                          input_names=[input_name], output_names=[output_name])
    proto = onnx.load_from_string(buffer.getvalue())
    init_names = {t.name for t in proto.graph.initializer}
    data_inputs = [i for i in proto.graph.input if i.name not in init_names]
    del proto.graph.input[:]
    proto.graph.input.extend(data_inputs)
    params = [name for name, _ in model.named_parameters()]
    entry = proto.metadata_props.add()
    entry.key, entry.value = SLOT_TENSORS_KEY, json.dumps(params)
    onnx.checker.check_model(proto)
    exported = _describe(proto, proto.SerializeToString())
    exported.check_manifest(manifest)
    if path is not None:
        exported.save(path)
    return exported


def _dims(value_info: Any) -> tuple[int, ...]:
    return tuple(int(d.dim_value) if d.HasField("dim_value") else -1 for d in value_info.type.tensor_type.shape.dim)


def _describe(proto: Any, data: bytes) -> ExportedModel:
    graph = proto.graph
    init = {t.name: t for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in init]
    if len(inputs) != 1 or not graph.output:
        raise ValueError(f"expected a graph with one data input and an output, got inputs "
                         f"{[i.name for i in inputs]} and outputs {[o.name for o in graph.output]}")
    meta = {p.key: p.value for p in proto.metadata_props}
    if SLOT_TENSORS_KEY in meta:
        names = json.loads(meta[SLOT_TENSORS_KEY])
    else:
        names = [n for n, t in init.items() if t.data_type in _ONNX_DTYPES]
    slot = []
    for n in names:
        t = init.get(n)
        if t is not None:  # a slot tensor absent from the graph is reported by check_manifest
            dtype = _ONNX_DTYPES.get(t.data_type, f"onnx:{t.data_type}")
            slot.append(TensorSpec(n, dtype, tuple(int(d) for d in t.dims)))
    return ExportedModel(model=data, input_name=inputs[0].name, input_shape=_dims(inputs[0]),
                         output_name=graph.output[0].name, output_shape=_dims(graph.output[0]),
                         slot_tensors=tuple(slot), constants=tuple(n for n in init if n not in set(names)))



# --- ExecuTorch ------------------------------------------------------------------------------------------

#: the extra that installs ``executorch`` (its XNNPACK delegate and Python runtime)
EXECUTORCH_INSTALL_HINT = "pip install edgert[executorch]"
#: XNNPACK's tensors have at most this many dimensions (``XNN_MAX_TENSOR_DIMS``); nodes touching more stay
#: on ExecuTorch's portable kernels (SRVC's per-patch kernels are 7-D)
XNNPACK_MAX_DIMS = 6


def require_executorch() -> ModuleType:
    """Imports ``executorch``; ImportError naming the extra when it is not installed."""
    import importlib

    try:
        return importlib.import_module("executorch")
    except ImportError as exc:
        raise ImportError(f"executorch is not installed: the ExecuTorch backend needs the extra [executorch] "
                          f"({EXECUTORCH_INSTALL_HINT})") from exc


@dataclass(frozen=True)
class ExecuTorchExport:
    """A student exported for ExecuTorch: the ``torch.export`` program and its XNNPACK-lowered ``.pte``.

    XNNPACK names the weights it delegates by a hash of their *preprocessed* bytes (BatchNorm folded into the
    convolutions, NHWC layout), so a slot version cannot be turned into a ``.ptd`` data file without
    re-running that preprocessing: each version is lowered again from ``program`` with the slot's tensors as
    its parameters (:func:`lower_executorch`; ``docs/inference.md``). The device therefore needs torch and
    executorch's export stack, not only its runtime.

    Attributes:
        program: the ``torch.export.ExportedProgram`` (parameters: the export-time weights).
        pte: the lowered program with the export-time weights (``.pte`` bytes).
        input_shape, output_shape: float32, fixed at export.
        slot_tensors: the parameters the slot feeds (name, dtype, shape), in ``named_parameters()`` order.
        constants: buffers fixed at export (BatchNorm statistics, ...).
    """

    program: Any = field(repr=False)
    pte: bytes = field(repr=False)
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    slot_tensors: tuple[TensorSpec, ...]
    constants: tuple[str, ...]

    def save(self, path: Union[str, Path]) -> Path:
        """Writes the ``.pte`` to ``path`` and the exported program (what :meth:`load` reads) beside it as ``.pt2``."""
        out = Path(path)
        out.write_bytes(self.pte)
        torch.export.save(self.program, out.with_suffix(".pt2"))
        return out

    @classmethod
    def load(cls, path: Union[str, Path]) -> "ExecuTorchExport":
        """Reads the ``.pt2`` written by :meth:`save` (``path`` may name the ``.pte``) and lowers it once."""
        program = torch.export.load(Path(path).with_suffix(".pt2"))
        return _describe_program(program)

    def initializers(self) -> dict[str, tuple[str, tuple[int, ...]]]:
        """The program's parameters: name -> (dtype, shape)."""
        return {t.name: (t.dtype, t.shape) for t in self.slot_tensors}

    def check_manifest(self, manifest: Manifest) -> None:
        """Checks that ``manifest`` feeds exactly the program's parameters (ValueError listing every mismatch)."""
        problems = manifest_mismatches(self.initializers(), {t.name for t in self.slot_tensors}, manifest)
        if problems:
            raise ValueError("the slot's manifest does not match the exported program:\n  " + "\n  ".join(problems))


def _xnnpack_partitioner() -> Any:
    """XNNPACK's partitioner with every node config limited to tensors of at most XNNPACK_MAX_DIMS dims."""
    from executorch.backends.xnnpack.partition.config import ALL_PARTITIONER_CONFIGS
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

    def rank_ok(node: torch.fx.Node) -> bool:
        nodes = [node, *(a for a in node.args if isinstance(a, torch.fx.Node))]
        for n in nodes:
            val = n.meta.get("val")
            for v in val if isinstance(val, (list, tuple)) else [val]:
                if isinstance(v, torch.Tensor) and v.dim() > XNNPACK_MAX_DIMS:
                    return False
        return True

    def limited(config: Any) -> Any:
        def check_constraints(self: Any, node: torch.fx.Node, ep: Any) -> bool:
            return rank_ok(node) and bool(config.check_constraints(self, node, ep))

        return type(config.__name__, (config,), {"check_constraints": check_constraints})

    return XnnpackPartitioner(configs=[limited(c) for c in ALL_PARTITIONER_CONFIGS])


def lower_executorch(program: Any, weights: Optional[Mapping[str, Any]] = None) -> bytes:
    """``program`` (a ``torch.export.ExportedProgram``) lowered to an XNNPACK-delegated ``.pte``.

    Args:
        program: the exported program (not modified).
        weights: name -> array (NumPy or torch) for parameters of ``program``: lowered with these values
            instead of the program's own (one slot version). Missing names keep the program's values.

    Returns:
        The ``.pte`` bytes. Slow (seconds): run it off the inference thread.
    """
    require_executorch()
    from executorch.exir import to_edge_transform_and_lower

    if weights:
        program = copy.deepcopy(program)
        for name, value in weights.items():
            old = program.state_dict[name]
            program.state_dict[name] = nn.Parameter(torch.as_tensor(np.array(value), dtype=old.dtype),
                                                    requires_grad=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        edge = to_edge_transform_and_lower(program, partitioner=[_xnnpack_partitioner()])
        return bytes(edge.to_executorch().buffer)


def _describe_program(program: Any, pte: Optional[bytes] = None) -> ExecuTorchExport:
    signature = program.graph_signature
    state = program.state_dict
    slot = tuple(TensorSpec(name, str(state[name].dtype).removeprefix("torch."), tuple(state[name].shape))
                 for name in signature.parameters)
    inputs = [spec.arg for spec in signature.input_specs if spec.kind.name == "USER_INPUT"]
    outputs = [spec.arg for spec in signature.output_specs if spec.kind.name == "USER_OUTPUT"]
    if len(inputs) != 1 or len(outputs) != 1:
        raise ValueError(f"expected a program with one input and one output, got {len(inputs)} and {len(outputs)}")
    nodes = {n.name: n for n in program.graph.nodes}
    shape_in = tuple(int(d) for d in nodes[inputs[0].name].meta["val"].shape)
    shape_out = tuple(int(d) for d in nodes[outputs[0].name].meta["val"].shape)
    return ExecuTorchExport(program=program, pte=pte if pte is not None else lower_executorch(program),
                            input_shape=shape_in, output_shape=shape_out, slot_tensors=slot,
                            constants=tuple(signature.buffers))


def export_executorch(module: nn.Module, example_input: torch.Tensor, manifest: Optional[Manifest] = None, *,
                      path: Union[str, Path, None] = None) -> ExecuTorchExport:
    """Exports ``module`` (eval mode, on a copy) with ``torch.export`` and lowers it to ExecuTorch + XNNPACK.

    Args:
        module: any ``nn.Module`` whose ``forward`` takes one tensor (the AMS student, the SRVC model, ...).
        example_input: float32 ``[N, C, H, W]``: fixes the program's input shape.
        manifest: the slot's manifest to check the parameters against; None uses
            :func:`edgert.updates.module_manifest` of ``module``.
        path: also write the ``.pte`` (and the ``.pt2`` program beside it: :meth:`ExecuTorchExport.save`).

    Raises:
        ValueError: the program's parameters do not match ``manifest`` (every mismatch listed).
        ImportError: executorch is not installed (naming ``pip install edgert[executorch]``).
    """
    require_executorch()
    model = copy.deepcopy(module).cpu().eval()
    manifest = manifest if manifest is not None else module_manifest(model)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.export.export(model, (example_input.detach().cpu().float(),))
    exported = _describe_program(program)
    exported.check_manifest(manifest)
    if path is not None:
        exported.save(path)
    return exported


__all__ = ["DEFAULT_OPSET", "EXECUTORCH_INSTALL_HINT", "INSTALL_HINT", "SLOT_TENSORS_KEY", "ExecuTorchExport",
           "ExportedModel", "export_executorch", "export_onnx", "lower_executorch", "manifest_mismatches", "require",
           "require_executorch"]
