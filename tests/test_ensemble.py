"""Saved test logits and seed ensembles (nser.ensemble)."""

import numpy as np
import pytest

from nser.ensemble import ensemble_rows, load_test_logits, save_test_logits
from nser.metrics import classification_metrics

LABELS = ["angry", "happy", "sad"]
TRUTH = np.array([0, 1, 2, 0, 1, 2])


def save_run(path, clean_logits, noisy_logits, labels=TRUTH):
    rows = [{"condition": "clean", "noise_type": "clean", "snr_db": None},
            {"condition": "babble_-5dB", "noise_type": "babble", "snr_db": -5.0}]
    return save_test_logits(path, rows, [clean_logits, noisy_logits], [labels, labels])


def one_hot(classes, scale=5.0):
    return scale * np.eye(len(LABELS))[classes]


def test_saved_logits_load_back_with_their_conditions(tmp_path):
    logits = np.random.default_rng(0).normal(size=(6, 3)).astype(np.float32)
    save_run(tmp_path / "run.npz", logits, -logits)
    clean, noisy = load_test_logits(tmp_path / "run.npz")
    assert (clean["condition"], clean["noise_type"], clean["snr_db"]) == ("clean", "clean", None)
    assert (noisy["condition"], noisy["noise_type"], noisy["snr_db"]) == ("babble_-5dB", "babble", -5.0)
    np.testing.assert_array_equal(clean["logits"], logits)
    np.testing.assert_array_equal(noisy["labels"], TRUTH)


def test_a_single_member_scores_like_the_model_itself(tmp_path):
    logits = np.random.default_rng(1).normal(size=(6, 3))
    path = save_run(tmp_path / "run.npz", logits, logits[::-1])
    clean, noisy = ensemble_rows([path], LABELS)
    assert clean["macro_f1"] == classification_metrics(TRUTH, logits.argmax(-1), LABELS)["macro_f1"]
    assert noisy["confusion_matrix"] == classification_metrics(TRUTH, logits[::-1].argmax(-1), LABELS)["confusion_matrix"]
    assert (clean["num_examples"], noisy["snr_db"], noisy["noise_type"]) == (6, -5.0, "babble")


def test_the_ensemble_averages_probabilities_not_votes(tmp_path):
    # Clip 0 (truth 0): two members lean weakly to class 1, one is sure of class 0; the mean probability picks 0,
    # a majority vote would pick 1.
    weak_wrong = one_hot([1, 1, 2, 0, 1, 2], scale=0.2)
    sure_right = one_hot([0, 1, 2, 0, 1, 2], scale=8.0)
    paths = [save_run(tmp_path / f"m{i}.npz", logits, logits) for i, logits in enumerate([weak_wrong, weak_wrong, sure_right])]
    clean, _ = ensemble_rows(paths, LABELS)
    assert clean["wa"] == 1.0
    votes = np.array([weak_wrong.argmax(-1), weak_wrong.argmax(-1), sure_right.argmax(-1)])
    assert np.apply_along_axis(lambda v: np.bincount(v).argmax(), 0, votes)[0] == 1


def test_members_must_have_predicted_the_same_clips(tmp_path):
    first = save_run(tmp_path / "a.npz", one_hot(TRUTH), one_hot(TRUTH))
    shuffled = save_run(tmp_path / "b.npz", one_hot(TRUTH), one_hot(TRUTH), labels=TRUTH[::-1])
    with pytest.raises(ValueError, match="other clips or another order"):
        ensemble_rows([first, shuffled], LABELS)
    with pytest.raises(FileNotFoundError, match="--save_test_logits true"):
        ensemble_rows([first, tmp_path / "missing.npz"], LABELS)
    with pytest.raises(ValueError, match="no member runs"):
        ensemble_rows([], LABELS)
