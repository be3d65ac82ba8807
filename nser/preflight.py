"""Checks that run before any model is loaded, so that a typo or a broken file never costs a training run.

Without them some mistakes surfaced only after training, when the noisy test sets were mixed: a misspelled
``--test_noise_types``, ``--test_snrs nan``, a noise file that cannot be decoded (found when first drawn), a
silent test clip. :func:`preflight` looks at every argument and every file such a run will read, collects
every problem, and raises one :class:`PreflightError` listing them all, each with its argument or file.

Policy for clips: every clip must decode to at least one sample without NaN/Inf; a silent clip (digital
silence, mean power at most ``nser.noise.SILENCE_POWER``) is refused in every split, because no SNR can be set
against silence: it could not be mixed into a test condition, and in training it would only ever be heard clean.
"""

import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from datasets import Audio

from nser.audio import decode_audio
from nser.augment import validate_speed_factors
from nser.inner_cv import parse_candidate
from nser.noise import SILENCE_POWER, mean_power

logger = logging.getLogger(__name__)

# Problems listed in the error before "... and N more" (all are logged).
MAX_LISTED = 50


class PreflightError(ValueError):
    """Everything wrong with a run's arguments and files, found before any model was loaded."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        listed = "\n".join(f"  - {problem}" for problem in self.problems[:MAX_LISTED])
        more = f"\n  ... and {len(self.problems) - MAX_LISTED} more" if len(self.problems) > MAX_LISTED else ""
        super().__init__(f"{len(self.problems)} problem(s) found before training; nothing was trained:\n{listed}{more}")


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_noise_arguments(noise_args) -> list[str]:
    """SNRs, probabilities and counts of the noise arguments (no files read)."""
    problems = []
    snrs = list(noise_args.test_snrs or [])
    bad = [snr for snr in snrs if not _finite(snr)]
    if not snrs:
        problems.append("--test_snrs is empty: give at least one SNR in dB")
    if bad:
        problems.append(f"--test_snrs must be finite numbers of dB; got {bad}")
    if len(set(snrs)) != len(snrs):
        problems.append(f"--test_snrs repeats values (each would be a duplicate test condition): {snrs}")
    low, high = noise_args.train_snr_low, noise_args.train_snr_high
    if not (_finite(low) and _finite(high)):
        problems.append(f"--train_snr_low/--train_snr_high must be finite numbers of dB; got {low}, {high}")
    elif low > high:
        problems.append(f"--train_snr_low {low} is above --train_snr_high {high}")
    if not (_finite(noise_args.clean_probability) and 0.0 <= noise_args.clean_probability <= 1.0):
        problems.append(f"--clean_probability must be in [0, 1]; got {noise_args.clean_probability}")
    if noise_args.augment_copies < 1:
        problems.append(f"--augment_copies must be at least 1; got {noise_args.augment_copies}")
    if noise_args.speed_factors:
        try:
            validate_speed_factors(noise_args.speed_factors)
        except ValueError as error:
            problems.append(f"--speed_factors: {error}")
        if not noise_args.train_with_noise:
            problems.append("--speed_factors perturbs the noisy training draws: it needs --train_with_noise true")
    for name in ("test_noise_types", "train_noise_types"):
        types = list(getattr(noise_args, name) or [])
        if len(set(types)) != len(types):
            problems.append(f"--{name} repeats values: {types}")
    return problems


def check_noise_bank(bank, noise_args) -> list[str]:
    """Noise types exist in the split they are drawn from; every recorded noise decodes and is long enough."""
    problems = []
    requested = [("test", "test_noise_types", noise_args.test_noise_types)]
    if noise_args.train_with_noise:
        requested.append(("train", "train_noise_types", noise_args.train_noise_types))
    for split, name, types in requested:
        available = bank.split(split).categories
        unknown = [noise_type for noise_type in types or [] if noise_type not in available]
        if unknown:
            problems.append(f"--{name} {unknown} not found in the noise bank's {split} split; available: {available}")
    problems += [f"noise {path}: {problem}" for path, problem in bank.problems()]
    return problems


def _clip_problem(value, row: str) -> str | None:
    """What is wrong with one clip (`value` as a `datasets` Audio column holds it undecoded), named by `row`."""
    if not value or (value.get("bytes") is None and value.get("path") is None):
        return f"{row}: no audio"
    name = value.get("path") or "audio bytes"
    try:
        waveform, _ = decode_audio(value, name)
    except ValueError as error:
        return f"{row}: {error}"
    if mean_power(waveform) <= SILENCE_POWER:
        return f"{row}: {name}: silent (mean power {mean_power(waveform):.3g}): no SNR can be set against it; remove the clip"
    return None


def check_corpus_audio(corpus, audio_column: str = "audio", num_workers: int | None = None) -> list[str]:
    """Every clip of every split decodes (libsndfile, else FFmpeg), has samples, no NaN/Inf, and is not silent.
    Clips are named by split and row, then by file."""
    jobs = []
    for split, ds in corpus.items():
        values = ds.cast_column(audio_column, Audio(decode=False))[audio_column]
        jobs += [(value, f"{split} row {index}") for index, value in enumerate(values)]
    with ThreadPoolExecutor(max_workers=num_workers or min(8, os.cpu_count() or 1)) as pool:
        return [problem for problem in pool.map(lambda job: _clip_problem(*job), jobs) if problem]


def check_output_dir(output_dir) -> list[str]:
    path = Path(output_dir).expanduser()
    for parent in (path, *path.parents):
        if parent.exists():
            if not parent.is_dir():
                return [f"--output_dir {output_dir}: {parent} is a file, not a folder"]
            if not os.access(parent, os.W_OK):
                return [f"--output_dir {output_dir}: cannot write in {parent}"]
            return []
    return []


def check_inner_cv(data_args) -> list[str]:
    """--inner_cv_candidates parse and may not change the cached states; --inner_cv_folds is at least 2."""
    if not data_args.inner_cv_candidates:
        return []
    problems = []
    for text in data_args.inner_cv_candidates:
        try:
            parse_candidate(text)
        except ValueError as error:
            problems.append(str(error))
    if len(set(data_args.inner_cv_candidates)) != len(data_args.inner_cv_candidates):
        problems.append(f"--inner_cv_candidates repeats a candidate: {data_args.inner_cv_candidates}")
    if data_args.inner_cv_folds < 2:
        problems.append(f"--inner_cv_folds must be at least 2, got {data_args.inner_cv_folds}")
    if not data_args.cache_features:
        problems.append("--inner_cv_candidates needs cached backbone states: --cache_features true")
    return problems


def check_speaker_normalization(data_args) -> list[str]:
    """--speaker_normalization_clips: with --speaker_normalization, and at least 2 (a std needs two clips)."""
    clips = data_args.speaker_normalization_clips
    if clips is None:
        return []
    if not data_args.speaker_normalization:
        return [f"--speaker_normalization_clips {clips} needs --speaker_normalization true"]
    return [] if clips >= 2 else [f"--speaker_normalization_clips must be at least 2 (a std needs two clips), got {clips}"]


def preflight(data_args, noise_args, training_args, load_corpus=None, load_noise_bank=None) -> None:
    """Check arguments, noise and corpus files before any model is loaded; raise one :class:`PreflightError`
    listing every problem. `load_corpus` / `load_noise_bank` default to nser's loaders (the same ones the run
    uses; `datasets` caches what they compute, so the run does not pay twice)."""
    if load_corpus is None:
        from nser.data import load_corpus as load, prepare_columns

        def load_corpus(data_args):
            corpus = load(data_args.dataset_name, data_args.dataset_config_name, data_args.audio_folder, data_args.manifest_csv)
            return prepare_columns(corpus, data_args.audio_column_name, data_args.label_column_name, data_args.emotion_labels)[0]

    if load_noise_bank is None:
        from nser.experiment import load_noise_bank
    problems = check_output_dir(training_args.output_dir) + check_noise_arguments(noise_args) + check_inner_cv(data_args)
    problems += check_speaker_normalization(data_args)
    labels = list(data_args.emotion_labels or [])
    if len(set(labels)) != len(labels):
        problems.append(f"--emotion_labels repeats labels: {labels}")
    try:
        bank = load_noise_bank(noise_args)
    except (ValueError, OSError) as error:
        problems.append(f"noise: {error}")
    else:
        problems += check_noise_bank(bank, noise_args)
    try:
        corpus = load_corpus(data_args)
    except (ValueError, OSError) as error:
        problems.append(f"corpus: {error}")
    else:
        problems += check_corpus_audio(corpus, data_args.audio_column_name, data_args.preprocessing_num_workers)
    if problems:
        for problem in problems:
            logger.error("pre-flight: %s", problem)
        raise PreflightError(problems)
    logger.info("pre-flight checks passed: arguments, noise files and every corpus clip")
