"""RECL expert selection: the gating network (training, top-K, incremental growth, pruning, feature cache) and
the ODIN baseline, on real frames from three bundled clips whose "experts" are accurate on one source each."""
from __future__ import annotations

from typing import Callable

import numpy as np
import pytest
import torch

from conftest import needs_av, needs_imagenet
from edgert.recl.gating import (
    AccuracyTable,
    ExpertHead,
    FrameEncoder,
    GatingConfig,
    GatingNetwork,
    check_frames,
    label_table,
    rank_experts,
    update_table,
)
from edgert.recl.odin import OdinConfig, OdinSelector

A, B, C = 7, 3, 42  # zoo ids: deliberately not 0..n-1 and not in output order
# measured accuracy of each expert on each source: A was trained on the car clip, B on the street, C on the band
ACCURACY = {A: {"car": 0.9, "bikes": 0.3, "band": 0.4},
            B: {"car": 0.25, "bikes": 0.85, "band": 0.35},
            C: {"car": 0.2, "bikes": 0.3, "band": 0.9}}
SIZE = (112, 112)


@pytest.fixture(scope="module", autouse=True)
def _one_thread_module():
    """One torch thread for the module-scoped fixtures too (conftest's ``one_thread`` is per test): on a shared
    2-core box, two threads spin against each other in the head's many small training steps."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Sources:
    """Train and held-out frames per source, and the "measured" accuracy of an expert on any of those frames."""

    def __init__(self, clips: dict[str, np.ndarray]) -> None:
        self.train = {k: v[: len(v) * 2 // 3] for k, v in clips.items()}
        self.test = {k: v[len(v) * 2 // 3:] for k, v in clips.items()}
        self.source = {FrameEncoder.key(f): k for k, v in clips.items() for f in v}

    def accuracy(self, expert_id: int, frames: np.ndarray) -> np.ndarray:
        rng = np.random.default_rng(expert_id)  # measurement noise
        base = np.array([ACCURACY[expert_id][self.source[FrameEncoder.key(f)]] for f in frames])
        return np.clip(base + rng.normal(0, 0.05, base.shape), 0, 1)

    def frames(self, *names: str) -> np.ndarray:
        return np.concatenate([self.train[n] for n in names])


@pytest.fixture(scope="module")
def sources() -> Sources:
    from edgert.data import clip_path
    from edgert.vision.video import read_clip

    def clip(name: str, fps: float, n: int, start_s: float = 0.0) -> np.ndarray:
        return read_clip(clip_path(name), SIZE, start_s=start_s, fps=fps, max_frames=n)[0]

    return Sources({"car": clip("carphone", 8, 30),  # a person in a car (4 s)
                    "bikes": clip("bikes", 4, 36),  # a street with cyclists
                    "band": clip("iscc-demo", 1, 30, start_s=5)})  # a band on stage


@pytest.fixture(scope="module")
def encoder() -> FrameEncoder:
    """The ImageNet backbone with one feature cache shared by the tests' networks."""
    return FrameEncoder(SIZE)


@pytest.fixture(scope="module")
def trained(sources: Sources, encoder: FrameEncoder) -> GatingNetwork:
    """Gating network for experts A and B trained on car and street frames; the table's columns are in the
    opposite order to the head's outputs, so a positional mix-up would swap the two experts."""
    net = GatingNetwork([A, B], GatingConfig(), encoder)
    net.fit(label_table(sources.frames("car", "bikes"), [B, A], sources.accuracy))
    return net


