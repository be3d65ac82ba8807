"""Speech emotion recognition metrics, computed with scikit-learn.

`evaluate.load("accuracy")` downloads a script from the Hub and fails offline, so the metrics are
computed here directly. UA (unweighted accuracy, the mean of per-class recalls) is the headline SER
metric because emotion corpora are imbalanced; WA (plain accuracy) is reported beside it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, recall_score

if TYPE_CHECKING:
    from transformers import EvalPrediction

# The metrics `Trainer` can log: everything in a result row that is a single number.
SCALAR_METRICS = ("ua", "wa", "macro_f1", "weighted_f1")


def _as_label_ids(values, name: str, num_labels: int) -> np.ndarray:
    """Check that `values` are integer label ids in range, so a wrong head size fails loudly."""
    ids = np.asarray(values)
    if ids.ndim != 1 or ids.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence of label ids, got shape {ids.shape}")
    if not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"{name} must hold integer label ids, got dtype {ids.dtype}")
    out_of_range = ids[(ids < 0) | (ids >= num_labels)]
    if out_of_range.size:
        raise ValueError(
            f"{name} has ids outside [0, {num_labels}) for {num_labels} label names: "
            f"{sorted(set(out_of_range.tolist()))}"
        )
    return ids


def classification_metrics(labels, predictions, label_names: Sequence[str]) -> dict:
    """UA, WA, macro/weighted F1 and the confusion matrix for one evaluation condition.

    UA and macro-F1 average over the classes present in `labels`, so a fold that lacks a class is
    not scored as 0 on it; predicting that class is still counted as an error. The confusion matrix
    covers every label id (rows true, columns predicted) so matrices from different folds can be summed.
    """
    num_labels = len(label_names)
    labels = _as_label_ids(labels, "labels", num_labels)
    predictions = _as_label_ids(predictions, "predictions", num_labels)
    if labels.shape != predictions.shape:
        raise ValueError(f"labels and predictions differ in length: {labels.size} vs {predictions.size}")
    present = np.unique(labels)
    return {
        "ua": float(recall_score(labels, predictions, labels=present, average="macro", zero_division=0)),
        "wa": float(accuracy_score(labels, predictions)),
        "macro_f1": float(f1_score(labels, predictions, labels=present, average="macro", zero_division=0)),
        "weighted_f1": float(
            f1_score(labels, predictions, labels=present, average="weighted", zero_division=0)
        ),
        "confusion_matrix": confusion_matrix(labels, predictions, labels=range(num_labels)).tolist(),
        "labels": list(label_names),
    }


def make_compute_metrics(label_names: Sequence[str]) -> Callable[[EvalPrediction], dict[str, float]]:
    """Build `Trainer(compute_metrics=...)`: scalars only, because `Trainer` logs numbers, not matrices."""
    label_names = list(label_names)

    def compute_metrics(eval_prediction: EvalPrediction) -> dict[str, float]:
        logits = eval_prediction.predictions
        if isinstance(logits, tuple):  # models may return extra outputs after the logits
            logits = logits[0]
        predictions = np.argmax(logits, axis=-1)
        metrics = classification_metrics(eval_prediction.label_ids, predictions, label_names)
        return {name: metrics[name] for name in SCALAR_METRICS}

    return compute_metrics
