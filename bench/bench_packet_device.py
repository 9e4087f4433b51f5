"""Decode+verify+apply time of update packets in the device program, natively and for aarch64 under qemu.

    python -m bench.bench_packet_device [--packets 21] [--host-build build/ci-host] [--aarch64-build build/ci-aarch64]

Writes a 2.2M-parameter manifest, a full snapshot and a chain of 5%-dense fp16 update packets
(same model and masks as bench/bench_packet.py), then runs ``firmware/examples/time_apply.c``
(built as ``edgert_time_apply`` by ``.ci/test``'s CMake trees) on them: the native binary directly,
the aarch64 binary through ``cmake/run-aarch64`` (qemu-aarch64 with the toolchain's runtime). The qemu figure is a
functional check of the cross build, not a speed claim for a Jetson. Prints a table and writes
``bench/results/packet_device-cpu.json``.
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from bench.bench_packet import DENSITY, _model, _update
from bench.harness import Row, Timing, write_json
from edgert.updates import encode_snapshot, encode_update

ROOT = Path(__file__).resolve().parent.parent
SUMMARY = re.compile(r"applied (\d+) packets: median ([\d.]+) us, min ([\d.]+) us, max ([\d.]+) us")


def write_chain(folder: Path, packets: int, seed: int = 0, packet_format: int = 1) -> list[Path]:
    """Manifest, snapshot (v1) and ``packets`` sparse updates v1->v2->... (format 1, format 2 where
    smaller, or format 3); returns the file list for time_apply."""
    rng = np.random.default_rng(seed)
    m = _model()
    (folder / "manifest.bin").write_bytes(m.to_bytes())
    weights = {t.name: rng.standard_normal(t.numel).astype(np.float32) for t in m.tensors}
    files = [folder / "manifest.bin", folder / "snapshot.bin"]
    files[1].write_bytes(encode_snapshot(m, 1, weights).data)
    for v in range(1, packets + 1):
        path = folder / f"update_{v:03d}.bin"
        forced = packet_format if packet_format == 3 else None
        path.write_bytes(encode_update(m, v, v + 1, _update(m, rng), max_format=packet_format,
                                       packet_format=forced).data)
        files.append(path)
    return files


def run_binary(command: list[str], files: list[Path]) -> Timing:
    out = subprocess.run(command + [str(f) for f in files], capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({out.returncode}): {out.stderr.strip()}")
    match = SUMMARY.search(out.stdout)
    if match is None:
        raise RuntimeError(f"no summary line in the output of {command[0]}")
    samples = [float(v) * 1e-6 for v in re.findall(r": \d+ bytes, ([\d.]+) us", out.stdout)]
    q = np.percentile(samples, [25, 50, 75])
    return Timing(median=float(q[1]), q1=float(q[0]), q3=float(q[2]), repeats=len(samples))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--packets", type=int, default=21, help="timed sparse updates after the snapshot")
    parser.add_argument("--host-build", type=Path, default=ROOT / "build/ci-host")
    parser.add_argument("--aarch64-build", type=Path, default=ROOT / "build/ci-aarch64")
    parser.add_argument("--no-json", action="store_true")
    args = parser.parse_args(argv)
    targets = []
    host = args.host_build / "firmware/edgert_time_apply"
    if host.is_file():
        targets.append(("x86_64 native", [str(host)]))
    cross = args.aarch64_build / "firmware/edgert_time_apply"
    if cross.is_file() and shutil.which("qemu-aarch64"):
        run_aarch64 = Path(__file__).resolve().parents[1] / "cmake" / "run-aarch64"
        targets.append(("aarch64 under qemu-user", [str(run_aarch64), str(cross)]))
    if not targets:
        print(f"no edgert_time_apply binary under {args.host_build} or {args.aarch64_build}: run .ci/test's CMake "
              "builds first", file=sys.stderr)
        return 2
    rows: list[Row] = []
    numel = sum(t.numel for t in _model().tensors)
    shape = f"{numel / 1e6:.1f}M params, {DENSITY:.0%}"
    for packet_format in (1, 2, 3):
        with tempfile.TemporaryDirectory() as tmp:
            files = write_chain(Path(tmp), args.packets, packet_format=packet_format)
            size = files[-1].stat().st_size
            for name, command in targets:
                t = run_binary(command, files)
                rows.append(Row("packet_apply_device", f"{name}, format {packet_format}", "cpu", "fp16", shape,
                                time=t, bytes_moved=float(size),
                                extra={"packet_bytes": size, "single_thread": True, "format": packet_format}))
    print("| program | shapes | packet bytes | median | IQR | goal (<= 1 ms native) |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r.impl} | {r.shapes} | {r.extra['packet_bytes']} | {r.time.median * 1e6:.0f} us | "
              f"{r.time.iqr * 1e6:.0f} us | {'met' if r.time.median <= 1e-3 else 'not met'} |")
    if not args.no_json:
        print(f"wrote {write_json('packet_device', rows, {}, {'packets': args.packets})}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
