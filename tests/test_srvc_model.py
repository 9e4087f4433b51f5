"""SRVC model: parameter count, shapes at every scale, padding consistency, patch locality, backends."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edgert.srvc.model import Geometry, SRConfig, SRVCModel, count_parameters, pad_to_multiple
from edgert.srvc.training import augment, train

TINY = SRConfig(scale=2, features=4, predictor_channels=8, body_channels=(8,), body_kernels=(3,))


def test_parameter_count_matches_paper_and_closed_form() -> None:
    model = SRVCModel()
    assert model.num_parameters() == count_parameters() == 2_225_744  # paper: ~2.2M at F = 32
    for f in (8, 16, 64):
        cfg = SRConfig(features=f)
        assert SRVCModel(cfg).num_parameters() == count_parameters(cfg)
    assert count_parameters(SRConfig(features=8)) < count_parameters() < count_parameters(SRConfig(features=64))


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("size", [(10, 15), (7, 11), (1, 1)])
def test_output_shape_every_scale_and_odd_sizes(scale: int, size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    model = SRVCModel(SRConfig(scale=scale, features=4, predictor_channels=8, body_channels=(8,), body_kernels=(3,)))
    y = model(torch.rand(2, 3, *size))
    assert y.shape == (2, 3, scale * size[0], scale * size[1])


def test_internal_padding_is_replicate_then_crop() -> None:
    """A frame that is not a multiple of P gives the crop of the explicitly replicate-padded frame's output."""
    torch.manual_seed(1)
    model = SRVCModel(TINY).eval()
    x = torch.rand(1, 3, 12, 13)
    with torch.no_grad():
        direct = model(x)
        padded = model(pad_to_multiple(x, 5))[..., :24, :26]
    torch.testing.assert_close(direct, padded, rtol=0, atol=0)


def test_patches_are_contiguous_pixels() -> None:
    """Changing one pixel changes the kernel of exactly the patch containing it (no space_to_batch mixing)."""
    torch.manual_seed(2)
    model = SRVCModel(TINY)
    x = torch.rand(1, 3, 10, 15)
    k0, b0 = model.predictor(x)
    x2 = x.clone()
    x2[0, :, 6, 12] += 0.5  # patch row 1, column 2
    k1, b1 = model.predictor(x2)
    changed = (k1 - k0).abs().flatten(3).amax(-1) > 0  # [1, gh, gw]
    expected = torch.zeros(1, 2, 3, dtype=torch.bool)
    expected[0, 1, 2] = True
    assert torch.equal(changed, expected)
    assert torch.equal((b1 - b0).abs().amax(-1) > 0, expected)


def test_native_and_reference_backends_agree_and_gradients_reach_every_parameter() -> None:
    torch.manual_seed(3)
    model = SRVCModel(TINY)
    x = torch.rand(2, 3, 11, 9)
    model.backend = "torch"
    ref = model(x)
    model.backend = "cpu"
    out = model(x)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    out.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_residual_model_starts_near_bicubic() -> None:
    model = SRVCModel(SRConfig(scale=2, features=4, predictor_channels=8, body_channels=(8,), body_kernels=(3,),
                               residual=True))
    with torch.no_grad():  # the last conv starts at zero: the untrained residual model is bicubic
        x = torch.rand(1, 3, 10, 10)
        bicubic = torch.nn.functional.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False)
        torch.testing.assert_close(model(x), bicubic)


def test_geometry_pads_to_even_lr_and_crops_back() -> None:
    geo = Geometry(101, 97, 4)
    assert (geo.padded_width, geo.padded_height, geo.lr_width, geo.lr_height) == (104, 104, 26, 26)
    frames = np.random.default_rng(0).integers(0, 255, (2, 97, 101, 3), dtype=np.uint8)
    padded = geo.pad_hr(frames)
    assert padded.shape == (2, 104, 104, 3)
    np.testing.assert_array_equal(geo.crop_hr(padded), frames)
    np.testing.assert_array_equal(padded[:, 97:, :101], np.repeat(frames[:, -1:], 7, axis=1))  # edge replicated
    with pytest.raises(ValueError, match="expected 101x97"):
        geo.pad_hr(frames[:, :-1])


def test_config_validation_names_the_field() -> None:
    with pytest.raises(ValueError, match="scale"):
        SRVCModel(SRConfig(scale=5))
    with pytest.raises(ValueError, match="body_channels"):
        SRConfig(body_channels=(8, 8), body_kernels=(3,)).validate()
    with pytest.raises(ValueError, match="float32"):
        SRVCModel(TINY)(torch.rand(1, 3, 8, 8, dtype=torch.float64))
    assert SRConfig.from_dict(TINY.as_dict()) == TINY


def _textures(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    hr = F.interpolate(torch.rand(6, 3, 16, 16, generator=gen), size=(64, 64), mode="bicubic").clamp(0, 1)
    return F.avg_pool2d(hr, 2), hr


@pytest.mark.parametrize("offset, min_alive, max_alive", [(0.5, 14, 16), (0.0, 0, 6)])
def test_centred_input_keeps_adaptive_conv_channels_alive(offset: float, min_alive: int, max_alive: int) -> None:
    # The failure the offset fixes: on all-positive input, 60 Adam steps at lr 1e-3 switch most of the
    # adaptive conv's channels off for good (2 of 16 survive); centred, all 16 stay alive.
    lr, hr = _textures()
    cfg = SRConfig(scale=2, features=16, predictor_channels=64, body_channels=(32,), body_kernels=(3,), residual=True,
                   input_offset=offset)
    torch.manual_seed(0)
    model = SRVCModel(cfg)
    assert model.alive_channels(lr) == 16
    train(model, lr, hr, iterations=60, batch=4, crop=0.5, learning_rate=1e-3, gen=torch.Generator().manual_seed(1))
    assert min_alive <= model.alive_channels(lr) <= max_alive


def test_config_without_input_offset_is_the_uncentred_model() -> None:
    # Containers written before the field existed carry no input_offset: they hold uncentred models.
    d = SRConfig().as_dict()
    assert d["input_offset"] == 0.5 and SRConfig.from_dict(d) == SRConfig()
    del d["input_offset"]
    assert SRConfig.from_dict(d).input_offset == 0.0
    with pytest.raises(ValueError, match="input_offset"):
        SRConfig(input_offset=float("nan")).validate()


def test_augment_keeps_lr_and_hr_aligned() -> None:
    # avg-pooling commutes with flips, transposes and channel permutations, so an augmented HR batch
    # must pool to the augmented LR batch, whatever transform the generator drew.
    lr, hr = _textures(1)
    hr = hr[:, :, :32, :32]  # square, so the transpose is drawn too
    lr = F.avg_pool2d(hr, 2)
    gen = torch.Generator().manual_seed(3)
    changed = 0
    for _ in range(40):
        a_lr, a_hr = augment(lr, hr, gen)
        assert torch.allclose(F.avg_pool2d(a_hr, 2), a_lr, atol=1e-6)
        assert torch.equal(a_lr.flatten().sort().values, lr.flatten().sort().values)  # a rearrangement only
        changed += not torch.equal(a_lr, lr)
    assert changed >= 30  # the identity is drawn with probability 1/48
