"""Students and distillation: MobileNetV2 layout and ImageNet loading, importance slicing, segmentation
student shapes, training on real teacher labels, parameter masks, and bad input leaving state unchanged."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import needs_av, needs_imagenet, needs_mediapipe_model
from edgert.vision.distill import as_input, balanced_class_weights, distill_step, predict_labels, recalibrate_batchnorm
from edgert.vision.models import (
    MobileNetV2,
    imagenet_state_dict,
    inference_module,
    load_imagenet_encoder,
    segmentation_student,
    slice_imagenet_state_dict,
    tiny_classifier,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@needs_imagenet
def test_mobilenetv2_matches_torchvision_layout() -> None:
    state = imagenet_state_dict()
    model = MobileNetV2()
    assert list(model.state_dict()) == list(state)  # same names, same order
    model.load_state_dict(state, strict=True)
    assert sum(p.numel() for p in model.parameters()) == 3_504_872  # torchvision's count


@needs_imagenet
@pytest.mark.parametrize("width", [0.5, 0.75])
def test_importance_slicing(width: float) -> None:
    full = imagenet_state_dict()
    model = MobileNetV2(width_mult=width)
    sliced = slice_imagenet_state_dict(model, full)
    model.load_state_dict(sliced, strict=True)
    # the stem keeps exactly its largest-|gamma| channels, in their original order
    k = model.feature_channels[0]
    gamma = full["features.0.1.weight"]
    keep = torch.topk(gamma.abs(), k).indices.sort().values
    torch.testing.assert_close(sliced["features.0.1.weight"], gamma[keep])
    torch.testing.assert_close(sliced["features.0.0.weight"], full["features.0.0.weight"][keep])
    # block 1's depthwise filters are the stem's kept channels (t = 1: no expansion)
    torch.testing.assert_close(sliced["features.1.conv.0.0.weight"], full["features.1.conv.0.0.weight"][keep])
    model.eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 1000)


def test_inference_module_matches_eager() -> None:
    torch.manual_seed(4)
    model = segmentation_student(2, width_mult=0.5, pretrained=False)
    for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):  # non-trivial statistics
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    model.train()
    fast = inference_module(model)
    assert model.training  # the original is untouched
    x = torch.rand(2, 3, 48, 80)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), model.eval()(x), atol=1e-5, rtol=1e-4)


@needs_imagenet
def test_expansion_slicing_keeps_streams() -> None:
    """expansion_mult < 1 narrows only the hidden layers; the residual streams keep every ImageNet channel."""
    full = imagenet_state_dict()
    model = MobileNetV2(expansion_mult=0.35)
    sliced = slice_imagenet_state_dict(model, full)
    model.load_state_dict(sliced, strict=True)
    torch.testing.assert_close(sliced["features.0.0.weight"], full["features.0.0.weight"])
    torch.testing.assert_close(sliced["features.2.conv.3.running_mean"], full["features.2.conv.3.running_mean"])
    assert sliced["features.2.conv.0.0.weight"].shape[0] == model.block_specs[1].hidden < 96
    with pytest.raises(ValueError, match="expansion_mult"):
        MobileNetV2(expansion_mult=1.5)


def test_slicing_rejects_a_wider_target() -> None:
    with pytest.raises(ValueError, match="cannot take"):
        slice_imagenet_state_dict(MobileNetV2(width_mult=1.4), MobileNetV2().state_dict())


@pytest.mark.parametrize("shape", [(1, 3, 64, 96), (2, 3, 75, 131)])
def test_segmentation_student_shapes(shape: tuple[int, int, int, int]) -> None:
    model = segmentation_student(3, width_mult=0.5, pretrained=False).eval()
    with torch.no_grad():
        out = model(torch.rand(shape))
    assert out.shape == (shape[0], 3, shape[2], shape[3])
    assert not any(k.startswith("normalize") for k in model.state_dict())  # mean/std are not streamed
    assert not any("classifier.1" in k for k in model.state_dict())  # the ImageNet head is gone
    with pytest.raises(ValueError, match=r"expected float \[N, 3, H, W\]"):
        model(torch.rand(1, 4, 32, 32))
    with pytest.raises(ValueError, match="num_classes"):
        segmentation_student(0, pretrained=False)


@needs_imagenet
def test_pretrained_student_encoder_is_sliced_imagenet() -> None:
    model = segmentation_student(2, width_mult=0.5)
    ref = MobileNetV2(width_mult=0.5)
    load_imagenet_encoder(ref)
    enc = model.backbone.state_dict()
    for name, value in enc.items():
        torch.testing.assert_close(value, ref.state_dict()[name])
    # output stride 16: the stride-32 stage runs dilated at stride 16
    assert max(model.backbone.feature_strides) == 16


def _clip_with_labels(n: int = 4) -> tuple[np.ndarray, np.ndarray]:
    from edgert.data import clip_path
    from edgert.vision.teachers import load_teacher
    from edgert.vision.video import read_clip

    frames, _ = read_clip(clip_path("carphone"), (80, 64), fps=4, max_frames=n)  # a person in a car
    labels = load_teacher("mediapipe-selfie").label(frames)
    return frames, labels


@needs_av
@needs_mediapipe_model
@needs_imagenet
@pytest.mark.slow
def test_student_distills_real_teacher_labels() -> None:
    torch.manual_seed(0)
    frames, labels = _clip_with_labels()
    assert 0.1 < labels.mean() < 0.9  # both classes present
    model = segmentation_student(2, width_mult=0.5)
    assert recalibrate_batchnorm(model, [frames]) == len(frames)  # the sliced encoder's statistics
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    losses = [distill_step(model, opt, frames, labels).loss for _ in range(16)]
    assert losses[-1] < 0.6 * losses[0], losses
    pred = predict_labels(model, frames)
    assert pred.shape == labels.shape and pred.dtype == np.int64
    assert (pred == labels).mean() > 0.8


def test_masks_restrict_changes_but_not_optimizer_state() -> None:
    torch.manual_seed(1)
    model = tiny_classifier(3, width=4)
    frames = torch.rand(4, 3, 32, 32)
    labels = np.array([0, 1, 2, 1])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    masks = {n: torch.rand(p.shape) < 0.2 for n, p in model.named_parameters()}
    result = distill_step(model, opt, frames, labels, masks=masks, return_updates=True)
    for name, p in model.named_parameters():
        changed = p.detach() != before[name]
        assert not (changed & ~masks[name]).any(), name
        torch.testing.assert_close(result.updates[name], p.detach() - before[name])
        state = opt.state[p]
        if p.grad is not None and p.grad.abs().sum() > 0:  # Adam moments exist for every coordinate
            assert (state["exp_avg"][~masks[name]] != 0).any(), name
    assert any((p.detach() != before[n]).any() for n, p in model.named_parameters())


def test_distill_bad_input_leaves_state_unchanged() -> None:
    torch.manual_seed(2)
    model = segmentation_student(2, width_mult=0.35, pretrained=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    frames = np.random.default_rng(0).integers(0, 256, (2, 32, 48, 3), dtype=np.uint8)
    snapshot = {k: v.clone() for k, v in model.state_dict().items()}
    cases = [
        (dict(labels=np.full((2, 32, 48), 5)), "classes must lie in"),
        (dict(labels=np.zeros((3, 32, 48), np.int64)), "3 label maps for 2 frames"),
        (dict(labels=np.zeros((2, 16, 48), np.int64)), "does not match labels"),
        (dict(labels=np.zeros((2, 32, 48), np.float32)), "integer class indices"),
        (dict(labels=np.zeros((2, 32, 48), np.int64), class_weights=torch.ones(3)), "class_weights"),
        (dict(labels=np.zeros((2, 32, 48), np.int64), masks={"nope": torch.ones(1, dtype=torch.bool)}),
         "not a parameter"),
        (dict(labels=np.zeros((2, 32, 48), np.int64), masks={"classifier.weight": torch.ones(2, dtype=torch.bool)}),
         "expected bool"),
    ]
    model.classifier.bias.requires_grad_(False)
    frozen_mask = {"classifier.bias": torch.ones(2, dtype=torch.bool)}
    cases.append((dict(labels=np.zeros((2, 32, 48), np.int64), masks=frozen_mask), "frozen"))
    for freeze_bn in (True, False):
        for kwargs, message in cases:
            with pytest.raises((ValueError, TypeError), match=message):
                distill_step(model, opt, frames, freeze_bn=freeze_bn, **kwargs)
            for k, v in model.state_dict().items():
                assert torch.equal(v, snapshot[k]), (k, message)
    with pytest.raises(ValueError, match="empty batch"):
        distill_step(model, opt, np.zeros((0, 32, 48, 3), np.uint8), np.zeros((0, 32, 48), np.int64))
    with pytest.raises(ValueError, match="frames"):
        as_input(np.zeros((2, 32, 48), np.uint8))


def test_freeze_bn_keeps_running_stats_and_ignore_index() -> None:
    model = tiny_classifier(2, width=4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    distill_step(model, opt, torch.rand(2, 3, 16, 16), np.array([0, 1]))
    assert all(torch.equal(model.state_dict()[k], v) for k, v in stats.items())
    distill_step(model, opt, torch.rand(2, 3, 16, 16), np.array([0, 1]), freeze_bn=False)
    assert not all(torch.equal(model.state_dict()[k], v) for k, v in stats.items())
    assert model.training  # mode restored
    # ignored pixels (255) do not count
    seg = segmentation_student(2, width_mult=0.35, pretrained=False)
    r = distill_step(seg, torch.optim.SGD(seg.parameters(), lr=0.0), torch.rand(1, 3, 16, 16),
                     np.array([[[255] * 16] * 8 + [[1] * 16] * 8]))
    assert np.isfinite(r.loss)


def test_tiny_classifier_learns_and_batchnorm_recalibration() -> None:
    torch.manual_seed(3)
    model = tiny_classifier(2, width=8)
    x = torch.rand(8, 3, 32, 32)
    x[:4, 0] += 0.5  # class 1: reddish
    x = x.clamp(0, 1)
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = [distill_step(model, opt, x, y).loss for _ in range(25)]
    assert losses[-1] < 0.5 * losses[0]
    assert (predict_labels(model, x, batch_size=3) == y).mean() >= 0.75
    seen = recalibrate_batchnorm(model, [x[:4], x[4:]])
    assert seen == 8
    bn = model.features[0][1]
    assert bn.momentum == 0.1 and int(bn.num_batches_tracked) == 2
    with pytest.raises(ValueError, match="batch_size"):
        predict_labels(model, x, batch_size=0)


def test_balanced_class_weights() -> None:
    labels = np.array([0] * 90 + [1] * 10 + [255] * 5)
    w = balanced_class_weights(labels, 3)
    # frequencies 0.9 / 0.1, median 0.5: weights 0.556, 5.0; class 2 absent -> 1
    torch.testing.assert_close(w, torch.tensor([0.5 / 0.9, 5.0, 1.0]))
