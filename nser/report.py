"""Result tables, figures and JSON for noisy-condition evaluations.

Input is a list of result rows (see `nser.metrics.classification_metrics`, plus `condition`,
`noise_type`, `snr_db` and `num_examples`), or the per-condition means and standard deviations that
`aggregate` makes from several folds or seeds. Conditions are grouped by their `noise_type` and
`snr_db` fields, never by parsing their names.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from nser.atomic import write_text_atomic
from nser.metrics import SCALAR_METRICS

logger = logging.getLogger(__name__)

METRIC_TITLES = {"ua": "UA", "wa": "WA", "macro_f1": "Macro-F1", "weighted_f1": "Weighted F1"}
MISSING_CELL = "–"


def _is_aggregated(rows: Sequence[Mapping]) -> bool:
    return bool(rows) and "macro_f1_mean" in rows[0]


def _format_cell(row: Mapping, metric: str) -> str:
    """A percentage with one decimal, or `mean ± std` for aggregated rows."""
    if f"{metric}_mean" in row:
        return f"{100 * row[f'{metric}_mean']:.1f} ± {100 * row[f'{metric}_std']:.1f}"
    return f"{100 * row[metric]:.1f}"


def _by_noise_and_snr(rows: Sequence[Mapping]) -> dict[tuple[str, float | None], Mapping]:
    """Index rows by (noise_type, snr_db); a repeated pair would silently hide a result."""
    cells = {}
    for row in rows:
        key = (row["noise_type"], row["snr_db"])
        if key in cells:
            raise ValueError(
                f"conditions {cells[key]['condition']!r} and {row['condition']!r} both have "
                f"noise_type={key[0]!r}, snr_db={key[1]!r}"
            )
        cells[key] = row
    return cells


def _snr_label(snr_db: float | None) -> str:
    return "clean" if snr_db is None else f"{snr_db:g} dB"


def markdown_table(rows: Sequence[Mapping], metric: str = "macro_f1") -> str:
    """One metric as a markdown table: noise types as rows (in first-seen order), SNRs as columns from the cleanest
    to the noisiest (the order of the READMEs' tables and of `bench.robustness`'s default `--snrs`).

    Rows without an SNR (clean speech) fill a `clean` column. Cells are percentages with one
    decimal, or `mean ± std` when `rows` come from `aggregate`.
    """
    if metric not in METRIC_TITLES:
        raise ValueError(f"unknown metric {metric!r}; available: {list(METRIC_TITLES)}")
    if not rows:
        raise ValueError("no result rows to tabulate")
    cells = _by_noise_and_snr(rows)
    noise_types = list(dict.fromkeys(noise_type for noise_type, _ in cells))
    snrs = sorted({snr for _, snr in cells}, key=lambda snr: (snr is not None, -snr if snr is not None else 0.0))
    lines = [
        f"| {METRIC_TITLES[metric]} (%) | " + " | ".join(_snr_label(snr) for snr in snrs) + " |",
        "|---|" + "---:|" * len(snrs),
    ]
    for noise_type in noise_types:
        values = [
            _format_cell(cells[noise_type, snr], metric) if (noise_type, snr) in cells else MISSING_CELL
            for snr in snrs
        ]
        lines.append(f"| {noise_type} | " + " | ".join(values) + " |")
    return "\n".join(lines) + "\n"


def aggregate(rows_per_run: Sequence[Sequence[Mapping]]) -> list[dict]:
    """Mean and sample std (ddof=1; 0 for one run) of each metric per condition over folds or seeds.

    Every run must report the same conditions with the same labels, otherwise the means would mix
    different test sets. Counts and confusion matrices are summed (pooled over folds).
    """
    if not rows_per_run:
        raise ValueError("no runs to aggregate")
    conditions = [row["condition"] for row in rows_per_run[0]]
    for index, run in enumerate(rows_per_run):
        run_conditions = [row["condition"] for row in run]
        if sorted(run_conditions) != sorted(conditions):
            raise ValueError(f"run {index} has conditions {run_conditions}, run 0 has {conditions}")
    by_condition = [
        [next(row for row in run if row["condition"] == condition) for run in rows_per_run]
        for condition in conditions
    ]
    return [_aggregate_condition(runs) for runs in by_condition]


def _aggregate_condition(runs: Sequence[Mapping]) -> dict:
    first = runs[0]
    for row in runs[1:]:
        if row["labels"] != first["labels"]:
            raise ValueError(
                f"{first['condition']}: labels differ between runs: {first['labels']} vs {row['labels']}"
            )
    aggregated = {
        "condition": first["condition"],
        "noise_type": first["noise_type"],
        "snr_db": first["snr_db"],
        "num_runs": len(runs),
        "num_examples": sum(row["num_examples"] for row in runs),
    }
    for metric in SCALAR_METRICS:
        values = np.array([row[metric] for row in runs], dtype=float)
        aggregated[f"{metric}_mean"] = float(values.mean())
        aggregated[f"{metric}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    aggregated["confusion_matrix"] = np.sum([row["confusion_matrix"] for row in runs], axis=0).tolist()
    aggregated["labels"] = list(first["labels"])
    return aggregated


def _confusion_markdown(row: Mapping) -> str:
    labels = row["labels"]
    lines = [
        f"#### {row['condition']} (n = {row['num_examples']})",
        "",
        "| true \\ predicted | " + " | ".join(labels) + " |",
        "|---|" + "---:|" * len(labels),
    ]
    lines += [f"| {label} | " + " | ".join(str(count) for count in counts) + " |"
              for label, counts in zip(labels, row["confusion_matrix"])]
    return "\n".join(lines) + "\n"


def _report_markdown(rows: Sequence[Mapping], title: str) -> str:
    runs_note = f" Mean ± std over {rows[0]['num_runs']} runs." if _is_aggregated(rows) else ""
    return "\n".join([
        f"# {title}",
        "",
        f"Percentages; macro-F1 and UA per noise type and SNR.{runs_note}",
        "",
        "## Macro-F1",
        "",
        markdown_table(rows, "macro_f1"),
        "## UA (unweighted accuracy)",
        "",
        markdown_table(rows, "ua"),
        "<details>",
        "<summary>Confusion matrices (rows true, columns predicted)</summary>",
        "",
        "\n".join(_confusion_markdown(row) for row in rows),
        "</details>",
        "",
    ])


def _save_figure(figure: Figure, path: Path) -> None:
    """Render with Agg explicitly: no pyplot global state, no display needed."""
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=120)


def _plot_f1_vs_snr(rows: Sequence[Mapping], path: Path) -> None:
    metric = "macro_f1_mean" if _is_aggregated(rows) else "macro_f1"
    figure = Figure(figsize=(6, 4), layout="constrained")
    axes = figure.add_subplot()
    for noise_type in dict.fromkeys(row["noise_type"] for row in rows if row["snr_db"] is not None):
        noisy = [row for row in rows if row["noise_type"] == noise_type and row["snr_db"] is not None]
        points = sorted(noisy, key=lambda row: row["snr_db"])
        snrs = [row["snr_db"] for row in points]
        values = [100 * row[metric] for row in points]
        errors = [100 * row["macro_f1_std"] for row in points] if _is_aggregated(rows) else None
        axes.errorbar(snrs, values, yerr=errors, marker="o", capsize=3, label=noise_type)
    for row in rows:
        if row["snr_db"] is None:
            axes.axhline(100 * row[metric], linestyle="--", color="black", label=row["condition"])
    axes.set_xticks(sorted({row["snr_db"] for row in rows if row["snr_db"] is not None}))
    axes.set_xlabel("SNR (dB)")
    axes.set_ylabel("Macro-F1 (%)")
    axes.grid(alpha=0.3)
    axes.legend()
    _save_figure(figure, path)


def _plot_layer_weights(layer_weights: Mapping[str, Sequence[float]], path: Path) -> None:
    figure = Figure(figsize=(4 + 2 * len(layer_weights), 3.5), layout="constrained")
    for index, (group, weights) in enumerate(layer_weights.items()):
        axes = figure.add_subplot(1, len(layer_weights), index + 1)
        axes.bar(range(len(weights)), weights)
        axes.set_xticks(range(len(weights)))
        axes.set_title(group)
        axes.set_xlabel("layer (0 = embeddings)")
        axes.set_ylabel("weight")
    _save_figure(figure, path)


def _check_writable(paths: Sequence[Path], overwrite: bool) -> None:
    """Refuse before writing anything, so a refused call leaves the old report whole."""
    if overwrite:
        return
    for path in paths:
        if path.exists():
            raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it")


def write_report(
    rows: Sequence[Mapping],
    output_dir: str | Path,
    layer_weights: Mapping[str, Sequence[float]] | None = None,
    title: str = "Noisy speech emotion recognition results",
    overwrite: bool = False,
) -> dict[str, Path]:
    """Write results.json, results.md, f1_vs_snr.png and (with `layer_weights`) layer_weights.png.

    Existing files are only replaced with `overwrite=True`. Returns the written paths by kind:
    `json`, `markdown`, `f1_vs_snr`, and `layer_weights` when it was drawn.
    """
    if not rows:
        raise ValueError("no result rows to report")
    output_dir = Path(output_dir)
    paths = {
        "json": output_dir / "results.json",
        "markdown": output_dir / "results.md",
        "f1_vs_snr": output_dir / "f1_vs_snr.png",
    }
    if layer_weights is not None:
        layer_weights = {group: [float(w) for w in weights] for group, weights in layer_weights.items()}
        paths["layer_weights"] = output_dir / "layer_weights.png"
    _check_writable(list(paths.values()), overwrite)
    # Both texts are built before any write, so invalid rows leave no partial report.
    payload = {"title": title, "rows": list(rows), "layer_weights": layer_weights}
    results_json = json.dumps(payload, indent=2)
    results_markdown = _report_markdown(rows, title)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(paths["json"], results_json + "\n")  # never a truncated file, even if killed here
    write_text_atomic(paths["markdown"], results_markdown)
    _plot_f1_vs_snr(rows, paths["f1_vs_snr"])
    if layer_weights is not None:
        _plot_layer_weights(layer_weights, paths["layer_weights"])
    logger.info("wrote report to %s: %s", output_dir, ", ".join(path.name for path in paths.values()))
    return paths
