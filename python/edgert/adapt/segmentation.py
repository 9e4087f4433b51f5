"""The person-segmentation DNN the video pipelines adapt for (MediaPipe's selfie segmentation, differentiable).

The model is the one :class:`edgert.vision.teachers.MediaPipeSelfieTeacher` runs (executed by
:mod:`edgert.vision.tflite` in PyTorch, so input gradients exist). Ground truth is the same model on the original
frames; accuracy is the per-frame two-class mIoU (background, person) averaged over frames, classes absent from both
masks left out.
"""
from __future__ import annotations

from typing import Optional, Union

import numpy as np
import torch
import torch.nn.functional as F

from edgert.adapt.utility import mask_confidence

# mIoU per frame, evaluated in slices so a long interval never holds more than this many masks at once
_BATCH = 16


class SegmentationDNN:
    """Person probability ``[N, H, W]`` of frames ``[N, 3, H, W]`` in ``[0, 1]``, differentiable in the input.

    Args:
        variant: ``auto`` (landscape model for frames at least 1.4x wider than tall), ``general`` or ``landscape``.
        threshold: probability above which a pixel is ``person`` (for :meth:`score`).
        model_dir: folder with the ``.tflite`` files (default: :func:`edgert.data.model_path`).
    """

    def __init__(self, variant: str = "auto", threshold: float = 0.5,
                 model_dir: Optional[Union[str, object]] = None) -> None:
        from edgert.vision.teachers import MediaPipeSelfieTeacher  # noqa: PLC0415

        self.teacher = MediaPipeSelfieTeacher(variant=variant, threshold=threshold,
                                              model_dir=model_dir)  # type: ignore[arg-type]
        self.threshold = float(threshold)
        for model in self.teacher._models.values():
            model.eval()
            for p in model.parameters():
                p.requires_grad_(False)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"x: expected [N, 3, H, W], got {list(x.shape)}")
        n, _, h, w = x.shape
        if n == 0:
            return x.new_zeros((0, h, w))
        model = self.teacher._models[self.teacher._variant_for(h, w)]
        _, mh, mw, _ = model.input_shape
        shrink = mh < h or mw < w
        z = F.interpolate(x, size=(mh, mw), mode="bilinear", align_corners=False, antialias=shrink)
        p = model(z.permute(0, 2, 3, 1).contiguous())[0].permute(0, 3, 1, 2)
        return F.interpolate(p, size=(h, w), mode="bilinear", align_corners=False).clamp(0.0, 1.0)[:, 0]

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch: int = _BATCH) -> torch.Tensor:
        """:meth:`__call__` without gradients, in batches."""
        if x.shape[0] == 0:
            return x.new_zeros((0, *x.shape[-2:]))
        return torch.cat([self(x[i:i + batch]) for i in range(0, x.shape[0], batch)])

    @staticmethod
    def utility(probability: torch.Tensor) -> torch.Tensor:
        """The mask-confidence utility (:func:`edgert.adapt.utility.mask_confidence`)."""
        return mask_confidence(probability)

    def score(self, probability: torch.Tensor, reference: torch.Tensor) -> float:
        """Mean over frames of the two-class mIoU of thresholded masks."""
        return float(np.mean(frame_miou(probability > self.threshold, reference > self.threshold)))

    def interest(self, probability: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Bool ``[N, H, W]``: the pixels labelled ``person`` (probability > ``threshold``); ``height`` and
        ``width`` (the frames', which the masks already have) are there for the interface's sake."""
        if probability.shape[-2:] != (height, width):
            raise ValueError(f"probability: expected [N, {height}, {width}], got {list(probability.shape)}")
        return probability > self.threshold


def frame_miou(pred: torch.Tensor, truth: torch.Tensor) -> np.ndarray:
    """Per-frame two-class mIoU of bool masks ``[N, H, W]`` (classes absent from both left out)."""
    if pred.shape != truth.shape:
        raise ValueError(f"masks: shapes differ, {list(pred.shape)} vs {list(truth.shape)}")
    p, t = pred.flatten(1), truth.flatten(1)
    ious = []
    for a, b in ((p, t), (~p, ~t)):
        inter = (a & b).sum(1).double()
        union = (a | b).sum(1).double()
        ious.append(torch.where(union > 0, inter / union.clamp(min=1), torch.full_like(union, float("nan"))))
    stacked = torch.stack(ious, 1).numpy()
    return np.nanmean(stacked, axis=1)
