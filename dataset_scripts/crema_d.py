"""CREMA-D (Crowd-sourced Emotional Multimodal Actors Dataset) audio as a DatasetDict.

Corpus: Cao et al., IEEE Trans. Affective Computing 2014, https://github.com/CheyneyComputerScience/CREMA-D
(audio in `AudioWAV/`, stored with Git LFS). Licence: Open Database License (ODbL) v1.0.

Layout: `<source_dir>/AudioWAV/1001_DFA_ANG_XX.wav` (or `.flac`): actor (1001..1091) - sentence
(3 letters, 12 sentences) - emotion (ANG DIS FEA HAP NEU SAD) - level (LO MD HI, XX unspecified).

Protocol: 91 actors, split by actor. By default the first 20% of actors in sorted order (18 of 91) are
the test actors and the next 10% (9) the validation actors; `speaker` allows any actor-fold
cross-validation.
"""

import re

from nser import corpus

EMOTIONS = ("anger", "disgust", "fear", "happy", "neutral", "sad")
EMOTION_CODES = dict(zip(("ANG", "DIS", "FEA", "HAP", "NEU", "SAD"), EMOTIONS))
LEVELS = ("LO", "MD", "HI", "XX")
FEATURES = corpus.emotion_features(EMOTIONS, sentence="string", level="string")
NAME = re.compile(r"(?P<speaker>\d{4})_(?P<sentence>[A-Z]{3})_(?P<emotion>[A-Z]{3})_(?P<level>[A-Z]{2})")
EXPECTED = "<actor 4 digits>_<sentence 3 letters>_<emotion 3 letters>_<level 2 letters>.wav, like 1001_DFA_ANG_XX.wav"


def prepare(
    source_dir,
    output_dir=None,
    test_speakers=None,
    validation_speakers=None,
    push_to_hub=None,
    overwrite=False,
    skip_bad_files=False,
):
    """CREMA-D as train/validation/test by actor (defaults: see the module docstring)."""
    source_dir = corpus.check_inputs(source_dir, push_to_hub)
    rows = []
    for path in corpus.find_audio(source_dir, "AudioWAV/*"):
        code = corpus.parse_name(path, NAME, EXPECTED)
        label = corpus.lookup(code.pop("emotion"), EMOTION_CODES, "emotion code", path)
        corpus.lookup(code["level"], LEVELS, "level code", path)
        rows.append(corpus.row(path, source_dir, label=label, **code))
    n_actors = len({r["speaker"] for r in rows})
    n_test, n_validation = max(1, round(0.2 * n_actors)), max(1, round(0.1 * n_actors))
    corpus.assign_splits(rows, "speaker", test_speakers, validation_speakers, n_test, n_validation)
    return corpus.save(rows, FEATURES, output_dir, push_to_hub, overwrite, skip_bad_files)


def main(argv=None):
    parser = corpus.speaker_argument_parser(__doc__, "the first 20%% of actors in sorted order", "the next 10%% of actors")
    corpus.run(prepare, parser, argv)


if __name__ == "__main__":
    main()
