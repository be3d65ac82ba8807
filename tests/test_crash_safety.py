"""Crash safety (issue 14): `kill -9` run_nser.py while it caches features, trains, saves a checkpoint or saves its
outputs, then run the same command: it finishes with exactly the results of an uninterrupted run, no half-written
cache entry or checkpoint is read, and nothing of the user's in the output folder is lost."""

import importlib.util
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from datasets import Dataset
from safetensors.numpy import load_file

from corpus_fixtures import make_corpus, make_noise_folder
from nser.experiment import check_output_dir
from nser.resume import SAVING_MARKER, last_complete_checkpoint, saving_outputs
from tiny_models import save_tiny_whisper

REPO = Path(__file__).resolve().parents[1]
DRIVER = Path(__file__).with_name("crash_driver.py")


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("crash")
    return {"whisper": save_tiny_whisper(root / "whisper"), "corpus": make_corpus(root / "corpus"),
            "noise": make_noise_folder(root / "noise")}


def arguments(assets, output_dir, cache_dir):
    return [
        "--model_name_or_path", str(assets["whisper"]), "--dataset_name", str(assets["corpus"]),
        "--noise_dir", str(assets["noise"]), "--output_dir", str(output_dir), "--feature_cache_dir", str(cache_dir),
        "--config_overrides", "use_decoder=false", "--num_train_epochs", "2", "--per_device_train_batch_size", "4",
        "--per_device_eval_batch_size", "1", "--learning_rate", "1e-3", "--eval_strategy", "epoch",
        "--save_strategy", "epoch", "--load_best_model_at_end", "true", "--report_to", "none", "--test_snrs", "0",
        "--test_noise_types", "white", "--use_cpu", "true", "--seed", "3",
    ]


def run(assets, stop, output_dir, cache_dir, logs, timeout=180):
    """The same command each time, through tests/crash_driver.py: frozen at `stop` and killed with SIGKILL there
    (`stop="none"`: run to the end). Returns its output."""
    ready, log = logs / f"{output_dir.name}-{stop}.ready", logs / f"{output_dir.name}-{stop}.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "HF_EVALUATE_OFFLINE": "1", "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
    command = [sys.executable, str(DRIVER), stop, str(ready), "--", *arguments(assets, output_dir, cache_dir)]
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=logs, start_new_session=True)
        try:
            deadline = time.monotonic() + timeout
            while process.poll() is None and not ready.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            if ready.exists():
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30 if ready.exists() else 1)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    text = log.read_text()
    expected = 0 if stop == "none" else -signal.SIGKILL
    assert process.returncode == expected, f"{stop}: exit {process.returncode}\n{text[-4000:]}"
    return text


def same_arrow_tables(a, b):
    return Dataset.from_file(str(a)).data.table.equals(Dataset.from_file(str(b)).data.table)


def test_kill_9_while_caching_training_checkpointing_and_saving_then_the_same_command_finishes_the_same(assets, tmp_path):
    reference, reference_cache = tmp_path / "reference", tmp_path / "cache-reference"
    run(assets, "none", reference, reference_cache, tmp_path)
    out, cache = tmp_path / "out", tmp_path / "cache"

    # 1. Killed while caching the 2nd training copy's backbone states: datasets writes them to a temporary file
    # (tmpXXXXXXXX, renamed to the cache name only once whole), so only the finished 1st copy has a cache entry.
    run(assets, "caching", out, cache, tmp_path)
    finished = list(cache.glob("layer-*.arrow"))
    assert len(finished) == 1 and Dataset.from_file(str(finished[0])).num_rows == 16
    orphan = next(p for p in cache.iterdir() if p not in finished)
    assert [p.name[:3] for p in cache.iterdir() if p not in finished] == ["tmp"] and orphan.stat().st_size > 0

    # 2. Killed at step 11 (after checkpoint-8): the finished entry was reused, the half-written one recomputed.
    log = run(assets, "training", out, cache, tmp_path)
    assert log.count("reusing cached backbone states") == 1 and str(finished[0]) in log
    assert [p.name for p in out.glob("checkpoint-*")] == ["checkpoint-8"]
    (out / "notes.txt").write_text("the user's notes")  # something of the user's, put in the folder meanwhile

    # 3. Killed while saving checkpoint-16 (weights and optimizer written, trainer_state.json not yet).
    log = run(assets, "checkpoint", out, cache, tmp_path)
    assert "resuming the interrupted run" in log
    half = out / "checkpoint-16"
    assert (half / "model.safetensors").exists() and not (half / "trainer_state.json").exists()

    # 4. Killed while saving the outputs: checkpoint-16 is skipped, training resumes from checkpoint-8 and ends;
    # the kill comes after results.json and most of the model folder are written.
    log = run(assets, "saving", out, cache, tmp_path)
    assert f"skipping {half}: incomplete (no trainer_state.json" in log
    assert (out / "report" / "results.json").exists() and (out / SAVING_MARKER).exists()
    (out / "report" / "keep.md").write_text("mine too")

    # 5. The same command again: not taken for a finished run; it resumes from the (now whole) checkpoint-16,
    # evaluates and saves again.
    log = run(assets, "none", out, cache, tmp_path)
    assert "saving the report and model was interrupted" in log
    assert f"skipping {half}" not in log

    # Exactly the uninterrupted run's results, report, model and feature cache.
    for name in ("report/results.json", "fold_results.json", "noise_split.csv", "model/results.json"):
        assert (out / name).read_text() == (reference / name).read_text(), name
    assert json.loads((out / "report" / "results.json").read_text())["rows"][0]["condition"] == "clean"
    weights, expected = load_file(out / "model" / "model.safetensors"), load_file(reference / "model" / "model.safetensors")
    assert weights.keys() == expected.keys() and all(np.array_equal(weights[k], expected[k]) for k in expected)
    assert sorted(p.name for p in (out / "model").iterdir()) == sorted(p.name for p in (reference / "model").iterdir())
    assert (out / "model" / "config.json").read_text() == (reference / "model" / "config.json").read_text()
    assert sorted(p.name for p in cache.glob("layer-*")) == sorted(p.name for p in reference_cache.glob("layer-*"))
    assert all(same_arrow_tables(p, reference_cache / p.name) for p in cache.glob("layer-*"))
    assert last_complete_checkpoint(out) == str(half)
    # The user's files are untouched; the only leftover is datasets' orphaned temporary file, never read.
    assert (out / "notes.txt").read_text() == "the user's notes" and (out / "report" / "keep.md").read_text() == "mine too"
    assert orphan.exists() and not (out / SAVING_MARKER).exists()
    with pytest.raises(FileExistsError, match="finished run"):
        check_output_dir(out, overwrite=False)


