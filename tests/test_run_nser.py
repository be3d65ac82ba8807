"""End-to-end tests of run_nser.py on a tiny random Whisper, a synthetic corpus and synthetic noise files."""

import contextlib
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import DatasetDict, load_from_disk
from huggingface_hub import ModelCard
from transformers import AutoModelForAudioClassification

import nser.experiment
import run_nser
from corpus_fixtures import make_corpus, make_noise_folder
from nser.ensemble import TEST_LOGITS_FILE, ensemble_rows
from nser.training import NserTrainer, inverse_frequency_weights
from tiny_models import LABELS, save_tiny_whisper

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("run-nser")
    return {
        "whisper": save_tiny_whisper(root / "whisper"),
        "corpus": make_corpus(root / "corpus"),
        "noise": make_noise_folder(root / "noise"),
        "cache": root / "cache",
    }


def arguments(assets, output_dir, *extra):
    return [
        "--model_name_or_path", str(assets["whisper"]), "--dataset_name", str(assets["corpus"]),
        "--noise_dir", str(assets["noise"]), "--output_dir", str(output_dir), "--feature_cache_dir", str(assets["cache"]),
        "--config_overrides", "use_decoder=false", "--num_train_epochs", "2", "--per_device_train_batch_size", "4",
        "--learning_rate", "1e-3", "--eval_strategy", "epoch", "--save_strategy", "epoch", "--load_best_model_at_end",
        "true", "--report_to", "none", "--test_snrs", "10", "0", "--use_cpu", "true", "--seed", "3", *extra,
    ]


def test_trains_evaluates_every_condition_and_writes_model_report_and_card(assets, tmp_path):
    bench_report = REPO / "bench" / "results" / "casia-development" / "robustness.md"
    result = run_nser.main(arguments(assets, tmp_path / "out", "--benchmark_reports", str(bench_report)))
    conditions = [row["condition"] for row in result["rows"]]
    assert conditions == ["clean", "hiss_10dB", "hiss_0dB", "hum_10dB", "hum_0dB", "white_10dB", "white_0dB"]
    assert all(row["num_examples"] == 8 and row["labels"] == LABELS for row in result["rows"])  # speaker s4 x 4 x 2
    report = tmp_path / "out" / "report"
    assert {p.name for p in report.iterdir()} == {"results.json", "results.md", "f1_vs_snr.png", "layer_weights.png"}
    saved = json.loads((report / "results.json").read_text())
    assert [row["condition"] for row in saved["rows"]] == conditions and len(saved["layer_weights"]["encoder"]) == 3
    model_dir = tmp_path / "out" / "model"
    card = ModelCard.load(model_dir / "README.md")
    assert card.data.pipeline_tag == "audio-classification"
    assert len(card.data.eval_results) == 3 * len(conditions)  # macro-F1, UA, WA per condition
    assert "## How the method compares" in card.text and "python -m bench.robustness --corpus casia --development" in card.text
    assert (model_dir / "handler.py").exists() and (model_dir / "results.json").exists()
    # Shareable as it is: no local path, every file readable, the integer-PCM-safe feature extractor.
    assert str(assets["whisper"]) not in (model_dir / "config.json").read_text() + card.text.split("## How to use")[0]
    assert "huggingface.co//" not in card.text
    assert all(path.stat().st_mode & 0o044 == 0o044 for path in model_dir.iterdir())
    assert json.loads((model_dir / "preprocessor_config.json").read_text())["auto_map"] == {
        "AutoFeatureExtractor": "feature_extraction_nser.NserFeatureExtractor"
    }
    loaded = AutoModelForAudioClassification.from_pretrained(model_dir, trust_remote_code=True)
    assert [loaded.config.id2label[i] for i in range(4)] == LABELS
    with open(tmp_path / "out" / "noise_split.csv") as f:
        recorded = {Path(row["path"]).name: row["split"] for row in csv.DictReader(f) if "synthetic" not in row["path"]}
    assert recorded == {"hiss0.wav": "train", "hiss1.wav": "test", "hum0.wav": "train", "hum1.wav": "test"}


