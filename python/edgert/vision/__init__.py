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
