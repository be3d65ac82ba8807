"""bench/speed.py: the table on a tiny random Whisper (seconds), and a `--quick` smoke run on whisper-base."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from bench import speed
from bench.decoder_paths import BEFORE_NAME
from conftest import tone
from tiny_models import tiny_model

ROOT = Path(__file__).resolve().parents[1]
WHISPER_BASE = ROOT.parent / "shared" / "models" / "whisper-base"
# `--quick` (imports, loading 3 nser models and the transformers one, one timed call per system) took 15 s with
# both clip lengths on a lightly loaded 2-core CPU; the smoke test times 3 s clips only. The limit only stops a
# hang: with another torch job on the same two cores `--quick --seconds 3` took 28-31 s.
QUICK_LIMIT_S = 90
OFFLINE = dict.fromkeys(
    ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_EVALUATE_OFFLINE", "HF_HUB_DISABLE_TELEMETRY"), "1"
)


def table_body(table):
    """The data rows of the markdown table, as lists of cells."""
    lines = [line for line in table.splitlines() if line.startswith("|")]
    assert lines[1].startswith("|---")
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


def assert_complete(table, systems, clip_lengths, batch_sizes):
    """Every system x clip length x batch row is there, with positive numbers, and the references at 1.00x."""
    rows = table_body(table)
    assert sorted((r[0], r[1], r[2]) for r in rows) == sorted(
        (system, f"{s:g} s", str(b)) for system in systems for s in clip_lengths for b in batch_sizes
    )
    for row in rows:
        numbers = [float(cell.rstrip("x")) for cell in row[3:]]
        assert len(numbers) == 5 and all(n > 0 for n in numbers), row
        if row[0] == speed.PADDED:
            assert row[6] == "1.00x"
        if row[0] == speed.TRANSFORMERS:
            assert row[7] == "1.00x"


@pytest.fixture(scope="module")
def tiny_systems(tmp_path_factory):
    """The four systems on a tiny random Whisper checkpoint (a 2 s window: clips must be shorter)."""
    checkpoint = tmp_path_factory.mktemp("tiny-whisper")
    tiny_model().backbone.save_pretrained(checkpoint)
    return speed.build_systems(checkpoint, language="en")


@pytest.fixture
def one_thread():
    """The tiny models run in milliseconds; with two threads on a busy 2-core machine they wait for seconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_table_on_tiny_model_has_every_system_row(tiny_systems, one_thread):
    names = [s.name for s in tiny_systems]
    decoders = [f"nser use_decoder (en): {name}" for name in (
        BEFORE_NAME, "fused greedy, 30 s window, float32", "fused greedy, 30 s window, bfloat16",
        "fused greedy, 30 s window, bfloat16, weights cast to bfloat16", "fused greedy, 10 s window, bfloat16")]
    assert names == [speed.DYNAMIC, speed.PADDED, speed.TRANSFORMERS, *decoders]
    clips = {0.5: speed.noise_like_clips(0.5, 2), 1.0: speed.noise_like_clips(1.0, 2)}

    rows = speed.run_benchmark(tiny_systems, clips, batch_sizes=[1, 2], warmup=1, repeats=2)

    assert_complete(speed.markdown_table(rows), names, [0.5, 1.0], [1, 2])
    targets = speed.target_lines(rows, seconds=0.5)
    assert targets[0].startswith("Target dynamic vs padded >= 8x on 0.5 s clips, batch 1: ")
    assert [line.split(" >= ")[0] for line in targets if "use_decoder" in line] == [
        f"Target {name} vs before" for _ in (1, 2) for name in decoders[1:]]


def test_systems_run_the_paths_they_are_named_after(tiny_systems):
    dynamic, padded, baseline, before, decoder, *_ = tiny_systems
    clip = speed.noise_like_clips(0.5, 1)  # 50 frames -> 25 encoder positions; the tiny window has 100
    assert dynamic.forward(dynamic.featurize(clip)).encoder_layer_states.shape[2] == 25
    assert padded.forward(padded.featurize(clip)).encoder_layer_states.shape[2] == 100
    assert baseline.featurize(clip)["input_features"].shape[-1] == 200
    states = decoder.forward(decoder.featurize(clip))
    assert states.encoder_layer_states.shape[2] == 25 and states.decoder_layer_states is not None
    reference = before.forward(before.featurize(clip))
    assert torch.equal(reference.hypothesis_ids, states.hypothesis_ids)  # the fused path decodes as generate does


def test_speech_clips_concatenate_and_crop_exactly(tmp_path):
    for index, seconds in enumerate((1.0, 0.7, 1.3)):
        (tmp_path / "spk").mkdir(exist_ok=True)
        soundfile.write(tmp_path / "spk" / f"{index}.flac", tone(seconds, 200.0 + 100 * index), 16000)

    clips = speed.speech_clips(tmp_path, 1.5, 3)

    assert [c.numel() for c in clips] == [24000] * 3
    first = np.concatenate([tone(1.0, 200.0), tone(0.7, 300.0)])[:24000]
    np.testing.assert_allclose(clips[0].numpy(), first, atol=1e-4)  # 16-bit FLAC


def test_missing_corpus_falls_back_to_synthetic_audio_and_says_so(tmp_path):
    clips, description = speed.benchmark_audio(tmp_path, "casia", [0.5], 2)
    assert description.startswith("SYNTHETIC")
    assert [c.numel() for c in clips[0.5]] == [8000, 8000]


def test_quick_sets_a_short_run():
    args = speed.parse_args(["--quick"])
    assert (args.batch_sizes, args.warmup, args.repeats, args.language) == ([1], 0, 1, "zh")
    assert speed.parse_args(["--corpus", "ravdess"]).language == "en"


@pytest.mark.skipif(not WHISPER_BASE.is_dir(), reason=f"real Whisper checkpoint absent: {WHISPER_BASE}")
def test_quick_run_on_whisper_base():
    result = subprocess.run(
        [sys.executable, "-m", "bench.speed", "--quick", "--seconds", "3", "--model", str(WHISPER_BASE),
         "--decoder_paths", "before", "10:bfloat16"],
        cwd=ROOT, env={**os.environ, **OFFLINE}, capture_output=True, text=True, timeout=QUICK_LIMIT_S,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith(f"Command: `python -m bench.speed --quick --seconds 3 --model {WHISPER_BASE} "
                                    "--decoder_paths before 10:bfloat16`")
    assert "torch threads" in result.stdout
    systems = [speed.DYNAMIC, speed.PADDED, speed.TRANSFORMERS, f"nser use_decoder (zh): {BEFORE_NAME}",
               "nser use_decoder (zh): fused greedy, 10 s window, bfloat16"]
    assert_complete(result.stdout, systems, [3.0], [1])
