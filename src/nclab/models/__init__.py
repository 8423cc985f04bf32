"""Unconstrained-features models: exact objectives, closed-form predictions, numerical solvers."""

from nclab.models.theory import Prediction
from nclab.models.ufm import UFM, UFMSolution, class_labels

__all__ = ["UFM", "Prediction", "UFMSolution", "class_labels"]
