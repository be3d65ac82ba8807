"""CASIA Chinese emotional speech corpus (public part) as a DatasetDict.

Corpus: CASIA, Institute of Automation, Chinese Academy of Sciences (Tao et al., 2008); the full corpus
is distributed by the Chinese LDC (http://www.chineseldc.org), the public 1200-utterance part circulates
as `casia/`. Research use only: do not redistribute the audio.

Layout: `<source_dir>/<speaker>/<emotion>/<text id>.wav` (or `.flac`): 4 speakers x 6 emotions
(angry fear happy neutral sad surprise) x 50 sentences (ids 201-250). Labels come from the folder names.

Protocol: every speaker reads the same 50 sentences in every emotion, so a random utterance split leaks
speaker and text. Splits are speaker-independent: by default the first speaker in sorted order is the
test speaker and the next one the validation speaker; pass `test_speakers` along the sorted speakers for
the 4 leave-one-speaker-out folds. `text_id` is kept for a text-independent split.
"""

import re

from nser import corpus

EMOTIONS = ("angry", "fear", "happy", "neutral", "sad", "surprise")
FEATURES = corpus.emotion_features(EMOTIONS, text_id="string")
NAME = re.compile(r"(?P<text_id>\d+)")


def prepare(
    source_dir,
    output_dir=None,
    test_speakers=None,
    validation_speakers=None,
    push_to_hub=None,
    overwrite=False,
    skip_bad_files=False,
):
    """CASIA as train/validation/test by speaker (defaults: see the module docstring)."""
    source_dir = corpus.check_inputs(source_dir, push_to_hub)
    rows = []
    for path in corpus.find_audio(source_dir, "*/*/*"):
        speaker, emotion = path.parts[-3:-1]
        label = corpus.lookup(emotion, EMOTIONS, "emotion folder", path)
        name = corpus.parse_name(path, NAME, "<text id>.wav, digits like 201.wav")
        rows.append(corpus.row(path, source_dir, label=label, speaker=speaker, **name))
    corpus.assign_splits(rows, "speaker", test_speakers, validation_speakers)
    return corpus.save(rows, FEATURES, output_dir, push_to_hub, overwrite, skip_bad_files)


def main(argv=None):
    parser = corpus.speaker_argument_parser(__doc__, "the first speaker in sorted order", "the speaker after the test speaker")
    corpus.run(prepare, parser, argv)


if __name__ == "__main__":
    main()
