"""Model-update packets: size vs naive formats, and decode+verify+apply time through the binding.

Model: 2.2M float32 parameters; update: a random 5% mask per tensor (add mode), and (not
--quick) a real gradient-guided AMS update. Sizes compare the edgert packet (format 1:
Golomb-Rice indices, raw values; format 2: adaptive range coder; format 3: static-table rANS)
against fp16 values + 32-bit indices and against a 1-bit mask + fp16 values compressed with
gzip (the original AMS code's format, ``edgert.updates.reference``) or xz, at the same values;
and the lossy block codings (int8b, int4b). Timing: Slot.apply (verify everything, decode into
the shadow buffer, swap) of formats 1, 2 and 3 carrying the same values (fp16, int8, int4b);
peers: zlib-compressed format 1 (inflate + apply: what a user would pick to shrink format 1
without a new format) and a NumPy scatter-add of already-decoded indices (no checks). The
packet_phase rows split decode time into index and value coding. The packet path is single
threaded by design (run with OMP_NUM_THREADS=1 to confirm).
"""
from __future__ import annotations

import gzip
import lzma
import time
import zlib

import numpy as np
import torch

from bench.harness import Row, Timing, measure
from edgert._edgert import Slot
from edgert.updates import Manifest, TensorSpec, TensorUpdate, encode_update, index_entropy_bound_bits
from edgert.updates.reference import mask_fp16_gzip_bytes

SHAPES = [(256, 256, 3, 3), (256, 128, 3, 3), (512, 1024), (1024, 768), (256,), (512,), (1024,)]
DENSITY = 0.05
KEY = bytes(range(32))


def _model() -> Manifest:
    return Manifest(b"\x5a" * 16, tuple(TensorSpec(f"layer{i}", "float32", s) for i, s in enumerate(SHAPES)))


def _update(m: Manifest, rng: np.random.Generator) -> dict:
    out = {}
    for t in m.tensors:
        idx = np.flatnonzero(rng.random(t.numel) < DENSITY)
        out[t.name] = (idx, (1e-3 * rng.standard_normal(idx.size)).astype(np.float32))
    return out


def _int8_sections(packet: bytes):
    """The value sections (int8 q) of a format 1 packet, in entry order."""
    import struct

    (count,) = struct.unpack_from("<I", packet, 56)
    pos = 72
    for _ in range(count):
        index_bytes, value_bytes = struct.unpack_from("<QQ", packet, pos + 24)
        pos += 48 + index_bytes
        yield packet[pos:pos + value_bytes]
        pos += value_bytes


def size_report(m: Manifest, update: dict) -> dict:
    """Bytes of each format for one update, plus index bits per parameter vs the entropy bound."""
    numel = sum(t.numel for t in m.tensors)
    count = sum(v[0].size for v in update.values())
    pkt = encode_update(m, 0, 1, update, value_coding="fp16")
    pkt8 = encode_update(m, 0, 1, update, value_coding="int8")
    compact = encode_update(m, 0, 1, update, value_coding="fp16", max_format=2)
    compact8 = encode_update(m, 0, 1, update, value_coding="int8", max_format=2)
    rans16 = encode_update(m, 0, 1, update, value_coding="fp16", max_format=3, packet_format=3)
    rans8 = encode_update(m, 0, 1, update, value_coding="int8", max_format=3, packet_format=3)
    mask = np.zeros(numel, dtype=bool)
    values16 = []
    offset = 0
    for t in m.tensors:
        idx, vals = update[t.name]
        mask[offset + idx] = True
        values16.append(vals.astype("<f2"))
        offset += t.numel
    mask_bits = np.packbits(mask).tobytes()
    mask_gzip = mask_fp16_gzip_bytes(m, update)
    mask_lzma = len(lzma.compress(mask_bits + np.concatenate(values16).tobytes(), preset=9 | lzma.PRESET_EXTREME))
    # int8 q bytes exactly as the packet carries them (per-tensor scale), mask + gzip
    q_bytes = b"".join(e for e in _int8_sections(pkt8.data))
    mask_gzip8 = len(gzip.compress(mask_bits + q_bytes))
    values32 = np.concatenate([update[t.name][1].astype("<f4") for t in m.tensors]).tobytes()
    mask_gzip32 = len(gzip.compress(mask_bits + values32))
    bound = sum(index_entropy_bound_bits(t.numel, update[t.name][0].size) for t in m.tensors)
    blocks = {f"edgert{'' if fmt == 1 else f'_v{fmt}'}_{c}": len(encode_update(
        m, 0, 1, update, value_coding=c, max_format=fmt, packet_format=3 if fmt == 3 else None))
        for c in ("int8b", "int4b") for fmt in (1, 2, 3)}  # v2: the smaller of 1 and 2; v3: format 3 as for fp16
    return {
        "params": numel, "updated": count, **blocks,
        "edgert_fp16": len(pkt), "edgert_int8": len(pkt8),
        "edgert_v2_fp16": len(compact), "edgert_v2_int8": len(compact8),
        "edgert_v3_fp16": len(rans16), "edgert_v3_int8": len(rans8), "zlib_v1_fp16": len(zlib.compress(pkt.data, 6)),
        "mask_lzma": mask_lzma, "mask_gzip_int8": mask_gzip8,
        "fp16_u32": count * 6, "mask_gzip": mask_gzip, "mask_gzip_fp32": mask_gzip32,
        "mask_gzip_index_only": len(gzip.compress(mask_bits)),
        "index_bits_per_param": pkt.index_bits / numel, "bound_bits_per_param": bound / numel,
    }


