"""Benchmark of the UFM solver against momentum SGD of the kind published code uses.

Run: ``python benchmarks/ufm.py`` (about a minute on 2 cores).

For K = 10, n = 100, d = 64 (standard convention, λ_W = λ_H = 5e-4), MSE and CE: times
``UFM.solve()`` (L-BFGS to a gradient norm of 1e-8), then full-batch SGD with momentum
(lr 0.1, momentum 0.9, from the same kind of random start) until its objective is as close to the
theorem's optimal value as L-BFGS got (checked every 100 steps, at most ``--max-steps``), and
prints both times and their ratio. Absolute times are noisy on shared machines; compare ratios.
"""

from __future__ import annotations

import argparse
import time

import torch

from nclab.losses import make_loss
from nclab.models import UFM


def momentum_sgd(
    model: UFM, target: float, gap: float, max_steps: int, seed: int
) -> tuple[float, int, float]:
    """Seconds and steps for SGD(lr 0.1, momentum 0.9) to get within ``gap`` of ``target``."""
    gen = torch.Generator().manual_seed(seed)
    params = [p.requires_grad_(True) for p in model.initial_point(gen, "cpu", torch.float64, 0.1)]
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9)
    start = time.perf_counter()
    value = float("inf")
    for step in range(1, max_steps + 1):
        opt.zero_grad()
        loss = model.objective(*params)
        loss.backward()
        opt.step()
        if step % 100 == 0:
            with torch.no_grad():
                value = float(model.objective(*params))
            if value - target <= gap:
                return time.perf_counter() - start, step, value - target
    return time.perf_counter() - start, max_steps, value - target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-steps", type=int, default=100_000, help="SGD step limit")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(
        f"{'loss':<5} {'L-BFGS s':>9} {'iters':>6} {'grad norm':>10} {'gap':>9} "
        f"{'SGD s':>9} {'steps':>7} {'SGD gap':>9} {'ratio':>7}"
    )
    for name in ("mse", "ce"):
        model = UFM(make_loss(name), 10, 100, 64, 5e-4, 5e-4)
        target = model.theory().objective
        start = time.perf_counter()
        sol = model.solve(tol=1e-8, seed=args.seed)
        t_lbfgs = time.perf_counter() - start
        gap = max(sol.objective - target, 1e-15)
        t_sgd, steps, sgd_gap = momentum_sgd(model, target, gap, args.max_steps, args.seed)
        bound = ">=" if sgd_gap > gap else ""
        print(
            f"{name:<5} {t_lbfgs:>9.2f} {sol.iterations:>6} {sol.gradient_norm:>10.1e} "
            f"{gap:>9.1e} {t_sgd:>9.2f} {steps:>7} {sgd_gap:>9.1e} {bound}{t_sgd / t_lbfgs:>5.0f}x"
        )
    print(
        "gap: objective minus the theorem's optimal value; '>=': SGD stopped at its step limit "
        "before reaching L-BFGS's gap, so the ratio is a lower bound"
    )


if __name__ == "__main__":
    main()
