"""dataset_scripts for the emotion corpora, on synthetic copies of their layouts (tests/fixtures_corpora.py)."""

import logging
import os
import subprocess

import fixtures_corpora as fx
import pytest

from dataset_scripts import casia, crema_d, emodb, iemocap, meld, ravdess, tess


def counts(split, column):
    values = split[column]
    if column == "label":
        values = [split.features["label"].int2str(v) for v in values]
    return {v: values.count(v) for v in sorted(set(values))}


def test_casia_leaves_one_speaker_out(tmp_path):
    data = casia.prepare(fx.casia(tmp_path))
    assert fx.groups_by_split(data, "speaker") == {
        "train": {"wangzhe"},
        "validation": {"liuchanhg"},
        "test": {"ZhaoZuoxiang"},
    }
    assert data["train"].features["label"].names == ["angry", "fear", "happy", "neutral", "sad", "surprise"]
    assert counts(data["test"], "label") == dict.fromkeys(casia.EMOTIONS, 2)
    assert counts(data["test"], "text_id") == {"201": 6, "202": 6}
    assert data["test"][0]["path"] == "ZhaoZuoxiang/angry/201.wav"
    assert fx.decoded(data["test"], 0) == ((1, fx.DECODED_SAMPLES), 16_000)  # from 44.1 kHz stereo


def test_casia_folds_follow_the_sorted_speakers(tmp_path):
    source = fx.casia(tmp_path)
    fold = casia.prepare(source, test_speakers="wangzhe")
    assert fx.groups_by_split(fold, "speaker") == {
        "train": {"liuchanhg"},
        "validation": {"ZhaoZuoxiang"},
        "test": {"wangzhe"},
    }
    no_validation = casia.prepare(source, test_speakers=["wangzhe"], validation_speakers=[])
    assert list(no_validation) == ["train", "test"]
    assert no_validation["train"].num_rows == 24


def test_casia_errors_name_the_file(tmp_path):
    source = fx.casia(tmp_path)
    fx.write_clip(source / "wangzhe" / "bored" / "201.wav")
    with pytest.raises(ValueError, match=r"unknown emotion folder 'bored' in .*wangzhe/bored/201\.wav"):
        casia.prepare(source)
    (source / "wangzhe" / "bored" / "201.wav").unlink()
    fx.write_clip(source / "wangzhe" / "sad" / "take2.wav")
    with pytest.raises(ValueError, match=r"unexpected file name .*sad/take2\.wav: expected <text id>\.wav"):
        casia.prepare(source)


