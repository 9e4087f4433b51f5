"""RECL's retraining schedulers (edgert.recl.scheduler): the iterative policy against round-robin and Ekya's
thief scheduler on equal budgets, budget accounting, edge cases, and real torch jobs through real Ray."""
from __future__ import annotations

import functools
import importlib.util
import itertools
import math
import pickle
from collections import defaultdict

import pytest
import torch

from edgert.recl.scheduler import (
    SCHEDULERS,
    AccuracyCurve,
    EkyaScheduler,
    IterativeScheduler,
    JobData,
    LeastRecentlyTrained,
    LocalExecutor,
    MicroWindow,
    RetrainingJob,
    RoundRobinScheduler,
    SchedulerConfig,
    ScheduleResult,
    SyntheticJob,
    TorchJob,
    WorkItem,
    WorkOutcome,
    fit_accuracy_curve,
    make_scheduler,
    thief_allocate,
)
from edgert.vision.models import tiny_classifier

needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray not installed")


def mixed_jobs(noise: float = 0.0) -> list[SyntheticJob]:
    """Concave saturating curves with different rates and headroom: fast, slow, saturated, middling."""
    return [SyntheticJob("fast", start=0.40, ceiling=0.95, rate=1.5, noise=noise, seed=1),
            SyntheticJob("slow", start=0.40, ceiling=0.90, rate=0.15, noise=noise, seed=2),
            SyntheticJob("flat", start=0.80, ceiling=0.81, rate=0.5, noise=noise, seed=3),
            SyntheticJob("mid", start=0.50, ceiling=0.85, rate=0.5, noise=noise, seed=4)]


def rounds_of(result: ScheduleResult) -> list[list[MicroWindow]]:
    by_round: dict[int, list[MicroWindow]] = defaultdict(list)
    for m in result.trace:
        by_round[m.round].append(m)
    return [by_round[r] for r in sorted(by_round)]


# ------------------------------------------------------------------------------------------- configuration


