"""Run small float TFLite models (e.g. MediaPipe's selfie segmentation) as PyTorch modules, without TensorFlow.

MediaPipe's wheels pin numpy<2 and protobuf<5, and its segmentation models use a MediaPipe custom op
(``Convolution2DTransposeBias``). This module reads the ``.tflite`` flatbuffer directly (a bounds-checked
reader of the few schema tables needed, no dependency), folds the constant ``DEQUANTIZE`` ops
(float16/int8 weights) into float32 tensors, and executes the operator list with PyTorch in NCHW — batched,
on any torch device, differentiable. Activations must be 4-D (NHWC in the file); the operators supported
are listed in :data:`SUPPORTED_OPS` and anything else is rejected at load time with its name.

Parity with MediaPipe 0.10.21's own runtime (recorded references) and with Google's ``ai-edge-litert``
(live, when installed) is checked by ``tests/test_vision_teachers.py``; see docs/design/vision.md.
"""
from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Union, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

Env = dict[int, torch.Tensor]  # tensor index -> value while the graph runs


class TFLiteError(ValueError):
    """A .tflite file that is malformed or uses something this executor does not support."""


# builtin operator codes (tensorflow/lite/schema/schema.fbs, BuiltinOperator)
ADD, AVERAGE_POOL_2D, CONCATENATION, CONV_2D, DEPTHWISE_CONV_2D = 0, 1, 2, 3, 4
DEQUANTIZE, LOGISTIC, MAX_POOL_2D, MUL, RELU, RELU6 = 6, 14, 17, 18, 19, 21
RESIZE_BILINEAR, CUSTOM, TANH, MEAN, SUB, HARD_SWISH = 23, 32, 28, 40, 41, 117
_BUILTIN_NAMES = {ADD: "ADD", AVERAGE_POOL_2D: "AVERAGE_POOL_2D", CONCATENATION: "CONCATENATION",
                  CONV_2D: "CONV_2D", DEPTHWISE_CONV_2D: "DEPTHWISE_CONV_2D", DEQUANTIZE: "DEQUANTIZE",
                  LOGISTIC: "LOGISTIC", MAX_POOL_2D: "MAX_POOL_2D", MUL: "MUL", RELU: "RELU", RELU6: "RELU6",
                  RESIZE_BILINEAR: "RESIZE_BILINEAR", TANH: "TANH", MEAN: "MEAN", SUB: "SUB",
                  HARD_SWISH: "HARD_SWISH"}
CONV_TRANSPOSE_BIAS = "Convolution2DTransposeBias"  # MediaPipe custom op
SUPPORTED_OPS = tuple(sorted(_BUILTIN_NAMES.values())) + (CONV_TRANSPOSE_BIAS,)

# TensorType -> numpy dtype
_DTYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 6: np.bool_, 7: np.int16,
           9: np.int8, 10: np.float64}
_NHWC_TO_NCHW_AXIS = {0: 0, 1: 2, 2: 3, 3: 1}