def real_update(phases: int = 2, iterations: int = 20, seed: int = 0) -> tuple[Manifest, dict]:
    """A real AMS update: the bikes.mp4 segmentation student distilled from the MediaPipe teacher.

    ``phases`` phases of ``iterations`` masked-Adam steps (batch 4, 128x256 frames) with the
    gradient-guided 5% selection; returns the manifest and the last phase's sparse delta
    (tensor name -> (indices, float32 values)), i.e. exactly what an AMS server streams.
    """
    from edgert.data import clip_path, model_available
    from edgert.updates.selection import AdamConfig, CoordinateSelector, MaskedAdam, SelectionConfig
    from edgert.vision.distill import distill_step
    from edgert.vision.models import segmentation_student
    from edgert.vision.teachers import load_teacher
    from edgert.vision.video import read_clip

    torch.manual_seed(seed)
    frames, _ = read_clip(clip_path("bikes"), size=(256, 128), fps=2.0)
    labels = load_teacher("mediapipe-selfie").label(frames)
    student = segmentation_student(2, width_mult=0.5, pretrained=model_available("mobilenetv2-imagenet"))
    names = [n for n, _ in student.named_parameters()]
    params = [p for _, p in student.named_parameters()]
    optimizer = MaskedAdam(params, AdamConfig())
    selector = CoordinateSelector([p.shape for p in params], SelectionConfig(fraction=DENSITY, seed=seed))
    rng = np.random.default_rng(seed)
    accumulated = None
    for _ in range(phases):
        masks = selector.next_masks(accumulated)
        optimizer.set_masks(masks)
        optimizer.reset_accumulator()
        before = [p.detach().clone() for p in params]
        for _ in range(iterations):
            pick = rng.choice(len(frames), 4, replace=False)
            distill_step(student, optimizer, frames[pick], labels[pick])
        accumulated = [a.clone() for a in optimizer.accumulated]
    update = {}
    for name, p, b, m in zip(names, params, before, masks):
        idx = np.flatnonzero(m.reshape(-1).numpy())
        update[name] = (idx, (p.detach() - b).reshape(-1).numpy()[idx].astype(np.float32))
    return Manifest.from_module(student, b"\xa5" * 16), update


