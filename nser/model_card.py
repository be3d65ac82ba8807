"""Model card (README.md) for a trained NSER model, rendered from the `model_card.md` template.

The YAML metadata carries a `model-index` with one result per noise condition, so the Hub shows the
clean and noisy scores side by side; the text carries the same numbers as tables, next to the exact
command that produced them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from nser.model_folder import is_local_path
from nser.report import markdown_table

logger = logging.getLogger(__name__)

# The template sits at the repository root so that it is easy to find and edit.
TEMPLATE_PATH = Path(__file__).resolve().parent.parent / "model_card.md"
TAGS = ["audio-classification", "speech-emotion-recognition", "whisper", "noise-robust", "nser"]
# (row key, Hub metric id, display name, metric args) for each model-index metric.
MODEL_INDEX_METRICS = (
    ("macro_f1", "f1", "Macro-F1", {"average": "macro"}),
    ("ua", "recall", "UA (unweighted accuracy)", {"average": "macro"}),
    ("wa", "accuracy", "WA (weighted accuracy)", None),
)


def _percent(row: Mapping, metric: str) -> float:
    """The metric as a percentage with one decimal, as in the tables; the mean for aggregated rows."""
    value = row[f"{metric}_mean"] if f"{metric}_mean" in row else row[metric]
    return round(100 * value, 1)


def _eval_results(rows: Sequence[Mapping], dataset_type: str, dataset_name: str) -> list[EvalResult]:
    """One model-index result per condition: the condition is the dataset config, the split is `test`."""
    return [
        EvalResult(
            task_type="audio-classification",
            task_name="Speech emotion recognition",
            dataset_type=dataset_type,
            dataset_name=dataset_name,
            dataset_config=row["condition"],
            dataset_split="test",
            metric_type=metric_type,
            metric_value=_percent(row, metric),
            metric_name=metric_name,
            metric_args=metric_args,
        )
        for row in rows
        for metric, metric_type, metric_name, metric_args in MODEL_INDEX_METRICS
    ]


def _conditions_summary(rows: Sequence[Mapping]) -> str:
    """'clean; babble at -5, 0 dB; ...' from the noise_type/snr_db fields, in first-seen order."""
    snrs_by_noise: dict[str, list[float]] = {}
    for row in rows:
        snrs_by_noise.setdefault(row["noise_type"], [])
        if row["snr_db"] is not None:
            snrs_by_noise[row["noise_type"]].append(row["snr_db"])
    return "; ".join(
        f"{noise} at {', '.join(f'{snr:g}' for snr in sorted(snrs))} dB" if snrs else noise
        for noise, snrs in snrs_by_noise.items()
    )


def _public_name(name: str) -> tuple[str, bool]:
    """(what the card shows, whether it is a Hub id): a local path is shown as its last component only, so the
    card carries no path of the machine that trained the model and no broken Hub link."""
    if is_local_path(name):
        return f"{Path(str(name).rstrip('/')).name} (a local copy)", False
    return name, True


def _layer_weights_markdown(layer_weights: Mapping[str, Sequence[float]]) -> str:
    return "\n".join(
        f"- **{group}**: " + ", ".join(f"{float(weight):.3f}" for weight in weights)
        for group, weights in layer_weights.items()
    )


def benchmark_markdown(report_path: str | Path) -> str:
    """The summary of a `bench.robustness` report (robustness.md) for the card: corpus, the command that
    produced it, when and where it ran, and its macro-F1 and UA tables (figures and per-run details stay in
    the report, which is not uploaded)."""
    path = Path(report_path)
    if not path.is_file():
        raise FileNotFoundError(f"benchmark report {path} not found (bench.robustness writes <output_dir>/robustness.md)")
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines or not lines[0].startswith("# ") or "## Summary" not in lines:
        raise ValueError(f"{path} is not a bench.robustness report (no title or no '## Summary' section)")
    corpus = lines[0].rsplit(":", 1)[-1].strip()
    summary_start = lines.index("## Summary")
    header = [line for line in lines[1:summary_start] if line.startswith(("Command:", "- ", "Subsets are"))]
    text = "\n".join(header)
    cross_validation = re.search(r"leave-one-`(\w+)`-out", text) or re.search(r"cross-validation by `(\w+)`", text)
    if cross_validation:  # tell it apart from a fixed-split report on the same corpus
        folds = re.search(r"(\d+) folds", text)
        corpus += f", cross-validation by {cross_validation.group(1)}" + (f" ({folds.group(1)} folds)" if folds else "")
    summary = []
    for line in lines[summary_start + 1 :]:
        if line.startswith("## "):
            break
        if not line.startswith("!["):
            summary.append(line)
    return "\n".join([f"### {corpus}", "", *header, "", *summary]).strip() + "\n"


def render_model_card(
    rows: Sequence[Mapping],
    *,
    model_name: str,
    base_model: str,
    dataset_name: str,
    dataset_id: str | None = None,
    label_names: Sequence[str],
    command: str,
    config_summary: Mapping,
    layer_weights: Mapping[str, Sequence[float]] | None = None,
    license: str | None = None,
    benchmark_reports: Sequence[str | Path] = (),
    evaluation_protocol: str = "",
    template_path: str | Path = TEMPLATE_PATH,
) -> ModelCard:
    """Render the model card for result rows (or rows from `nser.report.aggregate`).

    `model_name` is the Hub repo id used in the usage snippet and the model-index; `command` is the
    exact command line that produced `rows`; `config_summary` holds the architectural settings shown
    on the card; `benchmark_reports` are `bench.robustness` reports whose summaries the card shows next to
    the model's own results; `evaluation_protocol` says how the results were measured (e.g. cross-validation
    folds, and that this checkpoint was trained on every speaker afterwards). Save the result with `card.save(path)` or push it with `card.push_to_hub(repo_id)`.
    """
    if not rows:
        raise ValueError("no result rows for the model card")
    for row in rows:
        if list(row["labels"]) != list(label_names):
            raise ValueError(
                f"condition {row['condition']!r} has labels {row['labels']}, expected {list(label_names)}"
            )
    base_model, base_model_on_hub = _public_name(base_model)
    dataset_name, _ = _public_name(dataset_name)
    card_data = ModelCardData(
        model_name=model_name,
        base_model=base_model if base_model_on_hub else None,
        datasets=[dataset_id] if dataset_id else None,
        license=license,
        library_name="transformers",
        pipeline_tag="audio-classification",
        metrics=["accuracy", "recall", "f1"],
        tags=TAGS,
        eval_results=_eval_results(rows, dataset_id or dataset_name, dataset_name),
    )
    card = ModelCard.from_template(
        card_data,
        template_path=str(template_path),
        model_name=model_name,
        base_model=base_model,
        base_model_on_hub=base_model_on_hub,
        dataset_name=dataset_name,
        dataset_id=dataset_id,
        label_names=list(label_names),
        config_yaml=yaml.safe_dump(dict(config_summary), sort_keys=False),
        layer_weights_markdown=_layer_weights_markdown(layer_weights) if layer_weights else "",
        conditions_summary=_conditions_summary(rows),
        num_examples=", ".join(str(n) for n in dict.fromkeys(row["num_examples"] for row in rows)),
        results_macro_f1=markdown_table(rows, "macro_f1"),
        results_ua=markdown_table(rows, "ua"),
        command=command,
        evaluation_protocol=evaluation_protocol,
        benchmark_markdown="\n".join(benchmark_markdown(report) for report in benchmark_reports),
    )
    logger.info("rendered model card for %s with %d conditions", model_name, len(rows))
    return card
