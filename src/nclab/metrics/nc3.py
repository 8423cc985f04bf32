"""NC3, self-duality of the classifier and the class means.

* duality = ‖W/‖W‖_F - M̃/‖M̃‖_F‖²_F (Papyan, Han & Donoho 2020, Fig. 5; squared Frobenius norm);
* W–H relation = ‖W M̃ᵀ/‖W M̃ᵀ‖_F - (I - 11ᵀ/K)/√(K-1)‖_F (Zhu et al., NeurIPS 2021, NC3 metric).

W is K x d with rows w_c; M̃ is K x d with rows μ_c - μ_G. Both vanish at exact collapse with
W ∝ M̃ forming a simplex ETF.
"""

from __future__ import annotations

import torch

from nclab.geometry import etf_gram_target
from nclab.metrics.nc2 import unit_scaled

__all__ = ["duality", "wh_etf_distance"]


def duality(weight: torch.Tensor, centred_means: torch.Tensor) -> float:
    """‖W/‖W‖_F - M̃/‖M̃‖_F‖²_F, in [0, 4]."""
    weight, centred_means = unit_scaled(weight), unit_scaled(centred_means)
    w = weight / torch.linalg.matrix_norm(weight)
    m = centred_means / torch.linalg.matrix_norm(centred_means)
    return float(torch.linalg.matrix_norm(w - m) ** 2)


def wh_etf_distance(weight: torch.Tensor, centred_means: torch.Tensor) -> float:
    """‖W M̃ᵀ/‖W M̃ᵀ‖_F - (I - 11ᵀ/K)/√(K-1)‖_F."""
    wh = unit_scaled(weight) @ unit_scaled(centred_means).T
    target = etf_gram_target(weight.shape[0], wh.dtype).to(wh.device)
    return float(torch.linalg.matrix_norm(wh / torch.linalg.matrix_norm(wh) - target))
