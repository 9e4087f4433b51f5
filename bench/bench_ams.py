"""AMS server and edge hot paths on the real segmentation student (320x144, width 0.5).

* ``ams_train_step``: one server iteration (forward, cross-entropy, backward, Adam) with edgert's
  :class:`MaskedAdam` under a gradient-guided 5 % mask vs ``torch.optim.Adam`` (the peer) on the whole model.
* ``ams_select``: choosing the next phase's 5 % coordinates (global top-|update| over all parameters)
  vs ``torch.topk`` on the flattened scores (peer).
* ``ams_packet``: encoding one phase's sparse update packet (fp16 values, Golomb-Rice indices) vs the dense
  full-model packet (peer); bytes of both in ``extra``.
* ``ams_upload``: libx264 encoding of a 10-frame sample buffer at the uplink bitrate (``slow``) vs
  ``ultrafast`` (peer); bytes in ``extra``.
* ``ams_edge_infer``: the edge's per-frame student inference (batch 1).

Run: ``python -m bench.bench_ams [--quick]`` (1 torch thread, as each AMS process uses).
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from bench.harness import Row, measure, write_json
from edgert.ams.server import MODEL_TAG
from edgert.updates import TensorUpdate, encode_update, module_manifest
from edgert.updates.selection import CoordinateSelector, MaskedAdam, SelectionConfig, masked_indices
from edgert.vision.distill import distill_step
from edgert.vision.models import segmentation_student
from edgert.vision.video import encode

W, H = 320, 144


def run(quick: bool) -> list[Row]:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    repeats = 3 if quick else 10
    model = segmentation_student(2, width_mult=0.5, pretrained=True)
    params = list(model.parameters())
    n = sum(p.numel() for p in params)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (8, H, W, 3), dtype=np.uint8)
    labels = rng.integers(0, 2, (8, H, W)).astype(np.int64)
    shapes = f"student {n / 1e6:.2f}M params, batch 8 at {W}x{H}"
    rows: list[Row] = []

    selector = CoordinateSelector([p.shape for p in params], SelectionConfig("gradient", 0.05))
    masked = MaskedAdam(params)
    distill_step(model, masked, frames, labels)
    masked.set_masks(selector.next_masks(masked.accumulated))
    t = measure(lambda: distill_step(model, masked, frames, labels), repeats=repeats, warmup=1)
    rows.append(Row("ams_train_step", "edgert-masked-adam-5%", "cpu", "float32", shapes, t))
    adam = torch.optim.Adam(params, lr=1e-3)
    t = measure(lambda: distill_step(model, adam, frames, labels), repeats=repeats, warmup=1)
    rows.append(Row("ams_train_step", "torch-adam-full", "cpu", "float32", shapes, t, extra={"peer": True}))

    acc = [torch.randn_like(p) for p in params]
    sel_shape = f"{n / 1e6:.2f}M coordinates, 5%"
    t = measure(lambda: selector.next_masks(acc), repeats=repeats * 3)
    rows.append(Row("ams_select", "edgert-selector", "cpu", "float32", sel_shape, t))
    flat = torch.cat([a.abs().reshape(-1) for a in acc])
    t = measure(lambda: torch.topk(flat, selector.count), repeats=repeats * 3)
    rows.append(Row("ams_select", "torch-topk", "cpu", "float32", sel_shape, t, extra={"peer": True}))

    manifest = module_manifest(model, tag=MODEL_TAG)
    masks = selector.next_masks(acc)
    sparse = {}
    for (name, _), m in zip(model.named_parameters(), masks):
        idx = masked_indices(m)
        if idx.size:
            sparse[name] = TensorUpdate(values=(1e-3 * rng.standard_normal(idx.size)).astype(np.float32), indices=idx)
    dense = {name: TensorUpdate(values=(1e-3 * rng.standard_normal(p.numel())).astype(np.float32))
             for name, p in model.named_parameters()}
    sp_bytes = len(encode_update(manifest, 1, 2, sparse))
    de_bytes = len(encode_update(manifest, 1, 2, dense))
    pk_shape = f"{n / 1e6:.2f}M params"
    t = measure(lambda: encode_update(manifest, 1, 2, sparse), repeats=repeats * 3)
    rows.append(Row("ams_packet", "edgert-sparse-5%", "cpu", "fp16", pk_shape, t, extra={"bytes": sp_bytes}))
    t = measure(lambda: encode_update(manifest, 1, 2, dense), repeats=repeats * 3)
    rows.append(Row("ams_packet", "edgert-dense", "cpu", "fp16", pk_shape, t, extra={"bytes": de_bytes, "peer": True}))

    clip = np.repeat(frames[:1], 10, axis=0)
    clip[:, :, :40] = rng.integers(0, 256, (10, H, 40, 3), dtype=np.uint8)  # some motion/texture
    up_shape = f"10 frames {W}x{H} at 2000 kbps"
    for preset, peer in (("slow", False), ("ultrafast", True)):
        size = encode(clip, fps=10, bitrate_kbps=2000, preset=preset).payload_bytes
        t = measure(lambda: encode(clip, fps=10, bitrate_kbps=2000, preset=preset), repeats=repeats)
        rows.append(Row("ams_upload", f"libx264-{preset}", "cpu", "uint8", up_shape, t,
                        extra={"payload_bytes": size, "peer": peer}))

    model.eval()
    x = torch.from_numpy(frames[:1]).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        t = measure(lambda: model(x), repeats=repeats * 5, warmup=3)
    rows.append(Row("ams_edge_infer", "torch-eager", "cpu", "float32", f"1 frame {W}x{H}", t,
                    extra={"fps": 1.0 / t.median}))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rows = run(args.quick)
    print("| op | impl | shapes | median | IQR | extra |\n|---|---|---|---|---|---|")
    for r in rows:
        extra = {k: (round(v, 1) if isinstance(v, float) else v) for k, v in r.extra.items()}
        print(f"| {r.op} | {r.impl} | {r.shapes} | {r.time.median * 1e3:.2f} ms | "
              f"{r.time.iqr * 1e3:.2f} ms | {extra} |")
    path = write_json("bench_ams", rows, {}, {"device": "cpu", "quick": args.quick, "threads": 1})
    print(f"\nJSON: {path}")


if __name__ == "__main__":
    main()
