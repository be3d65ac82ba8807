"""ESC-50 environmental sounds as a noise DatasetDict.

Corpus: Piczak, "ESC: Dataset for Environmental Sound Classification" (ACM MM 2015),
https://github.com/karolpiczak/ESC-50 (`ESC-50-master`). Licence CC BY-NC 3.0 (clips from freesound.org).

Layout: `<source_dir>/audio/{fold}-{clip}-{take}-{target}.wav` (or `.flac`), 5 s clips, and
`<source_dir>/meta/esc50.csv` (filename, fold, target, category, esc10, src_file, take).

Protocol: category = the ESC-50 major category (targets 0-9 animals, 10-19 natural soundscapes,
20-29 human non-speech, 30-39 interior/domestic, 40-49 exterior/urban), the fine class in
`subcategory`. ESC-50 puts the clips cut from one freesound recording in the same fold, so fold
`test_fold` (default 5) is test and the others train, disjoint by recording (`source` = src_file).
"""

import csv
import logging
import re

from nser import corpus

logger = logging.getLogger(__name__)

# target // 10 -> major category
MAJOR_CATEGORIES = dict(
    enumerate(("animals", "natural soundscapes", "human non-speech", "interior/domestic", "exterior/urban"))
)
NAME = re.compile(r"(?P<fold>\d)-(?P<clip>\w+)-(?P<take>[A-Z])-(?P<target>\d+)")
EXPECTED = "{fold}-{clip}-{take}-{target}.wav, like 1-100032-A-0.wav"


def _metadata(source_dir):
    """esc50.csv rows by file stem."""
    path = source_dir / "meta" / "esc50.csv"
    if not path.is_file():
        raise FileNotFoundError(f"ESC-50 metadata {path} not found")
    with path.open(encoding="utf-8", newline="") as f:
        return {record["filename"].rsplit(".", 1)[0]: record for record in csv.DictReader(f)}


def prepare(source_dir, output_dir=None, test_fold=5, push_to_hub=None, overwrite=False, skip_bad_files=False):
    """ESC-50 as train/test noise, fold `test_fold` in test."""
    source_dir = corpus.check_inputs(source_dir, push_to_hub)
    metadata = _metadata(source_dir)
    rows = []
    for path in corpus.find_audio(source_dir, "audio/*"):
        name = corpus.parse_name(path, NAME, EXPECTED)
        record = corpus.lookup(path.stem, metadata, "clip", "meta/esc50.csv")
        if (record["fold"], record["target"]) != (name["fold"], name["target"]):
            raise ValueError(f"{path}: fold/target in the name disagree with meta/esc50.csv {record}")
        rows.append(
            corpus.row(
                path,
                source_dir,
                category=corpus.lookup(int(record["target"]) // 10, MAJOR_CATEGORIES, "target // 10", path),
                subcategory=record["category"],
                split="test" if int(record["fold"]) == test_fold else "train",
                source=record["src_file"],
            )
        )
    if len(rows) < len(metadata):
        logger.warning("%d clips of meta/esc50.csv have no audio file", len(metadata) - len(rows))
    if not any(r["split"] == "test" for r in rows):
        raise ValueError(f"no clip in test_fold {test_fold}; folds: {sorted({r['fold'] for r in metadata.values()})}")
    return corpus.save(rows, corpus.NOISE_FEATURES, output_dir, push_to_hub, overwrite, skip_bad_files)


def main(argv=None):
    parser = corpus.argument_parser(__doc__)
    parser.add_argument("--test_fold", type=int, default=5, help="ESC-50 fold (1-5) used as test")
    corpus.run(prepare, parser, argv)


if __name__ == "__main__":
    main()
