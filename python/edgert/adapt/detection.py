"""The face detector the video pipelines can adapt for: MTCNN (:mod:`edgert.vision.mtcnn`) with an input gradient.

MTCNN's cascade is not differentiable end to end (NMS, thresholds, integer crop windows), so :class:`FaceDNN`
splits it the way OneAdapt's detection utility needs: the windows come from MTCNN's normal pipeline without
gradient (:meth:`MTCNN.cascade`), then ONet's face probability of **every window ONet scored** -- the ones under
its 0.7 threshold included -- is computed again from the same 48x48 crop of the input with gradient. The crop
window is fixed by the gradient-free pass; the gradient flows through the area resize into the pixels under it.

Output of :meth:`FaceDNN.__call__`: those probabilities ``[S]``. Utility: the soft count
(:func:`edgert.adapt.utility.soft_count`, ``theta`` 0.5), the paper's ``sum f(score)`` over candidates. Counting
the candidates under the detection threshold matters: with only the final detections, a face that a coarse
configuration loses stops contributing any gradient exactly when it is lost, and the resource gradient alone then
drives the knobs down (measured: OneAdapt at lambda 0.03 fell to F1 0.48 on carphone); a face near ``theta``
is where ``f`` is steepest. Accuracy: mean over frames of the detection F1 at IoU >= 0.5 against the detector on
the original frames (:func:`edgert.vision.metrics.frame_f1`; a frame where neither finds a face scores 1).

Measured on carphone (4 s at 10 fps, 176x144, one face per frame; uniform configurations, 1-s segments, one
thread): resolution 1 at CRF 23 / 35 / 45 gives F1 1.00 / 1.00 / 0.85 for 42.6 / 12.1 / 6.1 kB; resolution 0.5
gives 1.00 / 0.85 / 0.28 for 18.4 / 6.3 / 3.9 kB (0.25: 1.00 / 0.10 / 0.00). Accuracy falls by faces lost, not
moved, so the soft count per frame follows F1 (Pearson 0.9999 over the nine configurations, 0.994 over their 360
frames). Summed ``|DNNGrad|`` per 1-s interval is 0.002-0.03 at resolution 1 / CRF 23 (probabilities ~0.9996,
where ``f`` is flat) and 0.1-120 at CRF 45, where faces sit near ONet's threshold.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from edgert.adapt.utility import DEFAULT_THETA, soft_count
from edgert.vision.metrics import frame_f1
from edgert.vision.mtcnn import MTCNN, _normalise


class FaceDNN:
    """MTCNN faces of frames ``[N, 3, H, W]`` in ``[0, 1]`` (pixel values ``x * 255``), with an input gradient.

    Args:
        detector: the :class:`~edgert.vision.mtcnn.MTCNN` to run (default: standard settings, CPU).
        theta: the soft count's threshold (:func:`edgert.adapt.utility.soft_count`).
        iou_threshold: IoU at which a box matches a reference box in :meth:`score`.

    Raises:
        TeacherError: facenet-pytorch (which holds MTCNN's weights) is not installed.

    The networks' parameters are frozen (``requires_grad`` False); not thread-safe only in that the torch modules
    are shared.
    """

    def __init__(self, detector: Optional[MTCNN] = None, theta: float = DEFAULT_THETA,
                 iou_threshold: float = 0.5) -> None:
        if not 0.0 < iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold: expected in (0, 1], got {iou_threshold}")
        self.detector = detector if detector is not None else MTCNN()
        self.theta, self.iou_threshold = float(theta), float(iou_threshold)
        for net in (self.detector.pnet, self.detector.rnet, self.detector.onet):
            for p in net.parameters():
                p.requires_grad_(False)

    @staticmethod
    def _check(x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"x: expected [N, 3, H, W] in [0, 1], got {list(x.shape)}")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """ONet's face probability ``[S]`` of every window ONet scored in every frame, the ones under its
        threshold included (see the module docstring), differentiable with respect to ``x``; an empty tensor,
        still attached to ``x``, when ONet scored none."""
        self._check(x)
        images = x * 255.0
        found = self.detector.cascade(images.detach())
        if found.scored.shape[0] == 0:
            return x.reshape(-1)[:0]  # autograd.grad of its (zero) utility gives zeros, not an error
        crops, ok = self.detector._crops(images, found.scored, found.scored_frames, 48)
        if not bool(ok.all()):  # cannot happen: these crops were scored in the pass above
            raise RuntimeError("FaceDNN: a window's ONet crop is empty")
        return self.detector.onet(_normalise(crops))[-1][:, 1]

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch: Optional[int] = None) -> torch.Tensor:
        """Boxes ``float32 [N, K, 5]`` (``x0, y0, x1, y1`` in frame pixels, ONet probability; most probable first)
        of frames ``[N, 3, H, W]`` in ``[0, 1]``, in batches of ``batch`` frames (default: the detector's); rows
        past a frame's detections are NaN, ``K`` the most faces in one frame (0 when none has any)."""
        self._check(x)
        step = int(batch or self.detector.batch_size)
        per_frame: list[torch.Tensor] = []
        for i in range(0, x.shape[0], step):
            found = self.detector.cascade(x[i:i + step].float() * 255.0)
            boxes, frames = found.boxes, found.frames
            per_frame += [boxes[frames == j] for j in range(min(step, x.shape[0] - i))]
        k = max((int(b.shape[0]) for b in per_frame), default=0)
        out = torch.full((x.shape[0], k, 5), float("nan"))
        for j, b in enumerate(per_frame):
            out[j, :b.shape[0]] = b.float().cpu()
        return out

    def utility(self, probability: torch.Tensor) -> torch.Tensor:
        """The soft count of confident detections, ``sum_i 2 sigmoid(20 (p_i - theta)) - 1`` (scalar)."""
        return soft_count(probability, self.theta)

    def score(self, boxes: torch.Tensor, reference: torch.Tensor) -> float:
        """Mean over frames of the F1 of :meth:`predict` boxes against reference boxes (both ``[N, K, 5]``, NaN
        padded) at IoU >= ``iou_threshold``; a frame where neither has a box scores 1, one where only one has any
        scores 0 (:func:`edgert.vision.metrics.frame_f1`)."""
        return float(np.mean(frame_f1(label_rows(reference), label_rows(boxes), self.iou_threshold)))

    @staticmethod
    def interest(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Bool ``[N, height, width]``: pixels any of a frame's :meth:`predict` boxes touches (pixel ``(r, c)``
        covers ``[c, c + 1) x [r, r + 1)``; boxes reaching past the frame are clipped)."""
        n = boxes.shape[0]
        mask = torch.zeros((n, height, width), dtype=torch.bool)
        for i, j in torch.nonzero(~torch.isnan(boxes[..., 4])).tolist():
            x0, y0, x1, y1 = (float(v) for v in boxes[i, j, :4])
            c0, r0 = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
            c1, r1 = min(width, int(np.ceil(x1))), min(height, int(np.ceil(y1)))
            if c1 > c0 and r1 > r0:
                mask[i, r0:r1, c0:c1] = True
        return mask


def label_rows(boxes: torch.Tensor) -> np.ndarray:
    """NaN-padded boxes ``[N, K, 5]`` (score last) as label rows ``float32 [N, K, 5]`` ``(x0, y0, x1, y1, valid)``
    (:func:`edgert.vision.metrics.frame_f1`'s input): valid 1 where the score is a number, padding rows zero."""
    if boxes.ndim != 3 or boxes.shape[2] != 5:
        raise ValueError(f"boxes: expected [N, K, 5] (x0, y0, x1, y1, score), got {list(boxes.shape)}")
    arr = boxes.detach().cpu().numpy().astype(np.float32)
    valid = ~np.isnan(arr[..., 4])
    out = np.zeros_like(arr)
    out[..., :4] = np.where(valid[..., None], arr[..., :4], 0.0)
    out[..., 4] = valid
    return out
