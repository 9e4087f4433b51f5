"""The one bridge between a PyTorch ``nn.Module`` and the update format.

Every application streams the same thing: a module's trainable parameters, stored as float32 on
the device in ``named_parameters()`` order. This module turns a module into its :class:`Manifest`,
reads its weights out, loads weights back in (from a dict, a :class:`DeviceMirror` or a device's
raw weight buffer) and turns "what changed since the device's copy" into packet updates.
"""
from __future__ import annotations

import hashlib
from typing import Callable, Mapping, Optional, Union

import numpy as np
import torch
from torch import nn

from edgert.updates.manifest import MODEL_ID_BYTES, Manifest
from edgert.updates.mirror import DeviceMirror
from edgert.updates.packet import TensorUpdate
from edgert.updates.selection import masked_indices

TensorSource = Union[Mapping[str, object], Callable[[str], object]]


def model_id_for(manifest_table: bytes, tag: str) -> bytes:
    """A stable 128-bit model id: SHA-256 of ``tag`` and the tensor table (a restarted server keeps it)."""
    return hashlib.sha256(tag.encode() + manifest_table).digest()[:MODEL_ID_BYTES]


def module_manifest(module: nn.Module, *, model_id: Optional[bytes] = None, tag: str = "edgert") -> Manifest:
    """The manifest of ``module``'s parameters, float32 on the device, in ``named_parameters()`` order.

    ``model_id``: the 16-byte id to use; None derives a stable one from ``tag`` and the tensor table
    (:func:`model_id_for`), so the same architecture under the same tag always gets the same id.
    """
    if model_id is not None:
        return Manifest.from_module(module, model_id, dtype="float32")
    draft = Manifest.from_module(module, bytes(MODEL_ID_BYTES), dtype="float32")
    return Manifest.from_module(module, model_id_for(draft.table_bytes(), tag), dtype="float32")


def module_weights(module: nn.Module) -> dict[str, np.ndarray]:
    """float32 copies of every parameter by name (what a snapshot packet carries)."""
    return {name: p.detach().cpu().numpy().astype(np.float32) for name, p in module.named_parameters()}


def buffer_tensors(manifest: Manifest, weights: Union[bytes, bytearray, memoryview]) -> dict[str, np.ndarray]:
    """Read-only views of every tensor in a device weight buffer laid out by ``manifest``.

    Raises:
        ValueError: the buffer's size is not the manifest's ``weights_size``.
    """
    if len(weights) != manifest.weights_size:
        raise ValueError(f"weights: expected {manifest.weights_size} bytes for this manifest, got {len(weights)}")
    return {spec.name: np.frombuffer(weights, dtype=spec.np_dtype, count=spec.numel, offset=off).reshape(spec.shape)
            for off, spec in zip(manifest.offsets(), manifest.tensors)}


def load_weights(module: nn.Module, tensors: TensorSource) -> None:
    """Copies weights into ``module``'s parameters.

    ``tensors``: a mapping from parameter name to an array of the parameter's shape (e.g.
    :func:`buffer_tensors` of a slot's buffer, or :func:`module_weights` of another module), or a
    callable ``name -> array`` (e.g. :meth:`DeviceMirror.tensor`). Every parameter must be found, and a
    mapping must not name tensors the module lacks. Nothing is written unless every tensor checks out.

    Raises:
        ValueError: a missing, unknown or wrongly shaped tensor.
    """
    params = dict(module.named_parameters())
    if isinstance(tensors, Mapping):
        unknown = sorted(set(tensors) - set(params))
        if unknown:
            raise ValueError(f"the module has no parameters named {unknown}")
        missing = sorted(set(params) - set(tensors))
        if missing:
            raise ValueError(f"no weights for the parameters {missing}")
        fetch: Callable[[str], object] = tensors.__getitem__
    else:
        fetch = tensors
    values = {}
    for name, p in params.items():
        value = np.asarray(fetch(name))
        if tuple(value.shape) != tuple(p.shape):
            raise ValueError(f"tensor {name!r}: expected shape {tuple(p.shape)}, got {tuple(value.shape)}")
        values[name] = value
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(torch.from_numpy(values[name].astype(np.float32)))


def parameter_delta(module: nn.Module, mirror: DeviceMirror,
                    masks: Optional[Mapping[str, torch.Tensor]] = None) -> dict[str, TensorUpdate]:
    """The updates that take the device (``mirror``) to ``module``'s parameters, as ``add`` deltas.

    ``masks``: per parameter name, the coordinates to send (bool, the parameter's shape); parameters
    without a mask or with an empty one are not sent. None sends every coordinate densely.
    """
    updates: dict[str, TensorUpdate] = {}
    for name, p in module.named_parameters():
        delta = (p.detach().cpu().numpy().astype(np.float32) - mirror.tensor(name).astype(np.float32)).ravel()
        if masks is None:
            updates[name] = TensorUpdate(values=delta)
            continue
        mask = masks.get(name)
        if mask is None:
            continue
        idx = masked_indices(mask)
        if idx.size:
            updates[name] = TensorUpdate(values=delta[idx], indices=idx)
    return updates


__all__ = ["buffer_tensors", "load_weights", "model_id_for", "module_manifest", "module_weights", "parameter_delta"]
