"""Inference Endpoints handler: the Hub's hosted widgets do not run custom code, Endpoints do, with this file.

Request: `{"inputs": <audio>, "parameters": {...}}`, where `<audio>` is one of
- the bytes of an audio file (any format FFmpeg reads), or the same as a base64 string;
- a list of float samples in [-1, 1] at 16 kHz;
- `{"raw": <list or array of samples>, "sampling_rate": <Hz>}` (`"array"` is accepted for `"raw"`).
Integer PCM arrays (int8, uint8, int16, int32) are scaled to [-1, 1]; a JSON list of integers beyond [-1, 1] is
refused (JSON carries no sample type: send floats, or the encoded file). Parameters (all optional):
- `top_k`: a positive integer, the number of labels returned (default: every label);
- `long_audio`: what happens to audio longer than the model's 30 s window: `"truncate"` (default: the first
  30 s are classified and a warning is logged) or `"windows"` (the clip is cut into 30 s windows, the last one
  ending with the clip, and the answer is the mean of the windows' probabilities).
Response: labels with their probability, highest first: `[{"label": "angry", "score": 0.91}, ...]`.
Every malformed request raises one `ValueError` saying what was expected and what came.

This file is copied into every trained model folder and runs where `nser` is not installed: it imports only
numpy, torch and transformers.
"""

import base64
import binascii
import logging
import math
import numbers

import numpy as np
import torch
from transformers import pipeline

logger = logging.getLogger(__name__)

LONG_AUDIO = ("truncate", "windows")
PARAMETERS = ("top_k", "long_audio")
# Audio a speech model can use; other rates usually mean kHz or a sample count passed as the rate.
MIN_SAMPLING_RATE, MAX_SAMPLING_RATE = 1000, 384000
# A list of samples peaking above this is not float audio in [-1, 1] (mixtures may clip a little above 1).
MAX_FLOAT_PEAK = 2.0
MAX_CHANNELS = 8
PCM_FULL_SCALE = {np.dtype(np.int8): 2.0**7, np.dtype(np.int16): 2.0**15, np.dtype(np.int32): 2.0**31}
EXPECTED = (
    'expected {"inputs": <audio file bytes | base64 string | list of float samples at 16 kHz | '
    '{"raw": [samples], "sampling_rate": Hz}>, "parameters": {"top_k": int, "long_audio": "truncate" | "windows"}}'
)


def _describe(value) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60] + '...' if len(text) > 60 else text}"


def samples_to_float(samples, name: str = "inputs") -> np.ndarray:
    """1-D float32 samples from a list, numpy array or tensor: integer PCM scaled to [-1, 1), channels averaged."""
    if isinstance(samples, torch.Tensor):
        samples = samples.detach().cpu().numpy()
    from_json = not isinstance(samples, np.ndarray)
    try:
        array = np.asarray(samples)
    except ValueError as error:  # ragged nested lists
        raise ValueError(f"{name}: samples must be a flat list of numbers; got a ragged nested list ({error})") from None
    if array.size == 0:
        raise ValueError(f"{name}: audio is empty (no samples)")
    if array.dtype.kind not in "iuf" or array.dtype == np.dtype(bool):
        raise ValueError(f"{name}: samples must be numbers; got dtype {array.dtype} (e.g. {array.flat[0]!r})")
    if array.ndim == 2 and min(array.shape) <= MAX_CHANNELS:
        channel_axis = 0 if array.shape[0] <= array.shape[1] else 1
        logger.warning("%s: averaging %d channels to mono", name, array.shape[channel_axis])
    elif array.ndim != 1:
        raise ValueError(f"{name}: expected 1-D samples (or (channels, samples)); got shape {array.shape}")
    if array.dtype.kind == "f" or from_json:
        array = array.astype(np.float64)
        if from_json and array.size and np.abs(array).max() > MAX_FLOAT_PEAK:
            raise ValueError(
                f"{name}: expected float samples in [-1, 1]; got values up to {np.abs(array).max():g}, which looks "
                "like integer PCM: divide by 32768 (int16) before sending, or send the encoded file"
            )
    elif array.dtype in PCM_FULL_SCALE:
        array = array.astype(np.float64) / PCM_FULL_SCALE[array.dtype]
    elif array.dtype == np.dtype(np.uint8):
        array = (array.astype(np.float64) - 128.0) / 128.0
    else:
        raise ValueError(
            f"{name}: samples of dtype {array.dtype} are neither float nor integer PCM (int8, uint8, int16, int32); "
            "convert them to float32 in [-1, 1]"
        )
    if not np.isfinite(array).all():
        raise ValueError(f"{name}: audio contains NaN or Inf samples")
    if array.ndim == 2:
        array = array.mean(axis=0 if array.shape[0] <= array.shape[1] else 1)
    return array.astype(np.float32)


def _sampling_rate(value, name: str) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or int(value) != value
        or not MIN_SAMPLING_RATE <= value <= MAX_SAMPLING_RATE
    ):
        raise ValueError(
            f"{name}: expected a whole number of Hz in [{MIN_SAMPLING_RATE}, {MAX_SAMPLING_RATE}]; got {_describe(value)}"
        )
    return int(value)


