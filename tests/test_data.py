"""Corpus loading from every source, label checks, and speaker-independent splits."""

import pytest
import soundfile as sf
from datasets import ClassLabel, Dataset, DatasetDict

from corpus_fixtures import tone
from nser.data import cross_validation_folds, load_corpus, prepare_columns, speaker_independent_splits


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


def test_leave_one_group_out_folds():
    folds = cross_validation_folds(corpus(), "speaker")
    assert [name for name, _ in folds] == ["speaker-a", "speaker-b", "speaker-c", "speaker-d"]
    _, first = folds[0]
    assert (set(first["test"]["speaker"]), set(first["validation"]["speaker"])) == ({"a"}, {"b"})
    with pytest.raises(ValueError, match="at least 3 groups"):
        cross_validation_folds(corpus(speakers=("a", "b")), "speaker")


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
