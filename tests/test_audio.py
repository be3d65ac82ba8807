import logging

import numpy as np
import pytest
import soundfile
import torch
import torchaudio.functional as F
from conftest import tone
from datasets import Audio, Dataset

from nser.audio import SAMPLING_RATE, decode_audio, is_silent, load_audio, prepare_waveform, waveform_from_value


def write(path, samples, rate=SAMPLING_RATE, subtype="FLOAT"):
    soundfile.write(path, samples, rate, subtype=subtype)
    return path


def test_load_audio_reads_16k_mono_exactly(tmp_path):
    samples = tone(0.5)
    waveform = load_audio(write(tmp_path / "a.wav", samples))
    assert waveform.dtype == torch.float32 and waveform.ndim == 1
    assert torch.equal(waveform, torch.from_numpy(samples))


def test_load_audio_averages_channels_and_resamples(tmp_path, caplog):
    left, right = tone(1.0, 220, rate=44100), tone(1.0, 330, rate=44100)
    path = write(tmp_path / "stereo.flac", np.stack([left, right], axis=1), 44100, "PCM_16")
    with caplog.at_level(logging.INFO, logger="nser.audio"):
        waveform = load_audio(path)
    expected = F.resample(torch.from_numpy(soundfile.read(path, dtype="float32")[0].mean(axis=1)), 44100, 16000)
    assert waveform.shape == (16000,)
    torch.testing.assert_close(waveform, expected)
    messages = [(record.levelno, record.getMessage()) for record in caplog.records]
    assert (logging.INFO, f"{path}: averaging 2 channels to mono") in messages
    assert (logging.INFO, f"{path}: resampling from 44100 Hz to 16000 Hz") in messages


def test_load_audio_errors_name_the_file(tmp_path):
    missing = tmp_path / "missing.wav"
    with pytest.raises(ValueError, match=f"audio file not found: {missing}"):
        load_audio(missing)
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"not audio at all" * 10)
    with pytest.raises(ValueError, match=f"{garbage}: cannot decode audio"):
        load_audio(garbage)
    empty = write(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32))
    with pytest.raises(ValueError, match=f"{empty}: audio is empty"):
        load_audio(empty)
    nan = write(tmp_path / "nan.wav", np.array([0.1, np.nan, 0.2], dtype=np.float32))
    with pytest.raises(ValueError, match=f"{nan}: audio contains NaN or Inf"):
        load_audio(nan)


def test_prepare_waveform_accepts_numpy_and_torch_1d():
    samples = tone(0.1)
    assert torch.equal(prepare_waveform(samples, 16000, "x"), torch.from_numpy(samples))
    assert torch.equal(prepare_waveform(torch.from_numpy(samples).double(), 16000, "x"), torch.from_numpy(samples))


@pytest.mark.parametrize("layout", ["channels_first", "channels_last"])
def test_prepare_waveform_averages_stereo_with_warning(layout, caplog):
    stereo = np.stack([tone(0.1, 220), tone(0.1, 440)])  # (2, samples)
    with caplog.at_level(logging.WARNING, logger="nser.audio"):
        waveform = prepare_waveform(stereo if layout == "channels_first" else stereo.T, 16000, "clip")
    assert torch.equal(waveform, torch.from_numpy(stereo).mean(dim=0))
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, "clip: averaging 2 channels to mono")
    ]


def test_prepare_waveform_single_channel_2d_is_not_a_downmix(caplog):
    samples = tone(0.1)
    with caplog.at_level(logging.INFO, logger="nser.audio"):
        assert torch.equal(prepare_waveform(samples[None, :], 16000, "x"), torch.from_numpy(samples))
    assert caplog.records == []


def test_prepare_waveform_scales_int16_pcm():
    pcm = np.array([16384, -32768, 0], dtype=np.int16)
    assert prepare_waveform(pcm, 16000, "x").tolist() == [0.5, -1.0, 0.0]


@pytest.mark.parametrize(
    ("pcm", "expected"),
    [
        (np.array([64, -128, 0], dtype=np.int8), [0.5, -1.0, 0.0]),
        (np.array([192, 0, 128], dtype=np.uint8), [0.5, -1.0, 0.0]),  # 8-bit WAV: unsigned, centred on 128
        (np.array([2**30, -(2**31), 0], dtype=np.int32), [0.5, -1.0, 0.0]),
        (torch.tensor([192, 0, 128], dtype=torch.uint8), [0.5, -1.0, 0.0]),
    ],
)
def test_prepare_waveform_scales_every_integer_pcm_type(pcm, expected):
    assert prepare_waveform(pcm, 16000, "x").tolist() == expected


