"""Benchmark of the NC metrics suite against the common ways of computing NC1.

Run: ``python benchmarks/metrics.py`` (about 5 minutes on 2 cores; ``--dims 512`` for a quick run;
``--device cuda`` on a GPU machine: features, statistics and baselines on the GPU, the clock
waiting for the device, peak memory from the CUDA allocator).

For N features (float32, as a network returns them) with K classes, at each dimension d, times in
one process:

* ``read``: one plain read pass over the features, ``features.sum()``;
* ``suite``: :func:`nclab.metrics.measure` with a classifier (every NC1-4 metric of the report);
* ``stream``: the same suite fed in batches of 256 rows, as from a data loader
  (:func:`nclab.metrics.measure_batches`: two passes of accumulator updates);
* ``gemm``: the GEMM baseline: class means, then Σ_W by one d x d matrix product per batch of
  1,000 samples in float64, Σ_B, and tr(Σ_W pinv(Σ_B))/K (SVD pinv, default tolerance, all in
  float64 so that it is not hit by the float32 pinv trap);
* ``loop``: the per-sample baseline of the widely copied notebook: Σ_W accumulated sample by
  sample with outer products, then the same pinv step (timed once, with the GEMM baseline). The
  loop is timed on ``--loop-samples`` samples and extrapolated linearly to N; the output says so.

Prints the times, their ratios and the peak extra resident memory of each method (reset through
/proc/self/clear_refs where the kernel allows it), checks that the baselines' NC1 agrees with the
suite's, and reports the targets of the metrics issue. Absolute times are noisy on shared
machines; compare ratios taken in the same run.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from nclab.metrics import accumulators, measure, measure_batches

F64 = torch.float64
CPU = torch.device("cpu")
STREAM_BATCH = 256  # rows per batch of the streamed suite, as a data loader would give them


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def timed(
    fn: Callable[[], Any], repeats: int, device: torch.device = CPU
) -> tuple[float, Any, float | None]:
    """Best wall time over ``repeats`` calls, the last result, and peak extra memory in MiB
    (resident memory on the CPU; allocated device memory on CUDA, where the clock waits for
    the device)."""
    best, result, peak = float("inf"), None, None
    cuda = device.type == "cuda"
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            can_reset, before = True, torch.cuda.memory_allocated(device) // 1024
        else:
            can_reset, before = _reset_peak(), _status_kib("VmRSS")
        start = time.perf_counter()
        result = fn()
        if cuda:
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
        after = torch.cuda.max_memory_allocated(device) // 1024 if cuda else _status_kib("VmHWM")
        if can_reset and before is not None and after is not None:
            extra = (after - before) / 1024
            peak = extra if peak is None else max(peak, extra)
    return best, result, peak


def class_means(h: torch.Tensor, y: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    sums = torch.zeros(k, h.shape[1], dtype=F64, device=h.device).index_add_(0, y, h.to(F64))
    counts = torch.bincount(y, minlength=k).to(F64)
    means = sums / counts[:, None]
    return means, means - sums.sum(0) / counts.sum()


def pinv_nc1(sigma_w: torch.Tensor, centred: torch.Tensor, k: int) -> float:
    """The notebook's last step: Σ_B, its pinv (SVD, default tolerance), tr(Σ_W Σ_B^+)/K."""
    sigma_b = centred.T @ centred / k
    inv = torch.linalg.pinv(sigma_b)
    return float(torch.trace(sigma_w @ inv)) / k


def gemm_scatter(
    h: torch.Tensor, y: torch.Tensor, means: torch.Tensor, batch: int = 1000
) -> torch.Tensor:
    """N Σ_W by one d x d matrix product per batch, in float64."""
    scatter = torch.zeros(h.shape[1], h.shape[1], dtype=F64, device=h.device)
    for start in range(0, h.shape[0], batch):
        hc = h[start : start + batch].to(F64) - means[y[start : start + batch]]
        scatter += hc.T @ hc
    return scatter


def _max_known(*values: float | None) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def loop_scatter(h: torch.Tensor, y: torch.Tensor, means: torch.Tensor, count: int) -> torch.Tensor:
    sigma_w = torch.zeros(h.shape[1], h.shape[1], dtype=F64, device=h.device)
    for i in range(count):
        v = h[i].to(F64) - means[y[i]]
        sigma_w += torch.outer(v, v)
    return sigma_w


