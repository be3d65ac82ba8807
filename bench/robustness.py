"""Do ASR representations make speech emotion recognition robust to noise? Issue 5's benchmark, on one corpus.

Systems (bench/systems.py), on the same speaker-independent splits, training noise and noisy test audio:
  (1)  openSMILE eGeMAPSv02 functionals + logistic regression (C on validation); (1c) the same, clean-trained
  (2)  Whisper's last encoder layer, mean-pooled, nser's small MLP head (`encoder_fusion=last,use_decoder=false`)
  (2p) the linear probe: every encoder layer's mean + std, StandardScaler, logistic regression (C by inner
       speaker-grouped CV); (2pc) clean-trained
  (3)  transformers' WhisperForAudioClassification, `use_weighted_layer_sum=True`, 30 s padded (on a subset)
  (4)  nser, encoder layer adapter (`use_decoder=false`)
  (5)  nser, encoder + decoder layer adapters on the greedy ASR hypothesis (`use_decoder=true`; on a subset)
  (N)  nser's default head (pooled statistics, standardised), encoder only; (Nc) clean-trained; (Ne) the mean
       probabilities of (N) over the run's seeds; (N-L) (N) with LoRA on the encoder; (N-LF) (N) trained, then
       LoRA and head from it (linear probing, then fine-tuning); (N-s), (2p-s) speaker-normalised (transductive);
       (N+2p) (N) and (2p) fused: the mean of their class probabilities
  (Nd) (N) + the decoder layers on the greedy ASR hypothesis; (Ndc) clean-trained; (Nd-p) the decoder on the task
       prompt only (it hears the audio through cross-attention but reads no words): what the words add
  (6)  (4) trained on clean speech only; (6b) (5) trained on clean speech only
  (4*) (4) trained and tested on the subset of (3) / (5): the paired comparison for those systems
Conditions: clean, and every noise type (recorded test-split noise; white noise) x SNR. Training noise comes from
the noise bank's train split only (nser.augment enforces it). Every number is UA or macro-F1 on the test
speaker(s), mean ± std over seeds (head initialisation and data order; the noisy test audio is fixed by
`--noise_seed`). Writes `<output_dir>/robustness.md`, `robustness.json`, `f1_vs_snr.png`, `layer_weights.png`.

From the repository root (offline: HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_EVALUATE_OFFLINE=1):
    python -m bench.robustness --quick       # CI smoke test: a few clips, 1 seed, 1 epoch, 1 SNR, 2 noise types
    python -m bench.robustness --budget      # ~30-35 min on 2 CPU cores: 3 seeds, SNRs 10/0, smaller subsets
    python -m bench.robustness               # everything: ~2 h on 2 CPU cores (see bench/README.md)
    python -m bench.robustness --corpus ravdess   # needs data/ravdess (python -m dataset_scripts.ravdess ...)
    python -m bench.robustness --budget --cv_column speaker   # leave-one-speaker-out: every speaker tested once
With `--cv_column`, the corpus's clips are pooled and each value of that column (a speaker, an IEMOCAP session), or
each of `--cv_folds` groups of values, is the test set of one fold; every other value trains, and validation comes
from their clips (`nser.data.cross_validation_folds`, as `run_nser.py --cv_column`). Every system runs on every fold; a seed's
numbers are averaged over the folds (each fold weighted equally), then mean ± std over seeds; a per-fold table
shows how much the held-out speaker matters.
Finished runs are reused (`<output_dir>/<system>/seed-<s>/bench_result.json`, checked against their settings),
so an interrupted benchmark continues where it stopped; `--no_reuse` recomputes them.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import importlib.metadata
import json
import logging
import os
import platform
import resource
import shlex
import sys
import time
from pathlib import Path

import datasets
import numpy as np
import torch
import transformers
from datasets import DatasetDict, load_from_disk
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from bench import SHARED, WHISPER_BASE
from bench.systems import SYSTEM_FUNCTIONS, SYNTHETIC_TRAIN_NOISE, Setup, SystemSpec, fingerprint, mean_layer_weights, sum_stages
from configuration_nser import NserConfig
from modeling_nser import _cpu_has_native_bfloat16
from nser.arguments import DataArguments, ModelArguments, NoiseArguments
from nser.atomic import write_text_atomic
from nser.data import VALIDATION_MODES, cross_validation_folds, stratified_validation
from nser.experiment import load_noise_bank
from nser.inner_cv import parse_candidate, parse_settings
from nser.metrics import SCALAR_METRICS
from nser.preflight import PreflightError, preflight
from nser.report import aggregate, markdown_table
from nser.training import parse_config_overrides

logger = logging.getLogger("bench.robustness")

ROOT = Path(__file__).resolve().parents[1]
CORPORA = {"casia": "zh", "ravdess": "en"}  # corpus -> ASR language of the decoder system
RESULT_FILE = "bench_result.json"
RESULT_VERSION = 1  # bump when a system's computation changes, so old results are not reused

ALL_SYSTEMS = ("egemaps", "egemaps_clean", "whisper_last", "probe", "probe_clean", "wfac", "nser_enc", "nser_encdec",
               "nser_enc_clean", "nser_encdec_clean", "nser_default", "nser_default_clean", "nser_default_ensemble",
               "nser_default_lora", "probe_speaker_norm", "nser_default_speaker_norm", "nser_default_encdec",
               "nser_default_encdec_prompt", "nser_default_encdec_clean", "nser_default_speed", "probe_speed",
               "nser_default_inner_cv", "probe_all", "probe_all_mean", "nser_default_lpft", "nser_default_probe_fusion")
# Runs sharing a backbone share its feature cache: the first of them pays the extraction (reported as such).
EXECUTION_ORDER = ("nser_default", "probe", "probe_all", "probe_all_mean", "nser_default_inner_cv", "whisper_last", "nser_default_clean", "probe_clean", "nser_default_ensemble",
                   "nser_default_probe_fusion", "variant", "nser_default_speed", "probe_speed", "nser_default_lora", "nser_default_lpft", "probe_speaker_norm",
                   "nser_default_speaker_norm", "nser_enc",
                   "nser_enc_clean", "egemaps", "egemaps_clean", "control", "wfac", "nser_default_encdec",
                   "nser_default_encdec_prompt", "nser_default_encdec_clean", "nser_encdec", "nser_encdec_clean")
# Speed perturbation of the noisy training draws (Kaldi's factors): more voices from few training speakers.
SPEED_PERTURBATION = {"speed_factors": [0.9, 1.0, 1.1]}
SPEED_NOTE = "each noisy training draw plays at speed 0.9, 1.0 or 1.1 (tempo and pitch); validation and test as recorded"
# (N-i)'s candidates: (N)'s recipe, a weaker and a stronger regulariser around it (chosen before any inner-CV run).
INNER_CV_CANDIDATES = ("", "classifier_dropout=0.1:weight_decay=0.01,label_smoothing_factor=0.0",
                       "classifier_dropout=0.5,feature_dropout=0.2:weight_decay=0.2")
# The paper's frame-level layer adapter, system (4): fuse each frame's layers, then mean-pool.
FRAME_ADAPTER = "use_decoder=false,pool_before_fusion=false,standardize_features=false,pooling=mean"
# System (2): the last encoder layer's time mean (pooled first, which equals fusing then pooling for one layer).
LAST_LAYER_MEAN = "use_decoder=false,encoder_fusion=last,pooling=mean,standardize_features=false"
# The library's default head (NserConfig defaults: pooled layer statistics, standardised, layer adapter), encoder only.
DEFAULT_HEAD = "use_decoder=false"
# The default head's training recipe, chosen with the head on validation speakers (README, "Choosing the default"):
# the library recipe plus weight decay, label smoothing and 20 epochs (the best epoch on validation is kept).
DEFAULT_RECIPE = {"weight_decay": 0.05, "label_smoothing_factor": 0.1, "num_train_epochs": 20}
# (N-L): the default head's recipe with LoRA on the encoder, for fewer epochs: every epoch runs the encoder forward
# and backward (about 80 s per epoch for 540 CASIA clips on 2 busy CPU cores, against about a second from the cache).
LORA_RECIPE = {**DEFAULT_RECIPE, "num_train_epochs": 5}
PROBE_INNER_FOLDS = 4  # speaker-grouped folds for the probe's C (fewer when there are fewer training speakers)

FULL = {
    "seeds": [0, 1, 2], "epochs": 8, "snrs": [20.0, 10.0, 5.0, 0.0, -5.0],
    "noise_types": ["babble", "machinery", "music", "street", "white"],
    "max_train_samples": None, "max_validation_samples": None, "max_test_samples": None,
    "padded_max_train_samples": None, "padded_max_validation_samples": None, "padded_max_test_samples": 60,
    "padded_snrs": None, "decoder_max_train_samples": None, "decoder_max_validation_samples": None,
    "decoder_max_test_samples": 60, "decoder_snrs": None, "frame_snrs": None, "augment_copies": 2, "systems": list(ALL_SYSTEMS),
    "egemaps_c_grid": [0.001, 0.01, 0.1, 1.0, 10.0], "probe_c_grid": [0.00001, 0.0001, 0.001, 0.01, 0.1],
    "output_dir": "outputs/bench",
}
PRESETS = {
    # CI smoke test: < 2 min on 2 quiet cores; numbers are meaningless (8 test clips, 1 epoch).
    "quick": {
        "seeds": [0], "epochs": 1, "snrs": [0.0], "noise_types": ["babble", "white"],
        "max_train_samples": 24, "max_validation_samples": 8, "max_test_samples": 8,
        "padded_max_train_samples": 8, "padded_max_validation_samples": 4, "padded_max_test_samples": 4,
        "decoder_max_train_samples": 8, "decoder_max_validation_samples": 4, "decoder_max_test_samples": 4,
        "augment_copies": 1, "systems": ["egemaps", "egemaps_clean", "whisper_last", "probe", "wfac", "nser_enc",
                                          "nser_encdec", "nser_enc_clean", "nser_default", "nser_default_clean"],
        "egemaps_c_grid": [0.1, 1.0], "probe_c_grid": [0.001, 0.01], "output_dir": "outputs/bench-quick",
    },
    # ~30-35 min on 2 cores: all systems but (6b), SNRs 10 and 0 (as configs/main_job.json), one noisy draw per
    # training clip, (3) and (5) on one shared subset (72/36/36 clips: 12/6/6 per CASIA emotion) at 0 dB only.
    "budget": {
        "snrs": [10.0, 0.0], "augment_copies": 1, "padded_max_train_samples": 72,
        "padded_max_validation_samples": 36, "padded_max_test_samples": 36, "padded_snrs": [0.0],
        "decoder_max_train_samples": 72, "decoder_max_validation_samples": 36, "decoder_max_test_samples": 36,
        "decoder_snrs": [0.0],
        "systems": [s for s in ALL_SYSTEMS if s not in ("nser_encdec_clean", "nser_default_speed", "probe_speed", "probe_all",
                                                         "probe_all_mean")],
        "output_dir": "outputs/bench-budget",
    },
}

# For the plan's estimate only: seconds on a 2-core CPU (whisper-base float32, CASIA clips of ~2 s), from runs on a
# busy machine scaled down; the report gives the measured times.
# "decoder": the exact 30 s float32 window. "decoder_fast": a shorter window or a bfloat16 pass (`--decoder_config
# asr_window_seconds=10,asr_dtype=bfloat16`: 127-385 ms per computed clip in bench/results' CASIA and RAVDESS
# cross-validation reports). "decoder_prompt": `decoder_input=prompt`, the window encoder and no greedy decoding
# (89-149 ms there). Those assume a CPU that computes bfloat16 natively (AMX / AVX512-BF16). Elsewhere bfloat16 is
# emulated and slower than float32 (bench/results/speed-avx2, AMD EPYC with AVX2 only, 3 s clips at batch 8: 10 s
# bfloat16 window 1437 ms, exact 30 s bfloat16 window 4267 ms, against 938 ms for the exact float32 window, that is
# 1.5x and 4.6x "decoder"); the prompt-only pass is priced at the same 4.6x (not measured).
COST_PER_CLIP_S = {"egemaps": 0.035, "real_length": 0.05, "real_length_stats": 0.05, "padded": 0.5, "decoder": 0.7,
                   "decoder_fast": 0.3, "decoder_prompt": 0.15, "decoder_emulated_bf16": 3.2,
                   "decoder_fast_emulated_bf16": 1.1, "decoder_prompt_emulated_bf16": 0.7}
AUDIO_PREP_S = 0.01  # decoding, noise mixing and log-mel, per clip
# nser head training from cached states (backward included; validation at a third): 0.0006 s for (N), 0.002 for (Nd)
# (CASIA folds, 1440 noisy copies x 20 epochs in 49 and 90 s, checkpoints included: Trainer's train_runtime in the
# log of bench/README.md's casia-cv-decoder-m5 command).
TRAIN_S_PER_EXAMPLE_EPOCH = 0.001
LORA_TRAIN_S_PER_CLIP = 0.15  # encoder forward and backward with LoRA (N-L), per training clip (CASIA, measured)
INFERENCE_S_PER_CLIP = 0.003  # prediction from cached states
RUN_OVERHEAD_S = 10.0  # per nser run: model load, backbone fingerprints, cache reads; plus CHECKPOINT_S per epoch
CHECKPOINT_S = 1.5  # saving a checkpoint (the frozen backbone is saved too, ~300 MB)


# --------------------------------------------------------------------------------------------- command line
def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    preset = parser.add_mutually_exclusive_group()
    preset.add_argument("--quick", action="store_true", help="CI smoke test: a few clips, 1 seed, 1 epoch, 1 SNR, 2 noise types")
    preset.add_argument("--budget", action="store_true", help="the ~30 min preset (2 CPU cores)")
    parser.add_argument("--corpus", default="casia", choices=sorted(CORPORA), help="shared corpus (sets the ASR language)")
    parser.add_argument("--dataset_dir", help="prepared corpus folder (default data/<corpus>, from dataset_scripts)")
    parser.add_argument("--model", default=str(WHISPER_BASE), help="Whisper checkpoint")
    parser.add_argument("--noise_dir", default=str(SHARED / "data" / "noise"), help="noise folder with a train/test split")
    parser.add_argument("--language", help="ASR language of the decoder systems (default: by corpus)")
    parser.add_argument("--cv_column", help="cross-validation over this column (e.g. speaker) instead of the "
                        "corpus's own splits: every group is tested once, every other group trains")
    parser.add_argument("--cv_folds", type=int, help="with --cv_column: K folds of consecutive groups (default: one per group)")
    parser.add_argument("--cv_validation", default="within_groups", choices=VALIDATION_MODES,
                        help="with --cv_column: validation from the training groups' clips (default) or the next whole group")
    parser.add_argument("--validation_column", help="with --cv_column: validate on these values of this column "
                        "(e.g. text_id, with --validation_groups) instead of a stratified share of each training group")
    parser.add_argument("--validation_groups", nargs="+", help="values of --validation_column held out for validation")
    parser.add_argument("--validation_fraction", type=float, default=0.1,
                        help="share of each training group's clips per label used for validation (default 0.1)")
    parser.add_argument("--development", action="store_true",
                        help="never touch the corpus's test split: its validation speakers are tested, validation comes "
                             "from the training speakers' clips; for choosing a default (head variants) on validation speakers")
    parser.add_argument("--variant", nargs="+", type=parse_variant, metavar="KEY:CONFIG[:TRAINING]",
                        help="extra nser systems, e.g. 'wd:use_decoder=false:weight_decay=0.1,label_smoothing_factor=0.1'")
    parser.add_argument("--inner_cv_candidates", nargs="+", default=list(INNER_CV_CANDIDATES), metavar="CONFIG[:TRAINING]",
                        help="(N-i)'s candidates on top of (N)'s settings, chosen per fold by inner speaker-grouped CV "
                             "(default: (N)'s recipe, a weaker and a stronger regulariser)")
    parser.add_argument("--inner_cv_folds", type=int, default=4, help="(N-i): at most this many inner folds (default 4)")
    parser.add_argument("--speaker_norm_clips", type=int, help="(2p-s), (N-s): each test speaker's statistics from this "
                        "many of its clips per condition (a fixed draw), as an enrolment would give (default: all)")
    parser.add_argument("--lora_learning_rate", type=float, default=ModelArguments.lora_learning_rate,
                        help=f"(N-LF): learning rate of the LoRA stage (default {ModelArguments.lora_learning_rate:g})")
    parser.add_argument("--lora_epochs", type=float, default=ModelArguments.lora_epochs,
                        help=f"(N-LF): epochs of the LoRA stage (default {ModelArguments.lora_epochs:g})")
    parser.add_argument("--probe_c_grid", type=float, nargs="+", help="C values tried for (2p) (default 1e-5 1e-4 1e-3 1e-2 0.1)")
    parser.add_argument("--output_dir", help="benchmark folder (default outputs/bench, -quick, -budget)")
    parser.add_argument("--feature_cache_dir", default="~/.cache/nser/features", help="nser's backbone-state cache")
    parser.add_argument("--systems", nargs="+", choices=ALL_SYSTEMS, help="systems to run (default: all)")
    parser.add_argument("--seeds", type=int, nargs="+", help="training seeds (default 0 1 2)")
    parser.add_argument("--noise_types", nargs="+", help="test noise types (default: babble machinery music street white)")
    parser.add_argument("--snrs", type=float, nargs="+", help="test SNRs in dB (default 20 10 5 0 -5)")
    parser.add_argument("--epochs", type=int, help="training epochs (default 8, as configs/main_job.json)")
    parser.add_argument("--augment_copies", type=int, help="noisy draws per training clip (default 2)")
    parser.add_argument("--train_snr_low", type=float, default=Setup.train_snr_low,
                        help=f"lowest SNR of the training noise (dB, default {Setup.train_snr_low:g})")
    parser.add_argument("--train_snr_high", type=float, default=Setup.train_snr_high,
                        help=f"highest SNR of the training noise (dB, default {Setup.train_snr_high:g})")
    for prefix, what in (("", "the main systems"), ("padded_", "(3), 30 s padded"), ("decoder_", "(5)/(6b), decoder")):
        for split in ("train", "validation", "test"):
            parser.add_argument(f"--{prefix}max_{split}_samples", type=int,
                                help=f"fixed stratified subset of {split} for {what} (0 = all)")
    parser.add_argument("--padded_snrs", type=float, nargs="+", help="SNRs for (3) (default: --snrs)")
    parser.add_argument("--decoder_snrs", type=float, nargs="+", help="SNRs for (5)/(6b) (default: --snrs)")
    parser.add_argument("--frame_snrs", type=float, nargs="+", help="SNRs for (4)/(6), whose cache holds every frame "
                        "of every layer, about 0.7 MB per CASIA clip and condition (default: --snrs)")
    parser.add_argument("--decoder_config", default="", help="extra NserConfig overrides of the decoder systems, e.g. "
                        "'asr_window_seconds=10,asr_dtype=bfloat16' (see bench/hypothesis_quality.py)")
    parser.add_argument("--subset_seed", type=int, default=0, help="seed of the stratified subsets (not a training seed)")
    parser.add_argument("--noise_seed", type=int, default=0, help="seed of every noise draw (train and test audio)")
    parser.add_argument("--egemaps_c_grid", type=float, nargs="+", help="C values tried for (1) on validation")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--no_reuse", action="store_true", help="recompute finished runs instead of reusing them")
    parser.add_argument("--plan_only", action="store_true", help="print the plan (data, conditions, estimate) and stop")
    args = parser.parse_args(argv)
    settings = dict(FULL)
    for name in PRESETS:
        if getattr(args, name):
            settings.update(PRESETS[name])
    for key, value in settings.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    for key in [k for k in vars(args) if k.endswith("_samples")]:
        if getattr(args, key) == 0:
            setattr(args, key, None)
    args.dataset_dir = args.dataset_dir or str(ROOT / "data" / args.corpus)
    args.language = args.language or CORPORA[args.corpus]
    if min(args.seeds) < 0 or args.epochs < 1 or args.augment_copies < 1:
        parser.error("seeds must be >= 0, --epochs and --augment_copies >= 1")
    if len(set(args.snrs)) != len(args.snrs) or len(set(args.noise_types)) != len(args.noise_types):
        parser.error(f"repeated SNRs or noise types: {args.snrs} {args.noise_types}")
    for text in args.inner_cv_candidates:
        try:
            parse_candidate(text)
        except ValueError as error:
            parser.error(str(error))
    if args.inner_cv_folds < 2:
        parser.error(f"--inner_cv_folds must be at least 2, got {args.inner_cv_folds}")
    if args.speaker_norm_clips is not None and args.speaker_norm_clips < 2:
        parser.error(f"--speaker_norm_clips must be at least 2 (a std needs two clips), got {args.speaker_norm_clips}")
    if not (args.lora_learning_rate > 0 and args.lora_epochs > 0):
        parser.error(f"--lora_learning_rate and --lora_epochs must be positive, got {args.lora_learning_rate:g} and "
                     f"{args.lora_epochs:g}")
    return args


def parse_variant(text):
    """'key:config_overrides[:training_overrides]' -> (key, config_overrides, {TrainingArguments field: value})."""
    key, _, rest = text.partition(":")
    if not key.isidentifier() or not rest.partition(":")[0]:
        raise argparse.ArgumentTypeError(f"--variant {text!r}: expected KEY:CONFIG_OVERRIDES[:TRAINING_OVERRIDES]")
    try:
        settings = parse_settings(rest, "--variant")
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return key, settings.config_overrides, dict(settings.training_overrides)


def check_inputs(args):
    """Fail before any work, naming what is missing and how to get it."""
    if not (Path(args.dataset_dir) / "dataset_dict.json").is_file():
        source = SHARED / "data" / args.corpus
        sys.exit(f"no prepared corpus at {args.dataset_dir}; prepare it with:\n"
                 f"  python -m dataset_scripts.{args.corpus} --source_dir {source} --output_dir {args.dataset_dir}")
    if not Path(args.noise_dir).is_dir():
        sys.exit(f"noise folder {args.noise_dir} not found (../shared/data/noise, with a train/test split)")
    if "egemaps" in args.systems or "egemaps_clean" in args.systems:
        try:
            version = importlib.metadata.version("opensmile")
        except importlib.metadata.PackageNotFoundError:
            sys.exit("system (1) needs openSMILE: pip install -r bench/requirements.txt")
        logger.info("opensmile %s", version)


# --------------------------------------------------------------------------------------------- data subsets
def stratified_indices(labels, size, seed):
    """`size` indices with the classes as even as the data allows (seeded order within each class), sorted."""
    labels = list(labels)
    if size is None or size >= len(labels):
        return list(range(len(labels)))
    order = np.random.default_rng(seed).permutation(len(labels))
    seen, keyed = {}, []
    for position, index in enumerate(order):
        rank = seen.get(labels[index], 0)
        seen[labels[index]] = rank + 1
        keyed.append((rank, position, int(index)))
    return sorted(index for _, _, index in sorted(keyed)[:size])


def subset_name(subset):
    return "-".join(f"{split}{'all' if n is None else n}" for split, n in subset.items())


def _derived_corpus(path, corpus, build, **meta):
    """`build()` (a DatasetDict derived from `corpus`) saved at `path`, reused while `corpus` is unchanged. Saving
    keeps each split's fingerprint, so nser's feature cache is shared between runs on the same derived corpus."""
    source = {split: corpus[split]._fingerprint for split in corpus}
    marker = path / "bench_subset.json"
    if marker.is_file() and json.loads(marker.read_text()).get("source") == source:
        return str(path)
    build().save_to_disk(str(path))
    write_text_atomic(marker, json.dumps({"source": source, **meta}, indent=1))
    logger.info("wrote %s", path)
    return str(path)


def materialise_subset(dataset_dir, subset, seed, data_root):
    """The corpus folder itself, or a fixed stratified subset of it saved under `data_root` (reused when done)."""
    if all(n is None for n in subset.values()):
        return str(dataset_dir)
    corpus = load_from_disk(str(dataset_dir))
    return _derived_corpus(
        Path(data_root) / f"{Path(dataset_dir).name}-{subset_name(subset)}-seed{seed}", corpus,
        lambda: DatasetDict({split: ds.select(stratified_indices(ds["label"], subset.get(split), seed)) for split, ds in corpus.items()}),
        subset=subset, seed=seed,
    )


def materialise_folds(args, data_root):
    """[(fold name, corpus folder)]: the cross-validation folds of the pooled corpus (`nser.data.cross_validation_folds`
    with the command's options), saved under `data_root`."""
    corpus = load_from_disk(str(args.dataset_dir))
    options = {"num_folds": args.cv_folds, "validation": args.cv_validation, "validation_column": args.validation_column,
               "validation_groups": args.validation_groups, "validation_fraction": args.validation_fraction}
    try:
        folds = cross_validation_folds(corpus, args.cv_column, **options)
    except ValueError as error:
        sys.exit(f"--cv_column: {error}")
    tag = fingerprint(options)[:6]
    return [(name, _derived_corpus(Path(data_root) / f"{Path(args.dataset_dir).name}-{name}-{tag}", corpus,
                                   lambda splits=splits: splits, cv_column=args.cv_column, fold=name, **options))
            for name, splits in folds]


def materialise_development(args, data_root):
    """The corpus without its test split: the validation speakers become the test set, and validation is a stratified
    share of each training speaker's clips. Choices made on it never see a test speaker of the corpus's own split."""
    corpus = load_from_disk(str(args.dataset_dir))
    def build():
        return stratified_validation(DatasetDict(train=corpus["train"], test=corpus["validation"]), "speaker", "label",
                                     args.validation_fraction, 0)

    return _derived_corpus(Path(data_root) / f"{Path(args.dataset_dir).name}-development-{args.validation_fraction:g}", corpus, build,
                           development=True, validation_fraction=args.validation_fraction)


def split_sizes(dataset_dir):
    corpus = load_from_disk(str(dataset_dir))
    return {split: len(corpus[split]) for split in ("train", "validation", "test")}


def dataset_fingerprints(dataset_dir):
    corpus = load_from_disk(str(dataset_dir))
    return {split: corpus[split]._fingerprint for split in sorted(corpus)}


# --------------------------------------------------------------------------------------------- the systems
def build_specs(args, data_root):
    """The systems to run, in report order, with the data and conditions of each."""
    main = {"train": args.max_train_samples, "validation": args.max_validation_samples, "test": args.max_test_samples}
    padded = {s: getattr(args, f"padded_max_{s}_samples") for s in main}
    decoder = {s: getattr(args, f"decoder_max_{s}_samples") for s in main}
    # Subsets are drawn from the main systems' data, so a subset's clips are among the main systems' clips.
    padded = {s: min(v, main[s]) if v and main[s] else (v or main[s]) for s, v in padded.items()}
    decoder = {s: min(v, main[s]) if v and main[s] else (v or main[s]) for s, v in decoder.items()}
    folder = {}

    def data(subset):
        key = subset_name(subset)
        if key not in folder:
            folder[key] = materialise_subset(args.dataset_dir, subset, args.subset_seed, data_root)
        return folder[key]

    seeds, snrs = list(args.seeds), list(args.snrs)
    decoder_snrs, frame_snrs = list(args.decoder_snrs or snrs), list(args.frame_snrs or snrs)
    lang = args.language
    asr = ",".join(filter(None, [f"use_decoder=true,asr_language={lang}", args.decoder_config]))
    decoder_overrides = f"{FRAME_ADAPTER},{asr}"
    probe = {"c_grid": list(args.probe_c_grid), "inner_folds": PROBE_INNER_FOLDS}
    # speaker normalisation's test statistics: every clip of the speaker, or an enrolment of --speaker_norm_clips
    enrolment = {"speaker_normalization_clips": args.speaker_norm_clips} if args.speaker_norm_clips else {}
    transductive = f"transductive, {args.speaker_norm_clips} enrolment clips" if enrolment else "transductive"
    enrolment_clips = f"{args.speaker_norm_clips} of their" if enrolment else "their own"
    specs = {
        "egemaps": lambda: SystemSpec("egemaps", "1", "eGeMAPSv02 + logistic regression", "egemaps", data(main), main, snrs,
                              seeds[:1], note="openSMILE functionals, standardised; C on validation; deterministic: one run"),
        "egemaps_clean": lambda: SystemSpec("egemaps_clean", "1c", "eGeMAPSv02 + logistic regression, clean-trained", "egemaps",
                                    data(main), main, snrs, seeds[:1], train_with_noise=False, note="as (1), clean training"),
        "whisper_last": lambda: SystemSpec("whisper_last", "2", "Whisper last encoder layer, mean-pooled, MLP head", "nser", data(main),
                                   main, snrs, seeds, config_overrides=LAST_LAYER_MEAN,
                                   note="nser `encoder_fusion=last` on the layer means; head Linear-GELU-Dropout-Linear (the library's)"),
        "probe": lambda: SystemSpec("probe", "2p", "linear probe: every encoder layer's mean + std, logistic regression", "probe",
                            data(main), main, snrs, seeds[:1], options=probe,
                            note="StandardScaler + LogisticRegression; C by speaker-grouped CV on the training speakers; "
                                 "deterministic: one run"),
        # (2p) made as strong as the protocol allows: the validation clips (held-out sentences or a share of each
        # training speaker's clips, which the probe does not need for C) join its training set; -m: means only.
        "probe_all": lambda: SystemSpec("probe_all", "2p-a", "(2p) fit on the training and validation clips", "probe",
                                data(main), main, snrs, seeds[:1], options={**probe, "fit_on_validation": True},
                                note="as (2p), the validation clips (one noisy draw each) added to its training set"),
        "probe_all_mean": lambda: SystemSpec("probe_all_mean", "2p-am", "(2p-a) on every layer's mean only", "probe",
                                     data(main), main, snrs, seeds[:1],
                                     options={**probe, "fit_on_validation": True, "statistics": "mean"},
                                     note="as (2p-a), without the per-layer std"),
        "probe_clean": lambda: SystemSpec("probe_clean", "2pc", "(2p) clean-trained", "probe", data(main), main, snrs, seeds[:1],
                                  train_with_noise=False, options=probe, note="as (2p), clean training"),
        "wfac": lambda: SystemSpec("wfac", "3", "transformers WhisperForAudioClassification (weighted layer sum, 30 s padded)", "wfac",
                           data(padded), padded, list(args.padded_snrs or snrs), seeds, learned_layer_weights=True,
                           note="frozen encoder; mean over all 1500 positions, padding included"),
        "nser_enc": lambda: SystemSpec("nser_enc", "4", "nser frame-level encoder layer adapter (the paper's)", "nser", data(main),
                               main, frame_snrs, seeds, config_overrides=FRAME_ADAPTER,
                               learned_layer_weights=True),
        "nser_encdec": lambda: SystemSpec("nser_encdec", "5", f"nser encoder + decoder layer adapters (ASR hypothesis, {lang})", "nser",
                                  data(decoder), decoder, decoder_snrs, seeds,
                                  config_overrides=decoder_overrides, learned_layer_weights=True,
                                  note="greedy hypothesis from the padded encoder window, capped by duration"),
        "nser_enc_clean": lambda: SystemSpec("nser_enc_clean", "6", "(4) clean-trained", "nser", data(main), main,
                                     frame_snrs, seeds, train_with_noise=False,
                                     config_overrides=FRAME_ADAPTER, learned_layer_weights=True),
        "nser_encdec_clean": lambda: SystemSpec("nser_encdec_clean", "6b", "(5) clean-trained", "nser", data(decoder), decoder,
                                        decoder_snrs, seeds, train_with_noise=False,
                                        config_overrides=decoder_overrides, learned_layer_weights=True),
        "nser_default": lambda: SystemSpec("nser_default", "N", "nser default: pooled-statistics layer adapter, standardised",
                                   "nser", data(main), main, snrs, seeds, config_overrides=DEFAULT_HEAD, learned_layer_weights=True,
                                   training_overrides=DEFAULT_RECIPE, note="NserConfig defaults, encoder only: each layer's mean + std, standardised with "
                                        "training statistics, per-layer projection, softmax layer weights"),
        "nser_default_clean": lambda: SystemSpec("nser_default_clean", "Nc", "(N) clean-trained", "nser", data(main), main, snrs,
                                         seeds, train_with_noise=False, config_overrides=DEFAULT_HEAD, learned_layer_weights=True,
                                         training_overrides=DEFAULT_RECIPE),
        "nser_default_ensemble": lambda: SystemSpec("nser_default_ensemble", "Ne", "(N), ensemble over the seeds", "nser",
                                            data(main), main, snrs, seeds[:1], config_overrides=DEFAULT_HEAD,
                                            training_overrides=DEFAULT_RECIPE, learned_layer_weights=True,
                                            options={"ensemble_seeds": seeds},
                                            note=f"mean class probabilities of (N) trained with seeds {seeds}: one model of "
                                                 f"{len(seeds)}x the cost"),
        "nser_default_probe_fusion": lambda: SystemSpec(
            "nser_default_probe_fusion", "N+2p", "(N) and (2p), mean of their class probabilities", "fusion", data(main), main,
            snrs, seeds, config_overrides=DEFAULT_HEAD, training_overrides=DEFAULT_RECIPE, learned_layer_weights=True,
            options=probe, note="each seed's (N) and the one (2p) of its fold, their class probabilities averaged clip by "
                                "clip with equal weights (nothing tuned)"),
        "nser_default_lora": lambda: SystemSpec("nser_default_lora", "N-L", "(N) + LoRA on the encoder, noise drawn every epoch",
                                        "nser", data(main), main, snrs, seeds, config_overrides=DEFAULT_HEAD,
                                        training_overrides=LORA_RECIPE, options={"model_arguments": {"use_lora": True}},
                                        learned_layer_weights=True,
                                        note="LoRA r 8 on the encoder's q/v projections (nser defaults), trained with the "
                                             "head; no feature cache, so a new noisy draw every epoch"),
        "nser_default_lpft": lambda: SystemSpec(
            "nser_default_lpft", "N-LF", "(N), then LoRA on the encoder from its trained head", "nser", data(main), main,
            snrs, seeds, config_overrides=DEFAULT_HEAD, training_overrides=DEFAULT_RECIPE, learned_layer_weights=True,
            options={"model_arguments": {"use_lora": True, "lora_after_head": True, "lora_learning_rate": args.lora_learning_rate,
                                         "lora_epochs": args.lora_epochs}},
            note=f"(N) as above, then LoRA r 8 on the encoder's q/v and the head trained together from its best epoch "
                 f"(learning rate {args.lora_learning_rate:g}, {args.lora_epochs:g} epochs, a new noisy draw each)"),
        "probe_speaker_norm": lambda: SystemSpec("probe_speaker_norm", "2p-s", f"(2p) with speaker normalisation ({transductive})",
                                         "probe", data(main), main, snrs, seeds[:1], speaker_normalization=True,
                                         options=probe | enrolment,
                                         note="every speaker's clips standardised by that speaker's statistics, test "
                                              f"speakers with {enrolment_clips} unlabelled clips of each condition"),
        "nser_default_speaker_norm": lambda: SystemSpec("nser_default_speaker_norm", "N-s",
                                                f"(N) with speaker normalisation ({transductive})", "nser", data(main), main,
                                                snrs, seeds, config_overrides=DEFAULT_HEAD, speaker_normalization=True,
                                                training_overrides=DEFAULT_RECIPE, options=enrolment,
                                                learned_layer_weights=True, note="as (2p-s)"),
        "nser_default_speed": lambda: SystemSpec("nser_default_speed", "N-sp", "(N) with speed perturbation",
                                         "nser", data(main), main, snrs, seeds, config_overrides=DEFAULT_HEAD,
                                         training_overrides=DEFAULT_RECIPE, noise_overrides=SPEED_PERTURBATION,
                                         learned_layer_weights=True, note=SPEED_NOTE),
        "nser_default_inner_cv": lambda: SystemSpec(
            "nser_default_inner_cv", "N-i", "(N), head settings by inner speaker-grouped CV", "nser", data(main), main, snrs,
            seeds, config_overrides=DEFAULT_HEAD, training_overrides=DEFAULT_RECIPE, learned_layer_weights=True,
            options={"inner_cv": {"candidates": list(args.inner_cv_candidates), "folds": args.inner_cv_folds}},
            note="per fold, the candidate with the best mean macro-F1 on held-out training speakers (their cached noisy "
                 f"training copies); candidates on top of (N): {' | '.join(repr(c) for c in args.inner_cv_candidates)}"),
        "probe_speed": lambda: SystemSpec("probe_speed", "2p-sp", "(2p) with speed perturbation", "probe", data(main),
                                  main, snrs, seeds[:1], noise_overrides=SPEED_PERTURBATION, options=probe, note=SPEED_NOTE),
        "nser_default_encdec": lambda: SystemSpec("nser_default_encdec", "Nd", f"(N) + decoder layers (ASR hypothesis, {lang})",
                                          "nser", data(decoder), decoder, decoder_snrs, seeds,
                                          config_overrides=asr, training_overrides=DEFAULT_RECIPE, learned_layer_weights=True,
                                          note="NserConfig defaults with use_decoder=true: each decoder layer's mean + std over "
                                               "prompt + hypothesis tokens, standardised, its own layer adapter"),
        "nser_default_encdec_prompt": lambda: SystemSpec("nser_default_encdec_prompt", "Nd-p", "(Nd), decoder on the task prompt only",
                                                 "nser", data(decoder), decoder, decoder_snrs, seeds,
                                                 config_overrides=f"{asr},decoder_input=prompt", training_overrides=DEFAULT_RECIPE,
                                                 learned_layer_weights=True,
                                                 note="ablation: the decoder hears the audio (cross-attention) but reads no words"),
        "nser_default_encdec_clean": lambda: SystemSpec("nser_default_encdec_clean", "Ndc", "(Nd) clean-trained", "nser",
                                                data(decoder), decoder, decoder_snrs, seeds,
                                                train_with_noise=False, config_overrides=asr, training_overrides=DEFAULT_RECIPE,
                                                learned_layer_weights=True),
    }
    chosen = [specs[key]() for key in ALL_SYSTEMS if key in args.systems]  # builds only the chosen folders
    for key, config_overrides, training_overrides in args.variant or []:
        chosen.append(SystemSpec(key, f"v-{key}", f"variant {key}", "nser", data(main), main, snrs, seeds,
                                 config_overrides=config_overrides, training_overrides=training_overrides,
                                 learned_layer_weights=True))
    # Matched controls: the encoder-only head of each expensive system ((4), or (N) for the default-head decoder
    # systems) on each distinct subset, placed after that system.
    controls = {}
    for spec in list(chosen):
        if spec.kind == "nser" and "encdec" in spec.key or spec.kind == "wfac":
            default_head = spec.key.startswith("nser_default")
            control = (subset_name(spec.subset), default_head)
            if spec.subset != main and control not in controls:
                number, prefix = ("N*", "nser_default_on") if default_head else ("4*", "nser_enc_on")
                controls[control] = SystemSpec(
                    f"{prefix}_{subset_name(spec.subset)}", number, f"({number[0]}) on the subset of ({spec.number})", "nser",
                    spec.dataset_dir, spec.subset, snrs, seeds, config_overrides=DEFAULT_HEAD if default_head else FRAME_ADAPTER,
                    training_overrides=DEFAULT_RECIPE if default_head else {}, learned_layer_weights=True,
                    note=f"paired comparison for ({spec.number}): same clips, same training recipe")
                chosen.insert(chosen.index(spec) + 1, controls[control])
            elif spec.subset != main:
                controls[control].title += f" and ({spec.number})"
    return chosen


def execution_order(specs):
    rank = {key: i for i, key in enumerate(EXECUTION_ORDER)}
    kind = {"4*": "control", "N*": "control"}
    return sorted(specs, key=lambda spec: rank[kind.get(spec.number, "variant" if spec.number.startswith("v-") else spec.key)])


def backbone_of(spec):
    """(cache, cost) of a spec's features: systems with the same cache extract once; cost is a COST_PER_CLIP_S key
    (a bfloat16 ASR pass is priced as emulated on a CPU without native bfloat16).
    Read from the NserConfig the system builds, so defaults count as at run time (NserConfig's use_decoder is true).
    A decoder system's cache is keyed by its whole config, as hypotheses and decoder states depend on every ASR setting."""
    if spec.kind in ("egemaps", "wfac"):
        family = "egemaps" if spec.kind == "egemaps" else "padded"
        return family, family
    config = NserConfig(**parse_config_overrides(spec.config_overrides)) if spec.kind == "nser" else None
    if config is None or not config.use_decoder:  # the probe reads the pooled encoder cache
        family = "real_length" if config is not None and not config.pool_before_fusion else "real_length_stats"
        return family, family
    shorter = config.asr_window_seconds < NserConfig().asr_window_seconds  # than Whisper's own 30 s window
    emulated = config.asr_dtype == "bfloat16" and not _cpu_has_native_bfloat16()
    if config.decoder_input == "prompt":
        cost = "decoder_prompt"
    elif shorter or (config.asr_dtype != "float32" and not emulated):
        cost = "decoder_fast"
    else:
        cost = "decoder"
    return f"decoder:{spec.config_overrides}", f"{cost}_emulated_bf16" if emulated else cost


def estimate_minutes(specs, sizes, noise_types, augment_copies, epochs):
    """Planned minutes per system on a quiet 2-core CPU (COST_PER_CLIP_S), counting a shared cache once."""
    done, minutes = set(), {}
    for spec in execution_order(specs):
        n = sizes[spec.key]
        cache, cost = backbone_of(spec)
        noise = "noise" if spec.train_with_noise else "clean"
        train_clips = n["train"] * (augment_copies if spec.train_with_noise else 1)
        variants = [("train", spec.subset["train"], noise, train_clips), ("validation", spec.subset["validation"], noise, n["validation"])]
        variants += [("test", spec.subset["test"], c, n["test"]) for c in ["clean"] + [f"{t}{s}" for t in noise_types for s in spec.snrs]]
        test_clips = n["test"] * (1 + len(noise_types) * len(spec.snrs))
        run_epochs = spec.training_overrides.get("num_train_epochs", epochs)
        if spec.model_arguments.get("lora_after_head"):  # the head's stage costs seconds (cached); the LoRA stage counts
            run_epochs = spec.model_arguments["lora_epochs"]
        if spec.model_arguments.get("use_lora"):  # nothing cached: every pass runs the encoder
            encode = COST_PER_CLIP_S["real_length"] + AUDIO_PREP_S
            per_epoch = n["train"] * (LORA_TRAIN_S_PER_CLIP + AUDIO_PREP_S) + n["validation"] * encode + CHECKPOINT_S
            per_seed = RUN_OVERHEAD_S + n["train"] * encode + run_epochs * per_epoch + test_clips * encode
            minutes[spec.key] = len(spec.seeds) * per_seed / 60
            continue
        seconds = 0.0
        for split, size, variant, clips in variants:
            if (cache, split, size, variant) not in done:
                done.add((cache, split, size, variant))
                seconds += clips * (COST_PER_CLIP_S[cost] + AUDIO_PREP_S)
        if spec.kind in ("nser", "fusion"):
            per_epoch = (train_clips + n["validation"] / 3) * TRAIN_S_PER_EXAMPLE_EPOCH + CHECKPOINT_S
            runs = len(spec.options.get("ensemble_seeds") or spec.seeds)
            seconds += runs * (RUN_OVERHEAD_S + run_epochs * per_epoch + test_clips * INFERENCE_S_PER_CLIP)
            inner = spec.options.get("inner_cv")
            if inner:  # each candidate on each inner fold: most of the training clips, no checkpoint
                inner_epoch = (train_clips + n["validation"]) * TRAIN_S_PER_EXAMPLE_EPOCH
                seconds += runs * len(inner["candidates"]) * inner["folds"] * (RUN_OVERHEAD_S + run_epochs * inner_epoch)
        minutes[spec.key] = seconds / 60
    return minutes


def run_system(setup, spec, reuse=True):
    """Per-seed results, reusing finished runs whose settings match."""
    signature = fingerprint({"version": RESULT_VERSION, "setup": setup.signature(), "spec": spec.signature(),
                             "data": dataset_fingerprints(spec.dataset_dir)})
    results, todo = {}, []
    for seed in spec.seeds:
        path = setup.output_dir / spec.key / f"seed-{seed}" / RESULT_FILE
        saved = json.loads(path.read_text()) if reuse and path.is_file() else None
        if saved and saved.get("signature") == signature:
            logger.info("(%s) %s, seed %d: reusing %s", spec.number, spec.key, seed, path)
            results[seed] = saved
        else:
            todo.append(seed)
    if todo:
        logger.info("(%s) %s: running seeds %s", spec.number, spec.key, todo)
        for seed, result in SYSTEM_FUNCTIONS[spec.kind](setup, spec, todo).items():
            result.update(seed=seed, signature=signature)
            path = setup.output_dir / spec.key / f"seed-{seed}" / RESULT_FILE
            path.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(path, json.dumps(result, indent=1, default=float))  # reused later: never truncated
            results[seed] = json.loads(path.read_text())
    return [results[seed] for seed in spec.seeds if seed in results]


# --------------------------------------------------------------------------------------------- folds
def mean_over_folds(rows_per_fold):
    """One seed's rows over the folds, in a single run's format: each metric the mean over folds (every fold
    weighted equally, as leave-one-speaker-out results are reported), counts and confusion matrices summed."""
    rows = aggregate(rows_per_fold)
    for row in rows:
        for metric in SCALAR_METRICS:
            row[metric] = row.pop(f"{metric}_mean")
            row.pop(f"{metric}_std")
        row.pop("num_runs")
    return rows


def combine_folds(names, per_fold):
    """[(spec, results, sizes)] per fold -> one [(spec, results, sizes)] whose per-seed results are averaged over
    the folds (seeds every fold has); sizes: train/validation per fold, test clips summed (each tested once); the
    spec's corpus folder names the fold `<fold>`."""
    combined = []
    for entries in zip(*per_fold):
        spec = entries[0][0]
        if any(other.key != spec.key for other, _, _ in entries):
            raise ValueError(f"folds ran different systems: {[other.key for other, _, _ in entries]}")
        by_seed = [{r["seed"]: r for r in results} for _, results, _ in entries]
        seeds = [seed for seed in spec.seeds if all(seed in runs for runs in by_seed)]
        results = []
        for seed in seeds:
            runs = [runs[seed] for runs in by_seed]
            results.append({"seed": seed, "rows": mean_over_folds([r["rows"] for r in runs]), "layer_weights": mean_layer_weights(runs),
                            "stages": sum_stages([r["stages"] for r in runs]), "wall_s": sum(r["wall_s"] for r in runs)})
        sizes = {split: "/".join(dict.fromkeys(str(sz[split]) for _, _, sz in entries)) for split in ("train", "validation")}
        sizes["test"] = sum(sz["test"] for _, _, sz in entries)
        combined.append((dataclasses.replace(spec, dataset_dir=spec.dataset_dir.replace(names[0], "<fold>")), results, sizes))
    return combined


def fold_table(names, per_fold, noise_types, snrs, metric="macro_f1"):
    """One row per system, one column per fold: clean / average over every noisy condition, mean over seeds."""
    title = {"macro_f1": "Macro-F1", "ua": "UA"}[metric]
    lines = ["| system | " + " | ".join(f"{name}: clean / noisy avg" for name in names) + " |", "|---|" + "---:|" * len(names)]
    for entries in zip(*per_fold):
        spec, cells = entries[0][0], []
        for _, results, _ in entries:
            summary = snr_summary([r["rows"] for r in results], metric, noise_types, snrs)
            cells.append(" / ".join("–" if summary[c] is None else f"{100 * summary[c][0]:.1f}" for c in ("clean", "noisy avg")))
        lines.append(f"| ({spec.number}) {spec.key} | " + " | ".join(cells) + " |")
    return f"{title} (%) of each fold's held-out group, mean over seeds.\n\n" + "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------- tables
def inner_cv_table(folds):
    """Which candidate each inner cross-validation chose, per fold and seed, beside every candidate's mean
    held-out macro-F1; `folds`: [(fold name, [(spec, results, sizes)])]. Empty when no system chose by inner CV."""
    lines = []
    for name, entries in folds:
        for spec, results, _ in entries:
            for result in results:
                record = (result.get("selection") or {}).get("inner_cv")
                if record:
                    scores = " · ".join(f"`{c}` {100 * np.mean(s):.1f}" for c, s in record["scores"].items())
                    lines.append(f"| ({spec.number}) | {name} | {result['seed']} | `{record['chosen']}` | {scores} |")
    if not lines:
        return ""
    return ("Each candidate trained on all but one block of the fold's training speakers and scored on the held-out "
            "block's noisy training copies (blocks: `inner_cv.json` in each run folder); mean over the blocks.\n\n"
            "| system | fold | seed | chosen | mean held-out macro-F1 (%) per candidate |\n|---|---|---:|---|---|\n"
            + "\n".join(lines) + "\n")


def _mean_std(values):
    values = np.asarray(values, dtype=float)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def snr_summary(rows_per_seed, metric, noise_types, snrs):
    """{column: (mean, std) over seeds or None}: `clean`, each SNR averaged over `noise_types`, and `noisy avg`
    over every noise type x SNR. Each seed is averaged first, then mean ± std over seeds. A column some
    condition of which is missing is None (never an average over a different set of conditions)."""
    columns = ["clean", *snrs, "noisy avg"]
    per_seed = {column: [] for column in columns}
    for rows in rows_per_seed:
        cells = {(row["noise_type"], row["snr_db"]): row[metric] for row in rows}
        per_seed["clean"].append(cells.get(("clean", None)))
        for snr in snrs:
            values = [cells.get((noise_type, float(snr))) for noise_type in noise_types]
            per_seed[snr].append(None if None in values else float(np.mean(values)))
        everything = [cells.get((noise_type, float(snr))) for noise_type in noise_types for snr in snrs]
        per_seed["noisy avg"].append(None if None in everything or not everything else float(np.mean(everything)))
    return {column: None if not values or None in values else _mean_std(values) for column, values in per_seed.items()}


def _cell(value):
    return "–" if value is None else f"{100 * value[0]:.1f} ± {100 * value[1]:.1f}"


def summary_table(systems, metric, noise_types, snrs):
    """One row per system: clean, each SNR averaged over the noise types, and the average over all noisy conditions."""
    title = {"macro_f1": "Macro-F1", "ua": "UA"}[metric]
    lines = ["| system | test clips | seeds | clean | " + " | ".join(f"{s:g} dB" for s in snrs) + " | noisy avg |",
             "|---|---:|---:|" + "---:|" * (len(snrs) + 2)]
    for spec, results, sizes in systems:
        summary = snr_summary([r["rows"] for r in results], metric, noise_types, snrs)
        cells = [_cell(summary[c]) for c in ["clean", *snrs, "noisy avg"]]
        lines.append(f"| ({spec.number}) {spec.title} | {sizes['test']} | {len(results)} | " + " | ".join(cells) + " |")
    return f"{title} (%), mean ± std over seeds; SNR columns average the {len(noise_types)} noise types.\n\n" + "\n".join(lines) + "\n"


def plan_table(specs, sizes, minutes, augment_copies):
    lines = ["| system | corpus folder | train clips | validation clips | test clips | SNRs (dB) | seeds | training audio | est. min |",
             "|---|---|---:|---:|---:|---|---|---|---:|"]
    for spec in specs:
        n = sizes[spec.key]
        training = f"noise-augmented ({augment_copies} draws/clip)" if spec.train_with_noise else "clean"
        if spec.train_with_noise and spec.model_arguments.get("use_lora"):
            training = "noise-augmented (a new draw every epoch)"
        members = spec.options.get("ensemble_seeds")
        seeds = f"ensemble of {' '.join(map(str, members))}" if members else " ".join(map(str, spec.seeds))
        lines.append(
            f"| ({spec.number}) {spec.key} | `{_relative(spec.dataset_dir)}` | {n['train']} | {n['validation']} | {n['test']} "
            f"| {' '.join(f'{s:g}' for s in spec.snrs)} | {seeds} | {training} | {minutes[spec.key]:.1f} |"
        )
    return "\n".join(lines) + "\n"


def layer_weight_table(systems):
    """Learned layer weights (softmax), mean ± std over seeds, per system and group."""
    lines = []
    for spec, results, _ in systems:
        if not spec.learned_layer_weights or not results or not results[0].get("layer_weights"):
            continue
        for group in results[0]["layer_weights"]:
            weights = np.array([r["layer_weights"][group] for r in results])
            means, stds = weights.mean(0), weights.std(0, ddof=1) if len(weights) > 1 else np.zeros(weights.shape[1])
            cells = " | ".join(f"{m:.2f} ± {s:.2f}" for m, s in zip(means, stds))
            if not lines:
                lines = ["| system | group | " + " | ".join(f"L{i}" for i in range(weights.shape[1])) + " |",
                         "|---|---|" + "---:|" * weights.shape[1]]
            lines.append(f"| ({spec.number}) {spec.key} | {group} | {cells} |")
    return "\n".join(lines) + "\n" if lines else "No system with learned layer weights was run.\n"


def cost_rows(spec, results):
    """Extraction summed over seeds (a shared cache makes later seeds and systems read it), training and
    inference per seed, total wall time over seeds, and the largest peak RSS seen."""
    def total(stage, key):
        return sum((r["stages"] or {}).get(stage, {}).get(key, 0) for r in results)

    seeds = max(len(results), 1)
    extraction_s, computed, reused = total("extraction", "seconds"), total("extraction", "clips"), total("extraction", "reused_clips")
    peak = max([s["peak_rss_mb"] for r in results for s in (r["stages"] or {}).values()] or [0.0])
    return {
        "extraction_s": extraction_s, "clips_computed": computed, "clips_reused": reused,
        "ms_per_computed_clip": 1000 * extraction_s / computed if computed else None,
        "training_s_per_seed": total("training", "seconds") / seeds, "training_examples": total("training", "clips") // seeds,
        "inference_s_per_seed": total("inference", "seconds") / seeds, "inference_clips": total("inference", "clips") // seeds,
        "wall_s": sum(r["wall_s"] for r in results), "peak_rss_mb": peak,
    }


def cost_table(systems):
    lines = ["| system | feature extraction s (clips computed / reused) | ms per computed clip | training s per seed (examples) "
             "| inference s per seed (clips) | wall s, all seeds | peak RSS MB |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for spec, results, _ in systems:
        c = cost_rows(spec, results)
        per_clip = "–" if c["ms_per_computed_clip"] is None else f"{c['ms_per_computed_clip']:.0f}"
        lines.append(
            f"| ({spec.number}) {spec.key} | {c['extraction_s']:.1f} ({c['clips_computed']} / {c['clips_reused']}) | {per_clip} "
            f"| {c['training_s_per_seed']:.1f} ({c['training_examples']}) | {c['inference_s_per_seed']:.1f} ({c['inference_clips']}) "
            f"| {c['wall_s']:.0f} | {c['peak_rss_mb']:.0f} |"
        )
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------- figures
def _save(figure, path):
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=110)


def plot_f1_vs_snr(systems, noise_types, snrs, path):
    """Macro-F1 vs SNR, one panel per noise type plus their average; one line per system, clean at the right. Every
    panel has the same 0-100 axis and the chance level (uniform guessing: 100 / classes) dashed; the legend sits
    below the panels, clear of the data."""
    ascending = sorted(snrs)
    chance = 100.0 / len(systems[0][1][0]["rows"][0]["labels"])
    positions = {snr: i for i, snr in enumerate(ascending)}
    panels = list(noise_types) + ["mean over noise types"]
    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    figure = Figure(figsize=(4.2 * columns, 3.4 * rows + 0.8), layout="constrained")
    for index, panel in enumerate(panels):
        axes = figure.add_subplot(rows, columns, index + 1)
        for spec, results, _ in systems:
            rows_per_seed = [r["rows"] for r in results]
            kinds = noise_types if panel.startswith("mean") else [panel]
            summary = snr_summary(rows_per_seed, "macro_f1", kinds, ascending)
            xs = [positions[s] for s in ascending if summary[s]]
            values = [summary[s] for s in ascending if summary[s]]
            line = axes.errorbar(xs, [100 * v[0] for v in values], yerr=[100 * v[1] for v in values], marker="o",
                                 capsize=2, label=f"({spec.number}) {spec.key}")
            if summary["clean"]:  # its own marker, not joined to the SNR curve
                axes.errorbar([len(ascending)], [100 * summary["clean"][0]], yerr=[100 * summary["clean"][1]], marker="s",
                              capsize=2, color=line.lines[0].get_color())
        axes.axhline(chance, color="0.4", linestyle="--", linewidth=1, label=f"chance ({chance:.1f} %)")
        axes.set_ylim(0, 100)
        axes.set_xticks(range(len(ascending) + 1), [f"{s:g}" for s in ascending] + ["clean"])
        axes.set_title(panel)
        axes.set_xlabel("SNR (dB)")
        axes.set_ylabel("macro-F1 (%)")
        axes.grid(alpha=0.3)
    handles, labels = figure.axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncols=min(4, len(labels)), fontsize="small")
    _save(figure, path)


