"""bench/robustness.py: the table and aggregation helpers on synthetic rows, every system end to end on a tiny random
Whisper and a synthetic corpus (seconds), and the `--quick` smoke run on whisper-base and CASIA."""

import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from datasets import DatasetDict, concatenate_datasets, load_from_disk
from transformers import WhisperForAudioClassification

from bench import robustness, systems
from corpus_fixtures import make_corpus, make_noise_folder
from nser.ensemble import ensemble_rows
from tiny_models import save_tiny_whisper, tiny_whisper_config

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
WHISPER_BASE = SHARED / "models" / "whisper-base"
CASIA = SHARED / "data" / "casia"
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_EVALUATE_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
# `--quick` took 3.0 min on a 2-core machine busy with two other jobs (load ~4, one torch thread) and should take
# about 1-1.5 min on a quiet one; the limit lets a busy CI machine through but not a hang.
QUICK_LIMIT_S = 600

try:
    import opensmile  # noqa: F401

    HAS_OPENSMILE = True
except ImportError:
    HAS_OPENSMILE = False


# ------------------------------------------------------------------------------------------ synthetic rows
def row(noise_type, snr_db, f1, labels=("a", "b")):
    condition = "clean" if snr_db is None else f"{noise_type}_{snr_db:g}dB"
    return {"condition": condition, "noise_type": noise_type, "snr_db": snr_db, "num_examples": 10, "ua": f1 / 2,
            "wa": f1, "macro_f1": f1, "weighted_f1": f1, "confusion_matrix": [[5, 0], [0, 5]], "labels": list(labels)}


def seed_rows(clean, babble, white):
    """`babble`/`white`: {snr: macro-F1}."""
    rows = [row("clean", None, clean)]
    rows += [row("babble", float(s), v) for s, v in babble.items()]
    rows += [row("white", float(s), v) for s, v in white.items()]
    return rows


TWO_SEEDS = [
    seed_rows(0.6, {10: 0.5, 0: 0.4}, {10: 0.3, 0: 0.2}),
    seed_rows(0.8, {10: 0.5, 0: 0.2}, {10: 0.5, 0: 0.2}),
]


def test_snr_summary_averages_noise_types_per_seed_then_takes_mean_and_std_over_seeds():
    summary = robustness.snr_summary(TWO_SEEDS, "macro_f1", ["babble", "white"], [10.0, 0.0])
    assert summary["clean"] == pytest.approx((0.7, math.sqrt(0.02)), abs=1e-12)
    assert summary[10.0] == pytest.approx((0.45, math.sqrt(0.005)), abs=1e-12)  # seeds: 0.4, 0.5
    assert summary[0.0] == pytest.approx((0.25, math.sqrt(0.005)), abs=1e-12)  # seeds: 0.3, 0.2
    assert summary["noisy avg"] == pytest.approx((0.35, 0.0), abs=1e-12)  # both seeds 0.35
    assert robustness.snr_summary(TWO_SEEDS, "ua", ["babble"], [0.0])[0.0] == pytest.approx((0.15, math.sqrt(0.005)), abs=1e-12)


def test_snr_summary_never_averages_over_a_different_set_of_conditions():
    rows = [seed_rows(0.6, {10: 0.5, 0: 0.4}, {0: 0.2})]  # white at 10 dB missing
    summary = robustness.snr_summary(rows, "macro_f1", ["babble", "white"], [10.0, 0.0])
    assert summary[10.0] is None and summary["noisy avg"] is None
    assert summary[0.0] == pytest.approx((0.3, 0.0), abs=1e-12)


def spec(key="nser_enc", number="4", **overrides):
    values = {"title": "nser encoder layer adapter", "kind": "nser", "dataset_dir": "data/x",
              "subset": {"train": None, "validation": None, "test": None}, "snrs": [10.0, 0.0], "seeds": [0, 1],
              "learned_layer_weights": True}
    return systems.SystemSpec(key, number, **{**values, **overrides})


def test_summary_table_has_one_row_per_system_with_mean_and_std():
    results = [{"rows": rows, "seed": s} for s, rows in enumerate(TWO_SEEDS)]
    partial = [{"rows": [r for r in TWO_SEEDS[0] if r["snr_db"] != 10.0], "seed": 0}]
    table = robustness.summary_table(
        [(spec(), results, {"test": 10}), (spec("wfac", "3", title="WFAC", kind="wfac"), partial, {"test": 4})],
        "macro_f1", ["babble", "white"], [10.0, 0.0],
    )
    lines = table.splitlines()
    assert lines[2] == "| system | test clips | seeds | clean | 10 dB | 0 dB | noisy avg |"
    assert lines[4] == "| (4) nser encoder layer adapter | 10 | 2 | 70.0 ± 14.1 | 45.0 ± 7.1 | 25.0 ± 7.1 | 35.0 ± 0.0 |"
    assert lines[5] == "| (3) WFAC | 4 | 1 | 60.0 ± 0.0 | – | 30.0 ± 0.0 | – |"


def test_library_aggregate_and_markdown_table_take_the_per_seed_rows():
    table = robustness.markdown_table(robustness.aggregate(TWO_SEEDS), "macro_f1")
    assert table.splitlines()[0] == "| Macro-F1 (%) | clean | 10 dB | 0 dB |"  # the summary table's order
    assert "| babble | – | 50.0 ± 0.0 | 30.0 ± 14.1 |" in table


