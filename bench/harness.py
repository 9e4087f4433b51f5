"""Shared benchmark machinery: timing (median, IQR), rooflines, tables, JSON rows.

Speed is measured here and never asserted in tests. Every row records the
commit, device, backend, dtype and shapes so results from different machines
can be compared.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass
class Timing:
    """Seconds per call over repeats after warm-up."""

    median: float
    q1: float
    q3: float
    repeats: int

    @property
    def iqr(self) -> float:
        return self.q3 - self.q1


def measure(fn: Callable[[], Any], *, repeats: int = 30, warmup: int = 3, min_time: float = 0.0,
            sync: Optional[Callable[[], None]] = None, clock: Callable[[], float] = time.perf_counter) -> Timing:
    """Times ``fn`` (synchronising with ``sync`` for asynchronous devices).

    Runs ``warmup`` untimed calls, then ``repeats`` timed ones (more if the total is
    below ``min_time`` seconds) and returns median and quartiles. ``clock`` is wall time by
    default; ``time.thread_time`` measures the calling thread's CPU time instead (single-threaded
    CPU work on a shared machine: time spent waiting for a core is not counted).
    """
    sync = sync or (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    samples: list[float] = []
    start_all = time.perf_counter()
    while len(samples) < repeats or time.perf_counter() - start_all < min_time:
        t0 = clock()
        fn()
        sync()
        samples.append(clock() - t0)
        if len(samples) > 100 * repeats:
            break
    return summarize(samples)


def summarize(samples: Sequence[float]) -> Timing:
    """Median and quartiles of seconds measured elsewhere (e.g. per phase of a running server); non-empty."""
    if not samples:
        raise ValueError("summarize: no samples")
    q = statistics.quantiles(samples, n=4) if len(samples) >= 2 else [samples[0]] * 3
    return Timing(median=statistics.median(samples), q1=q[0], q3=q[2], repeats=len(samples))


def cuda_sync(device: torch.device) -> Callable[[], None]:
    """A synchronise function for ``device`` (no-op on CPU)."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


# Optional peers a run can add (bench.hotpaths --peers): torch.compile of the PyTorch formulation, and cupy on CUDA.
PEERS = ("compile", "cupy")


def compiled_peer(fn: Callable[..., Any], name: str, check: Callable[[Any], None],
                  *args: Any) -> Optional[Callable[..., Any]]:
    """``torch.compile(fn)``, compiled on ``fn(*args)`` and checked (``check(result)`` asserts parity with the
    reference) outside the timing; None, with the reason printed, when this install cannot compile it (no Triton
    or C compiler, an op Inductor cannot lower). A parity failure is raised, never skipped."""
    try:
        compiled = torch.compile(fn)
        result = compiled(*args)
    except Exception as exc:  # noqa: BLE001 (any compiler failure skips the row; it is reported)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"torch.compile peer of {name} skipped: {type(exc).__name__}: {first[:200]}")
        return None
    check(result)
    return compiled


def cupy_module(device: torch.device) -> Optional[ModuleType]:
    """cupy when ``device`` is CUDA and cupy can use it (else None, reason printed): the cupy peers."""
    if device.type != "cuda":
        return None
    try:
        import cupy
    except ImportError:
        print("cupy not installed: cupy peers skipped (pip install cupy-cuda13x)")
        return None
    if not cupy.cuda.is_available():
        print("cupy cannot use the GPU: cupy peers skipped")
        return None
    return cupy


def start_numba(numba: Any) -> int:
    """Starts numba's thread pool (for a numba peer) on torch's thread count; returns numba's count.

    numba's OpenMP threading layer shares libgomp with torch and edgert, and starting it sets the
    process-wide OpenMP thread count to NUMBA_NUM_THREADS (all cores); torch's count (which is
    also edgert's) is put back, so that every row of a run uses the same threads.
    """
    threads = torch.get_num_threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    torch.set_num_threads(threads)
    return numba.get_num_threads()


