"""From audio to what the model eats: log-mel features of the real length, and a padding collator.

Features are computed exactly as `pipeline("audio-classification")` computes them (Whisper's feature extractor
pads to 30 s) and then trimmed to the clip's frames, so training and deployment see the same numbers.
"""

import logging

import numpy as np
import torch

from nser.audio import decode_audio, prepare_waveform
from nser.workers import single_thread_if_forked

logger = logging.getLogger(__name__)

MAX_SECONDS = 30.0  # Whisper's encoder window; longer clips are truncated (logged), as the model does.


def log_mel(waveform, feature_extractor, name="audio"):
    """(num_mel_bins, frames) float32 log-mel of one 16 kHz mono clip: the frames the pipeline's 30 s padded
    features have for this clip (ceil(samples / hop), equal within 1e-6), computed ~50x faster. Appending
    n_fft zeros gives every kept frame's window exactly the samples it sees inside the zero-padded 30 s input."""
    if waveform.numel() == 0:
        raise ValueError(f"{name}: empty audio")
    padded = torch.nn.functional.pad(waveform, (0, feature_extractor.n_fft))
    out = feature_extractor(
        padded.numpy(), sampling_rate=feature_extractor.sampling_rate, padding="longest", return_tensors="np"
    )
    frames = -(-waveform.numel() // feature_extractor.hop_length)
    return out["input_features"][0, :, :frames].astype(np.float32)


def make_feature_function(feature_extractor, audio_column="audio", label_column="label"):
    """A `datasets.map(batched=True)` function: decode, check (mono, 16 kHz, finite, <= 30 s) and featurise."""

    def featurize(batch):
        single_thread_if_forked()
        features = []
        for value in batch[audio_column]:
            name = _describe(value, audio_column)
            waveform, rate = decode_audio(value, name=name)
            waveform = prepare_waveform(
                waveform, rate, name=name, target_rate=feature_extractor.sampling_rate, max_seconds=MAX_SECONDS
            )
            features.append(log_mel(waveform, feature_extractor, name=name))
        result = {"input_features": features}
        if label_column in batch:
            result["labels"] = batch[label_column]
        return result

    return featurize


def _describe(value, column):
    """A readable name for an audio value in error messages: its path when known."""
    path = value.get("path") if isinstance(value, dict) else getattr(getattr(value, "metadata", None), "path", None)
    return f"{column} ({path})" if path else column


class PaddingCollator:
    """Right-pads `input_features` (mel, frames) with zeros and builds the frame `attention_mask`; pads cached
    layer states (stored time-major: time, layers, dim) the same way with their masks. The model masks padding everywhere, so the
    pad value never reaches a logit."""

    state_keys = ("encoder_layer_states", "decoder_layer_states")
    stats_keys = ("encoder_layer_stats", "decoder_layer_stats")  # fixed shape (layers, 2, d_model): stacked

    def __call__(self, examples):
        batch = {}
        if "input_features" in examples[0]:
            features = [np.asarray(e["input_features"], dtype=np.float32) for e in examples]
            batch["input_features"], batch["attention_mask"] = _pad_last(features)
        for key in self.state_keys:
            if key in examples[0]:
                states = [torch.as_tensor(np.asarray(e[key]), dtype=torch.float32).permute(1, 2, 0) for e in examples]
                padded, mask = _pad_last(states)  # (B, L, D, T)
                batch[key] = padded.transpose(-1, -2)  # (B, L, T, D)
                batch[key.replace("states", "mask")] = mask
        for key in self.stats_keys:
            if key in examples[0]:
                batch[key] = torch.as_tensor(np.stack([np.asarray(e[key]) for e in examples]), dtype=torch.float32)
        for key in ("labels", "speaker_ids"):
            if key in examples[0]:
                batch[key] = torch.tensor([int(e[key]) for e in examples])
        return batch


def _pad_last(arrays):
    """Zero-pad a list of tensors along the last axis; returns the stack and a (B, T) bool mask."""
    tensors = [torch.as_tensor(np.asarray(a)) for a in arrays]
    lengths = torch.tensor([t.shape[-1] for t in tensors])
    padded = torch.zeros(len(tensors), *tensors[0].shape[:-1], int(lengths.max()), dtype=tensors[0].dtype)
    for i, t in enumerate(tensors):
        padded[i, ..., : t.shape[-1]] = t
    mask = torch.arange(int(lengths.max()))[None, :] < lengths[:, None]
    return padded, mask
