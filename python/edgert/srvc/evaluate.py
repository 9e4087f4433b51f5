"""Rate-distortion evaluation of SRVC against codec and SR baselines (``edgert srvc eval``).

Methods (bits per pixel of the original resolution, both streams counted):

* ``x264`` / ``x265``: the clip at full resolution, preset slow, CRF ladder ``full_crfs``;
* ``bicubic``: the low-resolution x265 content stream (area-downsampled by k, CRF ladder
  ``lr_crfs``) upsampled bicubically;
* ``generic``: the same content stream through the generic SR model (trained once on
  scikit-image photos, part of the decoder, so it costs no bits);
* ``oneshot``: one model customised for the whole clip (SRVC with tau = inf), its full model
  sent once;
* ``srvc``: content stream + the model stream (one sparse update per segment from the generic model
  the decoder holds; the generic snapshot too with ``send_generic``), decoded by the real decoder
  (libedgert slot);
* ``srvc-updates`` (derived): SRVC without the initial snapshot's bytes (equal to ``srvc`` when no
  snapshot is sent; reported separately, never instead).

Every bit of every frame is counted; with ``psnr_every`` > 1 quality (PSNR, SSIM) is measured on frames
0, every, 2 * every, ... of each method's full decode (the decoder still decodes every frame and applies
every packet at its frame), which bounds the cost of minutes-long 720p clips on a CPU.

A run folder holds ``config.json``, ``results.json`` (every point: CRF, bytes, bpp, PSNR, SSIM,
per-frame PSNR; BD-rate/BD-PSNR vs x265; timings) and ``plots/`` (RD curves, per-frame gain CDF).
"""
from __future__ import annotations

import math
import platform
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np
import torch

from edgert.harness import RunFolder
from edgert.harness.plots import pyplot, save_figure
from edgert.srvc import material, metrics
from edgert.srvc.decoder import decode
from edgert.srvc.encoder import EncoderConfig, EncodeResult, downsample, encode, segment_starts
from edgert.srvc.generic import GenericConfig, GenericLibrary, generic_model
from edgert.srvc.model import Geometry, SRVCModel, model_summary

Log = Callable[[str], None]
METHODS = ("x264", "x265", "bicubic", "generic", "oneshot", "srvc")


@dataclass(frozen=True)
class EvalConfig:
    """One RD experiment. ``crop`` = (width, height) centre crop of the source; ``duration_s`` None = whole clip."""

    clip: str = "bigbuckbunny"
    crop: Optional[tuple[int, int]] = None
    start_s: float = 0.0
    duration_s: Optional[float] = None
    full_crfs: tuple[float, ...] = (30.0, 34.0, 38.0, 42.0)
    lr_crfs: tuple[float, ...] = (22.0, 26.0, 30.0, 34.0)
    full_preset: str = "slow"
    methods: tuple[str, ...] = METHODS
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    generic: GenericConfig = field(default_factory=GenericConfig)
    oneshot_iterations: Optional[int] = None  # None: the same total iterations SRVC spends
    threads: int = 1
    cache_dir: Optional[str] = None
    ssim_every: int = 1  # SSIM on every n-th measured frame
    psnr_every: int = 1  # quality measured on every n-th frame (bits always of all frames)
    generics_dir: Optional[str] = None  # the decoders' generic models (None: the default library folder)

    def validate(self) -> None:
        """Raises ValueError naming the first bad field."""
        self.encoder.validate()
        unknown = set(self.methods) - set(METHODS)
        if unknown:
            raise ValueError(f"methods: unknown {sorted(unknown)}; expected a subset of {METHODS}")
        if self.crop is not None and (len(self.crop) != 2 or min(self.crop) <= 0):
            raise ValueError(f"crop: expected (width, height) > 0, got {self.crop}")
        if self.threads <= 0 or self.ssim_every <= 0 or self.psnr_every <= 0:
            raise ValueError(f"threads, ssim_every and psnr_every: expected >= 1, got {self.threads}, "
                             f"{self.ssim_every}, {self.psnr_every}")

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["encoder"] = self.encoder.as_dict()
        d["generic"] = self.generic.as_dict()
        return d


