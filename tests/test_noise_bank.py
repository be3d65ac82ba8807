import csv
import pickle
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from conftest import tone
from datasets import Audio, Dataset, DatasetDict

from nser.audio import load_audio
from nser.noise_bank import NoiseBank, NoiseEntry

SHARED_NOISE = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "noise"


def file_paths(bank: NoiseBank, split: str) -> set[str]:
    return {entry.path for entry in bank.files if entry.split == split}


def write_csv(path: Path, rows) -> Path:
    with path.open("w", newline="") as file:
        csv.writer(file).writerows([("path", "category", "split"), *rows])
    return path


def test_from_folder_splits_each_category_by_hash(noise_folder):
    bank = NoiseBank.from_folder(noise_folder, test_fraction=0.3, seed=0)
    assert bank.categories == ["babble", "music", "pink", "street", "white"]
    assert len(bank.files) == 18
    assert file_paths(bank, "train").isdisjoint(file_paths(bank, "test"))
    for category in ("babble", "music", "street"):
        splits = [entry.split for entry in bank.files if entry.category == category]
        assert sorted(splits) == ["test"] * 2 + ["train"] * 4  # round(0.3 * 6) = 2 test files
        assert all(Path(entry.path).parent.name == category for entry in bank.entries_for(category))


def test_hash_split_is_deterministic_and_depends_on_the_seed(noise_folder):
    assert NoiseBank.from_folder(noise_folder, seed=0).files == NoiseBank.from_folder(noise_folder, seed=0).files
    assert file_paths(NoiseBank.from_folder(noise_folder, seed=0), "test") != file_paths(
        NoiseBank.from_folder(noise_folder, seed=1), "test"
    )


def test_single_file_category_is_train_only(tmp_path):
    (tmp_path / "hum").mkdir()
    soundfile.write(tmp_path / "hum" / "a.wav", tone(0.5), 16000)
    bank = NoiseBank.from_folder(tmp_path)
    assert [(entry.category, entry.split) for entry in bank.files] == [("hum", "train")]
    with pytest.raises(ValueError, match="unknown noise categories \\['hum'\\] in splits \\['test'\\]"):
        bank.split("test").select(["hum"])


def test_from_folder_uses_metadata_split(noise_folder):
    rows = [(f"{c}/{c}-{i}.wav", c, "test" if i == 0 else "train") for c in ("babble", "music") for i in range(6)]
    write_csv(noise_folder / "metadata.csv", rows)
    bank = NoiseBank.from_folder(noise_folder)
    assert file_paths(bank, "test") == {str(noise_folder / c / f"{c}-0.wav") for c in ("babble", "music")}
    assert bank.categories == ["babble", "music", "pink", "white"]  # street is not in the metadata


def test_from_folder_ignores_metadata_without_split(noise_folder):
    (noise_folder / "metadata.csv").write_text("path,category\nbabble/babble-0.wav,babble\n")
    bank = NoiseBank.from_folder(noise_folder)
    assert len(bank.files) == 18
    assert sorted(entry.split for entry in bank.files if entry.category == "babble") == ["test"] * 2 + ["train"] * 4


def test_from_csv_resolves_paths_from_the_csv_folder_or_its_parent(noise_folder):
    rows = [("babble/babble-0.wav", "babble", "train"), ("noise/music/music-0.wav", "music", "test")]
    bank = NoiseBank.from_csv(write_csv(noise_folder / "list.csv", rows))
    assert [entry.path for entry in bank.files] == [
        str(noise_folder / "babble" / "babble-0.wav"),
        str(noise_folder / "music" / "music-0.wav"),
    ]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([("babble/nope.wav", "babble", "train")], "noise file 'babble/nope.wav' listed in .*list.csv not found"),
        ([("babble/babble-0.wav", "babble", "dev")], "babble-0.wav: split 'dev' is not one of \\['train', 'test'\\]"),
        ([("babble/babble-0.wav", "white", "train")], "category 'white' is empty or reserved"),
        (
            [("babble/babble-0.wav", "babble", "train"), ("babble/babble-0.wav", "babble", "test")],
            "noise files listed in both train and test: \\[.*babble-0.wav'\\] \\(1 in all\\)",
        ),
        ([], "list.csv: lists no noise files"),
    ],
)
def test_from_csv_errors(noise_folder, rows, message):
    with pytest.raises(ValueError, match=message):
        NoiseBank.from_csv(write_csv(noise_folder / "list.csv", rows))


