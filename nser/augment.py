"""Noisy audio for ``datasets``: random noise for training, fixed noisy conditions for testing.

Every random choice comes from a ``torch.Generator`` seeded by a hash of what identifies the draw, never
from global state, so results do not depend on process count, worker order or what ran before:

- training (:class:`NoiseAugmentation`): (seed, epoch, example) -> a new draw each epoch, reproducible (the
  optional speed factor has a generator of its own, so turning it on leaves every noise draw as it was);
- testing (:func:`make_noisy_testset`): (seed, example, noise type, SNR) -> the same bytes on every run.

An example is identified by its ``id`` column when the dataset has one (stable under shuffling and
selection), else by its index (``Dataset.map(..., with_indices=True)``).
"""

import collections
import hashlib
import itertools
import logging
import math
import struct

import torch
import torchaudio
from datasets import Audio, Dataset, Value
from transformers import TrainerCallback

from .audio import SAMPLING_RATE, waveform_from_value
from .noise import SilentSpeechError, mix_at_snr, validate_snrs
from .noise_bank import NoiseBank, NoiseEntry
from .workers import single_thread_if_forked

logger = logging.getLogger(__name__)

CLEAN = "clean"
# The columns make_noisy_testset adds.
CONDITION_FEATURES = {
    "snr_db": Value("float64"),
    "noise_type": Value("string"),
    "noise_file": Value("string"),
    "condition": Value("string"),
}


def condition_name(noise_type: str, snr_db: float) -> str:
    """The name of a test condition, e.g. ``babble_5dB``, ``pink_-2.5dB``."""
    return f"{noise_type}_{float(snr_db) + 0.0:g}dB"  # + 0.0 turns -0.0 into 0.0


