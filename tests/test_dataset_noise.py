"""dataset_scripts for the noise corpora, on synthetic copies of their layouts (tests/fixtures_corpora.py)."""

import fixtures_corpora as fx
import pytest

from dataset_scripts import demand, esc50, musan, noise_folder, wham
from nser import corpus


def by_path(dataset_dict) -> dict[str, dict]:
    return {row["path"]: row for split in dataset_dict.values() for row in split.remove_columns("audio")}


def test_musan_hash_split_is_by_file_and_deterministic(tmp_path):
    data = musan.prepare(fx.musan(tmp_path), test_fraction=0.5)
    assert data["train"].features == corpus.NOISE_FEATURES
    rows = by_path(data)
    assert len(rows) == 9  # the ANNOTATIONS and README files are not audio
    row = rows["speech/librivox/speech-librivox-0000.wav"]
    assert (row["category"], row["subcategory"]) == ("babble", "librivox")
    assert row["source"] == "speech/librivox/speech-librivox-0000"
    assert {r["category"] for r in rows.values()} == {"noise", "music", "babble"}
    assert all(r["split"] == corpus.hash_split(r["source"], 0.5) for r in rows.values())
    assert {name: set(split["split"]) for name, split in data.items()} == {"train": {"train"}, "test": {"test"}}
    fx.assert_disjoint(data, "source")
    stereo = data[rows["music/fma/music-fma-0000.wav"]["split"]]
    index = stereo["path"].index("music/fma/music-fma-0000.wav")
    assert fx.decoded(stereo, index) == ((1, fx.DECODED_SAMPLES), 16_000)  # from 44.1 kHz stereo
    assert by_path(musan.prepare(tmp_path / "musan", test_fraction=0.5)) == rows


def test_demand_cuts_each_recording_in_time(tmp_path):
    data = demand.prepare(fx.demand(tmp_path))
    assert {name: split.num_rows for name, split in data.items()} == {"train": 3, "test": 3}
    assert dict(zip(data["train"]["subcategory"], data["train"]["category"])) == {
        "DKITCHEN": "domestic", "NPARK": "nature", "STRAFFIC": "street"
    }
    assert data["train"]["path"] == ["DKITCHEN/ch01.wav", "NPARK/ch01.wav", "STRAFFIC/ch01.wav"]
    assert data["train"][1]["source"] == "NPARK/ch01:0.0-0.7s"
    assert data["test"][1]["source"] == "NPARK/ch01:0.7-1.0s"
    fx.assert_disjoint(data, "source")
    assert fx.decoded(data["train"], 1) == ((1, 11_200), 16_000)  # 0.7 s of the 48 kHz recording
    assert fx.decoded(data["test"], 1) == ((1, 4_800), 16_000)
    assert demand.prepare(tmp_path / "DEMAND", channel=2)["test"]["path"][0] == "DKITCHEN/ch02.wav"
    fx.write_clip(tmp_path / "DEMAND" / "XROOM" / "ch01.wav")
    with pytest.raises(ValueError, match=r"unknown DEMAND environment group \(first letter\) 'X' in .*XROOM"):
        demand.prepare(tmp_path / "DEMAND")


def test_esc50_major_categories_and_test_fold(tmp_path):
    data = esc50.prepare(fx.esc50(tmp_path))
    rows = by_path(data)
    assert {path: (r["category"], r["subcategory"], r["split"]) for path, r in rows.items()} == {
        "audio/1-100032-A-0.wav": ("animals", "dog", "train"),
        "audio/1-100038-A-14.wav": ("natural soundscapes", "chirping_birds", "train"),
        "audio/2-101296-A-19.wav": ("natural soundscapes", "thunderstorm", "train"),
        "audio/3-103415-A-25.wav": ("human non-speech", "footsteps", "train"),
        "audio/4-104089-B-34.wav": ("interior/domestic", "can_opening", "train"),
        "audio/5-103199-A-42.wav": ("exterior/urban", "siren", "test"),
        "audio/5-103199-B-42.wav": ("exterior/urban", "siren", "test"),
        "audio/5-104456-A-1.wav": ("animals", "rooster", "test"),
    }
    assert set(data["test"]["source"]) == {"103199", "104456"}
    fx.assert_disjoint(data, "source")
    assert fx.decoded(data["test"], 0) == ((1, fx.DECODED_SAMPLES), 16_000)
    assert set(esc50.prepare(tmp_path / "ESC-50-master", test_fold=1)["test"]["source"]) == {"100032", "100038"}
    with pytest.raises(ValueError, match=r"no clip in test_fold 6; folds: \['1', '2', '3', '4', '5'\]"):
        esc50.prepare(tmp_path / "ESC-50-master", test_fold=6)
    fx.write_clip(tmp_path / "ESC-50-master" / "audio" / "1-999-A-0.wav")
    with pytest.raises(ValueError, match=r"unknown clip '1-999-A-0' in meta/esc50.csv"):
        esc50.prepare(tmp_path / "ESC-50-master")


