"""IEMOCAP (Interactive Emotional Dyadic Motion Capture) speech as a DatasetDict.

Corpus: Busso et al., Language Resources and Evaluation 2008, https://sail.usc.edu/iemocap/
(`IEMOCAP_full_release`, on request under the USC licence: research only, no redistribution).

Layout: `<source_dir>/Session{1..5}/sentences/wav/<dialog>/<utterance>.wav` (or `.flac`) and labels in
`Session*/dialog/EmoEvaluation/<dialog>.txt`, one line per utterance like
`[6.2901 - 8.2357]<TAB>Ses01F_impro01_F000<TAB>neu<TAB>[2.5000, 2.5000, 2.5000]`.

Protocol: the common 4-class setting: neutral, happy (with `exc`, excited, merged in), angry, sad; the
other labels (frustration, surprise, fear, disgust, other, no agreement `xxx`) are dropped and counted
in the log. `speaker` is the session plus the gender of the utterance's speaker, the last F/M before
the index (`Ses01F_impro01_M013` -> `Ses01M`): 10 speakers, 2 per session. Splits are by session
(leave-one-session-out): by default test = session 5, validation = session 4, train = sessions 1-3;
`test_sessions`/`validation_sessions` choose any fold. `improvised` tells improvised from scripted
dialogues, which differ in how often each emotion occurs.
"""

import logging
import re
from collections import Counter

from nser import corpus

logger = logging.getLogger(__name__)

EMOTIONS = ("neutral", "happy", "angry", "sad")
# Every IEMOCAP code; None marks those dropped by the 4-class protocol.
CODES = {"neu": "neutral", "hap": "happy", "exc": "happy", "ang": "angry", "sad": "sad"} | dict.fromkeys(
    ("fru", "sur", "fea", "dis", "oth", "xxx")
)
FEATURES = corpus.emotion_features(EMOTIONS, session="int32", improvised="bool")
LABEL_LINE = re.compile(r"\[[\d.]+ - [\d.]+\]\t(?P<utterance>\S+)\t(?P<code>\w+)\t\[.*")
UTTERANCE = re.compile(r"Ses(?P<session>\d\d)[FM]_(?P<kind>impro|script)\w*_(?P<gender>[FM])\w{3}")
EXPECTED = "Ses<session 2 digits><F|M>_<impro|script><dialog>_<F|M><index>, like Ses01F_impro01_M013"


def _labels(source_dir):
    """(utterance id, emotion code, label file) for every labelled utterance."""
    files = sorted(p for p in source_dir.glob("Session*/dialog/EmoEvaluation/*.txt") if not p.name.startswith("."))
    if not files:
        raise FileNotFoundError(f"no label files Session*/dialog/EmoEvaluation/*.txt under {source_dir}")
    for file in files:
        for line in file.read_text(encoding="utf-8", errors="replace").splitlines():
            match = LABEL_LINE.fullmatch(line.strip())
            if match:
                yield match["utterance"], match["code"], file


def prepare(
    source_dir,
    output_dir=None,
    test_sessions=5,
    validation_sessions=4,
    push_to_hub=None,
    overwrite=False,
    skip_bad_files=False,
):
    """IEMOCAP 4-class as train/validation/test by session (defaults: see the module docstring)."""
    source_dir = corpus.check_inputs(source_dir, push_to_hub)
    audio = {p.stem: p for p in corpus.find_audio(source_dir, "Session*/sentences/wav/*/*")}
    rows, dropped = [], Counter()
    for utterance, code, label_file in _labels(source_dir):
        label = corpus.lookup(code, CODES, "emotion code", f"{label_file} ({utterance})")
        if label is None:
            dropped[code] += 1
            continue
        if utterance not in audio:
            raise FileNotFoundError(f"no audio for {utterance} (labelled in {label_file}) under {source_dir}")
        path = audio[utterance]
        name = corpus.parse_name(path, UTTERANCE, EXPECTED)
        rows.append(
            corpus.row(
                path,
                source_dir,
                label=label,
                speaker=f"Ses{name['session']}{name['gender']}",
                session=int(name["session"]),
                improvised=name["kind"] == "impro",
            )
        )
    logger.info("kept %d utterances; dropped (label: count): %s", len(rows), dict(dropped))
    corpus.assign_splits(rows, "session", test_sessions, validation_sessions)
    return corpus.save(rows, FEATURES, output_dir, push_to_hub, overwrite, skip_bad_files)


def main(argv=None):
    parser = corpus.argument_parser(__doc__)
    parser.add_argument("--test_sessions", type=int, nargs="+", default=5, help="default: 5")
    parser.add_argument("--validation_sessions", type=int, nargs="*", default=4, help="default: 4")
    corpus.run(prepare, parser, argv)


if __name__ == "__main__":
    main()
