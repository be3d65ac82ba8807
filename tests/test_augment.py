import logging
import math

import numpy as np
import pytest
import torch
import torchaudio
from conftest import tone
from datasets import Audio, Dataset
from transformers import TrainerState

from nser.audio import decode_audio, waveform_from_value
from nser.augment import (
    NoiseAugmentation,
    NoiseEpochCallback,
    condition_name,
    make_noisy_testset,
    split_by_condition,
)
from nser.noise import SilentSpeechError, measured_snr_db
from nser.noise_bank import NoiseBank

CATEGORIES = ["babble", "music", "pink", "street", "white"]


def speech_dataset(num_examples: int, with_id: bool = True, rate: int = 16000) -> Dataset:
    """Tones of different pitch and length standing in for utterances."""
    clips = [tone(0.3 + 0.05 * (i % 4), 150 + 20 * i, rate=rate) for i in range(num_examples)]
    columns = {"audio": [{"array": clip, "sampling_rate": rate} for clip in clips], "label": list(range(num_examples))}
    if with_id:
        columns["id"] = [f"utt{i}" for i in range(num_examples)]
    return Dataset.from_dict(columns).cast_column("audio", Audio())


def clean_speech(ds: Dataset, index: int) -> torch.Tensor:
    return decode_audio(ds[index]["audio"])[0]


@pytest.fixture
def bank(noise_folder):
    return NoiseBank.from_folder(noise_folder)


def test_condition_name():
    assert condition_name("babble", 5) == "babble_5dB"
    assert condition_name("babble", -5.0) == "babble_-5dB"
    assert condition_name("pink", 2.5) == "pink_2.5dB"
    assert condition_name("white", -0.0) == "white_0dB"


def test_training_augmentation_rejects_test_noise(bank):
    with pytest.raises(ValueError, match="must use train noise only; the bank covers splits \\['train', 'test'\\] "
                       "\\(6 non-train files"):
        NoiseAugmentation(bank, ["babble"])
    with pytest.raises(ValueError, match="covers splits \\['test'\\]"):
        NoiseAugmentation(bank.split("test"), ["babble"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"categories": ["car"]}, "unknown noise categories \\['car'\\]"),
        ({"snr_range": (10, 0)}, "snr_range must be \\(low, high\\) with low <= high"),
        ({"snr_range": (0, 5, 10)}, "snr_range must be \\(low, high\\)"),
        ({"snr_range": (0, math.nan)}, "SNR must be a finite number of dB, got nan"),
        ({"clean_probability": 1.5}, "clean_probability must be in \\[0, 1\\], got 1.5"),
    ],
)
def test_training_augmentation_argument_errors(bank, kwargs, message):
    with pytest.raises(ValueError, match=message):
        NoiseAugmentation(bank.split("train"), **{"categories": CATEGORIES, **kwargs})


def test_set_transform_mixes_at_the_recorded_snr(bank):
    ds = speech_dataset(8)
    augmentation = NoiseAugmentation(bank.split("train"), CATEGORIES, snr_range=(-5, 15), clean_probability=0.0)
    noisy = ds.with_transform(augmentation)
    for index in range(len(ds)):
        row = noisy[index]
        assert row["id"] == f"utt{index}" and row["label"] == index
        assert row["noise_type"] in CATEGORIES and -5 <= row["snr_db"] <= 15
        assert row["audio"]["sampling_rate"] == 16000 and row["audio"]["array"].dtype == np.float32
        mixture = torch.from_numpy(row["audio"]["array"])
        assert abs(measured_snr_db(clean_speech(ds, index), mixture) - row["snr_db"]) < 1e-3


def test_draws_are_reproducible_per_seed_epoch_and_example(bank):
    ds = speech_dataset(6)
    train = bank.split("train")

    def draw(epoch=0, seed=0):
        augmentation = NoiseAugmentation(train, CATEGORIES, clean_probability=0.0, seed=seed)
        augmentation.set_epoch(epoch)
        batch = ds.with_transform(augmentation)[:]
        return [row["array"] for row in batch["audio"]], batch["snr_db"], batch["noise_file"]

    arrays, snrs, files = draw()
    again_arrays, again_snrs, again_files = draw()
    assert all(np.array_equal(a, b) for a, b in zip(arrays, again_arrays)) and snrs == again_snrs and files == again_files
    assert len(set(snrs)) == len(snrs)  # every example gets its own draw
    for other in (draw(epoch=1), draw(seed=1)):
        assert all(a != b for a, b in zip(snrs, other[1]))


