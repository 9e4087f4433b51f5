"""Vision models on the CPU: student inference fps (1 and 2 threads), distillation step time, teachers.

The peer of the AMS student (DeepLabV3-lite, MobileNetV2 x0.5) is the same architecture at full width and
the teachers themselves, all in the same process:

    python -m bench.bench_vision            # full table, writes bench/results/bench_vision-cpu.json
    python -m bench.bench_vision --quick
    python -m bench.bench_vision --init-study --overlay   # docs/results/vision/: student init study, teacher overlay
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from bench.harness import Row, measure, write_json
from edgert.data import model_available
from edgert.vision.distill import distill_step
from edgert.vision.models import inference_module, mobilenet_v2_imagenet, segmentation_student, tiny_classifier

DOCS_RESULTS = Path(__file__).resolve().parent.parent / "docs" / "results" / "vision"


def _infer(model: torch.nn.Module, x: torch.Tensor) -> Callable[[], Any]:
    if isinstance(model, torch.nn.Module):
        model.eval()

    def fn() -> Any:
        with torch.inference_mode():
            return model(x)
    return fn


def run(quick: bool, threads: list[int]) -> list[Row]:
    """All rows for the requested thread counts."""
    rows: list[Row] = []
    repeats = 5 if quick else 20
    sizes = [(256, 512)] if quick else [(256, 512), (144, 256), (128, 256)]
    torch.manual_seed(0)
    student = segmentation_student(2, width_mult=0.5, pretrained=model_available("mobilenetv2-imagenet"))
    wide = segmentation_student(2, width_mult=1.0, pretrained=False)
    fast, wide_fast = inference_module(student), inference_module(wide)
    params = {"student-x0.5": sum(p.numel() for p in student.parameters()),
              "student-x1.0": sum(p.numel() for p in wide.parameters())}
    params["student-x0.5 inference_module"] = params["student-x0.5"]
    params["student-x1.0 inference_module"] = params["student-x1.0"]
    for t in threads:
        torch.set_num_threads(t)
        dev = f"cpu ({t} thread{'s' if t > 1 else ''})"
        for h, w in sizes:
            x = torch.rand(1, 3, h, w)
            for name, model in (("student-x0.5", student), ("student-x0.5 inference_module", fast),
                                ("student-x1.0", wide), ("student-x1.0 inference_module", wide_fast)):
                tm = measure(_infer(model, x), repeats=repeats, warmup=2)
                rows.append(Row("segment", name, dev, "float32", f"[1,3,{h},{w}]", tm,
                                extra={"fps": 1 / tm.median, "params": params[name], "peer": name != "student-x0.5"}))
        # one distillation step on a server minibatch (AMS: 8 frames) at the student's input size
        bh, bw = (128, 256) if quick else (256, 512)
        frames = np.random.default_rng(0).integers(0, 256, (8, bh, bw, 3), dtype=np.uint8)
        labels = np.random.default_rng(1).integers(0, 2, (8, bh, bw))
        opt = torch.optim.Adam(student.parameters(), lr=1e-4)
        tm = measure(lambda: distill_step(student, opt, frames, labels), repeats=max(3, repeats // 4), warmup=1)
        rows.append(Row("distill_step", "student-x0.5", dev, "float32", f"[8,3,{bh},{bw}]", tm,
                        extra={"frames_per_s": 8 / tm.median}))
        clf = tiny_classifier(10)
        x = torch.rand(1, 3, 64, 64)
        tm = measure(_infer(clf, x), repeats=repeats * 5, warmup=3)
        rows.append(Row("classify", "tiny-classifier", dev, "float32", "[1,3,64,64]", tm,
                        extra={"fps": 1 / tm.median, "params": sum(p.numel() for p in clf.parameters())}))
        if model_available("mobilenetv2-imagenet"):
            mnv2 = mobilenet_v2_imagenet()
            tm = measure(_infer(mnv2, torch.rand(1, 3, 224, 224)), repeats=repeats, warmup=2)
            rows.append(Row("classify", "mobilenetv2-imagenet (teacher)", dev, "float32", "[1,3,224,224]", tm,
                            extra={"fps": 1 / tm.median}))
        if model_available("mediapipe-selfie"):
            from edgert.vision.teachers import MediaPipeSelfieTeacher

            frame = np.random.default_rng(2).integers(0, 256, (1, 272, 640, 3), dtype=np.uint8)
            for variant in ("general", "landscape"):
                teacher = MediaPipeSelfieTeacher(variant=variant)
                tm = measure(lambda: teacher.label(frame), repeats=repeats, warmup=2)
                rows.append(Row("segment", f"mediapipe-selfie-{variant} (teacher)", dev, "float32",
                                "[1,272,640,3] uint8", tm, extra={"fps": 1 / tm.median}))
    return rows


def init_study(out_dir: Path, steps: int = 120, seed: int = 0) -> dict[str, Any]:
    """Does the ImageNet init help the student? Distill the MediaPipe teacher into students on iscc-demo
    (first 40 s at 2 fps; even frames train, odd frames test) and report test mIoU vs the teacher at 20, 60
    and ``steps`` Adam steps (lr 2e-3, batch 8), BatchNorm recalibrated first, frozen or in train mode."""
    from edgert.data import clip_path
    from edgert.vision.distill import predict_labels, recalibrate_batchnorm
    from edgert.vision.metrics import ConfusionMeter
    from edgert.vision.teachers import load_teacher
    from edgert.vision.video import read_clip

    torch.set_num_threads(1)
    frames, _ = read_clip(clip_path("iscc-demo"), fps=2, duration_s=40)
    labels = load_teacher("mediapipe-selfie").label(frames)
    train, test = np.arange(0, len(frames), 2), np.arange(1, len(frames), 2)
    checkpoints = sorted({20, 60, steps})
    results: dict[str, Any] = {"clip": "iscc-demo", "frames": int(len(frames)), "person_fraction": float(labels.mean()),
                               "steps": checkpoints, "runs": {}}
    for width, expansion in ((0.5, 1.0), (1.0, 1.0), (1.0, 0.35)):
        for pretrained in (True, False):
            for freeze_bn in (True, False):
                torch.manual_seed(seed)
                rng = np.random.default_rng(seed)
                model = segmentation_student(2, width_mult=width, pretrained=pretrained, expansion_mult=expansion)
                recalibrate_batchnorm(model, [frames[train[i:i + 8]] for i in range(0, len(train), 8)])
                opt = torch.optim.Adam(model.parameters(), lr=2e-3)
                mious = []
                for step in range(1, steps + 1):
                    idx = rng.choice(train, 8, replace=False)
                    distill_step(model, opt, frames[idx], labels[idx], freeze_bn=freeze_bn)
                    if step in checkpoints:
                        meter = ConfusionMeter(2)
                        meter.update(labels[test], predict_labels(model, frames[test]))
                        mious.append(round(100 * meter.miou(), 1))
                key = (f"x{width}{f' e{expansion}' if expansion != 1 else ''} "
                       f"{'imagenet' if pretrained else 'random'} {'frozen-bn' if freeze_bn else 'train-bn'}")
                results["runs"][key] = mious
                print(f"{key:32s} mIoU at {checkpoints}: {mious}", flush=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "init_study.json").write_text(json.dumps(results, indent=2))
    return results


def teacher_overlay(out_dir: Path) -> Path:
    """The MediaPipe teacher's person labels (magenta) on frames of the bundled clips, as a JPEG."""
    import cv2

    from edgert.data import clip_path
    from edgert.vision.teachers import load_teacher
    from edgert.vision.video import read_clip

    teacher = load_teacher("mediapipe-selfie")
    tiles = []
    for clip, start in (("bikes", 5.0), ("bikes", 8.0), ("iscc-demo", 15.0), ("carphone", 1.0)):
        frame, _ = read_clip(clip_path(clip), start_s=start, max_frames=1)
        person = teacher.label(frame)[0] == 1
        tile = frame[0].copy()
        tile[person] = (0.5 * tile[person] + 0.5 * np.array([255, 0, 255])).astype(np.uint8)
        tiles.append(cv2.resize(tile, (round(tile.shape[1] * 200 / tile.shape[0]), 200), interpolation=cv2.INTER_AREA))
    top, bottom = np.concatenate(tiles[:2], 1), np.concatenate(tiles[2:], 1)
    pad = top.shape[1] - bottom.shape[1]
    bottom = np.pad(bottom, ((0, 0), (0, max(0, pad)), (0, 0)))
    top = np.pad(top, ((0, 0), (0, max(0, -pad)), (0, 0)))
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "teacher_overlay.jpg"
    cv2.imwrite(str(path), cv2.cvtColor(np.concatenate([top, bottom], 0), cv2.COLOR_RGB2BGR),
                [cv2.IMWRITE_JPEG_QUALITY, 85])
    return path


