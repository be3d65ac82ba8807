"""One experiment: load the corpus and noise, train on every fold, evaluate clean and every noisy condition.

`run_nser.py` is a command line over `run_experiment`; `bench/` calls it with other arguments.
"""

import contextlib
import copy
import dataclasses
import json
import logging
import os
from pathlib import Path

import numpy as np
from datasets import concatenate_datasets
from transformers import EarlyStoppingCallback
from transformers.trainer_utils import SaveStrategy

from nser.atomic import write_text_atomic
from nser.augment import CLEAN, NoiseAugmentation, NoiseEpochCallback, condition_name, make_noisy_testset
from nser.data import all_groups_splits, cross_validation_folds, limit, load_corpus, prepare_columns, speaker_independent_splits
from nser.ensemble import TEST_LOGITS_FILE
from nser.feature_cache import cache_layer_states
from nser.features import PaddingCollator, make_feature_function
from nser.inner_cv import best_epoch_score, combined_overrides, parse_candidate, select_candidate, with_training_overrides
from nser.lora import add_encoder_lora, merge_encoder_lora
from nser.metrics import make_compute_metrics
from nser.noise_bank import NoiseBank
from nser.report import aggregate
from nser.resume import discard_interrupted_save, last_complete_checkpoint
from nser.speaker_norm import normalize_per_speaker
from nser.training import (
    NserTrainer, build_model, evaluate_conditions, fit_feature_statistics, inverse_frequency_weights, parse_config_overrides,
)

logger = logging.getLogger(__name__)

FOLD_RESULTS = "fold_results.json"
INNER_CV_RESULTS = "inner_cv.json"


def check_output_dir(output_dir, overwrite):
    """Refuse to write into a non-empty folder unless it holds checkpoints to resume or `overwrite` is set."""
    path = Path(output_dir)
    if not path.exists() or not any(path.iterdir()):
        return
    resumable = list(path.glob("checkpoint-*")) + list(path.glob("*/checkpoint-*"))
    interrupted = not overwrite and discard_interrupted_save(path)  # killed while saving: not a finished run
    finished = (path / "report" / "results.json").exists()
    if overwrite or interrupted or (resumable and not finished):
        if (resumable or interrupted) and not overwrite:
            logger.warning("resuming the interrupted run in %s", path)
        return
    raise FileExistsError(
        f"output folder {path} is not empty ({'a finished run' if finished else 'no checkpoint to resume'}); "
        "choose another --output_dir or pass --overwrite_output_dir true"
    )


def load_noise_bank(noise_args):
    sources = {"noise_dir": noise_args.noise_dir, "noise_csv": noise_args.noise_csv, "noise_dataset": noise_args.noise_dataset}
    given = {name: value for name, value in sources.items() if value}
    if len(given) > 1:
        raise ValueError(f"give at most one of --noise_dir, --noise_csv, --noise_dataset; got {given}")
    if noise_args.noise_dir:
        return NoiseBank.from_folder(noise_args.noise_dir, seed=noise_args.noise_seed)
    if noise_args.noise_csv:
        return NoiseBank.from_csv(noise_args.noise_csv)
    if noise_args.noise_dataset:
        return NoiseBank.from_dataset(noise_args.noise_dataset)
    logger.warning("no noise source given: only white and pink noise are available")
    return NoiseBank()


def _noise_types(requested, bank, default_synthetic):
    recorded = [c for c in bank.categories if c not in ("white", "pink")]
    return list(requested) if requested else recorded + list(default_synthetic)


class _NoisyFeatures:
    """Noise augmentation then log-mel, in one batched map (no re-encoding of the noisy audio in between)."""

    def __init__(self, augmentation, featurize):
        self.augmentation, self.featurize = augmentation, featurize

    def __call__(self, batch, indices):
        return self.featurize(self.augmentation(batch, indices) if self.augmentation else batch)