def test_config_defaults_and_units():
    cfg = SchedulerConfig()
    assert (cfg.window_s, cfg.micro_window_s, cfg.micro_window_epochs, cfg.parallel) == (180.0, 10.0, 1.0, 1)
    assert (cfg.ekya_profile_epochs, cfg.ekya_profile_subsample, cfg.ekya_thief_iterations) == (5, 0.1, 3)
    assert cfg.budget_units() == pytest.approx(18.0) and cfg.window_units() == pytest.approx(18.0)
    assert cfg.profile_units() == pytest.approx(0.5)
    assert SchedulerConfig(parallel=3).budget_units() == pytest.approx(54.0)
    assert SchedulerConfig(budget_s=25.0).budget_units() == pytest.approx(2.5)
    for bad in (dict(parallel=0), dict(micro_window_s=0.0), dict(ekya_profile_subsample=0.0),
                dict(budget_s=-1.0), dict(ekya_steal_quanta=0)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            SchedulerConfig(**bad).validate()
    assert set(SCHEDULERS) == {"recl", "round_robin", "ekya"}
    assert isinstance(make_scheduler("recl"), IterativeScheduler)
    with pytest.raises(ValueError, match="scheduler"):
        make_scheduler("fifo")


def test_synthetic_job_follows_its_curve():
    job = SyntheticJob("a", start=0.3, ceiling=0.9, rate=0.7)
    assert isinstance(job, RetrainingJob)
    assert job.evaluate() == pytest.approx(0.3)
    job.run_micro_window(2.0)
    job.run_micro_window(1.0, subsample=0.5)
    assert job.evaluate() == pytest.approx(0.9 - 0.6 * math.exp(-0.7 * 2.5))


# -------------------------------------------------------------------------------------------- the policies


@pytest.mark.parametrize("parallel", [1, 2])
def test_iterative_beats_round_robin_at_equal_budget(parallel):
    cfg = SchedulerConfig(window_s=120.0, micro_window_s=10.0, parallel=parallel)
    recl = IterativeScheduler(cfg).run(mixed_jobs())
    rr = RoundRobinScheduler(cfg).run(mixed_jobs())
    assert recl.used_units == rr.used_units == cfg.budget_units() == 12.0 * parallel
    assert recl.mean_final_accuracy > rr.mean_final_accuracy + 0.005
    # the saturated job gets only its first (exploratory) micro-window, the others get the rest
    assert recl.micro_windows["flat"] == 1
    assert rr.micro_windows["flat"] == 3 * parallel
    # final accuracies are the jobs' true curves at what they were given
    for r in (recl, rr):
        for job in mixed_jobs():
            assert r.final_accuracy[job.job_id] == pytest.approx(job.expected_accuracy(r.micro_windows[job.job_id]))


def test_iterative_beats_round_robin_with_noisy_evaluations():
    cfg = SchedulerConfig(window_s=160.0, micro_window_s=10.0)
    recl = IterativeScheduler(cfg).run(mixed_jobs(noise=0.005))
    rr = RoundRobinScheduler(cfg).run(mixed_jobs(noise=0.005))
    assert recl.mean_final_accuracy > rr.mean_final_accuracy


@pytest.mark.parametrize("parallel", [1, 3])
def test_iterative_gives_each_round_to_the_largest_last_gains(parallel):
    """Replays Algorithm 4 from the trace alone: untried jobs first (in order), then top-`parallel` last gains."""
    cfg = SchedulerConfig(window_s=100.0, micro_window_s=10.0, parallel=parallel)
    result = IterativeScheduler(cfg).run(mixed_jobs())
    order = [j.job_id for j in mixed_jobs()]
    gain = {j: math.inf for j in order}
    rounds = rounds_of(result)
    assert len(rounds) == 10
    for rnd in rounds:
        expected = sorted(order, key=lambda j: (-gain[j], order.index(j)))[:parallel]
        assert [m.job_id for m in rnd] == expected
        assert [m.slot for m in rnd] == list(range(len(rnd)))
        for m in rnd:
            assert m.kind == "train" and m.error is None and m.accuracy_after is not None
            gain[m.job_id] = m.accuracy_after - m.accuracy_before


def test_round_robin_gives_equal_turns():
    cfg = SchedulerConfig(window_s=100.0, micro_window_s=10.0, parallel=3)
    result = RoundRobinScheduler(cfg).run(mixed_jobs())
    ids = [m.job_id for m in result.trace]
    assert ids == list(itertools.islice(itertools.cycle(["fast", "slow", "flat", "mid"]), 30))
    assert sorted(result.micro_windows.values()) == [7, 7, 8, 8]
    for rnd in rounds_of(result):
        assert len({m.job_id for m in rnd}) == len(rnd) == 3


def test_ekya_charges_profiling_and_allocates_sensibly():
    cfg = SchedulerConfig(window_s=120.0, micro_window_s=10.0)  # 12 units; 4 profiles cost 4 * 5 * 0.1 = 2
    jobs = mixed_jobs()
    result = EkyaScheduler(cfg).run(jobs)
    profiles = [m for m in result.trace if m.kind == "profile"]
    assert [m.job_id for m in profiles] == ["fast", "slow", "flat", "mid"]
    assert all(m.cost_units == pytest.approx(0.5) and len(m.profile_accuracies) == 5 for m in profiles)
    assert result.profile_units == pytest.approx(2.0)
    assert sum(result.micro_windows.values()) == 10 == sum(result.plan.values())
    assert result.used_units == pytest.approx(12.0)
    assert result.micro_windows == result.plan
    # profiles ran on copies: the jobs trained exactly their scheduled micro-windows
    for job in jobs:
        assert job.epochs_done == pytest.approx(result.micro_windows[job.job_id])
    # profiling saw the true curve (points at their compute cost: 0.1 epoch per profiling epoch)
    fast = profiles[0]
    assert fast.profile_accuracies[-1] == pytest.approx(jobs[0].expected_accuracy(0.5))
    # the saturated job gets nothing, the plan beats the fair split on the fitted curves
    assert result.plan["flat"] == 0
    assert min(result.plan["fast"], result.plan["slow"], result.plan["mid"]) >= 2
    curves = result.curves
    planned = sum(curves[j](result.plan[j]) for j in curves)
    fair = sum(curves[j](10 / 4) for j in curves)
    assert planned > fair
    # and on the true curves too: better than round-robin's micro-windows at the same 12 units
    rr = RoundRobinScheduler(cfg).run(mixed_jobs())
    assert result.mean_final_accuracy > rr.mean_final_accuracy - 0.01


def test_ekya_profiling_can_eat_the_budget():
    cfg = SchedulerConfig(window_s=120.0, micro_window_s=10.0, budget_s=15.0)  # 1.5 units: 3 profiles, no training
    result = EkyaScheduler(cfg).run(mixed_jobs())
    assert result.profile_units == pytest.approx(1.5) == result.used_units
    assert [m.kind for m in result.trace] == ["profile"] * 3
    assert sum(result.micro_windows.values()) == 0
    assert result.final_accuracy == result.initial_accuracy


def test_fit_accuracy_curve_recovers_an_optimus_curve():
    truth = AccuracyCurve(start=0.4, ceiling=0.9, rate=2.0)
    xs = [0.1, 0.2, 0.3, 0.4, 0.5]
    fit = fit_accuracy_curve(xs, [truth(x) for x in xs], start=0.4)
    assert fit.ceiling == pytest.approx(0.9, abs=0.02)
    for x in (1.0, 5.0, 20.0):
        assert fit(x) == pytest.approx(truth(x), abs=0.02)
    flat = fit_accuracy_curve([], [], start=0.7)
    assert flat(0.0) == flat(100.0) == 0.7
    assert 0.0 <= fit_accuracy_curve([0.5], [1.0], start=0.99).ceiling <= 1.0


def test_thief_allocation_is_the_optimum_for_concave_curves():
    curves = {"a": AccuracyCurve(0.3, 0.95, 1.2), "b": AccuracyCurve(0.5, 0.7, 0.3),
              "c": AccuracyCurve(0.2, 0.9, 0.1), "d": AccuracyCurve(0.8, 0.8, 1.0)}
    quanta, cap = 14, 6
    alloc = thief_allocate(curves, quanta, cap, steal=1, iterations=3)
    assert sum(alloc.values()) == quanta and max(alloc.values()) <= cap and alloc["d"] == 0

    def score(a):
        return sum(curves[j](a[j]) for j in curves)

    best = max(score(dict(zip(curves, split))) for split in itertools.product(range(cap + 1), repeat=4)
               if sum(split) == quanta)
    assert score(alloc) == pytest.approx(best, abs=1e-12)
    fair = {j: quanta // 4 + (1 if i < quanta % 4 else 0) for i, j in enumerate(curves)}
    assert score(alloc) > score(fair)
    assert thief_allocate(curves, 14, 6, iterations=0) == fair
    assert thief_allocate(curves, 0, 6) == {j: 0 for j in curves}
    assert sum(thief_allocate(curves, 100, 3).values()) == 12  # capped by what fits in the rounds
    assert thief_allocate({}, 5, 5) == {}


# -------------------------------------------------------------------------------------- budget and edge cases


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
@pytest.mark.parametrize("parallel", [1, 3])
@pytest.mark.parametrize("budget_s", [0.0, 5.0, 30.0, 73.0, None])
def test_budget_and_window_are_never_exceeded(name, parallel, budget_s):
    cfg = SchedulerConfig(window_s=60.0, micro_window_s=10.0, parallel=parallel, budget_s=budget_s)
    result = make_scheduler(name, cfg).run(mixed_jobs(noise=0.01))
    budget = cfg.budget_units()
    assert result.used_units <= budget + 1e-9
    assert sum(m.cost_units for m in result.trace) == pytest.approx(result.used_units)
    assert result.used_s == pytest.approx(result.used_units * 10.0)
    assert all(m.end_s <= cfg.window_s + 1e-9 for m in result.trace)
    last_end = 0.0
    for rnd in rounds_of(result):
        assert len(rnd) <= parallel and len({m.job_id for m in rnd}) == len(rnd)
        assert len({m.start_s for m in rnd}) == 1 and rnd[0].start_s >= last_end - 1e-9
        last_end = max(m.end_s for m in rnd)
    if name != "ekya":  # the in-band policies spend the whole budget the window and the workers allow
        assert result.used_units == min(math.floor(budget + 1e-9), 6 * min(parallel, 4))
    assert set(result.final_accuracy) == {"fast", "slow", "flat", "mid"} and not result.failed


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_no_jobs(name):
    result = make_scheduler(name).run([])
    assert result.trace == [] and result.used_units == 0 and result.final_accuracy == {}
    assert math.isnan(result.mean_final_accuracy)


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_one_job_gets_what_fits(name):
    cfg = SchedulerConfig(window_s=60.0, micro_window_s=10.0, parallel=2)  # 12 units, but one job: 1 per round
    job = SyntheticJob("only", start=0.3, ceiling=0.9, rate=0.4)
    result = make_scheduler(name, cfg).run([job])
    expected = 6 if name != "ekya" else 5  # Ekya's profile takes half a round
    assert result.micro_windows == {"only": expected}
    assert result.final_accuracy["only"] == pytest.approx(job.expected_accuracy(expected))
    assert result.used_units == pytest.approx(expected + result.profile_units)


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_zero_budget_trains_nothing(name):
    jobs = mixed_jobs()
    result = make_scheduler(name, SchedulerConfig(budget_s=0.0)).run(jobs)
    assert result.trace == [] and result.used_units == 0
    assert result.final_accuracy == result.initial_accuracy == {j.job_id: j.start for j in jobs}
    assert all(j.epochs_done == 0 for j in jobs)


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_failing_job_is_reported_and_others_continue(name):
    cfg = SchedulerConfig(window_s=160.0, micro_window_s=10.0)
    jobs = mixed_jobs()
    jobs[3] = SyntheticJob("mid", start=0.5, ceiling=0.85, rate=0.5, fail_at_epoch=2.0)  # its 3rd micro-window
    jobs.append(SyntheticJob("broken", fail_evaluate=True))  # fails its first evaluation
    result = make_scheduler(name, cfg).run(jobs)
    assert set(result.failed) == {"mid", "broken"}
    assert "RuntimeError: job mid: injected failure after 2 epochs" == result.failed["mid"]
    assert "injected evaluation failure" in result.failed["broken"]
    assert "broken" not in result.initial_accuracy and "broken" not in result.final_accuracy
    failure = next(i for i, m in enumerate(result.trace) if m.error is not None)
    assert result.trace[failure].job_id == "mid" and result.trace[failure].accuracy_after is None
    assert all(m.job_id != "mid" for m in result.trace[failure + 1:])
    assert any(m.job_id != "mid" for m in result.trace[failure + 1:])  # the others went on
    assert result.micro_windows["mid"] == 2
    assert result.final_accuracy["mid"] == pytest.approx(jobs[3].expected_accuracy(2.0))
    assert result.used_units == pytest.approx(16.0)  # the failed micro-window is charged, the rest is used
    assert sum(result.micro_windows.values()) + 1 + result.profile_units == pytest.approx(16.0)


class CopyingExecutor:
    """Runs every item on a pickled copy and hands the copy back, as a Ray worker does (without Ray)."""

    def run(self, items):
        out = []
        for it in items:
            job = pickle.loads(pickle.dumps(it.job))
            outcome = LocalExecutor().run([WorkItem(job, it.epochs, it.subsample, it.repeats, commit=True)])[0]
            out.append(WorkOutcome(job if it.commit and outcome.error is None else it.job, outcome.accuracies,
                                   outcome.wall_s, outcome.error))
        return out


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_an_executor_that_copies_jobs_gives_the_same_schedule(name):
    cfg = SchedulerConfig(window_s=80.0, micro_window_s=10.0, parallel=2)
    jobs = mixed_jobs(noise=0.01)
    jobs[1] = SyntheticJob("slow", start=0.4, ceiling=0.9, rate=0.15, fail_at_epoch=3.0)
    local = make_scheduler(name, cfg).run(jobs)
    copied = make_scheduler(name, cfg).run(
        [SyntheticJob(**{**vars(j), "epochs_done": 0.0, "calls": 0}) for j in jobs], CopyingExecutor())
    assert [(m.job_id, m.accuracy_after, m.error) for m in local.trace] == \
           [(m.job_id, m.accuracy_after, m.error) for m in copied.trace]
    assert local.final_accuracy == copied.final_accuracy and local.failed == copied.failed
    for j, job in copied.jobs.items():
        assert job.epochs_done == pytest.approx(local.jobs[j].epochs_done)


# ------------------------------------------------------------------------------------ fairness across windows


def same_jobs() -> list[SyntheticJob]:
    """Four identical jobs: every choice between them is a tie, decided by the service order alone."""
    return [SyntheticJob(j, start=0.5, ceiling=0.9, rate=0.5) for j in ("a", "b", "c", "d")]


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_a_window_too_short_for_every_job_rotates_who_trains(name):
    """3 micro-windows, 4 jobs, 4 windows: with the least-recently-trained order every job trains in some window
    (round-robin and RECL's first round: 3 windows of 4 each; Ekya, whose profiles leave 1 micro-window: 1 each);
    served in the order listed, the same job starves in every window (the defect this order fixes)."""
    cfg = SchedulerConfig(window_s=30.0, micro_window_s=10.0)
    service = LeastRecentlyTrained()
    trained: dict[str, int] = defaultdict(int)
    listed: dict[str, int] = defaultdict(int)
    for _ in range(4):
        jobs = same_jobs()
        order = service.order([j.job_id for j in jobs])
        result = make_scheduler(name, cfg).run(jobs, order=order)
        service.record(result)
        assert result.used_units <= 3.0 + 1e-9
        for j, n in result.micro_windows.items():
            trained[j] += n > 0
        for j, n in make_scheduler(name, cfg).run(same_jobs()).micro_windows.items():
            listed[j] += n > 0
    expected = 1 if name == "ekya" else 3
    assert dict(trained) == {j: expected for j in "abcd"}
    assert listed["d"] == 0 and sum(listed.values()) == sum(trained.values())
    assert service.windows == 4


def test_least_recently_trained_order():
    service = LeastRecentlyTrained()
    assert service.order(["b", "a", "c"]) == ["b", "a", "c"]  # nobody trained yet: as listed
    result = RoundRobinScheduler(SchedulerConfig(window_s=20.0, micro_window_s=10.0)).run(
        same_jobs()[:3], order=["b", "c", "a"])
    service.record(result)
    assert [m.job_id for m in result.trace] == ["b", "c"]
    # never trained first, then by when the last micro-window ran; a new device goes first too
    assert service.order(["a", "b", "c", "e"]) == ["a", "e", "b", "c"]


@pytest.mark.parametrize("order", [["a", "b"], ["a", "b", "c", "c"], ["a", "b", "c", "x"], ["a", "b", "c", "d", "x"]])
def test_an_order_that_is_not_a_permutation_of_the_jobs_is_rejected(order):
    with pytest.raises(ValueError, match="order: expected each job id exactly once"):
        IterativeScheduler().run(same_jobs(), order=order)


def test_duplicate_job_ids_are_rejected():
    with pytest.raises(ValueError, match="unique"):
        IterativeScheduler().run([SyntheticJob("a"), SyntheticJob("a")])


def test_result_to_dict_is_plain_data():
    import json

    result = EkyaScheduler(SchedulerConfig(window_s=60.0)).run(mixed_jobs())
    d = json.loads(json.dumps(result.to_dict()))
    assert d["scheduler"] == "ekya" and d["used_units"] == pytest.approx(6.0)
    assert d["trace"][0]["kind"] == "profile" and "jobs" not in d and set(d["curves"]) == set(d["plan"])


# ------------------------------------------------------------------------------------------- real torch jobs


def learnable_data(seed: int, noise: float, n_train: int = 96, n_val: int = 64, classes: int = 4,
                   size: int = 16) -> JobData:
    """Random class prototypes plus pixel noise: learnable, harder with more noise."""
    g = torch.Generator().manual_seed(seed)
    protos = torch.rand(classes, 3, size, size, generator=g)

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, classes, (n,), generator=g)
        return (0.5 * protos[y] + 0.25 + noise * torch.randn(n, 3, size, size, generator=g)).clamp(0, 1), y

    return JobData(*draw(n_train), *draw(n_val))


def torch_jobs(bad: bool = False) -> list[TorchJob]:
    factory = functools.partial(tiny_classifier, 4, width=8)
    jobs = [TorchJob(f"cam{i}", factory, learnable_data(i, noise), seed=i, lr=0.05)
            for i, noise in enumerate([0.1, 0.3, 0.6])]
    if bad:  # labels out of range: cross_entropy raises inside the micro-window
        d = learnable_data(9, 0.1)
        jobs.append(TorchJob("bad", factory, JobData(d.train_x, d.train_y + 10, d.val_x, d.val_y), seed=9))
    return jobs


def test_torch_job_learns_and_survives_pickling(one_thread):
    job = torch_jobs()[0]
    before = job.evaluate()
    job.run_micro_window(1.0)
    clone = pickle.loads(pickle.dumps(job))
    assert clone._model is None and clone.cursor == job.cursor == 3
    for j in (job, clone):
        j.run_micro_window(2.0)
    a, b = job.model_state(), clone.model_state()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert job.evaluate() == clone.evaluate() > before + 0.2
    sub = pickle.loads(pickle.dumps(job))
    sub.run_micro_window(1.0, subsample=0.5)  # 48 of 96 frames: one batch of 32
    assert sub.cursor == job.cursor + 1
    with pytest.raises(ValueError, match="subsample"):
        job.run_micro_window(1.0, subsample=0.0)


@needs_ray
def test_ray_executor_matches_local_executor(one_thread):
    """Real torch models trained through a real local Ray: the same decisions and the same weights as in
    process, a raising job reported by both, and Ekya's profiles (copies) through Ray as well."""
    from edgert.recl.scheduler import RayExecutor

    cfg = SchedulerConfig(window_s=50.0, micro_window_s=10.0, parallel=2)
    ekya_cfg = SchedulerConfig(window_s=40.0, micro_window_s=10.0, parallel=2, ekya_profile_epochs=2,
                               ekya_profile_subsample=0.5)
    local = IterativeScheduler(cfg).run(torch_jobs(bad=True), LocalExecutor())
    local_ekya = EkyaScheduler(ekya_cfg).run(torch_jobs(), LocalExecutor())
    with RayExecutor(num_cpus=2, init_kwargs={"log_to_driver": False}) as ray_exec:
        assert ray_exec.slots == 2
        remote = IterativeScheduler(cfg).run(torch_jobs(bad=True), ray_exec)
        remote_ekya = EkyaScheduler(ekya_cfg).run(torch_jobs(), ray_exec)
    import ray

    assert not ray.is_initialized()
    for a, b in ((local, remote), (local_ekya, remote_ekya)):
        assert [(m.job_id, m.kind, m.round, m.slot) for m in a.trace] == \
               [(m.job_id, m.kind, m.round, m.slot) for m in b.trace]
        assert [(m.accuracy_before, m.accuracy_after, m.profile_accuracies) for m in a.trace] == \
               [(m.accuracy_before, m.accuracy_after, m.profile_accuracies) for m in b.trace]
        assert a.final_accuracy == b.final_accuracy and a.used_units == b.used_units
        for j in a.micro_windows:
            if j not in a.failed:
                sa, sb = a.jobs[j].model_state(), b.jobs[j].model_state()
                assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert set(local.failed) == set(remote.failed) == {"bad"}
    assert remote.failed["bad"].split(":")[0] == local.failed["bad"].split(":")[0]
    assert remote.used_units == 10 and remote.mean_final_accuracy > remote.mean_initial_accuracy + 0.2
    assert remote_ekya.profile_units == pytest.approx(3.0) and sum(remote_ekya.micro_windows.values()) == 4
