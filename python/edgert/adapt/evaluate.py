"""``edgert adapt eval``: OneAdapt against its baselines on real clips, same accounting for every scheme.

For every pipeline and input the evaluation runs

* the uniform sweep (every configuration of the pipeline's grid, fixed over the clip) and its Pareto frontier;
* AWStream/Chameleon-style periodic profiling of the top-k configurations at several accuracy targets (its extra
  inference counted);
* the pipeline's own heuristic (region quality where the last inference found objects; Reducto; a voice-activity
  heuristic);
* OneAdapt at several lambdas, and for the codec pipeline with 4 / 16 / 64 region knobs ("more knobs");

and reports, for each OneAdapt point, the resource the best baseline needs for the same accuracy (interpolated on
the union frontier of every baseline point) and the accuracy the baselines reach with the same resource. Results,
the config, knob traces and plots go to one run folder.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np

from edgert.adapt.ascent import AdaptConfig, OneAdapt, Pipeline, SchemeResult
from edgert.adapt.baselines import Measurer, compare, pareto, periodic_profiling, uniform_sweep, upper_hull

PIPELINES = ("codec", "codec-faces", "filtering", "audio")
BASELINE_SCHEMES = ("uniform", "profiling", "region-heuristic", "reducto", "vad-heuristic")


@dataclass(frozen=True)
class EvalConfig:
    """What ``edgert adapt eval`` runs.

    Attributes:
        pipelines: any of :data:`PIPELINES`.
        clips: video inputs of the codec and filtering pipelines (bundled names or files).
        face_clips: video inputs of the codec pipeline with the face detector (``codec-faces``).
        duration_s: seconds of each clip used (from its start).
        max_width: clips wider than this are scaled down (keeps the CPU run bounded).
        codec_fps: frame rate the codec pipeline's clips are decoded at (analytics pipelines run at 5-10 fps).
        lams: OneAdapt's lambdas (accuracy/resource trade-off) for every pipeline, or None for each pipeline's
            own (``codec_lams``, ``filtering_lams``, ``audio_lams``: lambda's useful range depends on how much
            one unit of a knob moves the resource).
        alpha: OneAdapt's step size.
        region_grids: codec region grids (``n`` means ``n x n`` region knobs, 0 none) for the "more knobs" runs;
            the first is used for the lambda sweep.
        profiling_targets: accuracy targets of the periodic-profiling baseline.
        profiling_period: intervals between profilings.
        heuristic_crfs: CRFs of the region heuristic.
        vad_thresholds_db: energy thresholds of the voice-activity heuristic.
        audio_duration_s: seconds of the speech input used (None: all of it, about 50 s).
        threads: torch threads.
        seed: recorded (every scheme is deterministic given the clip).
    """

    pipelines: tuple[str, ...] = PIPELINES
    clips: tuple[str, ...] = ("iscc-demo", "bikes", "carphone")
    face_clips: tuple[str, ...] = ("carphone", "iscc-demo")
    duration_s: float = 30.0
    max_width: int = 640
    codec_fps: float = 10.0
    lams: Optional[tuple[float, ...]] = None
    codec_lams: tuple[float, ...] = (0.03, 0.1, 0.3, 1.0)
    filtering_lams: tuple[float, ...] = (0.003, 0.01, 0.03, 0.1)
    audio_lams: tuple[float, ...] = (0.5, 1.0, 3.0, 10.0)
    alpha: float = 0.1
    region_grids: tuple[int, ...] = (4, 0, 2, 8)
    profiling_targets: tuple[float, ...] = (0.85, 0.9, 0.95, 0.98)
    profiling_period: int = 5
    heuristic_crfs: tuple[int, ...] = (27, 31, 35, 39)
    vad_thresholds_db: tuple[float, ...] = (-45.0, -40.0, -35.0, -30.0, -25.0)
    audio_duration_s: Optional[float] = None
    threads: int = 2
    seed: int = 0

    def validate(self) -> None:
        unknown = [p for p in self.pipelines if p not in PIPELINES]
        if unknown or not self.pipelines:
            raise ValueError(f"pipelines: expected some of {list(PIPELINES)}, got {list(self.pipelines)}")
        if self.duration_s <= 0:
            raise ValueError(f"duration_s: expected > 0, got {self.duration_s}")
        for name in PIPELINES:
            lams = self.lams_of(name)
            if not lams or any(not lam >= 0 for lam in lams):
                raise ValueError(f"lams ({name}): expected non-negative values, got {list(lams)}")
        if not self.region_grids or any(g < 0 for g in self.region_grids):
            raise ValueError(f"region_grids: expected positive sizes, got {list(self.region_grids)}")
        if any(not 0 < t <= 1 for t in self.profiling_targets):
            raise ValueError(f"profiling_targets: expected values in (0, 1], got {list(self.profiling_targets)}")
        AdaptConfig(alpha=self.alpha).validate()

    def lams_of(self, pipeline: str) -> tuple[float, ...]:
        """The lambdas OneAdapt runs with on ``pipeline``."""
        if self.lams is not None:
            return tuple(self.lams)
        return tuple(getattr(self, f"{'codec' if pipeline == 'codec-faces' else pipeline}_lams"))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


QUICK = {"clips": ("carphone",), "face_clips": ("carphone",), "duration_s": 3.0, "lams": (0.1,), "region_grids": (2,),
         "profiling_targets": (0.9,), "heuristic_crfs": (31,),
         "vad_thresholds_db": (-40.0,), "audio_duration_s": 5.0}
"""A run that finishes in about a minute (the tests' and a smoke check's)."""

Log = Callable[[str], None]


def _oneadapt(pipeline: Pipeline, lam: float, cfg: EvalConfig, initial: np.ndarray, label: str) -> SchemeResult:
    result = OneAdapt(pipeline, AdaptConfig(lam=lam, alpha=cfg.alpha, initial=tuple(initial))).run()
    result.scheme = label
    result.params.update({"lam": lam})
    return result


def _baselines(measurer: Measurer, grid: list[np.ndarray], cfg: EvalConfig, log: Log) -> list[SchemeResult]:
    t0 = time.perf_counter()
    out = uniform_sweep(measurer, grid)
    log(f"  uniform sweep: {len(grid)} configurations in {time.perf_counter() - t0:.0f} s")
    for target in cfg.profiling_targets:
        out.append(periodic_profiling(measurer, grid, target, period=cfg.profiling_period))
    return out


def _dnn(task: str) -> Any:
    if task == "faces":
        from edgert.adapt.detection import FaceDNN  # noqa: PLC0415

        return FaceDNN()
    from edgert.adapt.segmentation import SegmentationDNN  # noqa: PLC0415

    return SegmentationDNN()


def run_codec(clip: str, cfg: EvalConfig, log: Log, task: str = "segmentation") -> list[SchemeResult]:
    """Every scheme on one clip's H.264 uplink (resolution, CRF, region quality) for one DNN: person
    segmentation, or MTCNN face detection (``task="faces"``)."""
    from edgert.adapt.codec import CodecPipeline, load_video, region_heuristic  # noqa: PLC0415

    frames, fps = load_video(clip, max_width=cfg.max_width, duration_s=cfg.duration_s, fps=cfg.codec_fps)
    dnn = _dnn(task)
    truth: dict[int, Any] = {}

    def pipeline(grid: Optional[int]) -> CodecPipeline:
        return CodecPipeline(frames, fps, dnn=dnn, regions=(grid, grid) if grid else None, name=clip,
                             truth_cache=truth)

    plain = pipeline(None)
    results = _baselines(Measurer(plain), plain.grid(), cfg, log)
    lams = cfg.lams_of("codec")
    regional = pipeline(cfg.region_grids[0])
    heuristic = regional if cfg.region_grids[0] else pipeline(4)
    for crf in cfg.heuristic_crfs:
        results.append(region_heuristic(heuristic, crf))
    log(f"  baselines done ({len(results)} points)")
    for lam in lams:
        results.append(_oneadapt(regional, lam, cfg, regional.neutral(), f"oneadapt-{cfg.region_grids[0] ** 2}r"))
        log(f"  oneadapt lam={lam:g}: accuracy {results[-1].accuracy:.3f}, {results[-1].resource:.0f} bytes")
    middle = lams[len(lams) // 2]
    for grid in cfg.region_grids[1:]:
        p = pipeline(grid)
        results.append(_oneadapt(p, middle, cfg, p.neutral(), f"oneadapt-{grid ** 2}r"))
        log(f"  oneadapt {grid * grid} regions lam={middle:g}: accuracy {results[-1].accuracy:.3f}")
    return results


def run_audio(item: str, cfg: EvalConfig, log: Log) -> list[SchemeResult]:
    """Every scheme on the bundled speech (sample-rate knob, FLAC uplink, Silero VAD)."""
    from edgert.adapt.audio import AudioPipeline, speech_input, vad_heuristic  # noqa: PLC0415

    speech = speech_input().audio
    if cfg.audio_duration_s is not None:
        speech = speech[:int(cfg.audio_duration_s * 16000)]
    pipeline = AudioPipeline(speech)
    measurer = Measurer(pipeline)
    results = _baselines(measurer, pipeline.grid(), cfg, log)
    for threshold in cfg.vad_thresholds_db:
        results.append(vad_heuristic(measurer, threshold))
    for lam in cfg.lams_of("audio"):
        results.append(_oneadapt(pipeline, lam, cfg, np.ones(len(pipeline.knobs)), "oneadapt"))
        log(f"  oneadapt lam={lam:g}: accuracy {results[-1].accuracy:.4f}, {results[-1].resource:.0f} bytes")
    return results


def run_filtering(clip: str, cfg: EvalConfig, log: Log) -> list[SchemeResult]:
    """Every scheme on one clip's frame filter (pixel and area thresholds; resource: DNN frames)."""
    from edgert.adapt.filtering import FilteringPipeline, reducto, reducto_profile  # noqa: PLC0415

    pipeline = FilteringPipeline(clip, duration_s=cfg.duration_s)
    measurer = Measurer(pipeline)
    results = _baselines(measurer, pipeline.grid(), cfg, log)
    profile = reducto_profile(pipeline)
    for target in cfg.profiling_targets:
        results.append(reducto(pipeline, target, profile=profile))
    for lam in cfg.lams_of("filtering"):
        results.append(_oneadapt(pipeline, lam, cfg, np.ones(len(pipeline.knobs)), "oneadapt"))
        log(f"  oneadapt lam={lam:g}: accuracy {results[-1].accuracy:.4f}, {results[-1].resource:.0f} DNN frames")
    return results


