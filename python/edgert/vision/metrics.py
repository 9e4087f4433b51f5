"""Segmentation and classification metrics against (teacher) labels.

mIoU follows the AMS paper's protocol: confusion matrices are *summed* over the frames of a clip (or a
time window), per-class IoU is computed from the sum, and the mean runs over the classes *present* in
that clip — a class is present when it occurs in the reference labels or in the predictions (a class
predicted but absent from the reference counts with IoU 0; a class in neither is skipped).

Confusion matrices are ``int64 [C, C]`` indexed ``[reference, prediction]``. Pixels whose reference is
``ignore_index`` (or outside ``[0, C)``) are not counted.

For detectors: :func:`box_iou` and per-class :func:`average_precision` (VOC/COCO matching at one IoU
threshold, all-point interpolation); mAP is the mean over classes that have reference boxes. Single-class
per-frame accuracy: :func:`frame_f1` (``2 TP / (2 TP + FP + FN)`` with :func:`match_count`'s greedy matching at
IoU >= 0.5; 1 for a frame where neither finds anything) on label rows ``[N, M, 5]`` checked by
:func:`check_boxes`.
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


# ---- detection: box IoU and average precision (for detectors, e.g. OneAdapt) ----

def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of boxes ``a [N, 4]`` and ``b [M, 4]`` in ``(x1, y1, x2, y2)`` pixels -> ``[N, M]``.

    Raises:
        ValueError: not ``[*, 4]``, or a box with ``x2 < x1`` or ``y2 < y1``.
    """
    a = np.asarray(a, np.float64).reshape(-1, 4) if np.size(a) else np.zeros((0, 4))
    b = np.asarray(b, np.float64).reshape(-1, 4) if np.size(b) else np.zeros((0, 4))
    for name, boxes in (("a", a), ("b", b)):
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise ValueError(f"{name}: expected boxes [N, 4] (x1, y1, x2, y2), got {list(boxes.shape)}")
        if boxes.size and ((boxes[:, 2] < boxes[:, 0]).any() or (boxes[:, 3] < boxes[:, 1]).any()):
            raise ValueError(f"{name}: boxes must have x2 >= x1 and y2 >= y1")
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    iw = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


# ---- per-frame detection F1 (label rows [N, M, 5]; RECL's detection task and OneAdapt's face pipeline) ----

def check_boxes(name: str, boxes: Any, n: Optional[int] = None) -> np.ndarray:
    """``boxes`` (numpy array or torch tensor) as a float array of label rows ``[N, M, 5]`` ``(x0, y0, x1, y1,
    valid)``, checked: ``valid`` 0 or 1, valid boxes finite with ``x1 >= x0`` and ``y1 >= y0``, ``N == n`` when
    given. Rows with ``valid == 0`` are padding and are not checked further.

    Raises:
        ValueError: naming ``name`` and what was expected.
    """
    arr = boxes.detach().cpu().numpy() if hasattr(boxes, "detach") else np.asarray(boxes)
    if arr.dtype.kind != "f" or arr.ndim != 3 or arr.shape[2] != 5 or (n is not None and arr.shape[0] != n):
        want = "N" if n is None else f"N={n}"
        raise ValueError(f"{name}: expected float boxes [N, M, 5] (x0, y0, x1, y1, valid) with {want}, got "
                         f"{arr.dtype} {list(arr.shape)}")
    valid = arr[..., 4]
    if not np.isin(valid, (0.0, 1.0)).all():
        raise ValueError(f"{name}: the valid column [..., 4] must be 0 or 1")
    b = arr[valid == 1]
    if not np.isfinite(b).all() or (b[:, 2] < b[:, 0]).any() or (b[:, 3] < b[:, 1]).any():
        raise ValueError(f"{name}: valid boxes must be finite with x1 >= x0 and y1 >= y0")
    return arr


def match_count(reference: np.ndarray, prediction: np.ndarray, iou_threshold: float = 0.5) -> int:
    """True positives of one frame: boxes ``prediction [P, 4]`` matched to ``reference [R, 4]`` greedily (the
    pair with the largest IoU first, each box used once) while the IoU is >= ``iou_threshold``."""
    if not len(reference) or not len(prediction):
        return 0
    iou = box_iou(prediction, reference)
    tp = 0
    while True:
        i, j = np.unravel_index(int(np.argmax(iou)), iou.shape)
        if iou[i, j] < iou_threshold or iou[i, j] <= 0:
            return tp
        tp += 1
        iou[i, :] = -1.0
        iou[:, j] = -1.0


