"""Loading an emotion corpus as a `DatasetDict` and cutting speaker-independent splits and folds.

Sources: a folder written by `dataset_scripts/*` (`save_to_disk`), a Hub dataset id, an audio folder
(label = sub-folder, `datasets`' audiofolder builder) or a CSV manifest (`path,label[,speaker]`).
"""

import logging
from pathlib import Path

import numpy as np
from datasets import Audio, ClassLabel, DatasetDict, concatenate_datasets, load_dataset, load_from_disk

from nser.audio import SAMPLING_RATE

logger = logging.getLogger(__name__)


def load_corpus(dataset_name=None, dataset_config_name=None, audio_folder=None, manifest_csv=None):
    """Load the corpus from exactly one source; audio is decoded lazily at 16 kHz mono by `datasets`."""
    sources = {"dataset_name": dataset_name, "audio_folder": audio_folder, "manifest_csv": manifest_csv}
    given = {name: value for name, value in sources.items() if value}
    if len(given) != 1:
        raise ValueError(f"give exactly one data source of --dataset_name, --audio_folder, --manifest_csv; got {given or 'none'}")
    if audio_folder:
        if not Path(audio_folder).is_dir():
            raise ValueError(f"--audio_folder {audio_folder} is not a folder")
        corpus = load_dataset("audiofolder", data_dir=str(audio_folder))
    elif manifest_csv:
        if not Path(manifest_csv).is_file():
            raise ValueError(f"--manifest_csv {manifest_csv} does not exist")
        corpus = load_dataset("csv", data_files={"train": str(manifest_csv)})
        if "path" not in corpus["train"].column_names:
            raise ValueError(f"--manifest_csv {manifest_csv} needs a 'path' column; columns: {corpus['train'].column_names}")
        root = Path(manifest_csv).resolve().parent
        corpus = corpus.map(lambda row: {"audio": str(root / row["path"])}).cast_column("audio", Audio())
    elif Path(dataset_name).is_dir():
        corpus = load_from_disk(dataset_name)
    else:
        corpus = load_dataset(dataset_name, dataset_config_name)
    if not isinstance(corpus, DatasetDict):
        corpus = DatasetDict({"train": corpus})
    return corpus


def prepare_columns(corpus, audio_column="audio", label_column="label", label_names=None):
    """Check the columns, decode audio at 16 kHz mono, make the label a `ClassLabel`; return (corpus, names).

    `label_names` (--emotion_labels) fixes the label set and its order; a label outside it is an error naming the label."""
    for split, ds in corpus.items():
        for column in (audio_column, label_column):
            if column not in ds.column_names:
                raise ValueError(f"column {column!r} not found in split {split!r}; columns: {ds.column_names}")
        if len(ds) == 0:
            raise ValueError(f"split {split!r} is empty")
    corpus = corpus.cast_column(audio_column, Audio(sampling_rate=SAMPLING_RATE, num_channels=1))
    feature = next(iter(corpus.values())).features[label_column]
    found = feature.names if isinstance(feature, ClassLabel) else sorted({str(v) for ds in corpus.values() for v in ds[label_column]})
    names = list(label_names) if label_names else list(found)
    unknown = sorted(set(found) - set(names))
    if unknown:
        raise ValueError(f"labels {unknown} are not in --emotion_labels {names}")
    if not isinstance(feature, ClassLabel) or list(feature.names) != names:
        to_name = feature.int2str if isinstance(feature, ClassLabel) else str
        corpus = corpus.map(lambda row: {label_column: to_name(row[label_column])})
        corpus = corpus.cast_column(label_column, ClassLabel(names=names))
    return corpus, names


def speaker_independent_splits(corpus, group_column, test_groups=None, validation_groups=None, validation_column=None):
    """train/validation/test with no speaker (or session) in two splits.

    Splits already in the corpus are kept; missing ones are cut from `train` by group: by default the
    last group in sorted order is the test set and the one before it the validation set. With
    `validation_column` (e.g. CASIA's `text_id`), validation is cut from train by that column instead:
    held-out sentences of the training speakers, so that every speaker but the test one trains."""
    if {"train", "validation", "test"} <= set(corpus):
        return corpus
    result = DatasetDict(corpus)
    if "test" not in corpus or test_groups:
        test_groups = _check_groups(corpus["train"], group_column, test_groups, default=-1)
        result = _move(result, group_column, test_groups, "test")
    if "validation" not in corpus:
        column = validation_column or group_column
        validation_groups = _check_groups(result["train"], column, validation_groups, default=-1)
        result = _move(result, column, validation_groups, "validation")
    logger.info("splits: %s", {split: len(ds) for split, ds in result.items()})
    return result


def _check_groups(ds, column, chosen, default):
    if column not in ds.column_names:
        raise ValueError(f"cannot cut splits by {column!r}: no such column; columns: {ds.column_names}")
    groups = sorted({str(g) for g in ds[column]})
    chosen = [str(g) for g in chosen] if chosen else [groups[default]]
    unknown = sorted(set(chosen) - set(groups))
    if unknown:
        raise ValueError(f"groups {unknown} not found in column {column!r}; available: {groups}")
    if set(chosen) >= set(groups):
        raise ValueError(f"holding out {chosen} of {column!r} leaves nothing to train on")
    return chosen


def _move(corpus, column, groups, split):
    """Move the rows of `groups` (values of `column`) from train into `split`."""
    chosen = set(groups)
    result = DatasetDict(corpus)
    result[split] = corpus["train"].filter(lambda g: str(g) in chosen, input_columns=column)
    result["train"] = corpus["train"].filter(lambda g: str(g) not in chosen, input_columns=column)
    logger.info("%s = rows with %s in %s", split, column, sorted(chosen))
    return result