def load_clip(cfg: EvalConfig) -> tuple[np.ndarray, float]:
    """The source frames (uint8 [N, H, W, 3], centre-cropped as configured) and the frame rate.

    ``mate:WIDTHxHEIGHT`` renders the pan/zoom material (:mod:`edgert.srvc.material`; 60 s unless
    ``duration_s`` says otherwise); other names are bundled clips or files.
    """
    from edgert.data import clip_path  # noqa: PLC0415
    from edgert.vision import video  # noqa: PLC0415

    size = material.parse_clip(cfg.clip)
    if size is not None:
        spec = material.PanZoom(width=size[0], height=size[1],
                                seconds=cfg.duration_s if cfg.duration_s is not None else 60.0)
        frames, fps = material.render(spec, cfg.start_s), spec.fps
    else:
        path = clip_path(cfg.clip)
        fps = video.probe(path).fps
        frames, _ = video.read_clip(path, start_s=cfg.start_s, duration_s=cfg.duration_s)
    if cfg.crop is not None:
        w, h = cfg.crop
        H, W = frames.shape[1:3]
        if w > W or h > H:
            raise ValueError(f"crop {w}x{h} is larger than the clip ({W}x{H})")
        y0, x0 = (H - h) // 2, (W - w) // 2
        frames = np.ascontiguousarray(frames[:, y0:y0 + h, x0:x0 + w])
    return frames, float(fps)


def upsample(model: Optional[SRVCModel], lr: np.ndarray, geometry: Geometry, batch: int = 4) -> np.ndarray:
    """LR frames (uint8 [N, h, w, 3], padded geometry) -> HR uint8 [N, H, W, 3] by ``model`` (None: bicubic)."""
    from edgert.vision import video  # noqa: PLC0415

    if model is None:
        up = video.resize(lr, (geometry.padded_width, geometry.padded_height), "bicubic")
        return np.ascontiguousarray(geometry.crop_hr(up))
    out = []
    with torch.no_grad():
        for i in range(0, lr.shape[0], batch):
            y = model(video.frames_to_tensor(lr[i:i + batch]))
            out.append(geometry.crop_hr(video.tensor_to_frames(y)))
    return np.ascontiguousarray(np.concatenate(out))


def _point(name: str, crf: float, bits: float, ref: np.ndarray, out: np.ndarray, ssim_every: int = 1,
           pixels: Optional[int] = None, **extra: Any) -> dict[str, Any]:
    """One RD point; ``ref``/``out`` are the measured frames, ``pixels`` the clip's (default: ``ref``'s)."""
    n, h, w, _ = ref.shape
    pixels = pixels if pixels is not None else n * h * w
    per_frame = metrics.psnr_per_frame(ref, out)
    return {"method": name, "crf": crf, "bytes": bits / 8, "bpp": bits / pixels, "psnr": metrics.psnr(ref, out),
            "ssim": metrics.ssim(ref, out, ssim_every), "psnr_per_frame": [round(float(v), 4) for v in per_frame],
            **extra}


def _srvc_point(name: str, crf: float, res: EncodeResult, frames: np.ndarray, log: Log,
                ssim_every: int = 1, generics: Optional[GenericLibrary] = None, every: int = 1) -> dict[str, Any]:
    out, report = decode(res.container, log=log, generics=generics, every=every)
    if report.rejected or report.warnings:
        raise RuntimeError(f"{name}: the decoder rejected packets of a fresh stream: {report.rejected} "
                           f"{report.warnings}")
    for s in res.segments:
        if report.weights_sha256.get(s.version) != s.weights_sha256:
            raise RuntimeError(f"{name}: decoder weights of version {s.version} (segment {s.index}) differ from "
                               "the encoder's mirror")
    initial = res.initial_model_bytes
    pixels = frames.shape[0] * frames.shape[1] * frames.shape[2]
    return _point(name, crf, 8 * (res.content_bytes + res.model_bytes), frames[::every], out, ssim_every, pixels,
                  content_bytes=res.content_bytes, model_bytes=res.model_bytes, initial_model_bytes=initial,
                  generic_sha256=res.generic_sha256, rd_lambda_db_per_bit=res.rd_lambda_db_per_bit,
                  updates_sent=sum(s.sent for s in res.segments),
                  bpp_without_initial_model=8 * (res.content_bytes + res.model_bytes - initial) / pixels,
                  container_bytes=len(res.container), segments=[s.as_dict() for s in res.segments],
                  encode_seconds=res.seconds, decode_sr_fps=report.sr_fps, decode_fps=report.fps)