class NoisyViews:
    """How each split is heard, for every system of an experiment (nser's trainer and the benchmark's
    baselines alike): training and validation noise from the bank's train files, test noise from its test files.

    `train()`: [(name, dataset, augmentation or None)], one fixed draw per `augment_copies` (clean once when
    training without noise), speed-perturbed when `speed_factors` are given. `validation()`: one fixed draw of
    training-type noise (seed + 1), never speed-perturbed, so model selection never hears a test noise file and
    hears the voices as recorded. `test()`: [(condition, noise_type, snr_db or None, dataset)], clean first,
    then every noise type x SNR, the same bytes on every run."""

    def __init__(self, splits, bank, noise_args, audio_column="audio", num_proc=None):
        self.splits, self.bank, self.noise_args = splits, bank, noise_args
        self.audio_column, self.num_proc = audio_column, num_proc

    def augmentation(self, seed_offset=0, perturb_speed=True):
        """The training noise (None when training on clean speech), with `speed_factors` when `perturb_speed`."""
        args = self.noise_args
        if not args.train_with_noise:
            return None
        return NoiseAugmentation(
            self.bank.split("train"), _noise_types(args.train_noise_types, self.bank, ("white", "pink")),
            snr_range=(args.train_snr_low, args.train_snr_high), clean_probability=args.clean_probability,
            seed=args.noise_seed + seed_offset, audio_column=self.audio_column,
            speed_factors=(args.speed_factors or ()) if perturb_speed else (),
        )

    def train(self):
        views = []
        for copy_index in range(self.noise_args.augment_copies if self.noise_args.train_with_noise else 1):
            augmentation = self.augmentation()
            if augmentation:
                augmentation.set_epoch(copy_index)
            name = f"train noisy copy {copy_index}" if augmentation else "train clean"
            views.append((name, self.splits["train"], augmentation))
        return views

    def validation(self):
        augmentation = self.augmentation(seed_offset=1, perturb_speed=False)
        return f"validation {'noisy' if augmentation else 'clean'}", self.splits["validation"], augmentation

    def test(self):
        if "test" not in self.splits:  # a final model trained on every group: nothing is held out
            return []
        conditions = [(CLEAN, CLEAN, None, self.splits["test"])]
        for noise_type in _noise_types(self.noise_args.test_noise_types, self.bank, ("white",)):
            for snr_db in self.noise_args.test_snrs:  # one condition at a time: a whole noisy corpus would not fit
                noisy = make_noisy_testset(
                    self.splits["test"], self.bank, [snr_db], [noise_type], seed=self.noise_args.noise_seed,
                    audio_column=self.audio_column, num_proc=self.num_proc,
                )
                conditions.append((condition_name(noise_type, snr_db), noise_type, float(snr_db), noisy))
        return conditions


def untimed(name, clips):
    """The default `stage` hook: does nothing."""
    return contextlib.nullcontext()


def speaker_index(train_split, column):
    """{speaker: id} over the training split's speakers (sorted), for speaker-adversarial training."""
    if column not in train_split.column_names:
        raise ValueError(f"speaker_adversarial_weight > 0 needs each training clip's speaker: --speaker_column_name "
                         f"{column!r} is not a column; columns: {train_split.column_names}")
    speakers = sorted(set(train_split[column]))
    if len(speakers) < 2:
        raise ValueError(f"speaker_adversarial_weight > 0 needs at least two training speakers in {column!r}, got {speakers}")
    return {speaker: i for i, speaker in enumerate(speakers)}


def with_speaker_count(model_args, speakers):
    """`model_args` whose config overrides also set `num_speakers`, the count of `speakers` (speaker-adversarial training)."""
    overrides = ",".join(filter(None, [model_args.config_overrides, f"num_speakers={len(speakers)}"]))
    return dataclasses.replace(model_args, config_overrides=overrides)


