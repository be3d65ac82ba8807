"""The decoder path's fused greedy decoding and ASR window, against transformers' `generate` (tiny random models)."""

import logging

import pytest
import torch
from transformers import GenerationConfig

from bench.decoder_paths import build_paths, generate_then_teacher_force, parse_path, with_dynamic_int8_asr
from bench.hypothesis_quality import agreement, degenerate
from bench import WHISPER_BASE
from bench.speed import DEFAULT_DATA, nser_inputs, speech_clips
from test_modeling import padded_batch
from tiny_models import SPECIAL, random_features, tiny_generation_config, tiny_model

CLIPS = [(57, 3), (143, 4), (90, 5)]  # (frames, seed): three durations, so three hypothesis caps


def batch():
    return padded_batch([random_features(frames, seed=seed) for frames, seed in CLIPS])


def kept_tokens(states):
    return [ids[mask].tolist() for ids, mask in zip(states.hypothesis_ids, states.decoder_layer_mask)]


@pytest.mark.parametrize("suppress", [False, True])
def test_fused_greedy_decoding_matches_generate_then_teacher_forcing(suppress):
    model = tiny_model(max_hypothesis_tokens=12, hypothesis_tokens_per_second=8.0)
    features, mask = batch()
    if suppress:  # suppress the tokens the model prefers, so the suppression rules decide the hypothesis
        first = kept_tokens(model.extract_layer_states(features, mask))
        favourites = sorted({t for clip in first for t in clip[4:]} - {SPECIAL["eos"]})[:3]
        model.backbone.generation_config = GenerationConfig.from_dict(
            {**tiny_generation_config(), "suppress_tokens": favourites, "begin_suppress_tokens": [SPECIAL["eos"]]}
        )
    with torch.no_grad():
        fused = model.extract_layer_states(features, mask)
        reference = generate_then_teacher_force(model, features, mask)
    assert kept_tokens(fused) == kept_tokens(reference)
    assert max(len(clip) for clip in kept_tokens(fused)) > 5, "the test needs hypotheses of more than one token"
    if suppress:
        assert not {t for clip in kept_tokens(fused) for t in clip[4:]} & set(favourites)
    for states in (fused, reference):
        assert states.decoder_layer_mask.any(dim=0).all(), "no column may be padding for every clip"
    real = fused.decoder_layer_mask
    torch.testing.assert_close(fused.decoder_layer_states.permute(0, 2, 1, 3)[real],
                               reference.decoder_layer_states.permute(0, 2, 1, 3)[real], atol=1e-5, rtol=0)


def test_a_short_asr_window_decodes_clips_that_fit_it_and_longer_clips_on_the_full_window():
    short_window = tiny_model(asr_window_seconds=1.0)  # 100 frames; the tiny encoder's window is 200 frames
    full_window = tiny_model()
    features, mask = batch()
    with torch.no_grad():
        mixed = short_window.extract_layer_states(features, mask)
        full = full_window.extract_layer_states(features, mask)
        for row, (frames, seed) in enumerate(CLIPS):
            alone = short_window.extract_layer_states(random_features(frames, seed=seed))
            tokens = int(alone.decoder_layer_mask.sum())
            assert mixed.decoder_layer_mask[row].sum() == tokens
            assert torch.equal(mixed.hypothesis_ids[row, :tokens], alone.hypothesis_ids[0, :tokens])
            torch.testing.assert_close(mixed.decoder_layer_states[row, :, :tokens], alone.decoder_layer_states[0, :, :tokens],
                                       atol=1e-5, rtol=0)
    long_row = 1  # 143 frames > 100: Whisper's full window, as without the option
    tokens = int(full.decoder_layer_mask[long_row].sum())
    torch.testing.assert_close(mixed.decoder_layer_states[long_row, :, :tokens], full.decoder_layer_states[long_row, :, :tokens],
                               atol=1e-5, rtol=0)
    assert not torch.allclose(mixed.decoder_layer_states[0, :, :4], full.decoder_layer_states[0, :, :4]), \
        "a clip that fits the short window must be decoded on it"


def test_bfloat16_asr_path_returns_float32_states_close_to_float32():
    features, mask = batch()
    with torch.no_grad():
        exact = tiny_model(decoder_input="prompt").extract_layer_states(features, mask)
        fast = tiny_model(decoder_input="prompt", asr_dtype="bfloat16").extract_layer_states(features, mask)
    assert fast.decoder_layer_states.dtype == torch.float32
    torch.testing.assert_close(fast.decoder_layer_states, exact.decoder_layer_states, atol=0.1, rtol=0.05)


def test_cast_weights_asr_path_decodes_on_one_bfloat16_copy_until_a_weight_changes():
    features, mask = batch()
    model = tiny_model(asr_dtype="bfloat16", asr_cast_weights=True)
    keys = set(model.state_dict())
    with torch.no_grad():
        fast = model.extract_layer_states(features, mask)
        copy = model._asr_copy["whisper"]
        assert {p.dtype for p in copy.parameters()} == {torch.bfloat16}
        assert model.extract_layer_states(features, mask).hypothesis_ids.equal(fast.hypothesis_ids)
        assert model._asr_copy["whisper"] is copy, "unchanged weights must reuse the copy"
        # The copy's states are those of the float32 backbone teacher-forced on the same hypothesis, to bfloat16.
        exact = tiny_model().extract_layer_states(features, mask, fast.hypothesis_ids, fast.decoder_layer_mask)
        assert fast.decoder_layer_states.dtype == torch.float32
        torch.testing.assert_close(fast.decoder_layer_states, exact.decoder_layer_states, atol=0.1, rtol=0.05)
        model.backbone.model.decoder.layer_norm.bias.add_(1.0)  # in place: the copy is stale
        changed = model.extract_layer_states(features, mask, fast.hypothesis_ids, fast.decoder_layer_mask)
    assert model._asr_copy["whisper"] is not copy
    torch.testing.assert_close(changed.decoder_layer_states[:, -1], fast.decoder_layer_states[:, -1] + 1.0, atol=0.1, rtol=0.05)
    assert set(model.state_dict()) == keys, "the copy is not part of the checkpoint"


