"""Mixup of cached layer statistics (`--mixup_alpha`): the loss, where it applies, and its argument checks."""

import pytest
import torch

import nser.training
import run_nser
from nser.arguments import NserTrainingArguments
from nser.inner_cv import parse_settings
from nser.training import NserTrainer, mix_batch
from test_run_nser import arguments, assets  # noqa: F401 (the module-scoped fixture)
from tiny_models import random_features, tiny_model


def training_arguments(tmp_path, **kwargs):
    return NserTrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True, **kwargs)


def layer_stats(batch=6, seed=0):
    """Random (batch, encoder layers + 1, mean/std, d_model) statistics of the tiny model."""
    return torch.randn(batch, 3, 2, 16, generator=torch.Generator().manual_seed(seed))


def test_training_loss_is_the_mixed_cross_entropy_of_mixed_statistics(tmp_path):
    model = tiny_model(use_decoder=False, classifier_dropout=0.0).train()
    trainer = NserTrainer(model=model, args=training_arguments(tmp_path, mixup_alpha=0.4, label_smoothing_factor=0.1))
    stats, labels = layer_stats(), torch.tensor([0, 1, 2, 3, 0, 1])
    torch.manual_seed(7)
    loss = trainer.compute_loss(model, {"encoder_layer_stats": stats, "labels": labels.clone()})

    torch.manual_seed(7)  # the same draw of the mixing weight and partner order
    lam = float(torch.distributions.Beta(0.4, 0.4).sample())
    perm = torch.randperm(6)
    assert 0 < lam < 1 and perm.tolist() != list(range(6))
    logits = model(encoder_layer_stats=lam * stats + (1 - lam) * stats[perm]).logits
    expected = (lam * torch.nn.functional.cross_entropy(logits, labels, label_smoothing=0.1)
                + (1 - lam) * torch.nn.functional.cross_entropy(logits, labels[perm], label_smoothing=0.1))
    torch.testing.assert_close(loss, expected)


def test_evaluation_loss_is_not_mixed(tmp_path):
    model = tiny_model(use_decoder=False).eval()
    trainer = NserTrainer(model=model, args=training_arguments(tmp_path, mixup_alpha=1.0))
    stats, labels = layer_stats(), torch.tensor([0, 1, 2, 3, 0, 1])
    loss = trainer.compute_loss(model, {"encoder_layer_stats": stats, "labels": labels.clone()})
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(model(encoder_layer_stats=stats).logits, labels))


def test_mixing_keeps_every_statistic_between_its_two_sources():
    stats = layer_stats()
    torch.manual_seed(0)
    mixed, targets = mix_batch({"encoder_layer_stats": stats}, torch.arange(6), alpha=0.5)
    (lam, first), (rest, second) = targets
    assert lam + rest == pytest.approx(1.0) and first.tolist() == list(range(6))
    torch.testing.assert_close(mixed["encoder_layer_stats"], lam * stats + rest * stats[second])


@pytest.mark.parametrize("inputs, message", [
    ({"input_features": random_features(40, batch=2)}, r"--mixup_alpha mixes cached per-layer statistics .*'input_features'"),
    ({"encoder_layer_stats": layer_stats(2), "speaker_ids": torch.tensor([0, 1])}, "speaker-adversarial"),
])
def test_mixing_refuses_batches_it_cannot_mix(inputs, message):
    with pytest.raises(ValueError, match=message):
        mix_batch(inputs, torch.tensor([0, 1]), alpha=0.5)


def test_negative_alpha_is_refused(tmp_path):
    with pytest.raises(ValueError, match="--mixup_alpha must be >= 0"):
        training_arguments(tmp_path, mixup_alpha=-0.1)


def test_mixup_is_a_training_setting_of_variants_and_inner_cv_candidates():
    assert parse_settings("use_decoder=false:mixup_alpha=0.5,weight_decay=0.05", "--variant").training_overrides == (
        ("mixup_alpha", 0.5), ("weight_decay", 0.05))


def test_run_trains_with_mixup_on_cached_statistics(assets, tmp_path, monkeypatch):  # noqa: F811
    mixed, real = [], nser.training.mix_batch

    def counted(inputs, labels, alpha):
        mixed.append((alpha, sorted(inputs)))
        return real(inputs, labels, alpha)

    monkeypatch.setattr(nser.training, "mix_batch", counted)
    result = run_nser.main(arguments(assets, tmp_path / "out", "--mixup_alpha", "0.5", "--num_train_epochs", "1",
                                     "--test_snrs", "0", "--test_noise_types", "white"))
    assert len(result["rows"]) == 2
    assert len(mixed) == result["trainer"].state.global_step  # every training batch, no evaluation batch
    assert all(entry == (0.5, ["encoder_layer_stats"]) for entry in mixed)


def test_run_without_a_cache_refuses_mixup_before_extracting(assets, tmp_path):  # noqa: F811
    with pytest.raises(ValueError, match="--mixup_alpha mixes cached pooled statistics"):
        run_nser.main(arguments(assets, tmp_path / "out", "--mixup_alpha", "0.5", "--cache_features", "false"))
