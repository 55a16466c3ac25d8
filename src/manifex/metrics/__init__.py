"""Embedding quality metrics for every method and baseline (local and global), plus invariance and
few-shot scores."""

from ._batch import batch_entropy, ilisi
from ._global import cpd, knc
from ._invariance import invariance_score
from ._oneshot import holdout_classes, holdout_one_shot, one_shot_accuracy
from ._quality import (
    cluster_scores,
    clustering_accuracy,
    evaluate_embedding,
    knn_accuracy,
    linear_accuracy,
    matched_confusion,
    trustworthiness,
)

__all__ = [
    "batch_entropy",
    "cluster_scores",
    "clustering_accuracy",
    "cpd",
    "evaluate_embedding",
    "holdout_classes",
    "holdout_one_shot",
    "ilisi",
    "invariance_score",
    "knc",
    "knn_accuracy",
    "linear_accuracy",
    "matched_confusion",
    "one_shot_accuracy",
    "trustworthiness",
]
