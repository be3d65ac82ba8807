"""Toronto Emotional Speech Set (TESS) as a DatasetDict.

Corpus: Dupuis & Pichora-Fuller, University of Toronto, 2010,
https://doi.org/10.5683/SP2/E8H2MF (Borealis/Dataverse). Licence CC BY-NC-ND 4.0.

Layout: `<source_dir>/OAF_angry/OAF_back_angry.wav` (or `.flac`; the folders may sit one level deeper,
as in the Dataverse zip): folder `<speaker>_<emotion>`, file `<speaker>_<word>_<emotion code>`.
Speakers OAF (older) and YAF (younger), both female; 7 emotions (angry disgust fear happy neutral
pleasant surprise sad); the folders spell them inconsistently (`OAF_Fear`, `OAF_Pleasant_surprise`,
`YAF_pleasant_surprised`), so folder names are matched case-insensitively and pleasant surprise is
labelled `surprise`.

Protocol: TESS has only 2 speakers, so speaker-independent evaluation is 2-fold: by default OAF is the
test speaker and YAF the training speaker, with no validation split (`test_speakers="YAF"` for the
other fold).
"""

import re

from nser import corpus

EMOTIONS = ("angry", "disgust", "fear", "happy", "neutral", "surprise", "sad")
EMOTION_FOLDERS = {name: name for name in EMOTIONS} | {
    "pleasant_surprise": "surprise",
    "pleasant_surprised": "surprise",
}
FEATURES = corpus.emotion_features(EMOTIONS, word="string")
FOLDER = re.compile(r"(?P<speaker>OAF|YAF)_(?P<emotion>\w+)", re.IGNORECASE)
NAME = re.compile(r"(?P<speaker>OAF|YAF)_(?P<word>[a-z]+)_(?P<code>[a-z]+)", re.IGNORECASE)


def prepare(
    source_dir,
    output_dir=None,
    test_speakers=None,
    validation_speakers=(),
    push_to_hub=None,
    overwrite=False,
    skip_bad_files=False,
):
    """TESS as train/test by speaker (defaults: see the module docstring)."""
    source_dir = corpus.check_inputs(source_dir, push_to_hub)
    rows = []
    for path in corpus.find_audio(source_dir, "**/*"):
        folder = corpus.parse_name(path.parent, FOLDER, "folder <OAF|YAF>_<emotion>, like OAF_angry")
        name = corpus.parse_name(path, NAME, "<OAF|YAF>_<word>_<emotion>.wav, like OAF_back_angry.wav")
        speaker = folder["speaker"].upper()
        if name["speaker"].upper() != speaker:
            raise ValueError(f"{path}: speaker {name['speaker']} in the name but in folder {path.parent.name}")
        label = corpus.lookup(folder["emotion"].lower(), EMOTION_FOLDERS, "emotion folder", path.parent)
        rows.append(corpus.row(path, source_dir, label=label, speaker=speaker, word=name["word"].lower()))
    corpus.assign_splits(rows, "speaker", test_speakers, validation_speakers)
    return corpus.save(rows, FEATURES, output_dir, push_to_hub, overwrite, skip_bad_files)


def main(argv=None):
    parser = corpus.speaker_argument_parser(__doc__, "OAF", "none (2 speakers only)", default=())
    corpus.run(prepare, parser, argv)


if __name__ == "__main__":
    main()
