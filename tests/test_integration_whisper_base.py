"""The model on the real whisper-base and a real CASIA clip (skipped, with the reason, where ../shared is absent)."""

from pathlib import Path

import pytest
import torch
from transformers import WhisperTokenizer

from modeling_nser import WhisperForNoisyEmotionClassification
from nser.audio import load_audio
from nser.features import log_mel

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
WHISPER_BASE = SHARED / "models" / "whisper-base"
CLIP = SHARED / "data" / "casia" / "liuchanhg" / "angry" / "201.flac"

pytestmark = pytest.mark.skipif(
    not (WHISPER_BASE.is_dir() and CLIP.is_file()), reason=f"needs {WHISPER_BASE} and {CLIP} (../shared is absent)"
)


@pytest.fixture(scope="module")
def model():
    return WhisperForNoisyEmotionClassification.from_whisper(
        WHISPER_BASE, ["angry", "fear", "happy", "neutral", "sad", "surprise"], asr_language="zh"
    ).eval()


def test_real_hidden_states_hypothesis_and_logits(model):
    waveform = load_audio(CLIP)
    features = torch.from_numpy(log_mel(waveform, model.build_feature_extractor()))[None]
    with torch.no_grad():
        states = model.extract_layer_states(features)
        logits = model.classify_layer_states(states)
    frames = -(-features.shape[-1] // 2)
    assert states.encoder_layer_states.shape == (1, 7, frames, 512)
    assert states.decoder_layer_states.shape[:2] == (1, 7) and states.decoder_layer_states.shape[-1] == 512
    tokenizer = WhisperTokenizer.from_pretrained(WHISPER_BASE)
    ids = states.hypothesis_ids[0][states.decoder_layer_mask[0]]
    assert tokenizer.convert_ids_to_tokens(ids[:4].tolist()) == [
        "<|startoftranscript|>", "<|zh|>", "<|transcribe|>", "<|notimestamps|>"
    ]
    text = tokenizer.decode(ids[4:], skip_special_tokens=True)
    cap = int(torch.tensor(waveform.numel() / 16000 * model.config.hypothesis_tokens_per_second).ceil())
    assert 0 < len(ids) - 4 <= cap and any("\u4e00" <= ch <= "\u9fff" for ch in text), text  # Chinese text
    assert logits.shape == (1, 6) and torch.isfinite(logits).all()
