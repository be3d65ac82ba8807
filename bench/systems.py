"""The systems that `bench/robustness.py` compares, each one small function with the same contract:

    run_<kind>(setup, spec, seeds) -> {seed: {"rows": [...], "layer_weights": ..., "stages": ..., ...}}

`rows` are `nser.metrics.classification_metrics` rows (plus `condition`, `noise_type`, `snr_db`, `num_examples`),
the format `nser.report.aggregate` and `markdown_table` take. Every system sees the same speaker-independent
splits, the same training noise and the same noisy test audio:

- training noise: `nser.augment.NoiseAugmentation` on the bank's *train* files, `augment_copies` fixed draws per
  example (seed `noise_seed`, draw `i` = epoch `i`), validation with one draw of training-type noise (seed
  `noise_seed + 1`): what `nser.experiment` does with cached states, so the audio is the same sample for sample;
- test audio: `nser.augment.make_noisy_testset` per noise type and SNR (test noise files, seed `noise_seed`),
  one condition at a time, as `nser.experiment` builds it.

Kinds:
- `egemaps`: openSMILE eGeMAPSv02 functionals (88 per clip), standardised, scikit-learn logistic regression;
  C chosen on the validation speaker by macro-F1. Convex and deterministic: one run stands for every seed.
- `wfac`: transformers' `WhisperForAudioClassification(use_weighted_layer_sum=True)`, frozen encoder on the 30 s
  padded input. Its head (softmax layer weights -> projector -> mean over the 1500 positions -> classifier) is
  linear up to the classifier, so it is trained exactly on each layer's time-mean (`pooled_layer_means`),
  computed once; `wfac_logits` equals the model's own logits (checked by tests/test_bench_robustness.py).
- `probe`: the strongest simple baseline: every encoder layer's mean and std over real frames (nser's real-length
  encoder, read from nser's feature cache), StandardScaler, logistic regression; C chosen by speaker-grouped
  cross-validation on the training speakers only. Convex and deterministic: one run stands for every seed.
- `nser`: `nser.experiment.run_experiment` with `config_overrides` (feature cache, model selection on the
  validation clips by macro-F1, the library's noise and conditions).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import hashlib
import json
import logging
import math
import shutil
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil
import torch
import transformers
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from transformers import (
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForAudioClassification,
    get_linear_schedule_with_warmup,
    set_seed,
)

from nser.arguments import DataArguments, ModelArguments, NoiseArguments, NserTrainingArguments, RunArguments
from nser.audio import SAMPLING_RATE, waveform_from_value
from nser.data import load_corpus, prepare_columns, speaker_independent_splits
from nser.ensemble import TEST_LOGITS_FILE, ensemble_rows, save_test_logits
from nser.experiment import INNER_CV_RESULTS, Fold, NoisyViews, load_noise_bank, run_experiment
from nser.metrics import classification_metrics
from nser.training import build_model

logger = logging.getLogger(__name__)

SYNTHETIC_TRAIN_NOISE = ("white", "pink")  # nser's default training noise besides the recorded categories
# The probe's features: every encoder layer's mean and std over real frames, as nser's feature cache stores them.
PROBE_OVERRIDES = "use_decoder=false,pool_before_fusion=true,pooling=mean_std,standardize_features=false"


# --------------------------------------------------------------------------------------------- what every run shares
@dataclass
class Setup:
    """Settings shared by every system (fixed in the script or by flags; none is chosen on test data)."""

    model: str
    noise_dir: str
    language: str
    noise_types: list[str]
    output_dir: Path
    feature_cache_dir: str
    epochs: int = 8
    learning_rate: float = 1e-3
    warmup_steps: int = 20
    batch_size: int = 16
    augment_copies: int = 2
    train_snr_low: float = 0.0
    train_snr_high: float = 20.0
    clean_probability: float = 0.2
    noise_seed: int = 0
    egemaps_c_grid: tuple[float, ...] = (0.001, 0.01, 0.1, 1.0, 10.0)
    show_progress: bool = True
    train_noise_types: list[str] | None = None  # filled from the noise bank: recorded categories + white, pink
    memo: dict = field(default_factory=dict, repr=False)  # in-process feature memo of the egemaps and wfac kinds

    def signature(self) -> dict:
        """What changes a result: goes into each run's reuse check."""
        keys = ("model", "noise_dir", "language", "noise_types", "epochs", "learning_rate", "warmup_steps",
                "batch_size", "augment_copies", "train_snr_low", "train_snr_high", "clean_probability",
                "noise_seed", "egemaps_c_grid", "train_noise_types")
        return {key: getattr(self, key) for key in keys}

    def noise_arguments(self, snrs, train_with_noise=True, **overrides) -> NoiseArguments:
        """`overrides`: a system's `noise_overrides` (NoiseArguments values, e.g. speed_factors)."""
        return NoiseArguments(
            noise_dir=self.noise_dir, train_noise_types=list(self.train_noise_types),
            test_noise_types=list(self.noise_types), test_snrs=[float(s) for s in snrs],
            train_snr_low=self.train_snr_low, train_snr_high=self.train_snr_high,
            clean_probability=self.clean_probability, augment_copies=self.augment_copies,
            train_with_noise=train_with_noise, noise_seed=self.noise_seed, **overrides,
        )

    def training_arguments(self, output_dir, seed, **overrides) -> NserTrainingArguments:
        """configs/main_job.json's recipe: AdamW lr 1e-3, 20 warm-up steps then linear decay, batch 16, an
        evaluation per epoch on the validation clips, the best epoch by macro-F1 kept; `overrides` (a system's
        `training_overrides`, e.g. weight_decay) replace any of these."""
        settings = dict(
            output_dir=str(output_dir), seed=seed, num_train_epochs=self.epochs, learning_rate=self.learning_rate,
            warmup_steps=self.warmup_steps, per_device_train_batch_size=self.batch_size,
            per_device_eval_batch_size=self.batch_size, eval_strategy="epoch", save_strategy="epoch",
            save_total_limit=1, save_only_model=True, load_best_model_at_end=True, metric_for_best_model="macro_f1",
            greater_is_better=True, logging_strategy="epoch", use_cpu=True, report_to="none",
            disable_tqdm=not self.show_progress,
        )
        return NserTrainingArguments(**{**settings, **overrides})