def test_layer_weight_table_and_cost_rows():
    results = [
        {"rows": [], "layer_weights": {"encoder": [0.2, 0.8]}, "wall_s": 10.0,
         "stages": {"extraction": {"seconds": 4.0, "clips": 40, "reused_clips": 0, "peak_rss_mb": 900.0},
                    "training": {"seconds": 2.0, "clips": 100, "reused_clips": 0, "peak_rss_mb": 950.0},
                    "inference": {"seconds": 1.0, "clips": 30, "reused_clips": 0, "peak_rss_mb": 800.0}}},
        {"rows": [], "layer_weights": {"encoder": [0.4, 0.6]}, "wall_s": 6.0,
         "stages": {"extraction": {"seconds": 0.5, "clips": 0, "reused_clips": 40, "peak_rss_mb": 700.0},
                    "training": {"seconds": 4.0, "clips": 100, "reused_clips": 0, "peak_rss_mb": 700.0},
                    "inference": {"seconds": 1.0, "clips": 30, "reused_clips": 0, "peak_rss_mb": 700.0}}},
    ]
    table = robustness.layer_weight_table([(spec(), results, {})])
    assert table.splitlines()[2] == "| (4) nser_enc | encoder | 0.30 ± 0.14 | 0.70 ± 0.14 |"
    cost = robustness.cost_rows(spec(), results)
    assert cost == {"extraction_s": 4.5, "clips_computed": 40, "clips_reused": 40, "ms_per_computed_clip": 112.5,
                    "training_s_per_seed": 3.0, "training_examples": 100, "inference_s_per_seed": 1.0,
                    "inference_clips": 30, "wall_s": 16.0, "peak_rss_mb": 950.0}


def test_plan_estimate_prices_decoder_systems_by_their_asr_settings_and_shares_only_identical_caches(monkeypatch):
    monkeypatch.setattr(robustness, "_cpu_has_native_bfloat16", lambda: True)
    asr = "use_decoder=true,asr_language=zh"
    fast = f"{asr},asr_window_seconds=10,asr_dtype=bfloat16"
    specs = [spec("nser_default", config_overrides="use_decoder=false"), spec("nser_default_encdec", "Nd", config_overrides=asr),
             spec("nser_default_encdec_clean", "Ndc", config_overrides=asr, train_with_noise=False),
             spec("nser_default_encdec_prompt", "Nd-p", config_overrides=f"{asr},decoder_input=prompt")]
    sizes = {s.key: {"train": 100, "validation": 10, "test": 50} for s in specs}

    def minutes(systems_):
        return robustness.estimate_minutes(systems_, sizes, ["babble"], augment_copies=2, epochs=1)

    alone = {s.key: minutes([s])[s.key] for s in specs}
    together = minutes(specs)
    # the decoder pass is priced as such (it was priced as the encoder's), the prompt-only pass in between
    assert alone["nser_default"] < alone["nser_default_encdec_prompt"] < alone["nser_default_encdec"]
    # (N)'s cache does not serve (Nd); (Nd)'s serves (Ndc)'s test clips (clean + babble at 2 SNRs), not its clean training
    assert together["nser_default_encdec"] == pytest.approx(alone["nser_default_encdec"])
    test_extraction_min = 50 * 3 * (robustness.COST_PER_CLIP_S["decoder"] + robustness.AUDIO_PREP_S) / 60
    assert together["nser_default_encdec_clean"] == pytest.approx(alone["nser_default_encdec_clean"] - test_extraction_min)
    # a shorter bfloat16 window costs less than the exact one
    faster = spec("nser_default_encdec", "Nd", config_overrides=fast)
    assert minutes([faster])["nser_default_encdec"] < alone["nser_default_encdec"] / 2
    # no overrides is NserConfig's default, which runs the decoder at the exact window
    assert minutes([spec("nser_default_encdec", "Nd")])["nser_default_encdec"] == pytest.approx(alone["nser_default_encdec"])


def test_plan_estimate_prices_bfloat16_as_emulated_on_a_cpu_without_native_bfloat16(monkeypatch):
    asr = "use_decoder=true,asr_language=zh"
    sizes = {"nser_default_encdec": {"train": 100, "validation": 10, "test": 50}}

    def minutes(overrides):
        one = spec("nser_default_encdec", "Nd", config_overrides=overrides)
        return robustness.estimate_minutes([one], sizes, ["babble"], augment_copies=2, epochs=1)["nser_default_encdec"]

    settings = {"exact float32": asr, "10 s float32": f"{asr},asr_window_seconds=10",
                "10 s bfloat16": f"{asr},asr_window_seconds=10,asr_dtype=bfloat16", "30 s bfloat16": f"{asr},asr_dtype=bfloat16"}
    monkeypatch.setattr(robustness, "_cpu_has_native_bfloat16", lambda: True)
    native = {name: minutes(overrides) for name, overrides in settings.items()}
    monkeypatch.setattr(robustness, "_cpu_has_native_bfloat16", lambda: False)
    emulated = {name: minutes(overrides) for name, overrides in settings.items()}
    # float32 is priced the same on both CPUs; bfloat16 costs more than the exact float32 window where it is emulated
    for name in ("exact float32", "10 s float32"):
        assert emulated[name] == pytest.approx(native[name])
    assert native["10 s bfloat16"] < native["exact float32"] < emulated["10 s bfloat16"] < emulated["30 s bfloat16"]
    assert native["30 s bfloat16"] < native["exact float32"]


