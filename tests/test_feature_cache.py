"""The backbone-state cache: exact states, computed once, recomputed when the backbone or the audio changes."""

from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset

from modeling_nser import NserLayerStates, WhisperForNoisyEmotionClassification
from nser.feature_cache import backbone_fingerprint, cache_layer_states
from nser.features import PaddingCollator
from nser.speaker_norm import enrolment_rows, normalize_per_speaker
from nser.training import fit_feature_statistics
from tiny_models import FRAME_LEVEL, random_features, tiny_model


def feature_dataset(seed=0, lengths=(30, 57, 41)):
    rows = {"input_features": [random_features(n, seed=seed + i)[0].numpy() for i, n in enumerate(lengths)],
            "labels": [i % 3 for i in range(len(lengths))]}
    return Dataset.from_dict(rows)


def test_cached_states_give_the_logits_of_the_full_forward(tmp_path):
    model = tiny_model(**FRAME_LEVEL)  # encoder + decoder, frame-level fusion: every frame is cached
    ds = feature_dataset()
    cached = cache_layer_states(ds, model, tmp_path, batch_size=2, dtype="float32").with_format("numpy")
    assert cached[1]["encoder_layer_states"].shape == (29, 3, 16)  # ceil(57 / 2) frames, 3 states, d_model
    collate = PaddingCollator()
    with torch.no_grad():
        from_cache = model(**{k: v for k, v in collate(list(cached)).items() if k != "labels"}).logits
        direct = model(**{k: v for k, v in collate([dict(r) for r in ds.with_format("numpy")]).items() if k != "labels"}).logits
    torch.testing.assert_close(from_cache, direct, atol=1e-5, rtol=0)
    assert all(len(ids) >= 4 for ids in cached["hypothesis_ids"])  # prompt + hypothesis kept for reports


def test_cache_is_reused_and_invalidated_by_backbone_or_audio_changes(tmp_path, monkeypatch):
    model = tiny_model(use_decoder=False, **FRAME_LEVEL)
    ds = feature_dataset()
    first = cache_layer_states(ds, model, tmp_path)
    calls = []
    import nser.feature_cache as module

    original = module._ExtractLayerStates.__call__
    monkeypatch.setattr(module._ExtractLayerStates, "__call__", lambda self, batch: calls.append(1) or original(self, batch))
    again = cache_layer_states(ds, model, tmp_path)
    assert calls == [] and again.cache_files == first.cache_files
    assert np.array_equal(np.asarray(again[0]["encoder_layer_states"]), np.asarray(first[0]["encoder_layer_states"]))

    other_weights = tiny_model(seed=1, use_decoder=False, **FRAME_LEVEL)
    assert backbone_fingerprint(other_weights) != backbone_fingerprint(model)
    assert cache_layer_states(ds, other_weights, tmp_path).cache_files != first.cache_files and calls
    other_audio = feature_dataset(seed=5)
    assert cache_layer_states(other_audio, model, tmp_path).cache_files != first.cache_files
    padded = tiny_model(use_decoder=False, pad_to_30s=True)
    assert backbone_fingerprint(padded) != backbone_fingerprint(model)


def test_decoder_settings_key_the_cache_only_when_the_decoder_runs():
    encoder_only = tiny_model(use_decoder=False)
    assert backbone_fingerprint(encoder_only) == backbone_fingerprint(
        tiny_model(use_decoder=False, asr_window_seconds=10, asr_dtype="bfloat16", decoder_input="prompt"))
    with_decoder = tiny_model(use_decoder=True)
    assert backbone_fingerprint(with_decoder) != backbone_fingerprint(encoder_only)
    for change in ({"asr_window_seconds": 10}, {"asr_dtype": "bfloat16"}, {"decoder_input": "prompt"}):
        assert backbone_fingerprint(tiny_model(use_decoder=True, **change)) != backbone_fingerprint(with_decoder), change
    autocast = tiny_model(use_decoder=True, asr_dtype="bfloat16")
    assert backbone_fingerprint(tiny_model(use_decoder=True, asr_dtype="bfloat16", asr_cast_weights=True)) != \
        backbone_fingerprint(autocast)