class Fold:
    """The datasets of one train/validation/test split, featurised (and cached) for one model. `speakers`: the
    {speaker: id} map that adds `speaker_ids` to the training set (speaker-adversarial training), or None."""

    def __init__(self, splits, model, feature_extractor, bank, data_args, noise_args, training_args, cache, stage=untimed,
                 speakers=None):
        self.data_args, self.noise_args, self.training_args = data_args, noise_args, training_args
        self.model, self.cache, self.stage, self.speakers = model, cache, stage, speakers
        self.featurize = make_feature_function(feature_extractor, data_args.audio_column_name, data_args.label_column_name)
        seed = training_args.seed
        limits = {"train": data_args.max_train_samples, "validation": data_args.max_eval_samples, "test": data_args.max_test_samples}
        limited = {split: limit(splits[split], limits[split], seed) for split in limits if split in splits}
        self.views = NoisyViews(limited, bank, noise_args, data_args.audio_column_name, data_args.preprocessing_num_workers)

    def _map(self, ds, augmentation, desc, enrolment_clips=None):
        with self.training_args.main_process_first(desc=desc):
            features = ds.map(
                _NoisyFeatures(augmentation, self.featurize), batched=True, batch_size=16, with_indices=True,
                remove_columns=ds.column_names, num_proc=self.data_args.preprocessing_num_workers, desc=desc,
            )
            if not self.cache:
                return features
            with self.stage("extraction", len(features)):
                states = cache_layer_states(
                    features, self.model, os.path.expanduser(self.data_args.feature_cache_dir),
                    batch_size=self.training_args.per_device_eval_batch_size, dtype=self.data_args.feature_cache_dtype,
                    desc=f"{desc}: backbone states",
                )
            if self.data_args.speaker_normalization:
                states = normalize_per_speaker(states, ds[self.data_args.speaker_column_name], max_clips=enrolment_clips)
            return states.with_format("numpy")

    def _speaker_ids(self, speakers):
        return [self.speakers[speaker] for speaker in speakers]

    def train_dataset(self):
        """Cached: `augment_copies` fixed noisy draws per example. Otherwise a new draw every epoch."""
        column = self.data_args.speaker_column_name
        if self.cache or not self.noise_args.train_with_noise:
            views = [self._map(ds, augmentation, name) for name, ds, augmentation in self.views.train()]
            if self.speakers:
                ids = self._speaker_ids(self.views.splits["train"][column])
                views = [view.add_column("speaker_ids", ids) for view in views]
            return concatenate_datasets(views), None
        augmentation = self.views.augmentation()
        train = self.views.splits["train"]
        ids = train.add_column("id", [str(i) for i in range(len(train))])

        def transform(batch):
            features = self.featurize(augmentation(batch))
            if self.speakers:
                features["speaker_ids"] = self._speaker_ids(batch[column])
            return features

        return ids.with_transform(transform), augmentation

    def validation_dataset(self):
        name, ds, augmentation = self.views.validation()
        return self._map(ds, augmentation, name)

    def test_conditions(self):
        """[(name, noise_type, snr_db, featurised dataset)] for `evaluate_conditions`."""
        clips = self.data_args.speaker_normalization_clips
        return [(name, noise_type, snr_db, self._map(ds, None, f"test {name}", clips))
                for name, noise_type, snr_db, ds in self.views.test()]


def head_trainer(model, args, train_dataset, eval_dataset, label_names, feature_extractor, class_weights=None, callbacks=(),
                 fit_statistics=True):
    """A NserTrainer for `model`, its feature standardisation (when configured and `fit_statistics`) fitted on
    `train_dataset` first."""
    if fit_statistics and model.config.standardize_features:
        fit_feature_statistics(model, train_dataset, PaddingCollator(), args.per_device_eval_batch_size)
    return NserTrainer(
        model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
        data_collator=PaddingCollator(), compute_metrics=make_compute_metrics(label_names),
        processing_class=feature_extractor, callbacks=list(callbacks), class_weights=class_weights,
    )


