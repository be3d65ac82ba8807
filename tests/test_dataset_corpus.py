"""nser.corpus, the shared work of dataset_scripts: splits, skip-if-done saving, Hub checks, errors."""

import json
import logging

import fixtures_corpora as fx
import pytest
from datasets import load_from_disk

from dataset_scripts import (
    casia, crema_d, demand, emodb, esc50, iemocap, meld, musan, noise_folder, ravdess, tess, wham
)
from nser import corpus

SCRIPTS = (casia, crema_d, demand, emodb, esc50, iemocap, meld, musan, noise_folder, ravdess, tess, wham)


def test_group_splits_defaults_and_rotation():
    groups = ["c", "a", "b", "d", "a"]
    assert corpus.group_splits(groups) == {"a": "test", "b": "validation", "c": "train", "d": "train"}
    assert corpus.group_splits(groups, test="d") == {"a": "validation", "b": "train", "c": "train", "d": "test"}
    two_test = corpus.group_splits(groups, n_test=2, n_validation=0)
    assert two_test == {"a": "test", "b": "test", "c": "train", "d": "train"}
    sessions = corpus.group_splits([1, 2, 3, 4, 5], test=5, validation=4)
    assert sessions == {1: "train", 2: "train", 3: "train", 4: "validation", 5: "test"}


@pytest.mark.parametrize(
    "test, validation, error",
    [
        ("x", None, r"unknown groups \['x'\]; available: \['a', 'b', 'c'\]"),
        ("a", "a", r"groups \['a'\] are in both test and validation"),
        (["a", "b"], "c", r"leave no training group of \['a', 'b', 'c'\]"),
        ([], None, r"no test groups chosen from \['a', 'b', 'c'\]"),
    ],
)
def test_group_splits_errors(test, validation, error):
    with pytest.raises(ValueError, match=error):
        corpus.group_splits("abc", test, validation)


def test_hash_split_is_stable():
    keys = [f"noise/file-{i}" for i in range(1000)]
    splits = [corpus.hash_split(key, 0.3) for key in keys]
    assert splits[:5] == [corpus.hash_split(key, 0.3) for key in keys[:5]]
    assert 250 < splits.count("test") < 350
    with pytest.raises(ValueError, match=r"test_fraction must be in \(0, 1\), got 1.5"):
        corpus.hash_split("x", 1.5)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_missing_source_dir(tmp_path, script):
    with pytest.raises(FileNotFoundError, match=f"source_dir {tmp_path / 'absent'} does not exist"):
        script.prepare(tmp_path / "absent")


def test_no_audio_and_twin_files(tmp_path):
    (tmp_path / "casia" / "wangzhe" / "sad").mkdir(parents=True)
    (tmp_path / "casia" / "wangzhe" / "sad" / "201.txt").write_text("not audio")
    with pytest.raises(FileNotFoundError, match=r"no audio files \(\.wav, \.flac\) matching '\*/\*/\*' under .*casia"):
        casia.prepare(tmp_path / "casia")
    fx.write_clip(tmp_path / "casia" / "wangzhe" / "sad" / "201.wav")
    fx.write_clip(tmp_path / "casia" / "wangzhe" / "sad" / "201.flac")
    with pytest.raises(ValueError, match=r"wangzhe/sad/201 exists with several extensions"):
        casia.prepare(tmp_path / "casia")


def test_save_skips_when_done_and_returns_the_same_data(tmp_path, caplog):
    source, output = fx.casia(tmp_path), tmp_path / "out"
    first = casia.prepare(source, output)
    assert json.loads((output / corpus.MARKER).read_text())["rows"] == 36
    with caplog.at_level(logging.INFO, logger="nser.corpus"):
        second = casia.prepare(source, output)
    assert f"skipping: {output} already holds this preparation (36 rows)" in caplog.text
    assert list(second) == list(first) == ["train", "validation", "test"]
    for name in first:
        assert second[name].data.table.equals(first[name].data.table)
    assert fx.decoded(second["test"], 0) == ((1, fx.DECODED_SAMPLES), 16_000)


def test_saved_audio_is_embedded(tmp_path):
    source, output = fx.casia(tmp_path), tmp_path / "out"
    casia.prepare(source, output)
    for path in source.rglob("*.wav"):
        path.unlink()
    reloaded = load_from_disk(str(output))
    assert fx.decoded(reloaded["test"], 0) == ((1, fx.DECODED_SAMPLES), 16_000)


def test_save_never_replaces_other_content_silently(tmp_path, caplog):
    source, output = fx.casia(tmp_path), tmp_path / "out"
    casia.prepare(source, output)
    with pytest.raises(FileExistsError, match=f"output_dir {output} holds a different or incomplete preparation"):
        casia.prepare(source, output, test_speakers="wangzhe")
    fx.write_clip(source / "wangzhe" / "sad" / "203.wav")  # the corpus changed
    with pytest.raises(FileExistsError, match="pass overwrite=True"):
        casia.prepare(source, output)
    with caplog.at_level(logging.WARNING, logger="nser.corpus"):
        replaced = casia.prepare(source, output, test_speakers="wangzhe", overwrite=True)
    assert f"replacing the dataset in {output}" in caplog.text
    assert fx.groups_by_split(replaced, "speaker")["test"] == {"wangzhe"}
    assert replaced["test"].num_rows == 13
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=f"output_dir {foreign} is not empty and holds no DatasetDict"):
        casia.prepare(source, foreign, overwrite=True)
    assert (foreign / "notes.txt").read_text() == "mine"


def test_push_to_hub_fails_before_work_without_hub(tmp_path, monkeypatch):
    source = fx.casia(tmp_path)
    monkeypatch.setattr(corpus.huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(RuntimeError, match="cannot push to me/casia: HF_HUB_OFFLINE is set"):
        casia.prepare(source, push_to_hub="me/casia")
    monkeypatch.setattr(corpus.huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(corpus.huggingface_hub, "get_token", lambda: None)
    no_token = "cannot push to me/casia: no Hugging Face token found; run `hf auth login`"
    with pytest.raises(RuntimeError, match=no_token):
        casia.prepare(source, tmp_path / "out", push_to_hub="me/casia")
    assert not (tmp_path / "out").exists()


def test_command_line(tmp_path, caplog):
    source, output = fx.casia(tmp_path), tmp_path / "out"
    with caplog.at_level(logging.INFO, logger="nser.corpus"):
        casia.main(["--source_dir", str(source), "--output_dir", str(output), "--test_speakers", "liuchanhg",
                    "--validation_speakers"])
    assert "rows per split: {'train': 24, 'test': 12}" in caplog.text
    assert load_from_disk(str(output))["test"].unique("speaker") == ["liuchanhg"]