def bd_table(points: list[dict[str, Any]], reference: str = "x265") -> dict[str, Any]:
    """BD-rate (%) and BD-PSNR (dB) of every method vs ``reference`` (and of SR methods vs bicubic)."""
    curves: dict[str, tuple[list[float], list[float]]] = {}
    for p in points:
        curves.setdefault(p["method"], ([], []))
        curves[p["method"]][0].append(p["bpp"])
        curves[p["method"]][1].append(p["psnr"])
    srvc_pts = [p for p in points if p["method"] == "srvc"]
    if srvc_pts:
        curves["srvc-updates"] = ([p["bpp_without_initial_model"] for p in srvc_pts], [p["psnr"] for p in srvc_pts])
    table: dict[str, Any] = {}
    for base in (reference, "bicubic"):
        if base not in curves or len(curves[base][0]) < 2:
            continue
        for name, (r, q) in curves.items():
            if name == base or len(r) < 2:
                continue
            table[f"{name} vs {base}"] = {
                "bd_rate_percent": metrics.bd_rate(*curves[base], r, q),
                "bd_psnr_db": metrics.bd_psnr(*curves[base], r, q)}
    return table


def run_eval(cfg: EvalConfig, out_dir: Union[str, Path], log: Log = print, plots: bool = True) -> dict[str, Any]:
    """Runs every configured method over its CRF ladder and writes the run folder."""
    from edgert.vision import video  # noqa: PLC0415

    cfg.validate()
    torch.set_num_threads(cfg.threads)
    run = RunFolder(out_dir, cfg.as_dict()).start()
    out = run.path
    t0 = time.perf_counter()
    frames, fps = load_clip(cfg)
    n, h, w, _ = frames.shape
    log(f"{cfg.clip}: {n} frames {w}x{h} at {fps:g} fps")
    enc_cfg = cfg.encoder
    geo = Geometry(w, h, enc_cfg.model.scale)
    need_generic = enc_cfg.init == "generic" or "generic" in cfg.methods
    generic = generic_model(enc_cfg.model, cfg.generic, cfg.cache_dir, log) if need_generic else None
    library = GenericLibrary(cfg.generics_dir)
    every = cfg.psnr_every
    pixels = n * h * w
    points: list[dict[str, Any]] = []

    def checkpoint() -> None:  # partial results survive an interrupted run
        run.save_results({"points": points}, "results.partial.json")

    for codec in ("x264", "x265"):
        if codec not in cfg.methods:
            continue
        for crf in cfg.full_crfs:
            t = time.perf_counter()
            even = frames if h % 2 == 0 and w % 2 == 0 else \
                np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")  # yuv420p: even sides
            enc = video.encode(even, fps, "lib" + codec, crf=crf, preset=cfg.full_preset)
            del even
            dec = np.ascontiguousarray(video.decode(enc, every)[:, :h, :w])
            points.append(_point(codec, crf, 8 * enc.payload_bytes, frames[::every], dec, cfg.ssim_every, pixels,
                                 encode_seconds=time.perf_counter() - t))
            log(f"{codec} crf {crf:g}: {points[-1]['bpp']:.4f} bpp, {points[-1]['psnr']:.2f} dB")
            checkpoint()

    segments = len(segment_starts(n, fps, enc_cfg.segment_s))
    first = enc_cfg.iterations if enc_cfg.first_iterations is None else enc_cfg.first_iterations
    sel = enc_cfg.iterations if enc_cfg.selection_iterations is None else enc_cfg.selection_iterations
    if enc_cfg.init == "generic":  # every segment: a selection pass and a masked pass
        srvc_total = segments * (sel + enc_cfg.iterations)
    else:
        srvc_total = first + (segments - 1) * (sel + enc_cfg.iterations)
    oneshot_iters = cfg.oneshot_iterations if cfg.oneshot_iterations is not None else srvc_total
    for crf in cfg.lr_crfs:
        srvc_res = None
        if "srvc" in cfg.methods:
            srvc_res = encode(frames, fps, replace(enc_cfg, crf=crf), initial_model=generic, generics=library, log=log)
            points.append(_srvc_point("srvc", crf, srvc_res, frames, log, cfg.ssim_every, library, every))
            log(f"srvc crf {crf:g}: {points[-1]['bpp']:.4f} bpp ({points[-1]['bpp_without_initial_model']:.4f} "
                f"without the initial model), {points[-1]['psnr']:.2f} dB, "
                f"decode {points[-1]['decode_sr_fps']:.2f} fps")
        if "oneshot" in cfg.methods:
            # one segment; from the generic model every parameter moves (eta 1: a dense delta, no selection pass)
            res = encode(frames, fps, replace(enc_cfg, crf=crf, segment_s=math.inf, first_iterations=oneshot_iters,
                                              eta=1.0, selection_iterations=0, iterations=oneshot_iters,
                                              rd_skip=False),
                         initial_model=generic, generics=library, log=log)
            points.append(_srvc_point("oneshot", crf, res, frames, log, cfg.ssim_every, library, every))
            log(f"oneshot crf {crf:g}: {points[-1]['bpp']:.4f} bpp, {points[-1]['psnr']:.2f} dB")
            srvc_res = srvc_res or res
        if "bicubic" in cfg.methods or "generic" in cfg.methods:
            if srvc_res is None:
                lr = downsample(geo.pad_hr(frames), geo)
                content = video.encode(lr, fps, "libx265", crf=crf, preset=enc_cfg.preset)
                lr_dec, content_bytes = video.decode(content), content.payload_bytes
            else:
                lr_dec, content_bytes = srvc_res.lr_decoded, srvc_res.content_bytes
            for name, model in (("bicubic", None), ("generic", generic)):
                if name in cfg.methods:
                    t = time.perf_counter()
                    up = upsample(model, lr_dec[::every], geo)
                    points.append(_point(name, crf, 8 * content_bytes, frames[::every], up, cfg.ssim_every, pixels,
                                         content_bytes=content_bytes,
                                         sr_fps=up.shape[0] / (time.perf_counter() - t)))
                    log(f"{name} crf {crf:g}: {points[-1]['bpp']:.4f} bpp, {points[-1]['psnr']:.2f} dB")
        checkpoint()

    results = {
        "clip": cfg.clip, "frames": n, "width": w, "height": h, "fps": fps,
        "model": model_summary(SRVCModel(enc_cfg.model)), "segments": segments,
        "iterations": {"srvc_total_per_crf": srvc_total, "oneshot": oneshot_iters},
        "points": points, "bd": bd_table(points), "seconds": time.perf_counter() - t0,
        "host": {"machine": platform.machine(), "torch": torch.__version__, "threads": cfg.threads},
    }
    run.save_results(results)
    (out / "results.partial.json").unlink(missing_ok=True)
    run.finish()
    (out / "summary.md").write_text(markdown_summary(results))
    if plots:
        plot_results(results, out / "plots")
    log(f"done in {results['seconds']:.0f} s; results in {out}")
    return results