def table(rows: list[Row]) -> str:
    """Markdown table with fps."""
    lines = ["| op | model | threads | input | median | IQR | fps |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        fps = r.extra.get("fps") or r.extra.get("frames_per_s")
        unit = " frames/s" if "frames_per_s" in r.extra else ""
        lines.append(f"| {r.op} | {r.impl} | {r.device} | {r.shapes} | {r.time.median * 1e3:.1f} ms | "
                     f"{r.time.iqr * 1e3:.1f} ms | {fps:.1f}{unit} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", default="1,2", help="comma-separated torch thread counts")
    parser.add_argument("--init-study", action="store_true", help="ImageNet vs random student init (minutes)")
    parser.add_argument("--overlay", action="store_true", help="teacher label overlay figure")
    parser.add_argument("--out", type=Path, default=DOCS_RESULTS, help="folder for --init-study/--overlay")
    args = parser.parse_args()
    if args.init_study or args.overlay:
        if args.overlay:
            print(teacher_overlay(args.out))
        if args.init_study:
            init_study(args.out)
        return
    threads = [int(t) for t in args.threads.split(",") if t.strip()]
    rows = run(args.quick, threads)
    print(table(rows))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    path = write_json("bench_vision", rows, {}, {"device": "cpu", "quick": args.quick, "threads": threads,
                                                  "loadavg_1min_at_end": load})
    print(f"\n(load average {load:.1f} on {os.cpu_count()} cores at the end) -> {path}")


if __name__ == "__main__":
    main()