def test_stratified_subsets_are_balanced_nested_and_fixed():
    labels = [0] * 10 + [1] * 10 + [2] * 4
    six = robustness.stratified_indices(labels, 6, seed=0)
    twelve = robustness.stratified_indices(labels, 12, seed=0)
    assert sorted(np.bincount([labels[i] for i in six])) == [2, 2, 2]
    assert np.bincount([labels[i] for i in twelve]).tolist() == [4, 4, 4]
    assert set(six) < set(twelve) and six == sorted(six)  # a smaller subset is part of a larger one
    assert robustness.stratified_indices(labels, 6, seed=0) == six != robustness.stratified_indices(labels, 6, seed=1)
    assert robustness.stratified_indices(labels, None, seed=0) == list(range(24))


def test_presets_fill_only_what_the_command_line_leaves_unset():
    quick = robustness.parse_args(["--quick"])
    assert (quick.seeds, quick.epochs, quick.snrs, quick.noise_types) == ([0], 1, [0.0], ["babble", "white"])
    assert (quick.max_train_samples, quick.decoder_max_test_samples, quick.output_dir) == (24, 4, "outputs/bench-quick")
    custom = robustness.parse_args(["--quick", "--seeds", "3", "4", "--max_test_samples", "0"])
    assert custom.seeds == [3, 4] and custom.max_test_samples is None
    full = robustness.parse_args([])
    assert full.seeds == [0, 1, 2] and full.snrs == [20.0, 10.0, 5.0, 0.0, -5.0] and full.language == "zh"
    assert robustness.parse_args(["--budget"]).augment_copies == 1
    assert robustness.parse_args(["--corpus", "ravdess"]).language == "en"
    assert (full.train_snr_low, full.train_snr_high) == (0.0, 20.0)
    assert robustness.parse_args(["--train_snr_low", "-5"]).train_snr_low == -5.0


def test_an_inverted_training_snr_range_is_refused_by_name_before_any_work(tiny_assets, tmp_path):
    argv = tiny_arguments(tiny_assets, tmp_path, "--train_snr_low", "10", "--train_snr_high", "5")
    with pytest.raises(SystemExit) as refused:  # nser.preflight's noise-argument check, as for run_nser.py
        robustness.main(argv)
    assert "--train_snr_low 10.0 is above --train_snr_high 5.0" in str(refused.value)
    assert not (tmp_path / "data").exists() and not (tmp_path / "cache").exists()


def test_resource_meter_accumulates_time_and_memory_per_stage():
    with systems.ResourceMeter(interval=0.01) as meter:
        with meter.stage("extraction") as record:
            time.sleep(0.03)
            record["clips"] += 2
        with meter.stage("extraction"), meter.stage("inner"):
            time.sleep(0.02)
    assert meter.records["extraction"]["seconds"] >= 0.05 and meter.records["extraction"]["clips"] == 2
    assert meter.records["inner"]["peak_rss_mb"] > 0 and meter.records["inner"]["seconds"] < meter.records["extraction"]["seconds"]


def test_wfac_head_on_pooled_layer_means_equals_the_models_own_logits():
    config = tiny_whisper_config()
    config.use_weighted_layer_sum, config.num_labels, config.classifier_proj_size = True, 3, 8
    torch.manual_seed(0)
    model = WhisperForAudioClassification(config).eval()
    with torch.no_grad():
        model.layer_weights.copy_(torch.tensor([0.5, -1.0, 2.0]))  # not uniform: the weighting must matter
    extractor = systems.padded_feature_extractor(config)
    generator = torch.Generator().manual_seed(1)
    clips = [0.1 * torch.randn(n, generator=generator) for n in (8000, 12000, 20000)]
    pooled = systems.pooled_layer_means(model, extractor, clips, batch_size=2)
    features = extractor([c.numpy() for c in clips], sampling_rate=16000, return_tensors="pt").input_features
    assert features.shape == (3, 80, 200) and pooled.shape == (3, 3, 16)
    with torch.no_grad():
        expected = model(input_features=features).logits
        got = systems.wfac_logits(model, torch.as_tensor(pooled))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_logistic_regression_takes_c_from_validation():
    rng = np.random.default_rng(0)
    train_y, val_y = np.repeat([0, 1, 2], 20), np.repeat([0, 1, 2], 10)
    train_x = rng.standard_normal((60, 5)) + 2 * train_y[:, None]
    val_x = rng.standard_normal((30, 5)) + 2 * val_y[:, None]
    pipeline, c, score = systems.fit_logistic_regression(train_x, train_y, val_x, val_y, (0.01, 1.0))
    assert c in (0.01, 1.0) and score == systems._macro_f1(val_y, pipeline.predict(val_x)) > 0.8


@pytest.mark.skipif(not HAS_OPENSMILE, reason="opensmile not installed (pip install -r bench/requirements.txt)")
def test_egemaps_gives_88_finite_functionals_per_clip():
    t = torch.arange(16000) / 16000
    clips = [0.3 * torch.sin(2 * math.pi * f * t) * (1 + torch.sin(2 * math.pi * 3 * t)) for f in (180.0, 240.0)]
    features = systems.egemaps_features(clips)
    assert features.shape == (2, 88) and np.isfinite(features).all()
    assert not np.array_equal(features[0], features[1])


