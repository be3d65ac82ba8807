import json

import pytest
from matplotlib.image import imread

from nser.report import aggregate, markdown_table, write_report

LABELS = ["angry", "happy"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def make_row(noise_type, snr_db, macro_f1, ua, condition=None):
    return {
        "condition": condition or (noise_type if snr_db is None else f"{noise_type}_{snr_db:g}dB"),
        "noise_type": noise_type,
        "snr_db": snr_db,
        "num_examples": 10,
        "ua": ua,
        "wa": 0.6,
        "macro_f1": macro_f1,
        "weighted_f1": 0.55,
        "confusion_matrix": [[4, 1], [3, 2]],
        "labels": LABELS,
    }


ROWS = [
    make_row("clean", None, 0.812, 0.8),
    make_row("babble", 0.0, 0.401, 0.45),
    make_row("babble", 5.0, 0.6, 0.625),
    make_row("white", -5.0, 0.25, 0.3),
    make_row("white", 5.0, 0.7049, 0.71),
]
LAYER_WEIGHTS = {"encoder": [0.1, 0.2, 0.3, 0.4], "decoder": [0.5, 0.5]}


def test_markdown_table_exact():
    assert markdown_table(ROWS) == (
        "| Macro-F1 (%) | clean | 5 dB | 0 dB | -5 dB |\n"
        "|---|---:|---:|---:|---:|\n"
        "| clean | 81.2 | – | – | – |\n"
        "| babble | – | 60.0 | 40.1 | – |\n"
        "| white | – | 70.5 | – | 25.0 |\n"
    )
    assert markdown_table(ROWS, "ua").splitlines()[:3] == [
        "| UA (%) | clean | 5 dB | 0 dB | -5 dB |",
        "|---|---:|---:|---:|---:|",
        "| clean | 80.0 | – | – | – |",
    ]


def test_markdown_table_rejects_unknown_metric_and_repeated_conditions():
    with pytest.raises(ValueError, match="unknown metric 'f1'"):
        markdown_table(ROWS, "f1")
    repeated = [*ROWS, make_row("babble", 5.0, 0.1, 0.1, condition="babble_5dB_again")]
    with pytest.raises(ValueError, match="'babble_5dB' and 'babble_5dB_again' both have noise_type='babble'"):
        markdown_table(repeated)


def test_write_report_writes_all_files(tmp_path):
    paths = write_report(ROWS, tmp_path / "report", layer_weights=LAYER_WEIGHTS, title="Test run")

    assert {kind: path.name for kind, path in paths.items()} == {
        "json": "results.json",
        "markdown": "results.md",
        "f1_vs_snr": "f1_vs_snr.png",
        "layer_weights": "layer_weights.png",
    }
    assert json.loads(paths["json"].read_text()) == {"title": "Test run", "rows": ROWS, "layer_weights": LAYER_WEIGHTS}
    markdown = paths["markdown"].read_text()
    assert markdown.startswith("# Test run\n")
    assert markdown_table(ROWS, "macro_f1") in markdown
    assert markdown_table(ROWS, "ua") in markdown
    assert "<details>" in markdown
    assert (
        "#### white_-5dB (n = 10)\n\n| true \\ predicted | angry | happy |\n|---|---:|---:|\n| angry | 4 | 1 |"
    ) in markdown
    for kind in ("f1_vs_snr", "layer_weights"):
        assert paths[kind].read_bytes()[:8] == PNG_SIGNATURE
        height, width, _ = imread(paths[kind]).shape
        assert height > 100 and width > 100


def test_write_report_without_layer_weights_draws_no_layer_plot(tmp_path):
    paths = write_report(ROWS, tmp_path)
    assert sorted(paths) == ["f1_vs_snr", "json", "markdown"]
    assert not (tmp_path / "layer_weights.png").exists()
    assert json.loads(paths["json"].read_text())["layer_weights"] is None


def test_write_report_refuses_to_overwrite(tmp_path):
    write_report(ROWS, tmp_path)
    before = (tmp_path / "results.md").read_text()

    with pytest.raises(FileExistsError, match="results.json already exists; pass overwrite=True"):
        write_report(ROWS[:1], tmp_path)
    assert (tmp_path / "results.md").read_text() == before

    write_report(ROWS[:1], tmp_path, overwrite=True)
    assert json.loads((tmp_path / "results.json").read_text())["rows"] == ROWS[:1]


def test_aggregate_mean_and_std_over_runs():
    run_a = [make_row("clean", None, 0.5, 0.6), make_row("babble", 0.0, 0.2, 0.3)]
    run_b = [make_row("babble", 0.0, 0.4, 0.5), make_row("clean", None, 0.7, 0.8)]  # order may differ

    aggregated = aggregate([run_a, run_b])

    assert [row["condition"] for row in aggregated] == ["clean", "babble_0dB"]
    clean = aggregated[0]
    assert clean["num_runs"] == 2
    assert clean["num_examples"] == 20
    assert clean["macro_f1_mean"] == pytest.approx(0.6, abs=1e-12)
    assert clean["macro_f1_std"] == pytest.approx(0.1414213562373095, abs=1e-12)  # sample std, ddof=1
    assert clean["wa_mean"] == pytest.approx(0.6, abs=1e-12)
    assert clean["wa_std"] == 0.0
    assert clean["confusion_matrix"] == [[8, 2], [6, 4]]
    assert markdown_table(aggregated) == (
        "| Macro-F1 (%) | clean | 0 dB |\n"
        "|---|---:|---:|\n"
        "| clean | 60.0 ± 14.1 | – |\n"
        "| babble | – | 30.0 ± 14.1 |\n"
    )


def test_aggregate_of_one_run_has_zero_std():
    (row,) = aggregate([[make_row("clean", None, 0.5, 0.6)]])
    assert row["macro_f1_std"] == 0.0
    assert row["macro_f1_mean"] == 0.5


def test_aggregate_rejects_runs_with_different_conditions():
    with pytest.raises(ValueError, match=r"run 1 has conditions \['clean'\], run 0 has \['clean', 'babble_0dB'\]"):
        aggregate([[make_row("clean", None, 0.5, 0.6), make_row("babble", 0.0, 0.2, 0.3)],
                   [make_row("clean", None, 0.5, 0.6)]])


def test_write_report_of_aggregated_rows(tmp_path):
    aggregated = aggregate([ROWS, ROWS])
    paths = write_report(aggregated, tmp_path)
    assert "Mean ± std over 2 runs." in paths["markdown"].read_text()
    assert "| clean | 81.2 ± 0.0 | – | – | – |" in paths["markdown"].read_text()
    assert paths["f1_vs_snr"].read_bytes()[:8] == PNG_SIGNATURE
