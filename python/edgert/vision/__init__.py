"""Vision layer shared by AMS, SRVC, RECL and OneAdapt: video I/O, teachers, students, distillation, metrics.

Submodules:

* :mod:`edgert.vision.video` — PyAV decoding/encoding, resizing, frame <-> tensor conversion.
* :mod:`edgert.vision.teachers` — ``Teacher`` interface and :func:`~edgert.vision.teachers.load_teacher`
  (MediaPipe selfie segmentation, ImageNet MobileNetV2, TorchScript/ONNX files).
* :mod:`edgert.vision.mtcnn` — the MTCNN face detector on facenet-pytorch's weights (RECL's detection teacher).
* :mod:`edgert.vision.tflite` — a dependency-free TFLite flatbuffer reader that runs small float models with PyTorch.
* :mod:`edgert.vision.models` — MobileNetV2, the DeepLabV3-style segmentation student, a tiny classifier.
* :mod:`edgert.vision.distill` — one distillation step (with parameter masks), BatchNorm recalibration, prediction.
* :mod:`edgert.vision.metrics` — confusion matrices, per-class IoU, mIoU over present classes, accuracy, detection F1.
"""
from __future__ import annotations

from edgert.vision.distill import check_label_space, distill_step, predict_labels, recalibrate_batchnorm
from edgert.vision.metrics import ConfusionMeter, confusion_matrix, mean_iou
from edgert.vision.models import MobileNetV2, inference_module, segmentation_student, tiny_classifier
from edgert.vision.teachers import Teacher, TeacherError, load_teacher

__all__ = [
    "ConfusionMeter",
    "MobileNetV2",
    "Teacher",
    "TeacherError",
    "check_label_space",
    "confusion_matrix",
    "distill_step",
    "inference_module",
    "load_teacher",
    "mean_iou",
    "predict_labels",
    "recalibrate_batchnorm",
    "segmentation_student",
    "tiny_classifier",
]
