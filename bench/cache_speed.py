"""Epoch time of frozen-backbone training with and without the backbone-state cache (nser.feature_cache).

    python -m bench.cache_speed --num_clips 96 --epochs 3
    python -m bench.cache_speed --num_clips 32 --epochs 2 --use_decoder --language zh   # the paper's full model

Without the cache every epoch runs Whisper on every clip (with `--use_decoder`, also the greedy ASR hypothesis
and the decoder); with it the first pass writes the states once and later epochs only read them (memory-mapped
Arrow) and train the fusion, embedding and classifier. Epochs are timed inside one `Trainer.train()` call by a
callback (median of the epochs after the first, so Trainer setup and warm-up are not counted), each way.
Prints a markdown table: build time of the cache, seconds per epoch each way, and the speed-up.
"""

import argparse
import logging
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import torch
from datasets import Audio, Dataset
from transformers import Trainer, TrainerCallback, TrainingArguments

from bench import SHARED, WHISPER_BASE
from modeling_nser import WhisperForNoisyEmotionClassification
from nser.feature_cache import cache_layer_states
from nser.features import PaddingCollator, make_feature_function



def casia_clips(num_clips):
    """The first `num_clips` CASIA files in sorted order, with their emotion labels (folder names)."""
    files = sorted((SHARED / "data" / "casia").glob("*/*/*.flac"))[:num_clips]
    if not files:
        sys.exit(f"no CASIA audio under {SHARED / 'data' / 'casia'}: this benchmark needs the real clips")
    labels = sorted({f.parent.name for f in files})
    rows = {"audio": [str(f) for f in files], "label": [labels.index(f.parent.name) for f in files]}
    return Dataset.from_dict(rows).cast_column("audio", Audio(sampling_rate=16000)), labels


class EpochTimer(TrainerCallback):
    """Wall time of each training epoch, from the Trainer's own epoch boundaries."""

    def __init__(self):
        self.seconds, self._start = [], None

    def on_epoch_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_epoch_end(self, args, state, control, **kwargs):
        self.seconds.append(time.perf_counter() - self._start)


def time_epochs(model, dataset, epochs, output_dir):
    """Median seconds per epoch over epochs 2..N of one `Trainer.train()` (epoch 1 is warm-up)."""
    args = TrainingArguments(
        output_dir=output_dir, per_device_train_batch_size=16, num_train_epochs=epochs + 1, learning_rate=1e-3,
        save_strategy="no", report_to="none", use_cpu=True, logging_strategy="no", disable_tqdm=True,
    )
    timer = EpochTimer()
    Trainer(model=model, args=args, train_dataset=dataset, data_collator=PaddingCollator(), callbacks=[timer]).train()
    later = sorted(timer.seconds[1:])
    return later[len(later) // 2]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(WHISPER_BASE))
    parser.add_argument("--num_clips", type=int, default=96)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs each way (after one warm-up epoch)")
    parser.add_argument("--fusion", default="layer_adapter", help="encoder_fusion (and decoder_fusion) of the head")
    parser.add_argument("--use_decoder", action="store_true", help="the encoder + decoder model (ASR hypothesis)")
    parser.add_argument("--language", default="zh", help="ASR language of the decoder path (CASIA: zh)")
    args = parser.parse_args(argv)
    if args.num_clips < 1 or args.epochs < 1:
        parser.error("--num_clips and --epochs must be >= 1")
    logging.basicConfig(level=logging.WARNING)
    clips, labels = casia_clips(args.num_clips)
    model = WhisperForNoisyEmotionClassification.from_whisper(
        args.model, labels, use_decoder=args.use_decoder, asr_language=args.language,
        encoder_fusion=args.fusion, decoder_fusion=args.fusion,
    )
    features = clips.map(make_feature_function(model.build_feature_extractor()), batched=True, remove_columns=["audio", "label"])
    with tempfile.TemporaryDirectory() as tmp:
        uncached = time_epochs(model, features, args.epochs, tmp)
        start = time.perf_counter()
        cached = cache_layer_states(features, model, Path(tmp) / "cache", batch_size=16).with_format("numpy")
        build = time.perf_counter() - start
        later = time_epochs(model, cached, args.epochs, tmp)
    command = "python -m bench.cache_speed " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    groups = "encoder + decoder" if args.use_decoder else "encoder"
    print(f"`{command}` — {len(clips)} CASIA clips, whisper-base frozen, {groups} {args.fusion}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}\n")
    print("| training epoch | seconds | speed-up |\n|---|---:|---:|")
    print(f"| without cache (Whisper runs every epoch) | {uncached:.2f} | 1.0x |")
    print(f"| building the cache (once) | {build:.1f} | |")
    print(f"| later epochs, from the cache | {later:.2f} | {uncached / later:.1f}x |")


if __name__ == "__main__":
    main()