def choose_by_inner_cv(fold, train_dataset, label_names, model_args, data_args, training_args, resume=True):
    """The `--inner_cv_candidates` entry with the best held-out macro-F1 in an inner cross-validation over the fold's
    training groups (`nser.inner_cv`), on the fold's cached training and validation states; the scores go to
    `<output_dir>/inner_cv.json`, whose choice a resumed run reuses when the candidates are the same. Inner runs
    save no checkpoint and stop early never: each is scored at its best validation epoch. With
    `--class_weighted_loss`, each inner run weighs the classes by its own training rows, not the whole fold's."""
    column = data_args.cv_column or data_args.speaker_column_name
    candidates = [parse_candidate(text) for text in data_args.inner_cv_candidates]
    output = Path(training_args.output_dir) / INNER_CV_RESULTS
    if resume and output.is_file():
        record = json.loads(output.read_text())
        if record.get("candidates") == [str(c) for c in candidates] and record.get("group_column") == column:
            logger.info("inner CV already done (%s): %s", output, record["chosen"])
            return candidates[record["candidates"].index(record["chosen"])]
    splits = fold.views.splits
    if column not in splits["train"].column_names:
        raise ValueError(f"--inner_cv_candidates holds out groups of {column!r} (--cv_column, else --speaker_column_name), "
                         f"which is not a column; columns: {splits['train'].column_names}")
    validation = fold.validation_dataset()
    heldout_pool = concatenate_datasets([train_dataset, validation]).with_format("numpy")
    train_labels = np.asarray(train_dataset["labels"])

    def score(candidate, train_rows, validation_rows, heldout_rows):
        model = build_model(model_args.model_name_or_path, label_names,
                            combined_overrides(model_args.config_overrides, candidate), model_args.freeze_backbone)
        args = with_training_overrides(training_args, candidate)
        args.output_dir = os.path.join(training_args.output_dir, "inner-cv")
        args.save_strategy, args.load_best_model_at_end = SaveStrategy.NO, False
        args.metric_for_best_model = "validation_macro_f1"
        eval_sets = {"validation": validation.select(validation_rows), "heldout": heldout_pool.select(heldout_rows)}
        class_weights = None
        if model_args.class_weighted_loss:
            class_weights = inverse_frequency_weights(train_labels[train_rows], len(label_names))
        trainer = head_trainer(model, args, train_dataset.select(train_rows), eval_sets, label_names, None, class_weights)
        trainer.train()
        return best_epoch_score(trainer.state.log_history, "eval_validation_macro_f1", "eval_heldout_macro_f1")

    copies = len(train_dataset) // len(splits["train"])  # the cached training set is `copies` views of the split
    chosen, record = select_candidate(candidates, list(splits["train"][column]) * copies, splits["validation"][column],
                                      data_args.inner_cv_folds, score)
    if training_args.process_index == 0:
        output.parent.mkdir(parents=True, exist_ok=True)
        record = {"group_column": column, "candidates": [str(c) for c in candidates], **record}
        write_text_atomic(output, json.dumps(record, indent=1))
    return chosen


def training_callbacks(augmentation, model_args):
    """A new noisy draw every epoch (uncached training) and early stopping, when asked for."""
    callbacks = [NoiseEpochCallback(augmentation)] if augmentation else []
    if model_args.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(model_args.early_stopping_patience))
    return callbacks


def train_resuming(trainer, resume, stage=untimed):
    """`trainer.train()` from the last complete checkpoint in its output folder when `resume`, timed as "training"."""
    output_dir = trainer.args.output_dir
    last_checkpoint = last_complete_checkpoint(output_dir) if resume and os.path.isdir(output_dir) else None
    with stage("training", len(trainer.train_dataset)):
        trainer.train(resume_from_checkpoint=last_checkpoint)


def check_lora_after_head(model_args, data_args, training_args):
    """--lora_after_head trains its first stage from cached states and its second without: refuse what needs the
    cache in both (speaker normalisation, mixup) and a missing --use_lora."""
    problems = []
    if not model_args.use_lora:
        problems.append("--lora_after_head needs --use_lora true")
    if data_args.speaker_normalization:
        problems.append("--lora_after_head cannot be combined with --speaker_normalization (the LoRA stage has no cached "
                        "statistics to normalise)")
    if getattr(training_args, "mixup_alpha", 0.0) > 0:
        problems.append("--lora_after_head cannot be combined with --mixup_alpha (the LoRA stage has no cached statistics "
                        "to mix)")
    if not data_args.cache_features:
        problems.append("--lora_after_head trains the head on cached backbone states first: --cache_features true")
    if problems:
        raise ValueError("; ".join(problems))


