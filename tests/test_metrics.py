import numpy as np
import pytest
from transformers import EvalPrediction

from nser.metrics import SCALAR_METRICS, classification_metrics, make_compute_metrics

LABEL_NAMES = ["angry", "happy", "neutral", "sad"]
# Imbalanced: 6 angry, 2 happy, 2 neutral, no sad. Neutral and sad are never predicted.
LABELS = [0, 0, 0, 0, 0, 0, 1, 1, 2, 2]
PREDICTIONS = [0, 0, 0, 0, 0, 0, 0, 1, 0, 0]


def test_hand_computed_example():
    metrics = classification_metrics(LABELS, PREDICTIONS, LABEL_NAMES)
    # Recalls: angry 6/6, happy 1/2, neutral 0/2 -> UA 0.5 (sad is absent, so not averaged);
    # WA 7/10 differs because the majority class is always right.
    assert metrics["ua"] == pytest.approx(0.5, abs=1e-12)
    assert metrics["wa"] == pytest.approx(0.7, abs=1e-12)
    # F1: angry 2*(2/3)*1/(2/3+1) = 0.8, happy 2*1*0.5/1.5 = 2/3, neutral 0 (zero_division=0).
    assert metrics["macro_f1"] == pytest.approx((0.8 + 2 / 3 + 0) / 3, abs=1e-12)
    assert metrics["weighted_f1"] == pytest.approx((6 * 0.8 + 2 * 2 / 3 + 2 * 0) / 10, abs=1e-12)
    assert metrics["confusion_matrix"] == [[6, 0, 0, 0], [1, 1, 0, 0], [2, 0, 0, 0], [0, 0, 0, 0]]
    assert metrics["labels"] == LABEL_NAMES


def test_predicting_an_absent_class_counts_as_an_error():
    metrics = classification_metrics([0, 1], [3, 1], LABEL_NAMES)
    assert metrics["ua"] == 0.5
    assert metrics["wa"] == 0.5
    assert metrics["confusion_matrix"] == [[0, 0, 0, 1], [0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]


def test_values_are_json_ready_python_types():
    metrics = classification_metrics(np.array(LABELS), np.array(PREDICTIONS), LABEL_NAMES)
    assert {type(metrics[name]) for name in SCALAR_METRICS} == {float}
    assert type(metrics["confusion_matrix"][0][0]) is int


def test_out_of_range_ids_are_rejected_with_the_offending_values():
    with pytest.raises(ValueError, match=r"predictions has ids outside \[0, 4\) for 4 label names: \[4, 7\]"):
        classification_metrics([0, 1, 2], [4, 7, 1], LABEL_NAMES)


def test_length_mismatch_is_rejected():
    with pytest.raises(ValueError, match="labels and predictions differ in length: 3 vs 2"):
        classification_metrics([0, 1, 2], [0, 1], LABEL_NAMES)


def test_compute_metrics_takes_trainer_eval_prediction_with_tuple_logits():
    one_hot_logits = np.eye(len(LABEL_NAMES), dtype=np.float32)[PREDICTIONS]
    extra_output = np.zeros((len(LABELS), 3, 5), dtype=np.float32)  # e.g. hidden states
    eval_prediction = EvalPrediction(predictions=(one_hot_logits, extra_output), label_ids=np.array(LABELS))

    logged = make_compute_metrics(LABEL_NAMES)(eval_prediction)

    expected = classification_metrics(LABELS, PREDICTIONS, LABEL_NAMES)
    assert logged == {name: expected[name] for name in SCALAR_METRICS}


def test_compute_metrics_takes_plain_logits():
    logits = np.array([[2.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.5, 3.0]])
    logged = make_compute_metrics(LABEL_NAMES)(EvalPrediction(predictions=logits, label_ids=np.array([0, 2])))
    assert logged == {"ua": 0.5, "wa": 0.5, "macro_f1": 0.5, "weighted_f1": 0.5}