# ------------------------------------------------------------------------------------------ tiny end to end
@pytest.fixture(scope="module")
def tiny_assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench-robustness")
    corpus = load_from_disk(str(make_corpus(root / "corpus", per_label=3)))
    by_speaker = {s: corpus.filter(lambda x, s=s: x == s, input_columns="speaker") for s in ("s1", "s2", "s3", "s4")}
    splits = DatasetDict({"train": concatenate_datasets([by_speaker["s1"], by_speaker["s2"]]),
                          "validation": by_speaker["s3"], "test": by_speaker["s4"]})
    splits.save_to_disk(str(root / "dataset"))
    return {"whisper": save_tiny_whisper(root / "whisper"), "dataset": root / "dataset",
            "noise": make_noise_folder(root / "noise")}


def tiny_arguments(assets, output_dir, *extra):
    chosen = ["whisper_last", "probe", "wfac", "nser_enc", "nser_encdec", "nser_enc_clean", "nser_default",
              "nser_default_speaker_norm"] + (["egemaps"] if HAS_OPENSMILE else [])
    return ["--model", str(assets["whisper"]), "--dataset_dir", str(assets["dataset"]), "--noise_dir", str(assets["noise"]),
            "--output_dir", str(output_dir), "--feature_cache_dir", str(output_dir / "cache"), "--language", "en",
            "--noise_types", "hum", "white", "--snrs", "10", "0", "--seeds", "0", "1", "--epochs", "2",
            "--augment_copies", "1", "--padded_max_test_samples", "6", "--decoder_max_train_samples", "8",
            "--decoder_max_validation_samples", "4", "--decoder_max_test_samples", "4", "--decoder_snrs", "0",
            "--frame_snrs", "0", "--systems", *chosen, *extra]


def summary_rows(markdown):
    """{system cell: [cells]} of the first summary table (macro-F1)."""
    section = markdown.split("## Summary")[1].split("UA (%)")[0]
    rows = [line for line in section.splitlines() if line.startswith("| (")]
    return {cells[0]: cells[1:] for cells in ([c.strip() for c in line.strip("|").split("|")] for line in rows)}


def test_every_system_runs_end_to_end_on_a_tiny_whisper_and_reuses_finished_runs(tiny_assets, tmp_path, capsys):
    payload = robustness.main(tiny_arguments(tiny_assets, tmp_path))
    markdown = (tmp_path / "robustness.md").read_text()
    keys = [s["spec"]["key"] for s in payload["systems"]]
    expected = ["egemaps"] if HAS_OPENSMILE else []
    expected += ["whisper_last", "probe", "wfac", "nser_enc_on_trainall-validationall-test6", "nser_enc", "nser_encdec",
                 "nser_enc_on_train8-validation4-test4", "nser_enc_clean", "nser_default", "nser_default_speaker_norm"]
    assert keys == expected
    summary = summary_rows(markdown)
    assert len(summary) == len(keys)
    for cells in summary.values():  # test clips, seeds, clean, 10 dB, 0 dB, noisy avg
        assert cells[1] in ("1", "2")
        for cell in cells[2:]:
            assert cell == "–" or re.fullmatch(r"\d+\.\d ± \d+\.\d", cell), cells
    decoder = next(cells for name, cells in summary.items() if name.startswith("(5)"))
    assert decoder[0] == "4" and decoder[3] == "–" and decoder[4] != "–"  # test clips; no 10 dB; 0 dB present
    for number in ("(4)", "(6)"):  # the frame-level systems at --frame_snrs only
        frame = next(cells for name, cells in summary.items() if name.startswith(number))
        assert frame[3] == "–" and frame[4] != "–"
    control = next(cells for name, cells in summary.items() if name.startswith("(4*)"))
    assert control[3] != "–"  # a matched control keeps the main SNRs
    # each system's section names its training recipe, not only the shared one in Hyperparameters
    assert ("`nser_default`: nser, `use_decoder=false`, training "
            "`weight_decay=0.05,label_smoothing_factor=0.1,num_train_epochs=20`;") in markdown
    for system in payload["systems"]:
        conditions = {row["condition"] for row in system["aggregated"]}
        snrs = system["spec"]["snrs"]
        assert conditions == {"clean"} | {f"{n}_{s:g}dB" for n in ("hum", "white") for s in snrs}
        assert all(math.isfinite(row["macro_f1_mean"]) and math.isfinite(row["ua_mean"]) for row in system["aggregated"])
        assert len(system["results"]) == (1 if system["spec"]["kind"] in ("egemaps", "probe") else 2)
    cost = {s["spec"]["key"]: s["cost"] for s in payload["systems"]}
    sizes = next(s["sizes"] for s in payload["systems"] if s["spec"]["key"] == "wfac")
    for key in ("training_examples", "inference_clips"):  # per seed, as for the nser control on the same clips
        assert cost["wfac"][key] == cost["nser_enc_on_trainall-validationall-test6"][key] > 0
    assert cost["wfac"]["clips_computed"] == (cost["wfac"]["training_examples"] + sizes["validation"] + cost["wfac"]["inference_clips"])
    # the probe and the default head read the statistics cache that the default head wrote first
    assert cost["probe"]["clips_computed"] == 0 < cost["nser_default"]["clips_computed"]
    assert cost["probe"]["clips_reused"] == cost["probe"]["training_examples"] + cost["probe"]["inference_clips"]
    probe = next(s for s in payload["systems"] if s["spec"]["key"] == "probe")["results"][0]["selection"]
    assert probe["C"] in probe["c_grid"] and probe["inner_folds"] == 2  # grouped by the two training speakers
    weights = {s["spec"]["key"]: s["results"][0]["layer_weights"] for s in payload["systems"]}
    assert len(weights["nser_enc"]["encoder"]) == 3 and set(weights["nser_encdec"]) == {"encoder", "decoder"}
    assert len(weights["nser_default"]["encoder"]) == 3
    assert sum(weights["wfac"]["encoder"]) == pytest.approx(1.0)
    for name in ("robustness.json", "f1_vs_snr.png", "layer_weights.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert not list(tmp_path.glob("*/seed-*/checkpoint-*"))  # checkpoints removed, results kept
    out = capsys.readouterr().out
    assert out.startswith(f"Command: `python -m bench.robustness --model {tiny_assets['whisper']}")
    assert "Plan (" in out.split("# Noise robustness")[0] and "{'loss'" not in out  # Trainer logs go to stderr

    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.glob("*/seed-*/bench_result.json")}
    again = robustness.main(tiny_arguments(tiny_assets, tmp_path))
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # nothing recomputed
    assert [s["aggregated"] for s in again["systems"]] == [s["aggregated"] for s in payload["systems"]]