def memcpy_bandwidth(device: torch.device, n_bytes: int = 256 << 20) -> float:
    """Achieved copy bandwidth in GB/s, counting bytes read plus bytes written."""
    n = n_bytes // 4
    src = torch.ones(n, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    if device.type == "cpu":
        src_np, dst_np = src.numpy(), dst.numpy()
        t = measure(lambda: np.copyto(dst_np, src_np), repeats=10)
    else:
        t = measure(lambda: dst.copy_(src), repeats=20, sync=cuda_sync(device))
    return 2 * n * 4 / t.median / 1e9


def stop_process(proc: "subprocess.Popen[Any]", timeout: float = 10.0, terminate: bool = True) -> None:
    """Ends a benchmark's child process: SIGTERM (unless it was already asked to quit, ``terminate=False``),
    up to ``timeout`` seconds to exit, then SIGKILL; always reaped."""
    if terminate and proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def child_env() -> dict[str, str]:
    """The environment for a child Python process of a benchmark: it imports the same ``edgert`` as this
    process (the installed package, or ``python/`` with its in-place build) and finds ``bench`` in the
    repository. Prepending ``python/`` blindly would hand a CI child, whose compiled module is installed,
    a source tree without it."""
    import edgert

    package_root = str(Path(edgert.__file__).resolve().parent.parent)
    repo = str(Path(__file__).resolve().parent.parent)
    parts = [package_root, repo, os.environ.get("PYTHONPATH", "")]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in parts if p))


def gemm_rate(device: torch.device, n: int = 1024, tf32: bool = False) -> float:
    """Achieved fp32 GEMM rate in GFLOP/s (torch.mm, n x n x n); ``tf32`` lets a CUDA device use its TF32 tensor
    cores, as cuDNN's convolutions do by default (``torch.backends.cudnn.allow_tf32``)."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        t = measure(lambda: torch.mm(a, b), repeats=10, sync=cuda_sync(device))
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous
    return 2 * n**3 / t.median / 1e9


def git_commit() -> str:
    """The current commit (with '-dirty' for local changes), or 'unknown'."""
    try:
        root = Path(__file__).resolve().parent.parent
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


_ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_fp16", "amx_tile", "asimd", "sve")


def cpu_model() -> dict[str, Any]:
    """The CPU's model name and the vector extensions that decide kernel speed (Linux /proc/cpuinfo; elsewhere
    platform.processor() and no flags). Rows measured on different CPUs are not comparable: on the 2-vCPU
    development machines an AMD EPYC (AVX2 GEMM ~96 GFLOP/s per core) was later an Intel Xeon with AVX-512
    and AMX (~160), and only the Intel slowed down on denormals."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())  # the first core's
    except OSError:
        pass
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    return {"model": fields.get("model name") or platform.processor() or platform.machine(),
            "isa": [f for f in _ISA_FLAGS if f in flags]}


