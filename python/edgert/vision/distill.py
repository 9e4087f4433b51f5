"""Distillation of a teacher's labels into a student, one optimizer step at a time.

:func:`distill_step` is the generic unit the systems build on (AMS's server phases, RECL's retraining,
one-time fine-tuning baselines): a forward pass on a minibatch of frames, cross-entropy against the
teacher's hard labels (optionally class-weighted), backward, one optimizer step. Parameter selection is
the caller's: pass ``masks`` and only the chosen coordinates change, while the optimizer still sees every
gradient (so Adam's moments are updated for all coordinates, as AMS's gradient-guided rule needs).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgert.vision.video import frames_to_tensor

Frames = Union[np.ndarray, torch.Tensor]


@dataclass
class StepResult:
    """What one :func:`distill_step` did: the minibatch loss before the step, and optionally each parameter's
    applied change (``after - before``; zero outside its mask)."""

    loss: float
    updates: dict[str, torch.Tensor] = field(default_factory=dict)


def as_input(frames: Frames, device: Optional[torch.device] = None) -> torch.Tensor:
    """Frames as the students' input: ``uint8 [N, H, W, 3]`` (NumPy or torch) or float ``[N, 3, H, W]`` in
    ``[0, 1]`` -> float32 ``[N, 3, H, W]`` on ``device``."""
    if isinstance(frames, torch.Tensor) and frames.is_floating_point():
        if frames.ndim != 4 or frames.shape[1] != 3:
            raise ValueError(f"frames: expected float [N, 3, H, W] in [0, 1], got {list(frames.shape)}")
        x = frames.float()
    else:
        arr = frames.cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
        x = frames_to_tensor(arr)
    return x if device is None else x.to(device)


def as_labels(labels: Union[np.ndarray, torch.Tensor], device: Optional[torch.device] = None) -> torch.Tensor:
    """Integer class labels ``[N, H, W]`` or ``[N]`` -> int64 torch tensor on ``device``."""
    t = labels if isinstance(labels, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(labels))
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"labels: expected integer class indices, got {t.dtype}")
    t = t.long()
    return t if device is None else t.to(device)


def balanced_class_weights(labels: Union[np.ndarray, torch.Tensor], num_classes: int, *,
                           ignore_index: int = 255, max_weight: float = 10.0) -> torch.Tensor:
    """Median-frequency balancing weights ``median(f) / f_c`` (clipped to ``max_weight``) from label counts;
    classes absent from ``labels`` get weight 1."""
    t = as_labels(labels).reshape(-1)
    t = t[(t >= 0) & (t < num_classes) & (t != ignore_index)]
    counts = torch.bincount(t, minlength=num_classes).double()
    present = counts > 0
    weights = torch.ones(num_classes, dtype=torch.float64)
    if present.any():
        freq = counts / counts.sum()
        med = float(np.median(freq[present].numpy()))  # the mean of the middle two for an even count
        weights[present] = (med / freq[present]).clamp(max=max_weight)
    return weights.float()


def _bn_modules(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _running_stats(bn: nn.modules.batchnorm._BatchNorm) -> Optional[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(running_mean, running_var, num_batches_tracked) of a BatchNorm that tracks them, else None."""
    if not bn.track_running_stats or bn.running_mean is None or bn.running_var is None \
            or bn.num_batches_tracked is None:
        return None
    return bn.running_mean, bn.running_var, bn.num_batches_tracked


def _check_batch(logits: torch.Tensor, y: torch.Tensor, ignore_index: int,
                 class_weights: Optional[torch.Tensor]) -> None:
    if logits.shape[0] != y.shape[0] or logits.shape[2:] != y.shape[1:]:
        raise ValueError(f"model output {list(logits.shape)} does not match labels {list(y.shape)}")
    num_classes = logits.shape[1]
    valid = y[y != ignore_index]
    if valid.numel() and (int(valid.min()) < 0 or int(valid.max()) >= num_classes):
        raise ValueError(f"labels: classes must lie in [0, {num_classes}) (or be {ignore_index}), got "
                         f"[{int(valid.min())}, {int(valid.max())}]")
    if class_weights is not None and class_weights.numel() != num_classes:
        raise ValueError(f"class_weights: expected {num_classes} values, got {class_weights.numel()}")