def test_prepare_waveform_resamples_with_info(caplog):
    samples = tone(1.0, rate=48000)
    with caplog.at_level(logging.INFO, logger="nser.audio"):
        waveform = prepare_waveform(samples, 48000, "clip")
    assert torch.equal(waveform, F.resample(torch.from_numpy(samples), 48000, 16000))
    assert waveform.shape == (16000,)
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.INFO, "clip: resampling from 48000 Hz to 16000 Hz")
    ]


def test_prepare_waveform_truncates_long_audio_with_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="nser.audio"):
        waveform = prepare_waveform(tone(3.0), 16000, "clip", max_seconds=2.0)
    assert torch.equal(waveform, torch.from_numpy(tone(3.0)[:32000]))
    assert [r.getMessage() for r in caplog.records] == ["clip: 3.00 s long, truncated to 2.00 s"]


def test_prepare_waveform_keeps_silence():
    assert torch.equal(prepare_waveform(np.zeros(160, dtype=np.float32), 16000, "x"), torch.zeros(160))


@pytest.mark.parametrize(
    ("waveform", "rate", "message"),
    [
        (np.zeros(0, dtype=np.float32), 16000, "clip: audio is empty"),
        (np.array([0.0, np.nan], dtype=np.float32), 16000, "clip: audio contains NaN or Inf"),
        (np.array([0.0, np.inf], dtype=np.float32), 16000, "clip: audio contains NaN or Inf"),
        (tone(0.1), 0, "clip: sampling rate must be a whole number of Hz in \\[1000, 384000\\], got 0"),
        (tone(0.1), -16000, "got -16000"),
        (tone(0.1), 16000.5, "got 16000.5"),
        (tone(0.1), 16_000_000, "got 16000000"),
        (tone(0.1), float("nan"), "got nan"),
        (tone(0.1), "16000", "got '16000'"),
        (np.array(["a", "b"]), 16000, "clip: audio samples must be numbers, got dtype <U1"),
        (np.array([1 + 1j, 0j]), 16000, "clip: audio samples must be numbers, got dtype complex128"),
        (torch.tensor([True, False]), 16000, "clip: audio samples of dtype torch.bool are neither float nor integer PCM"),
        (np.array([True, False]), 16000, "clip: audio samples must be numbers, got dtype bool"),
        (np.array([1, 2], dtype=np.int64), 16000, "clip: audio samples of dtype torch.int64 are neither float nor integer PCM \\(int8, uint8, int16, int32\\)"),
        (np.array([1, 2], dtype=np.uint16), 16000, "clip: audio samples of dtype uint16 are neither float nor integer PCM"),
        (np.zeros((2, 2, 100), dtype=np.float32), 16000, "clip: expected a 1-D or 2-D waveform, got shape \\(2, 2, 100\\)"),
        (np.zeros((100, 200), dtype=np.float32), 16000, "clip: cannot tell channels from samples in shape \\(100, 200\\)"),
    ],
)
def test_prepare_waveform_errors_name_the_input(waveform, rate, message):
    with pytest.raises(ValueError, match=message):
        prepare_waveform(waveform, rate, "clip")


def test_is_silent():
    assert is_silent(np.zeros(100, dtype=np.float32))
    assert is_silent(np.zeros(0, dtype=np.float32))
    assert is_silent(tone(0.1, amplitude=10 ** (-70 / 20) * np.sqrt(2)))  # -70 dBFS
    assert not is_silent(tone(0.1, amplitude=10 ** (-50 / 20) * np.sqrt(2)))  # -50 dBFS
    assert not is_silent(torch.from_numpy(tone(0.1)))


def test_decode_audio_from_every_datasets_form(tmp_path):
    samples = tone(0.25, rate=8000)
    path = write(tmp_path / "a.wav", samples, rate=8000)
    decoder = Dataset.from_dict({"audio": [str(path)]}).cast_column("audio", Audio())[0]["audio"]
    assert hasattr(decoder, "get_all_samples")  # what datasets 5 yields for an Audio column
    values = [
        decoder,
        {"array": samples, "sampling_rate": 8000},
        {"bytes": path.read_bytes(), "path": None},
        {"bytes": None, "path": str(path)},
        str(path),
        path,
    ]
    for value in values:
        waveform, rate = decode_audio(value)
        assert rate == 8000
        assert torch.equal(waveform, torch.from_numpy(samples)), type(value)


def test_decode_audio_rejects_unknown_values():
    with pytest.raises(ValueError, match="row 3: cannot decode audio from dict"):
        decode_audio({"bytes": None, "path": None}, name="row 3")
    with pytest.raises(ValueError, match="row 3: sampling rate must be"):
        decode_audio({"array": tone(0.1), "sampling_rate": None}, name="row 3")


def test_waveform_from_value_resamples_to_16k():
    waveform = waveform_from_value({"array": tone(0.5, rate=8000), "sampling_rate": 8000})
    assert waveform.shape == (8000,)
    assert torch.equal(waveform, F.resample(torch.from_numpy(tone(0.5, rate=8000)), 8000, 16000))