def plot_layer_weights(systems, path):
    """Grouped bars: each system's learned weight per layer (mean over seeds, std as error bars), per group."""
    data = {}
    for spec, results, _ in systems:
        if spec.learned_layer_weights and results and results[0].get("layer_weights"):
            for group in results[0]["layer_weights"]:
                weights = np.array([r["layer_weights"][group] for r in results])
                std = weights.std(0, ddof=1) if len(weights) > 1 else np.zeros(weights.shape[1])
                data.setdefault(group, []).append((f"({spec.number}) {spec.key}", weights.mean(0), std))
    if not data:
        return False
    figure = Figure(figsize=(6 * len(data), 3.8), layout="constrained")
    for index, (group, bars) in enumerate(data.items()):
        axes = figure.add_subplot(1, len(data), index + 1)
        width = 0.8 / len(bars)
        for offset, (label, mean, std) in enumerate(bars):
            axes.bar(np.arange(len(mean)) + offset * width - 0.4 + width / 2, mean, width, yerr=std, label=label, capsize=2)
        axes.set_xticks(range(len(bars[0][1])))
        axes.set_title(f"{group} layers (0 = embeddings)")
        axes.set_ylabel("softmax weight")
        axes.legend(fontsize="x-small")
    _save(figure, path)
    return True


