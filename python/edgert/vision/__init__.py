"""Vision layer shared by AMS, SRVC, RECL and OneAdapt: video I/O, teachers, students, distillation, metrics.

Submodules (imported on use, so ``import edgert.vision`` stays light):

* :mod:`edgert.vision.video` — PyAV decoding/encoding, resizing, frame <-> tensor conversion.
* :mod:`edgert.vision.teachers` — ``Teacher`` interface and :func:`~edgert.vision.teachers.load_teacher`
  (MediaPipe selfie segmentation, ImageNet MobileNetV2, TorchScript/ONNX files).
* :mod:`edgert.vision.tflite` — a dependency-free TFLite flatbuffer reader that runs small float models with PyTorch.
* :mod:`edgert.vision.models` — MobileNetV2, the DeepLabV3-style segmentation student, a tiny classifier.
* :mod:`edgert.vision.distill` — one distillation step (with parameter masks), BatchNorm recalibration, prediction.
* :mod:`edgert.vision.metrics` — confusion matrices, per-class IoU, mIoU over present classes, accuracy.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY = {
    "Teacher": "teachers", "TeacherError": "teachers", "load_teacher": "teachers",
    "MobileNetV2": "models", "segmentation_student": "models", "tiny_classifier": "models",
    "inference_module": "models",
    "distill_step": "distill", "recalibrate_batchnorm": "distill", "predict_labels": "distill",
    "check_label_space": "distill",
    "ConfusionMeter": "metrics", "confusion_matrix": "metrics", "mean_iou": "metrics",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    """Import the public names above from their submodule on first use (keeps ``import edgert.vision`` light)."""
    if name in _LAZY:
        return getattr(import_module(f"edgert.vision.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'edgert.vision' has no attribute {name!r}")