def bench_dim(n: int, k: int, d: int, args: argparse.Namespace) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(d)
    centres = 3.0 * torch.randn(k, d, generator=gen)
    y = torch.randint(0, k, (n,), generator=gen)
    h = centres[y] + torch.randn(n, d, generator=gen)
    w, b = torch.randn(k, d, generator=gen), torch.randn(k, generator=gen)
    dev = torch.device(args.device)
    h, y, w, b = h.to(dev), y.to(dev), w.to(dev), b.to(dev)

    rows: dict[str, dict[str, Any]] = {}
    t, _, mem = timed(lambda: h.sum(), args.repeats, dev)
    rows["read"] = {"seconds": t, "peak_mib": mem}
    # Drop the per-thread workspace that an earlier dimension left, so that the peak includes it.
    accumulators._local.work = None
    t, report, mem = timed(lambda: measure(h, y, w, b), args.repeats, dev)
    rows["suite"] = {"seconds": t, "peak_mib": mem, "nc1": report["nc1"]}
    batches = [
        (h[i : i + STREAM_BATCH], y[i : i + STREAM_BATCH]) for i in range(0, n, STREAM_BATCH)
    ]
    t, streamed, mem = timed(lambda: measure_batches(batches, k, w, b), args.repeats, dev)
    rows["stream"] = {"seconds": t, "peak_mib": mem, "nc1": streamed["nc1"]}
    means, centred = class_means(h, y, k)
    t_scatter, sigma_w, mem_gemm = timed(lambda: gemm_scatter(h, y, means), 1, dev)
    t_pinv, nc1_gemm, mem_pinv = timed(lambda: pinv_nc1(sigma_w / n, centred, k), 1, dev)
    rows["gemm"] = {
        "seconds": t_scatter + t_pinv,
        "peak_mib": _max_known(mem_gemm, mem_pinv),
        "nc1": nc1_gemm,
        "pinv_seconds": t_pinv,
    }

    # The loop differs from the GEMM baseline only in how Σ_W is accumulated; its pinv step is
    # the same computation, timed once above.
    count = min(n, args.loop_samples if d <= 1024 else args.loop_samples // 10)
    t_loop, scatter, mem_loop = timed(lambda: loop_scatter(h, y, means, count), 1, dev)
    extrapolated = count < n
    nc1_loop = pinv_nc1(scatter / n, centred, k) if not extrapolated else None
    rows["loop"] = {
        "seconds": t_loop * n / count + t_pinv,
        "peak_mib": _max_known(mem_loop, mem_pinv),
        "nc1": nc1_loop,
        "extrapolated_from": count if extrapolated else None,
    }
    return {"n": n, "k": k, "d": d, "rows": rows}


def print_result(res: dict[str, Any]) -> list[tuple[str, bool]]:
    rows = res["rows"]
    read, suite = rows["read"]["seconds"], rows["suite"]["seconds"]
    print(f"\nN = {res['n']:,}, K = {res['k']}, d = {res['d']:,} (features float32)")
    print(f"{'method':<8} {'seconds':>10} {'x read':>9} {'suite speed-up':>15} {'peak MiB':>9}")
    for name, row in rows.items():
        mem = "n/a" if row["peak_mib"] is None else f"{row['peak_mib']:.0f}"
        note = (
            f"  (extrapolated from {row['extrapolated_from']:,} samples)"
            if row.get("extrapolated_from")
            else ""
        )
        print(
            f"{name:<8} {row['seconds']:>10.4f} {row['seconds'] / read:>9.1f} "
            f"{row['seconds'] / suite:>15.1f} {mem:>9}{note}"
        )
    for name in ("stream", "gemm", "loop"):
        if rows[name].get("nc1") is not None:
            rel = abs(rows[name]["nc1"] - rows["suite"]["nc1"]) / rows["suite"]["nc1"]
            print(f"NC1 {name} vs suite: relative difference {rel:.1e}")
    checks = [
        (
            f"d={res['d']}: suite >= 100x faster than the per-sample loop",
            rows["loop"]["seconds"] / suite >= 100,
        )
    ]
    if res["d"] <= 512:
        checks.append((f"d={res['d']}: suite within 10x one read pass", suite / read <= 10))
        checks.append(
            (f"d={res['d']}: suite faster than the GEMM baseline", rows["gemm"]["seconds"] > suite)
        )
    else:
        checks.append(
            (
                f"d={res['d']}: suite >= 20x faster than the GEMM baseline",
                rows["gemm"]["seconds"] / suite >= 20,
            )
        )
    return checks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=50_000, help="number of features (default 50,000)")
    parser.add_argument("--classes", type=int, default=10, help="K (default 10)")
    parser.add_argument("--dims", type=int, nargs="+", default=[512, 8192], help="dimensions d")
    parser.add_argument("--repeats", type=int, default=5, help="repeats of the fast methods")
    parser.add_argument(
        "--loop-samples",
        type=int,
        default=2_000,
        help="samples timed in the per-sample loop before extrapolating to N (default 2,000; "
        "a tenth of it above d = 1,024)",
    )
    parser.add_argument(
        "--device", default="cpu", help="where the features live and everything runs (cpu, cuda)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    results, checks = [], []
    for d in args.dims:
        res = bench_dim(args.n, args.classes, d, args)
        results.append(res)
        checks += print_result(res)
    print("\nTargets:")
    for label, ok in checks:
        print(f"  [{'met' if ok else 'NOT met'}] {label}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
