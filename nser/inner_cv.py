"""Inner speaker-grouped cross-validation: a head's settings chosen on the training speakers alone.

With four or twelve speakers, settings chosen on the test speakers flatter the result, and settings chosen on the
training speakers' own held-out sentences favour what memorises those voices. Here each candidate is trained on
all but one block of training speakers and scored on the block it never heard, heard as training hears it (the
fold's cached noisy copies, whose noise comes from the bank's training files): no test clip and no test noise file
is read, and no backbone state is computed again. `nser.experiment.train_fold` runs it before the fold's own
training (`--inner_cv_candidates`)."""

import copy
import dataclasses
import logging

import numpy as np

from nser.arguments import NserTrainingArguments
from nser.feature_cache import HYPOTHESIS_KEYS
from nser.training import parse_config_overrides, parse_value

logger = logging.getLogger(__name__)

# NserConfig values that change the cached backbone states: a candidate may not set them (one cache serves all).
EXTRACTION_KEYS = ("use_decoder", "pad_to_30s", "pool_before_fusion", "decoder_input", *HYPOTHESIS_KEYS)


@dataclasses.dataclass(frozen=True)
class Candidate:
    """Settings on top of the run's own: NserConfig overrides and TrainingArguments values."""

    config_overrides: str = ""
    training_overrides: tuple = ()  # ((TrainingArguments field, value), ...): hashable, ordered as given

    def __str__(self):
        training = ",".join(f"{k}={v}" for k, v in self.training_overrides)
        return f"{self.config_overrides}:{training}" if training else self.config_overrides or "(the run's settings)"


def parse_settings(text, argument):
    """'CONFIG_OVERRIDES[:TRAINING_OVERRIDES]' -> Candidate, e.g. 'classifier_dropout=0.5:weight_decay=0.2';
    ':weight_decay=0.01' changes training only, '' nothing. Unknown keys fail here, before any work, naming
    `argument`."""
    config_overrides, _, training = text.partition(":")
    try:
        parse_config_overrides(config_overrides)
    except ValueError as error:
        raise ValueError(f"{argument} {text!r}: {error}") from None
    fields = {f.name for f in dataclasses.fields(NserTrainingArguments)}
    training_overrides = []
    for item in filter(None, training.split(",")):
        name, sep, value = item.partition("=")
        if not sep or name.strip() not in fields:
            raise ValueError(f"{argument} {text!r}: {item!r} is not a NserTrainingArguments field=value "
                             "(a TrainingArguments field or mixup_alpha)")
        training_overrides.append((name.strip(), parse_value(value.strip())))
    return Candidate(config_overrides, tuple(training_overrides))


def parse_candidate(text):
    """One `--inner_cv_candidates` entry (`parse_settings`); it may not change the cached backbone states."""
    candidate = parse_settings(text, "--inner_cv_candidates")
    fixed = sorted(set(parse_config_overrides(candidate.config_overrides)) & set(EXTRACTION_KEYS))
    if fixed:
        raise ValueError(f"--inner_cv_candidates {text!r}: {fixed} change the cached backbone states; set them in "
                         "--config_overrides for the whole run instead")
    return candidate


def combined_overrides(base, candidate):
    """The run's --config_overrides with the candidate's on top (later keys win in NserConfig)."""
    return ",".join(filter(None, [base, candidate.config_overrides])) or None


def inner_folds(groups, max_folds):
    """The sorted distinct `groups` in at most `max_folds` blocks of consecutive groups (one group per block when
    there are fewer): each block is held out once."""
    names = sorted({str(g) for g in groups})
    if len(names) < 2:
        raise ValueError(f"inner cross-validation needs at least 2 training groups, found {names}")
    if max_folds < 2:
        raise ValueError(f"--inner_cv_folds must be at least 2, got {max_folds}")
    return [block.tolist() for block in np.array_split(np.array(names), min(max_folds, len(names)))]


def select_candidate(candidates, train_groups, validation_groups, max_folds, score):
    """The candidate with the best mean held-out score over the inner folds (ties: the earlier one).

    `train_groups` / `validation_groups`: the group of every row of the fold's featurised training and validation
    sets. The training groups are held out in turn; a held-out group's validation rows are scored with it, and a
    validation group that does not train is always kept for choosing the epoch. `score(candidate, train_rows,
    validation_rows, heldout_rows)` gets row indices (the kept groups' training rows, their validation rows, and
    the held-out groups' training and validation rows, the latter offset by the number of training rows) and
    returns the held-out macro-F1. Returns (chosen candidate, {"folds": [held-out groups], "scores": {candidate:
    [per fold]}, "chosen": candidate})."""
    train_groups = np.asarray([str(g) for g in train_groups])
    validation_groups = np.asarray([str(g) for g in validation_groups])
    folds = inner_folds(train_groups, max_folds)
    scores = {}
    for candidate in candidates:
        per_fold = []
        for held_out in folds:
            in_train, in_validation = np.isin(train_groups, held_out), np.isin(validation_groups, held_out)
            if in_validation.all() or in_train.all():
                raise ValueError(f"inner fold holding out {held_out} leaves no training or no validation clips of the other "
                                 "training groups (validate within the training groups: --cv_validation within_groups)")
            heldout = np.concatenate([np.flatnonzero(in_train), len(train_groups) + np.flatnonzero(in_validation)])
            per_fold.append(float(score(candidate, np.flatnonzero(~in_train), np.flatnonzero(~in_validation), heldout)))
        scores[str(candidate)] = per_fold
        logger.info("inner CV: %s: mean held-out macro-F1 %.1f (per fold %s)", candidate, 100 * np.mean(per_fold),
                    ", ".join(f"{100 * s:.1f}" for s in per_fold))
    means = [np.mean(scores[str(c)]) for c in candidates]
    chosen = candidates[int(np.argmax(means))]
    logger.info("inner CV chose %s", chosen)
    return chosen, {"folds": folds, "scores": scores, "chosen": str(chosen)}


def with_training_overrides(training_args, candidate):
    """A copy of `training_args` with the candidate's values set (plain values read when training starts)."""
    args = copy.deepcopy(training_args)
    for name, value in candidate.training_overrides:
        setattr(args, name, value)
    return args


def best_epoch_score(log_history, selection_key, score_key):
    """`score_key` at the evaluation where `selection_key` was highest (the first of ties): the held-out score of the
    epoch that validation would have kept, without saving a checkpoint per epoch. Trainer logs each evaluation set
    apart, so the two are matched by training step."""
    selection = {entry["step"]: entry[selection_key] for entry in log_history if selection_key in entry}
    scores = {entry["step"]: entry[score_key] for entry in log_history if score_key in entry}
    if not selection:
        raise ValueError(f"no evaluation logged {selection_key!r}: does the training run evaluate each epoch?")
    best_step = max(selection, key=lambda step: (selection[step], -step))
    return scores[best_step]