def test_same_draw_for_an_example_in_any_batch(bank):
    ds = speech_dataset(5)
    noisy = ds.with_transform(NoiseAugmentation(bank.split("train"), CATEGORIES, clean_probability=0.0))
    whole = noisy[:]
    assert [noisy[i]["snr_db"] for i in range(5)] == whole["snr_db"]
    assert np.array_equal(noisy[3]["audio"]["array"], whole["audio"][3]["array"])


def test_clean_probability_extremes(bank):
    ds = speech_dataset(6)
    clean = ds.with_transform(NoiseAugmentation(bank.split("train"), CATEGORIES, clean_probability=1.0))[:]
    assert clean["noise_type"] == ["clean"] * 6 and clean["noise_file"] == [""] * 6
    assert all(math.isnan(snr) for snr in clean["snr_db"])
    assert all(np.array_equal(row["array"], clean_speech(ds, i).numpy()) for i, row in enumerate(clean["audio"]))
    noisy = ds.with_transform(NoiseAugmentation(bank.split("train"), CATEGORIES, clean_probability=0.0))[:]
    assert "clean" not in noisy["noise_type"]


def _dominant_frequency(samples: np.ndarray, rate: int = 16000) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[spectrum.argmax()])


def test_speed_perturbation_changes_tempo_and_pitch_by_the_recorded_factor(bank):
    ds = speech_dataset(12)
    augmentation = NoiseAugmentation(bank.split("train"), CATEGORIES, clean_probability=1.0, speed_factors=(0.9, 1.0, 1.1))
    batch = ds.with_transform(augmentation)[:]
    assert set(batch["speed"]) == {0.9, 1.0, 1.1}  # every factor is drawn across 12 examples
    for index, (row, speed) in enumerate(zip(batch["audio"], batch["speed"])):
        original = clean_speech(ds, index).numpy()
        assert abs(len(row["array"]) - len(original) / speed) <= 1  # slower (speed < 1) is longer
        if speed == 1.0:
            assert np.array_equal(row["array"], original)
        else:
            pitch, original_pitch = _dominant_frequency(row["array"]), _dominant_frequency(original)
            assert pitch == pytest.approx(original_pitch * speed, rel=0.02)


def test_speed_perturbation_leaves_every_noise_draw_as_it_was(bank):
    ds = speech_dataset(8)
    plain = ds.with_transform(NoiseAugmentation(bank.split("train"), CATEGORIES, clean_probability=0.3))[:]
    perturbed = NoiseAugmentation(bank.split("train"), CATEGORIES, clean_probability=0.3, speed_factors=(0.9, 1.1))
    again = ds.with_transform(perturbed)[:]
    for column in ("noise_type", "noise_file"):
        assert again[column] == plain[column]
    np.testing.assert_array_equal(again["snr_db"], plain["snr_db"])
    assert again["speed"] == ds.with_transform(perturbed)[:]["speed"]  # reproducible
    assert "speed" not in plain  # off by default: the columns (and datasets fingerprints) are as before
    noisy = [i for i, kind in enumerate(again["noise_type"]) if kind != "clean"]
    assert noisy
    for index in noisy:  # the SNR is set against the perturbed speech
        speech = torchaudio.functional.speed(clean_speech(ds, index)[None], 16000, again["speed"][index])[0][0]
        mixture = torch.from_numpy(again["audio"][index]["array"])
        assert abs(measured_snr_db(speech, mixture) - again["snr_db"][index]) < 1e-3


@pytest.mark.parametrize("factors", [(0.9, 3.0), (0.0,), ("fast",)])
def test_speed_factors_out_of_range_are_refused(bank, factors):
    with pytest.raises(ValueError, match="speed factors must be in \\[0.5, 2\\]|could not convert"):
        NoiseAugmentation(bank.split("train"), CATEGORIES, speed_factors=factors)