def distill_step(model: nn.Module, optimizer: torch.optim.Optimizer, frames: Frames,
                 labels: Union[np.ndarray, torch.Tensor], *, class_weights: Optional[torch.Tensor] = None,
                 ignore_index: int = 255, masks: Optional[Mapping[str, torch.Tensor]] = None,
                 freeze_bn: bool = True, return_updates: bool = False) -> StepResult:
    """One distillation step: cross-entropy of ``model(frames)`` against ``labels``, backward, ``optimizer.step()``.

    Args:
        model: a student, logits ``[N, C, H, W]`` (segmentation) or ``[N, C]`` (classification) at the label size.
        optimizer: over (some of) ``model``'s parameters.
        frames: ``uint8 [N, H, W, 3]`` or float ``[N, 3, H, W]`` in ``[0, 1]``.
        labels: int ``[N, H, W]`` or ``[N]`` teacher labels; ``ignore_index`` entries do not count.
        class_weights: float ``[C]`` cross-entropy weights (e.g. :func:`balanced_class_weights`).
        masks: parameter name -> bool tensor of that parameter's shape: after the step, coordinates outside
            the mask are restored, so only masked coordinates change while the optimizer state (e.g. Adam
            moments) is updated for all. Parameters not named are left free; None trains everything.
        freeze_bn: keep BatchNorm layers in eval mode (running statistics fixed) during the step — small
            minibatches of similar frames would otherwise skew them, and the edge model must get the same
            statistics as the server's.
        return_updates: fill :attr:`StepResult.updates` with each trainable parameter's applied change.

    Raises:
        ValueError: the batch is empty, sizes disagree, a label is outside ``[0, C)``, or a mask names an
            unknown parameter or has the wrong shape. Nothing is changed in that case.
    """
    device = next(model.parameters()).device
    x = as_input(frames, device)
    y = as_labels(labels, device)
    if x.shape[0] == 0:
        raise ValueError("frames: empty batch")
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"labels: {y.shape[0]} label maps for {x.shape[0]} frames")
    params = dict(model.named_parameters())
    if masks:
        for name, m in masks.items():
            if name not in params:
                raise ValueError(f"masks: {name!r} is not a parameter of the model")
            if not params[name].requires_grad:
                raise ValueError(f"masks: {name!r} is frozen (requires_grad=False)")
            if tuple(m.shape) != tuple(params[name].shape) or m.dtype != torch.bool:
                raise ValueError(f"masks[{name!r}]: expected bool {list(params[name].shape)}, got {m.dtype} "
                                 f"{list(m.shape)}")
    was_training = model.training
    model.train()
    bns = _bn_modules(model)
    for bn in bns if freeze_bn else ():
        bn.eval()
    # running statistics a rejected batch's forward pass touched are put back
    tracked = [] if freeze_bn else [s for s in map(_running_stats, bns) if s is not None]
    stats = [(buffers, tuple(t.clone() for t in buffers)) for buffers in tracked]
    try:
        try:
            logits = model(x)
            _check_batch(logits, y, ignore_index, class_weights)
        except Exception:
            with torch.no_grad():
                for buffers, saved in stats:
                    for buffer, value in zip(buffers, saved):
                        buffer.copy_(value)
            raise
        weight = None if class_weights is None else class_weights.to(device=device, dtype=logits.dtype)
        loss = F.cross_entropy(logits, y, weight=weight, ignore_index=ignore_index)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        trainable = {n: p for n, p in params.items() if p.requires_grad}
        before = {n: p.detach().clone() for n, p in trainable.items()} if (masks or return_updates) else {}
        optimizer.step()
        updates: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            if masks:
                for name, m in masks.items():
                    p = params[name]
                    p.copy_(torch.where(m.to(p.device), p, before[name]))
            if return_updates:
                updates = {n: trainable[n].detach() - before[n] for n in trainable}
        return StepResult(float(loss.detach()), updates)
    finally:
        model.train(was_training)


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches: Iterable[Frames]) -> int:
    """Re-estimate every BatchNorm's running mean/variance as the plain average over ``batches`` (no
    gradient, weights untouched), e.g. after slicing a pretrained encoder to a narrower width. Returns the
    number of frames seen."""
    bns = _bn_modules(model)
    saved: list[tuple[Any, Optional[float]]] = [(bn, bn.momentum) for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average
    was_training = model.training
    device = next(model.parameters()).device
    seen = 0
    model.train()
    try:
        for frames in batches:
            x = as_input(frames, device)
            model(x)
            seen += x.shape[0]
    finally:
        for bn, momentum in saved:
            bn.momentum = momentum
        model.train(was_training)
    return seen


@torch.no_grad()
def predict_labels(model: nn.Module, frames: Frames, batch_size: int = 8) -> np.ndarray:
    """Argmax labels of ``model`` on ``frames`` in eval mode: int64 ``[N, H, W]`` or ``[N]``."""
    if batch_size < 1:
        raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        x = as_input(frames)
        out = [model(x[i:i + batch_size].to(device)).argmax(1).cpu() for i in range(0, x.shape[0], batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(out).numpy().astype(np.int64) if out else np.zeros((0,), np.int64)


def check_label_space(student: nn.Module, num_classes: int, size: tuple[int, int]) -> None:
    """Fails early when ``student`` does not map a ``size`` = (W, H) frame to ``num_classes`` logits per pixel.

    Raises:
        ValueError: naming the shape the student produced and what the teacher labels.
    """
    w, h = size
    was = student.training
    student.eval()
    try:
        with torch.no_grad():
            out = student(torch.zeros(1, 3, h, w))
    finally:
        student.train(was)
    if out.ndim != 4 or out.shape[-2:] != (h, w):
        raise ValueError(f"student: expected logits [1, C, {h}, {w}] for a {w}x{h} frame, got {list(out.shape)}")
    if out.shape[1] != num_classes:
        raise ValueError(f"student predicts {out.shape[1]} classes but the teacher labels {num_classes}: "
                         f"build the student with num_classes={num_classes}")
