"""AMS building blocks: masked Adam, coordinate selection rules, ASR/ATR controller, uplink frames."""
from __future__ import annotations

import struct

import numpy as np
import pytest
import torch

from edgert.ams.protocol import Control, Join, SampleUpload, UploadStatus
from edgert.ams.sampling import ASRConfig, ATRConfig, SamplingController, phi_score
from edgert.transport import ProtocolError
from edgert.updates.selection import (
    AdamConfig,
    CoordinateSelector,
    MaskedAdam,
    SelectionConfig,
    masked_indices,
)


def _params(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(4, 5, generator=g)), torch.nn.Parameter(torch.randn(7, generator=g))]


def _grads(steps, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(4, 5, generator=g), torch.randn(7, generator=g)] for _ in range(steps)]


def test_masked_adam_without_mask_matches_torch_adam():
    ours, ref = _params(), _params()
    opt = MaskedAdam(ours, AdamConfig(lr=1e-2))
    torch_opt = torch.optim.Adam(ref, lr=1e-2, betas=(0.9, 0.999), eps=1e-8)
    for grads in _grads(6):
        for p, q, g in zip(ours, ref, grads):
            p.grad, q.grad = g.clone(), g.clone()
        opt.step()
        torch_opt.step()
    for p, q in zip(ours, ref):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-6, atol=1e-7)


def test_masked_adam_changes_only_masked_coordinates_but_updates_all_moments():
    start = [p.detach().clone() for p in _params()]
    masked, full = _params(), _params()
    opt_m, opt_f = MaskedAdam(masked, AdamConfig(lr=1e-2)), MaskedAdam(full, AdamConfig(lr=1e-2))
    masks = [torch.rand(4, 5, generator=torch.Generator().manual_seed(3)) < 0.3, torch.zeros(7, dtype=torch.bool)]
    opt_m.set_masks(masks)
    for grads in _grads(5):  # fixed gradients: the moments cannot depend on the mask
        for p, q, g in zip(masked, full, grads):
            p.grad, q.grad = g.clone(), g.clone()
        opt_m.step()
        opt_f.step()
    for i in range(2):
        torch.testing.assert_close(opt_m.exp_avg[i], opt_f.exp_avg[i])
        torch.testing.assert_close(opt_m.exp_avg_sq[i], opt_f.exp_avg_sq[i])
        # accumulated = the full (unmasked) Adam update of the phase
        torch.testing.assert_close(opt_m.accumulated[i], full[i].detach() - start[i], rtol=1e-5, atol=1e-7)
        changed = masked[i].detach() != start[i]
        assert not torch.any(changed & ~masks[i])
        torch.testing.assert_close(masked[i].detach()[masks[i]], full[i].detach()[masks[i]])
    with pytest.raises(ValueError, match="mask 1: expected bool"):
        opt_m.set_masks([masks[0], torch.zeros(6, dtype=torch.bool)])


def test_masked_adam_state_continues_exactly_in_another_optimizer():
    """state_dict / load_state_dict: what an AMS phase trained as a Ray task takes along and brings back."""
    a, b = _params(), _params()
    opt_a = MaskedAdam(a, AdamConfig(lr=1e-2))
    mask = torch.rand(4, 5, generator=torch.Generator().manual_seed(3)) < 0.5
    opt_a.set_masks([mask, torch.ones(7, dtype=torch.bool)])
    grads = _grads(6)
    for g in grads[:3]:
        for p, x in zip(a, g):
            p.grad = x.clone()
        opt_a.step()
    with torch.no_grad():
        for p, q in zip(b, a):
            p.copy_(q)
    opt_b = MaskedAdam(b, AdamConfig(lr=1e-2))
    opt_b.load_state_dict(opt_a.state_dict())
    for g in grads[3:]:
        for opt, ps in ((opt_a, a), (opt_b, b)):
            for p, x in zip(ps, g):
                p.grad = x.clone()
            opt.step()
    assert opt_b.steps == opt_a.steps == 6
    for i in range(2):
        assert torch.equal(a[i], b[i]) and torch.equal(opt_a.accumulated[i], opt_b.accumulated[i])
    bad = opt_a.state_dict()
    bad["exp_avg"] = bad["exp_avg"][:1]
    before = opt_b.state_dict()
    with pytest.raises(ValueError, match="exp_avg does not match"):
        opt_b.load_state_dict(bad)
    after = opt_b.state_dict()
    assert after["steps"] == before["steps"]
    assert all(torch.equal(x, y) for x, y in zip(after["exp_avg"], before["exp_avg"]))


def test_gradient_guided_selection_takes_the_largest_adam_updates():
    sel = CoordinateSelector([(4, 5), (7,)], SelectionConfig("gradient", fraction=0.25, seed=5))
    assert sel.total == 27 and sel.count == 7
    first = sel.next_masks(None)  # first phase: random, reproducible from the seed
    again = CoordinateSelector([(4, 5), (7,)], SelectionConfig("gradient", fraction=0.25, seed=5)).next_masks(None)
    assert sum(int(m.sum()) for m in first) == 7
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    acc = [torch.randn(4, 5, generator=torch.Generator().manual_seed(9)), torch.zeros(7)]
    acc[1][3] = -100.0  # a large negative update counts by its magnitude
    masks = sel.next_masks(acc)
    flat_score = torch.cat([a.abs().reshape(-1) for a in acc])
    flat_mask = torch.cat([m.reshape(-1) for m in masks])
    assert int(flat_mask.sum()) == 7 and bool(flat_mask[20 + 3])
    assert flat_score[flat_mask].min() >= flat_score[~flat_mask].max()