def _write_checkpoint(folder, state="{\"global_step\": 8}"):
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"weights")
    if state is not None:
        (folder / "trainer_state.json").write_text(state)


def test_resume_skips_half_written_checkpoints_and_restarts_without_a_whole_one(tmp_path, caplog):
    _write_checkpoint(tmp_path / "checkpoint-8")
    _write_checkpoint(tmp_path / "checkpoint-16", state=None)
    _write_checkpoint(tmp_path / "checkpoint-24", state='{"global_step": 24, "log_hist')
    (tmp_path / "checkpoint-32").write_text("a file, not a checkpoint folder")
    with caplog.at_level(logging.WARNING):
        assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-8")
    assert "checkpoint-24: incomplete (trainer_state.json is truncated" in caplog.text
    assert "checkpoint-16: incomplete (no trainer_state.json" in caplog.text
    (tmp_path / "checkpoint-8" / "trainer_state.json").unlink()
    assert last_complete_checkpoint(tmp_path) is None  # training starts again from the beginning
    assert last_complete_checkpoint(tmp_path / "absent") is None


def test_only_an_interrupted_save_of_ours_is_redone_and_only_its_report_files_go(tmp_path):
    folder = tmp_path / "finished"
    (folder / "report").mkdir(parents=True)
    for name in ("results.json", "results.md", "mine.txt"):
        (folder / "report" / name).write_text(name)
    with pytest.raises(FileExistsError, match="finished run"):  # no mark: a finished run (or the user's files)
        check_output_dir(folder, overwrite=False)
    assert sorted(p.name for p in (folder / "report").iterdir()) == ["mine.txt", "results.json", "results.md"]
    with pytest.raises(KeyboardInterrupt), saving_outputs(folder):  # a save that did not end: the mark stays
        raise KeyboardInterrupt
    check_output_dir(folder, overwrite=False)  # resumable now
    assert [p.name for p in (folder / "report").iterdir()] == ["mine.txt"] and (folder / SAVING_MARKER).exists()
    with saving_outputs(folder):
        pass
    assert not (folder / SAVING_MARKER).exists()


def _load_atomic():
    """nser/atomic.py alone (importing the nser package would load transformers in the child process)."""
    spec = importlib.util.spec_from_file_location("atomic", REPO / "nser" / "atomic.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_atomic_write_killed_midway_leaves_the_old_file_whole(tmp_path):
    target = tmp_path / "fold_results.json"
    target.write_text('{"old": true}')
    ready = tmp_path / "ready"
    child = (
        "import importlib.util, os, sys, time, pathlib\n"
        f"spec = importlib.util.spec_from_file_location('atomic', {str(REPO / 'nser' / 'atomic.py')!r})\n"
        "atomic = importlib.util.module_from_spec(spec); spec.loader.exec_module(atomic)\n"
        f"def freeze(fd): pathlib.Path({str(ready)!r}).write_text('x'); time.sleep(600)\n"
        "os.fsync = freeze\n"
        f"atomic.write_text_atomic({str(target)!r}, '{{\"new\": ' + '1, ' * 100000 + '1}}')\n"
    )
    process = subprocess.Popen([sys.executable, "-c", child], start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert ready.exists(), f"child exited with {process.poll()}"
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert json.loads(target.read_text()) == {"old": True}
    leftovers = [p.name for p in tmp_path.iterdir() if p.name not in ("fold_results.json", "ready")]
    assert len(leftovers) == 1 and leftovers[0].startswith(".fold_results.json.") and leftovers[0].endswith(".tmp")


def test_atomic_write_replaces_with_an_ordinary_file_mode_and_cleans_up_on_error(tmp_path):
    atomic = _load_atomic()
    target = tmp_path / "results.json"
    target.write_text("old")
    atomic.write_text_atomic(target, "new ✓")
    umask = os.umask(0)
    os.umask(umask)
    assert target.read_text(encoding="utf-8") == "new ✓" and target.stat().st_mode & 0o777 == 0o666 & ~umask
    with pytest.raises(TypeError):
        atomic.write_bytes_atomic(target, "not bytes")
    assert target.read_text(encoding="utf-8") == "new ✓" and [p.name for p in tmp_path.iterdir()] == ["results.json"]
