"""Does Whisper's standard 30 s padded window give better emotion features than nser's real-length encoder?

nser runs the encoder on each clip's real length (positional embeddings sliced, `pad_to_30s=false`): about 20x
faster on 3 s clips than Whisper's 30 s window, and exactly Whisper's states on a full window. On a short clip the
real frames' states differ, though: in the padded window they also attend to 27 s of padding, as in Whisper's
training and in transformers' `WhisperForAudioClassification`. This script measures what that difference is worth to
the (2p) linear probe on a prepared corpus: every clip's per-layer mean and std over its real frames from both passes
(cached like any nser backbone state), StandardScaler + logistic regression with C chosen by speaker-grouped inner
cross-validation, under the benchmark's speaker cross-validation (every other speaker trains), on the full statistics
and on the layer means alone. Clean training and clean test only: the padded pass costs about 1 s per clip on a
2-core CPU, so the noisy protocol of `bench.robustness` (about 30 copies of every clip) is hours there.

    python -m bench.padded_window --dataset_dir data/casia
    python -m bench.padded_window --dataset_dir data/ravdess --cv_folds 3
"""

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from datasets import DatasetDict, concatenate_datasets, load_from_disk

from bench import WHISPER_BASE
from bench.systems import _macro_f1, fit_probe, grouped_c_search, probe_features
from nser.data import fold_test_groups
from nser.feature_cache import cache_layer_states
from nser.features import make_feature_function
from nser.training import build_model

PASSES = {"real length (nser)": "false", "30 s padded window (Whisper)": "true"}
STATISTICS = ("mean_std", "mean")


def layer_statistics(corpus, model_path, pad, cache_dir, label_column):
    """(clips, layers, 2, d_model) per-layer mean and std over real frames, and the seconds it took (about 1 s when
    read from the cache)."""
    model = build_model(model_path, corpus.features[label_column].names, f"use_decoder=false,pad_to_30s={pad}")
    features = corpus.map(make_feature_function(model.build_feature_extractor(), label_column=label_column),
                          batched=True, batch_size=16, remove_columns=corpus.column_names, desc="log-mel")
    start = time.perf_counter()
    states = cache_layer_states(features, model, cache_dir, desc=f"pad_to_30s={pad}: backbone states")
    return np.asarray(states.with_format("numpy")["encoder_layer_stats"], dtype=np.float32), time.perf_counter() - start


def probe_scores(x, labels, groups, blocks, c_grid, inner_folds):
    """Macro-F1 (%) of each fold's test groups, and the C each fold chose."""
    scores, chosen = [], []
    for tested in blocks:
        test = np.isin(groups, tested)
        c, _ = grouped_c_search(x[~test], labels[~test], groups[~test], c_grid, inner_folds)
        probe = fit_probe(x[~test], labels[~test], c)
        scores.append(100 * _macro_f1(labels[test], probe.predict(x[test])))
        chosen.append(c)
    return scores, chosen


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset_dir", required=True, help="a corpus prepared by dataset_scripts (load_from_disk)")
    parser.add_argument("--model", default=str(WHISPER_BASE), help="Whisper checkpoint")
    parser.add_argument("--cv_column", default="speaker")
    parser.add_argument("--cv_folds", type=int, default=None, help="K consecutive blocks of groups (default: one per group)")
    parser.add_argument("--label_column", default="label")
    parser.add_argument("--c_grid", type=float, nargs="+", default=[1e-5, 1e-4, 1e-3, 1e-2, 1e-1])
    parser.add_argument("--inner_folds", type=int, default=3)
    parser.add_argument("--feature_cache_dir", default="~/.cache/nser/features")
    args = parser.parse_args(argv)
    if not any(Path(args.dataset_dir, name).is_file() for name in ("dataset_dict.json", "state.json")):
        parser.error(f"--dataset_dir {args.dataset_dir}: not a dataset saved by save_to_disk")
    return args


def main(argv=None):
    args = parse_args(argv)
    loaded = load_from_disk(args.dataset_dir)
    corpus = concatenate_datasets(list(loaded.values())) if isinstance(loaded, DatasetDict) else loaded
    if args.cv_column not in corpus.column_names:
        raise SystemExit(f"--cv_column {args.cv_column!r} not found; columns: {corpus.column_names}")
    if not hasattr(corpus.features.get(args.label_column), "names"):
        raise SystemExit(f"--label_column {args.label_column!r}: not a ClassLabel column of {args.dataset_dir}; "
                         f"columns: {corpus.column_names}")
    labels, groups = np.asarray(corpus[args.label_column]), np.asarray([str(g) for g in corpus[args.cv_column]])
    try:
        blocks = fold_test_groups(groups, args.cv_folds)  # as bench.robustness's folds
    except ValueError as error:  # too many or too few folds for the groups: refused before any Whisper pass
        raise SystemExit(str(error)) from None
    cache_dir = os.path.expanduser(args.feature_cache_dir)
    command = " ".join(["python -m bench.padded_window", *(sys.argv[1:] if argv is None else argv)])
    print(f"Command: `{command}`\n")
    print(f"- {args.dataset_dir}: {len(corpus)} clips, {len(blocks)} folds by {args.cv_column}, clean training and test; "
          f"{args.model}\n")
    print("| encoder pass | statistics | macro-F1 % (mean over folds) | per fold | C per fold | extraction s |")
    print("|---|---|---:|---|---|---:|")
    for name, pad in PASSES.items():
        stats, seconds = layer_statistics(corpus, args.model, pad, cache_dir, args.label_column)
        for statistics in STATISTICS:
            x = probe_features(stats, statistics)
            scores, chosen = probe_scores(x, labels, groups, blocks, args.c_grid, args.inner_folds)
            per_fold = ", ".join(f"{'+'.join(b)} {s:.1f}" for b, s in zip(blocks, scores))
            print(f"| {name} | {statistics} | {np.mean(scores):.1f} | {per_fold} | {', '.join(f'{c:g}' for c in chosen)} "
                  f"| {seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