def run_codec_faces(clip: str, cfg: EvalConfig, log: Log) -> list[SchemeResult]:
    """:func:`run_codec` with the MTCNN face detector as the DNN (accuracy: per-frame F1 at IoU 0.5)."""
    return run_codec(clip, cfg, log, task="faces")


RUNNERS: dict[str, Callable[[str, EvalConfig, Log], list[SchemeResult]]] = {
    "codec": run_codec, "codec-faces": run_codec_faces, "filtering": run_filtering, "audio": run_audio}


def inputs_of(pipeline: str, cfg: EvalConfig) -> list[str]:
    """The inputs a pipeline runs on: the clips, or for audio the bundled speech."""
    if pipeline == "audio":
        return ["speech"]
    if pipeline == "codec-faces":
        return list(cfg.face_clips)
    return list(cfg.clips)


def comparisons(results: list[SchemeResult]) -> list[dict[str, Any]]:
    """Each non-baseline scheme against the union frontier of the baseline points."""
    base = [(r.accuracy, r.resource) for r in results if r.scheme in BASELINE_SCHEMES]
    rows = []
    for r in results:
        if r.scheme in BASELINE_SCHEMES:
            continue
        c = compare(r.accuracy, r.resource, base)
        rows.append({"scheme": r.scheme, "params": r.params, **dataclasses.asdict(c)})
    return rows


