"""Noise banks: which noise recordings exist, their category, and whether they are for training or testing.

A model must be tested on noise it never heard, so every bank entry carries a fixed ``split``; a bank
refuses to hold the same recording in both splits, and a run records the split it used
(:meth:`NoiseBank.save_split`). White and pink noise are synthetic: they are generated on demand, in
every split, from the caller's generator.
"""

import collections
import csv
import hashlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from datasets import Audio, Dataset, DatasetDict, concatenate_datasets, load_from_disk

from .audio import SAMPLING_RATE, audio_problem, load_audio, waveform_from_value
from .noise import MIN_NOISE_SAMPLES, pink_noise, white_noise

logger = logging.getLogger(__name__)

SPLITS = ("train", "test")
SYNTHETIC = {"white": white_noise, "pink": pink_noise}
AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".opus", ".mp3", ".m4a", ".aif", ".aiff", ".sph"})
_SYNTHETIC_PREFIX = "synthetic:"
_COLUMNS = ("path", "category", "split")


@dataclass(frozen=True)
class NoiseEntry:
    """One noise source. ``path`` identifies it in records: a file path, ``synthetic:<category>``, or for a
    row of a noise dataset (``row`` set) the stored file name with a hash of its audio bytes."""

    path: str
    category: str
    split: str
    row: int | None = None

    @property
    def synthetic(self) -> bool:
        return self.path.startswith(_SYNTHETIC_PREFIX)