def test_from_csv_missing_columns(tmp_path):
    (tmp_path / "list.csv").write_text("file,category\na.wav,babble\n")
    with pytest.raises(ValueError, match="missing columns \\['path', 'split'\\]; found \\['file', 'category'\\]"):
        NoiseBank.from_csv(tmp_path / "list.csv")


def test_empty_or_missing_folders(tmp_path):
    with pytest.raises(ValueError, match="noise folder not found"):
        NoiseBank.from_folder(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="no audio files in .*: expected .*/<category>/<file>"):
        NoiseBank.from_folder(tmp_path)
    (tmp_path / "babble").mkdir()
    (tmp_path / "babble" / "notes.txt").write_text("not audio")
    with pytest.raises(ValueError, match="no audio files in"):
        NoiseBank.from_folder(tmp_path)
    soundfile.write(tmp_path / "babble" / "a.wav", tone(0.5), 16000)
    (tmp_path / "music").mkdir()
    with pytest.raises(ValueError, match="category folders without audio files: \\['music'\\]"):
        NoiseBank.from_folder(tmp_path)


def test_split_and_select(noise_folder):
    bank = NoiseBank.from_folder(noise_folder)
    train = bank.split("train")
    assert train.splits == ("train",) and {entry.split for entry in train.entries} == {"train"}
    assert file_paths(train, "train") == file_paths(bank, "train")
    chosen = train.select(["babble", "white"])
    assert chosen.categories == ["babble", "white"]
    assert [entry.path for entry in chosen.entries_for("white")] == ["synthetic:white"]
    assert len(chosen.entries_for("babble")) == 4
    assert train.select("pink").files == ()
    with pytest.raises(ValueError, match="unknown noise categories \\['car'\\] in splits \\['train'\\]; available: "
                       "\\['babble', 'music', 'pink', 'street', 'white'\\]"):
        train.select(["babble", "car"])
    with pytest.raises(ValueError, match="no noise categories selected"):
        train.select([])
    with pytest.raises(ValueError, match="requested split 'validation' is not one of \\['train', 'test'\\]"):
        bank.split("validation")


def test_load_files_cached_and_converted(noise_folder):
    stereo = np.stack([tone(1.0, 300, rate=44100), tone(1.0, 500, rate=44100)], axis=1)
    soundfile.write(noise_folder / "music" / "stereo.wav", stereo, 44100, subtype="FLOAT")
    bank = NoiseBank.from_folder(noise_folder)
    entry = next(entry for entry in bank.files if entry.path.endswith("stereo.wav"))
    waveform = bank.load(entry)
    assert waveform.shape == (16000,) and waveform.dtype == torch.float32
    assert torch.equal(waveform, load_audio(entry.path))
    assert bank.load(entry) is waveform


def test_load_synthetic_noise_is_generated_from_the_generator(noise_folder):
    bank = NoiseBank.from_folder(noise_folder)
    pink = bank.entries_for("pink")[0]
    first = bank.load(pink, 8000, torch.Generator().manual_seed(3))
    assert first.shape == (8000,)
    assert torch.equal(first, bank.load(pink, 8000, torch.Generator().manual_seed(3)))
    assert not torch.equal(first, bank.load(pink, 8000, torch.Generator().manual_seed(4)))
    with pytest.raises(ValueError, match="synthetic:pink: synthetic noise needs num_samples"):
        bank.load(pink)


def test_missing_noise_file_is_named(noise_folder):
    bank = NoiseBank.from_folder(noise_folder)
    entry = bank.files[0]
    Path(entry.path).unlink()
    with pytest.raises(ValueError, match=f"audio file not found: {entry.path}"):
        bank.load(entry)


def test_save_split_records_every_entry(noise_folder, tmp_path):
    bank = NoiseBank.from_folder(noise_folder)
    path = bank.save_split(tmp_path / "run" / "noise_split.csv")
    with path.open(newline="") as file:
        rows = list(csv.DictReader(file))
    assert [(row["path"], row["category"], row["split"]) for row in rows] == [
        (entry.path, entry.category, entry.split) for entry in bank.entries
    ]
    assert NoiseBank.from_csv(write_csv(tmp_path / "files.csv", [tuple(row.values()) for row in rows[:18]])).files == bank.files


