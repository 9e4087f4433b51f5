"""Output utilities: differentiable stand-ins for accuracy that need no ground truth (OneAdapt's "output utility").

OneAdapt ascends accuracy without labels by differentiating a utility of the DNN's own output that rises when the
output gets closer to what the full-quality input would give. The choices (see docs/design/adapt.md):

* **Detection**: the soft count of confident detections, ``sum_i f(score_i)`` with
  ``f(s) = 2 sigmoid(20 (s - theta)) - 1`` (the paper's): a degraded input loses objects or their confidence.
* **Segmentation**: the mean over pixels of ``(2 p - 1)^2``, the confidence of the mask: degraded pictures blur the
  class boundary towards ``p = 1/2`` on both sides of it, while a soft count of class pixels (the detection rule per
  pixel) would reward a background pixel for becoming *less* certain.
* **Voice activity**: the speech-probability mass ``sum_t p_t`` over the VAD's chunks, the detection rule with the
  chunk as the object: a degraded signal loses speech frames first.
"""
from __future__ import annotations

import torch

DEFAULT_THETA = 0.5
SHARPNESS = 20.0


def soft_count(scores: torch.Tensor, theta: float = DEFAULT_THETA) -> torch.Tensor:
    """``sum f(score)``, ``f(s) = 2 sigmoid(20 (s - theta)) - 1``: detections' scores ``[...]`` -> scalar."""
    return (2.0 * torch.sigmoid(SHARPNESS * (scores - theta)) - 1.0).sum()


def mask_confidence(probability: torch.Tensor) -> torch.Tensor:
    """Sum over frames of the mean over pixels of ``(2 p - 1)^2``: class probabilities ``[N, H, W]`` -> scalar."""
    if probability.ndim != 3:
        raise ValueError(f"probability: expected [N, H, W], got {list(probability.shape)}")
    return ((2.0 * probability - 1.0) ** 2).mean(dim=(1, 2)).sum()


def speech_mass(probability: torch.Tensor) -> torch.Tensor:
    """Speech-probability mass ``sum_t p_t`` of VAD chunk probabilities ``[...]`` -> scalar."""
    return probability.sum()