# --------------------------------------------------------------------------------------------- report
def environment():
    names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
             if line.startswith("model name")] if Path("/proc/cpuinfo").exists() else []
    versions = {}
    for package in ("torch", "transformers", "datasets", "scikit-learn", "opensmile"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "absent"
    return {"cpu": names[0] if names else platform.processor(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "versions": versions,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def hyperparameters(setup):
    return (
        f"- nser systems (2, 4, 5, 6, 4*): frozen whisper-base, `run_experiment` with AdamW lr {setup.learning_rate:g}, "
        f"{setup.warmup_steps} warm-up steps then linear decay, batch {setup.batch_size}, {setup.epochs} epoch(s), evaluation "
        "every epoch on the validation clips, the epoch with the best validation macro-F1 kept; NserConfig defaults "
        "otherwise (adapter_dim 256, embedding_dim 256).\n"
        f"- (3): the same optimiser, schedule, batch, epochs and selection on WhisperForAudioClassification's head "
        "(softmax layer weights, projector 512->256, classifier), gradient norm clipped at 1 (Trainer's default).\n"
        f"- (1): StandardScaler + LogisticRegression (lbfgs, max_iter 5000); C from {list(setup.egemaps_c_grid)} by validation macro-F1.\n"
        "- (2p): every encoder layer's mean and std over real frames (7 x 2 x 512 = 7168 numbers for whisper-base), "
        "StandardScaler + LogisticRegression (lbfgs, max_iter 2000); C by speaker-grouped cross-validation on the "
        "training speakers only (GroupKFold, up to 4 folds, noisy copies of a clip in the same fold), then refit on all "
        "training clips; the grid and the chosen C are in each run's bench_result.json.\n"
        "- (N): NserConfig defaults (pooled statistics, standardised with training statistics saved in the model, "
        "per-layer projection to adapter_dim, softmax layer weights), `run_experiment` with the recipe above plus any "
        "training overrides the system lists. Variants (`v-...`) change only what their key line says.\n"
        "- Speaker normalisation (`-s` systems): transductive, every speaker's statistics standardised with that speaker's "
        "clips of the same condition; reported apart, not comparable with single-clip systems.\n"
        f"- Training noise: {', '.join(setup.train_noise_types)} (train-split files), SNR uniform in "
        f"[{setup.train_snr_low:g}, {setup.train_snr_high:g}] dB, {setup.clean_probability:.0%} of draws clean, "
        f"{setup.augment_copies} fixed draw(s) per training clip; validation with one draw of the same kind of noise "
        f"(clean for clean-trained systems). Noise seed {setup.noise_seed}.\n"
        "- Nothing is tuned on a test condition: every choice above is fixed here or made on validation clips or speakers.\n"
    )


def render_markdown(args, command, setup, specs_results, plan, figures, env, folds=None):
    """The report; `folds`: (fold names, per-fold [(spec, results, sizes)]) when cross-validating."""
    snrs, noise_types = list(args.snrs), list(args.noise_types)
    if folds:
        tested = f"one {args.cv_column}" if not args.cv_folds else f"a block of consecutive {args.cv_column} values"
        if args.cv_validation == "next_group":
            validation = "validates on the next (cyclically) and trains on the rest"
        elif args.validation_column:
            validation = (f"trains on every other {args.cv_column} and validates on their clips with `{args.validation_column}` "
                          f"in {' '.join(args.validation_groups or [])}")
        else:
            validation = (f"trains on every other {args.cv_column} and validates on a stratified "
                          f"{args.validation_fraction:.0%} of their clips per label")
        splits = (f"cross-validation by `{args.cv_column}` over all its clips, {len(folds[0])} folds: each fold tests {tested}, "
                  f"{validation}; a seed's metrics are the mean over folds, then mean ± std over seeds")
    elif args.development:
        splits = ("development split: the prepared corpus's validation speakers are tested, its test split is not used, "
                  f"validation is a stratified {args.validation_fraction:.0%} of each training speaker's clips")
    else:
        splits = "speaker-independent splits as prepared"
    parts = [
        f"# Noise robustness of speech emotion recognition: {args.corpus}",
        "",
        f"Command: `{command}`",
        "",
        f"- {env['date']}; {env['cpu']}, {env['cpus']} CPUs, torch threads {env['torch_threads']}; "
        + ", ".join(f"{k} {v}" for k, v in env["versions"].items()),
        f"- model `{_relative(args.model)}`; corpus `{_relative(args.dataset_dir)}` ({splits}); "
        f"noise `{_relative(args.noise_dir)}` (test conditions from its test split; white noise synthetic)",
        "",
        "## Data each system used",
        "",
        plan,
        "Subsets are fixed, class-stratified draws (`--subset_seed`) of the same splits; (4*) rows repeat (4) on exactly "
        "the clips of the subset systems, so compare (3) and (5) with their (4*) row, not with (4).",
        "",
        "## Summary",
        "",
        summary_table(specs_results, "macro_f1", noise_types, snrs),
        summary_table(specs_results, "ua", noise_types, snrs),
        f"![macro-F1 vs SNR]({figures['f1_vs_snr']})",
        "",
    ]
    if folds:
        parts += ["## Per fold", "", fold_table(*folds, noise_types, snrs), fold_table(*folds, noise_types, snrs, "ua")]
    inner_cv = inner_cv_table(list(zip(*folds)) if folds else [("–", specs_results)])
    if inner_cv:
        parts += ["## Head settings chosen by inner cross-validation", "", inner_cv]
    parts += [
        "## Learned layer weights (softmax, mean ± std over seeds)",
        "",
        layer_weight_table(specs_results),
    ]
    if figures.get("layer_weights"):
        parts += [f"![layer weights]({figures['layer_weights']})", ""]
    parts += [
        "## Cost (wall time and peak resident memory)",
        "",
        cost_table(specs_results) + ("Every figure sums the folds.\n" if folds else ""),
        "Feature extraction: backbone (or openSMILE) passes over the clips the run needed; runs sharing a backbone "
        "share nser's feature cache (or the in-process memo of (1)/(3)), so later systems and seeds mostly read "
        "(`reused`). Training includes the per-epoch validation pass and checkpoint saving; inference is prediction on "
        "every test condition. Peak RSS is the process's resident set (psutil, sampled every 50 ms) during a stage, so "
        "it includes what the process already held. Decoding, noise mixing and log-mel are in the wall time only.",
        "",
        "## Hyperparameters",
        "",
        hyperparameters(setup),
        "## Per-system results (noise type x SNR)",
        "",
    ]
    for spec, results, sizes in specs_results:
        rows = aggregate([r["rows"] for r in results])
        parts += [
            f"### ({spec.number}) {spec.title}",
            "",
            f"`{spec.key}`: {spec.kind}" + (f", `{spec.config_overrides}`" if spec.config_overrides else "")
            + (f", training `{_key_values(spec.training_overrides)}`" if spec.training_overrides else "")
            + (f", noise `{_key_values(spec.noise_overrides)}`" if spec.noise_overrides else "")
            + f"; train {sizes['train']} / validation {sizes['validation']} / test {sizes['test']} clips; "
            f"seeds {' '.join(str(r['seed']) for r in results)}" + (f". {spec.note}." if spec.note else "."),
            "",
            markdown_table(rows, "macro_f1"),
            markdown_table(rows, "ua"),
        ]
    return "\n".join(parts)


def _key_values(overrides):
    """{"weight_decay": 0.05, "speed_factors": [0.9, 1.1]} -> 'weight_decay=0.05,speed_factors=0.9 1.1'."""
    return ",".join(f"{key}={' '.join(map(str, value)) if isinstance(value, (list, tuple)) else value}"
                    for key, value in overrides.items())


def _relative(path):
    try:
        return os.path.relpath(path, ROOT)
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------------------------- main
@contextlib.contextmanager
def quiet_libraries(progress_bars):
    """Library warnings off (expected load reports, generation notices) for the run; restored afterwards, so
    calling `main` in-process (the tests do) leaves the caller's logging as it was."""
    saved = transformers.logging.get_verbosity(), datasets.logging.get_verbosity(), datasets.is_progress_bar_enabled()
    transformers.logging.set_verbosity_error()
    datasets.logging.set_verbosity_error()
    if not progress_bars:
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        transformers.logging.set_verbosity(saved[0])
        datasets.logging.set_verbosity(saved[1])
        if saved[2]:
            datasets.enable_progress_bars()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    if args.threads:
        torch.set_num_threads(args.threads)
    with quiet_libraries(progress_bars=not args.quick):
        return run(args, argv)


def plan_fold(args, name, dataset_dir, setup):
    """(fold name, setup, specs, sizes, est. minutes) of one fold (or of the corpus's own splits: name None)."""
    fold_args = argparse.Namespace(**{**vars(args), "dataset_dir": dataset_dir})
    if name:
        setup = dataclasses.replace(setup, output_dir=setup.output_dir / name)
    specs = build_specs(fold_args, Path(args.output_dir) / "data")
    sizes = {spec.key: split_sizes(spec.dataset_dir) for spec in specs}
    return name, setup, specs, sizes, estimate_minutes(specs, sizes, args.noise_types, args.augment_copies, args.epochs)


def run(args, argv):
    """Plan, run (or reuse) every system on every fold, write and print the report; returns the JSON payload."""
    check_inputs(args)
    command = "python -m bench.robustness " + shlex.join(argv)
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    bank = load_noise_bank(NoiseArguments(noise_dir=args.noise_dir))
    train_noise = [c for c in bank.split("train").categories if c not in SYNTHETIC_TRAIN_NOISE] + list(SYNTHETIC_TRAIN_NOISE)
    setup = Setup(
        model=args.model, noise_dir=args.noise_dir, language=args.language, noise_types=list(args.noise_types),
        output_dir=output_dir, feature_cache_dir=args.feature_cache_dir, epochs=args.epochs,
        augment_copies=args.augment_copies, noise_seed=args.noise_seed, egemaps_c_grid=tuple(args.egemaps_c_grid),
        show_progress=not args.quick, train_noise_types=train_noise, train_snr_low=args.train_snr_low,
        train_snr_high=args.train_snr_high,
    )
    try:  # every argument, noise file and clip checked before any model is loaded
        preflight(DataArguments(dataset_name=args.dataset_dir), setup.noise_arguments(args.snrs),
                  argparse.Namespace(output_dir=str(output_dir)))
    except PreflightError as error:
        sys.exit(str(error))
    if args.cv_column:
        sources = materialise_folds(args, output_dir / "data")
    else:
        sources = [(None, materialise_development(args, output_dir / "data") if args.development else args.dataset_dir)]
    folds = [plan_fold(args, name, dataset_dir, setup) for name, dataset_dir in sources]
    print(f"Command: `{command}`\n", flush=True)
    for name, _, specs, sizes, minutes in folds:
        print(f"Plan ({args.corpus}{f', fold {name}' if name else ''}; test noise {' '.join(args.noise_types)}; estimate "
              f"for a quiet 2-core CPU, shared caches counted once, {sum(minutes.values()):.0f} min):\n\n"
              f"{plan_table(specs, sizes, minutes, args.augment_copies)}", flush=True)
    if len(folds) > 1:
        print(f"{len(folds)} folds: {sum(sum(fold[4].values()) for fold in folds):.0f} min in all\n", flush=True)
    if args.plan_only:
        return None

    start = time.perf_counter()
    per_fold = []
    with contextlib.redirect_stdout(sys.stderr):  # Trainer prints its logs: keep stdout for the plan and the report
        for name, fold_setup, specs, sizes, _ in folds:
            results = {spec.key: run_system(fold_setup, spec, reuse=not args.no_reuse) for spec in execution_order(specs)}
            per_fold.append([(spec, results[spec.key], sizes[spec.key]) for spec in specs])
    minutes = {key: sum(fold[4][key] for fold in folds) for key in folds[0][4]}
    names = [fold[0] for fold in folds]
    specs_results = combine_folds(names, per_fold) if args.cv_column else per_fold[0]
    plan = plan_table([spec for spec, _, _ in specs_results], {spec.key: sizes for spec, _, sizes in specs_results}, minutes, args.augment_copies)
    figures = {"f1_vs_snr": "f1_vs_snr.png"}
    plot_f1_vs_snr(specs_results, args.noise_types, args.snrs, output_dir / figures["f1_vs_snr"])
    if plot_layer_weights(specs_results, output_dir / "layer_weights.png"):
        figures["layer_weights"] = "layer_weights.png"
    env = environment()
    markdown = render_markdown(args, command, setup, specs_results, plan, figures, env, (names, per_fold) if args.cv_column else None)
    wall = time.perf_counter() - start
    markdown += f"\nBenchmark wall time (this invocation): {wall / 60:.1f} min; process peak RSS (ru_maxrss) " \
                f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB.\n"
    payload = {
        "command": command, "environment": env, "setup": setup.signature(), "wall_s": wall, "folds": names if args.cv_column else None,
        "systems": [
            {"spec": vars(spec), "sizes": sz, "estimated_minutes": minutes[spec.key], "results": res,
             "aggregated": aggregate([r["rows"] for r in res]),
             "summary": {metric: {str(k): v for k, v in snr_summary([r["rows"] for r in res], metric, args.noise_types, args.snrs).items()}
                         for metric in ("macro_f1", "ua")},
             "cost": cost_rows(spec, res)}
            for spec, res, sz in specs_results
        ],
    }
    (output_dir / "robustness.json").write_text(json.dumps(payload, indent=1, default=str))
    (output_dir / "robustness.md").write_text(markdown)
    print(markdown)
    print(f"Wrote {output_dir / 'robustness.md'}, robustness.json and {', '.join(figures.values())}\nCommand: {command}")
    return payload


if __name__ == "__main__":
    main()
