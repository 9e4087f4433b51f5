"""edgert.adapt core: knobs, the OneAdapt controller (one input-only backward per interval, AccGrad against the
exact first-order change, region attribution through ops.block_average), the shared baselines and the comparison."""
from __future__ import annotations

from typing import Optional

import numpy as np
import pytest
import torch

from conftest import GPU
from edgert.adapt import AdaptConfig, AdaptError, Knob, KnobError, KnobSpace, OneAdapt, Rendered, dnn_grad
from edgert.adapt.ascent import _region_gains, grad_indices
from edgert.adapt.baselines import Measurer, compare, pareto, periodic_profiling, uniform_sweep
from edgert.adapt.utility import mask_confidence, soft_count, speech_mass

# ---------------------------------------------------------------- knobs


def test_knob_maps_snaps_and_probes():
    crf = Knob("crf", 45, 18, integer=True)
    assert crf.value(0.0) == 45 and crf.value(1.0) == 18 and crf.value(0.5) == 32
    assert crf.normalise(18) == 1.0 and crf.normalise(50) == 0.0
    step = crf.probe(0.5, 0.1) - crf.snapped(0.5)
    assert step > 0 and crf.value(crf.probe(0.5, 0.1)) < crf.value(0.5)  # more resource = finer CRF
    assert crf.probe(1.0, 0.1) < crf.snapped(1.0)  # at the top the probe goes down
    scale = Knob("resolution", 0.25, 1.0, allowed=(1.0, 0.5, 0.25, 0.75))
    assert scale.allowed == (0.25, 0.5, 0.75, 1.0)
    assert scale.value(0.6) == 0.75 and scale.value(0.1) == 0.25
    assert scale.probe(0.6, 0.01) == 1.0 and scale.probe(1.0, 0.01) == scale.normalise(0.75)


@pytest.mark.parametrize("kwargs, message", [
    ({"name": "q", "low": 3.0, "high": 3.0}, "empty range"),
    ({"name": "q", "low": 0.0, "high": float("nan")}, "finite"),
    ({"name": "q", "low": 0.0, "high": 1.0, "allowed": ()}, "allowed values are empty"),
    ({"name": "q", "low": 0.0, "high": 1.0, "allowed": (0.5, 2.0)}, "outside"),
    ({"name": "", "low": 0.0, "high": 1.0}, "name"),
])
def test_bad_knobs_are_refused(kwargs, message):
    with pytest.raises(KnobError, match=message):
        Knob(**kwargs)


def test_knob_space_checks_vectors():
    space = KnobSpace([Knob("a", 0, 1), Knob("b", 10, 0, region=0)])
    assert space.regions() == [1] and space.globals() == [0]
    assert space.check([2.0, -1.0]).tolist() == [1.0, 0.0]
    assert space.values([0.25, 0.5]) == {"a": 0.25, "b": 5.0}
    with pytest.raises(KnobError, match="expected 2 values"):
        space.check([0.1])
    with pytest.raises(KnobError, match="finite"):
        space.check([0.1, float("inf")])
    with pytest.raises(KnobError, match="duplicate"):
        KnobSpace([Knob("a", 0, 1), Knob("a", 0, 2)])
    with pytest.raises(KnobError, match="at least one"):
        KnobSpace([])


# ---------------------------------------------------------------- utilities


def test_utilities():
    assert float(soft_count(torch.tensor([0.5]))) == 0.0
    assert float(soft_count(torch.tensor([1.0, 0.0]))) == pytest.approx(0.0, abs=1e-6)
    assert float(soft_count(torch.tensor([0.9]))) > 0.99
    p = torch.tensor([[[0.0, 1.0], [0.5, 0.5]]])
    assert float(mask_confidence(p)) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        mask_confidence(torch.zeros(2, 2))
    assert float(speech_mass(torch.tensor([0.2, 0.3]))) == pytest.approx(0.5)


# ---------------------------------------------------------------- a synthetic pipeline with known gradients


