"""Audio input/output and checks: every waveform entering nser becomes a 1-D float32 mono tensor at 16 kHz.

Whisper is trained on 16 kHz mono audio, so everything (files, ``datasets`` ``Audio`` values, arrays from
users) goes through :func:`prepare_waveform`, which either returns such a tensor or raises a ``ValueError``
that names the input. The few tolerated deviations (several channels, another rate, too long) are
converted and logged, never silently.
"""

import io
import logging
import math
from pathlib import Path

import numpy as np
import soundfile
import torch
import torchaudio.functional as F

logger = logging.getLogger(__name__)

SAMPLING_RATE = 16000
# Rates outside this range are not audio a speech model can use; they usually mean a bug upstream
# (a rate in kHz, or the number of samples passed as the rate).
MIN_SAMPLING_RATE = 1000
MAX_SAMPLING_RATE = 384000
# A 2-D array with one dimension at most this long is read as (channels, samples) or (samples, channels).
MAX_CHANNELS = 8


# Integer PCM full scale: how soundfile and torchaudio map integer samples to [-1, 1). 8-bit PCM (as in WAV files) is
# unsigned, centred on 128; int8 is its signed form.
_PCM_FULL_SCALE = {torch.int8: 2.0**7, torch.int16: 2.0**15, torch.int32: 2.0**31}
_PCM_OFFSET = {torch.uint8: 2.0**7}


def _as_float_tensor(waveform, name: str) -> torch.Tensor:
    """Float32 tensor from floats or integer PCM (int8, uint8, int16, int32), scaled to [-1, 1); any other dtype is
    refused: int64 or uint16 samples have no agreed scale, and read as floats they would be a silent wrong answer."""
    if not isinstance(waveform, torch.Tensor):
        array = np.asarray(waveform)
        if array.dtype.kind not in "fiu" or array.dtype == np.bool_:
            raise ValueError(f"{name}: audio samples must be numbers, got dtype {array.dtype}")
        if array.dtype.kind == "u" and array.dtype != np.uint8:  # torch cannot hold every unsigned type
            raise ValueError(
                f"{name}: audio samples of dtype {array.dtype} are neither float nor integer PCM "
                "(int8, uint8, int16, int32); convert them to float32 in [-1, 1]"
            )
        waveform = torch.from_numpy(np.ascontiguousarray(array))
    if waveform.dtype in _PCM_FULL_SCALE:
        return waveform.to(torch.float32) / _PCM_FULL_SCALE[waveform.dtype]
    if waveform.dtype in _PCM_OFFSET:
        offset = _PCM_OFFSET[waveform.dtype]
        return (waveform.to(torch.float32) - offset) / offset
    if not waveform.is_floating_point():
        raise ValueError(
            f"{name}: audio samples of dtype {waveform.dtype} are neither float nor integer PCM "
            "(int8, uint8, int16, int32); convert them to float32 in [-1, 1]"
        )
    return waveform.to(torch.float32)


def _to_mono(waveform: torch.Tensor, name: str, downmix_level: int) -> torch.Tensor:
    """1-D from (samples,), (channels, samples) or (samples, channels); several channels are averaged."""
    if waveform.ndim == 1:
        return waveform
    if waveform.ndim != 2:
        raise ValueError(f"{name}: expected a 1-D or 2-D waveform, got shape {tuple(waveform.shape)}")
    if waveform.shape[0] > MAX_CHANNELS and waveform.shape[1] <= MAX_CHANNELS:
        waveform = waveform.T  # (samples, channels) -> (channels, samples)
    if waveform.shape[0] > MAX_CHANNELS:
        raise ValueError(
            f"{name}: cannot tell channels from samples in shape {tuple(waveform.shape)} "
            f"(expected one dimension <= {MAX_CHANNELS})"
        )
    if waveform.shape[0] > 1:
        logger.log(downmix_level, "%s: averaging %d channels to mono", name, waveform.shape[0])
    return waveform.mean(dim=0)