def test_only_training_draws_are_speed_perturbed(bank):
    from nser.arguments import NoiseArguments
    from nser.experiment import NoisyViews

    ds = speech_dataset(4)
    arguments = NoiseArguments(train_noise_types=["babble"], speed_factors=[0.9, 1.1], augment_copies=2)
    views = NoisyViews({"train": ds, "validation": ds}, bank, arguments)
    for name, _, augmentation in views.train():
        assert augmentation.speed_factors == (0.9, 1.1), name
    assert views.validation()[2].speed_factors == ()


def test_training_only_ever_uses_train_files(bank):
    ds = speech_dataset(150, with_id=False)
    train = bank.split("train")
    augmentation = NoiseAugmentation(train, ["babble", "music", "street"], clean_probability=0.1)
    used = set()
    for epoch in range(2):
        augmentation.set_epoch(epoch)
        used |= set(ds.map(augmentation, batched=True, with_indices=True)["noise_file"])
    test_files = {entry.path for entry in bank.split("test").files}
    assert used - {""} == {entry.path for entry in train.files}  # all train files, no test file
    assert used.isdisjoint(test_files)


def test_map_with_two_processes_matches_one(bank):
    ds = speech_dataset(6, with_id=False)
    augmentation = NoiseAugmentation(bank.split("train"), CATEGORIES, clean_probability=0.3, seed=5)
    one = ds.map(augmentation, batched=True, with_indices=True, batch_size=2)
    two = ds.map(augmentation, batched=True, with_indices=True, batch_size=2, num_proc=2)
    assert one["noise_type"] == two["noise_type"] and one["noise_file"] == two["noise_file"]
    assert np.array_equal(np.array(one["snr_db"]), np.array(two["snr_db"]), equal_nan=True)
    for a, b in zip(one["audio"], two["audio"]):
        assert torch.equal(decode_audio(a)[0], decode_audio(b)[0])


def test_silent_speech_is_kept_clean_with_a_warning(bank, caplog):
    ds = Dataset.from_dict({"audio": [{"array": np.zeros(8000, np.float32), "sampling_rate": 16000}], "id": ["quiet"]})
    augmentation = NoiseAugmentation(bank.split("train"), CATEGORIES, clean_probability=0.0)
    with caplog.at_level(logging.WARNING, logger="nser.augment"):
        row = ds.with_transform(augmentation)[0]
    assert row["noise_type"] == "clean" and math.isnan(row["snr_db"])
    assert np.array_equal(row["audio"]["array"], np.zeros(8000, np.float32))
    assert [r.getMessage() for r in caplog.records] == ["example quiet: speech is silent, so no SNR can be set; kept clean"]


def test_transform_without_ids_or_indices_explains(bank):
    noisy = speech_dataset(2, with_id=False).with_transform(NoiseAugmentation(bank.split("train"), CATEGORIES))
    with pytest.raises(ValueError, match="cannot identify examples: no 'id' column .* add an id column"):
        noisy[0]


def test_epoch_callback_sets_the_epoch(bank):
    augmentation = NoiseAugmentation(bank.split("train"), CATEGORIES)
    callback = NoiseEpochCallback(augmentation)
    callback.on_epoch_begin(None, TrainerState(epoch=2.5), None)
    assert augmentation.epoch == 2
    callback.on_epoch_begin(None, TrainerState(), None)
    assert augmentation.epoch == 0


def test_noisy_testset_rows_columns_and_snrs(bank):
    ds = speech_dataset(3, rate=8000)
    testset = make_noisy_testset(ds, bank, [0, 10], ["babble", "pink"], seed=0)
    assert len(testset) == 3 * 2 * 2
    assert testset.column_names == ["audio", "label", "id", "snr_db", "noise_type", "noise_file", "condition"]
    assert testset.features["audio"] == Audio(sampling_rate=16000)
    assert testset["condition"][:4] == ["babble_0dB", "babble_10dB", "pink_0dB", "pink_10dB"]
    assert testset["label"] == [0] * 4 + [1] * 4 + [2] * 4
    test_files = {entry.path for entry in bank.split("test").files if entry.category == "babble"}
    for row in testset:
        waveform, rate = decode_audio(row["audio"])
        clean = waveform_from_value(ds[row["label"]]["audio"])  # resampled from 8 kHz
        assert rate == 16000 and waveform.shape == clean.shape
        assert abs(measured_snr_db(clean, waveform) - row["snr_db"]) < 1e-3
        assert row["noise_file"] in (test_files if row["noise_type"] == "babble" else {"synthetic:pink"})
        assert row["condition"] == condition_name(row["noise_type"], row["snr_db"])


