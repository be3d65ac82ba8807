"""Seed ensembles: scored from saved test logits, and merged into one deployable model.

An ensemble over seeds averages the members' class probabilities (softmax of the logits) clip by clip and
scores the average like one model. `ensemble_rows` does it from the test logits runs saved
(`--save_test_logits true`); the members must have predicted the same clips in the same order, which runs on the
same split do: the labels stored with each member's logits are checked to match.

`merge_models` (command line: `python -m nser.ensemble --members DIR DIR DIR --output_dir DIR`) puts the members'
heads on one backbone (`num_heads` > 1), a model folder that `pipeline("audio-classification")` and the handler
load like any other and whose scores are the members' mean probabilities.
"""

from __future__ import annotations

import argparse
import copy
import io
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from modeling_nser import WhisperForNoisyEmotionClassification, ensemble_logits
from nser.atomic import write_bytes_atomic
from nser.metrics import classification_metrics
from nser.model_folder import finalize_model_folder

logger = logging.getLogger(__name__)

TEST_LOGITS_FILE = "test_logits.npz"


def save_test_logits(path, rows, logits, label_ids) -> Path:
    """One file for every condition of a run: `logits` and `label_ids` are lists parallel to `rows`; each row's
    condition, noise type and SNR are kept so the ensemble's rows describe the same conditions."""
    arrays = {}
    for index, (row, condition_logits, labels) in enumerate(zip(rows, logits, label_ids, strict=True)):
        arrays[f"logits_{index}"] = np.asarray(condition_logits, dtype=np.float32)
        arrays[f"labels_{index}"] = np.asarray(labels, dtype=np.int64)
        arrays[f"condition_{index}"] = np.asarray([row["condition"], row["noise_type"], "" if row["snr_db"] is None else repr(row["snr_db"])])
    buffer = io.BytesIO()
    np.savez_compressed(buffer, count=np.asarray(len(rows)), **arrays)
    return write_bytes_atomic(path, buffer.getvalue())