class _Reader:
    """Bounds-checked access to flatbuffer tables, vectors and scalars."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def _unpack(self, fmt: str, pos: int) -> Any:
        if pos < 0 or pos + struct.calcsize(fmt) > len(self.data):
            raise TFLiteError(f"truncated or corrupt flatbuffer (read at {pos} past {len(self.data)} bytes)")
        return struct.unpack_from("<" + fmt, self.data, pos)[0]

    def root(self) -> int:
        if len(self.data) < 8:
            raise TFLiteError(f"not a TFLite model: {len(self.data)} bytes")
        if self.data[4:8] != b"TFL3":
            raise TFLiteError(f"not a TFLite model: file identifier {self.data[4:8]!r}, expected b'TFL3'")
        return self._unpack("I", 0)

    def _field(self, table: int, index: int) -> Optional[int]:
        vtable = table - self._unpack("i", table)
        size = self._unpack("H", vtable)
        slot = 4 + 2 * index
        if slot + 2 > size:
            return None
        off = self._unpack("H", vtable + slot)
        return table + off if off else None

    def scalar(self, table: int, index: int, fmt: str, default: Any = 0) -> Any:
        pos = self._field(table, index)
        return default if pos is None else self._unpack(fmt, pos)

    def table(self, table: int, index: int) -> Optional[int]:
        pos = self._field(table, index)
        return None if pos is None else pos + self._unpack("I", pos)

    def _vector(self, table: int, index: int) -> tuple[int, int]:
        pos = self._field(table, index)
        if pos is None:
            return 0, 0
        vec = pos + self._unpack("I", pos)
        n = self._unpack("I", vec)
        if vec + 4 + n > len(self.data):
            raise TFLiteError(f"corrupt flatbuffer: vector of {n} at {vec} past the end")
        return vec + 4, n

    def tables(self, table: int, index: int) -> list[int]:
        start, n = self._vector(table, index)
        if start + 4 * n > len(self.data):
            raise TFLiteError("corrupt flatbuffer: table vector past the end")
        return [start + 4 * k + self._unpack("I", start + 4 * k) for k in range(n)]

    def ints(self, table: int, index: int) -> list[int]:
        start, n = self._vector(table, index)
        if start + 4 * n > len(self.data):
            raise TFLiteError("corrupt flatbuffer: int vector past the end")
        return list(struct.unpack_from(f"<{n}i", self.data, start)) if n else []

    def floats(self, table: int, index: int) -> list[float]:
        start, n = self._vector(table, index)
        if start + 4 * n > len(self.data):
            raise TFLiteError("corrupt flatbuffer: float vector past the end")
        return list(struct.unpack_from(f"<{n}f", self.data, start)) if n else []

    def longs(self, table: int, index: int) -> list[int]:
        start, n = self._vector(table, index)
        if start + 8 * n > len(self.data):
            raise TFLiteError("corrupt flatbuffer: long vector past the end")
        return list(struct.unpack_from(f"<{n}q", self.data, start)) if n else []

    def bytes(self, table: int, index: int) -> bytes:
        start, n = self._vector(table, index)
        return self.data[start:start + n] if n else b""

    def string(self, table: int, index: int) -> str:
        return self.bytes(table, index).decode("utf-8", errors="replace")


@dataclass
class TensorInfo:
    """A tensor of the graph: NHWC shape as stored, dtype, and its constant value (None for activations)."""

    name: str
    shape: tuple[int, ...]
    dtype: Any
    value: Optional[np.ndarray] = None
    scale: list[float] = field(default_factory=list)
    zero_point: list[int] = field(default_factory=list)
    quantized_dimension: int = 0


@dataclass
class OpInfo:
    """One operator: its code (builtin int or custom name), tensor indices and decoded options."""

    code: Union[int, str]
    inputs: list[int]
    outputs: list[int]
    options: dict[str, Any]

    @property
    def name(self) -> str:
        """The operator's schema name."""
        return self.code if isinstance(self.code, str) else _BUILTIN_NAMES.get(self.code, f"builtin#{self.code}")


@dataclass
class TFLiteGraph:
    """The first subgraph of a .tflite model."""

    tensors: list[TensorInfo]
    ops: list[OpInfo]
    inputs: list[int]
    outputs: list[int]
    description: str


