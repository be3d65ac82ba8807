"""RAVDESS audio-only emotional speech as a DatasetDict.

Corpus: The Ryerson Audio-Visual Database of Emotional Speech and Song (Livingstone & Russo, 2018),
https://zenodo.org/record/1188976 (`Audio_Speech_Actors_01-24.zip`). Licence CC BY-NC-SA 4.0.

Layout: `<source_dir>/Actor_XX/MM-CC-EE-II-SS-RR-AA.wav` (or `.flac`), the filename code being
modality (03 audio-only) - vocal channel (01 speech, 02 song) - emotion (01..08 = neutral calm happy sad
angry fearful disgust surprised) - intensity (01 normal, 02 strong) - statement (01 "Kids are talking by
the door", 02 "Dogs are sitting by the door") - repetition (01, 02) - actor (01..24, odd = male).
Files of another modality or channel (song, video) are skipped with a warning.

Protocol: split by actor, never by file. By default the first 2 actors in sorted order are the test
actors and the next 2 the validation actors (one male and one female each, as actors alternate);
the `speaker` column allows any leave-actors-out cross-validation.
"""

import logging
import re
from collections import Counter

from nser import corpus

logger = logging.getLogger(__name__)

EMOTIONS = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")
EMOTION_CODES = {f"{i:02d}": name for i, name in enumerate(EMOTIONS, start=1)}
INTENSITIES = {"01": "normal", "02": "strong"}
FEATURES = corpus.emotion_features(
    EMOTIONS, gender="string", intensity="string", statement="string", repetition="string"
)
NAME = re.compile(
    r"(?P<modality>\d\d)-(?P<channel>\d\d)-(?P<emotion>\d\d)-(?P<intensity>\d\d)"
    r"-(?P<statement>\d\d)-(?P<repetition>\d\d)-(?P<actor>\d\d)"
)
EXPECTED = "MM-CC-EE-II-SS-RR-AA.wav, two digits each, like 03-01-05-02-01-01-12.wav"


def prepare(
    source_dir,
    output_dir=None,
    test_speakers=None,
    validation_speakers=None,
    push_to_hub=None,
    overwrite=False,
    skip_bad_files=False,
):
    """RAVDESS speech as train/validation/test by actor (defaults: see the module docstring)."""
    source_dir = corpus.check_inputs(source_dir, push_to_hub)
    rows, skipped = [], Counter()
    for path in corpus.find_audio(source_dir, "Actor_*/*"):
        code = corpus.parse_name(path, NAME, EXPECTED)
        if (code["modality"], code["channel"]) != ("03", "01"):
            skipped[f"{code['modality']}-{code['channel']}"] += 1
            continue
        speaker = path.parent.name
        if speaker != f"Actor_{code['actor']}":
            raise ValueError(f"{path}: actor {code['actor']} in the name but in folder {speaker}")
        rows.append(
            corpus.row(
                path,
                source_dir,
                label=corpus.lookup(code["emotion"], EMOTION_CODES, "emotion code", path),
                speaker=speaker,
                gender="male" if int(code["actor"]) % 2 else "female",
                intensity=corpus.lookup(code["intensity"], INTENSITIES, "intensity code", path),
                statement=code["statement"],
                repetition=code["repetition"],
            )
        )
    if skipped:
        logger.warning("skipped files that are not audio-only speech (modality-channel: count): %s", dict(skipped))
    corpus.assign_splits(rows, "speaker", test_speakers, validation_speakers, n_test=2, n_validation=2)
    return corpus.save(rows, FEATURES, output_dir, push_to_hub, overwrite, skip_bad_files)


def main(argv=None):
    parser = corpus.speaker_argument_parser(__doc__, "Actor_01 Actor_02", "the 2 actors after the test actors")
    corpus.run(prepare, parser, argv)


if __name__ == "__main__":
    main()
