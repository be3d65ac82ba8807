"""Any folder of noise recordings as a noise DatasetDict, such as the project's `../shared/data/noise`.

Layout: `<source_dir>/<category>/.../<file>.wav` (or `.flac`): the first sub-folder is the category.
An optional `<source_dir>/metadata.csv` with columns `path`, `split` (train/test) and optionally
`subcategory` fixes the split; its `path` may be relative to the csv's folder (`babble/x.flac`) or to
that folder's parent (`noise/babble/x.flac`, as in `../shared/data/noise/metadata.csv`), with either
audio extension. Licences: those of the recordings (the shared noise lists them in its metadata.csv).

Protocol: with a metadata.csv its split is used as is and every audio file must be listed in it (the
shared noise takes train and test from different recordings: UrbanSound8K folds 1-2 vs 10, NOISEX-92
recordings cut in time, separate crowd recordings). Without one, a deterministic hash of each file's
path puts `test_fraction` (default 0.3) of the files in test. `source` is the file's path without
extension: the file is the unit that is split.
"""

import csv
from pathlib import Path

from nser import corpus

SPLIT_NAMES = ("train", "test")


def _metadata(source_dir: Path) -> dict[Path, dict] | None:
    """metadata.csv records by the listed file's absolute path without extension; None without a csv."""
    path = source_dir / "metadata.csv"
    if not path.is_file():
        return None
    with path.open(encoding="utf-8", newline="") as f:
        records = list(csv.DictReader(f))
    missing = [c for c in ("path", "split") if records and c not in records[0]]
    if missing:
        raise ValueError(f"{path} lacks columns {missing}; has {list(records[0])}")
    by_file = {}
    for record in records:
        candidates = [base / record["path"] for base in (source_dir, source_dir.parent)]
        found = [c for c in candidates for suffix in corpus.AUDIO_EXTENSIONS if c.with_suffix(suffix).is_file()]
        if not found:
            tried = " nor ".join(map(str, candidates))
            raise FileNotFoundError(f"{path} lists {record['path']}, found as neither {tried}")
        corpus.lookup(record["split"], SPLIT_NAMES, "split", f"{path} ({record['path']})")
        by_file[found[0].resolve().with_suffix("")] = record
    return by_file


def prepare(source_dir, output_dir=None, test_fraction=0.3, push_to_hub=None, overwrite=False, skip_bad_files=False):
    """A noise folder as train/test, split by its metadata.csv or by file hash."""
    source_dir = corpus.check_inputs(source_dir, push_to_hub)
    metadata = _metadata(source_dir)
    rows = []
    for path in corpus.find_audio(source_dir, "**/*"):
        if path.parent == source_dir:
            raise ValueError(f"{path} is not in a category folder: expected <source_dir>/<category>/<file>")
        source = corpus.recording_id(path, source_dir)
        if metadata is None:
            record = {"split": corpus.hash_split(source, test_fraction)}
        elif (record := metadata.get(path.resolve().with_suffix(""))) is None:
            raise ValueError(f"{path} is not listed in {source_dir / 'metadata.csv'}")
        rows.append(
            corpus.row(
                path,
                source_dir,
                category=path.relative_to(source_dir).parts[0],
                subcategory=record.get("subcategory", ""),
                split=record["split"],
                source=source,
            )
        )
    return corpus.save(rows, corpus.NOISE_FEATURES, output_dir, push_to_hub, overwrite, skip_bad_files)


def main(argv=None):
    parser = corpus.argument_parser(__doc__)
    parser.add_argument("--test_fraction", type=float, default=0.3, help="share in test when there is no metadata.csv")
    corpus.run(prepare, parser, argv)


if __name__ == "__main__":
    main()