def _options(r: _Reader, code: Union[int, str], op: int) -> dict[str, Any]:
    if code == CUSTOM or isinstance(code, str):
        raw = r.bytes(op, 5)
        if code == CONV_TRANSPOSE_BIAS:
            if len(raw) < 12:
                raise TFLiteError(f"{CONV_TRANSPOSE_BIAS}: expected 12 bytes of options, got {len(raw)}")
            padding, sw, sh = struct.unpack_from("<3i", raw, 0)
            if padding not in (1, 2):
                raise TFLiteError(f"{CONV_TRANSPOSE_BIAS}: unknown padding {padding}")
            return {"padding": "SAME" if padding == 1 else "VALID", "stride_w": sw, "stride_h": sh}
        return {"raw": raw}
    t = r.table(op, 4)
    if t is None:
        return {}
    pad = lambda i: "VALID" if r.scalar(t, i, "b") == 1 else "SAME"  # noqa: E731
    if code == CONV_2D:
        return {"padding": pad(0), "stride_w": r.scalar(t, 1, "i"), "stride_h": r.scalar(t, 2, "i"),
                "activation": r.scalar(t, 3, "b"), "dilation_w": r.scalar(t, 4, "i", 1),
                "dilation_h": r.scalar(t, 5, "i", 1)}
    if code == DEPTHWISE_CONV_2D:
        return {"padding": pad(0), "stride_w": r.scalar(t, 1, "i"), "stride_h": r.scalar(t, 2, "i"),
                "depth_multiplier": r.scalar(t, 3, "i"), "activation": r.scalar(t, 4, "b"),
                "dilation_w": r.scalar(t, 5, "i", 1), "dilation_h": r.scalar(t, 6, "i", 1)}
    if code in (AVERAGE_POOL_2D, MAX_POOL_2D):
        return {"padding": pad(0), "stride_w": r.scalar(t, 1, "i"), "stride_h": r.scalar(t, 2, "i"),
                "filter_w": r.scalar(t, 3, "i"), "filter_h": r.scalar(t, 4, "i"), "activation": r.scalar(t, 5, "b")}
    if code in (ADD, MUL, SUB):
        return {"activation": r.scalar(t, 0, "b")}
    if code == CONCATENATION:
        return {"axis": r.scalar(t, 0, "i"), "activation": r.scalar(t, 1, "b")}
    if code == RESIZE_BILINEAR:
        return {"align_corners": bool(r.scalar(t, 2, "B")), "half_pixel_centers": bool(r.scalar(t, 3, "B"))}
    if code == MEAN:
        return {"keep_dims": bool(r.scalar(t, 0, "B"))}
    return {}


def parse(data: bytes) -> TFLiteGraph:
    """Parse a .tflite flatbuffer's first subgraph (tensors, constants, operators, options).

    Raises:
        TFLiteError: not a TFLite file, truncated/corrupt tables, or no subgraph.
    """
    r = _Reader(bytes(data))
    root = r.root()
    codes: list[Union[int, str]] = []
    for c in r.tables(root, 1):
        builtin = max(r.scalar(c, 0, "b"), r.scalar(c, 3, "i"))
        codes.append(r.string(c, 1) if builtin == CUSTOM else builtin)
    subgraphs = r.tables(root, 2)
    if not subgraphs:
        raise TFLiteError("TFLite model has no subgraph")
    buffers = r.tables(root, 4)
    sg = subgraphs[0]
    tensors: list[TensorInfo] = []
    for t in r.tables(sg, 0):
        type_id = r.scalar(t, 1, "b")
        if type_id not in _DTYPES:
            raise TFLiteError(f"tensor {r.string(t, 3)!r}: unsupported tensor type {type_id}")
        dtype = _DTYPES[type_id]
        shape = tuple(r.ints(t, 0))
        info = TensorInfo(r.string(t, 3), shape, dtype)
        b = r.scalar(t, 2, "I")
        if b >= len(buffers) and b != 0:
            raise TFLiteError(f"tensor {info.name!r}: buffer {b} out of range ({len(buffers)} buffers)")
        if 0 < b < len(buffers):
            raw = r.bytes(buffers[b], 0)
            if not raw:  # large models keep data outside the flatbuffer: offset/size from the file start
                off, size = r.scalar(buffers[b], 1, "Q"), r.scalar(buffers[b], 2, "Q")
                if size:
                    if off + size > len(r.data):
                        raise TFLiteError(f"tensor {info.name!r}: buffer data past the end of the file")
                    raw = r.data[off:off + size]
            if raw:
                count = int(np.prod(shape)) if shape else 1
                if len(raw) != count * np.dtype(dtype).itemsize:
                    raise TFLiteError(f"tensor {info.name!r}: {len(raw)} bytes of data for shape {list(shape)} "
                                      f"{np.dtype(dtype).name}")
                info.value = np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
        q = r.table(t, 4)
        if q is not None:
            info.scale = r.floats(q, 2)
            info.zero_point = r.longs(q, 3)
            info.quantized_dimension = r.scalar(q, 6, "i")
        tensors.append(info)
    ops: list[OpInfo] = []
    for op in r.tables(sg, 3):
        index = r.scalar(op, 0, "I")
        if index >= len(codes):
            raise TFLiteError(f"operator code index {index} out of range ({len(codes)} codes)")
        code = codes[index]
        ins, outs = r.ints(op, 1), r.ints(op, 2)
        for i in ins + outs:
            if i >= len(tensors) or i < -1 or (i == -1 and i in outs):
                raise TFLiteError(f"operator {code}: tensor index {i} out of range ({len(tensors)} tensors)")
        ops.append(OpInfo(code, ins, outs, _options(r, code, op)))
    inputs, outputs = r.ints(sg, 1), r.ints(sg, 2)
    for i in inputs + outputs:
        if not 0 <= i < len(tensors):
            raise TFLiteError(f"graph input/output tensor index {i} out of range ({len(tensors)} tensors)")
    return TFLiteGraph(tensors, ops, inputs, outputs, r.string(root, 3))