@dataclass
class SystemSpec:
    """One row of the comparison: which system, on which data, under which conditions."""

    key: str  # folder name under the output folder and key in robustness.json
    number: str  # the system's number in issue 5 ("1" .. "6", "4*" for a matched control)
    title: str
    kind: str  # a SYSTEM_FUNCTIONS key: "egemaps", "wfac", "nser", "probe" or "fusion"
    dataset_dir: str  # the corpus folder (the prepared corpus or a fixed stratified subset of it)
    subset: dict  # {"train": n or None (all), "validation": ..., "test": ...}
    snrs: list[float]
    seeds: list[int]
    train_with_noise: bool = True
    config_overrides: str | None = None
    training_overrides: dict = field(default_factory=dict)  # TrainingArguments values (weight_decay, epochs, ...)
    noise_overrides: dict = field(default_factory=dict)  # NoiseArguments values (speed_factors, ...)
    speaker_normalization: bool = False  # transductive: test speakers normalised with their own clips
    options: dict = field(default_factory=dict)  # kind-specific settings, e.g. the probe's C grid
    learned_layer_weights: bool = False
    note: str = ""

    @property
    def model_arguments(self) -> dict:
        """ModelArguments values of an nser system (e.g. use_lora), from `options`."""
        return self.options.get("model_arguments", {})

    def signature(self) -> dict:
        keys = ("kind", "dataset_dir", "subset", "snrs", "train_with_noise", "config_overrides", "training_overrides",
                "speaker_normalization", "options")
        if self.noise_overrides:  # only when set: the finished runs of every other system stay reusable
            keys += ("noise_overrides",)
        return {key: getattr(self, key) for key in keys}


def fingerprint(payload) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------- cost measurement
class ResourceMeter:
    """Wall time and peak resident memory of named stages of one run.

    RSS comes from psutil, sampled every `interval` s by a thread while any stage is open (and at each stage's
    start and end); a stage's peak is the process's largest RSS while it was open, so it includes what the
    process already held. Stages with the same name accumulate; `clips` and `reused_clips` are filled by callers
    (features computed vs read from a cache)."""

    def __init__(self, interval=0.05):
        self.records: dict[str, dict] = {}
        self._open: list[dict] = []
        self._lock = threading.Lock()
        self._process = psutil.Process()
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _sample(self):
        while not self._stop.wait(self._interval):
            self._update()

    def _update(self):
        rss_mb = self._process.memory_info().rss / 2**20
        with self._lock:
            for record in self._open:
                record["peak_rss_mb"] = max(record["peak_rss_mb"], rss_mb)

    @contextlib.contextmanager
    def stage(self, name):
        record = self.records.setdefault(name, {"seconds": 0.0, "peak_rss_mb": 0.0, "clips": 0, "reused_clips": 0})
        with self._lock:
            self._open.append(record)
        self._update()
        start = time.perf_counter()
        try:
            yield record
        finally:
            record["seconds"] += time.perf_counter() - start
            self._update()
            with self._lock:
                self._open.remove(record)


