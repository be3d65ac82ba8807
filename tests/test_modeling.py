"""Unit tests of WhisperForNoisyEmotionClassification on tiny random Whisper configs (seconds on CPU)."""

import pytest
import torch
from transformers import WhisperConfig, WhisperModel

from configuration_nser import FUSION_MODES, NserConfig
from modeling_nser import NserLayerStates, WhisperForNoisyEmotionClassification
from tiny_models import LABELS, random_features, tiny_model

TOLERANCE = 1e-5


def padded_batch(clips):
    """Right-pad (1, mel, frames) clips into one batch with a frame mask, as the collator does."""
    longest = max(c.shape[-1] for c in clips)
    features = torch.zeros(len(clips), 80, longest)
    mask = torch.zeros(len(clips), longest, dtype=torch.long)
    for i, clip in enumerate(clips):
        features[i, :, : clip.shape[-1]] = clip[0]
        mask[i, : clip.shape[-1]] = 1
    return features, mask


@pytest.mark.parametrize("use_decoder", [False, True])
@pytest.mark.parametrize("fusion", FUSION_MODES)
def test_fusion_modes_shapes_and_gradients_reach_only_trainable_part(fusion, use_decoder):
    model = tiny_model(encoder_fusion=fusion, decoder_fusion=fusion, use_decoder=use_decoder, encoder_layer_index=1)
    model.train()
    features, mask = padded_batch([random_features(57), random_features(90, seed=1)])
    out = model(features, attention_mask=mask, labels=torch.tensor([0, 3]))
    assert out.logits.shape == (2, len(LABELS))
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    out.loss.backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    head = [p for n, p in model.named_parameters() if n.startswith(("embedding", "classifier"))]
    assert head and all(p.grad is not None and p.grad.abs().sum() > 0 for p in head)
    if fusion in ("weighted_sum", "layer_adapter"):
        assert model.encoder_fusion.layer_logits.grad is not None
    weights = model.layer_weights()
    assert set(weights) == ({"encoder", "decoder"} if use_decoder else {"encoder"})
    assert weights["encoder"].shape == (3,) and torch.isclose(weights["encoder"].sum(), torch.tensor(1.0))
    assert (out.hypothesis_ids is not None) == use_decoder


def test_single_layer_fusion_uses_the_chosen_layer():
    model = tiny_model(encoder_fusion="single", encoder_layer_index=1, use_decoder=False)
    assert model.layer_weights()["encoder"].tolist() == [0.0, 1.0, 0.0]


@pytest.mark.parametrize(
    "options", [{"use_decoder": False}, {"use_decoder": True}, {"use_decoder": True, "pad_to_30s": True},
                {"use_decoder": True, "decoder_input": "prompt"}, {"use_decoder": False, "pooling": "mean_std"}]
)
def test_padding_in_a_batch_never_changes_a_clips_logits(options):
    model = tiny_model(**options)
    short, long = random_features(57, seed=3), random_features(143, seed=4)
    with torch.no_grad():
        alone = model(short)
        features, mask = padded_batch([short, long])
        batched = model(features, attention_mask=mask)
    torch.testing.assert_close(batched.logits[0], alone.logits[0], atol=TOLERANCE, rtol=0)
    if model.config.use_decoder:
        n = alone.hypothesis_ids.shape[1]
        assert torch.equal(batched.hypothesis_ids[0, :n], alone.hypothesis_ids[0])


def test_feature_extractor_sample_mask_is_accepted_like_the_frame_mask():
    model = tiny_model(use_decoder=False)
    features, mask = padded_batch([random_features(57), random_features(143, seed=1)])
    with torch.no_grad():
        by_frames = model(features, attention_mask=mask).logits
        by_samples = model(features, attention_mask=mask.repeat_interleave(160, dim=1)).logits
    assert torch.equal(by_frames, by_samples)


def test_real_length_encoder_on_a_full_window_reproduces_transformers_hidden_states():
    model = tiny_model(use_decoder=False)
    features = random_features(model.config.max_frames, seed=5)
    reference = WhisperModel(model.config.backbone_config).eval()
    reference.encoder.load_state_dict(model.backbone.model.encoder.state_dict())
    with torch.no_grad():
        expected = reference.encoder(features, output_hidden_states=True).hidden_states
        states = model.extract_layer_states(features).encoder_layer_states
    assert states.shape[1] == len(expected) == model.config.num_encoder_states
    for layer, hidden in enumerate(expected):
        torch.testing.assert_close(states[:, layer], hidden, atol=TOLERANCE, rtol=0)


