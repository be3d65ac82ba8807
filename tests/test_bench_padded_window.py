"""bench/padded_window.py: the probe's scores per fold, bad columns and folds refused by name, a whole run on a tiny model."""

import numpy as np
import pytest

from bench import padded_window
from corpus_fixtures import make_corpus
from tiny_models import save_tiny_whisper


def test_probe_scores_each_fold_on_its_unseen_groups_only():
    rng = np.random.default_rng(0)
    labels = np.tile([0, 1, 2], 40)
    groups = np.repeat(["s1", "s2", "s3", "s4"], 30)
    x = rng.standard_normal((120, 5)) + 3 * np.eye(3, 5)[labels]  # separable by label, whatever the group
    scores, chosen = padded_window.probe_scores(x, labels, groups, [["s1"], ["s2"], ["s3"], ["s4"]], [0.01, 1.0], 3)
    assert len(scores) == len(chosen) == 4 and min(scores) > 90
    assert set(chosen) <= {0.01, 1.0}


def test_a_folder_that_is_no_saved_dataset_is_refused_by_name(tmp_path, capsys):
    with pytest.raises(SystemExit):
        padded_window.parse_args(["--dataset_dir", str(tmp_path)])
    assert f"--dataset_dir {tmp_path}: not a dataset saved by save_to_disk" in capsys.readouterr().err


def test_whole_run_prints_both_passes_and_both_statistics(tmp_path, capsys):
    whisper = save_tiny_whisper(tmp_path / "whisper")
    corpus = make_corpus(tmp_path / "corpus", per_label=3, seconds=0.5)
    padded_window.main(["--dataset_dir", str(corpus), "--model", str(whisper), "--cv_folds", "2", "--c_grid", "0.1",
                        "--inner_folds", "2", "--feature_cache_dir", str(tmp_path / "cache")])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "%" not in line and "---" not in line]
    assert [row.split(" | ")[:2] for row in rows] == [
        ["| real length (nser)", "mean_std"], ["| real length (nser)", "mean"],
        ["| 30 s padded window (Whisper)", "mean_std"], ["| 30 s padded window (Whisper)", "mean"]]
    assert all("s1+s2" in row and "s3+s4" in row for row in rows)
    assert sorted((tmp_path / "cache").glob("layer-stats-*.arrow"))  # both passes cached like any backbone state


@pytest.mark.parametrize("arguments, message", [
    (["--label_column", "speaker"], "--label_column 'speaker': not a ClassLabel column"),
    (["--label_column", "emotion"], "--label_column 'emotion': not a ClassLabel column"),
    (["--cv_folds", "5"], "--cv_folds 5: needs 2 to 4 folds"),
    (["--cv_column", "actor"], "--cv_column 'actor' not found"),
])
def test_bad_columns_and_folds_are_refused_by_name_before_any_whisper_pass(tmp_path, arguments, message):
    corpus = make_corpus(tmp_path / "corpus", per_label=1, seconds=0.3)
    with pytest.raises(SystemExit, match=message):
        padded_window.main(["--dataset_dir", str(corpus), "--model", str(tmp_path / "no-model"),
                            "--feature_cache_dir", str(tmp_path / "cache"), *arguments])
    assert not (tmp_path / "cache").exists()
