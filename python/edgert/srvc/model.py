"""SRVC's super-resolution model with spatially-adaptive kernels (Khani, Sivaraman, Alizadeh, ICCV 2021).

Layout (x: LR frame ``[N, 3, h, w]`` in [0, 1], RGB; output ``[N, 3, s*h, s*w]``):

1. **Patches.** The frame is replicate-padded to a multiple of P and cut into P x P patches of
   *contiguous* pixels (P = 5). (The public TensorFlow code used ``space_to_batch``, whose
   "patches" interleave pixels from across the whole frame; this model does not.)
2. **Kernel predictor** (two-layer CNN per patch): conv3x3 valid 3 -> C (C = 256) + ReLU gives a
   3 x 3 map, conv3x3 valid C -> 27F + F gives one vector per patch: the patch's 3x3 kernel with
   3 input and F output channels (F = 32) and its F biases.
3. **Adaptive conv** (:func:`edgert.ops.adaptive_conv`, zero padding at each patch's border,
   ReLU): every patch is convolved with its own kernel. Predictor and adaptive conv see the frame
   minus ``input_offset`` (0.5; not in the paper, whose literal model is ``input_offset=0``): on
   all-positive pixels the first Adam steps switch most of the F channels off for good.
4. **SR body**: conv5x5 F -> 128 + ReLU, conv3x3 128 -> 32 + ReLU, conv3x3 32 -> 3 s^2, pixel
   shuffle by s (x4 default; x2 and x3 supported). The widths/kernels are configurable.

With the defaults the model has 2,225,744 parameters (paper: ~2.2M at F = 32), 93% of them in
the predictor's second layer. ``residual=True`` (not in the paper) adds a bicubic upsampling of
the input to the output and zero-initialises the last conv (the untrained model *is* bicubic), which
makes short trainings converge much faster.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from edgert.ops import adaptive_conv

SCALES = (2, 3, 4)


@dataclass(frozen=True)
class SRConfig:
    """Architecture of the SRVC model; defaults are the paper's (x4, P = 5, F = 32)."""

    scale: int = 4
    patch: int = 5
    features: int = 32  # F: output channels of the adaptive convolution
    predictor_channels: int = 256  # hidden width of the kernel predictor
    body_channels: tuple[int, ...] = (128, 32)  # hidden conv widths after the adaptive conv
    body_kernels: tuple[int, ...] = (5, 3)  # their kernel sizes (the output conv is 3x3)
    residual: bool = False  # add bicubic(x) to the output (deviation from the paper, off by default)
    # Subtracted from the input of the kernel predictor and the adaptive conv (not in the paper: 0 is its
    # literal model). With all-positive pixels the adaptive conv's output sign follows the kernel's sum
    # times the brightness, so Adam's first steps switch whole channels off for good; zero-mean input
    # keeps them responding to edges of both signs (CHANGELOG.md, "SRVC: dead adaptive-conv channels").
    input_offset: float = 0.5

    def validate(self) -> None:
        """Raises ValueError naming the first bad field."""
        if self.scale not in SCALES:
            raise ValueError(f"scale: expected one of {SCALES}, got {self.scale}")
        if self.patch < 3:
            raise ValueError(f"patch: the predictor needs patches of at least 3 x 3 pixels, got {self.patch}")
        if not math.isfinite(self.input_offset):
            raise ValueError(f"input_offset: expected a finite number, got {self.input_offset}")
        if self.features <= 0 or self.predictor_channels <= 0:
            raise ValueError(f"features/predictor_channels must be positive, "
                             f"got {self.features}/{self.predictor_channels}")
        if len(self.body_channels) != len(self.body_kernels) or not self.body_channels:
            raise ValueError(f"body_channels {self.body_channels} and body_kernels {self.body_kernels} must be "
                             "non-empty and of equal length")
        if any(c <= 0 for c in self.body_channels) or any(k <= 0 or k % 2 == 0 for k in self.body_kernels):
            raise ValueError("body channels must be positive and body kernels odd")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SRConfig":
        """Inverse of :meth:`as_dict` (lists become tuples)."""
        d = dict(d)
        d.setdefault("input_offset", 0.0)  # written before the field existed: the uncentred model
        for key in ("body_channels", "body_kernels"):
            if key in d:
                d[key] = tuple(int(v) for v in d[key])
        cfg = cls(**d)
        cfg.validate()
        return cfg


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Replicate-pads ``[N, C, H, W]`` on the bottom/right to multiples of ``multiple``."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    return F.pad(x, (0, pw, 0, ph), mode="replicate")