def test_precomputed_layer_states_give_the_same_logits_as_the_full_forward():
    model = tiny_model()
    features, mask = padded_batch([random_features(57), random_features(90, seed=1)])
    with torch.no_grad():
        full = model(features, attention_mask=mask)
        states = model.extract_layer_states(features, mask)
        cached = model(**{k: v for k, v in states.items() if k != "hypothesis_ids"})
        redecoded = model(features, attention_mask=mask, decoder_input_ids=states.hypothesis_ids,
                          decoder_attention_mask=states.decoder_layer_mask)
    assert isinstance(states, NserLayerStates)
    assert torch.equal(full.logits, cached.logits)
    torch.testing.assert_close(redecoded.logits, full.logits, atol=TOLERANCE, rtol=0)


def test_hypothesis_is_capped_by_clip_duration():
    model = tiny_model(hypothesis_tokens_per_second=10.0, max_hypothesis_tokens=6)
    with torch.no_grad():
        states = model.extract_layer_states(random_features(25))  # 0.25 s -> ceil(2.5) = 3 tokens at most
    prompt_length = 4
    assert states.decoder_layer_mask[0].sum() <= prompt_length + 3
    assert states.hypothesis_ids[0, :prompt_length].tolist() == [90, 92, 94, 96]


def test_language_is_detected_when_not_configured():
    model = tiny_model(asr_language=None)
    with torch.no_grad():
        ids = model.extract_layer_states(random_features(40)).hypothesis_ids
    assert ids[0, 1].item() in (92, 93)


def test_unfrozen_backbone_trains_and_freeze_is_the_default():
    model = tiny_model(use_decoder=False, freeze_backbone=False).train()
    model(random_features(40), labels=torch.tensor([1])).loss.backward()
    assert model.backbone.model.encoder.conv1.weight.grad is not None
    assert not any(p.requires_grad for p in tiny_model().backbone.parameters())


def test_longer_than_window_is_truncated_with_a_warning(caplog):
    model = tiny_model(use_decoder=False)
    window = model.config.max_frames
    long = torch.cat([random_features(window, seed=6), random_features(50, seed=7)], dim=-1)
    with torch.no_grad(), caplog.at_level("WARNING"):
        truncated = model(long).logits
        reference = model(long[:, :, :window]).logits
    assert torch.equal(truncated, reference)
    assert "truncated" in caplog.text


@pytest.mark.parametrize(
    "features, mask, message",
    [
        (torch.full((1, 80, 30), float("nan")), None, "NaN"),
        (torch.zeros(1, 80, 30), torch.zeros(1, 30), "empty"),
        (torch.zeros(2, 80, 30), torch.ones(2, 7), "attention_mask"),
        (torch.zeros(1, 2, 80, 30), None, "mel bins"),
        (torch.zeros(1, 40, 30), None, "mel bins"),
    ],
    ids=["nan", "empty", "bad-mask", "stereo-4d", "wrong-mel-bins"],
)
def test_bad_input_gets_a_clear_error(features, mask, message):
    with pytest.raises(ValueError, match=message):
        tiny_model(use_decoder=False)(features, attention_mask=mask)


def test_missing_inputs_and_missing_decoder_states_are_reported():
    model = tiny_model()
    with pytest.raises(ValueError, match="input_features"):
        model()
    states = tiny_model(use_decoder=False).extract_layer_states(random_features(20))
    with pytest.raises(ValueError, match="decoder_layer_states"):
        model(encoder_layer_states=states.encoder_layer_states, encoder_layer_mask=states.encoder_layer_mask)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"encoder_fusion": "concat"}, "encoder_fusion"),
        ({"decoder_fusion": "sum"}, "decoder_fusion"),
        ({"pooling": "max"}, "pooling"),
        ({"decoder_input": "text"}, "decoder_input"),
        ({"encoder_layer_index": 9}, "encoder_layer_index"),
        ({"adapter_dim": 0}, "adapter_dim"),
        ({"hypothesis_tokens_per_second": 0}, "hypothesis_tokens_per_second"),
        ({"classifier_dropout": 1.5}, "classifier_dropout"),
        ({"feature_dropout": -0.1}, "feature_dropout"),
        ({"asr_window_seconds": 0}, "asr_window_seconds"),
        ({"asr_dtype": "float16"}, "asr_dtype"),
        ({"asr_cast_weights": True}, "asr_cast_weights"),
        ({"linear_readout": True, "pool_before_fusion": False, "standardize_features": False}, "linear_readout"),
    ],
)
def test_config_rejects_invalid_options(options, message):
    with pytest.raises(ValueError, match=message):
        NserConfig(backbone_config=WhisperConfig(encoder_layers=2, decoder_layers=2).to_dict(), **options)


