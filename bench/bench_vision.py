"""Vision models on the CPU: student inference fps (1 and 2 threads), distillation step time, teachers.

The peer of the AMS student (DeepLabV3-lite, MobileNetV2 x0.5) is the same architecture at full width and
the teachers themselves, all in the same process:

    python -m bench.bench_vision            # full table, writes bench/results/bench_vision-cpu.json
    python -m bench.bench_vision --quick
"""
from __future__ import annotations

import argparse
import os
from typing import Any, Callable

import numpy as np
import torch

from bench.harness import Row, measure, write_json
from edgert.vision.distill import distill_step
from edgert.vision.models import mobilenet_v2_imagenet, segmentation_student, tiny_classifier


def _available(name: str) -> bool:
    from edgert.data import model_path

    try:
        model_path(name)
    except FileNotFoundError:
        return False
    return True


def _infer(model: torch.nn.Module, x: torch.Tensor) -> Callable[[], Any]:
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
    student = segmentation_student(2, width_mult=0.5, pretrained=_available("mobilenetv2-imagenet"))
    wide = segmentation_student(2, width_mult=1.0, pretrained=False)
    params = {"student-x0.5": sum(p.numel() for p in student.parameters()),
              "student-x1.0": sum(p.numel() for p in wide.parameters())}
    for t in threads:
        torch.set_num_threads(t)
        dev = f"cpu ({t} thread{'s' if t > 1 else ''})"
        for h, w in sizes:
            x = torch.rand(1, 3, h, w)
            for name, model in (("student-x0.5", student), ("student-x1.0", wide)):
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
        if _available("mobilenetv2-imagenet"):
            mnv2 = mobilenet_v2_imagenet()
            tm = measure(_infer(mnv2, torch.rand(1, 3, 224, 224)), repeats=repeats, warmup=2)
            rows.append(Row("classify", "mobilenetv2-imagenet (teacher)", dev, "float32", "[1,3,224,224]", tm,
                            extra={"fps": 1 / tm.median}))
        if _available("mediapipe-selfie"):
            from edgert.vision.teachers import MediaPipeSelfieTeacher

            frame = np.random.default_rng(2).integers(0, 256, (1, 272, 640, 3), dtype=np.uint8)
            for variant in ("general", "landscape"):
                teacher = MediaPipeSelfieTeacher(variant=variant)
                tm = measure(lambda: teacher.label(frame), repeats=repeats, warmup=2)
                rows.append(Row("segment", f"mediapipe-selfie-{variant} (teacher)", dev, "float32",
                                "[1,272,640,3] uint8", tm, extra={"fps": 1 / tm.median}))
    return rows


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
    args = parser.parse_args()
    threads = [int(t) for t in args.threads.split(",") if t.strip()]
    rows = run(args.quick, threads)
    print(table(rows))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    path = write_json("bench_vision", rows, {}, {"device": "cpu", "quick": args.quick, "threads": threads,
                                                  "loadavg_1min_at_end": load})
    print(f"\n(load average {load:.1f} on {os.cpu_count()} cores at the end) -> {path}")


if __name__ == "__main__":
    main()