def test_float16_cache_stays_close_to_the_exact_states(tmp_path):
    model = tiny_model(use_decoder=False, **FRAME_LEVEL)
    ds = feature_dataset()
    exact = cache_layer_states(ds, model, tmp_path, dtype="float32").with_format("numpy")[0]["encoder_layer_states"]
    half_ds = cache_layer_states(ds, model, tmp_path, dtype="float16")
    assert half_ds.features["encoder_layer_states"].dtype == "float16"
    half = half_ds.with_format("numpy")[0]["encoder_layer_states"]
    assert np.array_equal(half, half.astype(np.float16).astype(half.dtype))  # stored at half precision
    np.testing.assert_allclose(half.astype(np.float32), exact, rtol=2e-3, atol=2e-3)


def test_pooled_models_cache_layer_statistics_and_give_the_logits_of_the_full_forward(tmp_path):
    model = tiny_model(pool_before_fusion=True, use_decoder=True)
    ds = feature_dataset()
    cached = cache_layer_states(ds, model, tmp_path, batch_size=2, dtype="float32").with_format("numpy")
    assert set(cached.column_names) == {"labels", "hypothesis_ids", "encoder_layer_stats", "decoder_layer_stats"}
    assert cached[1]["encoder_layer_stats"].shape == (3, 2, 16)  # layers x (mean, std) x d_model, whatever the length
    assert Path(cached.cache_files[0]["filename"]).name.startswith("layer-stats-")
    frames = cache_layer_states(ds, tiny_model(**FRAME_LEVEL), tmp_path, batch_size=2)
    assert frames.cache_files != cached.cache_files  # frames and statistics never share a file
    collate = PaddingCollator()
    with torch.no_grad():
        from_cache = model(**{k: v for k, v in collate(list(cached)).items() if k != "labels"}).logits
        direct = model(**{k: v for k, v in collate([dict(r) for r in ds.with_format("numpy")]).items() if k != "labels"}).logits
    torch.testing.assert_close(from_cache, direct, atol=1e-5, rtol=0)


def test_feature_statistics_are_fitted_from_cached_statistics_or_from_the_audio_alike(tmp_path):
    ds = feature_dataset(lengths=(30, 57, 41))
    from_cache, from_features = tiny_model(use_decoder=False), tiny_model(use_decoder=False)
    fit_feature_statistics(from_cache, cache_layer_states(ds, from_cache, tmp_path, dtype="float32").with_format("numpy"),
                           PaddingCollator(), batch_size=3)
    fit_feature_statistics(from_features, ds.with_format("numpy"), PaddingCollator(), batch_size=3)
    standardizer = from_cache.standardizers["encoder"]
    torch.testing.assert_close(standardizer.mean, from_features.standardizers["encoder"].mean, atol=1e-5, rtol=0)
    torch.testing.assert_close(standardizer.std, from_features.standardizers["encoder"].std, atol=1e-5, rtol=0)
    # after fitting, the training set's standardised vectors have mean 0 and std 1 in every dimension
    batch = PaddingCollator()(list(cache_layer_states(ds, from_cache, tmp_path, dtype="float32").with_format("numpy")))
    vectors = from_cache.pooled_layer_vectors("encoder", NserLayerStates(encoder_layer_stats=batch["encoder_layer_stats"]))
    torch.testing.assert_close(vectors.mean(dim=0), torch.zeros(3, 32), atol=1e-4, rtol=0)
    torch.testing.assert_close(vectors.std(dim=0, unbiased=False), torch.ones(3, 32), atol=1e-3, rtol=0)


def test_speaker_normalisation_standardises_each_speaker_with_its_own_clips(tmp_path):
    model = tiny_model(use_decoder=False)
    ds = feature_dataset(lengths=(30, 57, 41, 66, 35))
    cached = cache_layer_states(ds, model, tmp_path, dtype="float32")
    speakers = ["x", "y", "x", "y", "x"]
    normalized = normalize_per_speaker(cached, speakers).with_format("numpy")
    values = np.asarray(cached.with_format("numpy")["encoder_layer_stats"])
    x = values[[0, 2, 4]]
    np.testing.assert_allclose(normalized[2]["encoder_layer_stats"], (x[1] - x.mean(0)) / np.maximum(x.std(0), 1e-4), rtol=1e-4, atol=1e-4)
    for rows in ([0, 2, 4], [1, 3]):
        np.testing.assert_allclose(np.asarray(normalized["encoder_layer_stats"])[rows].mean(0), 0.0, atol=1e-3)
    assert normalized["labels"] == cached["labels"]
    with pytest.raises(ValueError, match="2 speaker values for 5 clips"):
        normalize_per_speaker(cached, ["x", "y"])
    frames = cache_layer_states(ds, tiny_model(use_decoder=False, **FRAME_LEVEL), tmp_path)
    with pytest.raises(ValueError, match="needs cached layer statistics"):
        normalize_per_speaker(frames, speakers)