@pytest.mark.parametrize("pool_before_fusion", [True, False])
def test_feature_dropout_acts_in_training_only(pool_before_fusion):
    model = tiny_model(use_decoder=False, classifier_dropout=0.0, feature_dropout=0.5, pool_before_fusion=pool_before_fusion,
                       standardize_features=pool_before_fusion, pooling="mean_std" if pool_before_fusion else "mean")
    features = random_features(20, batch=2)
    model.eval()
    torch.testing.assert_close(model(features).logits, model(features).logits)
    model.train()
    assert not torch.allclose(model(features).logits, model(features).logits)
    without = tiny_model(use_decoder=False, classifier_dropout=0.0, pool_before_fusion=pool_before_fusion,
                         standardize_features=pool_before_fusion, pooling="mean_std" if pool_before_fusion else "mean").train()
    torch.testing.assert_close(without(features).logits, without(features).logits)  # the only randomness was it


def test_unknown_asr_language_is_reported():
    with pytest.raises(ValueError, match="asr_language"):
        tiny_model(asr_language="xx")(random_features(20))


def test_config_round_trips_with_backbone_and_labels(tmp_path):
    model = tiny_model(encoder_fusion="weighted_sum", pooling="mean_std")
    model.config.save_pretrained(tmp_path)
    config = NserConfig.from_pretrained(tmp_path)
    assert isinstance(config.backbone_config, WhisperConfig) and config.backbone_config.d_model == 16
    assert (config.encoder_fusion, config.pooling, config.id2label[0]) == ("weighted_sum", "mean_std", LABELS[0])
    assert config.auto_map["AutoModelForAudioClassification"] == "modeling_nser.WhisperForNoisyEmotionClassification"


def test_from_whisper_builds_on_a_local_checkpoint(tmp_path):
    whisper = tiny_model().backbone
    whisper.save_pretrained(tmp_path / "whisper")
    model = WhisperForNoisyEmotionClassification.from_whisper(tmp_path / "whisper", ["a", "b"], use_decoder=False)
    assert model.config.id2label == {0: "a", 1: "b"}
    assert torch.equal(model.backbone.model.encoder.conv1.weight, whisper.model.encoder.conv1.weight)
    with pytest.raises(ValueError, match="label_names"):
        WhisperForNoisyEmotionClassification.from_whisper(tmp_path / "whisper", ["a", "a"])


# ------------------------------------------------------------------ pooling before fusion (the default head)
@pytest.mark.parametrize("pooling", ["mean", "mean_std"])
@pytest.mark.parametrize("use_decoder", [False, True])
def test_cached_layer_statistics_give_the_logits_of_the_frames(pooling, use_decoder):
    model = tiny_model(pool_before_fusion=True, pooling=pooling, use_decoder=use_decoder)
    features, mask = padded_batch([random_features(57, seed=3), random_features(90, seed=4)])
    with torch.no_grad():
        states = model.extract_layer_states(features, mask)
        stats = model.with_layer_statistics(states)
        from_frames = model(encoder_layer_states=states.encoder_layer_states, encoder_layer_mask=states.encoder_layer_mask,
                            decoder_layer_states=states.decoder_layer_states, decoder_layer_mask=states.decoder_layer_mask).logits
        from_stats = model(encoder_layer_stats=stats.encoder_layer_stats, decoder_layer_stats=stats.decoder_layer_stats).logits
    assert stats.encoder_layer_stats.shape == (2, 3, 2, 16)
    real = states.encoder_layer_states[1, :, : int(states.encoder_layer_mask[1].sum())]  # (L, T, D) of clip 1
    torch.testing.assert_close(stats.encoder_layer_stats[1, :, 0], real.mean(dim=1))
    torch.testing.assert_close(stats.encoder_layer_stats[1, :, 1], real.std(dim=1, unbiased=False).clamp(min=1e-3))
    torch.testing.assert_close(from_stats, from_frames, atol=1e-6, rtol=0)