def test_leave_one_speaker_out_tests_every_speaker_once_and_averages_each_seed_over_folds(tiny_assets, tmp_path):
    argv = tiny_arguments(tiny_assets, tmp_path)
    argv = argv[:argv.index("--systems")] + ["--systems", "whisper_last", "nser_enc", "--cv_column", "speaker",
                                             "--validation_fraction", "0.34"]
    payload = robustness.main(argv)
    markdown = (tmp_path / "robustness.md").read_text()
    folds = ["speaker-s1", "speaker-s2", "speaker-s3", "speaker-s4"]
    assert payload["folds"] == folds
    folders = sorted(p.name for p in (tmp_path / "data").iterdir())  # no unused subsets
    assert [re.sub(r"-[0-9a-f]{6}$", "", name) for name in folders] == [f"dataset-{fold}" for fold in folds]
    everything = sum(len(ds) for ds in load_from_disk(str(tiny_assets["dataset"])).values())
    for folder, test_speaker in zip(folders, ("s1", "s2", "s3", "s4")):
        corpus = load_from_disk(str(tmp_path / "data" / folder))
        others = {"s1", "s2", "s3", "s4"} - {test_speaker}
        assert set(corpus["test"]["speaker"]) == {test_speaker}
        assert set(corpus["train"]["speaker"]) == others  # every speaker that is not tested trains
        assert set(corpus["validation"]["speaker"]) == others  # validation: a share of their own clips
        assert sum(len(ds) for ds in corpus.values()) == everything
    for system in payload["systems"]:
        assert system["sizes"]["test"] == everything  # every clip tested once
        assert re.search(r"dataset-<fold>-[0-9a-f]{6}$", system["spec"]["dataset_dir"])
        for result in system["results"]:
            per_fold = [json.loads((tmp_path / fold / system["spec"]["key"] / f"seed-{result['seed']}" / "bench_result.json").read_text())
                        for fold in folds]
            for index, row in enumerate(result["rows"]):
                assert row["macro_f1"] == pytest.approx(np.mean([f["rows"][index]["macro_f1"] for f in per_fold]))
                assert row["num_examples"] == everything
            assert result["stages"]["training"]["seconds"] == pytest.approx(sum(f["stages"]["training"]["seconds"] for f in per_fold))
    assert "cross-validation by `speaker` over all its clips, 4 folds: each fold tests one speaker, trains on every " \
           "other speaker and validates on a stratified 34% of their clips per label" in markdown
    per_fold_section = markdown.split("## Per fold")[1].split("## ")[0]
    assert per_fold_section.count("| (4) nser_enc |") == 2  # macro-F1 and UA
    assert all(f"{fold}: clean / noisy avg" in per_fold_section for fold in folds)


def test_development_split_tests_the_validation_speakers_and_never_reads_the_test_split(tiny_assets, tmp_path):
    argv = tiny_arguments(tiny_assets, tmp_path)
    argv = argv[:argv.index("--systems")] + ["--systems", "probe", "--development", "--validation_fraction", "0.34",
                                             "--variant", "wd:use_decoder=false:weight_decay=0.5,num_train_epochs=1"]
    payload = robustness.main(argv)
    (folder,) = (tmp_path / "data").iterdir()
    corpus = load_from_disk(str(folder))
    assert set(corpus["test"]["speaker"]) == {"s3"}  # the prepared corpus's validation speaker
    assert set(corpus["train"]["speaker"]) == set(corpus["validation"]["speaker"]) == {"s1", "s2"}
    assert "s4" not in set(corpus["train"]["speaker"]) | set(corpus["test"]["speaker"])
    variant = next(s for s in payload["systems"] if s["spec"]["key"] == "wd")
    assert variant["spec"]["training_overrides"] == {"weight_decay": 0.5, "num_train_epochs": 1}
    assert "development split" in (tmp_path / "robustness.md").read_text()


@pytest.mark.parametrize("variant, message", [("x", "expected KEY:CONFIG_OVERRIDES"), ("x:bogus=1", "bogus=1"),
                                              ("x:use_decoder=false:nope=1", "'nope=1' is not a NserTrainingArguments")])
