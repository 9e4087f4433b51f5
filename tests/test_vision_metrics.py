"""edgert.vision.metrics against hand-computed confusion matrices, IoU, accuracy, box IoU and AP."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from edgert.vision.metrics import (
    ConfusionMeter,
    Detections,
    accuracy,
    average_precision,
    box_iou,
    confusion_matrix,
    iou_per_class,
    mean_iou,
    topk_accuracy,
)

# 2 frames of 2x3 pixels, 3 classes; 255 = ignore
REF = np.array([[[0, 0, 1], [1, 2, 255]],
                [[0, 1, 1], [1, 1, 0]]])
PRED = np.array([[[0, 1, 1], [1, 0, 2]],
                 [[0, 1, 0], [1, 1, 0]]])


def test_confusion_matrix_by_hand() -> None:
    cm = confusion_matrix(REF, PRED, 3)
    # rows = reference, cols = prediction; the ignored pixel (pred 2) is not counted
    expected = np.array([[3, 1, 0],
                         [1, 5, 0],
                         [1, 0, 0]])
    np.testing.assert_array_equal(cm, expected)
    assert cm.dtype == np.int64 and cm.sum() == 11


def test_iou_miou_accuracy_by_hand() -> None:
    cm = confusion_matrix(REF, PRED, 3)
    iou = iou_per_class(cm)
    # class 0: TP 3, FP 2 (pred 0 where ref 1, ref 2), FN 1 -> 3/6; class 1: TP 5, FP 1, FN 1 -> 5/7;
    # class 2: TP 0, FN 1 -> 0
    np.testing.assert_allclose(iou, [3 / 6, 5 / 7, 0.0])
    assert mean_iou(cm) == pytest.approx((0.5 + 5 / 7 + 0.0) / 3)
    assert accuracy(cm) == pytest.approx(8 / 11)


def test_miou_over_present_classes_only() -> None:
    ref = np.array([0, 0, 1, 1])
    pred = np.array([0, 0, 1, 0])
    cm = confusion_matrix(ref, pred, 4)  # classes 2 and 3 never appear
    iou = iou_per_class(cm)
    assert math.isnan(iou[2]) and math.isnan(iou[3])
    assert mean_iou(cm) == pytest.approx((2 / 3 + 1 / 2) / 2)
    # a class only predicted (never in the reference) is present with IoU 0
    cm2 = confusion_matrix(np.array([0, 0]), np.array([0, 3]), 4)
    assert mean_iou(cm2) == pytest.approx((1 / 2 + 0.0) / 2)
    assert math.isnan(mean_iou(np.zeros((3, 3), np.int64)))


def test_summed_matrices_differ_from_mean_of_frames() -> None:
    """Per-class IoU comes from the summed matrix, not from averaging per-frame mIoUs."""
    meter = ConfusionMeter(2)
    a = meter.update(np.array([[1, 1, 1, 1]]), np.array([[1, 1, 1, 0]]))
    b = meter.update(np.array([[0, 0, 0, 1]]), np.array([[0, 0, 0, 0]]))
    per_frame = (mean_iou(a) + mean_iou(b)) / 2
    np.testing.assert_array_equal(meter.matrix, a + b)
    # summed: class 0 TP 3 FP 2 FN 0 -> 3/5; class 1 TP 3 FP 0 FN 2 -> 3/5
    assert meter.miou() == pytest.approx(0.6)
    assert per_frame != pytest.approx(meter.miou())
    assert meter.accuracy() == pytest.approx(6 / 8)
    other = ConfusionMeter(2)
    other.update(np.array([0]), np.array([0]))
    meter.merge([other])
    assert meter.matrix[0, 0] == 4
    meter.reset()
    assert meter.matrix.sum() == 0


def test_torch_inputs_and_topk() -> None:
    cm = confusion_matrix(torch.tensor([0, 1, 2]), torch.tensor([0, 2, 2]), 3)
    assert np.trace(cm) == 2
    scores = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5]])
    assert topk_accuracy(np.array([2, 0, 0]), scores, k=1) == pytest.approx(1 / 3)
    assert topk_accuracy(np.array([2, 0, 0]), scores, k=2) == pytest.approx(2 / 3)


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        confusion_matrix(np.zeros((2, 3), np.int64), np.zeros((3, 2), np.int64), 2)
    with pytest.raises(TypeError, match="integer"):
        confusion_matrix(np.zeros(3), np.zeros(3, np.int64), 2)
    with pytest.raises(ValueError, match=r"prediction: classes must lie in \[0, 2\)"):
        confusion_matrix(np.zeros(3, np.int64), np.array([0, 1, 2]), 2)
    with pytest.raises(ValueError, match="num_classes"):
        ConfusionMeter(0)
    meter = ConfusionMeter(2)
    meter.update(np.array([1]), np.array([1]))
    with pytest.raises(ValueError):
        meter.update(np.array([1]), np.array([5]))
    assert meter.matrix.sum() == 1  # unchanged by the rejected batch
    with pytest.raises(ValueError, match="merge"):
        meter.merge([ConfusionMeter(3)])
    with pytest.raises(ValueError, match="square"):
        iou_per_class(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="k: expected"):
        topk_accuracy(np.array([0]), np.array([[1.0, 0.0]]), k=3)


def test_box_iou_by_hand() -> None:
    a = np.array([[0, 0, 10, 10], [5, 5, 15, 15]])
    b = np.array([[0, 0, 10, 10], [10, 10, 20, 20], [0, 0, 5, 5]])
    iou = box_iou(a, b)
    np.testing.assert_allclose(iou, [[1.0, 0.0, 0.25], [25 / 175, 25 / 175, 0.0]])
    assert box_iou(np.zeros((0, 4)), b).shape == (0, 3)
    with pytest.raises(ValueError, match="x2 >= x1"):
        box_iou(np.array([[5, 0, 0, 5]]), b)


def test_average_precision_by_hand() -> None:
    # image 0: two cats (class 0); image 1: one cat and one dog (class 1)
    refs = [Detections(np.array([[0, 0, 10, 10], [20, 20, 30, 30]]), np.array([0, 0])),
            Detections(np.array([[0, 0, 10, 10], [50, 50, 60, 60]]), np.array([0, 1]))]
    preds = [Detections(np.array([[0, 0, 10, 10], [40, 40, 45, 45], [0, 0, 10, 10]]), np.array([0, 0, 0]),
                        np.array([0.9, 0.8, 0.3])),  # hit, false positive, duplicate of the hit
             Detections(np.array([[1, 1, 10, 10], [50, 50, 60, 60]]), np.array([0, 1]), np.array([0.6, 0.7]))]
    ap = average_precision(preds, refs, 3)
    # cats ranked 0.9 TP, 0.8 FP, 0.6 TP (IoU 0.81), 0.3 FP (duplicate); 3 references:
    # precision 1, .5, .667, .5 at recall 1/3, 1/3, 2/3, 2/3 -> AP = 1/3 * 1 + 1/3 * 2/3
    assert ap[0] == pytest.approx(1 / 3 + 2 / 9)
    assert ap[1] == pytest.approx(1.0)
    assert np.isnan(ap[2])  # no reference boxes of class 2
    assert average_precision(preds, refs, 3, iou_threshold=0.9)[0] == pytest.approx(1 / 3)  # 0.81 misses
    with pytest.raises(ValueError, match="reference sets"):
        average_precision(preds[:1], refs, 3)
    with pytest.raises(ValueError, match="scores are required"):
        average_precision([Detections(np.zeros((1, 4)), np.array([0]))], refs[:1], 3)