def markdown_summary(results: dict[str, Any]) -> str:
    """RD points, BD metrics and per-frame gains of a run as markdown tables."""
    lines = [f"### {results['clip']} {results['width']}x{results['height']}, {results['frames']} frames at "
             f"{results['fps']:g} fps", "",
             "| method | CRF | bpp (all streams) | content bpp | model bpp | PSNR dB | SSIM |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    n_pix = results["frames"] * results["width"] * results["height"]
    for p in sorted(results["points"], key=lambda p: (list(METHODS).index(p["method"]), p["crf"])):
        content = p.get("content_bytes", p["bytes"]) * 8 / n_pix
        model = p.get("model_bytes", 0) * 8 / n_pix
        lines.append(f"| {p['method']} | {p['crf']:g} | {p['bpp']:.4f} | {content:.4f} | {model:.4f} | "
                     f"{p['psnr']:.2f} | {p['ssim']:.4f} |")
    lines += ["", "| comparison | BD-rate | BD-PSNR |", "|---|---:|---:|"]
    for name, row in results["bd"].items():
        rate = "no overlap" if row["bd_rate_percent"] is None else f"{row['bd_rate_percent']:+.1f}%"
        dq = "no overlap" if row["bd_psnr_db"] is None else f"{row['bd_psnr_db']:+.2f} dB"
        lines.append(f"| {name} | {rate} | {dq} |")
    rows = []
    for method, baseline in (("srvc", "bicubic"), ("srvc", "generic"), ("srvc", "oneshot"), ("oneshot", "bicubic"),
                             ("generic", "bicubic")):
        g = gains(results, method, baseline)
        if g.size:
            rows.append(f"| {method} - {baseline} | {np.median(g):+.2f} | {np.mean(g):+.2f} | {np.mean(g > 0):.0%} |")
    if rows:
        lines += ["", "| per-frame PSNR gain at equal CRF | median dB | mean dB | frames improved |",
                  "|---|---:|---:|---:|"] + rows
    return "\n".join(lines) + "\n"


def gains(results: dict[str, Any], method: str = "srvc", baseline: str = "bicubic") -> np.ndarray:
    """Per-frame PSNR gain of ``method`` over ``baseline`` at equal content CRF, pooled over CRFs."""
    base = {p["crf"]: np.asarray(p["psnr_per_frame"]) for p in results["points"] if p["method"] == baseline}
    out = [np.asarray(p["psnr_per_frame"]) - base[p["crf"]] for p in results["points"]
           if p["method"] == method and p["crf"] in base]
    return np.concatenate(out) if out else np.zeros(0)


def plot_results(results: dict[str, Any], out: Path) -> None:
    """RD curves (PSNR and SSIM vs bpp) and the CDF of per-frame PSNR gains."""
    plt = pyplot()
    methods = sorted({p["method"] for p in results["points"]}, key=list(METHODS).index)
    for metric in ("psnr", "ssim"):
        fig, ax = plt.subplots(figsize=(6, 4.2))
        for m in methods:
            pts = sorted((p for p in results["points"] if p["method"] == m), key=lambda p: p["bpp"])
            ax.plot([p["bpp"] for p in pts], [p[metric] for p in pts], "o-", label=m)
            if m == "srvc":
                ax.plot([p["bpp_without_initial_model"] for p in pts], [p[metric] for p in pts], "o--",
                        label="srvc (initial model not counted)")
        ax.set_xscale("log")
        ax.set_xlabel("bits per pixel (content + model streams)")
        ax.set_ylabel("PSNR (dB, RGB)" if metric == "psnr" else "SSIM")
        ax.set_title(f"{results['clip']} {results['width']}x{results['height']}, {results['frames']} frames")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        save_figure(fig, out / f"rd_{metric}.png")
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for method, baseline in (("srvc", "bicubic"), ("srvc", "generic"), ("oneshot", "bicubic"), ("generic", "bicubic")):
        g = gains(results, method, baseline)
        if g.size:
            g = np.sort(g)
            ax.plot(g, np.arange(1, g.size + 1) / g.size, label=f"{method} - {baseline}")
    ax.set_xlabel("per-frame PSNR gain (dB) at equal content CRF")
    ax.set_ylabel("CDF")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, out / "psnr_gain_cdf.png")