def _print_sizes(title: str, sizes: dict) -> None:
    print(f"{title} ({sizes['updated']} coordinates):")
    print("| format | bytes | vs edgert fp16 |\n|---|---|---|")
    for name in ("edgert_fp16", "edgert_v2_fp16", "edgert_v3_fp16", "edgert_int8", "edgert_v2_int8", "edgert_v3_int8",
                 "edgert_int8b", "edgert_v2_int8b", "edgert_v3_int8b", "edgert_int4b", "edgert_v2_int4b",
                 "edgert_v3_int4b", "zlib_v1_fp16", "fp16_u32",
                 "mask_gzip",
                 "mask_lzma", "mask_gzip_int8", "mask_gzip_fp32", "mask_gzip_index_only"):
        print(f"| {name} | {sizes[name]} | {sizes[name] / sizes['edgert_fp16']:.2f}x |")
    print(f"index bits/param: {sizes['index_bits_per_param']:.4f} (entropy bound "
          f"{sizes['bound_bits_per_param']:.4f}, "
          f"+{100 * (sizes['index_bits_per_param'] / sizes['bound_bits_per_param'] - 1):.1f}%)\n")


def _packet(m: Manifest, v: int, update: dict, coding: str, key, fmt: int) -> bytes:
    """Update v -> v + 1 in exactly format ``fmt`` (formats 2 and 3 carry the same values as 1)."""
    return encode_update(m, v, v + 1, update, value_coding=coding, key=key, max_format=fmt,
                         packet_format=fmt).data


def _apply_timings(slot: Slot, packets: list[bytes], repeats: int, warmup: int,
                   transform=None) -> tuple[Timing, Timing]:
    """(wall, thread CPU) timings of slot.apply over a version chain of ``packets`` (twice as long as
    repeats + warmup: the first half is timed on the wall clock, the second on the thread's CPU clock)."""
    it = iter(packets)
    step = (lambda: slot.apply(transform(next(it)))) if transform else (lambda: slot.apply(next(it)))
    wall = measure(step, repeats=repeats, warmup=warmup)
    cpu = measure(step, repeats=repeats, warmup=warmup, clock=time.thread_time)
    return wall, cpu


def _cpu(t: Timing) -> dict:
    return {"thread_cpu_median_s": t.median, "thread_cpu_q1_s": t.q1, "thread_cpu_q3_s": t.q3}


def phase_rows(m: Manifest, rng: np.random.Generator, repeats: int, warmup: int) -> list[Row]:
    """Where decode time goes, per format: the same random 5% update as whole packets, as packets whose
    entries carry the same number of values densely (no index coding), and as int8 (half the value
    symbols). index ~ sparse - dense, values ~ dense - format 1 dense (CRC, checks, apply)."""
    update = _update(m, rng)
    n = sum(v[0].size for v in update.values())
    dense_m = Manifest(b"\x5b" * 16, (TensorSpec("values", "float32", (n,)),))
    dense = {"values": TensorUpdate(values=np.concatenate([update[t.name][1] for t in m.tensors]))}
    rows = []
    for fmt in (1, 2, 3):
        cases = (("sparse", m, update, "fp16"), ("dense-same-values", dense_m, dense, "fp16"),
                 ("sparse-int8", m, update, "int8"))
        for label, model, upd, coding in cases:
            packets = [_packet(model, v, upd, coding, None, fmt) for v in range(2 * (repeats + warmup))]
            t, cpu = _apply_timings(Slot(model.to_bytes()), packets, repeats, warmup)
            rows.append(Row("packet_phase", f"format{fmt}-{label}", "cpu", coding, f"{n} values", t,
                            bytes_moved=float(len(packets[0])),
                            extra={"packet_bytes": len(packets[0]), "format": fmt, **_cpu(cpu)}))
    return rows