def best_by_scheme(results: list[SchemeResult]) -> dict[str, list[SchemeResult]]:
    """The Pareto frontier of each scheme's points."""
    groups: dict[str, list[SchemeResult]] = {}
    for r in results:
        groups.setdefault(r.scheme, []).append(r)
    return {k: pareto(v) for k, v in groups.items()}


def run_eval(cfg: EvalConfig, out: Union[str, Path], *, plots: bool = True,
             log: Optional[Log] = None) -> dict[str, Any]:
    """Run every pipeline on its inputs; write ``config.json``, ``results.json`` and plots into ``out``."""
    import torch  # noqa: PLC0415

    from edgert.harness import RunFolder  # noqa: PLC0415

    cfg.validate()
    say = log or (lambda text: print(text, flush=True))
    torch.set_num_threads(cfg.threads)
    folder = RunFolder(out, {"experiment": "adapt-eval", **cfg.to_dict()}).start()
    results: dict[str, Any] = folder.load_results({"pipelines": {}})
    for name in cfg.pipelines:
        runner = RUNNERS[name]
        for item in inputs_of(name, cfg):
            if item in results["pipelines"].get(name, {}):
                say(f"{name} / {item}: done in an earlier run")
                continue
            say(f"{name} / {item}")
            t0 = time.perf_counter()
            schemes = runner(item, cfg, say)
            entry = {"schemes": [s.to_dict() for s in schemes], "comparisons": comparisons(schemes),
                     "seconds": time.perf_counter() - t0}
            results["pipelines"].setdefault(name, {})[item] = entry
            folder.save_results(results)
    if plots:
        write_plots(results, Path(out))
    folder.finish()
    return results


