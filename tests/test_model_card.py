from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from nser.model_card import render_model_card
from nser.report import aggregate, markdown_table

LABELS = ["angry", "happy", "neutral"]
COMMAND = "python run_nser.py --dataset casia --noise_snrs -5 5 --output_dir runs/casia"


def make_row(noise_type, snr_db, macro_f1, ua, wa):
    return {
        "condition": noise_type if snr_db is None else f"{noise_type}_{snr_db:g}dB",
        "noise_type": noise_type,
        "snr_db": snr_db,
        "num_examples": 12,
        "ua": ua,
        "wa": wa,
        "macro_f1": macro_f1,
        "weighted_f1": 0.5,
        "confusion_matrix": [[4, 0, 0], [0, 3, 1], [1, 1, 2]],
        "labels": LABELS,
    }


ROWS = [
    make_row("clean", None, 0.7512, 0.76, 0.75),
    make_row("babble", -5.0, 0.3333, 0.35, 0.4167),
    make_row("babble", 5.0, 0.6021, 0.61, 0.5833),
    make_row("white", -5.0, 0.2501, 0.27, 0.3333),
    make_row("white", 5.0, 0.5549, 0.58, 0.5),
]


def render(rows=ROWS, **overrides):
    kwargs = dict(
        model_name="someone/nser-whisper-base-casia",
        base_model="openai/whisper-base",
        dataset_name="CASIA",
        label_names=LABELS,
        command=COMMAND,
        config_summary={"fusion": "layer_adapter", "freeze_backbone": True, "use_decoder": True},
        layer_weights={"encoder": [0.1, 0.2, 0.7]},
        license="cc-by-nc-sa-4.0",
    )
    return render_model_card(rows, **{**kwargs, **overrides})


def saved_and_reloaded(card, tmp_path):
    path = tmp_path / "README.md"
    card.save(path)
    return ModelCard.load(path)


def test_metadata_survives_save_and_load(tmp_path):
    card = saved_and_reloaded(render(dataset_id="someone/casia"), tmp_path)
    metadata = card.data.to_dict()

    assert metadata["pipeline_tag"] == "audio-classification"
    assert metadata["library_name"] == "transformers"
    assert metadata["base_model"] == "openai/whisper-base"
    assert metadata["datasets"] == ["someone/casia"]
    assert metadata["license"] == "cc-by-nc-sa-4.0"
    assert metadata["metrics"] == ["accuracy", "recall", "f1"]
    assert metadata["tags"] == ["audio-classification", "speech-emotion-recognition", "whisper", "noise-robust", "nser"]


def test_model_index_has_one_result_per_condition_with_exact_values(tmp_path):
    (model_index,) = saved_and_reloaded(render(), tmp_path).data.to_dict()["model-index"]

    assert model_index["name"] == "someone/nser-whisper-base-casia"
    results = model_index["results"]
    assert [result["dataset"]["config"] for result in results] == [row["condition"] for row in ROWS]
    assert {result["dataset"]["split"] for result in results} == {"test"}
    assert {result["dataset"]["type"] for result in results} == {"CASIA"}  # no Hub id: the name
    assert {result["task"]["type"] for result in results} == {"audio-classification"}
    f1, ua, wa = ("Macro-F1", "f1"), ("UA (unweighted accuracy)", "recall"), ("WA (weighted accuracy)", "accuracy")
    assert [[((m["name"], m["type"]), m["value"]) for m in result["metrics"]] for result in results] == [
        [(f1, 75.1), (ua, 76.0), (wa, 75.0)],
        [(f1, 33.3), (ua, 35.0), (wa, 41.7)],
        [(f1, 60.2), (ua, 61.0), (wa, 58.3)],
        [(f1, 25.0), (ua, 27.0), (wa, 33.3)],
        [(f1, 55.5), (ua, 58.0), (wa, 50.0)],
    ]


def test_text_has_command_tables_usage_and_citation(tmp_path):
    text = saved_and_reloaded(render(), tmp_path).text

    assert f"```bash\n{COMMAND}\n```" in text
    assert markdown_table(ROWS, "macro_f1") in text
    assert markdown_table(ROWS, "ua") in text
    assert 'pipeline("audio-classification", model="someone/nser-whisper-base-casia", trust_remote_code=True)' in text
    assert "handler.py" in text
    assert "Test conditions: clean; babble at -5, 5 dB; white at -5, 5 dB. Test utterances per condition: 12." in text
    assert "```yaml\nfusion: layer_adapter\nfreeze_backbone: true\nuse_decoder: true\n```" in text
    assert "- **encoder**: 0.100, 0.200, 0.700" in text
    assert "eprint        = {2311.07093}" in text
    assert "{{" not in text and "{%" not in text


