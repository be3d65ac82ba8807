"""The feature extractor a trained nser model folder ships: Whisper's, minus two silent wrong answers.

`pipeline("audio-classification", model=..., trust_remote_code=True)` hands arrays straight to the feature
extractor, and `WhisperFeatureExtractor` casts whatever it gets to float32: an int16 array arrives as samples
in the thousands, not in [-1, 1], and the model answers confidently about noise it never heard. It also cuts
anything longer than its window (30 s for Whisper) without a word. `NserFeatureExtractor` scales integer PCM
to [-1, 1] (refusing integer types that are not PCM) and logs a warning when it truncates; everything else is
`WhisperFeatureExtractor`'s.

It travels with the model as remote code, so it imports only numpy and transformers. Its saved config keeps
`"feature_extractor_type": "WhisperFeatureExtractor"`: without `trust_remote_code` the folder still loads,
as a plain Whisper feature extractor.
"""

import logging

import numpy as np
from transformers import WhisperFeatureExtractor

logger = logging.getLogger(__name__)

# Full scale of each integer PCM type: samples / scale lie in [-1, 1). 8-bit PCM (WAV) is unsigned, centred on 128.
PCM_FULL_SCALE = {np.dtype(np.int8): 2.0**7, np.dtype(np.int16): 2.0**15, np.dtype(np.int32): 2.0**31}
PCM_OFFSET = {np.dtype(np.uint8): 2.0**7}


def pcm_to_float(samples, name: str = "audio"):
    """`samples` as float32 in [-1, 1) when they are integer PCM (int8, uint8, int16, int32); float arrays and
    lists pass through unchanged. Other integer types (int64, uint16, bool, ...) are not a PCM format: a
    `ValueError` naming `name` says so rather than guess their scale."""
    if not isinstance(samples, np.ndarray) or samples.dtype.kind == "f":
        return samples
    dtype = samples.dtype
    if dtype in PCM_FULL_SCALE:
        return (samples.astype(np.float32) / np.float32(PCM_FULL_SCALE[dtype])).astype(np.float32)
    if dtype in PCM_OFFSET:
        offset = np.float32(PCM_OFFSET[dtype])
        return ((samples.astype(np.float32) - offset) / offset).astype(np.float32)
    raise ValueError(
        f"{name}: samples of dtype {dtype} are neither float nor integer PCM (int8, uint8, int16, int32): "
        "convert them to float32 in [-1, 1] first"
    )


class NserFeatureExtractor(WhisperFeatureExtractor):
    """`WhisperFeatureExtractor` that reads integer PCM arrays as PCM (scaled to [-1, 1)) and warns when a clip is
    longer than the window it keeps (`chunk_length` seconds; the rest is not heard)."""

    def __call__(self, raw_speech, *args, truncation: bool = True, **kwargs):
        batched = isinstance(raw_speech, (list, tuple)) and len(raw_speech) > 0 and isinstance(raw_speech[0], np.ndarray)
        clips = [pcm_to_float(clip, f"clip {i}") for i, clip in enumerate(raw_speech)] if batched else [pcm_to_float(raw_speech)]
        if truncation:
            for index, clip in enumerate(clips):
                length = np.shape(clip)[-1] if np.ndim(clip) else 0
                if length > self.n_samples:
                    logger.warning(
                        "clip %d is %.1f s long: only its first %g s are classified (the model's window); classify "
                        "longer audio in windows (handler.py's \"long_audio\": \"windows\")",
                        index, length / self.sampling_rate, self.n_samples / self.sampling_rate,
                    )
        return super().__call__(clips if batched else clips[0], *args, truncation=truncation, **kwargs)

    def to_dict(self):
        output = super().to_dict()
        # Loadable without remote code (as plain Whisper), and as this class with it.
        output["feature_extractor_type"] = "WhisperFeatureExtractor"
        output["auto_map"] = {"AutoFeatureExtractor": f"{self.__module__.rsplit('.', 1)[-1]}.{type(self).__name__}"}
        return output