class NoiseBank:
    """Noise files by category and split, plus the synthetic categories ``white`` and ``pink``.

    Build one with :meth:`from_folder`, :meth:`from_csv` or :meth:`from_dataset`; narrow it with
    :meth:`split` and :meth:`select`; get audio with :meth:`load` (16 kHz mono, cached per file).
    """

    def __init__(self, files=(), splits=SPLITS, synthetic=tuple(SYNTHETIC), dataset: Dataset | None = None):
        self.files = tuple(files)
        self.splits = tuple(splits)
        self.synthetic_categories = tuple(synthetic)
        self._dataset = dataset  # holds the audio of entries with a ``row``
        self._cache: dict[NoiseEntry, torch.Tensor] = {}
        self._validate()

    def _validate(self) -> None:
        for split in self.splits:
            _check_split(split, "bank")
        unknown = [category for category in self.synthetic_categories if category not in SYNTHETIC]
        if unknown:
            raise ValueError(f"unknown synthetic noise {unknown}; available: {list(SYNTHETIC)}")
        for entry in self.files:
            if entry.split not in self.splits:
                raise ValueError(f"{entry.path}: split {entry.split!r} is not one of {list(self.splits)}")
            if entry.category in SYNTHETIC or not entry.category:
                raise ValueError(f"{entry.path}: category {entry.category!r} is empty or reserved for synthetic noise")
        _check_disjoint(self.files)

    def __getstate__(self) -> dict:
        # Worker processes and datasets' fingerprints see the bank's definition, never its audio cache.
        return {**self.__dict__, "_cache": {}}

    def __len__(self) -> int:
        return len(self.entries)

    def __repr__(self) -> str:
        counts = collections.Counter((entry.split, entry.category) for entry in self.files)
        listed = ", ".join(f"{split}/{category}: {count}" for (split, category), count in sorted(counts.items()))
        return f"NoiseBank({len(self.files)} files ({listed}); synthetic {list(self.synthetic_categories)})"

    @property
    def entries(self) -> list[NoiseEntry]:
        """The files, then one synthetic entry per synthetic category and split."""
        synthetic = [
            NoiseEntry(f"{_SYNTHETIC_PREFIX}{category}", category, split)
            for split in self.splits
            for category in self.synthetic_categories
        ]
        return [*self.files, *synthetic]

    @property
    def categories(self) -> list[str]:
        return sorted({entry.category for entry in self.entries})

    def entries_for(self, category: str) -> list[NoiseEntry]:
        self._check_categories([category])
        return [entry for entry in self.entries if entry.category == category]

    def _narrow(self, files, splits=None, synthetic=None) -> "NoiseBank":
        return NoiseBank(
            files,
            self.splits if splits is None else splits,
            self.synthetic_categories if synthetic is None else synthetic,
            self._dataset,
        )

    def split(self, name: str) -> "NoiseBank":
        """The sub-bank of one split (``"train"`` or ``"test"``)."""
        _check_split(name, "requested")
        return self._narrow([entry for entry in self.files if entry.split == name], splits=(name,))

    def select(self, categories) -> "NoiseBank":
        """The sub-bank of the given categories; an unknown one raises an error listing those available."""
        categories = [categories] if isinstance(categories, str) else list(categories)
        if not categories:
            raise ValueError(f"no noise categories selected; available: {self.categories}")
        self._check_categories(categories)
        return self._narrow(
            [entry for entry in self.files if entry.category in categories],
            synthetic=[category for category in self.synthetic_categories if category in categories],
        )

    def _check_categories(self, categories) -> None:
        unknown = [category for category in categories if category not in self.categories]
        if unknown:
            raise ValueError(
                f"unknown noise categories {unknown} in splits {list(self.splits)}; available: {self.categories}"
            )

    def load(self, entry: NoiseEntry, num_samples: int | None = None, generator: torch.Generator | None = None):
        """16 kHz mono float32 noise for ``entry``. Files are read once and cached (do not modify the
        tensor); synthetic noise is generated from ``generator`` with ``num_samples`` samples, or
        ``nser.noise.MIN_NOISE_SAMPLES`` (0.1 s) when that is more, so that clips of any length can be mixed
        (``mix_at_snr`` crops it to the clip)."""
        if entry.synthetic:
            if num_samples is None:
                raise ValueError(f"{entry.path}: synthetic noise needs num_samples")
            return SYNTHETIC[entry.category](max(int(num_samples), MIN_NOISE_SAMPLES), generator)
        if entry not in self._cache:
            self._cache[entry] = self._read(entry)
        return self._cache[entry]

    def _read(self, entry: NoiseEntry) -> torch.Tensor:
        if entry.row is None:
            return load_audio(entry.path)
        return waveform_from_value(self._dataset[entry.row]["audio"], name=entry.path)

    def problems(self) -> list[tuple[str, str]]:
        """``[(noise, problem)]`` for every recorded noise that cannot be used: a file that is missing, not
        decodable or shorter than 0.1 s (``MIN_NOISE_SAMPLES``), checked by a header read in parallel; a row of a
        noise dataset, decoded. Empty when every noise can be mixed: run it before training, not at the first draw."""
        min_seconds = MIN_NOISE_SAMPLES / SAMPLING_RATE
        files = [entry for entry in self.files if entry.row is None]
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            found = list(zip(files, pool.map(lambda entry: audio_problem(entry.path, min_seconds), files)))
        for entry in self.files:
            if entry.row is not None:
                found.append((entry, self._row_problem(entry, min_seconds)))
        return [(entry.path, problem) for entry, problem in found if problem]

    def _row_problem(self, entry: NoiseEntry, min_seconds: float) -> str | None:
        try:
            samples = self._read(entry).numel()
        except ValueError as error:
            return str(error)
        if samples < MIN_NOISE_SAMPLES:
            return f"{samples / SAMPLING_RATE:.3g} s long, shorter than the {min_seconds:g} s needed"
        return None

    def save_split(self, path) -> Path:
        """Writes every entry as CSV (path, category, split): the record of which noise was train and test."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(_COLUMNS)
            writer.writerows((entry.path, entry.category, entry.split) for entry in self.entries)
        return path

    @classmethod
    def from_csv(cls, csv_path, root=None) -> "NoiseBank":
        """Files listed in a CSV with columns ``path, category, split`` (others ignored). Relative paths are
        looked up under ``root`` (default: the CSV's folder), then under its parent."""
        csv_path = Path(csv_path)
        root = csv_path.parent if root is None else Path(root)
        with csv_path.open(newline="") as file:
            reader = csv.DictReader(file)
            missing = [column for column in _COLUMNS if column not in (reader.fieldnames or [])]
            if missing:
                raise ValueError(f"{csv_path}: missing columns {missing}; found {reader.fieldnames}")
            rows = list(reader)
        if not rows:
            raise ValueError(f"{csv_path}: lists no noise files")
        return cls(NoiseEntry(_resolve(row["path"], root, csv_path), row["category"], row["split"]) for row in rows)

    @classmethod
    def from_folder(cls, root, test_fraction: float = 0.3, seed: int = 0) -> "NoiseBank":
        """Files under ``root/<category>/`` (any depth). The split comes from ``root/metadata.csv`` when it
        has a ``split`` column (the only way to keep pieces of one recording in one split); otherwise each
        category's files are ranked by a hash of (seed, file name) and the first ``test_fraction`` go to
        test, so the split is disjoint, stable across machines and independent of listing order."""
        root = Path(root)
        if not root.is_dir():
            raise ValueError(f"noise folder not found: {root}")
        metadata = root / "metadata.csv"
        if metadata.is_file() and "split" in _csv_columns(metadata):
            logger.info("noise split from %s", metadata)
            return cls.from_csv(metadata, root)
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
        files = _audio_files_by_category(root)
        return cls(
            NoiseEntry(str(path), category, split)
            for category, paths in files.items()
            for path, split in _hash_split(paths, root, test_fraction, seed, category)
        )

    @classmethod
    def from_dataset(cls, dataset_or_path) -> "NoiseBank":
        """A prepared noise dataset (``Dataset``, ``DatasetDict`` or a ``save_to_disk`` folder) with columns
        ``audio``, ``category`` and ``split``, as the scripts in ``dataset_scripts/`` write them."""
        data = load_from_disk(str(dataset_or_path)) if isinstance(dataset_or_path, (str, Path)) else dataset_or_path
        if isinstance(data, DatasetDict):
            data = concatenate_datasets(list(data.values()))
        missing = [column for column in ("audio", "category", "split") if column not in data.column_names]
        if missing:
            raise ValueError(f"noise dataset lacks columns {missing}; found {data.column_names}")
        data = data.cast_column("audio", Audio(decode=False))
        entries = [
            NoiseEntry(_row_name(audio, index), category, split, row=index)
            for index, (audio, category, split) in enumerate(zip(data["audio"], data["category"], data["split"]))
        ]
        return cls(entries, dataset=data)


def _check_disjoint(files) -> None:
    """A model must be tested on noise it never heard: no file may be in both splits."""
    splits_by_path = collections.defaultdict(set)
    for entry in files:
        splits_by_path[entry.path].add(entry.split)
    leaked = sorted(path for path, splits in splits_by_path.items() if len(splits) > 1)
    if leaked:
        raise ValueError(f"noise files listed in both train and test: {leaked[:10]} ({len(leaked)} in all)")


def _check_split(split: str, what: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"{what} split {split!r} is not one of {list(SPLITS)}")


def _csv_columns(csv_path: Path) -> list[str]:
    with csv_path.open(newline="") as file:
        return next(csv.reader(file), [])


def _resolve(path: str, root: Path, csv_path: Path) -> str:
    candidates = [Path(path)] if Path(path).is_absolute() else [root / path, root.parent / path]
    for candidate in candidates:
        if candidate.is_file():
            return str(candidate.resolve())
    raise ValueError(f"noise file {path!r} listed in {csv_path} not found (tried {[str(c) for c in candidates]})")


def _audio_files_by_category(root: Path) -> dict[str, list[Path]]:
    folders = sorted(folder for folder in root.iterdir() if folder.is_dir() and not folder.name.startswith("."))
    files = {
        folder.name: sorted(path for path in folder.rglob("*") if path.suffix.lower() in AUDIO_EXTENSIONS)
        for folder in folders
    }
    if not any(files.values()):
        raise ValueError(
            f"no audio files in {root}: expected {root}/<category>/<file> with one of {sorted(AUDIO_EXTENSIONS)}"
        )
    empty = [category for category, paths in files.items() if not paths]
    if empty:
        raise ValueError(f"{root}: category folders without audio files: {empty}")
    return files


def _hash_split(paths: list[Path], root: Path, test_fraction: float, seed: int, category: str):
    """(path, split) pairs: at least one file of each split when the category has two or more."""
    def rank(path: Path) -> str:
        return hashlib.sha256(f"{seed}:{path.relative_to(root).as_posix()}".encode()).hexdigest()

    ranked = sorted(paths, key=rank)
    num_test = min(max(round(test_fraction * len(ranked)), 1), len(ranked) - 1)
    if num_test == 0:
        logger.warning("noise category %r has a single file: it is used for training only", category)
    return [(path, "test" if position < num_test else "train") for position, path in enumerate(ranked)]


def _row_name(audio: dict, index: int) -> str:
    """A name for a dataset row that is the same wherever the same audio appears: a path when the audio is
    a file, else the stored file name (often only a base name) with a hash of the bytes."""
    if audio.get("bytes") is None:
        return audio.get("path") or f"row-{index}"
    return f"{audio.get('path') or 'audio'}#sha256={hashlib.sha256(audio['bytes']).hexdigest()[:16]}"