def run(device: torch.device, quick: bool, peers: frozenset[str] = frozenset()) -> list[Row]:
    if device.type != "cpu":
        return []
    rng = np.random.default_rng(0)
    m = _model()
    numel = sum(t.numel for t in m.tensors)
    sizes = size_report(m, _update(m, rng))
    _print_sizes(f"packet sizes, {numel / 1e6:.2f}M params, random {DENSITY:.0%} mask", sizes)
    real_sizes = None
    if not quick:
        try:
            real_m, real = real_update()
        except (FileNotFoundError, ImportError) as exc:  # clip, teacher or PyAV not installed
            print(f"real AMS update skipped: {exc}\n")
        else:
            real_sizes = size_report(real_m, real)
            _print_sizes(f"packet sizes, real AMS update of the bikes student "
                         f"({real_sizes['params'] / 1e6:.2f}M params, gradient-guided {DENSITY:.0%})", real_sizes)
    repeats, warmup = (10, 2) if quick else (30, 3)
    rows: list[Row] = []
    shape = f"{numel / 1e6:.1f}M params, {DENSITY:.0%}"
    for coding, key, fmt in (("fp16", None, 1), ("int8", None, 1), ("fp16", KEY, 1), ("fp16", None, 2),
                             ("int8", None, 2), ("fp16", None, 3), ("int8", None, 3), ("int4b", None, 1),
                             ("int4b", None, 2), ("int4b", None, 3)):
        packets = [_packet(m, v, _update(m, rng), coding, key, fmt) for v in range(2 * (repeats + warmup))]
        slot = Slot(m.to_bytes())
        if key is not None:
            slot.set_key(key)
        t, cpu = _apply_timings(slot, packets, repeats, warmup)
        impl = "edgert-cpu" + ("+hmac" if key else "") + (f"-format{fmt}" if fmt > 1 else "")
        rows.append(Row("packet_apply", impl, "cpu", coding, shape, t, bytes_moved=float(len(packets[0])),
                        extra={"packet_bytes": len(packets[0]), "format": fmt, **_cpu(cpu), **sizes,
                               **({"real_update": real_sizes} if real_sizes else {})}))
    # Peer: format 1 compressed with zlib (level 6), inflated and applied.
    zipped = [zlib.compress(_packet(m, v, _update(m, rng), "fp16", None, 1), 6)
              for v in range(2 * (repeats + warmup))]
    t, cpu = _apply_timings(Slot(m.to_bytes()), zipped, repeats, warmup, transform=zlib.decompress)
    rows.append(Row("packet_apply", "zlib+edgert-cpu", "cpu", "fp16", shape, t, bytes_moved=float(len(zipped[0])),
                    extra={"packet_bytes": len(zipped[0]), "peer": True, **_cpu(cpu)}))
    if real_sizes:  # the real update re-sent as a version chain: apply cost of each format
        real_shape = f"{real_sizes['params'] / 1e6:.2f}M params, real AMS update"
        for fmt in (1, 2, 3):
            packets = [_packet(real_m, v, real, "fp16", None, fmt) for v in range(2 * (repeats + warmup))]
            t, cpu = _apply_timings(Slot(real_m.to_bytes()), packets, repeats, warmup)
            rows.append(Row("packet_apply", f"edgert-cpu-format{fmt}", "cpu", "fp16", real_shape, t,
                            bytes_moved=float(len(packets[0])),
                            extra={"packet_bytes": len(packets[0]), "format": fmt, **_cpu(cpu)}))
    rows += phase_rows(m, rng, repeats, warmup)
    # Peer: scatter-add of already-decoded fp16 values with 32-bit indices, no verification.
    upd = _update(m, rng)
    weights = [np.zeros(t.numel, dtype=np.float32) for t in m.tensors]
    decoded = [(upd[t.name][0].astype(np.uint32), upd[t.name][1].astype(np.float16)) for t in m.tensors]

    def peer() -> None:
        for w, (idx, vals) in zip(weights, decoded):
            w[idx] += vals.astype(np.float32)

    peer_cpu = measure(peer, repeats=repeats, clock=time.thread_time)
    rows.append(Row("packet_apply", "numpy-scatter", "cpu", "fp16", shape, measure(peer, repeats=repeats),
                    bytes_moved=float(sizes["fp16_u32"]), extra={"peer": True, **_cpu(peer_cpu)}))
    print("thread CPU time (what one core spends; wall time above also counts waiting on a shared machine):")
    print("| op | impl | shapes | dtype | bytes | CPU median | CPU IQR |\n|---|---|---|---|---|---|---|")
    for r in rows:
        c = r.extra
        iqr = c["thread_cpu_q3_s"] - c["thread_cpu_q1_s"]
        print(f"| {r.op} | {r.impl} | {r.shapes} | {r.dtype} | {c.get('packet_bytes', '')} | "
              f"{c['thread_cpu_median_s'] * 1e3:.3f} ms | {iqr * 1e3:.3f} ms |")
    print()
    return rows