def load_test_logits(path) -> list[dict]:
    """[{"condition", "noise_type", "snr_db", "logits", "labels"}] in the order the run evaluated them."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no test logits at {path}: run with --save_test_logits true")
    with np.load(path) as data:
        conditions = []
        for index in range(int(data["count"])):
            name, noise_type, snr = (str(v) for v in data[f"condition_{index}"])
            conditions.append({"condition": name, "noise_type": noise_type, "snr_db": float(snr) if snr else None,
                               "logits": data[f"logits_{index}"], "labels": data[f"labels_{index}"]})
    return conditions


def ensemble_rows(paths: Sequence, label_names: Sequence[str]) -> list[dict]:
    """Result rows (the `nser.report` format) of the mean class probabilities of the runs saved at `paths`."""
    if not paths:
        raise ValueError("ensemble_rows: no member runs given")
    members = [load_test_logits(path) for path in paths]
    rows = []
    for index, reference in enumerate(members[0]):
        logits = []
        for path, member in zip(paths, members):
            if len(member) != len(members[0]) or member[index]["condition"] != reference["condition"]:
                raise ValueError(f"{path}: its conditions differ from {paths[0]}'s; members must be runs on the same split")
            if not np.array_equal(member[index]["labels"], reference["labels"]):
                raise ValueError(f"{path}: condition {reference['condition']} has other clips or another order than in {paths[0]}")
            logits.append(torch.from_numpy(member[index]["logits"]).double())
        predictions = ensemble_logits(torch.stack(logits)).argmax(dim=-1).numpy()  # the merged model's rule
        rows.append({"condition": reference["condition"], "noise_type": reference["noise_type"], "snr_db": reference["snr_db"],
                     "num_examples": len(predictions), **classification_metrics(reference["labels"], predictions, label_names)})
    return rows


HEAD_MODULES = ("encoder_fusion", "decoder_fusion", "embedding", "classifier", "linear_readout", "speaker_classifier")


def _shared_settings(config) -> dict:
    """Every config value the members must share: all but the head count and where each was loaded from."""
    return {k: v for k, v in config.to_dict().items() if k not in ("num_heads", "transformers_version") and not k.startswith("_")}


def _differences(first: dict, other: dict) -> list[str]:
    return sorted(key for key in set(first) | set(other) if first.get(key) != other.get(key))


def _same_tensors(reference: dict, other: dict) -> bool:
    """Every tensor of state dict `reference` is equal in `other`."""
    return all(torch.equal(tensor, other[key]) for key, tensor in reference.items())


def merge_models(models: Sequence[WhisperForNoisyEmotionClassification], names: Sequence[str] | None = None):
    """One model holding every head of `models`, on the first one's backbone and feature statistics.

    The members must be the same model but for their heads (runs that differ only in the seed): the same backbone
    weights (a LoRA or fine-tuned backbone is each run's own, and cannot be shared), the same feature statistics
    (the same training data), labels and config. Anything else is refused, naming the member and what differs."""
    names = list(names or [f"member {i}" for i in range(len(models))])
    if len(models) < 2:
        raise ValueError(f"merge_models needs at least two models, got {len(models)}")
    first = models[0]
    settings = _shared_settings(first.config)
    backbone = first.backbone.state_dict()
    standardizers = first.standardizers.state_dict() if first.standardizers is not None else {}
    for name, model in zip(names[1:], models[1:]):
        differences = _differences(settings, _shared_settings(model.config))
        if differences:
            raise ValueError(f"{name}: config differs from {names[0]}'s in {differences}; only seeds may differ")
        if not _same_tensors(backbone, model.backbone.state_dict()):
            raise ValueError(f"{name}: backbone weights differ from {names[0]}'s (LoRA or a fine-tuned backbone?); "
                             "heads can only share a frozen backbone")
        if not _same_tensors(standardizers, model.standardizers.state_dict() if model.standardizers is not None else {}):
            raise ValueError(f"{name}: feature statistics differ from {names[0]}'s: trained on other data")
    heads = [head for model in models for head in model.heads]
    config = copy.deepcopy(first.config)
    config.num_heads = len(heads)
    merged = WhisperForNoisyEmotionClassification(config)
    merged.backbone.load_state_dict(backbone)
    if merged.standardizers is not None:
        merged.standardizers.load_state_dict(standardizers)
    for target, source in zip(merged.heads, heads):
        for module in HEAD_MODULES:
            if getattr(source, module) is not None:
                getattr(target, module).load_state_dict(getattr(source, module).state_dict())
    return merged.eval()


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Merge nser models trained with different seeds into one model "
                                                 "that scores their mean class probabilities.")
    parser.add_argument("--members", nargs="+", required=True, help="model folders (or Hub ids) of the members")
    parser.add_argument("--output_dir", required=True, help="where the merged model folder is written")
    parser.add_argument("--overwrite_output_dir", action="store_true", help="replace files in a non-empty output_dir")
    return parser.parse_args(argv)


def main(argv=None):
    logging.basicConfig(format="%(asctime)s %(name)s: %(message)s", level=logging.INFO)
    args = parse_args(argv)
    output_dir = Path(args.output_dir)
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())) and not args.overwrite_output_dir:
        sys.exit(f"--output_dir {output_dir} exists and is not empty: choose another or pass --overwrite_output_dir")
    models = []
    for member in args.members:
        try:
            models.append(WhisperForNoisyEmotionClassification.from_pretrained(member))
        except (OSError, ValueError) as error:
            sys.exit(f"--members {member}: not an nser model folder or Hub id ({error})")
    try:
        merged = merge_models(models, args.members)
    except ValueError as error:
        sys.exit(str(error))
    merged.save_pretrained(output_dir)
    finalize_model_folder(output_dir, merged.build_feature_extractor())
    logger.info("%d heads from %d members written to %s (a model card is not carried over)",
                merged.config.num_heads, len(models), output_dir)
    return output_dir


if __name__ == "__main__":
    main()
