"""Picking up a run that was killed (`kill -9`, a job's time limit, out of memory) with the same command.

- Checkpoints: transformers' `Trainer._save_checkpoint` writes straight into `checkpoint-N/` (weights, optimizer,
  scheduler, RNG state) and `trainer_state.json` last, with no temporary folder; `get_last_checkpoint` takes
  the highest N whether or not it is whole, and resuming from a half-written one fails ("Can't find a valid
  checkpoint", a missing or truncated `trainer_state.json`). `last_complete_checkpoint` skips such folders.
- Saving the outputs: `saving_outputs(output_dir)` marks the folder while run_nser writes the report and the
  model folder. A kill in between leaves the mark; `discard_interrupted_save` (called when the same command
  starts again) removes that half-written report, so the run is not taken for a finished one and saves again;
  the mark goes only when a save ends normally.
"""

import contextlib
import json
import logging
import re
from pathlib import Path

from nser.atomic import write_text_atomic

logger = logging.getLogger(__name__)

CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")  # transformers.trainer_utils.PREFIX_CHECKPOINT_DIR
TRAINER_STATE = "trainer_state.json"
SAVING_MARKER = ".nser-saving"
REPORT_FILES = ("results.json", "results.md", "f1_vs_snr.png", "layer_weights.png")  # nser.report.write_report


def checkpoint_problem(folder):
    """None for a whole checkpoint, else why it is not one. `trainer_state.json` is written last, so a complete,
    parseable one means every file before it was written in full."""
    state_file = Path(folder) / TRAINER_STATE
    if not state_file.is_file():
        return f"no {TRAINER_STATE}"
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        return f"{TRAINER_STATE} is truncated"
    if not isinstance(state, dict) or "global_step" not in state:
        return f"{TRAINER_STATE} holds no global_step"
    return None


def last_complete_checkpoint(folder):
    """`transformers.trainer_utils.get_last_checkpoint`, skipping (with a warning) checkpoints left half-written by
    a kill while saving. None when there is no whole checkpoint: training starts again from the beginning."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    numbered = sorted(((int(m.group(1)), path) for path in folder.iterdir()
                       if (m := CHECKPOINT.match(path.name)) and path.is_dir()), reverse=True)
    for _, path in numbered:
        problem = checkpoint_problem(path)
        if problem is None:
            return str(path)
        logger.warning("skipping %s: incomplete (%s; the run was stopped while saving it); it is written again "
                       "when training reaches that step", path, problem)
    return None


@contextlib.contextmanager
def saving_outputs(output_dir):
    """Marks `output_dir` while the block writes the report and model folder; the mark goes when it ends normally."""
    marker = Path(output_dir) / SAVING_MARKER
    marker.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(marker, "run_nser.py is writing the report and the model folder. If this file stays, that was "
                              "interrupted: the same command redoes it.\n")
    yield
    marker.unlink(missing_ok=True)


def discard_interrupted_save(output_dir):
    """If saving the outputs into `output_dir` was interrupted (the mark is there), remove the half-written report
    files, so the run does not count as finished and `write_report` does not refuse them; the model folder is
    simply written again. The mark stays until a save ends normally, so the folder stays resumable even without
    checkpoints. Returns whether a save had been interrupted. Nothing but the files in `REPORT_FILES` is removed."""
    output_dir = Path(output_dir)
    if not (output_dir / SAVING_MARKER).is_file():
        return False
    logger.warning("%s: saving the report and model was interrupted; they are written again", output_dir)
    for name in REPORT_FILES:
        (output_dir / "report" / name).unlink(missing_ok=True)
    return True