# --------------------------------------------------------------------------------------------- shared data
class CorpusView:
    """The splits, labels and noise bank of one corpus folder; the audio variants come from
    `nser.experiment.NoisyViews`, so every system hears exactly what the nser systems hear."""

    def __init__(self, setup: Setup, dataset_dir: str):
        corpus = load_corpus(dataset_name=dataset_dir)
        corpus, self.label_names = prepare_columns(corpus)
        self.splits = speaker_independent_splits(corpus, "speaker")
        self.bank = load_noise_bank(setup.noise_arguments([]))
        self.setup, self.dataset_dir = setup, dataset_dir

    def labels(self, split) -> np.ndarray:
        return np.asarray(list(self.splits[split]["label"]))

    def views(self, snrs, with_noise):
        return NoisyViews(self.splits, self.bank, self.setup.noise_arguments(snrs, train_with_noise=with_noise))


def waveforms(ds, augmentation=None, batch_size=16):
    """16 kHz mono float32 clips of `ds`, through `augmentation` with dataset indices as example keys (as
    `Dataset.map(..., with_indices=True)` gives them to nser.experiment)."""
    for start in range(0, len(ds), batch_size):
        batch = ds[start: start + batch_size]
        if augmentation is not None:
            batch = augmentation(batch, list(range(start, start + len(batch["audio"]))))
        for offset, value in enumerate(batch["audio"]):
            yield waveform_from_value(value, name=f"example {start + offset}")


def memoised_features(setup, kind, view, variant, ds, augmentation, compute, record):
    """Features of one audio variant, computed once per process (the in-memory counterpart of nser's cache)."""
    key = (kind, view.dataset_dir, variant, ds._fingerprint)
    if key in setup.memo:
        record["reused_clips"] += len(ds)
        return setup.memo[key]
    features = compute(waveforms(ds, augmentation))
    record["clips"] += len(ds)
    setup.memo[key] = features
    return features


def result_row(name, noise_type, snr_db, labels, predictions, label_names):
    metrics = classification_metrics(labels, predictions, label_names)
    return {"condition": name, "noise_type": noise_type, "snr_db": snr_db, "num_examples": len(labels), **metrics}


def _macro_f1(labels, predictions):
    return float(f1_score(labels, predictions, labels=np.unique(labels), average="macro", zero_division=0))


# --------------------------------------------------------------------------------------------- (1) eGeMAPS + LR
@functools.lru_cache(maxsize=1)
def _smile():
    import opensmile  # imported here: only this system needs it

    return opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02, feature_level=opensmile.FeatureLevel.Functionals)


def egemaps_features(clips) -> np.ndarray:
    """(N, 88) eGeMAPSv02 functionals of 16 kHz clips (openSMILE, float32)."""
    smile = _smile()
    rows = [smile.process_signal(clip.numpy(), SAMPLING_RATE).to_numpy()[0] for clip in clips]
    return np.asarray(rows, dtype=np.float32).reshape(len(rows), -1)


def fit_logistic_regression(train_x, train_y, val_x, val_y, c_grid):
    """Standardisation + multinomial logistic regression; C with the best validation macro-F1 (the smallest C,
    the strongest regularisation, on ties). Returns (pipeline, C, validation macro-F1)."""
    best = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for c in c_grid:
            pipeline = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000))
            pipeline.fit(train_x, train_y)
            score = _macro_f1(val_y, pipeline.predict(val_x))
            if best is None or score > best[2]:
                best = (pipeline, c, score)
    return best


