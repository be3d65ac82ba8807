"""Speaker normalisation of pooled layer statistics: each clip standardised with its own speaker's mean and std.

Emotion shifts a speaker's voice relative to that speaker's neutral range, so subtracting each speaker's average
removes much of what separates speakers and little of what separates emotions. Training and validation speakers
are normalised with their own clips; a test speaker needs several of its own (unlabelled) clips, which makes the
evaluation transductive: report it apart. Single-clip inference (pipeline, handler, demo) cannot do this, so a
model trained this way expects inputs normalised the same way (the run logs a warning and the card says so).
`max_clips` measures how transductive that is: each speaker's statistics from only a few of its clips, as a short
unlabelled enrolment of a new speaker would give.
"""

import logging

import numpy as np

from nser.features import PaddingCollator

logger = logging.getLogger(__name__)


def normalize_per_speaker(ds, speakers, min_std=1e-4, max_clips=None):
    """`ds` (cached per-layer statistics, `pool_before_fusion=True`) with every clip's statistics standardised by
    the mean and std over the clips of its speaker in `ds` (`speakers`: one value per row). With `max_clips`, a
    speaker's statistics come from at most that many of its clips (a fixed draw: the same rows for every call on
    the same speakers) and standardise all of its clips."""
    speakers = np.asarray([str(s) for s in speakers])
    if len(speakers) != len(ds):
        raise ValueError(f"normalize_per_speaker: {len(speakers)} speaker values for {len(ds)} clips")
    if max_clips is not None and max_clips < 2:
        raise ValueError(f"normalize_per_speaker: max_clips={max_clips}; a speaker's std needs at least 2 clips")
    columns = [key for key in PaddingCollator.stats_keys if key in ds.column_names]
    if not columns:
        raise ValueError(f"speaker normalisation needs cached layer statistics (pool_before_fusion=true); columns: {ds.column_names}")
    normalized = {}
    for key in columns:
        values = np.asarray(ds.with_format("numpy")[key], dtype=np.float32)  # (N, layers, 2, d_model)
        out = np.empty_like(values)
        for speaker in np.unique(speakers):
            rows = np.flatnonzero(speakers == speaker)
            reference = values[enrolment_rows(rows, max_clips)]
            out[rows] = (values[rows] - reference.mean(axis=0)) / np.maximum(reference.std(axis=0), min_std)
        normalized[key] = out
    single = sorted(s for s in np.unique(speakers) if (speakers == s).sum() < 2)
    if single:
        logger.warning("speaker normalisation: speakers %s have one clip here, so their statistics become zeros", single)
    return ds.map(
        lambda batch, indices: {key: values[indices] for key, values in normalized.items()},
        batched=True, with_indices=True, keep_in_memory=True,
        new_fingerprint=f"{ds._fingerprint}-speaker-normalized-{max_clips}", desc="speaker normalisation",
    )


def enrolment_rows(rows, max_clips):
    """`rows` (one speaker's row indices), or a fixed seeded draw of `max_clips` of them."""
    if max_clips is None or len(rows) <= max_clips:
        return rows
    return np.sort(np.random.default_rng(0).choice(rows, size=max_clips, replace=False))