def test_cast_weights_are_not_used_where_gradients_reach_the_backbone():
    features, mask = batch()
    model = tiny_model(asr_dtype="bfloat16", asr_cast_weights=True, decoder_input="prompt", freeze_backbone=False).train()
    model.extract_layer_states(features, mask).decoder_layer_states.sum().backward()
    assert model._asr_copy == {}
    assert model.backbone.model.encoder.layers[0].fc1.weight.grad is not None, "the window encoder trains"


@pytest.mark.parametrize("native", [False, True])
def test_bfloat16_asr_on_a_cpu_without_native_bfloat16_warns(native, monkeypatch, caplog):
    for check in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        monkeypatch.setattr(torch.cpu, check, lambda: native)
    logging.Logger.warning_once.cache_clear()  # transformers logs each message once per process
    features, mask = batch()
    with caplog.at_level(logging.WARNING, logger="modeling_nser"):
        tiny_model(asr_dtype="bfloat16").extract_layer_states(features, mask)
    warned = [r.getMessage() for r in caplog.records if "without AMX or AVX512-BF16" in r.getMessage()]
    assert len(warned) == (0 if native else 1)
    if warned:
        assert "asr_dtype='float32'" in warned[0]


@pytest.mark.parametrize("spec, expected", [("before", (None, "float32", False)), ("10:bfloat16", (10.0, "bfloat16", False)),
                                            ("30:float32", (30.0, "float32", False)), ("ct2:int8", ("ct2", "int8", False)),
                                            ("30:bfloat16:cast", (30.0, "bfloat16", True)),
                                            ("dynamic:int8", ("dynamic", "int8", False))])
def test_decoder_path_specs_parse(spec, expected):
    assert parse_path(spec) == expected


@pytest.mark.parametrize("spec", ["10", "0:float32", "ten:float32", "10:float16", "after", "ct2:", "30:float32:cast",
                                  "30:bfloat16:fast", "dynamic:int4", "dynamic"])
def test_bad_decoder_path_specs_name_the_spec(spec):
    with pytest.raises(ValueError, match=f"decoder path '{spec}'"):
        parse_path(spec)


def test_dynamic_int8_path_quantises_only_a_copy_for_the_asr_pass():
    features, mask = batch()
    reference = tiny_model(use_decoder=True).extract_layer_states(features, mask)
    model = tiny_model(use_decoder=True)
    with torch.no_grad():
        states = with_dynamic_int8_asr(model)(features, mask)
    assert type(model.backbone.model.decoder.layers[0].fc1) is torch.nn.Linear, "the backbone keeps float weights"
    assert isinstance(model._asr_whisper(False).model.decoder.layers[0].fc1, torch.ao.nn.quantized.dynamic.Linear)
    torch.testing.assert_close(states.encoder_layer_states, reference.encoder_layer_states)  # real-length: float32
    assert states.decoder_layer_states.shape[:2] == reference.decoder_layer_states.shape[:2]
    prompt = reference.decoder_layer_states[:, :, :4]  # the same 4 prompt tokens: only int8 rounding differs
    assert 0 < (states.decoder_layer_states[:, :, :4] - prompt).abs().max() < 0.1 * prompt.abs().max()


def test_hypothesis_agreement_and_degeneracy_measures():
    reference = [("a", [1, 2, 3], 8), ("b", [4, 5], 8)]
    same, tokens = agreement([("a", [1, 2, 3], 8), ("c", [4, 6], 8)], reference)
    assert (same, tokens) == ("50.0", "75.0")  # one identical; token agreement (1 + 1/2) / 2
    assert agreement(reference, None) == ("", "")
    assert degenerate([7, 7, 7, 7]) and not degenerate([7, 7, 7, 8])


@pytest.mark.skipif(not WHISPER_BASE.is_dir(), reason=f"real Whisper checkpoint absent: {WHISPER_BASE}")
def test_ctranslate2_float32_path_decodes_like_the_fused_path():
    """The engine is the only difference: on real speech, CTranslate2 in float32 gives the fused path's hypotheses
    and, teacher-forced on them over its own window output, the same decoder states up to float error."""
    pytest.importorskip("ctranslate2", reason="ctranslate2 not installed (bench/requirements.txt)")
    fused, ct2 = build_paths(WHISPER_BASE, "zh", ["30:float32", "ct2:float32"])
    assert ct2.name == "CTranslate2 greedy, 30 s window, float32"
    waveforms = speech_clips(DEFAULT_DATA / "casia", 2.0, 3)
    inputs = nser_inputs(fused.model.build_feature_extractor(), waveforms)
    with torch.no_grad():
        expected, got = fused.extract(**inputs), ct2.extract(**inputs)
    assert torch.equal(got.hypothesis_ids[got.decoder_layer_mask], expected.hypothesis_ids[expected.decoder_layer_mask])
    assert torch.equal(got.decoder_layer_mask, expected.decoder_layer_mask)
    torch.testing.assert_close(got.encoder_layer_states, expected.encoder_layer_states)
    real = expected.decoder_layer_mask[:, None, :, None]
    torch.testing.assert_close(got.decoder_layer_states * real, expected.decoder_layer_states * real, atol=2e-2, rtol=1e-3)