def test_bad_variants_are_refused_before_any_work(variant, message, capsys):
    with pytest.raises(SystemExit):
        robustness.parse_args(["--variant", variant])
    assert message in capsys.readouterr().err


def test_probe_chooses_c_by_speaker_grouped_cross_validation():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 40)
    x = rng.normal(size=(80, 5)) + y[:, None] * 2.0
    groups = np.tile(np.repeat(["a", "b", "c", "d"], 10), 2)
    best, scores = systems.grouped_c_search(x, y, groups, (1e-4, 1.0), inner_folds=4)
    assert set(scores) == {1e-4, 1.0} and best == max(scores, key=lambda c: (scores[c], -c))
    assert all(0.0 <= v <= 1.0 for v in scores.values())


def test_cross_validation_column_must_exist(tiny_assets, tmp_path):
    with pytest.raises(SystemExit, match="--cv_column: --cv_column 'session' not found"):
        robustness.main(tiny_arguments(tiny_assets, tmp_path) + ["--cv_column", "session", "--plan_only"])


def test_missing_corpus_is_reported_with_the_command_that_prepares_it(tmp_path):
    with pytest.raises(SystemExit, match="python -m dataset_scripts.casia --source_dir"):
        robustness.main(["--quick", "--dataset_dir", str(tmp_path / "absent"), "--output_dir", str(tmp_path / "out")])


