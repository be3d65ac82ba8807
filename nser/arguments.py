"""Command-line arguments of `run_nser.py`, as `HfArgumentParser` dataclasses (transformers' example style).

Architecture choices are not repeated here: they are `NserConfig` values, set with `--config_overrides`
(as in transformers' `run_clm.py`), so the config stays the single source of truth.
"""

from dataclasses import dataclass, field

from transformers import TrainingArguments


@dataclass
class ModelArguments:
    model_name_or_path: str = field(
        default="openai/whisper-base",
        metadata={"help": "A Whisper checkpoint (Hub id or folder) to build on, or a trained nser model folder."},
    )
    config_overrides: str | None = field(
        default=None,
        metadata={"help": "NserConfig values, e.g. 'use_decoder=false,encoder_fusion=weighted_sum,asr_language=zh'."},
    )
    freeze_backbone: bool = field(default=True, metadata={"help": "Keep Whisper frozen (needed for the feature cache)."})
    use_lora: bool = field(default=False, metadata={"help": "Train LoRA adapters on the encoder (peft); merged before saving."})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling numerator."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA input."})
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "v_proj"], metadata={"help": "Encoder linear layers that get LoRA."}
    )
    lora_after_head: bool = field(
        default=False,
        metadata={"help": "With --use_lora: train the head on the frozen (cached) backbone first, then LoRA and head "
                          "together from it (linear probing, then fine-tuning; Kumar et al. 2022)."},
    )
    lora_learning_rate: float = field(
        default=1e-4, metadata={"help": "Learning rate of the LoRA stage after the head (--lora_after_head)."}
    )
    lora_epochs: float = field(default=3, metadata={"help": "Epochs of the LoRA stage after the head (--lora_after_head)."})
    class_weighted_loss: bool = field(
        default=False, metadata={"help": "Weight the cross-entropy by inverse class frequency (imbalanced corpora)."}
    )
    early_stopping_patience: int | None = field(
        default=None, metadata={"help": "Stop after this many evaluations without improvement of the best metric."}
    )


@dataclass
class DataArguments:
    dataset_name: str | None = field(
        default=None, metadata={"help": "A folder written by dataset_scripts/ (save_to_disk) or a Hub dataset id."}
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "Hub dataset configuration."})
    audio_folder: str | None = field(default=None, metadata={"help": "An audio folder: one sub-folder per label."})
    manifest_csv: str | None = field(default=None, metadata={"help": "A CSV with path,label[,speaker] columns."})
    audio_column_name: str = field(default="audio", metadata={"help": "Column holding the audio."})
    label_column_name: str = field(default="label", metadata={"help": "Column holding the emotion label."})
    speaker_column_name: str = field(
        default="speaker", metadata={"help": "Column used for speaker-independent splits when a split is missing."}
    )
    emotion_labels: list[str] | None = field(
        default=None, metadata={"help": "Fix the label set and order; a label outside it is an error."}
    )
    test_groups: list[str] | None = field(default=None, metadata={"help": "Speakers/sessions held out for test."})
    validation_groups: list[str] | None = field(
        default=None, metadata={"help": "Speakers/sessions held out for validation (model selection)."}
    )
    validation_column: str | None = field(
        default=None,
        metadata={"help": "Cut validation from train by this column instead (e.g. text_id: held-out sentences)."},
    )
    cv_column: str | None = field(
        default=None,
        metadata={"help": "Cross-validation by this column (e.g. session, speaker): every group is tested once and "
                          "every other group trains."},
    )
    cv_folds: int | None = field(
        default=None,
        metadata={"help": "With --cv_column: K folds of consecutive sorted groups (e.g. 3 folds of 4 RAVDESS actors) "
                          "instead of one fold per group."},
    )
    cv_validation: str = field(
        default="within_groups",
        metadata={"help": "With --cv_column: 'within_groups' validates on the training groups' own clips "
                          "(--validation_column/--validation_groups, else --validation_fraction of each group and label); "
                          "'next_group' holds out the whole next group (it then does not train)."},
    )
    validation_fraction: float = field(
        default=0.1, metadata={"help": "Share of each training group's clips (per label) used for validation in CV folds."}
    )
    inner_cv_candidates: list[str] | None = field(
        default=None,
        metadata={"help": "Choose the head's settings by inner cross-validation over each fold's training groups (--cv_column, "
                          "else --speaker_column_name): candidates 'CONFIG_OVERRIDES[:TRAINING_OVERRIDES]' on top of the run's "
                          "own, e.g. '' 'classifier_dropout=0.5:weight_decay=0.2'. Each is trained on all but one block of "
                          "training groups and scored (macro-F1) on that block's cached noisy training copies; the best mean "
                          "wins (ties: the first) and the fold trains with it. Needs cached backbone states."},
    )
    inner_cv_folds: int = field(
        default=4, metadata={"help": "At most this many blocks of training groups in --inner_cv_candidates' cross-validation."}
    )
    speaker_normalization: bool = field(
        default=False,
        metadata={"help": "Standardise each clip's pooled layer statistics by its speaker's (--speaker_column_name) "
                          "mean and std, test speakers from their own unlabelled clips per condition: transductive, "
                          "report apart; single-clip inference cannot do it. Needs pool_before_fusion and the cache."},
    )
    speaker_normalization_clips: int | None = field(
        default=None,
        metadata={"help": "With --speaker_normalization: each test speaker's statistics from at most this many of its "
                          "clips per condition (a fixed draw), as a short unlabelled enrolment would give; every clip "
                          "of the speaker is normalised with them. Default: all its clips. Training and validation "
                          "speakers always use all theirs."},
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Seeded subset of train (quick runs)."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Seeded subset of validation."})
    max_test_samples: int | None = field(default=None, metadata={"help": "Seeded subset of test (every condition)."})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "num_proc of the map functions."})
    feature_cache_dir: str = field(
        default="~/.cache/nser/features", metadata={"help": "Where backbone states are cached (frozen backbone)."}
    )
    feature_cache_dtype: str = field(default="float16", metadata={"help": "float16 (half the disk) or float32 (exact)."})
    cache_features: bool = field(
        default=True, metadata={"help": "Compute frozen-backbone states once and reuse them (off with LoRA/unfrozen)."}
    )


