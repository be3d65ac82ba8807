"""The backbone-state cache: exact states, computed once, recomputed when the backbone or the audio changes."""

import numpy as np
import torch
from datasets import Dataset

from nser.feature_cache import backbone_fingerprint, cache_layer_states
from nser.features import PaddingCollator
from tiny_models import random_features, tiny_model


def feature_dataset(seed=0, lengths=(30, 57, 41)):
    rows = {"input_features": [random_features(n, seed=seed + i)[0].numpy() for i, n in enumerate(lengths)], "labels": [0, 1, 2]}
    return Dataset.from_dict(rows)


def test_cached_states_give_the_logits_of_the_full_forward(tmp_path):
    model = tiny_model()  # encoder + decoder
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
    model = tiny_model(use_decoder=False)
    ds = feature_dataset()
    first = cache_layer_states(ds, model, tmp_path)
    calls = []
    import nser.feature_cache as module

    original = module._ExtractLayerStates.__call__
    monkeypatch.setattr(module._ExtractLayerStates, "__call__", lambda self, batch: calls.append(1) or original(self, batch))
    again = cache_layer_states(ds, model, tmp_path)
    assert calls == [] and again.cache_files == first.cache_files
    assert np.array_equal(np.asarray(again[0]["encoder_layer_states"]), np.asarray(first[0]["encoder_layer_states"]))

    other_weights = tiny_model(seed=1, use_decoder=False)
    assert backbone_fingerprint(other_weights) != backbone_fingerprint(model)
    assert cache_layer_states(ds, other_weights, tmp_path).cache_files != first.cache_files and calls
    other_audio = feature_dataset(seed=5)
    assert cache_layer_states(other_audio, model, tmp_path).cache_files != first.cache_files
    padded = tiny_model(use_decoder=False, pad_to_30s=True)
    assert backbone_fingerprint(padded) != backbone_fingerprint(model)


def test_float16_cache_stays_close_to_the_exact_states(tmp_path):
    model = tiny_model(use_decoder=False)
    ds = feature_dataset()
    exact = cache_layer_states(ds, model, tmp_path, dtype="float32").with_format("numpy")[0]["encoder_layer_states"]
    half_ds = cache_layer_states(ds, model, tmp_path, dtype="float16")
    assert half_ds.features["encoder_layer_states"].dtype == "float16"
    half = half_ds.with_format("numpy")[0]["encoder_layer_states"]
    assert np.array_equal(half, half.astype(np.float16).astype(half.dtype))  # stored at half precision
    np.testing.assert_allclose(half.astype(np.float32), exact, rtol=2e-3, atol=2e-3)
