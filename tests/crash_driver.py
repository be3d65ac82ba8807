"""`run_nser.main(argv)` in this process, frozen at one chosen moment so that a test can `kill -9` it right there.

    python tests/crash_driver.py STOP READY_FILE -- <run_nser.py arguments>

STOP is one of
  none        run to the end
  caching     in the 2nd feature-cache map (backbone states of the 2nd noisy training copy), at its 10th batch
  training    at the 11th training step (after checkpoint-8, in the middle of epoch 2)
  checkpoint  while saving checkpoint-16: weights, optimizer and scheduler written, RNG and trainer state not
  saving      while saving the outputs: report written, model folder written but not finalised
At that moment the driver writes READY_FILE (its pid) and sleeps until it is killed.
"""

import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

# Calls of the map function: the 1st map (16 clips, --per_device_eval_batch_size 1) makes 16; then the 2nd map's 10th,
# after its first 8 rows (writer_batch_size 8) went to the temporary file.
CACHING_CALL = 16 + 10


def freeze(ready):
    """Say where we are, then wait for the kill."""
    Path(ready).write_text(str(os.getpid()))
    while True:
        time.sleep(60)


def install(stop, ready):
    import nser.feature_cache
    import run_nser
    from nser.training import NserTrainer

    if stop == "caching":
        extract = nser.feature_cache._ExtractLayerStates.__call__
        calls = []

        def extract_then_freeze(self, batch):
            calls.append(1)
            if len(calls) == CACHING_CALL:
                freeze(ready)
            return extract(self, batch)

        nser.feature_cache._ExtractLayerStates.__call__ = extract_then_freeze
    elif stop == "training":
        step = NserTrainer.training_step

        def step_then_freeze(self, *args, **kwargs):
            if self.state.global_step == 10:  # steps 1-10 done: checkpoint-8 saved, epoch 2 under way
                freeze(ready)
            return step(self, *args, **kwargs)

        NserTrainer.training_step = step_then_freeze
    elif stop == "checkpoint":
        save = NserTrainer._save_optimizer_and_scheduler

        def save_then_freeze(self, output_dir):
            save(self, output_dir)
            if self.state.global_step == 16:
                freeze(ready)

        NserTrainer._save_optimizer_and_scheduler = save_then_freeze
    elif stop == "saving":
        run_nser.finalize_model_folder = lambda *args, **kwargs: freeze(ready)
    elif stop != "none":
        raise SystemExit(f"unknown stop {stop!r}")
    return run_nser


def main():
    stop, ready, separator, *argv = sys.argv[1:]
    if separator != "--":
        raise SystemExit(__doc__)
    install(stop, ready).main(argv)


if __name__ == "__main__":
    main()
