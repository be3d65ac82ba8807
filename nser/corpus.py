"""Shared work of `dataset_scripts/`: turn a corpus, as distributed, into a `datasets.DatasetDict`.

A corpus script only knows its layout and file-naming code. Walking the files, the common schemas,
speaker-independent splits, saving (skipping work already done) and pushing live here, so that every
corpus is prepared the same way and the scripts stay small.

Rows are plain dicts: `audio` (a file path, or a function returning `{"bytes": ...}` for audio made in
memory, called only when the dataset is built), `path` (relative to the source directory), `split`, and
the schema's other columns.
"""

import argparse
import hashlib
import json
import logging
import os
import re
import shutil
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import huggingface_hub
from datasets import Audio, ClassLabel, Dataset, DatasetDict, Features, Value, load_from_disk

from nser.atomic import write_text_atomic
from nser.audio import audio_problem

logger = logging.getLogger(__name__)

SAMPLING_RATE = 16_000
# The shared copies of the corpora are FLAC files with the distributed (WAV) names.
AUDIO_EXTENSIONS = (".wav", ".flac")
SPLITS = ("train", "validation", "test")
# Written last into output_dir: its presence means the output is complete, its fingerprint what it holds.
MARKER = "nser_prepare.json"
# Written into output_dir by `save(..., skip_bad_files=True)`: the files left out, and why.
BAD_FILES = "bad_files.tsv"
# One feature object for every corpus: decode to 16 kHz mono whatever the file's rate and channels.
AUDIO = Audio(sampling_rate=SAMPLING_RATE, num_channels=1)


def emotion_features(label_names: Sequence[str], **columns: str) -> Features:
    """Schema of the emotion corpora; `columns` maps each extra column to its `Value` dtype."""
    return Features(
        {
            "audio": AUDIO,
            "label": ClassLabel(names=list(label_names)),
            "speaker": Value("string"),
            "path": Value("string"),
            **{name: Value(dtype) for name, dtype in columns.items()},
        }
    )


# Identical for every noise corpus so that noise banks can be concatenated.
NOISE_FEATURES = Features(
    {
        "audio": AUDIO,
        "category": Value("string"),
        "subcategory": Value("string"),
        "split": Value("string"),
        "source": Value("string"),
        "path": Value("string"),
    }
)


def check_inputs(source_dir: str | Path, push_to_hub: str | None = None) -> Path:
    """The source directory as a Path; fails before any work if it or a Hub token is missing."""
    path = Path(source_dir).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"source_dir {path} does not exist or is not a directory")
    if push_to_hub:
        if huggingface_hub.constants.HF_HUB_OFFLINE:
            raise RuntimeError(f"cannot push to {push_to_hub}: HF_HUB_OFFLINE is set")
        if huggingface_hub.get_token() is None:
            raise RuntimeError(
                f"cannot push to {push_to_hub}: no Hugging Face token found; run `hf auth login` or set HF_TOKEN"
            )
    return path


def find_audio(source_dir: Path, pattern: str) -> list[Path]:
    """Sorted audio files under `source_dir` matching the glob `pattern`, any of AUDIO_EXTENSIONS.

    Hidden files are ignored: some corpus copies carry macOS `._name.wav` resource forks.
    """
    files = sorted(
        p
        for p in source_dir.glob(pattern)
        if p.suffix.lower() in AUDIO_EXTENSIONS and not p.name.startswith(".") and p.is_file()
    )
    if not files:
        raise FileNotFoundError(
            f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) matching {pattern!r} under {source_dir}"
        )
    twins = [stem for stem, n in Counter(p.with_suffix("") for p in files).items() if n > 1]
    if twins:
        raise ValueError(f"{twins[0]} exists with several extensions; keep one of {AUDIO_EXTENSIONS}")
    return files


def parse_name(path: Path, pattern: re.Pattern, expected: str) -> dict[str, str]:
    """The named groups of `pattern` matched against the whole file stem, or an error naming the file
    and the `expected` pattern."""
    match = pattern.fullmatch(path.stem)
    if match is None:
        raise ValueError(f"unexpected file name {path}: expected {expected}")
    return match.groupdict()


def lookup(code: str, table: Mapping[str, str] | Collection[str], what: str, where: object) -> str:
    """`table[code]` (or `code` if `table` is a plain collection), else an error naming code, place, known codes."""
    if code not in table:
        known = sorted(map(str, table))
        shown = ", ".join(known[:20]) + (f", ... ({len(known)} in all)" if len(known) > 20 else "")
        raise ValueError(f"unknown {what} {code!r} in {where}; known: {shown}")
    return table[code] if isinstance(table, Mapping) else code


