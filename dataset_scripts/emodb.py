"""Berlin Database of Emotional Speech (EmoDB) as a DatasetDict.

Corpus: Burkhardt et al., "A Database of German Emotional Speech" (Interspeech 2005),
http://emodb.bilderbar.info/download/ (`download.zip`). Free for research; cite the paper.

Layout: `<source_dir>/wav/03a01Fa.wav` (or `.flac`): speaker (2 digits: 03 08 09 10 11 12 13 14 15 16),
text (3 characters, a01..b10), emotion letter (W L E A F T N = anger boredom disgust fear happiness
sadness neutral, from the German names), version letter (a, b, ...). The other folders of the
distribution (labels, syllables) are not read.

Protocol: 10 speakers, split by speaker. By default the first 2 speakers in sorted order (03 male,
08 female) are the test speakers and the next 2 (09 female, 10 male) the validation speakers;
`speaker` allows the usual leave-one-speaker-out cross-validation.
"""

import re

from nser import corpus

EMOTIONS = ("anger", "boredom", "disgust", "fear", "happiness", "sadness", "neutral")
EMOTION_CODES = dict(zip("WLEAFTN", EMOTIONS))
FEATURES = corpus.emotion_features(EMOTIONS, text_id="string", version="string")
NAME = re.compile(r"(?P<speaker>\d\d)(?P<text_id>[a-z]\d\d)(?P<emotion>[A-Z])(?P<version>[a-z])")
EXPECTED = "<speaker 2 digits><text 3 chars><emotion letter><version letter>.wav, like 03a01Fa.wav"


def prepare(
    source_dir,
    output_dir=None,
    test_speakers=None,
    validation_speakers=None,
    push_to_hub=None,
    overwrite=False,
    skip_bad_files=False,
):
    """EmoDB as train/validation/test by speaker (defaults: see the module docstring)."""
    source_dir = corpus.check_inputs(source_dir, push_to_hub)
    rows = []
    for path in corpus.find_audio(source_dir, "wav/*"):
        code = corpus.parse_name(path, NAME, EXPECTED)
        label = corpus.lookup(code.pop("emotion"), EMOTION_CODES, "emotion letter", path)
        rows.append(corpus.row(path, source_dir, label=label, **code))
    corpus.assign_splits(rows, "speaker", test_speakers, validation_speakers, n_test=2, n_validation=2)
    return corpus.save(rows, FEATURES, output_dir, push_to_hub, overwrite, skip_bad_files)


def main(argv=None):
    parser = corpus.speaker_argument_parser(__doc__, "03 08", "the 2 speakers after the test ones")
    corpus.run(prepare, parser, argv)


if __name__ == "__main__":
    main()