def run_egemaps(setup: Setup, spec: SystemSpec, seeds):
    """One run (deterministic): features of every variant, C on validation, predictions per condition."""
    seed = seeds[0]
    view = CorpusView(setup, spec.dataset_dir)
    start = time.perf_counter()
    with ResourceMeter() as meter:
        with meter.stage("extraction") as record:
            def features(variant, ds, augmentation):
                return memoised_features(setup, "egemaps", view, variant, ds, augmentation, egemaps_features, record)

            views = view.views(spec.snrs, spec.train_with_noise)
            train = [(features(name, ds, aug), view.labels("train")) for name, ds, aug in views.train()]
            train_x, train_y = np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train])
            val_name, val_ds, val_aug = views.validation()
            val_x, val_y = features(val_name, val_ds, val_aug), view.labels("validation")
            conditions = [(name, noise_type, snr, features(f"test {name}", ds, None), np.asarray(list(ds["label"])))
                          for name, noise_type, snr, ds in views.test()]
        with meter.stage("training") as record:
            pipeline, best_c, val_f1 = fit_logistic_regression(train_x, train_y, val_x, val_y, setup.egemaps_c_grid)
            record["clips"] += len(train_y)
        with meter.stage("inference") as record:
            rows = [result_row(name, noise_type, snr, y, pipeline.predict(x), view.label_names)
                    for name, noise_type, snr, x, y in conditions]
            record["clips"] += sum(len(y) for *_, y in conditions)
    chosen = {"C": best_c, "validation_macro_f1": val_f1, "c_grid": list(setup.egemaps_c_grid)}
    return {seed: {"rows": rows, "layer_weights": None, "stages": meter.records, "wall_s": time.perf_counter() - start,
                   "selection": chosen}}


# --------------------------------------------------------------------------------------------- (3) transformers' classifier
def load_whisper_classifier(checkpoint, label_names):
    """`WhisperForAudioClassification(use_weighted_layer_sum=True)` with the checkpoint's encoder (float32, frozen)."""
    config = WhisperConfig.from_pretrained(
        checkpoint, use_weighted_layer_sum=True, num_labels=len(label_names),
        id2label=dict(enumerate(label_names)), label2id={name: i for i, name in enumerate(label_names)},
    )
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # the load report lists the decoder and the new head, as expected
    try:
        model, info = WhisperForAudioClassification.from_pretrained(
            checkpoint, config=config, dtype=torch.float32, output_loading_info=True
        )
    finally:
        transformers.logging.set_verbosity(verbosity)
    missing = [key for key in info["missing_keys"] if key.startswith("encoder.")]
    if missing:
        raise ValueError(f"{checkpoint} lacks encoder weights for WhisperForAudioClassification: {missing[:5]}")
    model.freeze_encoder()
    return model.eval()