def test_ravdess_decodes_the_filename_code(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        data = ravdess.prepare(fx.ravdess(tmp_path))
    assert "skipped files that are not audio-only speech (modality-channel: count): {'03-02': 1}" in caplog.text
    assert fx.groups_by_split(data, "speaker") == {
        "train": {"Actor_05", "Actor_06"},
        "validation": {"Actor_03", "Actor_04"},
        "test": {"Actor_01", "Actor_02"},
    }
    test = data["test"]
    assert test.num_rows == 30  # 2 actors x (1 neutral + 7 emotions x 2 intensities)
    assert counts(test, "label") == {name: 2 if name == "neutral" else 4 for name in ravdess.EMOTIONS}
    assert counts(test, "gender") == {"female": 15, "male": 15}
    assert counts(test, "intensity") == {"normal": 16, "strong": 14}
    row = test[0]
    assert (row["path"], row["speaker"], row["statement"], row["repetition"]) == (
        "Actor_01/03-01-01-01-01-01-01.flac", "Actor_01", "01", "01"
    )
    assert fx.decoded(test, 0) == ((1, fx.DECODED_SAMPLES), 16_000)  # from 48 kHz


@pytest.mark.parametrize(
    "name, error",
    [
        ("03-01-09-01-01-01-02.wav", r"unknown emotion code '09' in .*03-01-09-01-01-01-02\.wav"),
        ("03-01-05-01-01-01.wav", r"unexpected file name .*03-01-05-01-01-01\.wav: expected MM-CC-EE"),
        ("03-01-05-01-01-01-07.wav", r"actor 07 in the name but in folder Actor_02"),
    ],
)
def test_ravdess_errors(tmp_path, name, error):
    source = fx.ravdess(tmp_path)
    fx.write_clip(source / "Actor_02" / name)
    with pytest.raises(ValueError, match=error):
        ravdess.prepare(source)


def test_emodb(tmp_path):
    data = emodb.prepare(fx.emodb(tmp_path))
    assert fx.groups_by_split(data, "speaker") == {"train": {"11"}, "validation": {"09", "10"}, "test": {"03", "08"}}
    assert data["test"].features["label"].names == list(emodb.EMOTIONS)
    assert counts(data["test"], "label") == {name: 4 if name == "anger" else 2 for name in emodb.EMOTIONS}
    first = data["test"][0]
    assert (first["path"], first["text_id"], first["version"]) == ("wav/03a01Aa.wav", "a01", "a")
    assert data["test"].features["label"].int2str(first["label"]) == "fear"
    fx.write_clip(tmp_path / "emodb" / "wav" / "03a01Xa.wav")
    with pytest.raises(ValueError, match=r"unknown emotion letter 'X' in .*03a01Xa\.wav; known: A, E, F, L, N, T, W"):
        emodb.prepare(tmp_path / "emodb")


def test_crema_d(tmp_path):
    data = crema_d.prepare(fx.crema_d(tmp_path))
    assert fx.groups_by_split(data, "speaker") == {
        "train": {"1003", "1004", "1005", "1006"},
        "validation": {"1002"},
        "test": {"1001"},
    }
    assert counts(data["test"], "label") == {name: 2 if name == "anger" else 1 for name in crema_d.EMOTIONS}
    assert counts(data["test"], "level") == {"HI": 1, "XX": 6}
    assert counts(data["test"], "sentence") == {"DFA": 6, "IEO": 1}
    fx.write_clip(tmp_path / "crema_d" / "AudioWAV" / "1001_DFA_BOR_XX.wav")
    with pytest.raises(ValueError, match=r"unknown emotion code 'BOR' in .*1001_DFA_BOR_XX\.wav"):
        crema_d.prepare(tmp_path / "crema_d")


def test_tess_is_two_fold_by_speaker(tmp_path):
    source = fx.tess(tmp_path)
    data = tess.prepare(source)
    assert list(data) == ["train", "test"]
    assert fx.groups_by_split(data, "speaker") == {"train": {"YAF"}, "test": {"OAF"}}
    assert counts(data["test"], "label") == dict.fromkeys(tess.EMOTIONS, 2)
    assert counts(data["test"], "word") == {"back": 7, "bar": 7}
    other_fold = tess.prepare(source, test_speakers="YAF")
    assert fx.groups_by_split(other_fold, "speaker") == {"train": {"OAF"}, "test": {"YAF"}}
    fx.write_clip(source / "TESS Toronto emotional speech set data" / "YAF_bored" / "YAF_back_bored.wav")
    with pytest.raises(ValueError, match=r"unknown emotion folder 'bored' in .*YAF_bored"):
        tess.prepare(source)


def test_iemocap_four_class_protocol(tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        data = iemocap.prepare(fx.iemocap(tmp_path))
    assert "kept 25 utterances; dropped (label: count): {'fru': 5, 'xxx': 5}" in caplog.text
    assert fx.groups_by_split(data, "session") == {"train": {1, 2, 3}, "validation": {4}, "test": {5}}
    assert fx.groups_by_split(data, "speaker")["test"] == {"Ses05F", "Ses05M"}
    test = data["test"]
    assert counts(test, "label") == {"angry": 1, "happy": 2, "neutral": 1, "sad": 1}  # exc merged into happy
    by_path = {row["path"]: row for row in test}
    row = by_path["Session5/sentences/wav/Ses05F_impro01/Ses05F_impro01_M001.wav"]
    assert (row["speaker"], row["session"], row["improvised"]) == ("Ses05M", 5, True)
    assert test.features["label"].int2str(row["label"]) == "happy"
    scripted = by_path["Session5/sentences/wav/Ses05M_script01_1/Ses05M_script01_1_F000.wav"]
    assert (scripted["speaker"], scripted["improvised"]) == ("Ses05F", False)
    fold = iemocap.prepare(tmp_path / "IEMOCAP_full_release", test_sessions=1, validation_sessions=[2])
    assert fx.groups_by_split(fold, "session") == {"train": {3, 4, 5}, "validation": {2}, "test": {1}}


def test_iemocap_errors(tmp_path):
    source = fx.iemocap(tmp_path)
    label_file = source / "Session1" / "dialog" / "EmoEvaluation" / "Ses01F_impro01.txt"
    text = label_file.read_text()
    label_file.write_text(text.replace("\tneu\t", "\tbor\t"))
    unknown = r"unknown emotion code 'bor' in .*Ses01F_impro01\.txt \(Ses01F_impro01_F000\)"
    with pytest.raises(ValueError, match=unknown):
        iemocap.prepare(source)
    label_file.write_text(text)
    (source / "Session1" / "sentences" / "wav" / "Ses01F_impro01" / "Ses01F_impro01_F000.wav").unlink()
    missing = r"no audio for Ses01F_impro01_F000 \(labelled in .*Ses01F_impro01\.txt\)"
    with pytest.raises(FileNotFoundError, match=missing):
        iemocap.prepare(source)
    fx.write_clip(source / "Session1" / "sentences" / "wav" / "Ses01F_impro01" / "Ses01F_impro01_F000.wav")
    with pytest.raises(ValueError, match=r"groups \[4\] are in both test and validation"):
        iemocap.prepare(source, test_sessions=4)


def test_meld_official_splits_from_wav(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        data = meld.prepare(fx.meld(tmp_path))
    assert "skipped csv rows with neither audio nor video (split: count): {'validation': 1}" in caplog.text
    assert {name: split.num_rows for name, split in data.items()} == {"train": 3, "validation": 2, "test": 3}
    train = data["train"]
    assert train.features["label"].names == list(meld.EMOTIONS)
    assert counts(train, "label") == {"joy": 1, "neutral": 1, "sadness": 1}
    row = train[1]
    assert (row["path"], row["text"], row["speaker"], row["sentiment"], row["dialogue_id"], row["utterance_id"]) == (
        "train_splits/dia1_utt0.mp4", "Line train 1.", "Speaker1", "neutral", 1, 0
    )
    assert fx.decoded(train, 1) == ((1, fx.DECODED_SAMPLES), 16_000)  # wav/train/dia1_utt0.flac at 48 kHz


def test_meld_needs_ffmpeg_to_extract(tmp_path, monkeypatch):
    source = fx.meld(tmp_path, wav=False)
    monkeypatch.setattr(meld.shutil, "which", lambda name: None)
    no_ffmpeg = r"ffmpeg not found on PATH: needed to extract 8 clips such as .*dia0_utt0\.mp4"
    with pytest.raises(RuntimeError, match=no_ffmpeg):
        meld.prepare(source)


def test_meld_extracts_with_ffmpeg_arguments(tmp_path, monkeypatch, caplog):
    """A stand-in ffmpeg checks the arguments and writes the wav; a clip it cannot read is skipped."""
    source = fx.meld(tmp_path, wav=False)
    (source / "train_splits" / "dia2_utt0.mp4").write_bytes(b"broken")
    monkeypatch.setenv("PATH", f"{fx.fake_ffmpeg(tmp_path / 'bin').parent}:{os.environ['PATH']}")
    with caplog.at_level(logging.WARNING):
        data = meld.prepare(source, wav_dir=tmp_path / "extracted", num_workers=2)
    assert "skipped 1 clips ffmpeg could not read" in caplog.text
    assert {name: split.num_rows for name, split in data.items()} == {"train": 2, "validation": 2, "test": 3}
    assert sorted(p.name for p in (tmp_path / "extracted" / "train").iterdir()) == ["dia0_utt0.wav", "dia1_utt0.wav"]
    assert fx.decoded(data["test"], 0) == ((1, fx.DECODED_SAMPLES), 16_000)


@pytest.mark.skipif(meld.shutil.which("ffmpeg") is None, reason="the ffmpeg command is not installed here")
def test_meld_extracts_real_mp4(tmp_path):
    source = fx.meld(tmp_path, wav=False)
    tone = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "sine=frequency=440:duration=0.1"]
    for video in source.glob("*/dia*_utt0.mp4"):
        subprocess.run([*tone, "-ac", "2", "-ar", "44100", str(video)], check=True)  # stereo AAC in mp4
    data = meld.prepare(source)
    assert {name: split.num_rows for name, split in data.items()} == {"train": 3, "validation": 2, "test": 3}
    assert sorted(p.name for p in (source / "wav" / "dev").iterdir()) == ["dia0_utt0.wav", "dia1_utt0.wav"]
    channels_samples, rate = fx.decoded(data["train"], 0)
    assert (channels_samples[0], rate) == (1, 16_000)