def _textures(n: int, h: int = 40, w: int = 48, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


# --- the gating network on real frames ---------------------------------------------------------------------------

@needs_av
@needs_imagenet
def test_gating_ranks_the_matching_expert_first_on_held_out_frames(sources: Sources, trained: GatingNetwork) -> None:
    assert trained.expert_ids == [A, B]
    for src, best in (("car", A), ("bikes", B)):
        window = sources.test[src]
        assert trained.select(window, 1) == [best], (src, trained.scores(window))
        assert trained.select(window) == [best, B if best == A else A]  # K = 10 > 2 experts: all, best first
        pred = trained.predict(window)
        assert pred.shape == (len(window), 2) and pred.dtype == np.float32
        assert (pred.argmax(1) == trained.expert_ids.index(best)).mean() >= 0.9
        # the predicted accuracy is calibrated, not only ordered
        for j, e in enumerate(trained.expert_ids):
            assert abs(pred[:, j].mean() - ACCURACY[e][src]) < 0.15, (src, e, pred[:, j].mean())


@needs_av
@needs_imagenet
def test_features_are_cached_by_frame_content(sources: Sources, encoder: FrameEncoder) -> None:
    window = sources.test["bikes"]
    first = encoder.encode(window)
    hits, misses = encoder.hits, encoder.misses
    again = encoder.encode(window.copy())  # same content, another array
    assert torch.equal(first, again)
    assert (encoder.hits - hits, encoder.misses - misses) == (len(window), 0)
    assert first.shape == (len(window), encoder.feature_dim) == (len(window), 1280)


def test_feature_cache_evicts_least_recently_used_frames() -> None:
    enc = FrameEncoder((32, 32), cache_frames=3, pretrained=False)
    frames = _textures(5)
    enc.encode(frames[:3])
    enc.encode(frames[:1])  # frame 0 is now the most recently used
    enc.encode(frames[3:4])  # evicts frame 1
    assert enc.cached == 3
    misses = enc.misses
    enc.encode(frames[[0, 2, 3]])
    assert enc.misses == misses
    enc.encode(frames[1:2])
    assert enc.misses == misses + 1
    uncached = GatingNetwork([1], GatingConfig(input_size=(32, 32), pretrained=False, cache_frames=0))
    assert len(uncached.fit(AccuracyTable(frames, (1,), np.full((5, 1), 0.5)), steps=2).losses) == 2
    assert uncached.encoder.cached == 0 and uncached.encoder.misses == 5


@needs_av
@needs_imagenet
def test_incremental_update_adds_an_expert_that_wins_on_its_source(sources: Sources, encoder: FrameEncoder) -> None:
    net = GatingNetwork([A, B], GatingConfig(history_samples=24), encoder)
    net.fit(label_table(sources.frames("car", "bikes"), [A, B], sources.accuracy))
    new, history = sources.train["band"], sources.frames("car", "bikes")
    measured: list[tuple[int, int]] = []

    def accuracy(e: int, frames: np.ndarray) -> np.ndarray:
        measured.append((e, len(frames)))
        return sources.accuracy(e, frames)

    with pytest.raises(ValueError, match="already have outputs"):
        net.incremental_update([B], new, history, accuracy)
    assert measured == []  # checked before anything is measured
    result = net.incremental_update([C], new, history, accuracy)
    assert measured == [(e, len(new) + 24) for e in (A, B, C)]  # all experts, new frames + 24 history frames
    assert net.expert_ids == [A, B, C] and result.added == [C]
    assert result.encoded == len(new)  # history frames' features came from the cache
    assert result.losses[-1] < result.losses[0]
    for src, best in (("band", C), ("car", A), ("bikes", B)):
        assert net.select(sources.test[src], 1) == [best], (src, net.scores(sources.test[src]))


# --- growth, pruning and the id mapping ---------------------------------------------------------------------------

def test_growing_the_head_keeps_existing_outputs_bit_identical() -> None:
    net = GatingNetwork([A, B], GatingConfig(input_size=(32, 32), pretrained=False))
    net.fit(AccuracyTable(_textures(6), (A, B), np.random.default_rng(0).random((6, 2))), steps=5)
    window = _textures(9, seed=1)
    before = net.predict(window)
    net.add_experts([C, 5])
    after = net.predict(window)
    assert net.expert_ids == [A, B, C, 5] and after.shape == (9, 4)
    assert np.array_equal(after[:, :2], before)
    # the same holds for any batch and growth size, at the head itself
    head = ExpertHead(64, 16, [1, 2, 3])
    for n, grow in ((1, [4]), (17, list(range(10, 40))), (64, [99])):
        x = torch.randn(n, 64)
        old = head(x).detach()
        head.add_experts(grow)
        assert torch.equal(head(x)[:, :old.shape[1]].detach(), old)


def _head_with_structured_weights(experts: int = 6, width: int = 24) -> tuple[ExpertHead, torch.Tensor]:
    head = ExpertHead(8, width, range(experts))
    g = torch.Generator().manual_seed(1)
    pos_mean = torch.linspace(-1.0, 1.0, width)  # per-position statistics that differ from the tensor's
    pos_std = torch.linspace(0.05, 0.5, width)
    with torch.no_grad():
        head.weight.copy_(pos_mean + pos_std * torch.randn(experts, width, generator=g))
        head.bias.copy_(torch.tensor([0.3, -0.2, 0.1, 0.5, 0.0, 0.2][:experts]))
    return head, head.weight.detach().clone()


@pytest.mark.parametrize("init", ["position", "tensor"])
def test_new_outputs_have_the_stated_statistics(init: str) -> None:
    head, old = _head_with_structured_weights()
    old_bias = head.bias.detach().clone()
    n = 4000
    head.add_experts(range(100, 100 + n), init=init, generator=torch.Generator().manual_seed(2))
    assert torch.equal(head.weight[:6].detach(), old)  # existing rows untouched
    new = head.weight[6:].detach()
    new_bias = head.bias[6:].detach()
    if init == "position":
        mean, std = old.mean(0), old.std(0, correction=0)
        assert torch.all((new.mean(0) - mean).abs() < 5 * std / n ** 0.5)
        assert torch.all((new.std(0) / std - 1).abs() < 0.06)
    else:
        mean, std = old.mean(), old.std(correction=0)
        assert torch.all((new.mean(0) - mean).abs() < 5 * std / n ** 0.5)  # no per-position structure
        assert torch.all((new.std(0) / std - 1).abs() < 0.06)
    assert abs(float(new_bias.mean() - old_bias.mean())) < 5 * float(old_bias.std(correction=0)) / n ** 0.5
    assert abs(float(new_bias.std() / old_bias.std(correction=0)) - 1) < 0.06


def test_growth_edge_cases_copy_a_single_expert_and_initialise_an_empty_head() -> None:
    head = ExpertHead(8, 0, [4])  # linear head
    head.add_experts([5], init="position")
    assert torch.equal(head.weight[1], head.weight[0]) and torch.equal(head.bias[1], head.bias[0])
    empty = ExpertHead(8, 16)
    empty.add_experts([1, 2])
    assert empty.expert_ids == [1, 2] and empty.weight.shape == (2, 16)
    top = float(empty.weight.detach().abs().max())
    assert 0 < top <= 16 ** -0.5


def test_pruning_removes_exactly_the_named_outputs() -> None:
    head = ExpertHead(32, 8, [10, 11, 12, 13])
    x = torch.randn(5, 32)
    before = head(x).detach()
    head.remove_experts([13, 11])
    assert head.expert_ids == [10, 12] and head.index_of(12) == 1
    assert torch.equal(head(x).detach(), before[:, [0, 2]])
    with pytest.raises(ValueError, match="unknown expert id 11"):
        head.remove_experts([10, 11])
    assert head.expert_ids == [10, 12]  # a failed removal removes nothing
    head.add_experts([11])  # a pruned id can come back, at the end
    assert head.expert_ids == [10, 12, 11]
    assert torch.equal(head(x)[:, :2].detach(), before[:, [0, 2]])


def test_pruned_experts_are_never_selected() -> None:
    net = GatingNetwork([1, 2, 3], GatingConfig(input_size=(32, 32), pretrained=False))
    window = _textures(4)
    scores = net.scores(window)
    net.remove_experts([max(scores, key=scores.__getitem__)])
    assert len(net.select(window)) == 2
    assert set(net.select(window)) == set(net.expert_ids)
    assert net.scores(window) == {e: s for e, s in scores.items() if e in net.expert_ids}


def test_head_state_dict_round_trip_keeps_ids_and_outputs() -> None:
    for hidden in (0, 16):
        head = ExpertHead(12, hidden, [8, 2])
        head.add_experts([5])
        head.remove_experts([8])
        copy = ExpertHead.from_state_dict(head.state_dict())
        x = torch.randn(3, 12)
        assert copy.expert_ids == [2, 5] and torch.equal(copy(x), head(x))
    with pytest.raises(ValueError, match="not an ExpertHead state dict"):
        ExpertHead.from_state_dict({"weight": torch.zeros(1, 2)})


def test_ranking_is_deterministic() -> None:
    assert rank_experts({4: 0.5, 2: 0.5, 9: 0.7}, 2) == [9, 2]  # ties: smaller id
    assert rank_experts({4: 0.5, 2: 0.5, 9: 0.7}, 10) == [9, 2, 4]
    assert rank_experts({4: 0.1, 2: 0.3}, 1, descending=False) == [4]
    assert GatingNetwork([], GatingConfig(input_size=(32, 32), pretrained=False)).select(_textures(2)) == []


def test_update_table_labels_new_frames_and_a_history_sample() -> None:
    calls: list[tuple[int, int]] = []

    def acc(e: int, frames: np.ndarray) -> np.ndarray:
        calls.append((e, len(frames)))
        return np.full(len(frames), e / 10)

    new, history = _textures(3), _textures(50, seed=1)
    table = update_table(new, history, [1, 4], acc, history_samples=10)
    assert len(table) == 13 and calls == [(1, 13), (4, 13)]
    assert np.array_equal(table.frames[:3], new)
    keys = {FrameEncoder.key(f) for f in history}
    assert all(FrameEncoder.key(f) in keys for f in table.frames[3:])
    assert len({FrameEncoder.key(f) for f in table.frames[3:]}) == 10  # without replacement
    np.testing.assert_allclose(table.accuracy, np.tile([0.1, 0.4], (13, 1)))
    assert len(update_table(new, None, [1], acc)) == 3
    with pytest.raises(ValueError, match="history_frames: expected frames of shape"):
        update_table(new, _textures(4, h=20), [1], acc)


# --- the ODIN baseline ----------------------------------------------------------------------------------------------

@needs_av
def test_odin_assigns_each_window_to_the_expert_trained_on_its_source(sources: Sources) -> None:
    odin = OdinSelector(OdinConfig(input_size=(32, 32), train_steps=150))
    with pytest.raises(RuntimeError, match="fit"):
        odin.add_expert(A, sources.train["car"])
    losses = odin.fit(sources.frames("car", "bikes", "band"))
    assert losses[-1] < 0.5 * losses[0]
    for e, src in ((A, "car"), (B, "bikes"), (C, "band")):
        cluster = odin.add_expert(e, sources.train[src])
        assert cluster.count == len(sources.train[src]) and cluster.radius > 0
    for src, best in (("car", A), ("bikes", B), ("band", C)):
        assert odin.select(sources.test[src], 1) == [best], (src, odin.distances(sources.test[src]))
        assert sorted(odin.select(sources.test[src])) == sorted([A, B, C])
    assert odin.outliers(sources.test["band"]).mean() < 0.5
    odin.remove_expert(C)
    assert odin.expert_ids == [A, B] and C not in odin.select(sources.test["band"])
    assert odin.outliers(sources.test["band"]).mean() > 0.5  # the band is drift once its expert is gone


def test_odin_refit_recomputes_the_clusters_from_the_kept_frames() -> None:
    odin = OdinSelector(OdinConfig(input_size=(32, 32), train_steps=2, frames_per_expert=4))
    odin.fit(_textures(6))
    first = odin.add_expert(1, _textures(10, seed=1))
    assert first.count == 4  # evenly spaced subsample kept
    odin.fit(_textures(6, seed=2))
    again = odin.clusters[1]
    assert again.count == 4 and not np.array_equal(again.centroid, first.centroid)
    np.testing.assert_allclose(again.centroid, odin.embed(_textures(10, seed=1)[[0, 3, 6, 9]]).mean(0), rtol=1e-5,
                               atol=1e-6)


# --- errors -----------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def selectors() -> dict[str, object]:
    with torch.random.fork_rng(devices=[]):  # the random backbone's init
        net = GatingNetwork([1, 2], GatingConfig(input_size=(32, 32), pretrained=False))
        odin = OdinSelector(OdinConfig(input_size=(32, 32), train_steps=2))
        odin.fit(_textures(4))
        odin.add_expert(1, _textures(4, seed=1))
    return {"gating": net, "odin": odin}


BAD_FRAMES: dict[str, tuple[Callable[[], np.ndarray], str]] = {
    "empty batch": (lambda: np.zeros((0, 40, 48, 3), np.uint8), "empty batch"),
    "one frame without batch axis": (lambda: _textures(1)[0], r"expected uint8 \[N, H, W, 3\]"),
    "channels first": (lambda: _textures(2).transpose(0, 3, 1, 2).copy(), r"got uint8 \[2, 3, 40, 48\]"),
    "float frames": (lambda: _textures(2).astype(np.float32) / 255, "got float32"),
    "gray frames": (lambda: _textures(2)[..., 0], r"got uint8 \[2, 40, 48\]"),
}


@pytest.mark.parametrize("which", ["gating", "odin"])
@pytest.mark.parametrize("case", list(BAD_FRAMES))
def test_bad_frames_are_clear_value_errors(selectors: dict, which: str, case: str) -> None:
    make, message = BAD_FRAMES[case]
    with pytest.raises(ValueError, match=message):
        selectors[which].select(make(), 1)


@pytest.mark.parametrize("which", ["gating", "odin"])
@pytest.mark.parametrize("k", [0, -1, 1.5, True])
def test_bad_k_is_a_clear_value_error(selectors: dict, which: str, k: object) -> None:
    with pytest.raises(ValueError, match="k: expected an integer >= 1"):
        selectors[which].select(_textures(2), k)


def test_unknown_and_duplicate_expert_ids_are_value_errors(selectors: dict) -> None:
    net, odin = selectors["gating"], selectors["odin"]
    with pytest.raises(ValueError, match="unknown expert id 99"):
        net.remove_experts([99])
    with pytest.raises(ValueError, match="unknown expert id 99"):
        odin.remove_expert(99)
    with pytest.raises(ValueError, match="unknown expert id 99"):
        net.head.index_of(99)
    with pytest.raises(ValueError, match=r"already have outputs"):
        net.add_experts([2])
    with pytest.raises(ValueError, match="duplicate expert ids"):
        net.add_experts([5, 5])
    table = AccuracyTable(_textures(2), (1, 77), np.full((2, 2), 0.5))
    with pytest.raises(ValueError, match=r"unknown expert ids \[77\]"):
        net.add_experts([6], table)
    assert net.expert_ids == [1, 2]  # nothing was added by the failed calls
    with pytest.raises(ValueError, match="expected non-negative integer expert ids"):
        odin.add_expert(-1, _textures(2))


@needs_imagenet
def test_narrow_backbone_is_calibrated_once_then_frozen() -> None:
    frames = _textures(6)
    enc = FrameEncoder((64, 64), width_mult=0.5, calibration_frames=frames)
    assert not enc.backbone.training and not any(p.requires_grad for p in enc.backbone.parameters())
    first = enc.encode(frames)
    enc.clear_cache()
    assert first.shape == (6, enc.feature_dim) and torch.equal(enc.encode(frames), first)  # eval mode: no drift


def test_bad_tables_and_configs_are_value_errors() -> None:
    frames = _textures(3)
    with pytest.raises(ValueError, match=r"expected shape \[3, 2\]"):
        AccuracyTable(frames, (1, 2), np.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"values in \[0, 1\]"):
        AccuracyTable(frames, (1,), np.array([[0.2], [1.5], [np.nan]]))
    with pytest.raises(ValueError, match="duplicate expert ids"):
        AccuracyTable(frames, (1, 1), np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"accuracy_fn\(4, frames\): expected 3 values, got 2"):
        label_table(frames, [4], lambda e, f: np.zeros(2))
    with pytest.raises(ValueError, match="loss"):
        GatingConfig(loss="l1")
    with pytest.raises(ValueError, match="new_init"):
        GatingConfig(new_init="zeros")
    with pytest.raises(ValueError, match="top_k"):
        GatingConfig(top_k=0)
    with pytest.raises(ValueError, match="divisible by 8"):
        OdinConfig(input_size=(30, 32))
    with pytest.raises(ValueError, match="calibration_frames"):
        FrameEncoder((32, 32), width_mult=0.5)
    assert check_frames(frames) is frames


def test_unmeasured_entries_carry_no_loss() -> None:
    net = GatingNetwork([1, 2], GatingConfig(input_size=(32, 32), pretrained=False, hidden=0))
    acc = np.array([[0.9, np.nan], [0.8, np.nan], [0.7, np.nan]], np.float32)
    before = net.head.weight.detach().clone()
    net.fit(AccuracyTable(_textures(3), (1, 2), acc), steps=3)
    after = net.head.weight.detach()
    assert not torch.equal(after[0], before[0]) and torch.equal(after[1], before[1])
