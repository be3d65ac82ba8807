import math

import numpy as np
import pytest
import soundfile
import torch
from conftest import tone

from nser.audio import load_audio
from nser.noise import (
    MIN_NOISE_SAMPLES,
    SilentSpeechError,
    fit_noise,
    mean_power,
    measured_snr_db,
    mix_at_snr,
    pink_noise,
    validate_snrs,
    white_noise,
)

SPEECH = torch.from_numpy(tone(1.0, 220) + tone(1.0, 1330, amplitude=0.1))  # 16000 samples


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tone_file_noise(tmp_path, num_samples: int) -> torch.Tensor:
    """A "recorded" noise: a tone written as WAV and read back as a noise file would be."""
    path = tmp_path / "tone.wav"
    soundfile.write(path, tone(num_samples / 16000, 3000, amplitude=0.5), 16000)
    return load_audio(path)


@pytest.mark.parametrize("kind", ["white", "pink", "tone_file"])
@pytest.mark.parametrize("noise_samples", [4000, 16000, 56000])  # shorter than, as long as, longer than speech
@pytest.mark.parametrize("snr_db", [-5.0, 0.0, 7.5, 20.0])
def test_mixture_has_the_requested_snr(tmp_path, kind, noise_samples, snr_db):
    noise = {
        "white": lambda: white_noise(noise_samples, seeded(1)),
        "pink": lambda: pink_noise(noise_samples, seeded(1)),
        "tone_file": lambda: tone_file_noise(tmp_path, noise_samples),
    }[kind]()
    mixture = mix_at_snr(SPEECH, noise, snr_db, seeded(2))
    assert mixture.shape == SPEECH.shape and mixture.dtype == torch.float32
    assert abs(measured_snr_db(SPEECH, mixture) - snr_db) < 1e-3


def test_snr_counts_pauses_as_part_of_the_clip():
    """The whole clip's mean power is the reference: half silence halves the speech power."""
    speech = torch.cat([torch.zeros(8000), SPEECH[:8000]])
    noise = white_noise(16000, seeded(0))
    mixture = mix_at_snr(speech, noise, 0.0, seeded(0))
    assert math.isclose(mean_power(mixture - speech), mean_power(speech), rel_tol=1e-5)
    assert math.isclose(mean_power(speech), mean_power(SPEECH[:8000]) / 2, rel_tol=1e-6)


def test_mixture_is_speech_plus_scaled_fitted_noise():
    noise = white_noise(40000, seeded(3))
    mixture = mix_at_snr(SPEECH, noise, 5.0, seeded(4))
    segment = fit_noise(noise, SPEECH.numel(), seeded(4))
    scale = ((mixture - SPEECH) / segment).median()
    torch.testing.assert_close(mixture, SPEECH + scale * segment)


def test_short_noise_is_looped_from_its_start():
    noise = white_noise(3000, seeded(0))
    fitted = fit_noise(noise, 7000, seeded(0))
    assert torch.equal(fitted, torch.cat([noise, noise, noise[:1000]]))


def test_long_noise_is_cropped_at_a_seeded_random_offset():
    noise = torch.arange(10000, dtype=torch.float32)
    offsets = {int(fit_noise(noise, 1000, seeded(seed))[0]) for seed in range(20)}
    for seed in range(20):
        crop = fit_noise(noise, 1000, seeded(seed))
        assert torch.equal(crop, noise[int(crop[0]) : int(crop[0]) + 1000])
        assert torch.equal(crop, fit_noise(noise, 1000, seeded(seed)))
    assert len(offsets) == 20


def test_mixing_is_deterministic_given_the_generator():
    noise = pink_noise(48000, seeded(5))
    assert torch.equal(mix_at_snr(SPEECH, noise, 3.0, seeded(9)), mix_at_snr(SPEECH, noise, 3.0, seeded(9)))
    assert not torch.equal(mix_at_snr(SPEECH, noise, 3.0, seeded(9)), mix_at_snr(SPEECH, noise, 3.0, seeded(10)))


def test_silent_speech_raises_silent_speech_error():
    with pytest.raises(SilentSpeechError, match="speech is silent"):
        mix_at_snr(torch.zeros(16000), white_noise(16000, seeded(0)), 0.0)
    assert issubclass(SilentSpeechError, ValueError)


def test_silent_noise_raises():
    with pytest.raises(ValueError, match="noise is silent over the 16000 samples used"):
        mix_at_snr(SPEECH, torch.zeros(16000), 0.0)


