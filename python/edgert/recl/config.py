"""RECL's configuration: one dataclass composed of the zoo's, the scheduler's, the gating network's and the ODIN
baseline's settings, plus what belongs to the controller alone (modes, history, executor).

Nothing is duplicated: the paper's parameters live where they are used and :class:`RECLConfig` exposes them under
their paper names as read-only properties (``window_s`` and ``mu`` in :class:`SchedulerConfig`, ``K`` and the
history sub-sample in :class:`GatingConfig`, ``alpha``/``gamma``/``eta``/``q`` in :class:`ZooConfig`).
:meth:`RECLConfig.build` takes them flat (``RECLConfig.build(window_s=30, K=5, alpha=0.1)``) and routes each to its
part; :meth:`RECLConfig.to_dict` / :meth:`RECLConfig.from_dict` round-trip it through JSON (a run folder's
``config.json``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from edgert.recl.gating import GatingConfig
from edgert.recl.odin import OdinConfig
from edgert.recl.scheduler import SCHEDULERS, SchedulerConfig
from edgert.recl.zoo import ZooConfig

SELECTIONS = ("gating", "odin", "oracle", "none")
"""How the controller shortlists zoo experts for the safety checker: the gating network's top-K (RECL), ODIN's
nearest clusters (baseline), every active expert ("oracle": the safety checker tests the whole zoo), or none (only
the device's own models: no reuse of other devices' experts)."""
EXECUTORS = ("local", "ray")

#: RECL's model-update window (the brief's value; RECL's own text was not reachable here)
DEFAULT_WINDOW_S = 30.0


def _default_retraining() -> SchedulerConfig:
    return SchedulerConfig(window_s=DEFAULT_WINDOW_S)


@dataclass(frozen=True)
class RECLConfig:
    """Everything a :class:`edgert.recl.controller.RECLController` runs with.

    Attributes:
        zoo: admission (``alpha``, ``gamma``), pruning (``eta``, ``q``) and storage of the zoo.
        retraining: the retraining window of every policy: ``window_s`` (30 s by default here), ``micro_window_s``
            (mu), the GPU budget and the workers.
        gating: the gating network (``top_k`` is the paper's K = 10; ``history_samples`` the history frames
            labelled when experts join).
        odin: the ODIN baseline's selector (``selection="odin"``).
        selection: ``"gating"`` | ``"odin"`` | ``"oracle"`` | ``"none"`` (see :data:`SELECTIONS`).
        scheduler: ``"recl"`` (iterative) | ``"round_robin"`` (AMS-style) | ``"ekya"`` (thief).
        reuse: True retrains from the model the safety checker picked (possibly another device's expert); False is
            AMS-style continuous retraining from the device's own lineage (the better of its current and last
            retrained model), zoo experts never being the starting point.
        retrain: False is one-time adaptation: a device's retraining job runs in its first window only; later
            windows only select.
        holdout: fraction of a window's frames a retraining job holds out to measure its gain per micro-window
            (and the admission gain).
        history_frames: frames kept per task (a ring buffer, oldest out) for the gating network's incremental
            update and ODIN's refits.
        history_per_window: at most this many frames (evenly spaced) of each device window enter the history.
        odin_fit_frames: frames (the history's newest) ODIN's autoencoder is refitted on when experts join.
        max_window_frames: most frames one device window may hold (a larger upload is rejected).
        executor: ``"local"`` (in this process) or ``"ray"`` (:class:`edgert.recl.scheduler.RayExecutor`).
        ray_address: Ray cluster address (None: a local Ray); ``ray_num_cpus``: CPUs of a local Ray.
        seed: seeds the generic expert, the retraining jobs and the history sub-samples.
    """

    zoo: ZooConfig = ZooConfig()
    retraining: SchedulerConfig = field(default_factory=_default_retraining)
    gating: GatingConfig = GatingConfig()
    odin: OdinConfig = OdinConfig()
    selection: str = "gating"
    scheduler: str = "recl"
    reuse: bool = True
    retrain: bool = True
    holdout: float = 0.25
    history_frames: int = 2048
    history_per_window: int = 64
    odin_fit_frames: int = 512
    max_window_frames: int = 1024
    executor: str = "local"
    ray_address: Optional[str] = None
    ray_num_cpus: Optional[int] = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.selection not in SELECTIONS:
            raise ValueError(f"selection: expected one of {SELECTIONS}, got {self.selection!r}")
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler: expected one of {sorted(SCHEDULERS)}, got {self.scheduler!r}")
        if self.executor not in EXECUTORS:
            raise ValueError(f"executor: expected one of {EXECUTORS}, got {self.executor!r}")
        if not 0.0 < self.holdout < 1.0:
            raise ValueError(f"holdout: expected a fraction in (0, 1), got {self.holdout}")
        for name in ("history_frames", "history_per_window", "odin_fit_frames"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name}: expected >= 0, got {getattr(self, name)}")
        if self.max_window_frames < 1:
            raise ValueError(f"max_window_frames: expected >= 1, got {self.max_window_frames}")
        self.retraining.validate()

    # ---- the paper's names -----------------------------------------------------------------
    @property
    def window_s(self) -> float:
        """The model-update window in seconds (``retraining.window_s``)."""
        return self.retraining.window_s

    @property
    def mu(self) -> float:
        """The micro-window in seconds (``retraining.micro_window_s``)."""
        return self.retraining.micro_window_s

    @property
    def K(self) -> int:  # noqa: N802 - the paper's name
        """Experts the gating network shortlists (``gating.top_k``)."""
        return self.gating.top_k

    @property
    def alpha(self) -> float:
        return self.zoo.alpha

    @property
    def gamma(self) -> int:
        return self.zoo.gamma

    @property
    def eta(self) -> int:
        return self.zoo.eta

    @property
    def q(self) -> int:
        return self.zoo.q

    @property
    def history_samples(self) -> int:
        """History frames labelled in an incremental gating update (``gating.history_samples``)."""
        return self.gating.history_samples

    # ---- construction --------------------------------------------------------------------------
    @classmethod
    def build(cls, **settings: Any) -> "RECLConfig":
        """A config from flat settings: each name goes to the part that owns it (``window_s``, ``mu`` /
        ``micro_window_s`` -> ``retraining``; ``K`` / ``top_k``, ``history_samples`` -> ``gating``;
        ``alpha``, ``gamma``, ``eta``, ``q`` -> ``zoo``; ...), RECL's own fields stay here. Whole parts may be given
        too (``zoo=ZooConfig(...)``); flat names are applied on top of them.

        Raises:
            ValueError: a name no part has, a name two parts have (say which with the part), or a bad value.
        """
        aliases = {"mu": "micro_window_s", "K": "top_k", "k": "top_k"}
        own = {f.name for f in dataclasses.fields(cls)}
        parts: dict[str, Any] = {"zoo": ZooConfig(), "retraining": _default_retraining(), "gating": GatingConfig(),
                                 "odin": OdinConfig()}
        top: dict[str, Any] = {}
        for name in list(settings):
            if name in parts:
                parts[name] = settings.pop(name)
        routed: dict[str, dict[str, Any]] = {p: {} for p in parts}
        for name, value in settings.items():
            key = aliases.get(name, name)
            if key in own:
                top[key] = value
                continue
            owners = [p for p, cfg in parts.items() if key in {f.name for f in dataclasses.fields(cfg)}]
            if name == "K":
                owners = ["gating"]  # ODIN's top_k follows the gating network's K
            if not owners:
                raise ValueError(f"unknown RECL setting {name!r}")
            if len(owners) > 1:
                raise ValueError(f"setting {name!r} belongs to {owners}: pass the part, e.g. "
                                 f"{owners[0]}={type(parts[owners[0]]).__name__}({key}=...)")
            routed[owners[0]][key] = value
        if "top_k" in routed["gating"]:
            routed["odin"].setdefault("top_k", routed["gating"]["top_k"])
        built = {p: dataclasses.replace(cfg, **routed[p]) if routed[p] else cfg for p, cfg in parts.items()}
        return cls(**built, **top)

    def replace(self, **settings: Any) -> "RECLConfig":
        """A copy with settings changed, flat or whole parts (as :meth:`build`, starting from this config)."""
        base = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name in list(settings):
            if name in base:
                base[name] = settings.pop(name)
        return RECLConfig.build(**base, **settings)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready nested dict (tuples become lists)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RECLConfig":
        """The inverse of :meth:`to_dict` (unknown keys are errors, so a stale config file fails loudly)."""
        data = dict(data)
        parts: dict[str, Any] = {}
        for name, kind in (("zoo", ZooConfig), ("retraining", SchedulerConfig), ("gating", GatingConfig),
                           ("odin", OdinConfig)):
            if name in data:
                values = dict(data.pop(name))
                names = {f.name for f in dataclasses.fields(kind)}
                unknown = sorted(set(values) - names)
                if unknown:
                    raise ValueError(f"{name}: unknown settings {unknown}")
                for key, value in values.items():
                    if isinstance(value, list):
                        values[key] = tuple(value)
                parts[name] = kind(**values)
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown RECL settings {unknown}")
        return cls(**parts, **data)


__all__ = ["DEFAULT_WINDOW_S", "EXECUTORS", "SELECTIONS", "RECLConfig"]