def test_last_layer_mean_pooled_first_equals_fusing_then_pooling():
    """(2) 'last layer, mean-pooled' computed from layer statistics is the frame-level system exactly."""
    frame_level = tiny_model(encoder_fusion="last", pooling="mean", pool_before_fusion=False, standardize_features=False,
                             use_decoder=False)
    pooled_first = tiny_model(encoder_fusion="last", pooling="mean", pool_before_fusion=True, standardize_features=False,
                              use_decoder=False)
    pooled_first.load_state_dict(frame_level.state_dict())
    features, mask = padded_batch([random_features(57, seed=3), random_features(90, seed=4)])
    with torch.no_grad():
        torch.testing.assert_close(pooled_first(features, mask).logits, frame_level(features, mask).logits, atol=1e-6, rtol=0)


def test_feature_statistics_standardise_and_travel_with_the_weights(tmp_path):
    model = tiny_model(use_decoder=True)  # defaults: pooled statistics, standardised
    assert model.config.pool_before_fusion and model.config.standardize_features
    mean, std = torch.randn(3, 32), torch.rand(3, 32) + 0.5
    model.set_feature_statistics("encoder", mean, std)
    stats = torch.randn(2, 3, 2, 16)
    vectors = model.pooled_layer_vectors("encoder", NserLayerStates(encoder_layer_stats=stats))
    torch.testing.assert_close(vectors, (stats.flatten(2) - mean) / std)
    model.save_pretrained(tmp_path)
    loaded = WhisperForNoisyEmotionClassification.from_pretrained(tmp_path).eval()
    assert torch.equal(loaded.standardizers["encoder"].mean, mean) and torch.equal(loaded.standardizers["encoder"].std, std)
    features = random_features(57, seed=3)
    with torch.no_grad():
        torch.testing.assert_close(loaded(features).logits, model(features).logits, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match=r"encoder statistics must be \(3, 32\)"):
        model.set_feature_statistics("encoder", torch.zeros(3, 16), torch.ones(3, 16))
    with pytest.raises(ValueError, match="standardize_features=True with that group"):
        tiny_model(standardize_features=False).set_feature_statistics("encoder", mean, std)


def test_standardisation_without_pooling_first_is_rejected():
    with pytest.raises(ValueError, match="needs pool_before_fusion=True"):
        NserConfig(pool_before_fusion=False, standardize_features=True)
    model = tiny_model(pool_before_fusion=False, standardize_features=False, use_decoder=False)
    with pytest.raises(ValueError, match="needs encoder_layer_states, not statistics"):
        model(encoder_layer_stats=torch.zeros(1, 3, 2, 16))


@pytest.mark.parametrize("use_decoder", [False, True])
def test_linear_readout_adds_a_logistic_regression_on_every_standardised_layer_vector(use_decoder, tmp_path):
    """With the adapter path silenced, the logits are exactly a linear map of all groups' standardised vectors."""
    model = tiny_model(use_decoder=use_decoder, linear_readout=True, num_heads=2)
    layers = 3 + (3 if use_decoder else 0)
    assert model.linear_readout.in_features == layers * 2 * 16 and model.extra_heads[0].linear_readout is not None
    stats = NserLayerStates(encoder_layer_stats=torch.randn(2, 3, 2, 16),
                            decoder_layer_stats=torch.randn(2, 3, 2, 16) if use_decoder else None)
    with torch.no_grad():
        for head in model.heads:
            head.classifier.weight.zero_()
            head.classifier.bias.zero_()
        groups = ["encoder", "decoder"] if use_decoder else ["encoder"]
        vectors = torch.cat([model.pooled_layer_vectors(group, stats).flatten(1) for group in groups], dim=-1)
        per_head = torch.stack([head.linear_readout(vectors) for head in model.heads])
        torch.testing.assert_close(model.head_logits(stats), per_head)
    model.train()
    model.head_logits(stats).sum().backward()
    assert model.linear_readout.weight.grad.abs().sum() > 0
    model.save_pretrained(tmp_path)
    loaded = WhisperForNoisyEmotionClassification.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded.head_logits(stats), model.eval().head_logits(stats))
    assert tiny_model(use_decoder=use_decoder).linear_readout is None  # off by default


