"""Inference Endpoints handler on a saved tiny model, and the Hub upload path (the Hub itself mocked)."""

import base64
import io

import numpy as np
import pytest
import soundfile as sf

import nser.hub
from handler import EndpointHandler
from tiny_models import tiny_model

SEVEN = ["anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise"]  # more than the pipeline's top 5


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("endpoint")
    model = tiny_model()
    model.config.id2label = dict(enumerate(SEVEN))
    model.config.label2id = {name: i for i, name in enumerate(SEVEN)}
    model.classifier = type(model.classifier)(model.config.embedding_dim, len(SEVEN))
    model.config.num_labels = len(SEVEN)
    model.save_pretrained(folder)
    return folder


def wav_bytes(seconds=0.5):
    t = np.arange(int(seconds * 16000)) / 16000
    buffer = io.BytesIO()
    sf.write(buffer, (0.2 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), 16000, format="WAV")
    return buffer.getvalue()


def test_handler_returns_every_label_for_bytes_base64_and_samples(model_dir):
    handler = EndpointHandler(str(model_dir))
    audio = wav_bytes()
    for payload in ({"inputs": audio}, {"inputs": base64.b64encode(audio).decode()},
                    {"inputs": (0.1 * np.ones(8000)).tolist()}):
        predictions = handler(payload)
        assert sorted(p["label"] for p in predictions) == sorted(SEVEN)
        assert abs(sum(p["score"] for p in predictions) - 1) < 1e-5
    assert len(handler({"inputs": audio, "parameters": {"top_k": 2}})) == 2
    with pytest.raises(ValueError, match="empty"):
        handler({"inputs": b""})


def test_push_uploads_the_model_folder_with_handler(model_dir, monkeypatch):
    calls = {}
    monkeypatch.setattr(nser.hub.huggingface_hub, "create_repo", lambda repo, **kw: calls.setdefault("create", (repo, kw)))
    monkeypatch.setattr(nser.hub.huggingface_hub, "upload_folder", lambda **kw: calls.setdefault("upload", kw))
    nser.hub.add_inference_handler(model_dir)
    nser.hub.push_model_folder(model_dir, "me/nser-test", token="hf_x")
    assert calls["create"] == ("me/nser-test", {"token": "hf_x", "private": False, "exist_ok": True})
    assert calls["upload"]["repo_id"] == "me/nser-test" and calls["upload"]["folder_path"] == str(model_dir)
    assert (model_dir / "handler.py").exists() and (model_dir / "modeling_nser.py").exists()


def test_push_is_refused_early_without_repo_token_or_network(monkeypatch):
    with pytest.raises(ValueError, match="hub_model_id"):
        nser.hub.check_push_possible(None)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="HF_HUB_OFFLINE"):
        nser.hub.check_push_possible("me/x", "hf_token")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(nser.hub.huggingface_hub, "get_token", lambda: None)
    with pytest.raises(ValueError, match="token"):
        nser.hub.check_push_possible("me/x")
    assert nser.hub.check_push_possible("me/x", "hf_token") == "hf_token"
