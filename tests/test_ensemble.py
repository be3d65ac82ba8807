"""Seed ensembles (nser.ensemble): scored from saved test logits, and merged into one model with several heads."""

import numpy as np
import pytest
import torch
from transformers import TrainingArguments, pipeline

from nser.ensemble import ensemble_rows, load_test_logits, merge_models, save_test_logits
from nser.ensemble import main as ensemble_main
from nser.metrics import classification_metrics
from nser.model_folder import finalize_model_folder
from nser.training import NserTrainer
from tiny_models import LABELS as MODEL_LABELS
from tiny_models import random_features, tiny_model

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


# ----------------------------------------------------------------------------- one model with several heads
def members(count=3, **config):
    """Models that differ only in their heads' seeds: the first one's backbone, the same feature statistics."""
    models = [tiny_model(seed=seed, use_decoder=False, **config) for seed in range(count)]
    for model in models[1:]:
        model.backbone.load_state_dict(models[0].backbone.state_dict())
    return models


def mean_probabilities(models, features):
    with torch.no_grad():
        return torch.stack([m(input_features=features).logits.softmax(-1) for m in models]).mean(0)


@pytest.mark.parametrize("config", [{}, {"linear_readout": True}, {"speaker_adversarial_weight": 0.3, "num_speakers": 3}])
def test_merged_model_scores_the_members_mean_probabilities(config):
    models = members(**config)
    merged = merge_models(models)
    for head, model in zip(merged.heads, models):  # every head module travels, the training-only ones included
        for name in ("linear_readout", "speaker_classifier"):
            source = getattr(model, name)
            assert (getattr(head, name) is None) == (source is None)
            if source is not None:
                torch.testing.assert_close(getattr(head, name).state_dict(), source.state_dict())
    assert merged.config.num_heads == 3 and len(merged.heads) == 3
    features = random_features(40, seed=3, batch=4)
    with torch.no_grad():
        output = merged(input_features=features)
    torch.testing.assert_close(output.logits.softmax(-1), mean_probabilities(models, features))
    assert output.head_logits.shape == (4, 3, len(MODEL_LABELS))
    torch.testing.assert_close(merged.layer_weights()["encoder"],
                               torch.stack([m.layer_weights()["encoder"] for m in models]).mean(0))


def test_several_heads_learn_on_their_own_losses():
    model = tiny_model(use_decoder=False, num_heads=2).train()
    features, labels = random_features(40, seed=1, batch=3), torch.tensor([0, 1, 2])
    torch.manual_seed(0)
    output = model(input_features=features, labels=labels)
    per_head = torch.stack([torch.nn.functional.cross_entropy(output.head_logits[:, k], labels) for k in range(2)])
    torch.testing.assert_close(output.loss, per_head.mean())
    single = tiny_model(use_decoder=False)
    with torch.no_grad():
        assert single(input_features=features).head_logits is None  # one head: the output is as it always was


def test_merged_folder_loads_in_the_pipeline(tmp_path):
    folders = []
    for index, model in enumerate(members(2)):  # saved as run_nser.py saves a model
        folders.append(str(tmp_path / f"seed-{index}"))
        model.save_pretrained(folders[-1])
        finalize_model_folder(folders[-1], model.build_feature_extractor())
    out = ensemble_main(["--members", *folders, "--output_dir", str(tmp_path / "merged")])
    audio = np.random.default_rng(0).normal(scale=0.1, size=8000).astype(np.float32)

    def scores(folder):
        classifier = pipeline("audio-classification", model=str(folder), trust_remote_code=True)
        return {p["label"]: p["score"] for p in classifier(audio, top_k=len(MODEL_LABELS))}

    expected = {name: np.mean([scores(folder)[name] for folder in folders]) for name in MODEL_LABELS}
    assert scores(out) == pytest.approx(expected, abs=1e-6)
    with pytest.raises(SystemExit, match="exists and is not empty"):  # never written over
        ensemble_main(["--members", *folders, "--output_dir", str(out)])


def test_members_that_are_not_seeds_of_one_model_are_refused():
    with pytest.raises(ValueError, match="at least two"):
        merge_models(members(1))
    first, other_backbone = tiny_model(seed=0, use_decoder=False), tiny_model(seed=1, use_decoder=False)
    with pytest.raises(ValueError, match="seed-1: backbone weights differ"):
        merge_models([first, other_backbone], ["seed-0", "seed-1"])
    first, wider = members(2)[0], tiny_model(seed=1, use_decoder=False, adapter_dim=16)
    wider.backbone.load_state_dict(first.backbone.state_dict())
    with pytest.raises(ValueError, match=r"member 1: config differs .* \['adapter_dim'\]"):
        merge_models([first, wider])
    first, other_data = members(2)
    other_data.set_feature_statistics("encoder", torch.ones_like(other_data.standardizers["encoder"].mean),
                                      torch.ones_like(other_data.standardizers["encoder"].std))
    with pytest.raises(ValueError, match="member 1: feature statistics differ"):
        merge_models([first, other_data])


def test_trainer_smooths_and_averages_each_heads_loss(tmp_path):
    model = tiny_model(use_decoder=False, num_heads=2, classifier_dropout=0.0)
    args = TrainingArguments(output_dir=str(tmp_path), label_smoothing_factor=0.1, report_to=[], use_cpu=True)
    trainer = NserTrainer(model=model, args=args)
    features, labels = random_features(40, seed=2, batch=3), torch.tensor([0, 1, 2])
    loss, output = trainer.compute_loss(model, {"input_features": features, "labels": labels}, return_outputs=True)
    expected = [torch.nn.functional.cross_entropy(output.head_logits[:, k], labels, label_smoothing=0.1) for k in range(2)]
    torch.testing.assert_close(loss, torch.stack(expected).mean())
