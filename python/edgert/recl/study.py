"""RECL's full evaluation: many :func:`~edgert.recl.evaluate.run_eval` points and what the paper reads from them.

A study (:class:`StudyConfig`, ``edgert recl study``) runs, on one task and the standard workload
(:data:`~edgert.recl.evaluate.STANDARD_WORKLOAD`), each point in its own run folder under ``<out>/points``:

* **cameras**: the schemes at the base budget for each camera count (accuracy versus cameras at fixed compute;
  every scheme at the base point, all but ODIN at the others: :data:`CAMERA_SCHEMES`);
* **compute**: RECL and the retraining baselines (AMS-style, Ekya-style) at the base camera count for each
  compute (accuracy versus compute at a fixed number of cameras); the point at the base compute is the cameras
  point. Compute is the trainer's speed: ``c`` times the base GPU trains an epoch in ``mu / c`` seconds, so a
  30-s window holds ``3 c`` micro-windows (the scheduler's window clock caps a job at one micro-window at a time,
  so a larger *budget* on the same GPU would buy nothing). It is reported as base-GPU seconds per window,
  ``c x window``;
* **ablations**: RECL alone at the base point with one setting changed (K; alpha and gamma; eta).

From the points it derives (:func:`analyse`), writes ``report.md`` (tables) and plots:

* **compute to match**: for each baseline, the compute at which its accuracy reaches RECL's at the base compute,
  interpolated linearly in log-compute between measured points, as a multiple of the base compute (a lower bound
  ``> max`` when no measured compute reaches it);
* **responsiveness** (:func:`responsiveness`): at every switch of a camera to a scene that some camera played in
  an earlier window (a recurring scene), the paper-clock seconds until the camera's model reaches a target
  accuracy: the decision of the window that holds the switch counts one window, the next two, ... The target of
  an event is 80 % of the best accuracy any compared scheme reached during that camera's stay in the scene, so
  every scheme chases the same bar; an event where no scheme reaches the bar within the stay is skipped, and a
  scheme that never reaches it is charged the stay plus one window (counted as censored);
* **over time** (RECL at the base point): zoo size, zoo hit ratio and the controller's cost per window split into
  labelling (the teacher), selection (gating, safety check), retraining and gating updates (measured seconds on
  this machine; retraining also in the scheduler's nominal GPU seconds).

Points resume like single evaluations: a finished point is read back, an interrupted one continues with the
schemes it lacks.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from edgert.harness import pyplot, save_figure, write_json
from edgert.recl.evaluate import SCHEMES, STANDARD_WORKLOAD, TASKS, EvalConfig, run_eval

#: schemes of the compute sweep: RECL and the retraining baselines it must beat at equal compute
BUDGET_SCHEMES = ("recl", "ams", "ekya")
#: schemes at the other camera counts: all but ODIN, whose autoencoder refits cost more than every other scheme
#: together on this CPU (the base point runs every scheme)
CAMERA_SCHEMES = ("recl", "ams", "ekya", "oracle", "one_time")
#: baselines whose compute-to-match and responsiveness are reported
RETRAINING_BASELINES = ("ams", "ekya")
#: responsiveness target: this fraction of the best accuracy any scheme reached during the stay in the scene
TARGET_FRACTION = 0.8

#: ablation name -> list of (label, RECL settings as :meth:`RECLConfig.from_dict` reads them)
DEFAULT_ABLATIONS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "K": [(f"K={k}", {"gating": {"top_k": k}}) for k in (1, 3)],
    "alpha_gamma": [(f"alpha={a:g},gamma={g}", {"zoo": {"alpha": a, "gamma": g}})
                    for a, g in ((0.0, 1), (0.2, 4), (0.05, 8))],
    "eta": [(f"eta={e}", {"zoo": {"eta": e, "q": 40}}) for e in (1, 10)],
}


@dataclass
class StudyConfig:
    """One study (see the module docstring).

    Attributes:
        task: ``"classification"`` or ``"segmentation"``.
        cameras: camera counts of the cameras sweep.
        budgets: retraining compute per window of the compute sweep, in base-GPU seconds (``c x window_s``: a
            trainer ``c`` times as fast; see the module docstring).
        base_cameras, base_budget: the point the compute sweep, the ablations and the over-time plots use
            (``base_budget``: the window on one base GPU, 30 s, the evaluation's default).
        ablations: name -> ``[(label, RECL settings)]`` (default :data:`DEFAULT_ABLATIONS`); empty: none.
        workload: workload settings of every point (default :data:`STANDARD_WORKLOAD`).
        recl: RECL settings shared by every point (under each ablation's own).
        windows: at most this many windows per camera (None: the whole timeline).
        seed, threads: as :class:`~edgert.recl.evaluate.EvalConfig`.
    """

    task: str = "classification"
    cameras: tuple[int, ...] = (2, 4, 8)
    budgets: tuple[float, ...] = (15.0, 30.0, 60.0, 120.0)
    base_cameras: int = 4
    base_budget: float = 30.0
    ablations: dict[str, list[tuple[str, dict[str, Any]]]] = field(default_factory=lambda: dict(DEFAULT_ABLATIONS))
    workload: dict[str, Any] = field(default_factory=lambda: dict(STANDARD_WORKLOAD))
    recl: dict[str, Any] = field(default_factory=dict)
    windows: Optional[int] = None
    seed: int = 0
    threads: int = 1

    def validate(self) -> None:
        """Raises ``ValueError`` naming the first bad setting (every point's config included)."""
        if self.task not in TASKS:
            raise ValueError(f"task: expected one of {TASKS}, got {self.task!r}")
        if not self.cameras or min(self.cameras) < 1:
            raise ValueError(f"cameras: expected camera counts >= 1, got {list(self.cameras)}")
        if not self.budgets or not min(self.budgets) > 0:
            raise ValueError(f"budgets: expected budgets > 0, got {list(self.budgets)}")
        if self.base_cameras not in self.cameras:
            raise ValueError(f"base_cameras: {self.base_cameras} is not one of cameras {list(self.cameras)}")
        if self.base_budget not in self.budgets:
            raise ValueError(f"base_budget: {self.base_budget} is not one of budgets {list(self.budgets)}")
        for _, cfg in self.points():
            cfg.validate()

    def _point(self, cameras: int, budget: float, schemes: Sequence[str],
               recl: Optional[Mapping[str, Any]] = None) -> EvalConfig:
        base = EvalConfig(workload=dict(self.workload), recl=dict(self.recl))
        window_s = base.workload_config().window_s
        mu = base.recl_config("recl").mu
        speed = {"retraining": {"micro_window_s": mu * window_s / float(budget)}}
        return EvalConfig(task=self.task, cameras=cameras, windows=self.windows, workload=dict(self.workload),
                          schemes=tuple(schemes), budget_s=None, recl=_merge(_merge(self.recl, speed), recl or {}),
                          seed=self.seed, threads=self.threads)

    def points(self) -> list[tuple[str, EvalConfig]]:
        """``(folder name, config)`` of every point, in run order (base point first)."""
        out: list[tuple[str, EvalConfig]] = []
        cams = [self.base_cameras, *[c for c in self.cameras if c != self.base_cameras]]
        for c in cams:
            schemes = tuple(SCHEMES) if c == self.base_cameras else CAMERA_SCHEMES
            out.append((point_name(c, self.base_budget), self._point(c, self.base_budget, schemes)))
        for b in self.budgets:
            if b != self.base_budget:
                out.append((point_name(self.base_cameras, b), self._point(self.base_cameras, b, BUDGET_SCHEMES)))
        for name, variants in self.ablations.items():
            for label, settings in variants:
                out.append((f"ablation-{name}-{_slug(label)}",
                            self._point(self.base_cameras, self.base_budget, ("recl",), settings)))
        return out

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def point_name(cameras: int, budget: float) -> str:
    """Folder name of the point with ``cameras`` cameras and ``budget`` GPU seconds per window."""
    return f"cameras{cameras}-budget{budget:g}"


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() or c in ".-" else "_" for c in label)


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


# --------------------------------------------------------------------------------------------------- measures


def responsiveness(results: Mapping[str, Any], window_s: float, schemes: Sequence[str],
                   target_fraction: float = TARGET_FRACTION) -> dict[str, Any]:
    """Time to accuracy after switches to recurring scenes (see the module docstring), from one point's results.

    Returns ``{"events": n, "skipped": m, "schemes": {name: {"mean_s", "median_s", "censored"}}}``; schemes
    missing from ``results`` are left out.
    """
    present = [s for s in schemes if s in results["schemes"]]
    if not present:
        return {"events": 0, "skipped": 0, "schemes": {}}
    ref = results["schemes"][present[0]]["windows"]
    seen: set[str] = set()
    events: list[tuple[str, int, str]] = []  # (device, window position, scene)
    for pos, w in enumerate(ref):
        new_seen: set[str] = set()
        for d, rec in w["devices"].items():
            scene = rec["scenes"][-1] if rec["scenes"] else None
            if rec["scene_switch"] and scene is not None and scene in seen:
                events.append((d, pos, scene))
            new_seen.update(rec["scenes"])
        seen |= new_seen  # a scene counts as seen from the window after the one that showed it
    times: dict[str, list[float]] = {s: [] for s in present}
    censored = {s: 0 for s in present}
    skipped = 0
    for d, pos, scene in events:
        stay = _stay(ref, d, pos, scene)
        accs = {s: [results["schemes"][s]["windows"][p]["devices"][d]["accuracy"] for p in stay] for s in present}
        best = max(max(a) for a in accs.values())
        target = target_fraction * best
        if not best > 0:
            skipped += 1
            continue
        for s in present:
            k = next((i for i, a in enumerate(accs[s]) if a >= target), None)
            if k is None:
                censored[s] += 1
                k = len(stay)
            times[s].append((k + 1) * window_s)
    out = {s: {"mean_s": float(np.mean(t)) if t else None, "median_s": float(np.median(t)) if t else None,
               "censored": censored[s]} for s, t in times.items()}
    return {"events": len(events) - skipped, "skipped": skipped, "schemes": out}


def _stay(windows: Sequence[Mapping[str, Any]], device: str, pos: int, scene: str) -> list[int]:
    """Window positions from ``pos`` on while ``device`` still shows ``scene``."""
    stay = []
    for p in range(pos, len(windows)):
        rec = windows[p]["devices"].get(device)
        if rec is None or scene not in rec["scenes"]:
            break
        stay.append(p)
    return stay


def compute_to_match(accuracy_by_budget: Mapping[float, float], target: float) -> tuple[Optional[float], bool]:
    """The budget at which a scheme's accuracy first reaches ``target``: linear in log-budget between measured
    budgets. Returns ``(budget, reached)``; not reached: ``(largest budget, False)`` (a lower bound)."""
    pts = sorted((float(b), float(a)) for b, a in accuracy_by_budget.items())
    if not pts:
        return None, False
    if pts[0][1] >= target:
        return pts[0][0], True
    for (b0, a0), (b1, a1) in zip(pts, pts[1:]):
        if a1 >= target:
            f = (target - a0) / (a1 - a0) if a1 != a0 else 1.0
            return float(math.exp(math.log(b0) + f * (math.log(b1) - math.log(b0)))), True
    return pts[-1][0], False


COST_PARTS = {"labelling": ("teacher_s", "label_s"), "selection": ("gating_s", "safety_s"),
              "retraining": ("retrain_s",), "gating update": ("gating_update_s",),
              "admission and pruning": ("admission_s", "prune_s")}


def over_time(scheme: Mapping[str, Any]) -> dict[str, list[float]]:
    """Per window of one scheme: zoo size, zoo hit ratio, the cost parts (:data:`COST_PARTS`, seconds) and the
    retraining charge (nominal GPU seconds)."""
    windows = scheme["windows"]
    out: dict[str, list[float]] = {
        "window": [float(w["window"]) for w in windows],
        "zoo_size": [float(w["experts"]) for w in windows],
        "zoo_hit_ratio": [float(np.mean([d["zoo_hit"] for d in w["devices"].values()])) for w in windows],
        "retrain_compute_s": [float(w["cost"]["retrain_compute_s"]) for w in windows],
    }
    for part, keys in COST_PARTS.items():
        out[part] = [float(sum(w["cost"].get(k, 0.0) for k in keys)) for w in windows]
    return out


def selection_share_large_zoo(scheme: Mapping[str, Any], min_experts: int = 20) -> Optional[float]:
    """Selection seconds over the controller's total in the windows whose zoo held ``min_experts`` or more experts
    when the window began (None: no such window)."""
    sel = tot = 0.0
    before = 0
    for w in scheme["windows"]:
        if before >= min_experts:
            sel += w["cost"]["gating_s"] + w["cost"]["safety_s"]
            tot += w["cost"]["total_s"] + w["cost"].get("teacher_s", 0.0)
        before = int(w["experts"])
    return sel / tot if tot > 0 else None


# ----------------------------------------------------------------------------------------------------- study


def run_study(cfg: StudyConfig, out: Path, plots: bool = True, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Runs (or resumes) every point of ``cfg`` under ``out/points``, then writes ``study.json`` (config and
    analysis), ``report.md`` and the plots; returns the analysis."""
    cfg.validate()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "study-config.json", cfg.to_dict())
    points: dict[str, dict[str, Any]] = {}
    for i, (name, point) in enumerate(cfg.points()):
        log(f"== point {i + 1}/{len(cfg.points())}: {name}")
        points[name] = run_eval(point, out / "points" / name, plots=plots, log=log)
    analysis = analyse(cfg, points)
    write_json(out / "study.json", {"config": cfg.to_dict(), "analysis": analysis})
    (out / "report.md").write_text(format_report(cfg, analysis) + "\n")
    if plots:
        plot_study(cfg, analysis, out)
    return analysis


def analyse(cfg: StudyConfig, points: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Everything the report shows, from the points' results (see the module docstring)."""
    window_s = EvalConfig(workload=dict(cfg.workload)).workload_config().window_s
    base = points[point_name(cfg.base_cameras, cfg.base_budget)]

    def acc(res: Mapping[str, Any], s: str) -> Optional[float]:
        e = res["schemes"].get(s)
        return float(e["summary"]["accuracy"]) if e else None

    by_cameras = {c: {s: acc(points[point_name(c, cfg.base_budget)], s) for s in SCHEMES} for c in cfg.cameras}
    by_budget = {b: {s: acc(points[point_name(cfg.base_cameras, b)], s) for s in BUDGET_SCHEMES}
                 for b in cfg.budgets}
    recl_base = acc(base, "recl")
    match: dict[str, Any] = {}
    for s in RETRAINING_BASELINES:
        curve = {b: v for b, a in by_budget.items() if (v := a.get(s)) is not None}
        budget, reached = compute_to_match(curve, recl_base if recl_base is not None else math.inf)
        match[s] = {"budget_s": budget, "reached": reached,
                    "ratio": None if budget is None else budget / cfg.base_budget}
    resp = responsiveness(base, window_s, ("recl", *RETRAINING_BASELINES))
    recl_t = resp["schemes"].get("recl", {}).get("mean_s")
    for s in RETRAINING_BASELINES:
        t = resp["schemes"].get(s, {}).get("mean_s")
        if s in resp["schemes"]:
            resp["schemes"][s]["slower_than_recl"] = (t / recl_t) if (t is not None and recl_t) else None
    ablations = {name: [{"label": label, "accuracy": acc(points[f"ablation-{name}-{_slug(label)}"], "recl"),
                         "zoo_size": points[f"ablation-{name}-{_slug(label)}"]["schemes"]["recl"]["summary"][
                             "zoo_size"]} for label, _ in variants] for name, variants in cfg.ablations.items()}
    summaries = {s: e["summary"] for s, e in base["schemes"].items()}
    large_zoo = {name: selection_share_large_zoo(res["schemes"]["recl"]) for name, res in points.items()
                 if "recl" in res["schemes"]}
    return {"window_s": window_s, "base": {"cameras": cfg.base_cameras, "budget_s": cfg.base_budget},
            "summaries": {s: {k: v for k, v in d.items() if k != "accuracy_by_window"} for s, d in summaries.items()},
            "accuracy_by_cameras": by_cameras, "accuracy_by_budget": by_budget, "compute_to_match": match,
            "responsiveness": resp, "ablations": ablations, "selection_share_zoo20": large_zoo,
            "over_time": {s: over_time(base["schemes"][s]) for s in ("recl", "ams") if s in base["schemes"]}}


# ------------------------------------------------------------------------------------------------------ output


def _pct(v: Optional[float]) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def format_report(cfg: StudyConfig, a: Mapping[str, Any]) -> str:
    """The study's tables (markdown)."""
    lines = [f"# RECL study: {cfg.task}", "",
             f"Base point: {cfg.base_cameras} cameras, {cfg.base_budget:g} GPU-s of retraining per "
             f"{a['window_s']:g}-s window. Accuracy: % agreement with the teacher (classification) or per-frame IoU "
             f"(segmentation) of the model each camera runs, mean over windows and cameras.", "",
             "## Schemes at the base point", "",
             "| scheme | accuracy | after switch | zoo hits | zoo size | selection share | retrain compute (GPU-s) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for s, d in a["summaries"].items():
        lines.append(f"| {s} | {_pct(d['accuracy'])} | {_pct(d['accuracy_after_switch'])} | "
                     f"{100 * d['zoo_hit_rate']:.0f} % | {d['zoo_size']} | {100 * d['selection_share']:.1f} % | "
                     f"{d['retrain_compute_s']:.0f} |")
    lines += ["", f"## Accuracy versus cameras ({cfg.base_budget:g} GPU-s per window)", "",
              "| cameras | " + " | ".join(SCHEMES) + " | RECL - best of ams/ekya |",
              "|---:|" + "---:|" * (len(SCHEMES) + 1)]
    for c, accs in a["accuracy_by_cameras"].items():
        best = max((v for k, v in accs.items() if k in RETRAINING_BASELINES and v is not None), default=None)
        gain = None if best is None or accs.get("recl") is None else accs["recl"] - best
        lines.append(f"| {c} | " + " | ".join(_pct(accs.get(s)) for s in SCHEMES) +
                     f" | {'-' if gain is None else f'{100 * gain:+.1f}'} |")
    lines += ["", f"## Accuracy versus compute ({cfg.base_cameras} cameras)", "",
              "| GPU-s per window | " + " | ".join(BUDGET_SCHEMES) + " |", "|---:|" + "---:|" * len(BUDGET_SCHEMES)]
    for b, accs in a["accuracy_by_budget"].items():
        lines.append(f"| {b:g} | " + " | ".join(_pct(accs.get(s)) for s in BUDGET_SCHEMES) + " |")
    lines += ["", "Compute each baseline needs to match RECL at the base budget:", ""]
    for s, m in a["compute_to_match"].items():
        if m["budget_s"] is None:
            lines.append(f"- {s}: not measured")
        elif m["reached"]:
            lines.append(f"- {s}: {m['budget_s']:.0f} GPU-s per window = **{m['ratio']:.1f}x** RECL's")
        else:
            lines.append(f"- {s}: not reached at {m['budget_s']:.0f} GPU-s = **> {m['ratio']:.0f}x** RECL's")
    r = a["responsiveness"]
    lines += ["", "## Responsiveness after a switch to a recurring scene", "",
              f"{r['events']} events (switches of a camera to a scene some camera played before; {r['skipped']} "
              f"skipped where no scheme reached any accuracy). Time until the model reaches "
              f"{100 * TARGET_FRACTION:.0f} % of the best accuracy any scheme reached during the stay (paper seconds; "
              f"the switch window's own decision counts one window):", "",
              "| scheme | mean (s) | median (s) | never reached | slower than RECL |", "|---|---:|---:|---:|---:|"]
    for s, d in r["schemes"].items():
        slower = d.get("slower_than_recl")
        lines.append(f"| {s} | {_f(d['mean_s'])} | {_f(d['median_s'])} | {d['censored']} | "
                     f"{'-' if slower is None else f'{slower:.1f}x'} |")
    lines += ["", "## Selection cost once the zoo holds >= 20 experts", "",
              "Gating + safety-check seconds over the controller's (teacher labelling included), in the windows that "
              "began with >= 20 experts in RECL's zoo:", ""]
    shares = a["selection_share_zoo20"]
    for name, v in shares.items():
        if v is not None:
            lines.append(f"- {name}: {100 * v:.1f} %")
    never = [name for name, v in shares.items() if v is None]
    if never:
        lines.append(f"- the zoo never held 20 experts at: {', '.join(never)}")
    if a["ablations"]:
        lines += ["", f"## Ablations (RECL, {cfg.base_cameras} cameras, {cfg.base_budget:g} GPU-s)", "",
                  "| ablation | setting | accuracy | zoo size |", "|---|---|---:|---:|"]
        lines.append(f"| (base) | paper defaults | {_pct(a['summaries']['recl']['accuracy'])} | "
                     f"{a['summaries']['recl']['zoo_size']} |")
        for name, rows in a["ablations"].items():
            for row in rows:
                lines.append(f"| {name} | {row['label']} | {_pct(row['accuracy'])} | {row['zoo_size']} |")
    return "\n".join(lines)


def _f(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:.0f}"


def plot_study(cfg: StudyConfig, a: Mapping[str, Any], out: Path) -> list[Path]:
    """``cameras.png``, ``compute.png`` and ``over_time.png`` in ``out``."""
    plt = pyplot()
    paths = []
    fig, ax = plt.subplots(figsize=(6, 4))
    cams = list(a["accuracy_by_cameras"])
    for s in SCHEMES:
        ys = [a["accuracy_by_cameras"][c].get(s) for c in cams]
        if any(y is not None for y in ys):
            ax.plot(cams, [100 * y if y is not None else np.nan for y in ys], marker="o", label=s)
    ax.set_xlabel("cameras")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"RECL {cfg.task}: accuracy vs cameras ({cfg.base_budget:g} GPU-s/window)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    paths.append(save_figure(fig, out / "cameras.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    budgets = list(a["accuracy_by_budget"])
    for s in BUDGET_SCHEMES:
        ax.plot(budgets, [100 * (a["accuracy_by_budget"][b].get(s) or np.nan) for b in budgets], marker="o", label=s)
    ax.set_xscale("log")
    ax.set_xlabel("retraining GPU-s per window")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"RECL {cfg.task}: accuracy vs compute ({cfg.base_cameras} cameras)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    paths.append(save_figure(fig, out / "compute.png"))

    t = a["over_time"].get("recl")
    if t:
        fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
        parts = list(COST_PARTS)
        ax1.stackplot(t["window"], *[t[p] for p in parts], labels=parts)
        ax1.set_ylabel("controller seconds (this CPU)")
        ax1.legend(fontsize=7, loc="upper left")
        ax1.set_title(f"RECL {cfg.task}: cost, zoo and hits per window ({cfg.base_cameras} cameras)")
        ax2.plot(t["window"], t["zoo_size"], marker="o", ms=3, label="zoo size")
        ax2.set_ylabel("experts")
        ax3 = ax2.twinx()
        ax3.plot(t["window"], [100 * h for h in t["zoo_hit_ratio"]], color="tab:red", marker="s", ms=3,
                 label="zoo hits")
        ax3.set_ylabel("zoo hits (%)")
        ax2.set_xlabel("model-update window")
        ax2.grid(alpha=0.3)
        paths.append(save_figure(fig, out / "over_time.png"))
    return paths


__all__ = ["BUDGET_SCHEMES", "CAMERA_SCHEMES", "COST_PARTS", "DEFAULT_ABLATIONS", "RETRAINING_BASELINES",
           "TARGET_FRACTION", "StudyConfig", "analyse", "compute_to_match", "format_report", "over_time",
           "plot_study", "point_name", "responsiveness", "run_study", "selection_share_large_zoo"]
