"""Noise mixing at an exact signal-to-noise ratio, and synthetic white and pink noise.

:func:`mix_at_snr` is the only place where nser adds noise to speech: training augmentation and the fixed
noisy test sets both call it, so both use the same SNR definition.
"""

import math
import numbers

import torch
import torchaudio.functional as F

from .audio import SAMPLING_RATE

# Mean square below this (-100 dBFS) is digital silence: no SNR can be defined against it.
SILENCE_POWER = 1e-10
# Noise shorter than 0.1 s would be looped into an audible buzz at its repetition rate, not noise.
MIN_NOISE_SAMPLES = SAMPLING_RATE // 10


class SilentSpeechError(ValueError):
    """The speech has (almost) no power, so no noise level gives the requested SNR."""


def _check_snr(snr_db) -> float:
    if isinstance(snr_db, bool) or not isinstance(snr_db, numbers.Real) or not math.isfinite(snr_db):
        raise ValueError(f"SNR must be a finite number of dB, got {snr_db!r}")
    return float(snr_db)


def validate_snrs(snrs) -> list[float]:
    """Returns the SNRs as floats; raises ``ValueError`` naming the first bad value, or for an empty list."""
    if isinstance(snrs, (str, bytes)) or not hasattr(snrs, "__iter__"):
        raise ValueError(f"SNRs must be a list of numbers, got {snrs!r}")
    values = [_check_snr(snr) for snr in snrs]
    if not values:
        raise ValueError("SNR list is empty: give at least one SNR in dB")
    return values


def _check_waveform(waveform: torch.Tensor, name: str) -> None:
    if not isinstance(waveform, torch.Tensor) or waveform.ndim != 1 or not waveform.is_floating_point():
        raise ValueError(
            f"{name} must be a 1-D float tensor (see nser.audio.prepare_waveform), got {type(waveform).__name__} "
            f"of shape {tuple(getattr(waveform, 'shape', ()))} and dtype {getattr(waveform, 'dtype', None)}"
        )
    if not torch.isfinite(waveform).all():
        raise ValueError(f"{name} contains NaN or Inf samples")


def mean_power(waveform: torch.Tensor) -> float:
    """Mean square over the whole waveform, in float64 so that quiet clips do not underflow."""
    return waveform.to(torch.float64).square().mean().item()


def fit_noise(noise: torch.Tensor, num_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Noise of exactly ``num_samples``: looped from its start when shorter, cropped at an offset drawn from
    ``generator`` when longer, so long recordings contribute all their parts over many draws."""
    if noise.numel() < num_samples:
        return noise.repeat(math.ceil(num_samples / noise.numel()))[:num_samples]
    offset = int(torch.randint(noise.numel() - num_samples + 1, (1,), generator=generator))
    return noise[offset : offset + num_samples]


def mix_at_snr(
    speech: torch.Tensor, noise: torch.Tensor, snr_db: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Adds ``noise`` to ``speech`` so that 10·log10(P_speech / P_noise) equals ``snr_db`` exactly.

    P is the mean square over the whole clip, pauses and leading/trailing silence included: this is the
    definition of ``torchaudio.functional.add_noise`` (used here for the scaling) and of most noisy-SER
    papers, so our SNRs compare with theirs. A clip with long pauses therefore has louder speech segments
    than its nominal SNR suggests. The noise is fitted to the speech length with :func:`fit_noise`; the
    mixture is not rescaled or clipped, which would change the SNR it reports.

    Both inputs must be 1-D float tensors at the same rate (use ``nser.audio`` to get them). Raises
    :class:`SilentSpeechError` for silent speech, ``ValueError`` for silent noise (the segment used), noise
    shorter than ``MIN_NOISE_SAMPLES``, NaN/Inf samples or a non-finite SNR.
    """
    snr_db = _check_snr(snr_db)
    _check_waveform(speech, "speech")
    _check_waveform(noise, "noise")
    if mean_power(speech) <= SILENCE_POWER:
        raise SilentSpeechError(f"speech is silent (mean power {mean_power(speech):.3g}): SNR is undefined")
    if noise.numel() < MIN_NOISE_SAMPLES:
        raise ValueError(f"noise has {noise.numel()} samples, fewer than the {MIN_NOISE_SAMPLES} needed to loop it")
    segment = fit_noise(noise, speech.numel(), generator)
    if mean_power(segment) <= SILENCE_POWER:
        raise ValueError(
            f"noise is silent over the {speech.numel()} samples used (mean power {mean_power(segment):.3g})"
        )
    return F.add_noise(speech, segment.to(speech.dtype), torch.tensor(snr_db, dtype=speech.dtype))


def measured_snr_db(speech: torch.Tensor, mixture: torch.Tensor) -> float:
    """The SNR of ``mixture`` against the clean ``speech``, with the definition of :func:`mix_at_snr`."""
    noise_power = mean_power(mixture.to(torch.float64) - speech.to(torch.float64))
    return math.inf if noise_power == 0.0 else 10.0 * math.log10(mean_power(speech) / noise_power)


def white_noise(num_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Gaussian white noise with unit variance."""
    return torch.randn(num_samples, generator=generator)


def pink_noise(num_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Pink (1/f power) noise with zero mean and unit variance, by shaping white noise's spectrum with
    1/sqrt(f); the DC bin is zeroed, as 1/f is infinite there."""
    if num_samples < 2:
        raise ValueError(f"pink noise needs at least 2 samples, got {num_samples}")
    spectrum = torch.fft.rfft(torch.randn(num_samples, generator=generator, dtype=torch.float64))
    frequencies = torch.fft.rfftfreq(num_samples, dtype=torch.float64)
    spectrum[1:] /= frequencies[1:].sqrt()
    spectrum[0] = 0.0
    pink = torch.fft.irfft(spectrum, n=num_samples)
    return ((pink - pink.mean()) / pink.std()).to(torch.float32)
