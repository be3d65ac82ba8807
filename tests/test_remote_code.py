"""save_pretrained / Auto classes / remote code / pipeline round trips on a tiny model."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import AutoModelForAudioClassification, pipeline

from tiny_models import LABELS, random_features, tiny_model


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("nser-tiny")
    model = tiny_model(seed=1)
    model.save_pretrained(folder)
    return model, folder


def test_save_pretrained_writes_remote_code_auto_map_and_feature_extractor(saved):
    _, folder = saved
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "nser"
    assert config["auto_map"] == {
        "AutoConfig": "configuration_nser.NserConfig",
        "AutoModel": "modeling_nser.WhisperForNoisyEmotionClassification",
        "AutoModelForAudioClassification": "modeling_nser.WhisperForNoisyEmotionClassification",
    }
    assert (folder / "modeling_nser.py").exists() and (folder / "configuration_nser.py").exists()
    assert (folder / "model.safetensors").exists()
    extractor = json.loads((folder / "preprocessor_config.json").read_text())
    assert extractor["feature_extractor_type"] == "WhisperFeatureExtractor" and extractor["return_attention_mask"]


def test_registered_auto_class_loads_without_missing_keys(saved):
    import nser  # noqa: F401  (registers the Auto classes)

    model, folder = saved
    loaded, info = AutoModelForAudioClassification.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"]
    assert not info["unexpected_keys"]
    features = random_features(70, seed=2)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(features).logits, model(features).logits, atol=1e-6, rtol=0)


def test_remote_code_in_a_fresh_process_gives_identical_logits(saved, tmp_path):
    model, folder = saved
    features = random_features(70, seed=2)
    torch.save(features, tmp_path / "features.pt")
    with torch.no_grad():
        expected = model(features).logits
    script = textwrap.dedent(f"""
        import sys, torch
        sys.path = [p for p in sys.path if p not in ("", ".")]  # only the saved folder's code may be used
        from transformers import AutoModelForAudioClassification
        model = AutoModelForAudioClassification.from_pretrained({str(folder)!r}, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        with torch.no_grad():
            logits = model(torch.load({str(tmp_path / "features.pt")!r})).logits
        torch.save(logits, {str(tmp_path / "logits.pt")!r})
    """)
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path)
    torch.testing.assert_close(torch.load(tmp_path / "logits.pt"), expected, atol=1e-6, rtol=0)


def test_pipeline_on_a_wav_file_returns_every_label_with_a_score(saved, tmp_path):
    _, folder = saved
    wav = tmp_path / "clip.wav"
    t = np.arange(int(0.8 * 16000)) / 16000
    sf.write(wav, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000)
    classifier = pipeline("audio-classification", model=str(folder), trust_remote_code=True)
    predictions = classifier(str(wav), top_k=None)
    assert sorted(p["label"] for p in predictions) == sorted(LABELS)
    assert abs(sum(p["score"] for p in predictions) - 1.0) < 1e-5