def test_wham_keeps_its_partition(tmp_path):
    data = wham.prepare(fx.wham(tmp_path))
    assert {name: sorted(set(split["subcategory"])) for name, split in data.items()} == {
        "train": ["cv", "tr"],
        "test": ["tt"],
    }
    assert set(data["train"]["category"]) == {"wham"}
    assert data["test"]["source"] == ["tt/40tt010x_1.9857_01xo031a_-1.9857", "tt/40tt011x_1.9857_01xo031a_-1.9857"]
    assert fx.decoded(data["test"], 0) == ((1, fx.DECODED_SAMPLES), 16_000)  # from stereo
    fx.write_clip(tmp_path / "wham_noise" / "dev" / "x.wav")
    with pytest.raises(ValueError, match=r"unknown WHAM! folder 'dev' in .*dev/x\.wav; known: cv, tr, tt"):
        wham.prepare(tmp_path / "wham_noise")


def test_noise_folder_uses_metadata_split(tmp_path):
    data = noise_folder.prepare(fx.noise_folder(tmp_path))
    rows = by_path(data)
    assert {path: r["split"] for path, r in rows.items()} == {
        f"{category}/{stem}.flac": "test" if stem in fx.NOISE_TEST else "train"
        for category, stems in fx.NOISE_FILES.items()
        for stem in stems
    }
    row = rows["babble/noisex92-babble-test.flac"]
    assert (row["category"], row["subcategory"]) == ("babble", "noisex92")
    assert row["source"] == "babble/noisex92-babble-test"
    fx.assert_disjoint(data, "source")
    index = data["test"]["path"].index("street/us8k-4-1-0-0.flac")
    assert fx.decoded(data["test"], index) == ((1, fx.DECODED_SAMPLES), 16_000)  # from 22.05 kHz


def test_noise_folder_metadata_paths_relative_to_its_folder(tmp_path):
    source = fx.noise_folder(tmp_path)
    metadata = source / "metadata.csv"
    metadata.write_text(metadata.read_text().replace("noise/", "").replace(".flac", ".wav"))
    assert {path: r["split"] for path, r in by_path(noise_folder.prepare(source)).items()} == {
        f"{category}/{stem}.flac": "test" if stem in fx.NOISE_TEST else "train"
        for category, stems in fx.NOISE_FILES.items()
        for stem in stems
    }


def test_noise_folder_without_metadata_hashes(tmp_path):
    data = noise_folder.prepare(fx.noise_folder(tmp_path, metadata=False), test_fraction=0.5)
    rows = by_path(data)
    assert len(rows) == 7
    assert all(r["split"] == corpus.hash_split(r["source"], 0.5) for r in rows.values())
    assert {r["subcategory"] for r in rows.values()} == {""}


def test_noise_folder_errors(tmp_path):
    source = fx.noise_folder(tmp_path)
    metadata = source / "metadata.csv"
    listed = metadata.read_text()
    fx.write_clip(source / "music" / "unlisted.flac")
    with pytest.raises(ValueError, match=r"music/unlisted\.flac is not listed in .*metadata\.csv"):
        noise_folder.prepare(source)
    (source / "music" / "unlisted.flac").unlink()
    metadata.write_text(listed.replace("noisex92-babble-test.flac,babble,noisex92,test", "gone.flac,babble,x,test"))
    with pytest.raises(FileNotFoundError, match=r"lists noise/babble/gone\.flac, found as neither"):
        noise_folder.prepare(source)
    metadata.write_text(listed.replace(",test,", ",dev,"))
    bad_split = r"unknown split 'dev' in .*metadata\.csv \(noise/babble/noisex92-babble-test"
    with pytest.raises(ValueError, match=bad_split):
        noise_folder.prepare(source)
    metadata.write_text(listed)
    fx.write_clip(source / "loose.wav")
    with pytest.raises(ValueError, match=r"loose\.wav is not in a category folder"):
        noise_folder.prepare(source)