def ablation_bd(runs: dict[str, list[dict[str, float]]], first: str) -> dict[str, dict[str, Optional[float]]]:
    """Bjontegaard deltas of every ablation value against the ``first`` one (needs >= 2 CRFs per value).

    ``bd_rate_vs_first_percent`` / ``bd_psnr_vs_first_db`` count every bit (content + all model packets);
    the ``_without_initial_model`` variants leave out the initial snapshot, which every value of an
    eta or tau ablation sends identically and which would otherwise dominate short clips.
    """
    out: dict[str, dict[str, Optional[float]]] = {
        "bd_rate_vs_first_percent": {}, "bd_psnr_vs_first_db": {},
        "bd_rate_vs_first_percent_without_initial_model": {}, "bd_psnr_vs_first_db_without_initial_model": {}}
    ref = runs[first]
    for name, pts in runs.items():
        if name == first or len(pts) < 2 or len(ref) < 2:
            continue
        for rate, suffix in (("bpp", ""), ("bpp_without_initial_model", "_without_initial_model")):
            args = ([p[rate] for p in ref], [p["psnr"] for p in ref], [p[rate] for p in pts], [p["psnr"] for p in pts])
            out["bd_rate_vs_first_percent" + suffix][name] = metrics.bd_rate(*args)
            out["bd_psnr_vs_first_db" + suffix][name] = metrics.bd_psnr(*args)
    return out


def run_ablation(cfg: EvalConfig, param: str, values: list[float], out_dir: Union[str, Path],
                 log: Log = print) -> dict[str, Any]:
    """SRVC only, one run per value of ``param`` (features | eta | tau), every CRF of ``lr_crfs``.

    Writes ``config.json`` and ``results.json`` (points per value, plus BD-rate vs the first value).
    """
    from edgert.srvc.encoder import with_overrides  # noqa: PLC0415

    key = {"features": "features", "eta": "eta", "tau": "segment_s"}.get(param)
    if key is None:
        raise ValueError(f"param: expected features, eta or tau, got {param!r}")
    run = RunFolder(out_dir, {"param": param, "values": values, "base": cfg.as_dict()}).start()
    out = run.path
    runs = {}
    for v in values:
        value: Any = int(v) if key == "features" else (math.inf if key == "segment_s" and math.isinf(v) else float(v))
        sub = replace(cfg, methods=("srvc",), encoder=with_overrides(cfg.encoder, **{key: value}))
        res = run_eval(sub, out / f"{param}={v:g}", log=log, plots=False)
        runs[f"{v:g}"] = [{k: p[k] for k in ("crf", "bpp", "bpp_without_initial_model", "psnr", "ssim", "model_bytes",
                                              "initial_model_bytes")} for p in res["points"]]
    results = {"param": param, "runs": runs, **ablation_bd(runs, f"{values[0]:g}")}
    run.save_results(results)
    run.finish()
    return results