def test_speaker_normalisation_from_a_few_enrolment_clips_normalises_every_clip_of_the_speaker(tmp_path):
    model = tiny_model(use_decoder=False)
    ds = feature_dataset(lengths=(30, 57, 41, 66, 35, 48, 52))
    cached = cache_layer_states(ds, model, tmp_path, dtype="float32")
    speakers = ["x", "x", "x", "x", "x", "y", "y"]
    values = np.asarray(cached.with_format("numpy")["encoder_layer_stats"])
    enrolled = enrolment_rows(np.arange(5), 2)
    assert len(enrolled) == 2 and set(enrolled) <= set(range(5))
    np.testing.assert_array_equal(enrolment_rows(np.arange(5), 2), enrolled)  # a fixed draw
    normalized = np.asarray(normalize_per_speaker(cached, speakers, max_clips=2).with_format("numpy")["encoder_layer_stats"])
    reference = values[enrolled]
    np.testing.assert_allclose(normalized[:5], (values[:5] - reference.mean(0)) / np.maximum(reference.std(0), 1e-4),
                               rtol=1e-4, atol=1e-4)
    y = values[5:]  # a speaker with no more clips than max_clips uses all of them
    np.testing.assert_allclose(normalized[5:], (y - y.mean(0)) / np.maximum(y.std(0), 1e-4), rtol=1e-4, atol=1e-4)
    assert not np.allclose(normalized[:5], np.asarray(normalize_per_speaker(cached, speakers).with_format("numpy")["encoder_layer_stats"])[:5])
    with pytest.raises(ValueError, match="max_clips=1"):
        normalize_per_speaker(cached, speakers, max_clips=1)


def test_hypotheses_are_decoded_once_per_asr_setting_and_shared_by_other_heads(tmp_path, monkeypatch):
    ds = feature_dataset()
    pooled = cache_layer_states(ds, tiny_model(), tmp_path, dtype="float32")
    assert len(list(Path(tmp_path).glob("hypotheses-*.arrow"))) == 1
    decodes = []
    original = WhisperForNoisyEmotionClassification._greedy_decode
    monkeypatch.setattr(WhisperForNoisyEmotionClassification, "_greedy_decode",
                        lambda self, *args: decodes.append(1) or original(self, *args))
    frames_model = tiny_model(**FRAME_LEVEL)  # same backbone and ASR settings, another head: no decoding
    frames = cache_layer_states(ds, frames_model, tmp_path, dtype="float32").with_format("numpy")
    assert decodes == []
    assert [ids.tolist() for ids in frames["hypothesis_ids"]] == list(pooled["hypothesis_ids"])
    inputs = PaddingCollator()([dict(r) for r in ds.with_format("numpy")])
    with torch.no_grad():
        direct = frames_model.extract_layer_states(inputs["input_features"], inputs["attention_mask"])
    assert decodes, "decoding without the cache must decode"
    for row, cached in enumerate(frames["decoder_layer_states"]):
        tokens = cached.shape[0]
        np.testing.assert_allclose(cached, direct.decoder_layer_states[row, :, :tokens].permute(1, 0, 2).numpy(), atol=1e-5)
    other_window = tiny_model(asr_window_seconds=1.0)  # another ASR setting decodes again, into its own file
    decodes.clear()
    cache_layer_states(ds, other_window, tmp_path)
    assert decodes and len(list(Path(tmp_path).glob("hypotheses-*.arrow"))) == 2


def test_fingerprint_is_kept_per_backbone_until_a_weight_changes():
    model = tiny_model(use_decoder=False)
    first = backbone_fingerprint(model)
    assert backbone_fingerprint(model) == first == backbone_fingerprint(tiny_model(use_decoder=False))  # same weights
    with torch.no_grad():
        model.backbone.model.encoder.layers[0].fc1.weight.add_(1.0)  # in place: same storage, new version
    changed = backbone_fingerprint(model)
    assert changed != first
    model.backbone.model.encoder.layers[0].fc1.weight = torch.nn.Parameter(torch.zeros_like(model.backbone.model.encoder.layers[0].fc1.weight))
    assert backbone_fingerprint(model) not in (first, changed)  # replaced: new storage