def _unit(pipeline: str) -> str:
    return {"codec": "bytes", "codec-faces": "bytes", "filtering": "DNN frames", "audio": "bytes"}.get(
        pipeline, "resource")


GOAL_SAVING = 0.15
GOAL_GAIN = 0.01


def summary_table(results: dict[str, Any]) -> str:
    """Markdown: per pipeline and input, OneAdapt's best point against the baselines' upper hull, and whether the
    issue's goal (>= 15 % less resource at equal accuracy, or >= +1 point at equal or lower resource) is met."""
    lines = ["| pipeline / input | OneAdapt runs | best saving at equal accuracy | best accuracy gain at equal "
             "resource | goal met |", "|---|---:|---:|---:|---|"]
    for name, items in results["pipelines"].items():
        for item, entry in items.items():
            rows = entry["comparisons"]
            savings = [c["saving"] for c in rows if c["saving"] is not None]
            gains = [c["accuracy_gain"] for c in rows if c["accuracy_gain"] is not None]
            best_s = max(savings) if savings else None
            best_g = max(gains) if gains else None
            met = (best_s is not None and best_s >= GOAL_SAVING) or (best_g is not None and best_g >= GOAL_GAIN)
            lines.append(f"| {name} / {item} | {len(rows)} | "
                         f"{'n/a' if best_s is None else format(best_s, '+.1%')} | "
                         f"{'n/a' if best_g is None else format(best_g, '+.4f')} | {'yes' if met else 'no'} |")
    return "\n".join(lines)


def format_table(results: dict[str, Any]) -> str:
    """Markdown: the summary, then per pipeline and input every scheme's points and OneAdapt against the
    baselines."""
    lines = [summary_table(results)]
    for name, items in results["pipelines"].items():
        for item, entry in items.items():
            lines.append(f"\n### {name} / {item} (resource: {_unit(name)})\n")
            lines.append("| scheme | params | accuracy | resource | DNN frames | backward/interval "
                         "| renders/interval | s/interval |")
            lines.append("|---|---|---:|---:|---:|---:|---:|---:|")
            for s in sorted(entry["schemes"], key=lambda s: (s["scheme"], s["resource"])):
                params = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                                   for k, v in s["params"].items() if k != "knobs")
                if "knobs" in s["params"]:
                    params = ", ".join(f"{k}={v:g}" for k, v in s["params"]["knobs"].items()
                                       if not k.startswith("region_"))
                o = s["overhead"]
                lines.append(f"| {s['scheme']} | {params} | {s['accuracy']:.4f} | {s['resource']:.0f} | "
                             f"{s['dnn_frames']} | {o['backward_per_interval']:.1f} | "
                             f"{o['renders_per_interval']:.1f} | {o['seconds_per_interval']:.2f} |")
            lines.append("\n| OneAdapt point | accuracy | resource | baselines' resource at equal accuracy | saving | "
                         "baselines' accuracy at equal resource | accuracy gain |")
            lines.append("|---|---:|---:|---:|---:|---:|---:|")
            for c in entry["comparisons"]:
                def fmt(v: Optional[float], spec: str) -> str:
                    return "n/a" if v is None else format(v, spec)
                lam = c["params"].get("lam")
                label = c["scheme"] + (f" lam={lam:g}" if lam is not None else "")
                lines.append(f"| {label} | {c['accuracy']:.4f} | {c['resource']:.0f} | "
                             f"{fmt(c['frontier_resource_at_accuracy'], '.0f')} | {fmt(c['saving'], '+.1%')} | "
                             f"{fmt(c['frontier_accuracy_at_resource'], '.4f')} | {fmt(c['accuracy_gain'], '+.4f')} |")
    return "\n".join(lines)