@dataclass
class NoiseArguments:
    noise_dir: str | None = field(
        default=None, metadata={"help": "Noise folder (category = sub-folder; split from its metadata.csv if any)."}
    )
    noise_csv: str | None = field(default=None, metadata={"help": "Noise list CSV with path,category,split columns."})
    noise_dataset: str | None = field(default=None, metadata={"help": "A prepared noise dataset (dataset_scripts/)."})
    train_noise_types: list[str] | None = field(
        default=None, metadata={"help": "Categories for training augmentation (default: all, with white and pink)."}
    )
    test_noise_types: list[str] | None = field(
        default=None, metadata={"help": "Categories of the noisy test conditions (default: all, with white)."}
    )
    train_snr_low: float = field(default=0.0, metadata={"help": "Lowest training SNR (dB)."})
    train_snr_high: float = field(default=20.0, metadata={"help": "Highest training SNR (dB)."})
    test_snrs: list[float] = field(
        default_factory=lambda: [20.0, 10.0, 5.0, 0.0, -5.0], metadata={"help": "SNRs (dB) of the test conditions."}
    )
    clean_probability: float = field(default=0.2, metadata={"help": "Chance a training example stays clean."})
    augment_copies: int = field(
        default=2, metadata={"help": "Noisy draws per training example when states are cached (a new draw each epoch otherwise)."}
    )
    train_with_noise: bool = field(default=True, metadata={"help": "False trains on clean speech only (the clean-trained baseline)."})
    noise_seed: int = field(default=0, metadata={"help": "Seed of every noise draw (train and test)."})
    speed_factors: list[float] | None = field(
        default=None,
        metadata={"help": "Speed perturbation of the noisy training draws, e.g. 0.9 1.0 1.1 (Kaldi's): each draw plays at "
                          "a factor drawn from these before noise is added. Validation and test audio are never perturbed."},
    )


@dataclass
class RunArguments:
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Allow writing into a non-empty output folder that holds no checkpoint to resume."}
    )
    dataset_hub_id: str | None = field(default=None, metadata={"help": "Hub id of the corpus, for the model card."})
    base_model_id: str | None = field(
        default=None,
        metadata={"help": "Hub id of the backbone for the model card (default: --model_name_or_path unless a local folder)."},
    )
    model_card_license: str | None = field(default=None, metadata={"help": "License for the model card metadata."})
    train_final_model: bool = field(
        default=False,
        metadata={"help": "With --cv_column: after the folds, train one model on every group (validation as in the "
                          "folds) and save it as <output_dir>/model, its card headed by the cross-validation results."},
    )
    save_test_logits: bool = field(
        default=False,
        metadata={"help": "Write every test condition's logits and labels to <fold output>/test_logits.npz, for seed "
                          "ensembles (nser.ensemble.ensemble_rows) and per-clip significance tests."},
    )
    benchmark_reports: list[str] = field(
        default_factory=list,
        metadata={"help": "bench.robustness reports (robustness.md) whose summary tables the model card shows."},
    )


@dataclass
class NserTrainingArguments(TrainingArguments):
    """`TrainingArguments` plus the head's training-only regularisers (as `Seq2SeqTrainingArguments` adds its own)."""

    mixup_alpha: float = field(
        default=0.0,
        metadata={"help": "Mixup (Zhang et al. 2018) on the cached per-layer statistics: each training batch is mixed "
                          "with a shuffled copy of itself by a weight drawn from Beta(alpha, alpha), and the loss is the "
                          "same mix of the two labels' cross-entropies. 0 (default) turns it off. Needs "
                          "pool_before_fusion and cached backbone states (the vectors it mixes)."},
    )

    def __post_init__(self):
        super().__post_init__()
        if not self.mixup_alpha >= 0:
            raise ValueError(f"--mixup_alpha must be >= 0 (0 turns mixup off), got {self.mixup_alpha}")
