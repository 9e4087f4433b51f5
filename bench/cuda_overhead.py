"""Where the time of one CUDA ``ops.sparse_patch`` call goes: the Python entry point, the binding, the
DLPack exchange, the backend registry and the kernels, each timed on its own, next to the torch peers.

    python -m bench.cuda_overhead [--out DIR]

A sparse patch of a 5 % update moves a few hundred kilobytes: on a datacenter GPU the kernels take
microseconds, so per-call costs decide the comparison with ``torch.index_add_`` (which checks nothing). Each
stage is timed with the device synchronised after every call (the op is synchronous by contract). Writes
``cuda_overhead-cuda.json`` (and ``.md``) into --out.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable

import torch
import torch.utils.dlpack

from bench.harness import RESULTS_DIR, device_name, git_commit, measure
from edgert import ops
from edgert._info import cuda_module
from edgert.ops._dispatch import resolve, stream_of

P, K = 2_200_000, 110_000  # the hot-path benchmark's 5 % update of a 2.2M-parameter model


def stages(device: torch.device) -> list[tuple[str, Callable[[], object], bool]]:
    """(name, call, synchronise after each call) for every stage."""
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(P, generator=gen).to(device)
    idx = torch.sort(torch.randperm(P, generator=gen)[:K]).values.to(torch.int32).to(device)
    idx64 = idx.to(torch.int64)
    v16 = (0.01 * torch.randn(K, generator=gen)).to(torch.float16).to(device)
    v32 = v16.to(torch.float32)
    one_idx, one_v = idx[:1].clone(), v16[:1].clone()
    native = cuda_module()
    assert native is not None
    stream = stream_of(w)
    return [
        ("torch.cuda.synchronize() alone", lambda: None, True),
        ("torch index_add_ (no checks; fp32 values)", lambda: w.index_add_(0, idx64, v32), True),
        ("torch reference with the same checks", lambda: ops.sparse_patch(w, idx, v16, backend="torch"), True),
        ("ops.sparse_patch (edgert-cuda, whole call)", lambda: ops.sparse_patch(w, idx, v16), True),
        ("_edgert_cuda.sparse_patch (binding + kernels)", lambda: native.sparse_patch(w, idx, v16, "add", stream),
         True),
        ("_edgert_cuda.sparse_patch, K = 1 (fixed cost)",
         lambda: native.sparse_patch(w, one_idx, one_v, "add", stream), True),
        ("3 x Tensor.__dlpack__()", lambda: (w.__dlpack__(), idx.__dlpack__(), v16.__dlpack__()), False),
        ("3 x torch.utils.dlpack.to_dlpack()", lambda: (torch.utils.dlpack.to_dlpack(w),
                                                         torch.utils.dlpack.to_dlpack(idx),
                                                         torch.utils.dlpack.to_dlpack(v16)), False),
        ("ops backend resolve()", lambda: resolve("auto", device, (w, idx, v16)), False),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args()
    if not torch.cuda.is_available() or cuda_module() is None:
        print("needs a CUDA device, a CUDA build of torch and edgert's CUDA kernels", file=sys.stderr)
        sys.exit(2)
    device = torch.device("cuda")
    rows = []
    for name, fn, sync in stages(device):
        t = measure(fn, repeats=200, warmup=10, sync=torch.cuda.synchronize if sync else None)
        rows.append({"stage": name, "median_us": t.median * 1e6, "q1_us": t.q1 * 1e6, "q3_us": t.q3 * 1e6,
                     "synchronised": sync})
    lines = [f"sparse_patch call overhead on {device_name(device)}, P={P} K={K}, torch {torch.__version__}, "
             f"commit {git_commit()}", "", "| stage | median | IQR |", "|---|---|---|"]
    lines += [f"| {r['stage']} | {r['median_us']:.1f} us | {r['q3_us'] - r['q1_us']:.1f} us |" for r in rows]
    table = "\n".join(lines)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cuda_overhead-cuda.json").write_text(json.dumps(
        {"device": device_name(device), "torch": torch.__version__, "commit": git_commit(), "P": P, "K": K,
         "rows": rows}, indent=2) + "\n")
    (args.out / "cuda_overhead-cuda.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