def row(path: Path, source_dir: Path, **columns) -> dict:
    """A manifest row for an audio file: decoded from its absolute path, named relative to the corpus."""
    return {"audio": str(path.resolve()), "path": path.relative_to(source_dir).as_posix(), **columns}


def recording_id(path: Path, source_dir: Path) -> str:
    """The file's path relative to the corpus without extension: the same for its .wav and .flac copies."""
    return path.relative_to(source_dir).with_suffix("").as_posix()


def _as_list(groups) -> list:
    return [groups] if isinstance(groups, (str, int)) else list(groups)


def group_splits(groups: Iterable, test=None, validation=None, n_test: int = 1, n_validation: int = 1) -> dict:
    """Map each group (speaker, session) to "train", "validation" or "test"; no group straddles splits.

    `test` defaults to the first `n_test` groups in sorted order; `validation` to the `n_validation`
    groups that follow the test groups (wrapping around), so that moving `test` along the sorted
    groups gives the folds of a leave-k-out cross-validation. An empty `validation` gives no
    validation split.
    """
    available = sorted(set(groups))
    test = available[:n_test] if test is None else _as_list(test)
    if not test:
        raise ValueError(f"no test groups chosen from {available}")
    if validation is None:
        after = available.index(test[-1]) + 1 if test[-1] in available else 0
        rotated = available[after:] + available[:after]
        validation = [g for g in rotated if g not in test][:n_validation]
    validation = _as_list(validation)
    unknown = [g for g in test + validation if g not in available]
    if unknown:
        raise ValueError(f"unknown groups {unknown}; available: {available}")
    if set(test) & set(validation):
        raise ValueError(f"groups {sorted(set(test) & set(validation))} are in both test and validation")
    train = [g for g in available if g not in test and g not in validation]
    if not train:
        raise ValueError(f"test={test}, validation={validation} leave no training group of {available}")
    logger.info("train groups %s, validation groups %s, test groups %s", train, validation, test)
    return {g: "train" for g in train} | {g: "validation" for g in validation} | {g: "test" for g in test}


def assign_splits(rows: list[dict], key: str, test=None, validation=None, n_test: int = 1, n_validation: int = 1):
    """Set each row's `split` from its `key` column with `group_splits` (speaker-independent splits)."""
    splits = group_splits((r[key] for r in rows), test, validation, n_test, n_validation)
    for r in rows:
        r["split"] = splits[r[key]]