def test_pickling_drops_the_audio_cache(noise_folder):
    bank = NoiseBank.from_folder(noise_folder)
    bank.load(bank.files[0])
    copy = pickle.loads(pickle.dumps(bank))
    assert copy.entries == bank.entries and copy._cache == {} and len(bank._cache) == 1


def noise_dataset(noise_folder) -> DatasetDict:
    bank = NoiseBank.from_folder(noise_folder)
    return DatasetDict(
        {
            split: Dataset.from_dict(
                {
                    "audio": [entry.path for entry in bank.files if entry.split == split],
                    "category": [entry.category for entry in bank.files if entry.split == split],
                    "split": [split] * len(file_paths(bank, split)),
                }
            ).cast_column("audio", Audio())
            for split in ("train", "test")
        }
    )


def test_from_dataset_with_file_paths(noise_folder):
    bank = NoiseBank.from_dataset(noise_dataset(noise_folder))
    folder_bank = NoiseBank.from_folder(noise_folder)
    assert {(e.path, e.category, e.split) for e in bank.files} == {(e.path, e.category, e.split) for e in folder_bank.files}
    entry = bank.split("test").entries_for("music")[0]
    assert torch.equal(bank.split("test").load(entry), load_audio(entry.path))


def test_from_dataset_saved_to_disk_embeds_bytes(noise_folder, tmp_path):
    noise_dataset(noise_folder).save_to_disk(tmp_path / "noise_ds")
    bank = NoiseBank.from_dataset(tmp_path / "noise_ds")
    entry = bank.split("train").entries_for("street")[0]
    assert entry.row is not None and "#sha256=" in entry.path
    original = noise_folder / "street" / entry.path.split("#")[0]
    assert torch.equal(bank.load(entry), load_audio(original))
    assert file_paths(bank, "train").isdisjoint(file_paths(bank, "test"))


def test_from_dataset_detects_the_same_audio_in_both_splits(noise_folder):
    path = str(noise_folder / "babble" / "babble-0.wav")
    data = Dataset.from_dict({"audio": [path, path], "category": ["babble"] * 2, "split": ["train", "test"]})
    with pytest.raises(ValueError, match="noise files listed in both train and test"):
        NoiseBank.from_dataset(data.cast_column("audio", Audio()))


def test_from_dataset_missing_columns(noise_folder):
    data = Dataset.from_dict({"audio": [str(noise_folder / "babble" / "babble-0.wav")], "label": ["babble"]})
    with pytest.raises(ValueError, match="noise dataset lacks columns \\['category', 'split'\\]"):
        NoiseBank.from_dataset(data)


def test_synthetic_only_bank():
    bank = NoiseBank()
    assert bank.categories == ["pink", "white"] and bank.files == ()
    assert [entry.path for entry in bank.split("test").entries] == ["synthetic:white", "synthetic:pink"]
    with pytest.raises(ValueError, match="unknown synthetic noise \\['brown'\\]; available: \\['white', 'pink'\\]"):
        NoiseBank(synthetic=["brown"])


def test_entries_are_frozen_records():
    entry = NoiseEntry("synthetic:white", "white", "train")
    assert entry.synthetic and not NoiseEntry("a.wav", "babble", "train").synthetic
    with pytest.raises(AttributeError):
        entry.split = "test"


@pytest.mark.skipif(not SHARED_NOISE.is_dir(), reason=f"shared noise data not found at {SHARED_NOISE}")
def test_real_noise_folder():
    bank = NoiseBank.from_folder(SHARED_NOISE)
    assert bank.categories == ["babble", "machinery", "music", "pink", "street", "white"]
    assert len(file_paths(bank, "train")) == 24 + 62 + 40 + 61
    assert len(file_paths(bank, "test")) == 11 + 26 + 16 + 25
    assert file_paths(bank, "train").isdisjoint(file_paths(bank, "test"))
    with (SHARED_NOISE / "metadata.csv").open(newline="") as file:
        first = next(csv.DictReader(file))
    entry = next(entry for entry in bank.files if entry.path.endswith(first["path"]))
    waveform = bank.load(entry)
    assert waveform.ndim == 1 and waveform.dtype == torch.float32
    assert soundfile.info(entry.path).samplerate == 16000
    assert waveform.numel() == soundfile.info(entry.path).frames
    assert abs(waveform.numel() / 16000 - float(first["duration_s"])) < 1e-3  # metadata rounds to ms
