"""Test logits per condition, saved by a run (`--save_test_logits true`), and ensembles of such runs.

An ensemble over seeds averages the members' class probabilities (softmax of the logits) clip by clip and
scores the average like one model. The members must have predicted the same clips in the same order, which
runs on the same split do: the labels stored with each member's logits are checked to match.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from nser.atomic import write_bytes_atomic
from nser.metrics import classification_metrics

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
        probabilities = []
        for path, member in zip(paths, members):
            if len(member) != len(members[0]) or member[index]["condition"] != reference["condition"]:
                raise ValueError(f"{path}: its conditions differ from {paths[0]}'s; members must be runs on the same split")
            if not np.array_equal(member[index]["labels"], reference["labels"]):
                raise ValueError(f"{path}: condition {reference['condition']} has other clips or another order than in {paths[0]}")
            probabilities.append(torch.from_numpy(member[index]["logits"]).double().softmax(dim=-1).numpy())
        predictions = np.mean(probabilities, axis=0).argmax(axis=-1)
        rows.append({"condition": reference["condition"], "noise_type": reference["noise_type"], "snr_db": reference["snr_db"],
                     "num_examples": len(predictions), **classification_metrics(reference["labels"], predictions, label_names)})
    return rows
