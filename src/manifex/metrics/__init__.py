"""Embedding quality metrics (DESIGN §5): one protocol for every method and baseline."""

from ._quality import (
    cluster_scores,
    clustering_accuracy,
    evaluate_embedding,
    knn_accuracy,
    linear_accuracy,
    trustworthiness,
)

__all__ = [
    "cluster_scores",
    "clustering_accuracy",
    "evaluate_embedding",
    "knn_accuracy",
    "linear_accuracy",
    "trustworthiness",
]