def test_without_dataset_id_or_layer_weights(tmp_path):
    card = saved_and_reloaded(render(layer_weights=None, license=None), tmp_path)
    metadata = card.data.to_dict()
    assert "datasets" not in metadata
    assert "license" not in metadata
    assert "Learned layer weights" not in card.text


def test_aggregated_rows_report_the_mean(tmp_path):
    card = saved_and_reloaded(render(rows=aggregate([ROWS, ROWS])), tmp_path)
    first_metric = card.data.to_dict()["model-index"][0]["results"][0]["metrics"][0]
    assert (first_metric["type"], first_metric["value"]) == ("f1", 75.1)
    assert "| clean | 75.1 ± 0.0 | – | – |" in card.text
    assert "Test utterances per condition: 24." in card.text


def test_label_mismatch_is_rejected():
    expected = r"condition 'clean' has labels \['angry', 'happy', 'neutral'\], expected \['a', 'b', 'c'\]"
    with pytest.raises(ValueError, match=expected):
        render(label_names=["a", "b", "c"])


BENCH_REPORT = """# Noise robustness of speech emotion recognition: ravdess

Command: `python -m bench.robustness --corpus ravdess`

- 2026-11-25 18:31 UTC; AMD EPYC, 2 CPUs
- model `whisper-base`; corpus `data/ravdess`

## Data each system used

| system | train clips |
|---|---:|
| (4) nser_enc | 480 |

Subsets are fixed, class-stratified draws.

## Summary

Macro-F1 (%), mean ± std over seeds.

| system | clean | 0 dB |
|---|---:|---:|
| (4) nser encoder layer adapter | 57.1 ± 1.5 | 53.6 ± 0.5 |

![macro-F1 vs SNR](f1_vs_snr.png)

## Cost

| system | wall s |
|---|---:|
| (4) nser_enc | 422 |
"""


def test_benchmark_summaries_are_shown_with_their_command(tmp_path):
    report = tmp_path / "robustness.md"
    report.write_text(BENCH_REPORT)
    card = saved_and_reloaded(render(benchmark_reports=[report]), tmp_path)
    section = card.text.split("## How the method compares")[1].split("## Limitations")[0]
    assert "### ravdess" in section and "Command: `python -m bench.robustness --corpus ravdess`" in section
    assert "| (4) nser encoder layer adapter | 57.1 ± 1.5 | 53.6 ± 0.5 |" in section
    assert "Subsets are fixed" in section and "2026-11-25 18:31 UTC" in section
    assert "f1_vs_snr.png" not in section and "wall s" not in section and "train clips" not in section
    assert "## How the method compares" not in render().text  # no reports, no section


def test_a_cross_validation_report_is_named_as_such(tmp_path):
    report = tmp_path / "robustness.md"
    report.write_text(BENCH_REPORT.replace("corpus `data/ravdess`", "corpus `data/ravdess` (cross-validation by `speaker` "
                                                                     "over all its clips, 3 folds: each fold tests ...)"))
    card = render(benchmark_reports=[report])
    assert "### ravdess, cross-validation by speaker (3 folds)" in card.text


@pytest.mark.parametrize("report", sorted(Path(__file__).resolve().parents[1].glob("bench/results/*/robustness.md")))
def test_committed_benchmark_reports_render(report, tmp_path):
    card = saved_and_reloaded(render(benchmark_reports=[report]), tmp_path)
    summary = report.read_text().split("## Summary")[1].split("\n## ")[0]
    rows = [line for line in summary.splitlines() if line.startswith("| (")]
    assert f"### {report.parent.name.split('-')[0]}" in card.text and rows and all(row in card.text for row in rows)


def test_a_file_that_is_not_a_benchmark_report_is_rejected(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.md"):
        render(benchmark_reports=[tmp_path / "missing.md"])
    other = tmp_path / "notes.md"
    other.write_text("# Notes\n\nnothing here\n")
    with pytest.raises(ValueError, match="not a bench.robustness report"):
        render(benchmark_reports=[other])
