"""Corpus loading from every source, label checks, and speaker-independent splits."""

import pytest
import soundfile as sf
from datasets import ClassLabel, Dataset, DatasetDict

from corpus_fixtures import tone
from nser.data import cross_validation_folds, fold_test_groups, load_corpus, prepare_columns, speaker_independent_splits


def corpus(speakers=("a", "b", "c", "d"), texts=("1", "2", "3")):
    rows = [{"speaker": s, "text_id": t, "label": i % 2} for s in speakers for i, t in enumerate(texts)]
    return DatasetDict({"train": Dataset.from_list(rows)})


def test_missing_splits_are_cut_by_speaker_with_no_speaker_in_two_splits():
    splits = speaker_independent_splits(corpus(), "speaker")
    speakers = {name: set(ds["speaker"]) for name, ds in splits.items()}
    assert speakers == {"train": {"a", "b"}, "validation": {"c"}, "test": {"d"}}


def test_validation_can_be_held_out_sentences_of_the_training_speakers():
    splits = speaker_independent_splits(corpus(), "speaker", ["a"], ["3"], validation_column="text_id")
    assert set(splits["test"]["speaker"]) == {"a"}
    assert set(splits["validation"]["speaker"]) == {"b", "c", "d"} and set(splits["validation"]["text_id"]) == {"3"}
    assert set(splits["train"]["text_id"]) == {"1", "2"} and "a" not in splits["train"]["speaker"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"test_groups": ["z"]}, r"groups \['z'\] not found in column 'speaker'"),
        ({"test_groups": ["a", "b", "c", "d"]}, "leaves nothing to train on"),
        ({"validation_column": "session"}, "no such column"),
    ],
)
def test_bad_split_choices_are_reported(kwargs, message):
    with pytest.raises(ValueError, match=message):
        speaker_independent_splits(corpus(), "speaker", **kwargs)


def write_clips(folder, labels=("happy", "sad")):
    paths = []
    for i, label in enumerate(labels):
        path = folder / label / f"clip{i}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, tone(300 + 100 * i, 0.3, i), 44100)
        paths.append(path)
    return paths


def test_audio_folder_and_manifest_sources_decode_at_16k_with_named_labels(tmp_path):
    paths = write_clips(tmp_path / "clips")
    folder, names = prepare_columns(load_corpus(audio_folder=str(tmp_path / "clips")))
    assert names == ["happy", "sad"] and folder["train"][0]["audio"].get_all_samples().sample_rate == 16000
    manifest = tmp_path / "clips" / "manifest.csv"
    manifest.write_text("path,label,speaker\n" + "".join(f"{p.relative_to(manifest.parent)},{p.parent.name},s{i}\n" for i, p in enumerate(paths)))
    csv_corpus, names = prepare_columns(load_corpus(manifest_csv=str(manifest)), label_names=["sad", "happy"])
    assert names == ["sad", "happy"] and isinstance(csv_corpus["train"].features["label"], ClassLabel)
    assert csv_corpus["train"]["label"] == [1, 0]


def test_source_and_label_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="exactly one data source"):
        load_corpus()
    with pytest.raises(ValueError, match="does not exist"):
        load_corpus(manifest_csv=str(tmp_path / "nope.csv"))
    write_clips(tmp_path / "clips", labels=("happy", "sad", "bored"))
    with pytest.raises(ValueError, match=r"labels \['bored'\] are not in"):
        prepare_columns(load_corpus(audio_folder=str(tmp_path / "clips")), label_names=["happy", "sad"])


def labelled_corpus(speakers=("a", "b", "c", "d"), clips_per_label=10, labels=(0, 1, 2)):
    rows = [{"speaker": s, "text_id": str(i), "label": label}
            for s in speakers for label in labels for i in range(clips_per_label)]
    return DatasetDict({"train": Dataset.from_list(rows)})


def test_cross_validation_trains_on_every_group_it_does_not_test():
    folds = cross_validation_folds(labelled_corpus(), "speaker")
    assert [name for name, _ in folds] == ["speaker-a", "speaker-b", "speaker-c", "speaker-d"]
    for name, splits in folds:
        tested = name.split("-", 1)[1]
        assert set(splits["test"]["speaker"]) == {tested} and len(splits["test"]) == 30
        others = {"a", "b", "c", "d"} - {tested}
        assert set(splits["train"]["speaker"]) == others and set(splits["validation"]["speaker"]) == others
        # 10 % of every (speaker, label) cell: 1 of 10 clips, 9 train
        cells = {}
        for row in splits["validation"]:
            cells[(row["speaker"], row["label"])] = cells.get((row["speaker"], row["label"]), 0) + 1
        assert cells == {(s, label): 1 for s in others for label in (0, 1, 2)}
        assert len(splits["train"]) == 81
        keys = lambda ds: {(r["speaker"], r["text_id"], r["label"]) for r in ds}
        assert not keys(splits["train"]) & keys(splits["validation"])
    again = cross_validation_folds(labelled_corpus(), "speaker")
    assert again[0][1]["validation"]["text_id"] == folds[0][1]["validation"]["text_id"]  # a fixed, seeded draw


def test_cross_validation_blocks_of_groups_and_held_out_sentences():
    twelve = labelled_corpus(speakers=[f"{i:02d}" for i in range(1, 13)], clips_per_label=2)
    folds = cross_validation_folds(twelve, "speaker", num_folds=3)
    assert [name for name, _ in folds] == ["speaker-01-to-04", "speaker-05-to-08", "speaker-09-to-12"]
    assert set(folds[1][1]["test"]["speaker"]) == {"05", "06", "07", "08"}
    assert len(set(folds[1][1]["train"]["speaker"])) == 8
    sentences = cross_validation_folds(labelled_corpus(), "speaker", validation_column="text_id", validation_groups=["8", "9"])
    _, first = sentences[0]
    assert set(first["validation"]["text_id"]) == {"8", "9"} and set(first["validation"]["speaker"]) == {"b", "c", "d"}
    assert not {"8", "9"} & set(first["train"]["text_id"]) and set(first["train"]["speaker"]) == {"b", "c", "d"}


def test_the_older_next_group_validation_is_still_available_when_asked():
    folds = cross_validation_folds(corpus(), "speaker", validation="next_group")
    _, first = folds[0]
    assert (set(first["test"]["speaker"]), set(first["validation"]["speaker"]), set(first["train"]["speaker"])) == (
        {"a"}, {"b"}, {"c", "d"})
    with pytest.raises(ValueError, match="at least 3 folds"):
        cross_validation_folds(corpus(speakers=("a", "b")), "speaker", validation="next_group")


@pytest.mark.parametrize(
    "kwargs, message",
    [({"num_folds": 5}, r"--cv_folds 5: needs 2 to 4 folds"), ({"validation": "random"}, "is not one of"),
     ({"validation_fraction": 1.5}, r"--validation_fraction must be in \(0, 1\)")],
)
def test_bad_cross_validation_options_are_reported(kwargs, message):
    with pytest.raises(ValueError, match=message):
        cross_validation_folds(labelled_corpus(), "speaker", **kwargs)


def test_fold_test_groups_are_one_group_each_or_consecutive_blocks():
    groups = ["b", "a", "c", "d", "a", "e"]
    assert fold_test_groups(groups) == [["a"], ["b"], ["c"], ["d"], ["e"]]
    assert fold_test_groups(groups, 2) == [["a", "b", "c"], ["d", "e"]]
    with pytest.raises(ValueError, match="--cv_folds 6: needs 2 to 5 folds"):
        fold_test_groups(groups, 6)