def lora_stage(trained, fold, splits, feature_extractor, bank, model_args, data_args, noise_args, label_names,
               class_weights, resume, stage):
    """The second stage of --lora_after_head (linear probing, then fine-tuning): LoRA on the encoder of the trained
    model (its best epoch, its feature statistics kept) and the head trained together at --lora_learning_rate for
    --lora_epochs, a new noisy draw every epoch, in `<output_dir>/lora`. Starting from a trained head rather than a
    random one distorts the pretrained features less (Kumar et al., ICLR 2022). Returns (trainer, fold); the
    fold's test conditions now run the adapted encoder."""
    model = trained.model
    add_encoder_lora(model, model_args.lora_r, model_args.lora_alpha, model_args.lora_dropout, model_args.lora_target_modules)
    args = copy.deepcopy(trained.args)
    args.output_dir = os.path.join(args.output_dir, "lora")
    args.learning_rate, args.num_train_epochs = model_args.lora_learning_rate, model_args.lora_epochs
    fold = Fold(splits, model, feature_extractor, bank, data_args, noise_args, args, cache=False, stage=stage,
                speakers=fold.speakers)
    train_dataset, augmentation = fold.train_dataset()
    args.remove_unused_columns = augmentation is None
    trainer = head_trainer(model, args, train_dataset, fold.validation_dataset(), label_names, feature_extractor,
                           class_weights, training_callbacks(augmentation, model_args), fit_statistics=False)
    train_resuming(trainer, resume, stage)
    return trainer, fold


def train_fold(splits, label_names, bank, model_args, data_args, noise_args, training_args, resume=True, stage=untimed,
               save_logits=False):
    """Train one model on one split (resuming its last checkpoint when `resume`); return (rows, trainer, extractor).
    `save_logits`: also write the test logits of every condition to `<output_dir>/test_logits.npz`.

    `stage(name, clips)`, when given, returns a context manager wrapped around each stage: "extraction" (backbone
    states written to or read from the feature cache, once per split and condition), "training" and
    "inference" (every test condition); benchmarks use it to time them."""
    speakers = None
    if parse_config_overrides(model_args.config_overrides).get("speaker_adversarial_weight", 0) > 0:
        speakers = speaker_index(splits["train"], data_args.speaker_column_name)
        model_args = with_speaker_count(model_args, speakers)
    if model_args.lora_after_head:
        check_lora_after_head(model_args, data_args, training_args)
    model = build_model(model_args.model_name_or_path, label_names, model_args.config_overrides, model_args.freeze_backbone)
    feature_extractor = model.build_feature_extractor()
    if model_args.use_lora and not model_args.lora_after_head:
        add_encoder_lora(model, model_args.lora_r, model_args.lora_alpha, model_args.lora_dropout, model_args.lora_target_modules)
    trainable_backbone = any(p.requires_grad for p in model.backbone.parameters())
    cache = data_args.cache_features and not trainable_backbone
    if data_args.cache_features and trainable_backbone:
        logger.warning("backbone is trainable (LoRA or unfrozen): backbone states are not cached")
    if data_args.speaker_normalization:
        if not (cache and model.config.pool_before_fusion):
            raise ValueError("--speaker_normalization needs cached pooled statistics: a frozen backbone, --cache_features "
                             "true and pool_before_fusion=true")
        logger.warning("speaker normalisation (transductive): each test speaker is normalised with its own clips; "
                       "single-clip inference (pipeline, handler, demo) does not do this")
    if getattr(training_args, "mixup_alpha", 0.0) > 0:
        if not (cache and model.config.pool_before_fusion):
            raise ValueError("--mixup_alpha mixes cached pooled statistics: it needs a frozen backbone, --cache_features "
                             "true and pool_before_fusion=true")
        if model.config.speaker_adversarial_weight > 0:
            raise ValueError("--mixup_alpha cannot be combined with speaker_adversarial_weight > 0 (speaker labels do not mix)")
    fold = Fold(splits, model, feature_extractor, bank, data_args, noise_args, training_args, cache, stage, speakers)
    train_dataset, augmentation = fold.train_dataset()
    args = copy.deepcopy(training_args)
    args.remove_unused_columns = augmentation is None  # a transform needs its raw columns
    callbacks = training_callbacks(augmentation, model_args)
    class_weights = None
    if model_args.class_weighted_loss:
        class_weights = inverse_frequency_weights(fold.views.splits["train"][data_args.label_column_name], len(label_names))
    if data_args.inner_cv_candidates:
        if not cache:
            raise ValueError("--inner_cv_candidates needs cached backbone states: a frozen backbone and --cache_features true")
        with stage("training", 0):  # the candidates' training counts as the fold's training time
            candidate = choose_by_inner_cv(fold, train_dataset, label_names, model_args, data_args, args, resume)
        model = build_model(model_args.model_name_or_path, label_names,
                            combined_overrides(model_args.config_overrides, candidate), model_args.freeze_backbone)
        args = with_training_overrides(args, candidate)
    trainer = head_trainer(model, args, train_dataset, fold.validation_dataset(), label_names, feature_extractor,
                           class_weights, callbacks)
    train_resuming(trainer, resume, stage)
    if model_args.lora_after_head:
        trainer, fold = lora_stage(trainer, fold, splits, feature_extractor, bank, model_args, data_args, noise_args,
                                   label_names, class_weights, resume, stage)
    trainer.args.remove_unused_columns = True
    conditions = fold.test_conditions()
    with stage("inference", sum(len(ds) for *_, ds in conditions)):
        logits_file = os.path.join(args.output_dir, TEST_LOGITS_FILE) if save_logits else None
        rows = evaluate_conditions(trainer, conditions, label_names, logits_file)
    merge_encoder_lora(trainer.model)
    return rows, trainer, feature_extractor