def _check_rate(sampling_rate, name: str) -> int:
    if (
        isinstance(sampling_rate, bool)
        or not isinstance(sampling_rate, (int, float, np.integer, np.floating))
        or not math.isfinite(sampling_rate)
        or int(sampling_rate) != sampling_rate
        or not MIN_SAMPLING_RATE <= sampling_rate <= MAX_SAMPLING_RATE
    ):
        raise ValueError(
            f"{name}: sampling rate must be a whole number of Hz in "
            f"[{MIN_SAMPLING_RATE}, {MAX_SAMPLING_RATE}], got {sampling_rate!r}"
        )
    return int(sampling_rate)


def _standardise(waveform, sampling_rate, name, target_rate, max_seconds, downmix_level) -> torch.Tensor:
    """The checks and conversions behind every public entry point (see :func:`prepare_waveform`)."""
    rate = _check_rate(sampling_rate, name)
    target_rate = _check_rate(target_rate, "target_rate")
    tensor = _to_mono(_as_float_tensor(waveform, name), name, downmix_level)
    if tensor.numel() == 0:
        raise ValueError(f"{name}: audio is empty")
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{name}: audio contains NaN or Inf samples")
    if rate != target_rate:
        logger.info("%s: resampling from %d Hz to %d Hz", name, rate, target_rate)
        tensor = F.resample(tensor, rate, target_rate)
    if max_seconds is not None and tensor.numel() > round(max_seconds * target_rate):
        logger.warning("%s: %.2f s long, truncated to %.2f s", name, tensor.numel() / target_rate, max_seconds)
        tensor = tensor[: round(max_seconds * target_rate)]
    return tensor.contiguous()


def prepare_waveform(
    waveform, sampling_rate, name: str, target_rate: int = SAMPLING_RATE, max_seconds: float | None = None
) -> torch.Tensor:
    """Checks a user waveform and returns it as a 1-D float32 tensor at ``target_rate``.

    Accepts numpy arrays or tensors, 1-D or 2-D (``(channels, samples)``, or ``(samples, channels)`` when one
    dimension is at most 8 long); integer PCM (int8, uint8, int16, int32) is scaled to [-1, 1). Raises ``ValueError`` naming ``name`` for
    empty audio, NaN/Inf samples, a non-numeric dtype or an implausible sampling rate. Logged fallbacks:
    several channels are averaged (warning: the caller may not expect it), another rate is resampled
    (info), audio longer than ``max_seconds`` is truncated (warning). Silence is returned unchanged: it is
    a legal input to classify; callers that cannot use it check :func:`is_silent`.
    """
    return _standardise(waveform, sampling_rate, name, target_rate, max_seconds, logging.WARNING)


def _read(source: Path | bytes, name: str) -> tuple[torch.Tensor, int]:
    """Decodes a file or encoded bytes to ``(channels, samples)``: libsndfile first (fast, no FFmpeg), then
    torchcodec/FFmpeg for containers libsndfile does not read (mp4, m4a, ...)."""
    try:
        file = io.BytesIO(source) if isinstance(source, bytes) else source
        data, rate = soundfile.read(file, dtype="float32", always_2d=True)  # (samples, channels)
        return torch.from_numpy(data.T), rate
    except soundfile.LibsndfileError as sndfile_error:
        try:
            from torchcodec.decoders import AudioDecoder

            samples = AudioDecoder(source if isinstance(source, bytes) else str(source)).get_all_samples()
        except (RuntimeError, ValueError) as ffmpeg_error:
            raise ValueError(f"{name}: cannot decode audio ({sndfile_error}; {ffmpeg_error})") from ffmpeg_error
        return samples.data, samples.sample_rate


def _read_file(path) -> tuple[torch.Tensor, int]:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"audio file not found: {path}")
    return _read(path, str(path))