# fewest inputs each operator needs (optional ones, such as a bias, come after)
_MIN_INPUTS: dict[Union[int, str], int] = {CONV_2D: 2, DEPTHWISE_CONV_2D: 2, CONV_TRANSPOSE_BIAS: 3, ADD: 2, MUL: 2,
                                           SUB: 2, MEAN: 2, RESIZE_BILINEAR: 2, CONCATENATION: 1, DEQUANTIZE: 1}


def _dequantize(t: TensorInfo) -> np.ndarray:
    assert t.value is not None
    if t.value.dtype == np.float16:
        return t.value.astype(np.float32)
    if t.value.dtype in (np.int8, np.uint8, np.int16, np.int32) and t.scale:
        scale = np.asarray(t.scale, np.float32)
        zero = np.asarray(t.zero_point or [0] * len(t.scale), np.float32)
        if scale.size > 1:
            shape = [1] * t.value.ndim
            shape[t.quantized_dimension] = -1
            scale, zero = scale.reshape(shape), zero.reshape(shape)
        return ((t.value.astype(np.float32) - zero) * scale).astype(np.float32)
    raise TFLiteError(f"DEQUANTIZE of {t.name!r}: unsupported {t.value.dtype} without quantization scale")


def _activation(x: torch.Tensor, code: int, where: str) -> torch.Tensor:
    if code == 0:
        return x
    if code == 1:
        return F.relu(x)
    if code == 2:
        return x.clamp(-1.0, 1.0)
    if code == 3:
        return x.clamp(0.0, 6.0)
    if code == 4:
        return torch.tanh(x)
    raise TFLiteError(f"{where}: unsupported fused activation {code}")