def test_noisy_testset_uses_only_test_files(bank):
    testset = make_noisy_testset(speech_dataset(40), bank, [5], ["babble", "music", "street"])
    test_files = {entry.path for entry in bank.split("test").files}
    assert set(testset["noise_file"]) == test_files  # 40 draws per category reach both test files of each


def test_noisy_testset_is_the_same_bytes_every_run_and_with_two_processes(bank):
    ds = speech_dataset(4)
    runs = [
        make_noisy_testset(ds, bank, [-5, 5], ["white", "street"], seed=3),
        make_noisy_testset(ds, bank, [-5, 5], ["white", "street"], seed=3),
        make_noisy_testset(ds, bank, [-5, 5], ["white", "street"], seed=3, num_proc=2),
    ]
    stored = [run.data.column("audio").to_pylist() for run in runs]
    assert stored[0] == stored[1] == stored[2]
    assert runs[0]._fingerprint == runs[1]._fingerprint  # a deterministic map: datasets can cache it
    other_seed = make_noisy_testset(ds, bank, [-5, 5], ["white", "street"], seed=4)
    assert other_seed.data.column("audio").to_pylist() != stored[0]
    assert other_seed._fingerprint != runs[0]._fingerprint


def test_noisy_testset_stores_loud_mixtures_without_loss(bank):
    loud = Dataset.from_dict({"audio": [{"array": tone(0.5, amplitude=0.95), "sampling_rate": 16000}]})
    row = make_noisy_testset(loud, bank, [-5], ["white"])[0]
    waveform, _ = decode_audio(row["audio"])
    assert waveform.abs().max() > 1.0  # 16-bit PCM would have clipped these samples
    assert abs(measured_snr_db(torch.from_numpy(tone(0.5, amplitude=0.95)), waveform) + 5.0) < 1e-3


@pytest.mark.parametrize(
    ("snrs", "noise_types", "message"),
    [
        ([], ["babble"], "SNR list is empty"),
        ([0, "high"], ["babble"], "got 'high'"),
        ([5, 5.0], ["babble"], "repeated SNRs would duplicate test rows: \\[5.0, 5.0\\]"),
        ([5], ["babble", "babble"], "repeated noise types"),
        ([5], ["car"], "unknown noise categories \\['car'\\] in splits \\['test'\\]"),
        ([5], [], "no noise categories selected"),
    ],
)
def test_noisy_testset_argument_errors(bank, snrs, noise_types, message):
    with pytest.raises(ValueError, match=message):
        make_noisy_testset(speech_dataset(1), bank, snrs, noise_types)


def test_noisy_testset_column_errors(bank):
    with pytest.raises(ValueError, match="audio column 'speech' not found; columns: \\['audio', 'label', 'id'\\]"):
        make_noisy_testset(speech_dataset(1), bank, [5], ["babble"], audio_column="speech")
    testset = make_noisy_testset(speech_dataset(1), bank, [5], ["babble"])
    with pytest.raises(ValueError, match="dataset already has columns \\['snr_db', 'noise_type', 'noise_file', 'condition'\\]"):
        make_noisy_testset(testset, bank, [5], ["babble"])


def test_noisy_testset_refuses_silent_speech(bank):
    ds = Dataset.from_dict({"audio": [{"array": np.zeros(8000, np.float32), "sampling_rate": 16000}], "id": ["quiet"]})
    with pytest.raises(SilentSpeechError, match="example quiet: speech is silent"):
        make_noisy_testset(ds, bank, [5], ["white"])


def test_split_by_condition(bank):
    testset = make_noisy_testset(speech_dataset(3), bank, [0, 5], ["music", "white"])
    parts = split_by_condition(testset)
    assert list(parts) == ["music_0dB", "music_5dB", "white_0dB", "white_5dB"]
    for condition, part in parts.items():
        assert part["condition"] == [condition] * 3 and part["id"] == ["utt0", "utt1", "utt2"]
    with pytest.raises(ValueError, match="no 'condition' column"):
        split_by_condition(speech_dataset(1))
