"""Time the demo's first result: one `analyse` call (read, mix, classify clean and noisy) on a 5 s clip.

The model is loaded first, as the Space does at start-up, so the figure is what a visitor waits for after
pressing "Analyse". Prints the first call and the median of the next ones, in seconds. Run from the
repository root:

    OMP_NUM_THREADS=1 python -m demo.measure_latency --model outputs/nser-main/model
"""

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import soundfile
import torch

from demo.app import DEFAULT_MODEL, DEFAULT_NOISE_DIR, analyse, load_classifier, load_noise_bank
from nser.audio import SAMPLING_RATE, load_audio

DEFAULT_CLIP = "../shared/data/ravdess/Actor_01/03-01-05-02-01-01-01.flac"


def five_second_clip(source: str, seconds: float, folder: Path) -> Path:
    """`source` looped to exactly `seconds` and written as WAV, so `analyse` reads a file as the page does."""
    speech = load_audio(source)
    samples = round(seconds * SAMPLING_RATE)
    looped = speech.repeat(-(-samples // speech.numel()))[:samples]
    path = folder / f"{Path(source).stem}-{seconds:g}s.wav"
    soundfile.write(path, looped.numpy(), SAMPLING_RATE, subtype="FLOAT")
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=os.environ.get("NSER_MODEL", DEFAULT_MODEL))
    parser.add_argument("--noise-dir", default=DEFAULT_NOISE_DIR)
    parser.add_argument("--noise", default="babble", help="noise category (white/pink need no noise folder)")
    parser.add_argument("--clip", default=DEFAULT_CLIP, help="speech file, looped or cut to --seconds")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=3, help="timed calls after the first")
    args = parser.parse_args()

    classifier = load_classifier(args.model)
    bank = load_noise_bank(args.noise_dir)
    with tempfile.TemporaryDirectory() as folder:
        clip = five_second_clip(args.clip, args.seconds, Path(folder))
        times = []
        for _ in range(1 + args.repeats):
            start = time.perf_counter()
            analyse(classifier, bank, clip, args.noise, 5)
            times.append(time.perf_counter() - start)
    print(
        f"{args.seconds:g} s clip, {args.noise} noise, {torch.get_num_threads()} thread(s): first result "
        f"{times[0]:.2f} s, then median {statistics.median(times[1:]):.2f} s over {args.repeats} calls"
    )


if __name__ == "__main__":
    main()