def padded_feature_extractor(config):
    """Whisper's log-mel padded to the encoder's whole window (30 s for every real checkpoint; identical to
    whisper-base's saved preprocessor), as `pipeline("audio-classification")` feeds WhisperForAudioClassification."""
    return WhisperFeatureExtractor(feature_size=config.num_mel_bins, chunk_length=2 * config.max_source_positions // 100)


@torch.no_grad()
def pooled_layer_means(model, feature_extractor, clips, batch_size=8) -> np.ndarray:
    """(N, encoder_layers + 1, d_model): every encoder hidden state of the 30 s padded input, averaged over all
    its positions, padding included, as WhisperForAudioClassification pools (after its projector; the projector
    is affine, so the order does not matter)."""
    pooled = []
    clips = list(clips)
    for start in range(0, len(clips), batch_size):
        chunk = [clip.numpy() for clip in clips[start: start + batch_size]]
        features = feature_extractor(chunk, sampling_rate=SAMPLING_RATE, return_tensors="pt").input_features
        states = model.encoder(features.to(model.dtype), output_hidden_states=True).hidden_states
        pooled.append(torch.stack(states, dim=1).mean(dim=2).float())  # (B, L, T, D) -> (B, L, D)
    return torch.cat(pooled).numpy() if pooled else np.zeros((0, model.config.encoder_layers + 1, model.config.d_model), np.float32)


def wfac_logits(model, pooled):
    """WhisperForAudioClassification's head on `pooled_layer_means`: softmax layer weights, projector, classifier."""
    weights = model.layer_weights.softmax(dim=-1)
    hidden = (pooled * weights[None, :, None]).sum(dim=1)  # (B, L, D) -> (B, D)
    return model.classifier(model.projector(hidden))


def _predict(model, x, batch_size=256):
    with torch.no_grad():
        return np.concatenate([wfac_logits(model, torch.as_tensor(x[i: i + batch_size])).argmax(-1).numpy()
                               for i in range(0, len(x), batch_size)]) if len(x) else np.zeros(0, dtype=int)


def train_whisper_classifier_head(config, train, validation, setup: Setup, seed):
    """A fresh WhisperForAudioClassification (head initialised under `seed`), its head trained with the recipe of
    the nser runs (AdamW, linear warm-up and decay, gradient norm clipped at 1, batch, epochs) and the epoch with
    the best validation macro-F1 kept. Returns (model, best validation macro-F1, best epoch)."""
    set_seed(seed)
    model = WhisperForAudioClassification(config).float()
    params = [model.layer_weights, *model.projector.parameters(), *model.classifier.parameters()]
    train_x, train_y = torch.as_tensor(train[0]), torch.as_tensor(train[1]).long()
    steps_per_epoch = math.ceil(len(train_y) / setup.batch_size)
    optimizer = torch.optim.AdamW(params, lr=setup.learning_rate, weight_decay=0.0)
    scheduler = get_linear_schedule_with_warmup(optimizer, setup.warmup_steps, steps_per_epoch * setup.epochs)
    generator = torch.Generator().manual_seed(seed)
    best = (-1.0, None, 0)
    for epoch in range(1, setup.epochs + 1):
        model.train()
        for batch in torch.randperm(len(train_y), generator=generator).split(setup.batch_size):
            loss = torch.nn.functional.cross_entropy(wfac_logits(model, train_x[batch]), train_y[batch])
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
        model.eval()
        score = _macro_f1(validation[1], _predict(model, validation[0]))
        if score > best[0]:  # strictly better, as Trainer's load_best_model_at_end
            best = (score, {name: p.detach().clone() for name, p in model.state_dict().items() if not name.startswith("encoder.")}, epoch)
    model.load_state_dict(best[1], strict=False)
    return model.eval(), best[0], best[2]


def _wfac_features(setup: Setup, spec: SystemSpec, view: CorpusView, meter: ResourceMeter):
    """(3)'s pooled layer means of every audio variant, and its config; the backbone is released on return.
    Returns (config, (train_x, train_y), validation (x, y), [(name, noise_type, snr, x, y)])."""
    with meter.stage("model load"):
        model = load_whisper_classifier(setup.model, view.label_names)
        feature_extractor = padded_feature_extractor(model.config)
    with meter.stage("extraction") as record:
        def features(variant, ds, augmentation):
            return memoised_features(setup, "wfac", view, variant, ds, augmentation,
                                     lambda clips: pooled_layer_means(model, feature_extractor, clips), record)

        views = view.views(spec.snrs, spec.train_with_noise)
        train = [features(name, ds, aug) for name, ds, aug in views.train()]
        train_y = np.concatenate([view.labels("train")] * len(train))
        val_name, val_ds, val_aug = views.validation()
        validation = (features(val_name, val_ds, val_aug), view.labels("validation"))
        conditions = [(name, noise_type, snr, features(f"test {name}", ds, None), np.asarray(list(ds["label"])))
                      for name, noise_type, snr, ds in views.test()]
    return model.config, (np.concatenate(train), train_y), validation, conditions


def run_wfac(setup: Setup, spec: SystemSpec, seeds):
    """Pooled layer means of every variant once, then one head per seed."""
    view = CorpusView(setup, spec.dataset_dir)
    results = {}
    start = time.perf_counter()
    with ResourceMeter() as meter:
        config, (train_x, train_y), validation, conditions = _wfac_features(setup, spec, view, meter)
        gc.collect()
        extraction_s = time.perf_counter() - start
        for seed in seeds:
            seed_start = time.perf_counter()
            with meter.stage("training") as record:
                head, val_f1, epoch = train_whisper_classifier_head(config, (train_x, train_y), validation, setup, seed)
                record["clips"] += len(train_y)
            with meter.stage("inference") as record:
                rows = [result_row(name, noise_type, snr, y, _predict(head, x), view.label_names)
                        for name, noise_type, snr, x, y in conditions]
                record["clips"] += sum(len(y) for *_, y in conditions)
            weights = {"encoder": head.layer_weights.detach().softmax(-1).tolist()}
            results[seed] = {"rows": rows, "layer_weights": weights, "stages": None,
                             "wall_s": time.perf_counter() - seed_start + (extraction_s if seed == seeds[0] else 0.0),
                             "selection": {"best_epoch": epoch, "validation_macro_f1": val_f1}}
            del head
    for seed, result in results.items():
        result["stages"] = _per_seed(meter.records, len(seeds), first=seed == seeds[0])
    return results


def _per_seed(records, num_seeds, first):
    """One seed's share of the stage records of `num_seeds` heads trained on one extraction: training and
    inference divided evenly; the shared stages (model load, extraction) go to the first seed only, so that sums
    over seeds, as in the report's cost table, count them once."""
    out = {name: dict(record) for name, record in records.items() if first or name in ("training", "inference")}
    for name in ("training", "inference"):
        if name in out:
            out[name]["seconds"] /= num_seeds
            out[name]["clips"] //= num_seeds
    return out


# --------------------------------------------------------------------------------------------- (2), (4), (5), (6) nser
def _stage_hook(meter: ResourceMeter, cache_dir):
    """nser.experiment's `stage` hook, backed by the meter. Extraction counts as computed when it wrote a new
    feature-cache file, as reused otherwise (the nser systems always cache)."""
    cache_dir = Path(cache_dir).expanduser()

    def cache_files():
        return set(cache_dir.glob("layer-*.arrow"))

    @contextlib.contextmanager
    def stage(name, clips):
        before = cache_files() if name == "extraction" else None
        with meter.stage(name) as record:
            yield
        computed = before is None or bool(cache_files() - before)
        record["clips" if computed else "reused_clips"] += clips

    return stage


def _train_nser(setup: Setup, spec: SystemSpec, seed, run_dir):
    """One `run_experiment` in `run_dir` (test logits saved there); checkpoints are deleted afterwards (~300 MB
    each, the frozen backbone is saved too): the results and the learned layer weights are what the benchmark keeps.
    Returns (result, label names)."""
    model_args = ModelArguments(model_name_or_path=setup.model, config_overrides=spec.config_overrides,
                                **spec.model_arguments)
    inner_cv = spec.options.get("inner_cv") or {}
    data_args = DataArguments(dataset_name=spec.dataset_dir, feature_cache_dir=setup.feature_cache_dir,
                              speaker_normalization=spec.speaker_normalization,
                              speaker_normalization_clips=spec.options.get("speaker_normalization_clips"),
                              inner_cv_candidates=inner_cv.get("candidates"), inner_cv_folds=inner_cv.get("folds", 4))
    noise_args = setup.noise_arguments(spec.snrs, spec.train_with_noise, **spec.noise_overrides)
    training_args = setup.training_arguments(run_dir, seed, **spec.training_overrides)
    set_seed(seed)
    start = time.perf_counter()
    with ResourceMeter() as meter, meter.stage("total"):
        result = run_experiment(
            model_args, data_args, noise_args, training_args, RunArguments(overwrite_output_dir=True, save_test_logits=True),
            stage=_stage_hook(meter, setup.feature_cache_dir),
        )
    trainer = result["trainer"]
    summary = {
        "rows": result["rows"], "layer_weights": {group: w.tolist() for group, w in trainer.model.layer_weights().items()},
        "stages": meter.records, "wall_s": time.perf_counter() - start,
        "selection": {"best_validation_macro_f1": trainer.state.best_metric,
                      "best_checkpoint": Path(trainer.state.best_model_checkpoint or "").name},
    }
    if inner_cv:
        summary["selection"]["inner_cv"] = json.loads((Path(run_dir) / INNER_CV_RESULTS).read_text())
    label_names = result["label_names"]
    del result, trainer
    gc.collect()
    for checkpoint in [path for path in Path(run_dir).rglob("checkpoint-*") if path.is_dir()]:  # folds' and LoRA
        shutil.rmtree(checkpoint)  # stages' (`lora/`) too
    return summary, label_names


def _ensemble(members, label_names, run_dirs):
    """One result from member runs: rows of their mean class probabilities, the members' layer weights averaged,
    their costs summed, each member's selection kept."""
    return {
        "rows": ensemble_rows([Path(d) / TEST_LOGITS_FILE for d in run_dirs], label_names),
        "layer_weights": mean_layer_weights(members),
        "stages": sum_stages([m["stages"] for m in members]), "wall_s": sum(m["wall_s"] for m in members),
        "selection": {"members": [m["selection"] for m in members], "member_rows": [m["rows"] for m in members]},
    }


def mean_layer_weights(runs):
    """Each group's layer weights averaged over runs (folds or ensemble members); None when the runs have none."""
    if not runs[0].get("layer_weights"):
        return None
    return {group: np.mean([r["layer_weights"][group] for r in runs], axis=0).tolist() for group in runs[0]["layer_weights"]}


def sum_stages(stages_per_run):
    """Seconds and clips summed over runs (folds or ensemble members), the largest peak RSS; None when none has any."""
    total = {}
    for stages in stages_per_run:
        for stage, record in (stages or {}).items():
            into = total.setdefault(stage, {"seconds": 0.0, "peak_rss_mb": 0.0, "clips": 0, "reused_clips": 0})
            for key in ("seconds", "clips", "reused_clips"):
                into[key] += record.get(key, 0)
            into["peak_rss_mb"] = max(into["peak_rss_mb"], record.get("peak_rss_mb", 0.0))
    return total or None


def run_nser(setup: Setup, spec: SystemSpec, seeds):
    """`run_experiment` once per seed in `<output_dir>/<key>/seed-<s>`, with `options["model_arguments"]` (e.g.
    use_lora) as ModelArguments. With `options["ensemble_seeds"]`, the spec's one seed stands for an ensemble: a
    run per listed seed in `seed-<s>/member-<seed>`, scored on the members' mean class probabilities."""
    results = {}
    for seed in seeds:
        run_dir = setup.output_dir / spec.key / f"seed-{seed}"
        member_seeds = spec.options.get("ensemble_seeds")
        if not member_seeds:
            results[seed], _ = _train_nser(setup, spec, seed, run_dir)
            continue
        member_dirs = [run_dir / f"member-{m}" for m in member_seeds]
        runs = [_train_nser(setup, spec, m, d) for m, d in zip(member_seeds, member_dirs)]
        results[seed] = _ensemble([summary for summary, _ in runs], runs[0][1], member_dirs)
    return results


# --------------------------------------------------------------------------------------------- (2p) linear probe
def grouped_c_search(x, y, groups, c_grid, inner_folds):
    """C of StandardScaler + logistic regression by speaker-grouped cross-validation on the training set (noisy
    copies of a clip share its speaker, so they never straddle a split); mean macro-F1 over the inner folds, the
    smallest C on ties. Returns (C, {C: mean inner macro-F1})."""
    splitter = GroupKFold(n_splits=min(inner_folds, len(set(groups))))
    scores = {}
    for c in c_grid:
        folds = []
        for train_index, val_index in splitter.split(x, y, groups):
            model = fit_probe(x[train_index], y[train_index], c)
            folds.append(_macro_f1(y[val_index], model.predict(x[val_index])))
        scores[c] = float(np.mean(folds))
    best = max(c_grid, key=lambda c: (scores[c], -c))
    return best, scores


def fit_probe(x, y, c):
    """The probe's model: StandardScaler + logistic regression with inverse L2 strength `c`, fitted on (x, y)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000)).fit(x, y)


def probe_features(stats, statistics="mean_std"):
    """(N, layers * 2 * d_model) float32 from per-layer statistics (N, layers, 2, d_model); `statistics="mean"`:
    (N, layers * d_model), the means alone."""
    stats = np.asarray(stats, dtype=np.float32)
    return (stats[:, :, 0] if statistics == "mean" else stats).reshape(len(stats), -1)


def _stats_matrix(ds, statistics="mean_std"):
    """`probe_features` of a cached dataset of per-layer statistics."""
    return probe_features(ds["encoder_layer_stats"], statistics)


def fit_fold_probe(setup: Setup, spec: SystemSpec, seed, meter: ResourceMeter):
    """(2p) on `spec`'s corpus folder: per-layer mean + std of every encoder layer from nser's feature cache (shared
    with the nser systems that pool before fusion), C by grouped CV on the training speakers, one fit.
    `spec.options`: `fit_on_validation` adds the validation clips to the fit, `statistics="mean"` drops the stds.
    Returns (fitted pipeline, its features of each test condition [(name, noise_type, snr, x, labels)], label
    names, selection record)."""
    view = CorpusView(setup, spec.dataset_dir)
    with meter.stage("model load"):
        model = build_model(setup.model, view.label_names, PROBE_OVERRIDES)
    data_args = DataArguments(dataset_name=spec.dataset_dir, feature_cache_dir=setup.feature_cache_dir,
                              speaker_normalization=spec.speaker_normalization,
                              speaker_normalization_clips=spec.options.get("speaker_normalization_clips"))
    training_args = setup.training_arguments(setup.output_dir / spec.key / f"seed-{seed}", seed)
    fold = Fold(view.splits, model, model.build_feature_extractor(), view.bank, data_args,
                setup.noise_arguments(spec.snrs, spec.train_with_noise, **spec.noise_overrides), training_args, cache=True,
                stage=_stage_hook(meter, setup.feature_cache_dir))
    statistics = spec.options.get("statistics", "mean_std")
    train, _ = fold.train_dataset()
    copies = len(train) // len(view.splits["train"])
    fit_sets = [(train, list(view.splits["train"]["speaker"]) * copies)]
    if spec.options.get("fit_on_validation"):
        fit_sets.append((fold.validation_dataset(), view.splits["validation"]["speaker"]))
    conditions = [(name, noise_type, snr, _stats_matrix(ds, statistics), np.asarray(ds["labels"]))
                  for name, noise_type, snr, ds in fold.test_conditions()]
    del model
    gc.collect()
    train_x = np.concatenate([_stats_matrix(ds, statistics) for ds, _ in fit_sets])
    train_y = np.concatenate([np.asarray(ds["labels"]) for ds, _ in fit_sets])
    speakers = np.asarray([str(s) for _, column in fit_sets for s in column])
    with meter.stage("training") as record:
        c_grid, inner_folds = spec.options["c_grid"], spec.options["inner_folds"]
        best_c, scores = grouped_c_search(train_x, train_y, speakers, c_grid, inner_folds)
        pipeline = fit_probe(train_x, train_y, best_c)
        record["clips"] += len(train_y)
    chosen = {"C": best_c, "inner_cv_macro_f1": {str(c): v for c, v in scores.items()}, "c_grid": list(c_grid),
              "inner_folds": min(inner_folds, len(set(speakers)))}
    return pipeline, conditions, view.label_names, chosen


def run_probe(setup: Setup, spec: SystemSpec, seeds):
    """(2p), deterministic: one fit (`fit_fold_probe`), predictions per condition."""
    seed = seeds[0]
    start = time.perf_counter()
    with ResourceMeter() as meter:
        pipeline, conditions, label_names, chosen = fit_fold_probe(setup, spec, seed, meter)
        with meter.stage("inference") as record:
            rows = [result_row(name, noise_type, snr, y, pipeline.predict(x), label_names)
                    for name, noise_type, snr, x, y in conditions]
            record["clips"] += sum(len(y) for *_, y in conditions)
    return {seed: {"rows": rows, "layer_weights": None, "stages": meter.records, "wall_s": time.perf_counter() - start,
                   "selection": chosen}}


def save_probe_logits(path, pipeline, conditions):
    """The probe's log class probabilities of every test condition, in `nser.ensemble`'s test-logits format (their
    softmax is the probe's probabilities), so that `ensemble_rows` can average them with an nser run's."""
    classes = [int(c) for c in pipeline.classes_]
    if classes != list(range(len(classes))):
        raise ValueError(f"the probe was fitted on label ids {classes}: every label needs training clips to fuse it")
    rows = [{"condition": name, "noise_type": noise_type, "snr_db": snr} for name, noise_type, snr, _, _ in conditions]
    logits = [np.log(np.clip(pipeline.predict_proba(x), 1e-12, 1.0)) for *_, x, _ in conditions]
    return save_test_logits(path, rows, logits, [y for *_, y in conditions])


# --------------------------------------------------------------------------------------------- (N+2p) fusion
def run_probe_fusion(setup: Setup, spec: SystemSpec, seeds):
    """(N+2p): (N) and (2p) on the same fold, scored on the mean of their class probabilities clip by clip (equal
    weights, nothing tuned). The probe is fitted once (deterministic); (N) trains once per seed, as system (N)."""
    start = time.perf_counter()
    with ResourceMeter() as meter:
        pipeline, conditions, _, chosen = fit_fold_probe(setup, spec, seeds[0], meter)
    probe_file = setup.output_dir / spec.key / f"probe-{TEST_LOGITS_FILE}"
    probe_file.parent.mkdir(parents=True, exist_ok=True)
    save_probe_logits(probe_file, pipeline, conditions)
    probe_s, results = time.perf_counter() - start, {}
    for seed in seeds:
        run_dir = setup.output_dir / spec.key / f"seed-{seed}"
        member, label_names = _train_nser(setup, spec, seed, run_dir)
        results[seed] = {
            **member, "rows": ensemble_rows([run_dir / TEST_LOGITS_FILE, probe_file], label_names),
            "stages": sum_stages([member["stages"], meter.records if seed == seeds[0] else None]),
            "wall_s": member["wall_s"] + (probe_s if seed == seeds[0] else 0.0),
            "selection": {**member["selection"], "nser_rows": member["rows"], "probe": chosen},
        }
    return results


SYSTEM_FUNCTIONS = {"egemaps": run_egemaps, "wfac": run_wfac, "nser": run_nser, "probe": run_probe,
                    "fusion": run_probe_fusion}
