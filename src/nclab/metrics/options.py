"""Options shared by every neural-collapse metric (one definition, validated once)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from nclab.errors import InputTypeError

GlobalMean = Literal["sample", "class"]
WithinClass = Literal["pooled", "class_balanced"]

_GLOBAL_MEANS = ("sample", "class")
_WITHIN = ("pooled", "class_balanced")


@dataclass(frozen=True)
class MetricOptions:
    """How the class statistics are formed.

    Parameters
    ----------
    global_mean : ``"sample"`` (default) μ_G = Σ_i h_i / N; ``"class"`` μ_G = (1/K) Σ_c μ_c.
        They coincide for balanced classes.
    within_class : ``"pooled"`` (default) Σ_W = (1/N) Σ_i (h_i - μ_{y_i})(h_i - μ_{y_i})ᵀ;
        ``"class_balanced"`` Σ_W = (1/K) Σ_c (1/n_c) Σ_{i in c} (h_i - μ_c)(h_i - μ_c)ᵀ.
    center_weights : compare the classifier Gram W Wᵀ with the simplex ETF after centring the rows
        of W (Zhou et al. 2022); default False, uncentred as in Zhu et al. 2021.
    rank_rtol : singular values of M̃ below ``rank_rtol * s_max`` count as zero when forming
        Σ_B^†; default ``max(K, d) * eps(float64)`` (numpy's ``matrix_rank`` rule). The rank is
        also capped at K - 1, the rank of centred means in exact arithmetic.
    drop_empty_classes : a class in ``0..K-1`` with no sample is an error by default; with True
        it is removed (its classifier row too) and the metrics are those of the remaining classes.
    """

    global_mean: GlobalMean = "sample"
    within_class: WithinClass = "pooled"
    center_weights: bool = False
    rank_rtol: float | None = None
    drop_empty_classes: bool = False

    def __post_init__(self) -> None:
        if self.global_mean not in _GLOBAL_MEANS:
            raise ValueError(
                f"global_mean: expected one of {_GLOBAL_MEANS}, got {self.global_mean!r}"
            )
        if self.within_class not in _WITHIN:
            raise ValueError(f"within_class: expected one of {_WITHIN}, got {self.within_class!r}")
        if not isinstance(self.center_weights, bool):
            raise InputTypeError(f"center_weights: expected a bool, got {self.center_weights!r}")
        if not isinstance(self.drop_empty_classes, bool):
            raise InputTypeError(
                f"drop_empty_classes: expected a bool, got {self.drop_empty_classes!r}"
            )
        if self.rank_rtol is not None and (
            isinstance(self.rank_rtol, bool)
            or not isinstance(self.rank_rtol, (int, float))
            or not (0.0 <= self.rank_rtol < 1.0)
        ):
            raise ValueError(
                f"rank_rtol: expected None or a number in [0, 1), got {self.rank_rtol!r}"
            )

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> MetricOptions:
        """Build from keyword options, naming any option that does not exist."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise InputTypeError(
                f"unknown metric option(s) {unknown}; valid options: {sorted(known)}"
            )
        return cls(**kwargs)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
