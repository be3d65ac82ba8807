"""Speaker normalisation of pooled layer statistics: each clip standardised with its own speaker's mean and std.

Emotion shifts a speaker's voice relative to that speaker's neutral range, so subtracting each speaker's average
removes much of what separates speakers and little of what separates emotions. Training and validation speakers
are normalised with their own clips; a test speaker needs several of its own (unlabelled) clips, which makes the
evaluation transductive: report it apart. Single-clip inference (pipeline, handler, demo) cannot do this, so a
model trained this way expects inputs normalised the same way (the run logs a warning and the card says so).
"""

import logging

import numpy as np

from nser.features import PaddingCollator

logger = logging.getLogger(__name__)


def normalize_per_speaker(ds, speakers, min_std=1e-4):
    """`ds` (cached per-layer statistics, `pool_before_fusion=True`) with every clip's statistics standardised by
    the mean and std over the clips of its speaker in `ds` (`speakers`: one value per row)."""
    speakers = np.asarray([str(s) for s in speakers])
    if len(speakers) != len(ds):
        raise ValueError(f"normalize_per_speaker: {len(speakers)} speaker values for {len(ds)} clips")
    columns = [key for key in PaddingCollator.stats_keys if key in ds.column_names]
    if not columns:
        raise ValueError(f"speaker normalisation needs cached layer statistics (pool_before_fusion=true); columns: {ds.column_names}")
    normalized = {}
    for key in columns:
        values = np.asarray(ds.with_format("numpy")[key], dtype=np.float32)  # (N, layers, 2, d_model)
        out = np.empty_like(values)
        for speaker in np.unique(speakers):
            rows = speakers == speaker
            out[rows] = (values[rows] - values[rows].mean(axis=0)) / np.maximum(values[rows].std(axis=0), min_std)
        normalized[key] = out
    single = sorted(s for s in np.unique(speakers) if (speakers == s).sum() < 2)
    if single:
        logger.warning("speaker normalisation: speakers %s have one clip here, so their statistics become zeros", single)
    return ds.map(
        lambda batch, indices: {key: values[indices] for key, values in normalized.items()},
        batched=True, with_indices=True, keep_in_memory=True, new_fingerprint=f"{ds._fingerprint}-speaker-normalized",
        desc="speaker normalisation",
    )
