"""Training loops shared by the SRVC encoder and the generic SR model.

All training is MSE between the SR output and the original HR frame (RGB, [0, 1]) with Adam
(lr 1e-4 in the paper) on random crops whose LR size is ``crop`` x the LR frame (half-size in
the paper). Randomness comes only from the ``torch.Generator`` passed in.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

import torch

from edgert.harness import Progress
from edgert.srvc.model import SRVCModel
from edgert.updates import AdamConfig, MaskedAdam


@dataclass
class TrainStats:
    """Loss at the start and the end of a training pass, iterations and wall time."""

    iterations: int
    first_loss: float
    last_loss: float
    seconds: float

    def as_dict(self) -> dict[str, float]:
        return {"iterations": self.iterations, "first_loss": self.first_loss, "last_loss": self.last_loss,
                "seconds": self.seconds}


def random_crops(lr: torch.Tensor, hr: torch.Tensor, scale: int, batch: int, crop: float,
                 gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch`` random (frame, position) crops: LR ``[B, 3, ch, cw]`` and the aligned HR ``[B, 3, s*ch, s*cw]``.

    ``lr`` is ``[N, 3, h, w]``, ``hr`` ``[N, 3, s*h, s*w]``; ``ch = max(1, round(crop * h))`` (same for w).
    Float inputs are in [0, 1]; uint8 inputs (long clips kept as bytes) are converted crop by crop to float32 / 255.
    """
    n, _, h, w = lr.shape
    ch, cw = max(1, min(h, round(crop * h))), max(1, min(w, round(crop * w)))
    frames = torch.randint(0, n, (batch,), generator=gen)
    ys = torch.randint(0, h - ch + 1, (batch,), generator=gen)
    xs = torch.randint(0, w - cw + 1, (batch,), generator=gen)
    lr_b = torch.stack([lr[f, :, y:y + ch, x:x + cw] for f, y, x in zip(frames.tolist(), ys.tolist(), xs.tolist())])
    hr_b = torch.stack([hr[f, :, y * scale:(y + ch) * scale, x * scale:(x + cw) * scale]
                        for f, y, x in zip(frames.tolist(), ys.tolist(), xs.tolist())])
    if lr_b.dtype == torch.uint8:
        lr_b = lr_b.float().div_(255.0)
    if hr_b.dtype == torch.uint8:
        hr_b = hr_b.float().div_(255.0)
    return lr_b.contiguous(), hr_b.contiguous()


def augment(lr: torch.Tensor, hr: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random flips, transpose (square crops only) and RGB permutation on an aligned LR/HR batch.

    For the generic model: with few training images, a 2.2M-parameter model otherwise learns their
    colour casts and orientations, and applies them to every video.
    """
    flips = torch.randint(0, 2, (3,), generator=gen).tolist()
    perm = torch.randperm(3, generator=gen)
    out = []
    for t in (lr, hr):
        if flips[0]:
            t = t.flip(-1)
        if flips[1]:
            t = t.flip(-2)
        if flips[2] and t.shape[-1] == t.shape[-2]:
            t = t.transpose(-1, -2)
        out.append(t[:, perm].contiguous())
    return out[0], out[1]


def train(model: SRVCModel, lr: torch.Tensor, hr: torch.Tensor, *, iterations: int, batch: int, crop: float,
          learning_rate: float, gen: torch.Generator, masks: Optional[dict[str, torch.Tensor]] = None,
          augmented: bool = False, progress: Optional[Progress] = None) -> TrainStats:
    """Adam on MSE for ``iterations`` steps; with ``masks`` only the masked coordinates move.

    ``progress`` (optional) advances by one per iteration. ``augmented`` applies :func:`augment` to every
    batch (the generic model; content-adaptive training fits the video as it is, so the encoder leaves it off).

    ``masks`` maps parameter names to boolean tensors of the parameter's shape; parameters without
    a mask (or with an all-false one) are frozen. The optimizer is the shared
    :class:`~edgert.updates.MaskedAdam`: it steps only the masked coordinates (Adam is per coordinate, so
    they move exactly as under unmasked Adam), and the result differs from the start only where a mask
    is true.
    """
    params = dict(model.named_parameters())
    if masks is not None:
        unknown = set(masks) - set(params)
        if unknown:
            raise ValueError(f"masks name unknown parameters: {sorted(unknown)}")
    stats = TrainStats(0, float("nan"), float("nan"), 0.0)
    if iterations <= 0 or (masks is not None and not any(bool(m.any()) for m in masks.values())):
        return stats
    model.train()
    opt = MaskedAdam(params.values(), AdamConfig(lr=learning_rate))
    if masks is not None:
        opt.set_masks([masks[n].to(torch.bool) if n in masks else torch.zeros_like(p, dtype=torch.bool)
                       for n, p in params.items()])
    t0 = time.perf_counter()
    scale = model.config.scale
    for it in range(iterations):
        x, y = random_crops(lr, hr, scale, batch, crop, gen)
        if augmented:
            x, y = augment(x, y, gen)
        loss = torch.mean((model(x) - y) ** 2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if progress is not None:
            progress.advance()
        value = float(loss.detach())
        if it == 0:
            stats.first_loss = value
        stats.last_loss = value
    stats.iterations = iterations
    stats.seconds = time.perf_counter() - t0
    model.eval()
    return stats
