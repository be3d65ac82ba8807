"""Features match what pipeline("audio-classification") computes; the collator pads without leaking."""

import numpy as np
import pytest
import torch
from transformers import WhisperFeatureExtractor

from nser.features import PaddingCollator, log_mel, make_feature_function


@pytest.mark.parametrize("samples", [1, 159, 160, 16001, 28640, 16000 * 30])
def test_log_mel_equals_the_30s_padded_pipeline_features_trimmed_to_the_clip(samples):
    extractor = WhisperFeatureExtractor()
    waveform = torch.from_numpy(np.random.default_rng(samples).standard_normal(samples).astype(np.float32) * 0.1)
    ours = log_mel(waveform, extractor)
    reference = extractor(waveform.numpy(), sampling_rate=16000, return_attention_mask=True, return_tensors="np")
    frames = int(reference["attention_mask"][0].sum())
    assert ours.shape == (80, frames) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, reference["input_features"][0, :, :frames], atol=1e-6, rtol=0)


def test_feature_function_checks_and_converts_audio():
    featurize = make_feature_function(WhisperFeatureExtractor())
    stereo_8k = {"array": np.ones((2, 4000), dtype=np.float32) * 0.1, "sampling_rate": 8000, "path": "a.wav"}
    out = featurize({"audio": [stereo_8k], "label": [2]})
    assert out["labels"] == [2] and out["input_features"][0].shape == (80, 50)  # 0.5 s: 100 frames/s
    with pytest.raises(ValueError, match="a.wav"):
        featurize({"audio": [{"array": np.full(800, np.nan, dtype=np.float32), "sampling_rate": 16000, "path": "a.wav"}]})
    with pytest.raises(ValueError, match="empty"):
        featurize({"audio": [{"array": np.zeros(0, dtype=np.float32), "sampling_rate": 16000, "path": "b.wav"}]})


def test_collator_pads_features_and_time_major_layer_states():
    examples = [
        {"input_features": np.ones((80, 3)), "encoder_layer_states": np.ones((2, 4, 5)), "labels": 1},
        {"input_features": np.ones((80, 5)), "encoder_layer_states": np.ones((3, 4, 5)), "labels": 0},
    ]
    batch = PaddingCollator()(examples)
    assert batch["input_features"].shape == (2, 80, 5) and batch["input_features"].dtype == torch.float32
    assert batch["attention_mask"].tolist() == [[True] * 3 + [False] * 2, [True] * 5]
    assert batch["encoder_layer_states"].shape == (2, 4, 3, 5)  # (batch, layers, time, dim)
    assert batch["encoder_layer_mask"].tolist() == [[True, True, False], [True, True, True]]
    assert batch["encoder_layer_states"][0, :, 2].abs().sum() == 0
    assert batch["labels"].tolist() == [1, 0]
