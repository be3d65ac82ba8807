"""bench/window_bound.py: its arithmetic agrees with torch's FLOP counter on a real Whisper encoder, and the table."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import WhisperModel

from bench import window_bound
from tiny_models import tiny_whisper_config


def test_counted_encoder_flops_equal_torchs_count_of_a_whisper_encoder_pass():
    # eager attention: torch's FLOP counter does not count the CPU kernel of fused SDPA, it does count matmuls
    config = tiny_whisper_config()
    encoder = WhisperModel._from_config(config, attn_implementation="eager").encoder.eval()
    batch = 2
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        encoder(torch.randn(batch, config.num_mel_bins, 2 * config.max_source_positions))
    parts = window_bound.window_parts(config, batch)
    counted = sum(p.runs * p.flops_per_run for p in parts if not p.name.startswith("decoder"))
    assert counter.get_total_flops() == batch * counted


def test_decoder_cross_attention_projections_are_counted_per_decoder_layer():
    config = tiny_whisper_config()
    (cross,) = [p for p in window_bound.window_parts(config, 1) if p.name.startswith("decoder")]
    assert cross.runs == 2 * config.decoder_layers
    assert cross.flops_per_run == 2 * config.max_source_positions * config.d_model**2


def test_table_has_every_product_a_total_and_both_verdicts():
    config = tiny_whisper_config()
    rows = window_bound.measure(window_bound.window_parts(config, 2), batch=2, repeats=1)
    assert all(gflop > 0 and float_ms > 0 for _, gflop, float_ms, _ in rows)
    linear = [r for r in rows if "projection" in r[0].name or "MLP" in r[0].name]
    assert linear and all(int8_ms is not None and int8_ms > 0 for *_, int8_ms in linear)
    assert all(int8_ms is None for part, *_, int8_ms in rows if "conv" in part.name or "SDPA" in part.name)
    text = window_bound.table(rows, target_ms=1e-9)
    assert text.count("| ") >= len(rows) + 2 and "**total**" in text
    assert "Lower bound of the exact 30 s window pass, float32:" in text and "x over" in text
    assert "within" in window_bound.table(rows, target_ms=1e9)


def test_a_folder_without_config_is_refused_by_name(tmp_path, capsys):
    with pytest.raises(SystemExit):
        window_bound.parse_args(["--model", str(tmp_path)])
    assert f"--model {tmp_path}: no config.json" in capsys.readouterr().err


def test_main_prints_the_command_and_the_machine(tmp_path, capsys):
    tiny_whisper_config().save_pretrained(tmp_path)
    window_bound.main(["--model", str(tmp_path), "--batch", "1", "--repeats", "1"])
    out = capsys.readouterr().out
    assert out.startswith(f"Command: `python -m bench.window_bound --model {tmp_path} --batch 1 --repeats 1`")
    assert "CPU capability" in out and "target 233 ms" in out
