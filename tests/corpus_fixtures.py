"""Tiny synthetic emotion corpora and noise folders (generated, never committed) for end-to-end tests."""

import numpy as np
import soundfile as sf
from datasets import Audio, ClassLabel, Dataset, Features, Value

from tiny_models import LABELS

RATE = 16000


def tone(frequency, seconds, seed):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.3 * np.sin(2 * np.pi * frequency * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def make_corpus(folder, speakers=("s1", "s2", "s3", "s4"), per_label=2, seconds=0.6):
    """One clip per (speaker, label, repeat): a label-specific pitch, so a classifier can learn something."""
    rows = {"audio": [], "label": [], "speaker": []}
    for s, speaker in enumerate(speakers):
        for label, name in enumerate(LABELS):
            for repeat in range(per_label):
                path = folder / "wav" / f"{speaker}_{name}_{repeat}.wav"
                path.parent.mkdir(parents=True, exist_ok=True)
                sf.write(path, tone(200 + 150 * label, seconds, seed=100 * s + 10 * label + repeat), RATE)
                rows["audio"].append(str(path))
                rows["label"].append(label)
                rows["speaker"].append(speaker)
    features = Features({"audio": Audio(sampling_rate=RATE), "label": ClassLabel(names=LABELS), "speaker": Value("string")})
    Dataset.from_dict(rows, features=features).save_to_disk(str(folder / "dataset"))
    return folder / "dataset"


def make_noise_folder(folder, categories=("hum", "hiss"), files=2, seconds=1.5):
    """category/<file>.wav with a metadata.csv fixing disjoint train/test files."""
    lines = ["path,category,split"]
    for c, category in enumerate(categories):
        for i in range(files):
            path = folder / category / f"{category}{i}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, tone(60 + 40 * c + 5 * i, seconds, seed=1000 + 10 * c + i), RATE)
            lines.append(f"{category}/{path.name},{category},{'train' if i == 0 else 'test'}")
    (folder / "metadata.csv").write_text("\n".join(lines) + "\n")
    return folder