VALIDATION_MODES = ("within_groups", "next_group")


def cross_validation_folds(corpus, group_column, num_folds=None, validation="within_groups", validation_column=None,
                           validation_groups=None, validation_fraction=0.1, label_column="label", seed=0):
    """Folds whose test sets cover every group once, each trained on every group it does not test.

    Test groups: one per fold (leave-one-group-out: CASIA speakers, IEMOCAP sessions) or, with `num_folds=K`, the
    sorted groups cut into K consecutive blocks (e.g. 12 RAVDESS actors in 3 folds of 4). Validation (model
    selection) comes from the training groups themselves, so that no training speaker is lost to it:
    `validation_column` + `validation_groups` hold out those values (e.g. CASIA's sentences 241-250), otherwise a
    seeded, stratified `validation_fraction` of each training group's clips per label. `validation="next_group"`
    instead validates on the whole next group (cyclically), the older protocol that trains on one group fewer.
    Returns [(fold name, DatasetDict)]."""
    if validation not in VALIDATION_MODES:
        raise ValueError(f"validation={validation!r} is not one of {VALIDATION_MODES}")
    everything = concatenate_datasets(list(corpus.values()))
    if group_column not in everything.column_names:
        raise ValueError(f"--cv_column {group_column!r} not found; columns: {everything.column_names}")
    groups = sorted({str(g) for g in everything[group_column]})
    blocks = fold_test_groups(groups, num_folds)
    if validation == "next_group" and len(blocks) < 3:
        raise ValueError(f"cross-validation by {group_column!r} with a validation group needs at least 3 folds, found {groups}")
    if len(blocks) < 2:
        raise ValueError(f"cross-validation by {group_column!r} needs at least 2 groups, found {groups}")
    folds = []
    for i, tested in enumerate(blocks):
        name = f"{group_column}-{tested[0]}" if len(tested) == 1 else f"{group_column}-{tested[0]}-to-{tested[-1]}"
        if validation == "next_group":
            splits = speaker_independent_splits(DatasetDict({"train": everything}), group_column, tested, blocks[(i + 1) % len(blocks)])
        else:
            splits = _move(DatasetDict({"train": everything}), group_column, tested, "test")
            splits = validation_from_training_groups(splits, group_column, validation_column, validation_groups,
                                                     validation_fraction, label_column, seed)
        folds.append((name, splits))
    return folds


def all_groups_splits(corpus, group_column, validation_column=None, validation_groups=None, validation_fraction=0.1,
                      label_column="label", seed=0):
    """Every clip of every group trains, validation cut as in `cross_validation_folds`, no test split: the one
    deployable model after cross-validation has measured the method."""
    everything = DatasetDict({"train": concatenate_datasets(list(corpus.values()))})
    return validation_from_training_groups(everything, group_column, validation_column, validation_groups,
                                           validation_fraction, label_column, seed)


def validation_from_training_groups(splits, group_column, validation_column, validation_groups, validation_fraction,
                                    label_column, seed):
    """Validation from `train` without removing a group: the `validation_groups` values of `validation_column`
    (e.g. held-out sentences), else a stratified share of every (group, label) cell."""
    if validation_column:
        chosen = _check_groups(splits["train"], validation_column, validation_groups, default=-1)
        return _move(splits, validation_column, chosen, "validation")
    return stratified_validation(splits, group_column, label_column, validation_fraction, seed)


def fold_test_groups(groups, num_folds=None):
    """The groups each fold tests: one group per fold, or with `num_folds=K` the sorted groups in K consecutive
    blocks (as even as possible, the first ones one larger)."""
    groups = sorted({str(g) for g in groups})
    if num_folds is None:
        return [[g] for g in groups]
    if not 2 <= num_folds <= len(groups):
        raise ValueError(f"--cv_folds {num_folds}: needs 2 to {len(groups)} folds for groups {groups}")
    size, extra = divmod(len(groups), num_folds)
    blocks, start = [], 0
    for i in range(num_folds):
        end = start + size + (i < extra)
        blocks.append(groups[start:end])
        start = end
    return blocks


def stratified_validation(splits, group_column, label_column, fraction, seed):
    """Move a seeded `fraction` of each (training group, label) cell of `train` (at least one clip of every cell
    with two or more) into `validation`: model selection sees every training speaker, and every speaker trains."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"--validation_fraction must be in (0, 1), got {fraction}")
    train = splits["train"]
    cells = {}
    for index, (group, label) in enumerate(zip(train[group_column], train[label_column])):
        cells.setdefault((str(group), str(label)), []).append(index)
    rng = np.random.default_rng(seed)
    chosen = set()
    for key in sorted(cells):
        members = cells[key]
        take = min(len(members) - 1, max(1, round(fraction * len(members))))
        chosen.update(int(i) for i in rng.permutation(members)[:take])
    result = DatasetDict(splits)
    result["validation"] = train.select(sorted(chosen))
    result["train"] = train.select([i for i in range(len(train)) if i not in chosen])
    logger.info("validation = %d clips (%.0f%% of each training %s and label), train = %d", len(chosen), 100 * fraction,
                group_column, len(result["train"]))
    return result


def limit(ds, max_samples, seed):
    """A seeded random subset (for quick runs); the whole split when `max_samples` is None."""
    if max_samples is None or max_samples >= len(ds):
        return ds
    return ds.shuffle(seed=seed).select(range(max_samples))