def test_silent_noise_segment_raises():
    """A crop that falls in a silent stretch of a recording has no power to scale."""
    noise = torch.cat([torch.zeros(20000), white_noise(20000, seeded(0))])
    offsets = {seed: int(fit_noise(torch.arange(40000.0), 16000, seeded(seed))[0]) for seed in range(50)}
    silent_seed = next(seed for seed, offset in offsets.items() if offset <= 4000)
    audible_seed = next(seed for seed, offset in offsets.items() if offset > 4000)
    with pytest.raises(ValueError, match="noise is silent over the 16000 samples used"):
        mix_at_snr(SPEECH, noise, 0.0, seeded(silent_seed))
    assert abs(measured_snr_db(SPEECH, mix_at_snr(SPEECH, noise, 0.0, seeded(audible_seed)))) < 1e-3


def test_too_short_noise_raises():
    with pytest.raises(ValueError, match=f"noise has {MIN_NOISE_SAMPLES - 1} samples, fewer than the {MIN_NOISE_SAMPLES}"):
        mix_at_snr(SPEECH, white_noise(MIN_NOISE_SAMPLES - 1, seeded(0)), 0.0)


@pytest.mark.parametrize("which", ["speech", "noise"])
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_samples_raise(which, bad):
    speech, noise = SPEECH.clone(), white_noise(16000, seeded(0))
    {"speech": speech, "noise": noise}[which][10] = bad
    with pytest.raises(ValueError, match=f"{which} contains NaN or Inf samples"):
        mix_at_snr(speech, noise, 0.0)


def test_multichannel_input_raises():
    with pytest.raises(ValueError, match="speech must be a 1-D float tensor .* shape \\(2, 16000\\)"):
        mix_at_snr(SPEECH.repeat(2, 1), white_noise(16000), 0.0)


@pytest.mark.parametrize("snr", [math.nan, math.inf, -math.inf, "5", None, True])
def test_bad_snr_raises(snr):
    with pytest.raises(ValueError, match="SNR must be a finite number of dB, got"):
        mix_at_snr(SPEECH, white_noise(16000), snr)


def test_validate_snrs():
    values = validate_snrs([0, 5, 7.5, np.float32(-5), np.int64(10)])
    assert values == [0.0, 5.0, 7.5, -5.0, 10.0]
    assert all(type(value) is float for value in values)


@pytest.mark.parametrize(
    ("snrs", "message"),
    [
        ([], "SNR list is empty"),
        ([0, "x"], "got 'x'"),
        ([0, None], "got None"),
        ([5, math.nan], "got nan"),
        ([math.inf], "got inf"),
        ("05", "SNRs must be a list of numbers, got '05'"),
        (5, "SNRs must be a list of numbers, got 5"),
    ],
)
def test_validate_snrs_errors_name_the_bad_value(snrs, message):
    with pytest.raises(ValueError, match=message):
        validate_snrs(snrs)


def test_measured_snr_of_clean_speech_is_infinite():
    assert measured_snr_db(SPEECH, SPEECH) == math.inf


def test_white_noise_has_unit_variance():
    noise = white_noise(160000, seeded(0))
    assert noise.dtype == torch.float32 and noise.shape == (160000,)
    assert abs(noise.var().item() - 1.0) < 0.02 and abs(noise.mean().item()) < 0.01
    assert torch.equal(noise, white_noise(160000, seeded(0)))


def test_pink_noise_has_unit_variance_and_a_1_over_f_spectrum():
    noise = pink_noise(2**17, seeded(0))
    assert noise.dtype == torch.float32 and noise.shape == (2**17,)
    assert abs(noise.std().item() - 1.0) < 1e-4 and abs(noise.mean().item()) < 1e-6
    power = torch.fft.rfft(noise.double()).abs().square()
    frequencies = torch.fft.rfftfreq(noise.numel(), dtype=torch.float64)
    edges = torch.logspace(-3, math.log10(0.5), 12, dtype=torch.float64)  # octave-ish bands
    bands = [(frequencies >= low) & (frequencies < high) for low, high in zip(edges[:-1], edges[1:])]
    log_f = torch.stack([frequencies[band].log10().mean() for band in bands])
    log_p = torch.stack([power[band].mean().log10() for band in bands])
    slope = ((log_f - log_f.mean()) * (log_p - log_p.mean())).sum() / (log_f - log_f.mean()).square().sum()
    assert -1.1 < slope.item() < -0.9
    assert torch.equal(noise, pink_noise(2**17, seeded(0)))


def test_pink_noise_needs_two_samples():
    with pytest.raises(ValueError, match="pink noise needs at least 2 samples, got 1"):
        pink_noise(1)
