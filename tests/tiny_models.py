"""Tiny random Whisper-based nser models for fast unit tests (d_model 16, 2 layers, 2 s window)."""

import torch
from transformers import GenerationConfig, WhisperConfig

from configuration_nser import NserConfig
from modeling_nser import WhisperForNoisyEmotionClassification

LABELS = ["angry", "happy", "neutral", "sad"]
FRAME_LEVEL = {"pool_before_fusion": False, "standardize_features": False}  # the paper's frame-level layer adapter
VOCAB = 100
SPECIAL = {"decoder_start": 90, "eos": 91, "en": 92, "zh": 93, "transcribe": 94, "translate": 95, "notimestamps": 96}


def tiny_whisper_config():
    return WhisperConfig(
        vocab_size=VOCAB, d_model=16, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=32, decoder_ffn_dim=32, num_mel_bins=80,
        max_source_positions=100, max_target_positions=64, decoder_start_token_id=SPECIAL["decoder_start"],
        eos_token_id=SPECIAL["eos"], pad_token_id=SPECIAL["eos"], bos_token_id=SPECIAL["eos"],
        begin_suppress_tokens=None, suppress_tokens=None,
    )


def tiny_generation_config():
    """Just enough of Whisper's generation config (language and task tokens) for `generate` to run."""
    return GenerationConfig(
        decoder_start_token_id=SPECIAL["decoder_start"], eos_token_id=SPECIAL["eos"], pad_token_id=SPECIAL["eos"],
        bos_token_id=SPECIAL["eos"], is_multilingual=True, no_timestamps_token_id=SPECIAL["notimestamps"],
        lang_to_id={"<|en|>": SPECIAL["en"], "<|zh|>": SPECIAL["zh"]},
        task_to_id={"transcribe": SPECIAL["transcribe"], "translate": SPECIAL["translate"]},
        max_initial_timestamp_index=None, return_timestamps=False,
    ).to_dict()


def tiny_model(seed=0, **config_kwargs):
    torch.manual_seed(seed)
    defaults = {"asr_language": "en", "adapter_dim": 8, "embedding_dim": 12, "max_hypothesis_tokens": 6,
                "hypothesis_tokens_per_second": 10.0}
    config_kwargs = {**defaults, **config_kwargs}
    config = NserConfig(
        backbone_config=tiny_whisper_config().to_dict(), asr_generation_config=tiny_generation_config(),
        id2label=dict(enumerate(LABELS)), label2id={n: i for i, n in enumerate(LABELS)},
        **config_kwargs,
    )
    return WhisperForNoisyEmotionClassification(config).eval()


def random_features(frames, seed=0, batch=1):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 80, frames, generator=generator)


def save_tiny_whisper(folder, seed=0):
    """A tiny random Whisper checkpoint (with the generation config decoding needs) for `from_whisper`."""
    model = tiny_model(seed=seed).backbone
    model.generation_config = GenerationConfig.from_dict(tiny_generation_config())
    model.save_pretrained(folder)
    return folder
