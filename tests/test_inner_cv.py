"""Inner speaker-grouped cross-validation (nser.inner_cv): parsing, folds, the choice, the best-epoch score."""

import pytest
from transformers import TrainingArguments

from nser.inner_cv import (
    Candidate, best_epoch_score, combined_overrides, inner_folds, parse_candidate, parse_settings, select_candidate,
    with_training_overrides,
)


def test_candidates_parse_config_and_training_values_and_refuse_what_changes_the_cache():
    assert parse_candidate("") == Candidate("", ())
    assert parse_candidate("classifier_dropout=0.5:weight_decay=0.2,num_train_epochs=10") == Candidate(
        "classifier_dropout=0.5", (("weight_decay", 0.2), ("num_train_epochs", 10)))
    assert parse_candidate(":label_smoothing_factor=0.0") == Candidate("", (("label_smoothing_factor", 0.0),))
    assert str(parse_candidate("classifier_dropout=0.5:weight_decay=0.2")) == "classifier_dropout=0.5:weight_decay=0.2"
    with pytest.raises(ValueError, match="--inner_cv_candidates 'colour=red'.*expected key=value"):
        parse_candidate("colour=red")
    with pytest.raises(ValueError, match="'wieght_decay=0.1' is not a NserTrainingArguments field"):
        parse_candidate(":wieght_decay=0.1")
    with pytest.raises(ValueError, match=r"\['use_decoder'\] change the cached backbone states"):
        parse_candidate("use_decoder=true")
    # the benchmark's --variant may change anything
    assert parse_settings("use_decoder=false:weight_decay=0.1", "--variant").config_overrides == "use_decoder=false"
    assert combined_overrides("use_decoder=false", parse_candidate("classifier_dropout=0.5")) == \
        "use_decoder=false,classifier_dropout=0.5"
    assert combined_overrides(None, parse_candidate("")) is None


def test_inner_folds_are_blocks_of_sorted_groups_each_held_out_once():
    assert inner_folds(["b", "a", "c", "a"], max_folds=4) == [["a"], ["b"], ["c"]]
    assert inner_folds([f"actor{i:02d}" for i in range(8)], max_folds=4) == [
        ["actor00", "actor01"], ["actor02", "actor03"], ["actor04", "actor05"], ["actor06", "actor07"]]
    with pytest.raises(ValueError, match="at least 2 training groups"):
        inner_folds(["a", "a"], max_folds=4)
    with pytest.raises(ValueError, match="--inner_cv_folds must be at least 2"):
        inner_folds(["a", "b"], max_folds=1)


def test_the_best_mean_held_out_score_wins_and_every_row_is_used_as_the_fold_says():
    train_groups = ["s1", "s1", "s2", "s3", "s3", "s1"]  # e.g. two noisy copies of three clips
    validation_groups = ["s1", "s2", "s3"]
    seen = []

    def score(candidate, train_rows, validation_rows, heldout_rows):
        seen.append((candidate.config_overrides, train_rows.tolist(), validation_rows.tolist(), heldout_rows.tolist()))
        held_out_s2 = heldout_rows.tolist() == [2, 7]
        return 0.5 if not candidate.config_overrides else (0.3 if held_out_s2 else 0.7)

    candidates = [parse_candidate(""), parse_candidate("classifier_dropout=0.5")]
    chosen, record = select_candidate(candidates, train_groups, validation_groups, max_folds=4, score=score)
    assert chosen == candidates[1]  # mean 0.57 against 0.5, although worse on s2
    assert record["folds"] == [["s1"], ["s2"], ["s3"]] and record["chosen"] == "classifier_dropout=0.5"
    assert record["scores"]["classifier_dropout=0.5"] == pytest.approx([0.7, 0.3, 0.7])
    # holding out s1: s2 and s3 train and validate, s1's training rows and its validation row (offset 6) are scored
    assert seen[0][1:] == ([2, 3, 4], [1, 2], [0, 1, 5, 6])
    assert len(seen) == 6
    tie, _ = select_candidate(candidates, train_groups, validation_groups, 4, lambda *args: 0.5)
    assert tie == candidates[0]  # ties: the first candidate


def test_a_held_out_fold_without_validation_clips_left_is_refused():
    with pytest.raises(ValueError, match="leaves no training or no validation clips"):
        select_candidate([parse_candidate("")], ["s1", "s2"], ["s1", "s1"], 4, lambda *a: 0.0)


def test_a_validation_group_that_does_not_train_is_never_held_out():
    folds = []
    select_candidate([parse_candidate("")], ["s1", "s2"], ["s9", "s9"], 4,
                     lambda c, train, validation, heldout: folds.append(validation.tolist()) or 0.0)
    assert folds == [[0, 1], [0, 1]]


def test_best_epoch_score_reads_the_held_out_score_of_the_best_validation_epoch():
    history = [{"loss": 1.0, "step": 2},
               {"eval_validation_macro_f1": 0.4, "step": 2}, {"eval_heldout_macro_f1": 0.30, "step": 2},
               {"eval_validation_macro_f1": 0.6, "step": 4}, {"eval_heldout_macro_f1": 0.35, "step": 4},
               {"eval_validation_macro_f1": 0.6, "step": 6}, {"eval_heldout_macro_f1": 0.90, "step": 6}]
    assert best_epoch_score(history, "eval_validation_macro_f1", "eval_heldout_macro_f1") == 0.35  # first of ties
    with pytest.raises(ValueError, match="no evaluation logged"):
        best_epoch_score([{"loss": 1.0, "step": 2}], "eval_validation_macro_f1", "eval_heldout_macro_f1")


def test_training_overrides_apply_to_a_copy(tmp_path):
    args = TrainingArguments(output_dir=str(tmp_path), weight_decay=0.05, report_to="none", use_cpu=True)
    changed = with_training_overrides(args, parse_candidate(":weight_decay=0.2,num_train_epochs=7"))
    assert (changed.weight_decay, changed.num_train_epochs) == (0.2, 7)
    assert (args.weight_decay, args.num_train_epochs) == (0.05, 3.0)