def frame_f1(reference: Any, prediction: Any, iou_threshold: float = 0.5) -> np.ndarray:
    """Per-frame F1 of ``prediction`` against ``reference`` (float ``[N, M, 5]`` label arrays, any ``M`` each;
    only rows with ``valid == 1`` count): float64 ``[N]`` in ``[0, 1]``, ``2 TP / (2 TP + FP + FN)`` with
    :func:`match_count`'s greedy matching; 1 where both are empty.

    Raises:
        ValueError: not ``[N, M, 5]`` float arrays of the same ``N``, a valid column other than 0/1, or a
            valid box with ``x1 < x0``; ``iou_threshold`` outside ``(0, 1]``.
    """
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold: expected in (0, 1], got {iou_threshold}")
    ref = check_boxes("reference", reference)
    pred = check_boxes("prediction", prediction, ref.shape[0])
    out = np.empty(ref.shape[0], np.float64)
    for k, (r, p) in enumerate(zip(ref, pred)):
        rb, pb = r[r[:, 4] == 1, :4], p[p[:, 4] == 1, :4]
        if not len(rb) and not len(pb):
            out[k] = 1.0
            continue
        tp = match_count(rb, pb, iou_threshold)
        out[k] = 2.0 * tp / (len(rb) + len(pb))
    return out


@dataclass(frozen=True)
class Detections:
    """Boxes of one image: ``boxes [K, 4]`` (x1, y1, x2, y2), integer ``classes [K]``, ``scores [K]``
    (scores are ignored for ground truth)."""

    boxes: np.ndarray
    classes: np.ndarray
    scores: Optional[np.ndarray] = None


def average_precision(predictions: list[Detections], references: list[Detections], num_classes: int,
                      iou_threshold: float = 0.5) -> np.ndarray:
    """Per-class AP over a set of images (PASCAL VOC 2010+ / COCO matching at one IoU threshold).

    Per class, detections of all images are ranked by score; each is a true positive when it overlaps a
    not-yet-matched reference box of its class in its image with IoU >= ``iou_threshold`` (best overlap
    first), else a false positive. AP is the area under the precision-recall curve with precision made
    monotone (all-point interpolation). Classes without reference boxes get NaN.

    Returns:
        float64 ``[num_classes]``; :func:`numpy.nanmean` of it is the mAP.
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} prediction sets for {len(references)} reference sets")
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold: expected in (0, 1], got {iou_threshold}")
    ap = np.full(num_classes, np.nan)
    for c in range(num_classes):
        ranked: list[tuple[float, int, int]] = []  # (score, image, box index)
        gt_boxes: list[np.ndarray] = []
        n_gt = 0
        for i, (pred, ref) in enumerate(zip(predictions, references, strict=True)):
            ref_classes = np.asarray(ref.classes).reshape(-1)
            gt_boxes.append(np.asarray(ref.boxes, np.float64).reshape(-1, 4)[ref_classes == c])
            n_gt += int((ref_classes == c).sum())
            pred_classes = np.asarray(pred.classes).reshape(-1)
            if pred.scores is None and pred_classes.size:
                raise ValueError(f"predictions[{i}]: scores are required")
            scores = np.asarray(pred.scores if pred.scores is not None else [], np.float64).reshape(-1)
            ranked += [(float(scores[k]), i, int(k)) for k in np.nonzero(pred_classes == c)[0]]
        if n_gt == 0:
            continue
        ranked.sort(key=lambda t: -t[0])
        matched = [np.zeros(len(g), bool) for g in gt_boxes]
        tp = np.zeros(len(ranked))
        for r, (_, i, k) in enumerate(ranked):
            gts = gt_boxes[i]
            if not len(gts):
                continue
            box = np.asarray(predictions[i].boxes, np.float64).reshape(-1, 4)[k]
            ious = box_iou(box[None], gts)[0]
            ious[matched[i]] = -1.0
            j = int(np.argmax(ious))
            if ious[j] >= iou_threshold:
                matched[i][j] = True
                tp[r] = 1.0
        ctp = np.cumsum(tp)
        recall = ctp / n_gt
        precision = ctp / np.arange(1, len(ranked) + 1) if len(ranked) else np.zeros(0)
        mrec = np.concatenate([[0.0], recall, [1.0]])
        mpre = np.concatenate([[0.0], precision, [0.0]])
        mpre = np.maximum.accumulate(mpre[::-1])[::-1]
        steps = np.nonzero(mrec[1:] != mrec[:-1])[0]
        ap[c] = float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))
    return ap