def test_speaker_adversarial_loss_reverses_the_embeddings_gradient_and_never_changes_the_logits(tmp_path):
    """The speaker classifiers learn the speakers (ordinary gradient) while the embedding receives the speaker loss's
    gradient times -weight; logits, eval mode and a saved model are exactly as without speaker ids."""
    weight = 0.5
    model = tiny_model(use_decoder=False, speaker_adversarial_weight=weight, num_speakers=3, num_heads=2,
                       classifier_dropout=0.0).train()
    stats = NserLayerStates(encoder_layer_stats=torch.randn(4, 3, 2, 16))
    speakers, labels = torch.tensor([0, 1, 2, 1]), torch.tensor([0, 1, 2, 3])
    out = model(encoder_layer_stats=stats.encoder_layer_stats, labels=labels, speaker_ids=speakers)
    plain = model(encoder_layer_stats=stats.encoder_layer_stats, labels=labels)
    torch.testing.assert_close(out.logits, plain.logits)
    assert plain.speaker_loss is None and torch.isfinite(out.speaker_loss)
    torch.testing.assert_close(out.loss, plain.loss + out.speaker_loss)

    # The embedding's gradient from the speaker loss alone is -weight times what the unreversed loss would give.
    _, embeddings = model._head_outputs(stats)
    reversed_grad = torch.autograd.grad(model.speaker_adversarial_loss(embeddings, speakers), embeddings[0])[0]
    direct = torch.stack([torch.nn.functional.cross_entropy(head.speaker_classifier(e), speakers)
                          for head, e in zip(model.heads, embeddings)]).mean()
    direct_grad = torch.autograd.grad(direct, embeddings[0])[0]
    assert direct_grad.abs().sum() > 0
    torch.testing.assert_close(reversed_grad, -weight * direct_grad)

    model.zero_grad()
    out.speaker_loss.backward()
    for head in model.heads:  # both the speaker classifier and, through the reversal, the emotion embedding learn
        assert head.speaker_classifier[0].weight.grad.abs().sum() > 0
        assert head.embedding[0].weight.grad.abs().sum() > 0
    assert model.classifier.weight.grad is None or model.classifier.weight.grad.abs().sum() == 0

    assert model.eval()(encoder_layer_stats=stats.encoder_layer_stats, speaker_ids=speakers).speaker_loss is None
    model.save_pretrained(tmp_path)
    loaded = WhisperForNoisyEmotionClassification.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(encoder_layer_stats=stats.encoder_layer_stats).logits,
                                   model(encoder_layer_stats=stats.encoder_layer_stats).logits)
    with pytest.raises(ValueError, match=r"speaker_ids must be in \[0, num_speakers=3\)"):
        model.train()(encoder_layer_stats=stats.encoder_layer_stats, speaker_ids=torch.tensor([0, 1, 2, 3]))
    assert tiny_model(use_decoder=False).speaker_classifier is None  # off by default


@pytest.mark.parametrize("options, message", [
    ({"speaker_adversarial_weight": -0.1}, "must be >= 0"),
    ({"speaker_adversarial_weight": 0.3, "num_speakers": -1}, "num_speakers must be >= 0"),
])
def test_speaker_adversarial_settings_are_validated(options, message):
    with pytest.raises(ValueError, match=message):
        NserConfig(**options)


@pytest.mark.parametrize("num_speakers", [0, 1])
def test_a_speaker_adversarial_model_needs_its_training_speakers(num_speakers):
    """A config may leave num_speakers to training (0); a model cannot be built without two speakers to tell apart."""
    NserConfig(speaker_adversarial_weight=0.3, num_speakers=num_speakers)
    with pytest.raises(ValueError, match="needs num_speakers >= 2 training speakers"):
        tiny_model(use_decoder=False, speaker_adversarial_weight=0.3, num_speakers=num_speakers)
