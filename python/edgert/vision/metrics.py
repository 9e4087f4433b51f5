"""Segmentation and classification metrics against (teacher) labels.

mIoU follows the AMS paper's protocol: confusion matrices are *summed* over the frames of a clip (or a
time window), per-class IoU is computed from the sum, and the mean runs over the classes *present* in
that clip — a class is present when it occurs in the reference labels or in the predictions (a class
predicted but absent from the reference counts with IoU 0; a class in neither is skipped).

Confusion matrices are ``int64 [C, C]`` indexed ``[reference, prediction]``. Pixels whose reference is
``ignore_index`` (or outside ``[0, C)``) are not counted.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Optional, Union

import numpy as np

ArrayLike = Union[np.ndarray, Any]  # numpy arrays or torch tensors


def _to_numpy(x: ArrayLike, name: str) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected integer class labels, got {arr.dtype}")
    return arr


def confusion_matrix(reference: ArrayLike, prediction: ArrayLike, num_classes: int,
                     ignore_index: Optional[int] = 255) -> np.ndarray:
    """``int64 [C, C]`` counts of (reference class, predicted class) over all elements.

    Args:
        reference: integer labels of any shape (e.g. ``[N, H, W]`` teacher labels or ``[N]`` classes).
        prediction: integer labels of the same shape.
        num_classes: C.
        ignore_index: reference value to skip (None: none); other out-of-range references are skipped too.

    Raises:
        ValueError: shapes differ, ``num_classes < 1``, or a prediction is outside ``[0, C)``.
        TypeError: labels are not integers.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes: expected >= 1, got {num_classes}")
    ref_arr, pred_arr = _to_numpy(reference, "reference"), _to_numpy(prediction, "prediction")
    if ref_arr.shape != pred_arr.shape:
        raise ValueError(f"reference {list(ref_arr.shape)} and prediction {list(pred_arr.shape)}: shapes differ")
    ref = ref_arr.reshape(-1).astype(np.int64, copy=False)
    pred = pred_arr.reshape(-1).astype(np.int64, copy=False)
    valid = (ref >= 0) & (ref < num_classes)
    if ignore_index is not None:
        valid &= ref != ignore_index
    ref, pred = ref[valid], pred[valid]
    if pred.size and (pred.min() < 0 or pred.max() >= num_classes):
        raise ValueError(f"prediction: classes must lie in [0, {num_classes}), got [{pred.min()}, {pred.max()}]")
    return np.bincount(ref * num_classes + pred, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes).astype(np.int64)


def iou_per_class(confusion: np.ndarray) -> np.ndarray:
    """Per-class IoU ``TP / (TP + FP + FN)`` from a (summed) confusion matrix; NaN for a class absent from
    both reference and prediction."""
    cm = np.asarray(confusion, dtype=np.float64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion: expected a square [C, C] matrix, got {list(cm.shape)}")
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / np.where(union > 0, union, 1), np.nan)


def mean_iou(confusion: np.ndarray) -> float:
    """Mean of :func:`iou_per_class` over classes present (in reference or prediction); NaN if none is."""
    iou = iou_per_class(confusion)
    present = ~np.isnan(iou)
    return float(iou[present].mean()) if present.any() else float("nan")


def accuracy(confusion: np.ndarray) -> float:
    """Fraction of counted elements whose prediction equals the reference (pixel or top-1 accuracy)."""
    cm = np.asarray(confusion)
    total = cm.sum()
    return float(np.trace(cm) / total) if total else float("nan")


def topk_accuracy(reference: ArrayLike, scores: ArrayLike, k: int = 5) -> float:
    """Fraction of rows of ``scores [N, C]`` whose top-``k`` classes contain ``reference [N]``."""
    ref = _to_numpy(reference, "reference").reshape(-1)
    if hasattr(scores, "detach"):
        scores = scores.detach().cpu().numpy()
    s = np.asarray(scores)
    if s.ndim != 2 or s.shape[0] != ref.shape[0]:
        raise ValueError(f"scores: expected [N={ref.shape[0]}, C], got {list(s.shape)}")
    if not 1 <= k <= s.shape[1]:
        raise ValueError(f"k: expected 1..{s.shape[1]}, got {k}")
    top = np.argpartition(-s, k - 1, axis=1)[:, :k]
    return float((top == ref[:, None]).any(axis=1).mean()) if ref.size else float("nan")


@dataclass
class ConfusionMeter:
    """Accumulates a confusion matrix over frames (e.g. one per clip or per evaluation window).

    ``update`` adds ``[N, H, W]`` (or ``[N]``) labels; ``miou``/``accuracy``/``iou`` read the sum.
    """

    num_classes: int
    ignore_index: Optional[int] = 255

    def __post_init__(self) -> None:
        if self.num_classes < 1:
            raise ValueError(f"num_classes: expected >= 1, got {self.num_classes}")
        self.matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def update(self, reference: ArrayLike, prediction: ArrayLike) -> np.ndarray:
        """Add one batch; returns that batch's own confusion matrix (for per-frame or per-window series)."""
        cm = confusion_matrix(reference, prediction, self.num_classes, self.ignore_index)
        self.matrix += cm
        return cm

    def merge(self, others: Iterable["ConfusionMeter"]) -> None:
        """Add other meters' sums (same ``num_classes``)."""
        for other in others:
            if other.num_classes != self.num_classes:
                raise ValueError(f"cannot merge a {other.num_classes}-class meter into a {self.num_classes}-class one")
            self.matrix += other.matrix

    def reset(self) -> None:
        """Zero the sum."""
        self.matrix[...] = 0

    def iou(self) -> np.ndarray:
        """Per-class IoU of the sum (NaN for absent classes)."""
        return iou_per_class(self.matrix)

    def miou(self) -> float:
        """mIoU over present classes of the sum."""
        return mean_iou(self.matrix)

    def accuracy(self) -> float:
        """Pixel (or top-1) accuracy of the sum."""
        return accuracy(self.matrix)
