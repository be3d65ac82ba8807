"""Trainer pieces: class-weighted loss, model construction from arguments, per-condition evaluation."""

import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from transformers import Trainer

from configuration_nser import NserConfig
from modeling_nser import NserLayerStates, WhisperForNoisyEmotionClassification
from nser.ensemble import save_test_logits
from nser.metrics import classification_metrics

logger = logging.getLogger(__name__)


class NserTrainer(Trainer):
    """`Trainer` with an optional class-weighted cross-entropy (inverse class frequency) for imbalanced corpora,
    per-head losses for ensembles (`num_heads` > 1), the speaker-adversarial loss (`speaker_ids` in the batch) and
    mixup of the cached layer statistics (`NserTrainingArguments.mixup_alpha`)."""

    def __init__(self, *args, class_weights=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.class_weights = class_weights

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Trainer's own loss for one head without class weights or mixup. Otherwise every head's cross-entropy
        (class-weighted when asked, smoothed by `label_smoothing_factor`, mixed over the two labels of a mixed
        example), averaged over heads: each head learns on its own, as a member trained apart would, instead of the
        ensemble's output being fitted; plus the model's speaker-adversarial loss when the batch has `speaker_ids`."""
        mixup_alpha = getattr(self.args, "mixup_alpha", 0.0) if model.training else 0.0
        if (not mixup_alpha and self.class_weights is None and self.model.config.num_heads == 1
                and "speaker_ids" not in inputs):
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        labels = inputs.pop("labels")
        targets = [(1.0, labels)]
        if mixup_alpha:
            inputs, targets = mix_batch(inputs, labels, mixup_alpha)
        outputs = model(**inputs)
        per_head = outputs.logits[:, None] if outputs.head_logits is None else outputs.head_logits  # (B, heads, C)
        weights = None if self.class_weights is None else self.class_weights.to(per_head.device)
        loss = torch.stack([
            sum(share * torch.nn.functional.cross_entropy(per_head[:, k].float(), target, weight=weights,
                                                          label_smoothing=self.args.label_smoothing_factor)
                for share, target in targets)
            for k in range(per_head.shape[1])
        ]).mean()
        if outputs.speaker_loss is not None:
            loss = loss + outputs.speaker_loss
        return (loss, outputs) if return_outputs else loss


def mix_batch(inputs, labels, alpha):
    """Mixup of a batch of cached layer statistics: x' = lam x + (1 - lam) x[perm], lam ~ Beta(alpha, alpha), one
    draw per batch from torch's (Trainer-seeded) generator. Mixing the raw statistics equals mixing the
    standardised ones (standardisation is affine). Returns the mixed inputs and [(lam, labels), (1 - lam,
    labels[perm])]."""
    if "encoder_layer_stats" not in inputs:
        given = sorted(key for key in inputs if key != "labels")
        raise ValueError(f"--mixup_alpha mixes cached per-layer statistics (pool_before_fusion=true and a frozen, cached "
                         f"backbone); this batch has {given}")
    if "speaker_ids" in inputs:
        raise ValueError("--mixup_alpha cannot be combined with the speaker-adversarial loss (speaker labels do not mix)")
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    perm = torch.randperm(labels.shape[0], device=labels.device)
    mixed = dict(inputs)
    for key in ("encoder_layer_stats", "decoder_layer_stats"):
        if mixed.get(key) is not None:
            mixed[key] = lam * mixed[key] + (1 - lam) * mixed[key][perm]
    return mixed, [(lam, labels), (1 - lam, labels[perm])]


def inverse_frequency_weights(labels, num_labels):
    """w_c = N / (C * n_c): a class seen half as often counts twice; absent classes get weight 0."""
    counts = np.bincount(np.asarray(labels), minlength=num_labels).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / (num_labels * np.maximum(counts, 1)), 0.0)
    return torch.tensor(weights, dtype=torch.float32)


def parse_config_overrides(text):
    """'use_decoder=false,asr_language=zh,adapter_dim=128' -> typed dict; unknown keys list the valid ones."""
    if not text:
        return {}
    valid = set(NserConfig().to_dict()) - {"backbone_config", "id2label", "label2id"}
    overrides = {}
    for item in text.split(","):
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or key not in valid:
            raise ValueError(f"--config_overrides item {item!r}: expected key=value with key one of {sorted(valid)}")
        overrides[key] = parse_value(raw.strip())
    return overrides


def parse_value(raw):
    """'true' -> True, 'none' -> None, '3' -> 3, '0.1' -> 0.1, anything else stays a string."""
    lowered = raw.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            pass
    return raw


def build_model(model_name_or_path, label_names, config_overrides=None, freeze_backbone=True):
    """A trained nser folder is loaded as is (its labels must match); anything else is a Whisper checkpoint."""
    overrides = parse_config_overrides(config_overrides)
    config_file = Path(model_name_or_path) / "config.json"
    if config_file.is_file() and '"model_type": "nser"' in config_file.read_text():
        model = WhisperForNoisyEmotionClassification.from_pretrained(model_name_or_path, **overrides)
        trained = [model.config.id2label[i] for i in range(model.config.num_labels)]
        if trained != list(label_names):
            raise ValueError(f"model {model_name_or_path} was trained on labels {trained}, the data has {list(label_names)}")
        return model
    return WhisperForNoisyEmotionClassification.from_whisper(
        model_name_or_path, label_names, freeze_backbone=freeze_backbone, **overrides
    )


@torch.no_grad()
def fit_feature_statistics(model, dataset, collator, batch_size=64):
    """Store the training set's mean and std of every pooled layer vector in the model (`standardize_features`).

    Reads cached layer statistics when the dataset has them; otherwise runs the backbone once over `dataset`."""
    groups = list(model.standardizers)
    sums = {group: 0.0 for group in groups}
    squares = {group: 0.0 for group in groups}
    count = 0
    model.eval()
    for batch in DataLoader(dataset, batch_size=batch_size, collate_fn=collator):
        if "encoder_layer_stats" in batch:
            states = NserLayerStates(encoder_layer_stats=batch["encoder_layer_stats"],
                                     decoder_layer_stats=batch.get("decoder_layer_stats"))
        else:
            states = model.extract_layer_states(batch["input_features"], batch["attention_mask"])
        for group in groups:
            vectors = model.pooled_layer_vectors(group, states, standardize=False).double()  # (B, L, P)
            sums[group] = sums[group] + vectors.sum(dim=0)
            squares[group] = squares[group] + (vectors**2).sum(dim=0)
        count += vectors.shape[0]
    if count == 0:
        raise ValueError("fit_feature_statistics: the training set is empty")
    for group in groups:
        mean = sums[group] / count
        std = (squares[group] / count - mean**2).clamp(min=0).sqrt()
        model.set_feature_statistics(group, mean.float(), std.float())
    logger.info("feature standardisation fitted on %d training examples (%s)", count, ", ".join(groups))


def evaluate_conditions(trainer, conditions, label_names, logits_file=None):
    """Predict every condition and return one result row each (see nser.report for the row format).

    `conditions`: list of (name, noise_type, snr_db or None, dataset). `logits_file`: where to save every
    condition's logits and labels (`nser.ensemble`), for ensembles and per-clip significance tests."""
    rows, all_logits, all_labels = [], [], []
    for name, noise_type, snr_db, dataset in conditions:
        output = trainer.predict(dataset, metric_key_prefix=f"test_{name}")
        logits = output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
        metrics = classification_metrics(output.label_ids, np.argmax(logits, axis=-1), label_names)
        rows.append({"condition": name, "noise_type": noise_type, "snr_db": snr_db, "num_examples": len(dataset), **metrics})
        all_logits.append(logits)
        all_labels.append(output.label_ids)
        logger.info("%s: macro-F1 %.1f  UA %.1f  WA %.1f", name, 100 * metrics["macro_f1"], 100 * metrics["ua"], 100 * metrics["wa"])
    if logits_file and rows and trainer.is_world_process_zero():
        save_test_logits(logits_file, rows, all_logits, all_labels)
        logger.info("test logits of %d conditions saved to %s", len(rows), logits_file)
    return rows