def device_name(device: torch.device) -> str:
    """Human-readable device, e.g. 'cpu x86_64 Intel(R) Xeon(R) Processor (2 threads)' or the CUDA device name."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = cpu_model()["model"]
    model = "" if model == platform.machine() else model
    return f"cpu {platform.machine()} {model} ({torch.get_num_threads()} threads)".replace("  ", " ")


@dataclass
class Row:
    """One benchmark measurement: an op on one backend, or its peer."""

    op: str
    impl: str  # "edgert-cpu", "edgert-cuda", "torch-eager", "numpy", ...
    device: str
    dtype: str
    shapes: str
    time: Timing
    bytes_moved: float = 0.0
    flops: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def gbps(self) -> float:
        return self.bytes_moved / self.time.median / 1e9 if self.bytes_moved else 0.0

    @property
    def gflops(self) -> float:
        return self.flops / self.time.median / 1e9 if self.flops else 0.0


def speedups(rows: list[Row], baseline_impl: str) -> dict[tuple[str, str], float]:
    """Median-time ratio baseline/impl for every (op, shapes) that has the baseline."""
    base = {(r.op, r.shapes): r.time.median for r in rows if r.impl == baseline_impl}
    return {(r.op, r.impl): base[(r.op, r.shapes)] / r.time.median for r in rows if (r.op, r.shapes) in base}


def markdown_table(rows: list[Row], roofline: dict[str, float]) -> str:
    """Rows as a markdown table; %memcpy and %GEMM are fractions of the roofline's measured copy bandwidth and
    fp32 GEMM rate (blank when the row or the roofline lacks them). The last column is the speedup against the
    fastest of the op's peer rows (marked in extra['peer']) at the same shapes, naming that peer when there are
    several."""
    lines = ["| op | impl | shapes | dtype | median | IQR | GB/s | %memcpy | GFLOP/s | %GEMM | vs fastest peer |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    peers: dict[tuple[str, str], list[Row]] = {}
    for r in rows:
        if r.extra.get("peer"):
            peers.setdefault((r.op, r.shapes), []).append(r)
    for r in rows:
        group = peers.get((r.op, r.shapes), [])
        fastest = min(group, key=lambda p: p.time.median, default=None)
        if r.extra.get("peer"):
            vs = "fastest peer" if len(group) > 1 and r is fastest else "peer"
        elif fastest is not None:
            vs = f"{fastest.time.median / r.time.median:.2f}x" + (f" ({fastest.impl})" if len(group) > 1 else "")
        else:
            vs = ""
        pct = f"{100 * r.gbps / roofline['memcpy_gbps']:.0f}%" if r.gbps and roofline.get("memcpy_gbps") else ""
        gemm = (f"{100 * r.gflops / roofline['gemm_fp32_gflops']:.0f}%"
                if r.gflops and roofline.get("gemm_fp32_gflops") else "")
        lines.append(
            f"| {r.op} | {r.impl} | {r.shapes} | {r.dtype} | {_fmt_time(r.time.median)} | {_fmt_time(r.time.iqr)} | "
            f"{r.gbps:.1f} | {pct} | {r.gflops:.1f} | {gemm} | {vs} |".replace("| 0.0 |", "|  |")
        )
    return "\n".join(lines)


def _fmt_time(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} us"


def write_json(name: str, rows: list[Row], roofline: dict[str, float], config: dict[str, Any],
               out_dir: Path = RESULTS_DIR, markdown: Optional[str] = None) -> Path:
    """Writes rows with commit/device metadata to ``bench/results/<name>-<device>.json`` (``out_dir`` instead of
    bench/results), and ``markdown`` (the printed table) beside it as ``.md`` when given."""
    out_dir.mkdir(parents=True, exist_ok=True)
    device = config.get("device", "cpu")
    payload = {
        "commit": git_commit(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "host": platform.node(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpu": cpu_model(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "device_name": device_name(torch.device(device)) if device != "cuda" or torch.cuda.is_available() else None,
        "config": config,
        "roofline": roofline,
        "rows": [
            {**{k: v for k, v in asdict(r).items() if k != "time"}, "median_s": r.time.median, "q1_s": r.time.q1,
             "q3_s": r.time.q3, "repeats": r.time.repeats, "gbps": r.gbps, "gflops": r.gflops}
            for r in rows
        ],
    }
    path = out_dir / f"{name}-{device}.json"
    path.write_text(json.dumps(payload, indent=2))
    if markdown is not None:
        path.with_suffix(".md").write_text(f"{name} on {payload['device_name'] or device}, commit {payload['commit']}, "
                                           f"torch {torch.__version__}\n\n{markdown}\n")
    return path


def write_report(stem: str, result: dict[str, Any], markdown: str, script: str, out_dir: Path = RESULTS_DIR) -> Path:
    """Writes a system benchmark's ``result`` (a dict holding ``commit`` and ``date``) to ``<out_dir>/<stem>.json``
    and its printed ``markdown`` beside it as ``.md``, headed by ``script`` and the commit; returns the JSON path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{stem}.json"
    path.write_text(json.dumps(result, indent=1))
    path.with_suffix(".md").write_text(f"{script}, commit {result['commit']}, {result['date']}\n\n{markdown}\n")
    return path
