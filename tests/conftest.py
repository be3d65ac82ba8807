"""Shared fixtures: synthetic audio written to tmp, so unit tests need no corpus."""

from pathlib import Path

import numpy as np
import pytest
import soundfile


def tone(seconds: float, frequency: float = 220.0, amplitude: float = 0.3, rate: int = 16000) -> np.ndarray:
    """A float32 sine: a stand-in for speech with a known, non-zero power."""
    time = np.arange(round(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * frequency * time)).astype(np.float32)


@pytest.fixture
def noise_folder(tmp_path) -> Path:
    """``noise/<category>/<i>.wav``: 3 categories x 6 different one-second noises (float WAV, 16 kHz)."""
    root = tmp_path / "noise"
    rng = np.random.default_rng(0)
    for category in ("babble", "music", "street"):
        (root / category).mkdir(parents=True)
        for index in range(6):
            noise = (0.1 * rng.standard_normal(16000)).astype(np.float32)
            soundfile.write(root / category / f"{category}-{index}.wav", noise, 16000, subtype="FLOAT")
    return root


@pytest.fixture
def enrolment_sizes(monkeypatch) -> list:
    """The `max_clips` of every speaker normalisation a run does (None: each speaker's every clip), in call order."""
    import nser.experiment
    from nser.speaker_norm import normalize_per_speaker

    sizes = []

    def recording(ds, speakers, max_clips=None):
        sizes.append(max_clips)
        return normalize_per_speaker(ds, speakers, max_clips=max_clips)

    monkeypatch.setattr(nser.experiment, "normalize_per_speaker", recording)
    return sizes