def _same_pad(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def _resize_axis(size_in: int, size_out: int, align: bool,
                 half: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    dst = torch.arange(size_out, dtype=torch.float64)
    if align and size_out > 1:
        src = dst * ((size_in - 1) / (size_out - 1))
    elif half:
        src = (dst + 0.5) * (size_in / size_out) - 0.5
    else:
        src = dst * (size_in / size_out)
    lo = torch.floor(src)
    frac = (src - lo).float()
    i0 = lo.long().clamp(0, size_in - 1)
    i1 = (lo.long() + 1).clamp(0, size_in - 1)
    return i0, i1, frac


def resize_bilinear(x: torch.Tensor, height: int, width: int, align_corners: bool = False,
                    half_pixel_centers: bool = False) -> torch.Tensor:
    """TFLite ``RESIZE_BILINEAR`` on NCHW ``x``, exact for all three coordinate conventions (legacy,
    ``align_corners``, ``half_pixel_centers``)."""
    y0, y1, fy = _resize_axis(x.shape[2], height, align_corners, half_pixel_centers)
    x0, x1, fx = _resize_axis(x.shape[3], width, align_corners, half_pixel_centers)
    fy = fy.to(x).view(1, 1, -1, 1)
    fx = fx.to(x).view(1, 1, 1, -1)
    rows = x[:, :, y0.to(x.device)] * (1 - fy) + x[:, :, y1.to(x.device)] * fy
    return rows[:, :, :, x0.to(x.device)] * (1 - fx) + rows[:, :, :, x1.to(x.device)] * fx


def _nchw_const(value: np.ndarray) -> torch.Tensor:
    """A constant operand of an elementwise op: NHWC-broadcastable -> NCHW-broadcastable float32."""
    v = np.asarray(value, np.float32)
    if v.ndim > 4:
        raise TFLiteError(f"constant of rank {v.ndim} in an elementwise op")
    v = v.reshape((1,) * (4 - v.ndim) + v.shape)
    return torch.from_numpy(np.ascontiguousarray(v.transpose(0, 3, 1, 2)))


class TFLiteModule(nn.Module):
    """A float TFLite graph executed with PyTorch.

    ``forward`` takes the model's input as NHWC float32 (as TFLite does) and returns a list of its outputs,
    NHWC. Weights are buffers (the module is an inference engine, not a trainable network).
    """

    def __init__(self, graph: TFLiteGraph) -> None:
        super().__init__()
        self.graph = graph
        if len(graph.inputs) != 1:
            raise TFLiteError(f"expected a single-input model, got {len(graph.inputs)} inputs")
        consts: dict[int, np.ndarray] = {i: t.value for i, t in enumerate(graph.tensors) if t.value is not None}
        self._steps: list[Callable[[dict[int, torch.Tensor]], None]] = []
        ready = set(consts) | set(graph.inputs)  # tensors that have a value when an operator runs
        for k, op in enumerate(graph.ops):
            need = _MIN_INPUTS.get(op.code, 1)
            if len(op.inputs) < need or len(op.outputs) < 1 or any(i < 0 for i in op.inputs[:need]):
                raise TFLiteError(f"operator {k} ({op.name}): {len(op.inputs)} inputs / {len(op.outputs)} outputs, "
                                  f"needs at least {need} inputs and one output")
            missing = [i for i in op.inputs if i >= 0 and i not in ready]
            if missing:
                raise TFLiteError(f"operator {k} ({op.name}): input tensor {missing[0]} is used before it is computed")
            ready.update(op.outputs)
            if op.code == DEQUANTIZE and op.inputs[0] in consts:
                consts[op.outputs[0]] = _dequantize(graph.tensors[op.inputs[0]])
                continue
            self._steps.append(self._compile(k, op, consts))
        self.input_shape = graph.tensors[graph.inputs[0]].shape
        if len(self.input_shape) != 4 or min(self.input_shape[1:], default=0) < 1:
            raise TFLiteError(f"input shape {list(self.input_shape)}: expected [N, H, W, C]")
        for idx in graph.outputs:
            if idx in consts:
                raise TFLiteError(f"output {graph.tensors[idx].name!r} is a constant")
            if idx not in ready:
                raise TFLiteError(f"output {graph.tensors[idx].name!r} is never computed")

    def _buffer(self, name: str, value: torch.Tensor) -> str:
        self.register_buffer(name, value.contiguous(), persistent=False)
        return name

    def _compile(self, k: int, op: OpInfo, consts: dict[int, np.ndarray]) -> Callable[[dict[int, torch.Tensor]], None]:
        where = f"operator {k} ({op.name})"
        o = op.options
        out = op.outputs[0]
        for i in op.outputs:
            if len(self.graph.tensors[i].shape) != 4:
                raise TFLiteError(f"{where}: output {self.graph.tensors[i].name!r} has shape "
                                  f"{list(self.graph.tensors[i].shape)}; only 4-D activations are supported")
        # buffers are looked up at call time (so that they follow .to()); every name passed is a buffer
        # registered by _buffer, which Module.__getattr__'s ``Tensor | Module`` cannot express
        get = cast(Callable[[str], torch.Tensor], self.__getattr__)

        def const_or_input(i: int, name: str,
                           convert: Callable[[np.ndarray], torch.Tensor]) -> Callable[[Env], torch.Tensor]:
            if i in consts:
                buf = self._buffer(f"c{k}_{name}", convert(consts[i]))
                return lambda env: get(buf)
            return lambda env: env[i]

        if op.code in (CONV_2D, DEPTHWISE_CONV_2D):
            if op.inputs[1] not in consts:
                raise TFLiteError(f"{where}: non-constant filter")
            w = consts[op.inputs[1]].astype(np.float32)
            if w.ndim != 4:
                raise TFLiteError(f"{where}: filter of shape {list(w.shape)}, expected 4-D")
            if op.code == CONV_2D:
                weight = torch.from_numpy(w.transpose(0, 3, 1, 2).copy())
                groups_from_input = False
            else:
                weight = torch.from_numpy(w.transpose(3, 0, 1, 2).copy())
                groups_from_input = True
            wname = self._buffer(f"c{k}_w", weight)
            has_bias = len(op.inputs) > 2 and op.inputs[2] >= 0
            if has_bias and op.inputs[2] not in consts:
                raise TFLiteError(f"{where}: non-constant bias")
            bname = (self._buffer(f"c{k}_b", torch.from_numpy(consts[op.inputs[2]].astype(np.float32)))
                     if has_bias else None)
            kh, kw = weight.shape[2], weight.shape[3]
            src = op.inputs[0]

            def conv(env: dict[int, torch.Tensor]) -> None:
                x = env[src]
                if o["padding"] == "SAME":
                    ph = _same_pad(x.shape[2], kh, o["stride_h"], o["dilation_h"])
                    pw = _same_pad(x.shape[3], kw, o["stride_w"], o["dilation_w"])
                    if any(ph + pw):
                        x = F.pad(x, (pw[0], pw[1], ph[0], ph[1]))
                groups = x.shape[1] if groups_from_input else 1
                y = F.conv2d(x, get(wname), get(bname) if bname else None, (o["stride_h"], o["stride_w"]),
                             0, (o["dilation_h"], o["dilation_w"]), groups)
                env[out] = _activation(y, o["activation"], where)
            return conv

        if op.code == CONV_TRANSPOSE_BIAS:
            if op.inputs[1] not in consts or op.inputs[2] not in consts:
                raise TFLiteError(f"{where}: non-constant filter or bias")
            w = consts[op.inputs[1]].astype(np.float32)  # [O, kh, kw, I]
            if w.ndim != 4:
                raise TFLiteError(f"{where}: filter of shape {list(w.shape)}, expected 4-D")
            wname = self._buffer(f"c{k}_w", torch.from_numpy(w.transpose(3, 0, 1, 2).copy()))
            bname = self._buffer(f"c{k}_b", torch.from_numpy(consts[op.inputs[2]].astype(np.float32)))
            kh, kw = w.shape[1], w.shape[2]
            src = op.inputs[0]

            def deconv(env: dict[int, torch.Tensor]) -> None:
                x = env[src]
                sh, sw = o["stride_h"], o["stride_w"]
                y = F.conv_transpose2d(x, get(wname), get(bname), (sh, sw))
                if o["padding"] == "SAME":
                    oh, ow = x.shape[2] * sh, x.shape[3] * sw
                    top = max((x.shape[2] - 1) * sh + kh - oh, 0) // 2
                    left = max((x.shape[3] - 1) * sw + kw - ow, 0) // 2
                    y = y[:, :, top:top + oh, left:left + ow]
                env[out] = y
            return deconv

        if op.code in (ADD, MUL, SUB):
            a = const_or_input(op.inputs[0], "a", _nchw_const)
            b = const_or_input(op.inputs[1], "b", _nchw_const)
            binary: dict[int, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
                ADD: torch.add, MUL: torch.mul, SUB: torch.sub}
            fn = binary[op.code]
            act = o.get("activation", 0)
            return lambda env: env.__setitem__(out, _activation(fn(a(env), b(env)), act, where))

        unary = {RELU: F.relu, RELU6: lambda x: x.clamp(0.0, 6.0), LOGISTIC: torch.sigmoid, TANH: torch.tanh,
                 HARD_SWISH: F.hardswish}
        if op.code in unary:
            fn1, src = unary[op.code], op.inputs[0]
            return lambda env: env.__setitem__(out, fn1(env[src]))

        if op.code in (AVERAGE_POOL_2D, MAX_POOL_2D):
            src = op.inputs[0]
            fh, fw, sh, sw = o["filter_h"], o["filter_w"], o["stride_h"], o["stride_w"]

            def pool(env: dict[int, torch.Tensor]) -> None:
                x = env[src]
                ph = _same_pad(x.shape[2], fh, sh, 1) if o["padding"] == "SAME" else (0, 0)
                pw = _same_pad(x.shape[3], fw, sw, 1) if o["padding"] == "SAME" else (0, 0)
                if op.code == MAX_POOL_2D:
                    xp = F.pad(x, (pw[0], pw[1], ph[0], ph[1]), value=float("-inf")) if any(ph + pw) else x
                    y = F.max_pool2d(xp, (fh, fw), (sh, sw))
                elif any(ph + pw):  # TFLite averages over the valid (unpadded) elements only
                    pad = (pw[0], pw[1], ph[0], ph[1])
                    total = F.avg_pool2d(F.pad(x, pad), (fh, fw), (sh, sw))
                    count = F.avg_pool2d(F.pad(torch.ones_like(x[:1, :1]), pad), (fh, fw), (sh, sw))
                    y = total / count
                else:
                    y = F.avg_pool2d(x, (fh, fw), (sh, sw))
                env[out] = _activation(y, o["activation"], where)
            return pool

        if op.code == MEAN:
            if op.inputs[1] not in consts:
                raise TFLiteError(f"{where}: non-constant axes")
            axes = sorted({_NHWC_TO_NCHW_AXIS[int(a) % 4] for a in np.atleast_1d(consts[op.inputs[1]])})
            if not o.get("keep_dims", False):
                raise TFLiteError(f"{where}: MEAN without keep_dims gives a non-4-D tensor")
            src = op.inputs[0]
            return lambda env: env.__setitem__(out, env[src].mean(dim=axes, keepdim=True))

        if op.code == RESIZE_BILINEAR:
            if op.inputs[1] not in consts:
                raise TFLiteError(f"{where}: non-constant output size")
            nh, nw = (int(v) for v in consts[op.inputs[1]])
            src = op.inputs[0]
            ac, hp = o.get("align_corners", False), o.get("half_pixel_centers", False)
            return lambda env: env.__setitem__(out, resize_bilinear(env[src], nh, nw, ac, hp))

        if op.code == CONCATENATION:
            axis = _NHWC_TO_NCHW_AXIS[o["axis"] % 4]
            getters = [const_or_input(i, f"in{j}", _nchw_const) for j, i in enumerate(op.inputs)]
            act = o["activation"]
            return lambda env: env.__setitem__(out, _activation(torch.cat([g(env) for g in getters], axis), act,
                                                                where))

        raise TFLiteError(f"{where}: unsupported operator (supported: {', '.join(SUPPORTED_OPS)})")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Run the graph on NHWC float32 ``x`` (shape as the model's input, batch any); returns NHWC outputs."""
        want = self.input_shape
        if x.ndim != 4 or tuple(x.shape[1:]) != tuple(want[1:]):
            raise ValueError(f"x: expected float32 [N, {want[1]}, {want[2]}, {want[3]}] (NHWC), got "
                             f"{x.dtype} {list(x.shape)}")
        env: dict[int, torch.Tensor] = {self.graph.inputs[0]: x.float().permute(0, 3, 1, 2)}
        for step in self._steps:
            step(env)
        return [env[i].permute(0, 2, 3, 1) for i in self.graph.outputs]


def load(path: Union[str, Path]) -> TFLiteModule:
    """Parse and compile a float .tflite file (see :class:`TFLiteModule`).

    Raises:
        FileNotFoundError: no such file.
        TFLiteError: malformed, or an unsupported operator/type (named in the message).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"TFLite model {str(p)!r}: no such file")
    return TFLiteModule(parse(p.read_bytes())).eval()
