"""Shared generators of test data and an independent float64 numpy oracle for the metrics."""

from __future__ import annotations

import socket
from typing import Any

import numpy as np
import pytest


def gaussian_classes(
    rng: np.random.Generator,
    num_classes: int,
    per_class: int | list[int],
    dim: int,
    sigma: float = 0.5,
    spread: float = 3.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Random class centres (scaled by ``spread``) plus isotropic noise; labels shuffled."""
    counts = [per_class] * num_classes if isinstance(per_class, int) else list(per_class)
    centres = spread * rng.standard_normal((num_classes, dim))
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])
    rng.shuffle(labels)
    feats = centres[labels] + sigma * rng.standard_normal((labels.size, dim))
    return feats, labels


def oracle(
    h: np.ndarray,
    y: np.ndarray,
    w: np.ndarray | None = None,
    b: np.ndarray | None = None,
    global_mean: str = "sample",
    within: str = "pooled",
) -> dict[str, Any]:
    """The DESIGN.md definitions written the direct way (d x d matrices, numpy pinv)."""
    h = np.asarray(h, dtype=np.float64)
    k = int(y.max()) + 1
    n_c = np.bincount(y, minlength=k).astype(float)
    mu = np.stack([h[y == c].mean(0) for c in range(k)])
    mu_g = h.mean(0) if global_mean == "sample" else mu.mean(0)
    mt = mu - mu_g
    hc = h - mu[y]
    if within == "pooled":
        sw = hc.T @ hc / len(y)
    else:
        sw = sum(hc[y == c].T @ hc[y == c] / n_c[c] for c in range(k)) / k
    sb = mt.T @ mt / k
    sb_pinv = np.linalg.pinv(sb, rcond=1e-10, hermitian=True)
    out: dict[str, Any] = {
        "nc1": np.trace(sw @ sb_pinv) / k,
        "nc1_colab": np.trace(sw @ sb_pinv),
        "nc1_trace_ratio": np.trace(sw) / np.trace(sb),
    }
    var = np.array([np.mean(np.sum(hc[y == c] ** 2, 1)) for c in range(k)])
    pairs = [
        (var[a] + var[c]) / (2 * np.sum((mu[a] - mu[c]) ** 2))
        for a in range(k)
        for c in range(a + 1, k)
    ]
    out["cdnv"] = float(np.mean(pairs))

    def etf_dist(g: np.ndarray) -> float:
        t = (np.eye(k) - np.ones((k, k)) / k) / np.sqrt(k - 1)
        return float(np.linalg.norm(g / np.linalg.norm(g) - t))

    def of_dist(g: np.ndarray) -> float:
        return float(np.linalg.norm(g / np.linalg.norm(g) - np.eye(k) / np.sqrt(k)))

    def cos_stats(a: np.ndarray) -> tuple[float, float, float]:
        norms = np.linalg.norm(a, axis=1)
        u = a / norms[:, None]
        cos = u @ u.T
        off = cos[~np.eye(k, dtype=bool)]
        iu = np.triu_indices(k, 1)
        return (
            float(norms.std(ddof=1) / norms.mean()),
            float(np.mean(np.abs(off + 1 / (k - 1)))),
            float(cos[iu].std(ddof=1)) if k > 2 else 0.0,
        )

    out["nc2_equinorm_means"], out["nc2_equiangular_means"], out["nc2_cos_std_means"] = cos_stats(
        mt
    )
    out["nc2_etf_means"] = etf_dist(mt @ mt.T)
    out["nc2_of_means"] = of_dist(mu @ mu.T)
    ncc = np.argmin(((h[:, None, :] - mu[None]) ** 2).sum(-1), axis=1)
    out["ncc_accuracy"] = float(np.mean(ncc == y))
    if w is not None:
        bb = np.zeros(k) if b is None else b
        out["nc2_equinorm_weights"], out["nc2_equiangular_weights"], out["nc2_cos_std_weights"] = (
            cos_stats(w)
        )
        out["nc2_etf_weights"] = etf_dist(w @ w.T)
        out["nc2_of_weights"] = of_dist(w @ w.T)
        out["nc3_duality"] = float(
            np.linalg.norm(w / np.linalg.norm(w) - mt / np.linalg.norm(mt)) ** 2
        )
        out["nc3_wh_etf"] = etf_dist(w @ mt.T)
        pred = np.argmax(h @ w.T + bb, axis=1)
        out["nc4_ncc_mismatch"] = float(np.mean(pred != ncc))
        out["classifier_accuracy"] = float(np.mean(pred == y))
        out["bias_relation"] = float(np.linalg.norm(w @ mu_g + bb))
    return out


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


def free_port() -> int:
    """A free TCP port on the loopback interface, for a torch.distributed rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