class EndpointHandler:
    def __init__(self, path=""):
        self.classifier = pipeline("audio-classification", model=path or ".", trust_remote_code=True)
        extractor = self.classifier.feature_extractor
        self.sampling_rate = extractor.sampling_rate
        self.window = extractor.n_samples  # the samples the model hears at most (30 s for Whisper)
        self.num_labels = self.classifier.model.config.num_labels

    def __call__(self, data):
        inputs, parameters = self._unpack(data)
        top_k = self._top_k(parameters.get("top_k"))
        long_audio = parameters.get("long_audio", "truncate")
        if long_audio not in LONG_AUDIO:
            raise ValueError(f'parameters.long_audio: expected one of {list(LONG_AUDIO)}; got {_describe(long_audio)}')
        waveform = self._waveform(inputs)
        windows = self._windows(waveform, long_audio)
        scores = self.classifier(windows, top_k=self.num_labels)
        mean = {}
        for window_scores in scores:
            for item in window_scores:
                mean[item["label"]] = mean.get(item["label"], 0.0) + item["score"] / len(windows)
        ranked = sorted(mean.items(), key=lambda item: item[1], reverse=True)
        return [{"label": label, "score": score} for label, score in ranked[:top_k]]

    # ------------------------------------------------------------------ request parsing
    def _unpack(self, data):
        """(inputs, parameters) from the request; `"parameters": null` means no parameters."""
        if not isinstance(data, dict):
            return data, {}
        if "inputs" in data:
            inputs = data["inputs"]
        elif "raw" in data or "array" in data:  # the audio dict itself, as `pipeline` takes it
            inputs = {key: value for key, value in data.items() if key != "parameters"}
        else:
            raise ValueError(f"no audio in the request: {EXPECTED}; got keys {sorted(data)}")
        parameters = data.get("parameters")
        if parameters is None:
            parameters = {}
        if not isinstance(parameters, dict):
            raise ValueError(f"parameters: expected an object like {{\"top_k\": 3}}; got {_describe(parameters)}")
        unknown = sorted(set(parameters) - set(PARAMETERS))
        if unknown:
            raise ValueError(f"parameters: unknown {unknown}; accepted: {list(PARAMETERS)}")
        return inputs, parameters

    def _top_k(self, top_k):
        if top_k is None:
            return self.num_labels
        if isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral) or top_k < 1:
            raise ValueError(
                f"parameters.top_k: expected a positive integer (1..{self.num_labels}) or null for every label; "
                f"got {_describe(top_k)}"
            )
        return min(int(top_k), self.num_labels)

    def _waveform(self, inputs) -> np.ndarray:
        """1-D float32 at the model's rate, from any accepted form of `inputs`."""
        if isinstance(inputs, str):
            inputs = self._base64(inputs)
        if isinstance(inputs, (bytes, bytearray)):
            return self._decode(bytes(inputs))
        rate = self.sampling_rate
        if isinstance(inputs, dict):
            missing = [key for key in ("raw", "sampling_rate") if key not in inputs and not (key == "raw" and "array" in inputs)]
            if missing:
                raise ValueError(f"inputs: an audio object needs \"raw\" and \"sampling_rate\"; missing {missing} in keys {sorted(inputs)}")
            rate = _sampling_rate(inputs["sampling_rate"], "inputs.sampling_rate")
            inputs = inputs["raw"] if "raw" in inputs else inputs["array"]
        if not isinstance(inputs, (list, tuple, np.ndarray, torch.Tensor)):
            raise ValueError(f"inputs: {EXPECTED}; got {_describe(inputs)}")
        waveform = samples_to_float(inputs)
        if rate != self.sampling_rate:
            waveform = self._resample(waveform, rate)
        return waveform

    @staticmethod
    def _base64(text: str) -> bytes:
        if text.startswith("data:") and "," in text:  # a data URL: data:audio/wav;base64,....
            text = text.split(",", 1)[1]
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as error:
            raise ValueError(
                f"inputs: a string must be base64-encoded audio file bytes; this one is not valid base64 ({error}): "
                f"{_describe(text)}"
            ) from None

    def _decode(self, audio: bytes) -> np.ndarray:
        if not audio:
            raise ValueError("inputs: empty audio payload (0 bytes)")
        from transformers.pipelines.audio_utils import ffmpeg_read

        try:
            waveform = ffmpeg_read(audio, self.sampling_rate)
        except ValueError as error:
            raise ValueError(f"inputs: {len(audio)} bytes that FFmpeg cannot decode as audio ({error})") from None
        if waveform.size == 0:
            raise ValueError(f"inputs: {len(audio)} bytes of an audio file that holds no samples")
        return waveform.astype(np.float32)

    def _resample(self, waveform: np.ndarray, rate: int) -> np.ndarray:
        import torchaudio.functional

        return torchaudio.functional.resample(torch.from_numpy(waveform), rate, self.sampling_rate).numpy()

    def _windows(self, waveform: np.ndarray, long_audio: str) -> list[np.ndarray]:
        if waveform.size <= self.window:
            return [waveform]
        seconds, window_seconds = waveform.size / self.sampling_rate, self.window / self.sampling_rate
        if long_audio == "truncate":
            logger.warning(
                "audio is %.1f s long: only the first %g s are classified; pass \"parameters\": "
                "{\"long_audio\": \"windows\"} to classify all of it", seconds, window_seconds,
            )
            return [waveform[: self.window]]
        starts = list(range(0, waveform.size - self.window, self.window)) + [waveform.size - self.window]
        logger.info("audio is %.1f s long: classified in %d windows of %g s", seconds, len(starts), window_seconds)
        return [waveform[start : start + self.window] for start in starts]