def hash_split(key: str, test_fraction: float) -> str:
    """Put a stable `test_fraction` of keys in "test": sha1, unlike `hash()`, is the same in every process."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    value = int.from_bytes(hashlib.sha1(key.encode()).digest()[:8], "big") / 2**64
    return "test" if value < test_fraction else "train"


def check_audio_files(rows: list[dict], skip_bad_files: bool = False) -> tuple[list[dict], list[tuple[str, str]]]:
    """(usable rows, [(path, problem)]) after a header read of every row's audio file, in parallel. Without
    `skip_bad_files` any bad file stops the preparation with one error listing them all. Rows whose audio is
    made in memory (a callable) are not checked here."""
    paths = [r["audio"] for r in rows if isinstance(r["audio"], (str, Path))]
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        problems = dict(zip(paths, pool.map(audio_problem, paths)))
    bad = [(str(path), problem) for path, problem in problems.items() if problem]
    if not bad:
        return rows, []
    listed = "\n".join(f"  {path}: {problem}" for path, problem in bad)
    if not skip_bad_files:
        raise ValueError(
            f"{len(bad)} of {len(paths)} audio files cannot be used:\n{listed}\n"
            "Fix or remove them, or pass --skip_bad_files to leave them out (the list is then written next to the dataset)."
        )
    logger.warning("leaving out %d of %d audio files that cannot be used:\n%s", len(bad), len(paths), listed)
    bad_paths = {path for path, _ in bad}
    return [r for r in rows if not (isinstance(r["audio"], (str, Path)) and str(r["audio"]) in bad_paths)], bad


def _fingerprint(rows: list[dict], features: Features) -> str:
    # What the output holds: every row but its decoded audio (its `path`, `source` name it) and the schema.
    manifest = [{k: v for k, v in r.items() if k != "audio"} for r in rows]
    payload = json.dumps({"features": features.to_dict(), "rows": manifest}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def _is_done(output_dir: Path, fingerprint: str, overwrite: bool) -> bool:
    """True if output_dir already holds this preparation; raises rather than replace other content silently."""
    if not output_dir.exists() or not any(output_dir.iterdir()):
        return False
    marker = output_dir / MARKER
    if marker.is_file() and json.loads(marker.read_text())["fingerprint"] == fingerprint:
        return True
    if not (output_dir / "dataset_dict.json").is_file():
        raise FileExistsError(f"output_dir {output_dir} is not empty and holds no DatasetDict; choose another")
    if not overwrite:
        raise FileExistsError(
            f"output_dir {output_dir} holds a different or incomplete preparation (other files or "
            "arguments); pass overwrite=True (--overwrite) to replace it"
        )
    logger.warning("replacing the dataset in %s", output_dir)
    shutil.rmtree(output_dir)
    return False


def _value(manifest_row: dict, column: str):
    value = manifest_row[column]
    return value() if column == "audio" and callable(value) else value


def _build(rows: list[dict], features: Features) -> DatasetDict:
    by_split = {name: [r for r in rows if r["split"] == name] for name in SPLITS}
    unknown = {r["split"] for r in rows} - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown split names {sorted(unknown)}; expected {SPLITS}")
    return DatasetDict(
        {
            name: Dataset.from_dict({col: [_value(r, col) for r in split_rows] for col in features}, features=features)
            for name, split_rows in by_split.items()
            if split_rows
        }
    )


def save(
    rows: list[dict],
    features: Features,
    output_dir: str | Path | None = None,
    push_to_hub: str | None = None,
    overwrite: bool = False,
    skip_bad_files: bool = False,
) -> DatasetDict:
    """Build the DatasetDict from manifest rows; save it (skipped when already done) and push it if asked.

    With `output_dir` the returned dataset is the saved one, audio embedded, identical on later calls. Every audio
    file is checked first (`check_audio_files`): a bad one stops the preparation with the list of bad files, or
    with `skip_bad_files` is left out and listed in `output_dir/bad_files.tsv` (path, problem).
    """
    rows, bad = check_audio_files(rows, skip_bad_files)
    if not rows:
        raise ValueError("no usable audio file left after leaving out the bad ones")
    if output_dir is None:
        dataset = _build(rows, features)
    else:
        output_dir = Path(output_dir).expanduser()
        fingerprint = _fingerprint(rows, features)
        if _is_done(output_dir, fingerprint, overwrite):
            logger.info("skipping: %s already holds this preparation (%d rows)", output_dir, len(rows))
        else:
            _build(rows, features).save_to_disk(str(output_dir))
            write_text_atomic(output_dir / MARKER, json.dumps({"fingerprint": fingerprint, "rows": len(rows)}))
            logger.info("saved to %s", output_dir)
        bad_list = output_dir / BAD_FILES
        if bad:
            bad_list.write_text("path\tproblem\n" + "".join(f"{p}\t{problem}\n" for p, problem in bad), encoding="utf-8")
            logger.warning("the %d files left out are listed in %s", len(bad), bad_list)
        elif bad_list.exists():
            bad_list.unlink()
        dataset = load_from_disk(str(output_dir))
    logger.info("rows per split: %s", {name: split.num_rows for name, split in dataset.items()})
    if push_to_hub:
        dataset.push_to_hub(push_to_hub)
        logger.info("pushed to https://huggingface.co/datasets/%s", push_to_hub)
    return dataset


def argument_parser(doc: str) -> argparse.ArgumentParser:
    """The command-line arguments every corpus script shares; the script adds its protocol's own."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source_dir", required=True, help="the corpus folder, as distributed")
    parser.add_argument("--output_dir", help="save_to_disk here (skipped when it already holds this result)")
    parser.add_argument("--push_to_hub", metavar="USER/NAME", help="push the DatasetDict to this Hub repo")
    parser.add_argument("--overwrite", action="store_true", help="replace a different dataset in output_dir")
    parser.add_argument(
        "--skip_bad_files", action="store_true",
        help=f"leave out audio files that cannot be decoded (listed in <output_dir>/{BAD_FILES}) instead of stopping",
    )
    return parser


def speaker_argument_parser(doc: str, test_default: str, validation_default: str, **validation_options):
    """`argument_parser` plus the speaker-independent split choice of the emotion corpora."""
    parser = argument_parser(doc)
    parser.add_argument("--test_speakers", nargs="+", help=f"default: {test_default}")
    parser.add_argument(
        "--validation_speakers", nargs="*", help=f"default: {validation_default}; give none for no validation split",
        **validation_options,
    )
    return parser


def run(prepare, parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> DatasetDict:
    """Parse the command line and call the script's `prepare` with it."""
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return prepare(**vars(args))