def write_plots(results: dict[str, Any], out: Path) -> list[Path]:
    """Accuracy vs resource per pipeline and input, and OneAdapt's knob trace (first lambda)."""
    from edgert.harness import pyplot, save_figure  # noqa: PLC0415

    plt = pyplot()
    paths = []
    for name, items in results["pipelines"].items():
        for item, entry in items.items():
            fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.5))
            groups: dict[str, list[dict[str, Any]]] = {}
            for s in entry["schemes"]:
                groups.setdefault(s["scheme"], []).append(s)
            for scheme, pts in sorted(groups.items()):
                pts = sorted(pts, key=lambda s: s["resource"])
                marker = "o-" if scheme.startswith("oneadapt") else ("." if scheme == "uniform" else "s--")
                ax.plot([p["resource"] for p in pts], [p["accuracy"] for p in pts], marker, label=scheme,
                        alpha=0.5 if scheme == "uniform" else 1.0)
            hull = upper_hull([(s["resource"], s["accuracy"]) for s in entry["schemes"]
                               if s["scheme"] in BASELINE_SCHEMES])
            ax.plot([r for r, _ in hull], [a for _, a in hull], "k:", lw=1, label="baselines' upper hull")
            ax.set_xscale("log")
            ax.set_xlabel(_unit(name))
            ax.set_ylabel("accuracy")
            ax.set_title(f"{name} / {item}")
            ax.legend(fontsize=7)
            adapt = [s for s in entry["schemes"] if s["scheme"].startswith("oneadapt")]
            if adapt:  # the lambda sweep's middle run
                sweep = [s for s in adapt if s["scheme"] == adapt[0]["scheme"]]
                _plot_trace(bx, sweep[len(sweep) // 2], entry["schemes"])
            paths.append(save_figure(fig, out / f"{name}-{Path(item).stem}.png"))
            plt.close(fig)
    return paths


def _plot_trace(ax: Any, scheme: dict[str, Any], everything: list[dict[str, Any]]) -> None:
    """A OneAdapt run's knobs over time, each scaled to the range any scheme of the entry applied (the sweep
    spans the whole grid), region knobs as their mean."""
    lows: dict[str, float] = {}
    highs: dict[str, float] = {}
    for s in everything:
        for r in s["trace"]:
            for k, v in r["knobs"].items():
                lows[k], highs[k] = min(lows.get(k, v), v), max(highs.get(k, v), v)
    trace = scheme["trace"]
    names = list(trace[0]["knobs"])

    def scaled(name: str, v: float) -> float:
        span = highs[name] - lows[name]
        return (v - lows[name]) / span if span else 0.5

    for name in [n for n in names if not n.startswith("region_")]:
        ax.plot([r["interval"] for r in trace], [scaled(name, r["knobs"][name]) for r in trace],
                label=f"{name} ({lows[name]:g}..{highs[name]:g})")
    regions = [n for n in names if n.startswith("region_")]
    if regions:
        ax.plot([r["interval"] for r in trace],
                [float(np.mean([r["knobs"][n] for n in regions])) for r in trace], "--",
                label=f"mean region offset ({len(regions)}, raw)")
    ax.ticklabel_format(axis="y", useOffset=False)
    ax.set_xlabel("interval")
    ax.set_ylabel("knob (scaled to the values used)")
    ax.set_title(f"knob trace, {scheme['scheme']} lam={scheme['params'].get('lam')}")
    ax.legend(fontsize=7)