class Toy:
    """Inputs ``x0 + (1 - q) * noise`` for a global quality knob ``q`` and per-region quality knobs scaling the
    noise of their half of the picture; resource ``100 * (1 + q + mean(regions))``; DNN: sigmoid of a fixed conv."""

    name = "toy"
    resource_unit = "units"

    def __init__(self, regions: bool = True, fail_probe: bool = False, intervals: int = 3) -> None:
        g = torch.Generator().manual_seed(0)
        self.x0 = torch.rand(intervals, 4, 3, 32, 48, generator=g)
        self.noise = torch.randn(intervals, 4, 3, 32, 48, generator=g) * 0.2
        knobs = [Knob("q", 0.0, 1.0)]
        if regions:
            knobs += [Knob("left", 0.0, 1.0, region=0), Knob("right", 0.0, 1.0, region=1)]
        self.knobs = KnobSpace(knobs)
        self.conv = torch.nn.Conv2d(3, 1, 3, padding=1)
        torch.nn.init.normal_(self.conv.weight, generator=g)
        self.conv.requires_grad_(False)
        self.fail_probe, self.renders = fail_probe, 0

    def num_intervals(self) -> int:
        return self.x0.shape[0]

    def render(self, interval: int, k: np.ndarray) -> Rendered:
        k = self.knobs.snapped(k)
        self.renders += 1
        if self.fail_probe and self.renders % 2 == 0:
            raise AdaptError("encoder crashed")
        scale = torch.full((1, 1, 1, 48), 1.0 - k[0])
        if len(k) > 1:
            scale[..., :24] *= 1.0 - 0.5 * k[1]
            scale[..., 24:] *= 1.0 - 0.5 * k[2]
        x = self.x0[interval] + scale * self.noise[interval]
        return Rendered(x, 100.0 * (1.0 + float(np.mean(k))), x.shape[0])

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.conv(inputs))[:, 0]

    def utility(self, output: torch.Tensor) -> torch.Tensor:
        return mask_confidence(output)

    def outputs(self, rendered: Rendered) -> torch.Tensor:
        with torch.no_grad():
            return self.forward(rendered.inputs)

    def truth(self, interval: int) -> torch.Tensor:
        with torch.no_grad():
            return self.forward(self.x0[interval])

    def score(self, output: torch.Tensor, reference: torch.Tensor) -> float:
        return float(((output > 0.5) == (reference > 0.5)).float().mean())

    def region_masks(self, height: int, width: int) -> Optional[torch.Tensor]:
        if len(self.knobs) == 1:
            return None
        cols = -(-width // 16)
        rows = -(-height // 16)
        left = torch.zeros(rows, cols, dtype=torch.bool)
        left[:, : cols // 2] = True
        return torch.stack([left, ~left])


def test_dnn_grad_is_input_only_and_matches_autograd():
    toy = Toy()
    x = toy.render(0, np.full(3, 0.5)).inputs
    g = dnn_grad(toy, x)
    assert toy.conv.weight.grad is None
    ref = x.clone().requires_grad_(True)
    toy.utility(toy.forward(ref)).backward()
    torch.testing.assert_close(g, ref.grad)


def test_global_acc_grad_is_the_exact_first_order_change():
    toy = Toy(regions=False)
    ctrl = OneAdapt(toy, AdaptConfig(dk=0.01, grad_frames=0, initial=(0.5,), gain="signed"))
    rendered = toy.render(0, ctrl.k)
    acc, res, renders, note = ctrl.gradients(0, rendered)
    assert renders == 1 and note == ""
    # d utility / dq by a small central difference, per frame
    def u(q: float) -> float:
        with torch.no_grad():
            return float(toy.utility(toy.forward(toy.render(0, np.array([q])).inputs))) / 4
    assert acc[0] == pytest.approx((u(0.5001) - u(0.4999)) / 0.0002, rel=0.05)
    assert res[0] == pytest.approx(1.0 / 1.5, rel=1e-6)  # d(100 (1 + q)) / dq over the starting resource


def test_magnitude_gain_sums_each_frames_first_order_change():
    toy = Toy(regions=False)
    ctrl = OneAdapt(toy, AdaptConfig(dk=0.05, grad_frames=0, initial=(1.0,)))  # at the top the probe goes down
    rendered = toy.render(0, ctrl.k)
    acc, _, _, _ = ctrl.gradients(0, rendered)
    grad = dnn_grad(toy, rendered.inputs)
    delta = toy.render(0, np.array([0.95])).inputs - rendered.inputs
    per_frame = (grad * delta).flatten(1).sum(1)
    assert acc[0] == pytest.approx(float(per_frame.abs().sum()) / 0.05 / 4, rel=1e-5)
    assert acc[0] > 0
    with pytest.raises(ValueError, match="gain"):
        AdaptConfig(gain="sign").validate()


def test_region_gains_sum_to_the_exact_change_and_follow_the_gradient():
    toy = Toy()
    ctrl = OneAdapt(toy, AdaptConfig(dk=0.05, grad_frames=0, initial=(0.5, 0.5, 0.5)))
    rendered = toy.render(0, ctrl.k)
    acc, res, renders, _ = ctrl.gradients(0, rendered)
    assert renders == 2  # one for the global knob, one for both regions together
    grad = dnn_grad(toy, rendered.inputs)
    moved = toy.render(0, np.array([0.5, 0.55, 0.55])).inputs
    exact = float((grad * (moved - rendered.inputs)).flatten(1).sum(1).abs().sum()) / 4 / 0.05
    assert acc[1] + acc[2] == pytest.approx(exact, rel=1e-4)
    # the split between the regions: per 16x16 block, mean|g| x mean|delta| x pixels (32x48: 2x3 whole blocks)
    from edgert.ops.block_average import block_average_reference
    blocks = (block_average_reference(grad, 16) * block_average_reference(moved - rendered.inputs, 16)).sum(0)
    left, right = float(blocks[:, :1].sum()), float(blocks[:, 1:].sum())  # region_masks: cols // 2 = 1 column
    assert acc[1] / acc[2] == pytest.approx(left / right, rel=1e-4)
    assert res[1] + res[2] == pytest.approx((100 * (1 + 0.55 * 2 / 3 + 0.5 / 3) - 150) / 0.05 / 150, rel=1e-4)


def test_region_gains_use_block_average_and_valid_pixel_counts():
    from edgert.ops.block_average import block_average_reference

    grad = torch.randn(2, 3, 20, 37)  # blocks of 16x16, 16x5, 4x16 and 4x5 valid pixels
    delta = torch.randn(2, 3, 20, 37)
    masks = torch.zeros(2, 2, 3, dtype=torch.bool)
    masks[0, 0, :2] = True  # two whole blocks
    masks[1] = ~masks[0]  # the edge blocks
    pixels = torch.tensor([[16 * 16, 16 * 16, 16 * 5], [4 * 16, 4 * 16, 4 * 5]], dtype=torch.float32) * 3
    per_block = (block_average_reference(grad, 16) * block_average_reference(delta, 16)).sum(0) * pixels
    expected = torch.stack([per_block[masks[0]].sum(), per_block[masks[1]].sum()])
    torch.testing.assert_close(_region_gains(grad, delta, masks, 16), expected, rtol=1e-5, atol=1e-6)
    # one block of all-equal magnitudes reduces to the pixel sum
    ones = torch.ones(1, 3, 16, 16)
    one_mask = torch.ones(1, 1, 1, dtype=torch.bool)
    assert float(_region_gains(ones * 2, ones * 3, one_mask, 16)[0]) == pytest.approx(2 * 3 * 16 * 16 * 3)


def test_one_backward_per_interval_and_the_step_follows_lambda(monkeypatch):
    calls = []
    grad = torch.autograd.grad
    monkeypatch.setattr(torch.autograd, "grad", lambda *a, **kw: calls.append(1) or grad(*a, **kw))
    toy = Toy()
    spend = OneAdapt(toy, AdaptConfig(lam=0.0, momentum=0.0, initial=(0.5, 0.5, 0.5))).run()
    assert len(calls) == toy.num_intervals()
    assert [r.backward_passes for r in spend.trace] == [1] * toy.num_intervals()
    assert spend.overhead["backward_per_interval"] == 1.0 and spend.overhead["renders_per_interval"] == 3.0
    # lambda = 0 ascends the utility alone: every knob moves the way its AccGrad points
    for before, after in zip(spend.trace, spend.trace[1:]):
        for j, name in enumerate(("q", "left", "right")):
            assert np.sign(after.knobs[name] - before.knobs[name]) == np.sign(before.acc_grad[j])
    # with momentum the direction is the running average of the plain ones
    toy = Toy()
    ctrl = OneAdapt(toy, AdaptConfig(lam=0.0, momentum=0.5, initial=(0.5, 0.5, 0.5)))
    first = ctrl.step(np.array([1.0, 0.0, 0.0]), np.zeros(3)).copy()
    second = ctrl.step(np.array([-1.0, 0.0, 0.0]), np.zeros(3))
    assert first[0] == pytest.approx(0.6) and second[0] == pytest.approx(0.6)  # 0.1 up, then (0.5 - 0.5) * 0.1
    # a saturated utility: with the step scaled by AccGrad alone the resource term takes a full max_step, scaled by
    # both terms it takes alpha
    for scale_by, expected in (("accuracy", 0.5 - 0.25), ("both", 0.5 - 0.1)):
        ctrl = OneAdapt(Toy(), AdaptConfig(lam=1.0, momentum=0.0, scale_by=scale_by, initial=(0.5, 0.5, 0.5)))
        assert ctrl.step(np.array([1e-6, 0.0, 0.0]), np.array([1.0, 0.0, 0.0]))[0] == pytest.approx(expected)
    with pytest.raises(ValueError, match="scale_by"):
        AdaptConfig(scale_by="resource").validate()
    # a huge lambda only saves resource
    save = OneAdapt(Toy(), AdaptConfig(lam=1e4, initial=(0.5, 0.5, 0.5))).run()
    assert all(a > b for a, b in zip(save.trace[0].knobs.values(), save.trace[-1].knobs.values()))
    assert save.trace[-1].resource < save.trace[0].resource


def test_a_failing_probe_keeps_the_configuration(caplog):
    toy = Toy(fail_probe=True)
    ctrl = OneAdapt(toy, AdaptConfig(initial=(0.5, 0.5, 0.5)))
    result = ctrl.run(intervals=[0])
    assert "failed" in result.trace[0].note
    assert ctrl.k.tolist() == [0.5, 0.5, 0.5]
    assert "keeping the configuration" in caplog.text


def test_config_validation():
    with pytest.raises(ValueError, match="lam"):
        AdaptConfig(lam=-1).validate()
    with pytest.raises(ValueError, match="dk"):
        AdaptConfig(dk=0).validate()
    with pytest.raises(KnobError, match="expected 3 values"):
        OneAdapt(Toy(), AdaptConfig(initial=(0.5,)))
    assert grad_indices(10, 4) == [0, 3, 6, 9] and grad_indices(3, 4) == [0, 1, 2] and grad_indices(5, 0) == [
        0, 1, 2, 3, 4]


# ---------------------------------------------------------------- baselines


def test_uniform_sweep_pareto_and_profiling_share_renders():
    toy = Toy(regions=False)
    measurer = Measurer(toy)
    grid = [np.array([q]) for q in (0.0, 0.25, 0.5, 0.75, 1.0)]
    sweep = uniform_sweep(measurer, grid)
    assert [r.resource for r in sweep] == pytest.approx([300, 375, 450, 525, 600])
    assert sweep[-1].accuracy == 1.0
    front = pareto(sweep)
    assert all(a.accuracy < b.accuracy and a.resource < b.resource for a, b in zip(front, front[1:]))
    renders = toy.renders
    prof = periodic_profiling(measurer, grid, target=0.999, period=2, top_k=3)
    assert toy.renders == renders  # every (interval, config) was memoised by the sweep
    assert prof.overhead["extra_dnn_frames"] > 0 and prof.dnn_frames > sum(r.dnn_frames for r in prof.trace)
    assert prof.accuracy == 1.0  # only the golden configuration reaches 0.999 on this toy
    with pytest.raises(ValueError, match="target"):
        periodic_profiling(measurer, grid, target=0.0)


def test_compare_reads_the_upper_hull():
    from edgert.adapt.baselines import upper_hull

    # (0.82, 150) lies under the chord from (0.8, 100) to (0.9, 200): mixing those two beats it
    frontier = [(0.8, 100.0), (0.82, 150.0), (0.9, 200.0), (0.85, 300.0), (1.0, 400.0)]
    assert upper_hull([(r, a) for a, r in frontier]) == [(100.0, 0.8), (200.0, 0.9), (400.0, 1.0)]
    c = compare(0.85, 90.0, frontier)
    assert c.frontier_resource_at_accuracy == pytest.approx(150.0)
    assert c.saving == pytest.approx(0.4)
    assert c.frontier_accuracy_at_resource is None and c.accuracy_gain is None
    c = compare(0.95, 250.0, frontier)
    assert c.frontier_resource_at_accuracy == pytest.approx(300.0)
    assert c.frontier_accuracy_at_resource == pytest.approx(0.925)
    assert c.accuracy_gain == pytest.approx(0.025)
    assert compare(1.1, 10.0, frontier).saving is None
    assert compare(0.7, 500.0, frontier).accuracy_gain == pytest.approx(-0.3)


@pytest.mark.gpu
@GPU[1]
def test_region_gains_on_cuda_match_cpu():
    grad = torch.randn(3, 3, 37, 50)
    delta = torch.randn(3, 3, 37, 50)
    masks = torch.zeros(2, 3, 4, dtype=torch.bool)
    masks[0, :, :2] = True
    masks[1] = ~masks[0]
    cpu = _region_gains(grad, delta, masks, 16)
    cuda = _region_gains(grad.cuda(), delta.cuda(), masks, 16)
    torch.testing.assert_close(cuda, cpu, rtol=1e-5, atol=1e-6)