def load_audio(path, sampling_rate: int = SAMPLING_RATE) -> torch.Tensor:
    """Reads an audio file (any format libsndfile or FFmpeg reads) as a 1-D float32 tensor at
    ``sampling_rate``. Multi-channel files are averaged (logged at info: common for music and noise
    recordings). Raises ``ValueError`` naming the path for missing, unreadable or empty files and NaN/Inf."""
    return waveform_from_value(path, str(path), sampling_rate)


def _decode(value, name: str) -> tuple[torch.Tensor, int]:
    if hasattr(value, "get_all_samples"):
        samples = value.get_all_samples()
        return samples.data, samples.sample_rate
    if isinstance(value, dict) and value.get("array") is not None:
        return value["array"], value.get("sampling_rate")
    if isinstance(value, dict) and value.get("bytes") is not None:
        return _read(value["bytes"], name)
    if isinstance(value, dict) and value.get("path") is not None:
        return _read_file(value["path"])
    if isinstance(value, (str, Path)):
        return _read_file(value)
    raise ValueError(f"{name}: cannot decode audio from {type(value).__name__} {str(value)[:80]!r}")


def decode_audio(value, name: str = "audio") -> tuple[torch.Tensor, int]:
    """Returns ``(waveform, sampling_rate)``, the waveform 1-D float32 mono at its own rate, from what a
    ``datasets`` ``Audio`` column holds: a torchcodec ``AudioDecoder`` (datasets 5 decoding), a dict with
    ``array`` and ``sampling_rate``, a dict with ``bytes`` and/or ``path`` (``decode=False``), or a path.
    Channels are averaged (logged at info); errors are ``ValueError`` naming ``name``."""
    data, rate = _decode(value, name)
    rate = _check_rate(rate, name)
    return _standardise(data, rate, name, rate, None, logging.INFO), rate


def waveform_from_value(value, name: str = "audio", sampling_rate: int = SAMPLING_RATE) -> torch.Tensor:
    """Like :func:`decode_audio`, resampled to ``sampling_rate``: what models and noise mixing take."""
    data, rate = _decode(value, name)
    return _standardise(data, rate, name, sampling_rate, None, logging.INFO)


def is_silent(waveform, threshold_db: float = -60.0) -> bool:
    """True when the mean power (dB relative to full scale, 0 dB = a full-scale square wave) is below
    ``threshold_db``: such clips carry no speech to mix noise against."""
    tensor = _as_float_tensor(waveform, "waveform").to(torch.float64)
    if tensor.numel() == 0:
        return True
    power = tensor.square().mean().item()
    return power == 0.0 or 10.0 * math.log10(power) < threshold_db


def audio_problem(path, min_seconds: float = 0.0) -> str | None:
    """Why the audio file at ``path`` cannot be used (missing, cannot be opened, not audio, no samples, shorter
    than ``min_seconds``), or None when it can. A header read, not a decode: libsndfile's, then FFmpeg's
    (torchcodec) for the formats libsndfile does not read; fast enough to check every file of a corpus first."""
    path = Path(path)
    if not path.is_file():
        return "file not found"
    if path.stat().st_size == 0:
        return "empty file (0 bytes)"
    try:
        info = soundfile.info(str(path))
        frames, rate = info.frames, info.samplerate
    except (soundfile.LibsndfileError, RuntimeError) as sndfile_error:
        try:
            from torchcodec.decoders import AudioDecoder

            metadata = AudioDecoder(str(path)).metadata
            rate = metadata.sample_rate
            frames = round((metadata.duration_seconds_from_header or 0) * (rate or 0)) if rate else 0
        except Exception as ffmpeg_error:  # torchcodec raises RuntimeError or ValueError by FFmpeg's error
            return f"not decodable audio ({sndfile_error}; {type(ffmpeg_error).__name__}: {ffmpeg_error})"
    if not rate or frames <= 0:
        return "no audio samples"
    if frames < min_seconds * rate:
        return f"{frames / rate:.3g} s long, shorter than the {min_seconds:g} s needed"
    return None
