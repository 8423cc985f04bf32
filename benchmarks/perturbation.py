"""Benchmark of the perturbation model's response spectra: structured (matrix-free) vs dense.

Run: ``OMP_NUM_THREADS=1 python benchmarks/perturbation.py`` (a few minutes on 2 cores).

At a near-collapsed minimizer (collapsed H0 plus 1e-2 Gaussian noise, solved), the extreme
singular values of F_11, F_21 (eq. 5) and J_11, J_21 (exact) are computed

* ``dense``: the whole (dKn)² matrices formed (F from the Hessian blocks, J = β(M + βI)⁻¹ by a
  dense inverse), then dense SVDs of the blocks: only at small sizes;
* ``structured``: :mod:`nclab.models.perturbation_spectrum` (Hessian-vector products by the
  class structure, J by Woodbury with a dK x dK Schur complement, Lanczos / svds).

Each measurement runs in a fresh process; ``peak MiB`` is its peak resident memory minus the
resident memory after the imports (ru_maxrss). Both paths' values are printed, and their largest
difference at the size where both run.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

SIZES = {"both": (4, 20, 16), "large": (10, 100, 64), "wide": (10, 100, 512)}


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def one(method: str, k: int, n: int, d: int) -> dict[str, float]:
    import numpy as np
    import torch

    from nclab.models.perturbation import PerturbationModel, collapsed_features
    from nclab.models.perturbation_spectrum import response_operators

    lw, lh, beta = 2**0.5, 0.1, 100.0
    h0 = collapsed_features(k, n, d, lw, lh, seed=0)
    gen = torch.Generator().manual_seed(1)
    h0 = h0 + 1e-2 * torch.randn(h0.shape, generator=gen, dtype=torch.float64)
    h = PerturbationModel(k, n, d, lw, lh, beta, h0).solve(tol=1e-10).features
    base = _rss_mib()
    start = time.perf_counter()
    ops = response_operators(h, n, lw, lh, beta)
    out: dict[str, float] = {}
    if method == "structured":
        for which in ("F", "J"):
            top, bottom = ops.intra_extremes(which)
            out[f"{which}_intra_max"], out[f"{which}_intra_min"] = top, bottom
            out[f"{which}_inter_max"] = ops.inter_max(which)
    else:
        dn, size = d * n, d * k * n
        f = np.block([[ops.dense_block("F", a, b) for b in range(k)] for a in range(k)])
        m = (np.eye(size) - f) * beta
        j = beta * np.linalg.inv(m + beta * np.eye(size))
        for which, mat in (("F", f), ("J", j)):
            intra = np.linalg.svd(mat[:dn, :dn], compute_uv=False)
            out[f"{which}_intra_max"], out[f"{which}_intra_min"] = intra[0], intra[-1]
            out[f"{which}_inter_max"] = np.linalg.svd(mat[dn : 2 * dn, :dn], compute_uv=False)[0]
    out["seconds"] = time.perf_counter() - start
    out["peak_mib"] = _rss_mib() - base
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--one", nargs=4, metavar=("METHOD", "K", "N", "D"), help=argparse.SUPPRESS)
    parser.add_argument(
        "--sizes",
        nargs="+",
        choices=sorted(SIZES),
        default=["both", "large", "wide"],
        help="which sizes to run: both (K=4, n=20, d=16, dense and structured), large "
        "(K=10, n=100, d=64), wide (K=10, n=100, d=512)",
    )
    args = parser.parse_args()
    if args.one:
        method, k, n, d = args.one[0], *map(int, args.one[1:])
        print(json.dumps(one(method, k, n, d)))
        return
    print(
        f"{'method':<11} {'K':>3} {'n':>4} {'d':>4} {'dKn':>7} {'seconds':>8} {'peak MiB':>9}"
        "  σ_max(F11) σ_min(F11) σ(F21) σ_min(J11) σ(J21)"
    )
    results = {}
    for size in args.sizes:
        k, n, d = SIZES[size]
        for method in ("dense", "structured") if size == "both" else ("structured",):
            done = subprocess.run(
                [sys.executable, __file__, "--one", method, str(k), str(n), str(d)],
                capture_output=True,
                text=True,
                check=True,
            )
            r = json.loads(done.stdout.strip().splitlines()[-1])
            results[(size, method)] = r
            print(
                f"{method:<11} {k:>3} {n:>4} {d:>4} {d * k * n:>7} {r['seconds']:>8.2f} "
                f"{r['peak_mib']:>9.0f}  {r['F_intra_max']:.10f} {r['F_intra_min']:.10f} "
                f"{r['F_inter_max']:.3e} {r['J_intra_min']:.10f} {r['J_inter_max']:.3e}"
            )
    if ("both", "dense") in results:
        a, b = results[("both", "dense")], results[("both", "structured")]
        keys = [key for key in a if key not in ("seconds", "peak_mib")]
        print(f"largest difference dense vs structured: {max(abs(a[x] - b[x]) for x in keys):.1e}")


if __name__ == "__main__":
    main()
