"""Neural-collapse metrics: in memory, streamed batch by batch, or collected from a network.

Conventions (N samples, d features, K classes): features H (N x d, rows h_i), labels y_i, class
means μ_c, global mean μ_G, centred means M̃ (rows μ_c - μ_G), within- and between-class
covariances Σ_W and Σ_B, classifier W (K x d) and bias b. Every key of a report is described in
:data:`METRICS`; each formula is documented in the module that implements it (``nc1``, ``nc2``,
``nc3``, ``accumulators`` for NC4, ``decomposition`` for Han et al.'s MSE decomposition,
``noise`` for memorization, dilation and corruption bias under label noise).
"""

from nclab.metrics.accumulators import ClassMeans, ClassStatistics, CollapseAccumulator
from nclab.metrics.decomposition import MSEDecomposition, mse_decomposition
from nclab.metrics.hooks import collect, find_classifier
from nclab.metrics.measure import measure, measure_batches
from nclab.metrics.noise import NoiseAccumulator, NoiseReport, NoisyClassMeans, measure_noise
from nclab.metrics.options import MetricOptions
from nclab.metrics.report import METRICS, PER_CLASS, CollapseReport

__all__ = [
    "METRICS",
    "PER_CLASS",
    "ClassMeans",
    "ClassStatistics",
    "CollapseAccumulator",
    "CollapseReport",
    "MSEDecomposition",
    "MetricOptions",
    "NoiseAccumulator",
    "NoiseReport",
    "NoisyClassMeans",
    "collect",
    "find_classifier",
    "measure",
    "measure_batches",
    "measure_noise",
    "mse_decomposition",
]