def run_experiment(model_args, data_args, noise_args, training_args, run_args, stage=untimed):
    """Train and evaluate (one split or leave-one-group-out folds). Returns a dict with `rows` (aggregated over
    folds when cross-validating), `folds` (per-fold rows), `model` and `label_names`. `stage`: see `train_fold`."""
    check_output_dir(training_args.output_dir, run_args.overwrite_output_dir)
    corpus = load_corpus(data_args.dataset_name, data_args.dataset_config_name, data_args.audio_folder, data_args.manifest_csv)
    corpus, label_names = prepare_columns(corpus, data_args.audio_column_name, data_args.label_column_name, data_args.emotion_labels)
    bank = load_noise_bank(noise_args)
    if data_args.cv_column:
        folds = cross_validation_folds(
            corpus, data_args.cv_column, data_args.cv_folds, data_args.cv_validation, data_args.validation_column,
            data_args.validation_groups, data_args.validation_fraction, data_args.label_column_name,
        )
    else:
        splits = speaker_independent_splits(
            corpus, data_args.speaker_column_name, data_args.test_groups, data_args.validation_groups,
            data_args.validation_column,
        )
        folds = [(None, splits)]
    per_fold, trainer, feature_extractor = [], None, None
    for name, splits in folds:
        fold_args = copy.deepcopy(training_args)
        if name:
            fold_args.output_dir = os.path.join(training_args.output_dir, name)
        done = Path(fold_args.output_dir) / FOLD_RESULTS
        # The last fold is resumed (its last checkpoint), never skipped: its model makes the report's layer weights
        # and, for a single split, the model folder.
        if done.exists() and not run_args.overwrite_output_dir and name != folds[-1][0]:
            logger.info("fold %s already finished: reusing %s", name, done)
            per_fold.append(json.loads(done.read_text()))
            continue
        rows, trainer, feature_extractor = train_fold(
            splits, label_names, bank, model_args, data_args, noise_args, fold_args,
            resume=not run_args.overwrite_output_dir, stage=stage, save_logits=run_args.save_test_logits,
        )
        if trainer.is_world_process_zero():
            done.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(done, json.dumps(rows, indent=1))
        per_fold.append(rows)
    final_trainer = None
    if data_args.cv_column and run_args.train_final_model:
        splits = all_groups_splits(corpus, data_args.cv_column, data_args.validation_column, data_args.validation_groups,
                                   data_args.validation_fraction, data_args.label_column_name)
        final_args = copy.deepcopy(training_args)
        final_args.output_dir = os.path.join(training_args.output_dir, "final-model")
        logger.info("training the final model on every %s (%d clips), validation %d clips", data_args.cv_column,
                    len(splits["train"]), len(splits["validation"]))
        _, final_trainer, feature_extractor = train_fold(
            splits, label_names, bank, model_args, data_args, noise_args, final_args,
            resume=not run_args.overwrite_output_dir, stage=stage,
        )
        trainer = trainer or final_trainer
    if bank is not None and trainer is not None and trainer.is_world_process_zero():
        bank.save_split(Path(training_args.output_dir) / "noise_split.csv")
    rows = aggregate(per_fold) if len(per_fold) > 1 else per_fold[0]
    return {"rows": rows, "folds": per_fold, "trainer": trainer, "final_trainer": final_trainer,
            "feature_extractor": feature_extractor, "label_names": label_names, "fold_names": [name for name, _ in folds]}