def test_ablation_strategies():
    shapes = [(10,), (30,)]
    first = CoordinateSelector(shapes, SelectionConfig("first", 0.1)).next_masks()
    assert masked_indices(torch.cat(first)).tolist() == [0, 1, 2, 3]
    last = CoordinateSelector(shapes, SelectionConfig("last", 0.1)).next_masks()
    assert masked_indices(torch.cat(last)).tolist() == [36, 37, 38, 39]
    assert all(bool(m.all()) for m in CoordinateSelector(shapes, SelectionConfig("full", 0.05)).next_masks())
    rnd = CoordinateSelector(shapes, SelectionConfig("random", 0.25, seed=1))
    a, b = torch.cat(rnd.next_masks()), torch.cat(rnd.next_masks())
    assert int(a.sum()) == int(b.sum()) == 10 and not torch.equal(a, b)
    with pytest.raises(ValueError, match="strategy"):
        SelectionConfig("best").validate()
    with pytest.raises(ValueError, match="fraction"):
        CoordinateSelector(shapes, SelectionConfig("random", 0.0))
    with pytest.raises(ValueError, match="accumulated: expected 2 tensors"):
        CoordinateSelector(shapes).next_masks([torch.zeros(10)])


def test_phi_score_and_sampling_rate_controller():
    a = np.zeros((10, 10), np.int64)
    b = a.copy()
    b[:2] = 1
    assert phi_score(a, b) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="one \\[H, W\\] shape"):
        phi_score(a, b[:5])
    asr = ASRConfig(r_min=0.1, r_max=1.0, r_init=0.4, period_s=10.0, phi_target=0.1)
    ctl = SamplingController(asr, ATRConfig())
    labels = [a, b]  # alternating: phi = 0.2 = 2 x target between every pair
    t = 0.0
    for i in range(5):
        ctl.observe(t, labels[i % 2])
        t += 2.5
    assert ctl.rate == pytest.approx(0.8)  # 0.4 * 0.2 / 0.1 after the first 10 s
    for i in range(5):
        ctl.observe(t, labels[i % 2])
        t += 2.5
    assert ctl.rate == 1.0  # clipped at r_max
    for _ in range(25):  # a static scene: phi = 0 -> r_min within two periods
        ctl.observe(t, a)
        t += 1.0
    assert ctl.rate == pytest.approx(0.1)
    fixed = SamplingController(ASRConfig(r_init=0.5, enabled=False))
    for i in range(30):
        fixed.observe(float(i), labels[i % 2])
    assert fixed.rate == 0.5


def test_training_rate_slowdown_hysteresis():
    ctl = SamplingController(ASRConfig(), ATRConfig())
    assert ctl.t_update == 10.0
    ctl.rate = 0.2  # below 0.25: slowdown, T_update grows by 2 s per phase
    assert ctl.end_phase() == 12.0 and ctl.end_phase() == 14.0 and ctl.slowdown
    ctl.rate = 0.3  # inside the hysteresis band: stays in slowdown
    assert ctl.end_phase() == 16.0
    ctl.rate = 0.4  # above 0.35: leaves slowdown and resets
    assert ctl.end_phase() == 10.0 and not ctl.slowdown
    ctl.rate = 0.3  # not below 0.25: no slowdown
    assert ctl.end_phase() == 10.0
    ctl.rate = 0.1
    for _ in range(40):
        ctl.end_phase()
    assert ctl.t_update == 60.0  # capped
    scaled = ATRConfig().scaled(0.1)
    assert scaled.t_update_s == pytest.approx(1.0) and scaled.enter_below == pytest.approx(2.5)
    assert ASRConfig().scaled(0.1).r_max == pytest.approx(10.0)
    with pytest.raises(ValueError, match="hysteresis"):
        ATRConfig(enter_below=0.4, exit_above=0.3).validate()


def test_uplink_frames_round_trip_and_reject_malformed_bodies():
    join = Join(25.0, 320, 144)
    assert Join.decode(join.encode()) == join
    control = Control(3, UploadStatus.BAD_VIDEO, 7, 0.5, 12.0, "decoding failed")
    assert Control.decode(control.encode()) == control
    upload = SampleUpload(4, 9.5, [8.0, 8.5, 9.0], b"\x1a\x45\xdf\xa3video")
    assert SampleUpload.decode(upload.encode()) == upload
    # every cut before the variable tail (message, video bytes) is refused
    for kind, body, fixed in ((Join, join.encode(), 12), (Control, control.encode(), 24),
                              (SampleUpload, upload.encode(), 16 + 3 * 8 + 1)):
        for cut in range(fixed):
            with pytest.raises(ProtocolError):
                kind.decode(body[:cut])
    with pytest.raises(ProtocolError, match="strictly increasing"):
        SampleUpload.decode(SampleUpload(1, 9.0, [1.0, 1.0], b"x").encode())
    with pytest.raises(ProtocolError, match="frame count"):
        SampleUpload.decode(struct.pack("<IId", 1, 0, 1.0) + b"xx")
    with pytest.raises(ProtocolError, match="unknown status"):
        Control.decode(struct.pack("<IIQff", 1, 99, 1, 1.0, 1.0))
