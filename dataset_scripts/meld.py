"""MELD (Multimodal EmotionLines Dataset) utterance audio as a DatasetDict.

Corpus: Poria et al., ACL 2019, https://affective-meld.github.io/ (`MELD.Raw.tar.gz`, from
http://web.eecs.umich.edu/~mihalcea/downloads/MELD.Raw.tar.gz). Licence GPL-3.0; the clips come from the
TV series Friends: research use only.

Layout: `<source_dir>/{train,dev,test}_sent_emo.csv` (columns Sr No., Utterance, Speaker, Emotion,
Sentiment, Dialogue_ID, Utterance_ID, ...) and the videos `train_splits/dia{D}_utt{U}.mp4`,
`dev_splits_complete/...`, `output_repeated_splits_test/...`. Audio is read from
`<wav_dir>/{train,dev,test}/dia{D}_utt{U}.wav` (or `.flac`; `wav_dir` defaults to `<source_dir>/wav`)
when present, else extracted there from the mp4 with FFmpeg (16 kHz mono), so a second run reuses it.
MELD is known to miss a few clips and to have a few unreadable ones: those rows are skipped and counted.

Protocol: the official train/dev/test splits (dev -> validation), 7 emotions (neutral joy sadness anger
surprise fear disgust). Speakers (characters) recur across splits, so this is not speaker-independent;
`speaker` is kept. `path` is the utterance's mp4 relative to `source_dir`, whichever file the audio came from.
"""

import csv
import logging
import shutil
import subprocess
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from nser import corpus

logger = logging.getLogger(__name__)

EMOTIONS = ("neutral", "joy", "sadness", "anger", "surprise", "fear", "disgust")
FEATURES = corpus.emotion_features(
    EMOTIONS, text="string", sentiment="string", dialogue_id="int32", utterance_id="int32"
)
# split -> (csv prefix, video folder)
SPLITS = {
    "train": ("train", "train_splits"),
    "validation": ("dev", "dev_splits_complete"),
    "test": ("test", "output_repeated_splits_test"),
}
COLUMNS = ("Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID")


def _read_csv(path: Path) -> list[dict]:
    if not path.is_file():
        raise FileNotFoundError(f"MELD label file {path} not found")
    with path.open(encoding="utf-8-sig", newline="") as f:
        records = list(csv.DictReader(f))
    missing = [c for c in COLUMNS if records and c not in records[0]]
    if missing:
        raise ValueError(f"{path} lacks columns {missing}; has {list(records[0])}")
    return records


def _existing_audio(stem_path: Path) -> Path | None:
    return next((p for p in map(stem_path.with_suffix, corpus.AUDIO_EXTENSIONS) if p.is_file()), None)


def _extract(video: Path, wav: Path) -> bool:
    """FFmpeg the mp4's audio track to 16 kHz mono wav; False (logged) for an unreadable clip."""
    wav.parent.mkdir(parents=True, exist_ok=True)
    partial = wav.with_name(wav.stem + ".partial.wav")  # renamed when complete: an interrupted run leaves no wav
    command = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(video), "-vn", "-ac", "1", "-ar"]
    result = subprocess.run([*command, str(corpus.SAMPLING_RATE), str(partial)], capture_output=True, text=True)
    if result.returncode != 0:
        logger.warning("ffmpeg could not extract %s: %s", video, result.stderr.strip()[-500:])
        partial.unlink(missing_ok=True)
        return False
    partial.replace(wav)
    return True


def prepare(source_dir, output_dir=None, wav_dir=None, num_workers=4, push_to_hub=None, overwrite=False, skip_bad_files=False):
    """MELD as its official train/validation/test splits, audio extracted when needed."""
    source_dir = corpus.check_inputs(source_dir, push_to_hub)
    wav_dir = Path(wav_dir) if wav_dir else source_dir / "wav"
    rows, to_extract, missing = [], [], Counter()
    for split, (prefix, video_folder) in SPLITS.items():
        csv_path = source_dir / f"{prefix}_sent_emo.csv"
        for record in _read_csv(csv_path):
            stem = f"dia{record['Dialogue_ID']}_utt{record['Utterance_ID']}"
            video = source_dir / video_folder / f"{stem}.mp4"
            audio = _existing_audio(wav_dir / prefix / stem)
            if audio is None and not video.is_file():
                missing[split] += 1
                continue
            if audio is None:
                audio = wav_dir / prefix / f"{stem}.wav"
                to_extract.append((video, audio))
            where = f"{csv_path} (Sr No. {record['Sr No.']})"
            label = corpus.lookup(record["Emotion"], EMOTIONS, "emotion", where)
            rows.append(
                {
                    "audio": str(audio.resolve()),
                    "path": video.relative_to(source_dir).as_posix(),
                    "split": split,
                    "label": label,
                    "speaker": record["Speaker"],
                    "text": record["Utterance"],
                    "sentiment": record["Sentiment"],
                    "dialogue_id": int(record["Dialogue_ID"]),
                    "utterance_id": int(record["Utterance_ID"]),
                }
            )
    if missing:
        logger.warning("skipped csv rows with neither audio nor video (split: count): %s", dict(missing))
    if to_extract:
        if shutil.which("ffmpeg") is None:
            raise RuntimeError(
                f"ffmpeg not found on PATH: needed to extract {len(to_extract)} clips such as {to_extract[0][0]}; "
                f"install FFmpeg or put the wav files under {wav_dir}/<train|dev|test>/"
            )
        logger.info("extracting audio of %d clips with ffmpeg into %s", len(to_extract), wav_dir)
        with ThreadPoolExecutor(num_workers) as pool:
            extracted = list(pool.map(_extract, *zip(*to_extract)))
        failed = {str(wav.resolve()) for (_, wav), ok in zip(to_extract, extracted) if not ok}
        if failed:
            logger.warning("skipped %d clips ffmpeg could not read", len(failed))
            rows = [r for r in rows if r["audio"] not in failed]
    return corpus.save(rows, FEATURES, output_dir, push_to_hub, overwrite, skip_bad_files)


def main(argv=None):
    parser = corpus.argument_parser(__doc__)
    parser.add_argument("--wav_dir", help="where wav files are read or extracted to; default <source_dir>/wav")
    parser.add_argument("--num_workers", type=int, default=4, help="parallel ffmpeg processes")
    corpus.run(prepare, parser, argv)


if __name__ == "__main__":
    main()
