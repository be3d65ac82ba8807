"""dataset_scripts on the real corpora in ../shared/data (FLAC copies with the distributed names)."""

import csv
from collections import Counter
from pathlib import Path

import fixtures_corpora as fx
import pytest

from dataset_scripts import casia, noise_folder, ravdess

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared(name: str) -> Path:
    path = DATA / name
    if not path.is_dir():
        pytest.skip(f"{path} is absent: the shared corpora are not on this machine")
    return path


def test_casia(tmp_path):
    data = casia.prepare(shared("casia"), tmp_path / "casia")  # also measures save_to_disk of 1200 clips
    assert {name: split.num_rows for name, split in data.items()} == {"train": 600, "validation": 300, "test": 300}
    assert fx.groups_by_split(data, "speaker") == {
        "train": {"wangzhe", "zhaoquanyin"},
        "validation": {"liuchanhg"},
        "test": {"ZhaoZuoxiang"},
    }
    assert data["test"].features["label"].names == ["angry", "fear", "happy", "neutral", "sad", "surprise"]
    assert Counter(data["test"]["label"]) == dict.fromkeys(range(6), 50)
    assert sorted(set(data["train"]["text_id"])) == [str(i) for i in range(201, 251)]
    assert data["test"][0]["path"] == "ZhaoZuoxiang/angry/201.flac"
    channels_samples, rate = fx.decoded(data["test"], 0)
    assert (channels_samples[0], rate) == (1, 16_000)
    assert channels_samples[1] == pytest.approx(2.437 * 16_000, abs=16)  # metadata.csv: duration_s 2.437


def test_ravdess():
    data = ravdess.prepare(shared("ravdess"))
    assert sum(split.num_rows for split in data.values()) == 720
    assert set().union(*fx.groups_by_split(data, "speaker").values()) == {f"Actor_{i:02d}" for i in range(1, 13)}
    assert fx.groups_by_split(data, "speaker")["test"] == {"Actor_01", "Actor_02"}
    fx.assert_disjoint(data, "speaker")
    assert data["train"].features["label"].names == list(ravdess.EMOTIONS)
    assert Counter(data["test"]["label"]) == {0: 8} | dict.fromkeys(range(1, 8), 16)
    with (DATA / "ravdess" / "metadata.csv").open() as f:
        expected = {row["path"].removeprefix("ravdess/"): row for row in csv.DictReader(f)}
    for row in data["validation"].remove_columns("audio"):
        truth = expected[row["path"]]
        assert (row["speaker"], row["gender"], row["intensity"], row["statement"], row["repetition"]) == (
            truth["speaker"], truth["gender"], truth["intensity"], truth["statement"], truth["repetition"]
        )
        assert data["validation"].features["label"].int2str(row["label"]) == truth["emotion"]
    assert fx.decoded(data["test"], 0)[1] == 16_000


def test_noise_folder_keeps_the_fixed_split():
    data = noise_folder.prepare(shared("noise"))
    with (DATA / "noise" / "metadata.csv").open() as f:
        expected = {row["path"].removeprefix("noise/"): row for row in csv.DictReader(f)}
    rows = {row["path"]: row for split in data.values() for row in split.remove_columns("audio")}
    assert {path: (r["category"], r["subcategory"], r["split"]) for path, r in rows.items()} == {
        path: (row["category"], row["subcategory"], row["split"]) for path, row in expected.items()
    }
    counts = {name: Counter(split["category"]) for name, split in data.items()}
    assert counts == {  # ../shared/data/README.md
        "train": {"babble": 24, "machinery": 62, "music": 40, "street": 61},
        "test": {"babble": 11, "machinery": 26, "music": 16, "street": 25},
    }
    fx.assert_disjoint(data, "source")
    assert fx.decoded(data["test"], 0)[1] == 16_000