class KernelPredictor(nn.Module):
    """Two-layer CNN mapping each contiguous P x P patch to a 3x3 kernel (3 -> F) and F biases."""

    def __init__(self, patch: int, features: int, channels: int) -> None:
        super().__init__()
        self.patch, self.features = patch, features
        self.conv1 = nn.Conv2d(3, channels, 3)  # valid: P x P -> (P-2) x (P-2)
        self.conv2 = nn.Conv2d(channels, 28 * features, patch - 2)  # valid: -> 1 x 1

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` [N, 3, H, W] with H, W multiples of P -> (kernels [N, gh, gw, F, 3, 3, 3], bias [N, gh, gw, F])."""
        n, c, h, w = x.shape
        p = self.patch
        gh, gw = h // p, w // p
        patches = x.reshape(n, c, gh, p, gw, p).permute(0, 2, 4, 1, 3, 5).reshape(n * gh * gw, c, p, p)
        out = self.conv2(torch.relu(self.conv1(patches))).reshape(n, gh, gw, 28 * self.features)
        f = self.features
        kernels = out[..., :27 * f].reshape(n, gh, gw, f, 3, 3, 3)
        bias = out[..., 27 * f:]
        return kernels.contiguous(), bias.contiguous()


class SRVCModel(nn.Module):
    """The SRVC super-resolution network (see the module docstring).

    ``forward(x)``: float32 ``[N, 3, h, w]`` in [0, 1] (any h, w >= 1) -> ``[N, 3, s*h, s*w]``.
    Frames whose size is not a multiple of P are replicate-padded inside and the output is cropped
    back, so every size works and the same input always gives the same output.
    """

    def __init__(self, config: SRConfig = SRConfig()) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.predictor = KernelPredictor(config.patch, config.features, config.predictor_channels)
        layers: list[nn.Module] = []
        c_in = config.features
        for c_out, k in zip(config.body_channels, config.body_kernels):
            layers += [nn.Conv2d(c_in, c_out, k, padding=k // 2), nn.ReLU(inplace=True)]
            c_in = c_out
        layers.append(nn.Conv2d(c_in, 3 * config.scale ** 2, 3, padding=1))
        self.body = nn.Sequential(*layers)
        if config.residual:  # start exactly at bicubic: the learned part is a correction that begins at zero
            nn.init.zeros_(self.body[-1].weight)
            nn.init.zeros_(self.body[-1].bias)
        self.shuffle = nn.PixelShuffle(config.scale)
        self.backend = "auto"  # edgert.ops backend of the adaptive conv ("auto"|"cpu"|"cuda"|"torch")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3 or x.dtype != torch.float32:
            raise ValueError(f"x: expected float32 [N, 3, h, w], got {x.dtype} {list(x.shape)}")
        h, w = x.shape[-2:]
        s = self.config.scale
        y = self.shuffle(self.body(self.adaptive_features(x)))[..., :h * s, :w * s]
        if self.config.residual:
            y = y + F.interpolate(x, scale_factor=s, mode="bicubic", align_corners=False)
        return y

    def adaptive_features(self, x: torch.Tensor) -> torch.Tensor:
        """The adaptive conv's output (after its ReLU) for ``x`` [N, 3, h, w]:
        ``[N, F, h', w']``, h', w' padded to P."""
        xp = (pad_to_multiple(x, self.config.patch) - self.config.input_offset).contiguous()
        kernels, bias = self.predictor(xp)
        return adaptive_conv(xp, kernels, bias, self.config.patch, "relu", backend=self.backend)

    def alive_channels(self, x: torch.Tensor) -> int:
        """How many of the F adaptive-conv channels are positive anywhere on ``x``.

        A channel that is zero on every pixel passes no gradient to its kernel-predictor rows or to the
        body's weights on it, so it never recovers: a healthy model keeps (nearly) all F alive.
        """
        with torch.no_grad():
            return int((self.adaptive_features(x).amax(dim=(0, 2, 3)) > 0).sum())

    def num_parameters(self) -> int:
        """Trainable parameter count (2,225,744 with the paper's defaults)."""
        return sum(p.numel() for p in self.parameters())

    def macs_per_lr_pixel(self) -> float:
        """Multiply-accumulates per low-resolution pixel (the decoder's cost)."""
        cfg = self.config
        p2 = cfg.patch ** 2
        pred = ((cfg.patch - 2) ** 2 * 27 * cfg.predictor_channels
                + cfg.predictor_channels * (cfg.patch - 2) ** 2 * 28 * cfg.features)
        total = pred / p2 + 27 * cfg.features
        c_in = cfg.features
        for c_out, k in zip(cfg.body_channels, cfg.body_kernels):
            total += c_in * c_out * k * k
            c_in = c_out
        total += c_in * 3 * cfg.scale ** 2 * 9
        return float(total)


def count_parameters(config: SRConfig = SRConfig()) -> int:
    """Parameters of :class:`SRVCModel` for ``config`` (closed form, no allocation)."""
    config.validate()
    c, f, p = config.predictor_channels, config.features, config.patch
    total = (27 * c + c) + (c * (p - 2) ** 2 * 28 * f + 28 * f)
    c_in = f
    for c_out, k in zip(config.body_channels, config.body_kernels):
        total += c_in * c_out * k * k + c_out
        c_in = c_out
    total += c_in * 3 * config.scale ** 2 * 9 + 3 * config.scale ** 2
    return int(total)


# ---- frame geometry shared by encoder and decoder ------------------------------------


@dataclass(frozen=True)
class Geometry:
    """How an HR frame maps to the LR content stream and back.

    The HR frame (``width`` x ``height``) is replicate-padded on the right/bottom to a multiple of
    2k, so the LR frame (``lr_width`` x ``lr_height`` = padded / k) has even sides (yuv420p); the
    decoder's SR output (``padded``) is cropped back to ``width`` x ``height``.
    """

    width: int
    height: int
    scale: int

    @property
    def padded_width(self) -> int:
        return -(-self.width // (2 * self.scale)) * 2 * self.scale

    @property
    def padded_height(self) -> int:
        return -(-self.height // (2 * self.scale)) * 2 * self.scale

    @property
    def lr_width(self) -> int:
        return self.padded_width // self.scale

    @property
    def lr_height(self) -> int:
        return self.padded_height // self.scale

    def pad_hr(self, frames: "Any") -> "Any":
        """uint8 ``[N, H, W, 3]`` -> edge-replicated ``[N, padded_height, padded_width, 3]``."""
        import numpy as np

        ph, pw = self.padded_height - self.height, self.padded_width - self.width
        if frames.shape[1:3] != (self.height, self.width):
            raise ValueError(f"frames: expected {self.width}x{self.height}, got {frames.shape[2]}x{frames.shape[1]}")
        if ph == 0 and pw == 0:
            return frames
        return np.pad(frames, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")

    def crop_hr(self, frames: "Any") -> "Any":
        """``[..., padded_height, padded_width, C]`` (numpy, NHWC) -> ``[..., height, width, C]``."""
        return frames[..., :self.height, :self.width, :]


def model_summary(model: SRVCModel) -> dict[str, Any]:
    """Config, parameter count (per block) and MACs per LR pixel, for reports."""
    per_block = {name: sum(p.numel() for p in mod.parameters()) for name, mod in
                 (("predictor", model.predictor), ("body", model.body))}
    return {"config": model.config.as_dict(), "parameters": model.num_parameters(), "parameters_per_block": per_block,
            "macs_per_lr_pixel": model.macs_per_lr_pixel(),
            "gmacs_per_720p_frame": model.macs_per_lr_pixel() * 1280 * 720 / model.config.scale ** 2 / 1e9}