def _generator(*key) -> torch.Generator:
    """A generator seeded by a hash of ``key``: the same key gives the same draws in every process
    (Python's ``hash`` is salted per process, so it cannot be used)."""
    digest = hashlib.sha256(repr(key).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def _example_keys(batch: dict, indices, id_column: str) -> list:
    if id_column in batch:
        return [str(value) for value in batch[id_column]]
    if indices is not None:
        return list(indices)
    raise ValueError(
        f"cannot identify examples: no {id_column!r} column (columns: {list(batch)}) and no indices; "
        "add an id column (needed with set_transform) or use Dataset.map(..., with_indices=True)"
    )


def _draw_entry(bank: NoiseBank, category: str, generator: torch.Generator) -> NoiseEntry:
    entries = bank.entries_for(category)
    return entries[int(torch.randint(len(entries), (1,), generator=generator))]


def _mix(bank: NoiseBank, entry: NoiseEntry, speech, snr_db: float, generator, name: str) -> torch.Tensor:
    """:func:`mix_at_snr` with errors naming the example or the noise file at fault."""
    noise = bank.load(entry, speech.numel(), generator)
    try:
        return mix_at_snr(speech, noise, snr_db, generator)
    except SilentSpeechError as error:
        raise SilentSpeechError(f"{name}: {error}") from error
    except ValueError as error:
        raise ValueError(f"noise {entry.path} (for {name}): {error}") from error


class NoiseAugmentation:
    """Training noise as a ``datasets`` batch transform: use it with ``Dataset.set_transform`` /
    ``with_transform`` (a new draw each epoch; the dataset needs an id column, as transforms get no
    indices) or ``Dataset.map(batched=True, with_indices=True)``.

    Each example stays clean with probability ``clean_probability``; otherwise a category is drawn
    uniformly from ``categories``, a file uniformly from that category, and an SNR uniformly from
    ``snr_range``. The audio column becomes ``{"array": float32 16 kHz, "sampling_rate": 16000}`` and
    ``noise_type``, ``snr_db`` and ``noise_file`` are added (``"clean"``, NaN, ``""`` for clean examples).
    Silent speech is kept clean with a warning naming the example: no SNR exists for it.

    ``speed_factors`` (e.g. Kaldi's ``(0.9, 1.0, 1.1)``) turns on speed perturbation: before any noise, each
    draw plays at a factor drawn uniformly from them (tempo and pitch change together, a cheap stand-in for
    other voices when a corpus has few speakers); a ``speed`` column records it. Off by default.

    Only train-split noise is accepted: pass ``bank.split("train")``. Call :meth:`set_epoch` at each
    epoch start (:class:`NoiseEpochCallback` does it for a ``Trainer``), otherwise every epoch hears the
    same noise.
    """

    # Off unless given; then set on the instance, so the `datasets` fingerprints (hence the feature caches) of
    # augmentation without speed perturbation are what they were before the option existed.
    speed_factors: tuple[float, ...] = ()

    def __init__(
        self,
        bank: NoiseBank,
        categories,
        snr_range=(0.0, 20.0),
        clean_probability: float = 0.2,
        seed: int = 0,
        audio_column: str = "audio",
        id_column: str = "id",
        speed_factors=(),
    ):
        if bank.splits != ("train",):
            test_files = [entry.path for entry in bank.files if entry.split != "train"]
            raise ValueError(
                f"training augmentation must use train noise only; the bank covers splits {list(bank.splits)} "
                f"({len(test_files)} non-train files, e.g. {test_files[:3]}): pass bank.split('train')"
            )
        self.snr_range = tuple(validate_snrs(snr_range))
        if len(self.snr_range) != 2 or self.snr_range[0] > self.snr_range[1]:
            raise ValueError(f"snr_range must be (low, high) with low <= high, got {snr_range!r}")
        if not 0.0 <= clean_probability <= 1.0:
            raise ValueError(f"clean_probability must be in [0, 1], got {clean_probability}")
        self.bank = bank.select(categories)
        self.categories = self.bank.categories  # sorted: draws do not depend on the order given
        self.clean_probability = clean_probability
        self.seed = seed
        self.audio_column = audio_column
        self.id_column = id_column
        self.epoch = 0
        if speed_factors:
            self.speed_factors = validate_speed_factors(speed_factors)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __call__(self, batch: dict, indices=None) -> dict:
        single_thread_if_forked()
        keys = _example_keys(batch, indices, self.id_column)
        speeds = [self._speed(key) for key in keys]
        draws = [self._augment(value, key, speed) for value, key, speed in zip(batch[self.audio_column], keys, speeds)]
        audio, noise_type, snr_db, noise_file = map(list, zip(*draws)) if draws else ([], [], [], [])
        added = {"noise_type": noise_type, "snr_db": snr_db, "noise_file": noise_file}
        if self.speed_factors:
            added["speed"] = speeds
        return {**batch, self.audio_column: audio, **added}

    def _speed(self, key) -> float:
        if not self.speed_factors:
            return 1.0
        generator = _generator(self.seed, self.epoch, key, "speed")
        return self.speed_factors[int(torch.randint(len(self.speed_factors), (1,), generator=generator))]

    def _augment(self, value, key, speed) -> tuple[dict, str, float, str]:
        name = f"example {key}"
        speech = waveform_from_value(value, name)
        if speed != 1.0:
            speech = torchaudio.functional.speed(speech.unsqueeze(0), SAMPLING_RATE, speed)[0][0]
        generator = _generator(self.seed, self.epoch, key)
        if float(torch.rand(1, generator=generator)) < self.clean_probability:
            return _array_value(speech), CLEAN, math.nan, ""
        category = self.categories[int(torch.randint(len(self.categories), (1,), generator=generator))]
        entry = _draw_entry(self.bank, category, generator)
        low, high = self.snr_range
        snr_db = low + (high - low) * float(torch.rand(1, generator=generator))
        try:
            noisy = _mix(self.bank, entry, speech, snr_db, generator, name)
        except SilentSpeechError:
            logger.warning("%s: speech is silent, so no SNR can be set; kept clean", name)
            return _array_value(speech), CLEAN, math.nan, ""
        return _array_value(noisy), category, snr_db, entry.path


def validate_speed_factors(factors) -> tuple[float, ...]:
    """Speed factors as floats, each in [0.5, 2]: outside that, speech is no longer a plausible voice."""
    checked = []
    for factor in factors:
        value = float(factor)
        if not 0.5 <= value <= 2.0:
            raise ValueError(f"speed factors must be in [0.5, 2], got {factor!r} in {list(factors)}")
        checked.append(value)
    return tuple(checked)


class NoiseEpochCallback(TrainerCallback):
    """Tells a :class:`NoiseAugmentation` the epoch at each epoch start: the ``Trainer`` never informs a
    map-style dataset's transform, and its data-loader workers copy the transform when the epoch starts."""

    def __init__(self, augmentation: NoiseAugmentation):
        self.augmentation = augmentation

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.augmentation.set_epoch(math.floor(state.epoch or 0))  # fractional when resumed mid-epoch


def _array_value(waveform: torch.Tensor) -> dict:
    return {"array": waveform.numpy(), "sampling_rate": SAMPLING_RATE}


def _float_wav_value(waveform: torch.Tensor) -> dict:
    """An ``Audio`` value holding exact float32 WAV bytes (IEEE float, mono, 16 kHz). ``Audio`` itself would
    encode an array as 16-bit PCM, clipping loud mixtures; the header is written here because libsndfile
    adds a PEAK chunk with a timestamp, which would make every run's bytes differ."""
    data = waveform.numpy().astype("<f4").tobytes()
    fmt = struct.pack("<HHIIHHH", 3, 1, SAMPLING_RATE, 4 * SAMPLING_RATE, 4, 32, 0)  # format 3: IEEE float
    chunks = [(b"fmt ", fmt), (b"fact", struct.pack("<I", waveform.numel())), (b"data", data)]
    body = b"WAVE" + b"".join(name + struct.pack("<I", len(chunk)) + chunk for name, chunk in chunks)
    return {"bytes": b"RIFF" + struct.pack("<I", len(body)) + body, "path": None}


class _TestConditions:
    """The batched map function of :func:`make_noisy_testset` (a class so that it pickles for ``num_proc``
    and hashes to a stable fingerprint for the ``datasets`` cache)."""

    def __init__(self, bank: NoiseBank, noise_types, snrs, seed: int, audio_column: str, id_column: str):
        self.bank, self.noise_types, self.snrs, self.seed = bank, noise_types, snrs, seed
        self.audio_column, self.id_column = audio_column, id_column

    def __call__(self, batch: dict, indices) -> dict:
        single_thread_if_forked()
        keys = _example_keys(batch, indices, self.id_column)
        rows = collections.defaultdict(list)
        for position, key in enumerate(keys):
            name = f"example {key}"
            speech = waveform_from_value(batch[self.audio_column][position], name)
            for noise_type, snr_db in itertools.product(self.noise_types, self.snrs):
                generator = _generator(self.seed, key, noise_type, snr_db)
                entry = _draw_entry(self.bank, noise_type, generator)
                noisy = _float_wav_value(_mix(self.bank, entry, speech, snr_db, generator, name))
                for column, values in batch.items():
                    rows[column].append(noisy if column == self.audio_column else values[position])
                rows["snr_db"].append(snr_db)
                rows["noise_type"].append(noise_type)
                rows["noise_file"].append(entry.path)
                rows["condition"].append(condition_name(noise_type, snr_db))
        return dict(rows)


def make_noisy_testset(
    ds: Dataset,
    noise_bank: NoiseBank,
    snrs,
    noise_types,
    seed: int = 0,
    audio_column: str = "audio",
    num_proc: int | None = None,
    id_column: str = "id",
) -> Dataset:
    """One row per (example, noise type, SNR), noise from the bank's test split only; clean rows are not added.

    Adds ``snr_db``, ``noise_type``, ``noise_file`` and ``condition`` (see :func:`condition_name`) and keeps
    the other columns. The noisy audio replaces ``audio_column`` as an ``Audio(sampling_rate=16000)`` column
    holding float32 WAV bytes: lossless and unclipped (16-bit PCM would clip mixtures above full scale),
    at twice the size; ``nser.audio.decode_audio`` and ``datasets`` decode it. Each row's noise file,
    offset and (synthetic) samples come from (seed, example, noise type, SNR), so every run, with any
    ``num_proc``, writes the same bytes, and ``datasets`` can cache the result. Silent speech raises
    :class:`~nser.noise.SilentSpeechError` naming the example: a test set must not change size silently.
    """
    if audio_column not in ds.column_names:
        raise ValueError(f"audio column {audio_column!r} not found; columns: {ds.column_names}")
    clashing = [column for column in CONDITION_FEATURES if column in ds.column_names]
    if clashing:
        raise ValueError(f"dataset already has columns {clashing}: is it a noisy test set already?")
    snrs = validate_snrs(snrs)
    noise_types = [noise_types] if isinstance(noise_types, str) else list(noise_types)
    for name, values in (("SNRs", snrs), ("noise types", noise_types)):
        if len(set(values)) != len(values):
            raise ValueError(f"repeated {name} would duplicate test rows: {values}")
    bank = noise_bank.split("test").select(noise_types)
    features = ds.features.copy()
    features[audio_column] = Audio(sampling_rate=SAMPLING_RATE)
    features.update(CONDITION_FEATURES)
    return ds.map(
        _TestConditions(bank, noise_types, snrs, seed, audio_column, id_column),
        batched=True,
        with_indices=True,
        num_proc=num_proc,
        features=features,
        desc="Mixing noisy test conditions",
    )


def split_by_condition(ds: Dataset) -> dict[str, Dataset]:
    """One dataset per ``condition``, in order of first appearance."""
    if "condition" not in ds.column_names:
        raise ValueError(f"no 'condition' column (see make_noisy_testset); columns: {ds.column_names}")
    indices = collections.defaultdict(list)
    for index, condition in enumerate(ds["condition"]):
        indices[condition].append(index)
    return {condition: ds.select(rows) for condition, rows in indices.items()}