def test_refuses_to_overwrite_a_finished_or_foreign_output_folder(assets, tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not empty"):
        run_nser.main(arguments(assets, foreign))
    assert (foreign / "notes.txt").read_text() == "keep me"


def run_interrupted_after_the_first_checkpoint(monkeypatch, argv):
    """run_nser.main(argv) stopped by a KeyboardInterrupt right after its first checkpoint is saved (the saver is
    restored afterwards)."""
    save = NserTrainer._save_checkpoint

    def save_then_crash(self, *args, **kwargs):
        save(self, *args, **kwargs)
        raise KeyboardInterrupt("simulated interruption after the first checkpoint")

    monkeypatch.setattr(NserTrainer, "_save_checkpoint", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        run_nser.main(argv)
    monkeypatch.setattr(NserTrainer, "_save_checkpoint", save)


def test_resumes_from_the_last_checkpoint_after_an_interruption(assets, tmp_path, monkeypatch):
    run_interrupted_after_the_first_checkpoint(monkeypatch, arguments(assets, tmp_path / "out"))
    assert [p.name for p in (tmp_path / "out").glob("checkpoint-*")] == ["checkpoint-8"]
    resumed_from = []
    original = nser.experiment.last_complete_checkpoint
    monkeypatch.setattr(nser.experiment, "last_complete_checkpoint", lambda d: resumed_from.append(original(d)) or resumed_from[-1])
    result = run_nser.main(arguments(assets, tmp_path / "out"))
    assert resumed_from == [str(tmp_path / "out" / "checkpoint-8")]
    assert result["trainer"].state.global_step == 16  # 2 epochs x (2 speakers x 4 labels x 2 clips x 2 noisy copies) / 4
    with pytest.raises(FileExistsError, match="finished run"):
        run_nser.main(arguments(assets, tmp_path / "out"))


def test_arguments_from_a_json_file(assets, tmp_path):
    config = {
        "model_name_or_path": str(assets["whisper"]), "dataset_name": str(assets["corpus"]),
        "noise_dir": str(assets["noise"]), "output_dir": str(tmp_path / "out"),
        "feature_cache_dir": str(assets["cache"]), "config_overrides": "use_decoder=false", "num_train_epochs": 1,
        "report_to": "none", "test_snrs": [5], "use_cpu": True,
    }
    (tmp_path / "args.json").write_text(json.dumps(config))
    result = run_nser.main([str(tmp_path / "args.json")])
    assert [row["condition"] for row in result["rows"]] == ["clean", "hiss_5dB", "hum_5dB", "white_5dB"]


def test_cross_validation_reports_mean_and_std_over_folds_with_the_decoder(assets, tmp_path):
    result = run_nser.main(arguments(
        assets, tmp_path / "out", "--cv_column", "speaker", "--config_overrides", "use_decoder=true,asr_language=en",
        "--num_train_epochs", "1", "--test_snrs", "0", "--test_noise_types", "white",
    ))
    assert result["fold_names"] == ["speaker-s1", "speaker-s2", "speaker-s3", "speaker-s4"]
    assert [row["condition"] for row in result["rows"]] == ["clean", "white_0dB"]
    assert {"macro_f1_mean", "macro_f1_std", "ua_mean"} <= set(result["rows"][0])
    assert not (tmp_path / "out" / "model").exists()
    assert all((tmp_path / "out" / f / "fold_results.json").exists() for f in result["fold_names"])


def test_lora_trains_on_the_fly_noise_and_saves_a_plain_model(assets, tmp_path):
    result = run_nser.main(arguments(
        assets, tmp_path / "out", "--use_lora", "true", "--lora_r", "2", "--num_train_epochs", "1",
        "--test_snrs", "0", "--test_noise_types", "white",
    ))
    state = result["trainer"].model.state_dict()
    assert not any("lora" in key for key in state)
    loaded = AutoModelForAudioClassification.from_pretrained(tmp_path / "out" / "model", trust_remote_code=True)
    assert set(loaded.state_dict()) == set(state)


def test_lora_after_head_fine_tunes_from_the_trained_head_and_keeps_its_feature_statistics(assets, tmp_path, monkeypatch):
    seen = {}
    lora_stage = nser.experiment.lora_stage

    def spy(trained, *args, **kwargs):  # the model as the head's stage leaves it
        seen["state"] = {key: value.clone() for key, value in trained.model.state_dict().items()}
        seen["columns"] = trained.train_dataset.column_names
        return lora_stage(trained, *args, **kwargs)

    monkeypatch.setattr(nser.experiment, "lora_stage", spy)
    out = tmp_path / "out"
    result = run_nser.main(arguments(
        assets, out, "--use_lora", "true", "--lora_after_head", "true", "--lora_r", "2", "--lora_epochs", "1",
        "--lora_learning_rate", "1e-2", "--test_snrs", "0", "--test_noise_types", "white",
    ))
    assert "encoder_layer_stats" in seen["columns"]  # the head trained on cached backbone states first
    final = result["trainer"].model.state_dict()
    assert set(final) == set(seen["state"])  # LoRA merged into the encoder: a plain model again
    statistics = [key for key in final if key.startswith("standardizers.")]
    assert statistics and all(torch.equal(final[key], seen["state"][key]) for key in statistics)
    changed = {key for key in final if not torch.equal(final[key], seen["state"][key])}
    assert any("encoder" in key and "q_proj.weight" in key for key in changed)  # LoRA updates folded in
    assert not any("k_proj" in key or "decoder" in key for key in changed)  # untargeted and unused weights stay
    assert result["trainer"].args.learning_rate == 1e-2 and result["trainer"].args.num_train_epochs == 1
    assert list((out / "lora").glob("checkpoint-*"))  # the LoRA stage's own checkpoints, apart from the head's
    assert [row["condition"] for row in result["rows"]] == ["clean", "white_0dB"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--lora_after_head", "true"], "needs --use_lora true"),
        (["--use_lora", "true", "--lora_after_head", "true", "--speaker_normalization", "true"], "--speaker_normalization"),
        (["--use_lora", "true", "--lora_after_head", "true", "--cache_features", "false"], "--cache_features true"),
    ],
)
def test_lora_after_head_refuses_what_its_two_stages_cannot_do(assets, tmp_path, extra, message):
    with pytest.raises(ValueError, match=message):
        run_nser.main(arguments(assets, tmp_path / "out", *extra))
    assert not (tmp_path / "out" / "model").exists()


@pytest.mark.parametrize(
    "extra, error, message",
    [
        (["--label_column_name", "emotion"], ValueError, "column 'emotion' not found"),
        (["--emotion_labels", "angry", "happy"], ValueError, r"labels \['neutral', 'sad'\] are not in"),
        (["--test_groups", "s9"], ValueError, r"groups \['s9'\] not found"),
        (["--config_overrides", "encoder_fusion=concat"], ValueError, "encoder_fusion"),
        (["--config_overrides", "colour=red"], ValueError, "config_overrides"),
        (["--test_snrs", "loud"], SystemExit, None),
        (["--push_to_hub", "true"], ValueError, "hub_model_id"),
        (["--benchmark_reports", "no/such/robustness.md"], FileNotFoundError, "no/such/robustness.md"),
        (["--push_to_hub", "true", "--hub_model_id", "me/nser"], ValueError, "HF_HUB_OFFLINE"),
    ],
)
def test_bad_arguments_get_a_clear_error_before_training(assets, tmp_path, extra, error, message):
    with pytest.raises(error, match=message):
        run_nser.main(arguments(assets, tmp_path / "out", *extra))
    assert not (tmp_path / "out" / "model").exists()


def test_push_without_a_token_fails_before_training(assets, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr("nser.hub.huggingface_hub.get_token", lambda: None)
    with pytest.raises(ValueError, match="token"):
        run_nser.main(arguments(assets, tmp_path / "out", "--push_to_hub", "true", "--hub_model_id", "me/nser"))
    assert not (tmp_path / "out").exists()


def test_empty_split_is_reported(assets, tmp_path):
    from datasets import load_from_disk

    corpus = load_from_disk(str(assets["corpus"]))
    corpus.filter(lambda row: False).save_to_disk(str(tmp_path / "empty"))
    flags = arguments(assets, tmp_path / "out")
    flags[flags.index("--dataset_name") + 1] = str(tmp_path / "empty")
    with pytest.raises(ValueError, match="split 'train' is empty"):
        run_nser.main(flags)


def test_two_cpu_processes_with_accelerate_write_one_set_of_outputs(assets, tmp_path):
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", str(REPO / "run_nser.py"),
        *arguments(assets, tmp_path / "out", "--num_train_epochs", "1", "--test_snrs", "0", "--test_noise_types", "white"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    completed = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert completed.stdout.count("Report: ") == 1
    rows = json.loads((tmp_path / "out" / "report" / "results.json").read_text())["rows"]
    assert [row["num_examples"] for row in rows] == [8, 8]
    assert (tmp_path / "out" / "model" / "model.safetensors").exists()


def test_tokenizer_is_saved_only_when_it_covers_the_vocabulary(assets, tmp_path, caplog):
    run_nser.save_tokenizer(assets["whisper"], tmp_path / "tiny", vocab_size=100)  # no tokenizer files there
    assert not (tmp_path / "tiny").exists() and "no tokenizer saved" in caplog.text
    whisper_base = REPO.parent / "shared" / "models" / "whisper-base"
    if not whisper_base.is_dir():
        pytest.skip(f"{whisper_base} absent: the real tokenizer cannot be checked")
    run_nser.save_tokenizer(str(whisper_base), tmp_path / "base", vocab_size=51865)
    assert (tmp_path / "base" / "tokenizer_config.json").exists()


def test_early_stopping_ends_training_when_validation_stops_improving(assets, tmp_path):
    result = run_nser.main(arguments(
        assets, tmp_path / "out", "--num_train_epochs", "6", "--learning_rate", "0", "--early_stopping_patience", "1",
        "--test_snrs", "0", "--test_noise_types", "white",
    ))
    assert result["trainer"].state.epoch == 2  # epoch 1 sets the best; epoch 2 does not improve on it with lr 0


def test_stage_hook_sees_extraction_training_and_inference(assets, tmp_path):
    calls = []

    def stage(name, clips):
        calls.append((name, clips))
        return contextlib.nullcontext()

    args = run_nser.parse_arguments(arguments(assets, tmp_path / "out", "--augment_copies", "2"))
    nser.experiment.run_experiment(*args, stage=stage)
    extraction = [clips for name, clips in calls if name == "extraction"]
    # train: 2 noisy copies of 16 clips; validation 8; test: clean + 3 noise types x 2 SNRs, 8 clips each
    assert extraction == [16, 16, 8] + [8] * 7
    assert ("training", 32) in calls and calls[-1] == ("inference", 7 * 8)
    assert [name for name, _ in calls].count("training") == 1


def test_cross_validation_then_one_final_model_trained_on_every_speaker(assets, tmp_path):
    out = tmp_path / "out"
    result = run_nser.main(arguments(
        assets, out, "--cv_column", "speaker", "--train_final_model", "true", "--num_train_epochs", "1",
        "--test_snrs", "0", "--test_noise_types", "white", "--save_test_logits", "true",
    ))
    assert result["fold_names"] == ["speaker-s1", "speaker-s2", "speaker-s3", "speaker-s4"]
    # 4 speakers x 4 labels x 2 clips: one clip of every (speaker, label) cell validates, the rest train (2 noisy copies)
    assert len(result["final_trainer"].train_dataset) == 2 * 16 and len(result["final_trainer"].eval_dataset) == 16
    assert len(result["trainer"].train_dataset) == 2 * 12  # a fold: three speakers train
    card = (out / "model" / "README.md").read_text()
    assert "cross-validation by `speaker` (4 folds): every speaker is tested once" in card
    assert "trained afterwards with the same settings on every speaker" in card
    model = AutoModelForAudioClassification.from_pretrained(out / "model", trust_remote_code=True)
    assert model.config.pool_before_fusion and model.config.standardize_features
    assert not torch.equal(model.standardizers["encoder"].std, torch.ones_like(model.standardizers["encoder"].std))
    report = json.loads((out / "report" / "results.json").read_text())
    assert report["rows"][0]["condition"] == "clean" and "macro_f1_std" in report["rows"][0]  # the fold mean
    for fold, rows in zip(result["fold_names"], result["folds"]):  # each fold's saved logits give its own rows back
        assert ensemble_rows([out / fold / TEST_LOGITS_FILE], LABELS) == rows
    assert not (out / "final-model" / TEST_LOGITS_FILE).exists()  # nothing is held out from the final model


def test_speaker_normalisation_is_transductive_and_needs_pooled_statistics(assets, tmp_path, enrolment_sizes):
    result = run_nser.main(arguments(
        assets, tmp_path / "out", "--speaker_normalization", "true", "--speaker_normalization_clips", "3",
        "--num_train_epochs", "1", "--test_snrs", "0", "--test_noise_types", "white",
    ))
    # training copies and validation use every clip of their speakers; each test condition (clean, white 0 dB) 3
    assert enrolment_sizes[-2:] == [3, 3] and set(enrolment_sizes[:-2]) == {None}
    card = (tmp_path / "out" / "model" / "README.md").read_text()
    assert "per-speaker normalisation (transductive)" in card and "from 3 of its clips per condition" in card
    train = result["trainer"].train_dataset
    values = np.asarray(train["encoder_layer_stats"], dtype=np.float32)
    np.testing.assert_allclose(values[: len(train) // 2].mean(axis=0), 0.0, atol=2e-2)  # speakers' means removed
    with pytest.raises(ValueError, match="--speaker_normalization needs cached pooled statistics"):
        run_nser.main(arguments(assets, tmp_path / "frames", "--speaker_normalization", "true", "--config_overrides",
                                "use_decoder=false,pool_before_fusion=false,standardize_features=false"))


def test_inner_cv_chooses_the_head_settings_on_the_training_speakers_and_a_resumed_run_keeps_the_choice(
        assets, tmp_path, monkeypatch):
    out = tmp_path / "out"
    candidates = ["", "classifier_dropout=0.0:num_train_epochs=1,weight_decay=0.3"]
    extra = ("--inner_cv_candidates", *candidates, "--test_snrs", "0", "--test_noise_types", "white")
    run_interrupted_after_the_first_checkpoint(monkeypatch, arguments(assets, out, *extra))
    assert not list(out.glob("inner-cv/checkpoint-*"))  # inner runs save no checkpoint
    record = json.loads((out / nser.experiment.INNER_CV_RESULTS).read_text())
    # the default split tests s4 and validates on s3: only the training speakers s1 and s2 are held out in turn
    assert record["group_column"] == "speaker" and record["folds"] == [["s1"], ["s2"]]
    assert record["candidates"] == ["(the run's settings)", candidates[1]] and set(record["scores"]) == set(record["candidates"])
    assert all(len(s) == 2 and all(0.0 <= v <= 1.0 for v in s) for s in record["scores"].values())
    means = {name: np.mean(scores) for name, scores in record["scores"].items()}
    assert record["chosen"] == max(means, key=means.get)
    monkeypatch.setattr(nser.experiment, "select_candidate", lambda *a, **k: pytest.fail("inner CV ran again"))
    result = run_nser.main(arguments(assets, out, *extra))  # resumes the fold's training with the recorded choice
    chosen_second = record["chosen"] == candidates[1]
    assert result["trainer"].args.weight_decay == (0.3 if chosen_second else 0.0)
    assert result["trainer"].model.config.classifier_dropout == (0.0 if chosen_second else 0.3)


def test_inner_cv_runs_weigh_the_classes_by_their_own_training_rows(assets, tmp_path, monkeypatch):
    corpus = load_from_disk(str(assets["corpus"]))  # s1 has no clip of the first label: s1 + s2 are uneven, s2 is not
    corpus.filter(lambda row: not (row["speaker"] == "s1" and row["label"] == 0)).save_to_disk(str(tmp_path / "uneven"))
    seen, real = [], nser.experiment.head_trainer

    def recording(model, args, train_dataset, *rest, **kwargs):
        trainer = real(model, args, train_dataset, *rest, **kwargs)
        seen.append((np.asarray(train_dataset["labels"]), trainer.class_weights))
        return trainer

    monkeypatch.setattr(nser.experiment, "head_trainer", recording)
    argv = arguments(assets, tmp_path / "out", "--inner_cv_candidates", "", "--class_weighted_loss", "true",
                     "--num_train_epochs", "1", "--test_snrs", "0", "--test_noise_types", "white")
    argv[argv.index("--dataset_name") + 1] = str(tmp_path / "uneven")
    run_nser.main(argv)
    assert len(seen) == 3  # the inner runs holding out s1 and s2, then the fold's own training
    for labels, weights in seen:
        torch.testing.assert_close(weights, inverse_frequency_weights(labels, len(LABELS)))
    inner_on_s2, inner_on_s1, fold = (weights for _, weights in seen)
    assert torch.equal(inner_on_s2, torch.ones(len(LABELS)))  # s2 alone is balanced
    assert inner_on_s1[0] == 0 and fold[0] > 1  # s1 alone lacks the label; the fold has it half as often


def test_inner_cv_refuses_candidates_that_change_the_cache_and_corpora_without_groups(assets, tmp_path):
    with pytest.raises(ValueError, match=r"'use_decoder=true'.*change the cached backbone states"):
        run_nser.main(arguments(assets, tmp_path / "out", "--inner_cv_candidates", "", "use_decoder=true"))
    with pytest.raises(ValueError, match="--inner_cv_folds must be at least 2"):
        run_nser.main(arguments(assets, tmp_path / "out", "--inner_cv_candidates", "", "--inner_cv_folds", "1"))
    corpus = load_from_disk(str(assets["corpus"]))
    anonymous = corpus.remove_columns("speaker").train_test_split(test_size=0.25, seed=0)
    DatasetDict(train=anonymous["train"], validation=anonymous["test"], test=anonymous["test"]).save_to_disk(str(tmp_path / "anon"))
    argv = arguments(assets, tmp_path / "talker", "--inner_cv_candidates", "", "--test_snrs", "0", "--test_noise_types", "white")
    argv[argv.index("--dataset_name") + 1] = str(tmp_path / "anon")
    with pytest.raises(ValueError, match="holds out groups of 'speaker'.*not a column"):
        run_nser.main(argv)


@pytest.mark.parametrize("cache", ["true", "false"])  # cached fixed draws, or a new noisy draw every epoch
def test_speaker_adversarial_training_reads_each_training_clips_speaker(assets, tmp_path, monkeypatch, cache):
    from modeling_nser import WhisperForNoisyEmotionClassification

    seen, losses, real = [], [], nser.experiment.head_trainer
    loss_of = WhisperForNoisyEmotionClassification.speaker_adversarial_loss

    def recording(model, args, train_dataset, *rest, **kwargs):
        seen.append((model.config.num_speakers, train_dataset))
        return real(model, args, train_dataset, *rest, **kwargs)

    def counted(model, embeddings, speaker_ids):
        losses.append(speaker_ids.tolist())
        return loss_of(model, embeddings, speaker_ids)

    monkeypatch.setattr(nser.experiment, "head_trainer", recording)
    monkeypatch.setattr(WhisperForNoisyEmotionClassification, "speaker_adversarial_loss", counted)
    result = run_nser.main(arguments(
        assets, tmp_path / "out", "--config_overrides", "use_decoder=false,speaker_adversarial_weight=0.5",
        "--cache_features", cache, "--num_train_epochs", "1", "--test_snrs", "0", "--test_noise_types", "white",
    ))
    (num_speakers, train_dataset), = seen
    assert num_speakers == 2  # s1 and s2 train (s3 validates, s4 is tested), 8 clips each, in corpus order
    copies = 2 if cache == "true" else 1  # --augment_copies fixed draws, or one view drawn anew every epoch
    assert [int(i) for i in train_dataset[:]["speaker_ids"]] == ([0] * 8 + [1] * 8) * copies
    assert losses and {i for batch in losses for i in batch} == {0, 1}  # in training only
    assert len(result["rows"]) == 2 and result["trainer"].model.config.speaker_adversarial_weight == 0.5


def test_speaker_adversarial_training_needs_the_speaker_column(assets, tmp_path):
    argv = arguments(assets, tmp_path / "out", "--config_overrides", "use_decoder=false,speaker_adversarial_weight=0.5",
                     "--cv_column", "speaker", "--speaker_column_name", "talker")
    with pytest.raises(ValueError, match="--speaker_column_name 'talker' is not a column"):
        run_nser.main(argv)