# ------------------------------------------------------------------------------------------ the real smoke run
@pytest.mark.skipif(not WHISPER_BASE.is_dir(), reason=f"real Whisper checkpoint absent: {WHISPER_BASE}")
@pytest.mark.skipif(not CASIA.is_dir(), reason=f"CASIA audio absent: {CASIA}")
def test_quick_run_on_whisper_base_and_casia(tmp_path):
    dataset = ROOT / "data" / "casia"
    if not (dataset / "dataset_dict.json").is_file():  # prepare it (skip-if-done), as the README's main job does
        dataset = tmp_path / "casia"
        prepared = subprocess.run([sys.executable, "-m", "dataset_scripts.casia", "--source_dir", str(CASIA),
                                   "--output_dir", str(dataset)], cwd=ROOT, env={**os.environ, **OFFLINE},
                                  capture_output=True, text=True, timeout=QUICK_LIMIT_S)
        assert prepared.returncode == 0, prepared.stderr[-2000:]
    result = subprocess.run(
        [sys.executable, "-m", "bench.robustness", "--quick", "--dataset_dir", str(dataset), "--output_dir",
         str(tmp_path / "bench"), "--feature_cache_dir", str(tmp_path / "cache")],
        cwd=ROOT, env={**os.environ, **OFFLINE, "TOKENIZERS_PARALLELISM": "false"}, capture_output=True, text=True,
        timeout=QUICK_LIMIT_S,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert out.startswith("Command: `python -m bench.robustness --quick --dataset_dir")
    markdown = (tmp_path / "bench" / "robustness.md").read_text()
    assert markdown in out
    summary = summary_rows(markdown)
    numbers = ["1", "1c", "2", "2p", "3", "4*", "4", "5", "6", "N", "Nc"]
    assert [name.split(")")[0][1:] for name in summary] == numbers
    for cells in summary.values():
        assert all(re.fullmatch(r"\d+\.\d ± \d+\.\d", cell) for cell in cells[2:]), cells
    payload = json.loads((tmp_path / "bench" / "robustness.json").read_text())
    for system in payload["systems"]:
        assert {row["condition"] for row in system["aggregated"]} == {"clean", "babble_0dB", "white_0dB"}
        assert all(math.isfinite(row[m]) for row in system["aggregated"] for m in ("macro_f1_mean", "ua_mean"))
    for number in numbers:
        assert f"### ({number})" in markdown
    assert "| babble | – |" in markdown and "| white | – |" in markdown


def test_seed_ensemble_averages_the_probabilities_of_the_default_heads_seeds(tiny_assets, tmp_path):
    argv = tiny_arguments(tiny_assets, tmp_path)
    argv = argv[:argv.index("--systems")] + ["--systems", "nser_default", "nser_default_ensemble"]
    payload = robustness.main(argv)
    single, ensemble = payload["systems"]
    assert ensemble["spec"]["number"] == "Ne" and ensemble["spec"]["options"] == {"ensemble_seeds": [0, 1]}
    (result,) = ensemble["results"]  # one ensemble of the two seeds
    members = [tmp_path / "nser_default_ensemble" / "seed-0" / f"member-{seed}" / "test_logits.npz" for seed in (0, 1)]
    labels = result["rows"][0]["labels"]
    assert result["rows"] == ensemble_rows(members, labels)
    # each member is the single-model system's run with that seed, so the ensemble is compared with its own members
    assert result["selection"]["member_rows"] == [run["rows"] for run in single["results"]]
    assert ensemble["cost"]["training_examples"] == 2 * single["cost"]["training_examples"]


def test_probe_fusion_averages_each_seeds_default_head_with_the_folds_probe(tiny_assets, tmp_path):
    argv = tiny_arguments(tiny_assets, tmp_path)
    argv = argv[:argv.index("--systems")] + ["--systems", "probe", "nser_default", "nser_default_probe_fusion"]
    payload = robustness.main(argv)
    probe, default, fusion = payload["systems"]
    assert fusion["spec"]["number"] == "N+2p" and fusion["spec"]["kind"] == "fusion"
    probe_file = tmp_path / "nser_default_probe_fusion" / "probe-test_logits.npz"
    labels = probe["results"][0]["rows"][0]["labels"]
    # the probe's saved probabilities decide as system (2p) does; its C was chosen the same way
    assert ensemble_rows([probe_file], labels) == probe["results"][0]["rows"]
    assert fusion["results"][0]["selection"]["probe"] == probe["results"][0]["selection"]
    for seed, result, single in zip((0, 1), fusion["results"], default["results"]):
        assert result["selection"]["nser_rows"] == single["rows"]  # its (N) is system (N) with that seed
        head_file = tmp_path / "nser_default_probe_fusion" / f"seed-{seed}" / "test_logits.npz"
        assert result["rows"] == ensemble_rows([head_file, probe_file], labels)
    assert fusion["cost"]["clips_computed"] == 0  # (N)'s cached states, for the probe and the head
    assert not list(tmp_path.glob("*/seed-*/checkpoint-*"))


def test_probe_logits_need_every_label_among_the_probes_classes(tmp_path):
    x, y = np.random.default_rng(0).normal(size=(12, 4)), np.array([0, 2] * 6)  # label 1 has no training clip
    conditions = [("clean", "clean", None, x, y)]
    with pytest.raises(ValueError, match=r"label ids \[0, 2\]"):
        systems.save_probe_logits(tmp_path / "probe.npz", systems.fit_probe(x, y, 1.0), conditions)
    y = np.array([0, 1, 2] * 4)
    systems.save_probe_logits(tmp_path / "probe.npz", systems.fit_probe(x, y, 1.0), [("clean", "clean", None, x, y)])
    (saved,) = ensemble_rows([tmp_path / "probe.npz"], ["a", "b", "c"])
    predictions = systems.fit_probe(x, y, 1.0).predict(x)
    assert saved == systems.result_row("clean", "clean", None, y, predictions, ["a", "b", "c"])


def test_lora_system_trains_the_encoder_on_noise_drawn_every_epoch_without_the_cache(tiny_assets, tmp_path):
    argv = tiny_arguments(tiny_assets, tmp_path)
    argv = argv[:argv.index("--seeds")] + ["--seeds", "0"] + argv[argv.index("--epochs"):argv.index("--systems")]
    payload = robustness.main(argv + ["--systems", "nser_default_lora"])
    (system,) = payload["systems"]
    assert system["spec"]["options"] == {"model_arguments": {"use_lora": True}}
    assert system["spec"]["training_overrides"]["num_train_epochs"] == robustness.LORA_RECIPE["num_train_epochs"]
    assert system["cost"]["clips_computed"] == system["cost"]["clips_reused"] == 0  # no feature cache with LoRA
    assert system["cost"]["training_examples"] == system["sizes"]["train"]  # one fresh noisy draw per clip and epoch
    assert all(math.isfinite(row["macro_f1_mean"]) for row in system["aggregated"])
    assert not list((tmp_path / "cache").glob("layer-*.arrow"))
    assert not list(tmp_path.glob("*/seed-*/checkpoint-*"))


def test_lpft_system_trains_the_head_from_the_cache_then_lora_on_noise_drawn_every_epoch(tiny_assets, tmp_path):
    argv = tiny_arguments(tiny_assets, tmp_path)
    argv = argv[:argv.index("--seeds")] + ["--seeds", "0"] + argv[argv.index("--epochs"):argv.index("--systems")]
    payload = robustness.main(argv + ["--systems", "nser_default", "nser_default_lpft", "--lora_learning_rate", "0.01",
                                      "--lora_epochs", "1"])
    default, lpft = payload["systems"]
    assert lpft["spec"]["number"] == "N-LF"
    assert lpft["spec"]["options"] == {"model_arguments": {"use_lora": True, "lora_after_head": True,
                                                           "lora_learning_rate": 0.01, "lora_epochs": 1.0}}
    assert lpft["spec"]["training_overrides"] == default["spec"]["training_overrides"]  # the head's stage is (N)
    assert lpft["cost"]["clips_computed"] == 0 and lpft["cost"]["clips_reused"] > 0  # (N)'s cached states
    # the head's stage on (N)'s cached draws, then one fresh noisy draw per clip and LoRA epoch
    assert lpft["cost"]["training_examples"] == default["cost"]["training_examples"] + lpft["sizes"]["train"]
    assert all(math.isfinite(row["macro_f1_mean"]) for row in lpft["aggregated"])
    assert not list(tmp_path.rglob("checkpoint-*"))  # the LoRA stage's checkpoints deleted as well


@pytest.mark.parametrize("flag, value", [("--lora_learning_rate", "0"), ("--lora_epochs", "-1")])
def test_lora_stage_settings_must_be_positive(flag, value):
    with pytest.raises(SystemExit):
        robustness.parse_args(["--systems", "nser_default_lpft", flag, value])


def test_probe_statistics_keep_layer_order_and_can_drop_the_stds():
    stats = np.arange(2 * 3 * 2 * 4, dtype=np.float32).reshape(2, 3, 2, 4)  # clips, layers, (mean, std), d_model
    ds = datasets.Dataset.from_dict({"encoder_layer_stats": stats.tolist()})
    np.testing.assert_array_equal(systems._stats_matrix(ds), stats.reshape(2, -1))
    np.testing.assert_array_equal(systems._stats_matrix(ds, "mean"), stats[:, :, 0].reshape(2, -1))


def test_probe_fit_on_validation_adds_the_validation_clips_from_the_shared_cache(tiny_assets, tmp_path):
    argv = tiny_arguments(tiny_assets, tmp_path)
    argv = argv[:argv.index("--seeds")] + ["--seeds", "0"] + argv[argv.index("--epochs"):argv.index("--systems")]
    payload = robustness.main(argv + ["--systems", "probe", "probe_all", "probe_all_mean"])
    probe, probe_all, probe_mean = payload["systems"]
    assert probe_all["spec"]["options"]["fit_on_validation"] and probe_mean["spec"]["options"]["statistics"] == "mean"
    added = probe["sizes"]["validation"]
    assert probe_all["cost"]["training_examples"] == probe_mean["cost"]["training_examples"] == probe["cost"]["training_examples"] + added
    # (2p) cached the training and test states; (2p-a) adds the validation clips' states, (2p-am) reads them all
    assert probe_all["cost"]["clips_computed"] == added and probe_mean["cost"]["clips_computed"] == 0
    assert all(math.isfinite(row["macro_f1_mean"]) for system in (probe_all, probe_mean) for row in system["aggregated"])


def test_speed_perturbed_systems_train_on_new_draws_and_share_them(tiny_assets, tmp_path):
    argv = tiny_arguments(tiny_assets, tmp_path)
    argv = argv[:argv.index("--seeds")] + ["--seeds", "0"] + argv[argv.index("--epochs"):argv.index("--systems")]
    payload = robustness.main(argv + ["--systems", "nser_default", "nser_default_speed", "probe_speed"])
    plain, speed, probe = payload["systems"]
    assert speed["spec"]["noise_overrides"] == probe["spec"]["noise_overrides"] == {"speed_factors": [0.9, 1.0, 1.1]}
    # only a system with noise overrides has them in its reuse signature: the other finished runs stay reusable
    assert "noise_overrides" in systems.SystemSpec(**speed["spec"]).signature()
    assert "noise_overrides" not in systems.SystemSpec(**plain["spec"]).signature()
    # the perturbed training copies are new states; validation (never perturbed) and test audio come from the cache
    reused = speed["cost"]["clips_reused"]
    assert speed["cost"]["clips_computed"] == speed["sizes"]["train"] and reused == plain["cost"]["clips_computed"] - speed["sizes"]["train"]
    assert probe["cost"]["clips_computed"] == 0  # the probe reads the perturbed copies (N-sp) wrote
    assert all(math.isfinite(row["macro_f1_mean"]) for system in (speed, probe) for row in system["aggregated"])
    assert "`probe_speed`: probe, noise `speed_factors=0.9 1.0 1.1`;" in (tmp_path / "robustness.md").read_text()


def test_inner_cv_system_chooses_per_seed_on_the_training_speakers_from_the_shared_cache(tiny_assets, tmp_path):
    argv = tiny_arguments(tiny_assets, tmp_path)
    argv = argv[:argv.index("--seeds")] + ["--seeds", "0"] + argv[argv.index("--epochs"):argv.index("--systems")]
    candidates = ["", "classifier_dropout=0.0:weight_decay=0.3"]
    payload = robustness.main(argv + ["--systems", "nser_default", "nser_default_inner_cv", "--inner_cv_candidates", *candidates])
    plain, inner = payload["systems"]
    assert inner["spec"]["number"] == "N-i"
    assert inner["spec"]["options"] == {"inner_cv": {"candidates": candidates, "folds": 4}}
    assert inner["cost"]["clips_computed"] == 0 < plain["cost"]["clips_computed"]  # no backbone state computed again
    record = inner["results"][0]["selection"]["inner_cv"]
    assert record["folds"] == [["s1"], ["s2"]] and record["chosen"] in record["scores"]  # the training speakers
    markdown = (tmp_path / "robustness.md").read_text()
    section = markdown.split("## Head settings chosen by inner cross-validation")[1].split("## ")[0]
    assert f"| (N-i) | – | 0 | `{record['chosen']}` |" in section


def test_speaker_normalisation_with_an_enrolment_of_a_few_clips_per_test_speaker(tiny_assets, tmp_path, enrolment_sizes):
    argv = tiny_arguments(tiny_assets, tmp_path)
    argv = argv[:argv.index("--seeds")] + ["--seeds", "0"] + argv[argv.index("--epochs"):argv.index("--systems")]
    payload = robustness.main(argv + ["--systems", "probe_speaker_norm", "nser_default_speaker_norm", "--speaker_norm_clips", "2"])
    for system in payload["systems"]:
        assert system["spec"]["options"]["speaker_normalization_clips"] == 2
        assert system["spec"]["title"].endswith("(transductive, 2 enrolment clips)")
    # training (and for (N-s) validation) with every clip of each speaker; the 5 test conditions (clean, hum and white
    # at 10 and 0 dB) with an enrolment of 2
    assert enrolment_sizes == [None] + [2] * 5 + [None, None] + [2] * 5
    with pytest.raises(SystemExit):
        robustness.parse_args(["--speaker_norm_clips", "1"])


def test_inner_cv_candidates_that_change_the_cache_are_refused_by_the_benchmark(capsys):
    with pytest.raises(SystemExit):
        robustness.parse_args(["--inner_cv_candidates", "", "pad_to_30s=true"])
    assert "change the cached backbone states" in capsys.readouterr().err
