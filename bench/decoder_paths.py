"""The ways of running nser's decoder path that `bench.speed` and `bench.hypothesis_quality` compare.

`before` is the decoder path as it was before the fused greedy decoder, kept as the reference: the real-length
encoder, Whisper's standard encoder on the clip padded to 30 s, transformers' `generate` (greedy, capped per clip)
on that output, then a second, teacher-forced decoder pass on prompt + hypothesis. The others are
`WhisperForNoisyEmotionClassification.extract_layer_states` (one fused greedy pass that also returns the decoder
states) with an ASR window (`asr_window_seconds`) and dtype (`asr_dtype`), written `WINDOW:DTYPE`, e.g. `30:float32`,
or `WINDOW:DTYPE:cast` for the whole ASR pass on a copy of the weights in that dtype (`asr_cast_weights`).
`ct2:COMPUTE_TYPE` (e.g. `ct2:int8`) hands the 30 s window encoder and greedy decoding to CTranslate2, the engine of
faster-whisper, on a conversion of the same checkpoint (the issue's candidate engine; needs `ctranslate2`).
`dynamic:int8` runs the fused path's whole ASR pass (30 s window encoder, greedy decoding, decoder states) on a copy
of the backbone whose Linear layers are dynamically quantised to int8 (`torch.ao.quantization.quantize_dynamic`,
CPU only): the issue's other candidate, measured here and not a library option.
"""

import copy
import shutil
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from transformers.modeling_outputs import BaseModelOutput

from configuration_nser import ASR_DTYPES
from modeling_nser import NserLayerStates, WhisperForNoisyEmotionClassification

BEFORE = "before"
CT2 = "ct2"
DYNAMIC = "dynamic"
BEFORE_NAME = "before: generate + teacher-forced decoder, 30 s, float32"
CAST = "cast"
DEFAULT_PATHS = (BEFORE, "30:float32", "30:bfloat16", "30:bfloat16:cast", "10:bfloat16")


@torch.no_grad()
def generate_then_teacher_force(model, input_features, attention_mask=None):
    """`NserLayerStates` of `model` (use_decoder, decoder_input=hypothesis) computed the old way."""
    features, frame_mask = model._frame_mask(input_features, attention_mask)
    encoder_states, encoder_mask = model._encode_real_length(features, frame_mask)
    padded = model.backbone.model.encoder(model._pad_with_floor(features, frame_mask, model.config.max_frames))
    prompt = model._decoder_prompt(padded, features.shape[0])
    generation = model.backbone.generation_config
    caps = model.hypothesis_caps(frame_mask)
    id_to_language = {token_id: token for token, token_id in generation.lang_to_id.items()}
    tokens = model.backbone.generate(
        encoder_outputs=padded,
        language=[id_to_language[int(i)] for i in prompt[:, 1]],
        task=model.config.asr_task,
        max_new_tokens=int(caps.max()),
        do_sample=False,
        num_beams=1,
    )  # (B, G): text tokens only, finished clips padded with end-of-text
    position = torch.arange(tokens.shape[1], device=tokens.device)[None, :]
    keep = ((tokens == generation.eos_token_id).cumsum(dim=1) == 0) & (position < caps[:, None])
    ids = torch.cat([prompt, tokens.masked_fill(~keep, generation.eos_token_id)], dim=1)
    mask = torch.cat([torch.ones_like(prompt, dtype=torch.bool), keep], dim=1)
    decoder = model.backbone.model.decoder(
        input_ids=ids, encoder_hidden_states=padded.last_hidden_state, output_hidden_states=True, use_cache=False
    )
    return NserLayerStates(
        encoder_layer_states=encoder_states,
        encoder_layer_mask=encoder_mask,
        decoder_layer_states=torch.stack(decoder.hidden_states, dim=1),
        decoder_layer_mask=mask,
        hypothesis_ids=ids,
    )


@dataclass
class DecoderPath:
    """One named way of computing decoder-path states: `extract(input_features, attention_mask)`."""

    name: str
    model: WhisperForNoisyEmotionClassification
    extract: Callable


class CTranslate2Path:
    """Decoder-path states with the hypothesis from CTranslate2: its 30 s window encoder output is the memory that
    both its greedy decoding and nser's decoder (teacher-forced on prompt + hypothesis) attend to. Decoding follows
    `generate`'s greedy settings (checkpoint's suppressed tokens, blank and end-of-text suppressed at the start) and
    each clip is cut at nser's length cap, so only the engine differs from the fused float32 path."""

    def __init__(self, model, checkpoint, compute_type):
        try:
            import ctranslate2
            from ctranslate2.converters import TransformersConverter
        except ImportError as error:
            raise ImportError(f"decoder path {CT2}:{compute_type} needs ctranslate2 (pip install -r bench/requirements.txt)") from error
        self.model, self.ctranslate2 = model, ctranslate2
        converted = tempfile.mkdtemp(prefix="nser-ct2-")
        try:  # converted in float32, quantised (if asked) when loaded, as faster-whisper does
            TransformersConverter(str(checkpoint)).convert(converted, force=True)
            self.engine = ctranslate2.models.Whisper(converted, device="cpu", compute_type=compute_type,
                                                     intra_threads=torch.get_num_threads())
        finally:
            shutil.rmtree(converted, ignore_errors=True)

    @torch.no_grad()
    def __call__(self, input_features, attention_mask=None):
        model = self.model
        features, frame_mask = model._frame_mask(input_features, attention_mask)
        encoder_states, encoder_mask = model._encode_real_length(features, frame_mask)
        padded = model._pad_with_floor(features, frame_mask, model.config.max_frames).contiguous().numpy()
        encoded = self.engine.encode(self.ctranslate2.StorageView.from_array(padded), to_cpu=True)
        memory = torch.as_tensor(np.asarray(encoded))
        prompt = model._decoder_prompt(BaseModelOutput(last_hidden_state=memory), features.shape[0])
        caps = model.hypothesis_caps(frame_mask)
        results = self.engine.generate(encoded, prompt.tolist(), beam_size=1, max_length=prompt.shape[1] + int(caps.max()),
                                       suppress_blank=True, suppress_tokens=[-1])
        eos = model.backbone.generation_config.eos_token_id
        hypotheses = [result.sequences_ids[0][: int(cap)] for result, cap in zip(results, caps)]
        width = max(map(len, hypotheses))
        tokens = torch.tensor([h + [eos] * (width - len(h)) for h in hypotheses], dtype=torch.long).view(len(hypotheses), width)
        ids = torch.cat([prompt, tokens], dim=1)
        mask = torch.cat([torch.ones_like(prompt, dtype=torch.bool), tokens != eos], dim=1)
        decoder = model.backbone.model.decoder(input_ids=ids, encoder_hidden_states=memory, output_hidden_states=True,
                                               use_cache=False)
        return NserLayerStates(encoder_layer_states=encoder_states, encoder_layer_mask=encoder_mask,
                               decoder_layer_states=torch.stack(decoder.hidden_states, dim=1), decoder_layer_mask=mask,
                               hypothesis_ids=ids)


def with_dynamic_int8_asr(model):
    """`model.extract_layer_states` with its ASR pass on a copy of the backbone whose Linear layers (attention and
    feed-forward projections, the vocabulary projection) hold int8 weights and quantise their inputs per call; the
    real-length encoder states still come from the float32 backbone."""
    with warnings.catch_warnings():  # torch 2.9 points eager-mode quantisation users to torchao; it still works
        warnings.simplefilter("ignore", DeprecationWarning)
        quantized = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model.backbone), {torch.nn.Linear}, dtype=torch.qint8)
    model._asr_whisper = lambda needs_grad: quantized  # in place of the `asr_cast_weights` copy
    return model.extract_layer_states


def parse_path(spec):
    """`before` -> (None, "float32", False); `WINDOW:DTYPE[:cast]` -> (seconds, dtype, cast); `ct2:COMPUTE_TYPE` ->
    ("ct2", compute type, False); `dynamic:int8` -> ("dynamic", "int8", False); a clear error for anything else."""
    if spec == BEFORE:
        return None, "float32", False
    window, _, dtype = spec.partition(":")
    if window == CT2 and dtype:  # the compute type is checked by CTranslate2 when the model loads
        return CT2, dtype, False
    if spec == f"{DYNAMIC}:int8":
        return DYNAMIC, "int8", False
    dtype, _, cast = dtype.partition(":")
    try:
        seconds = float(window)
    except ValueError:
        seconds = -1.0
    if seconds <= 0 or dtype not in ASR_DTYPES or cast not in ("", CAST) or (cast and dtype == "float32"):
        raise ValueError(f"decoder path {spec!r} is not {BEFORE!r}, WINDOW:DTYPE[:{CAST}] (seconds > 0, dtype in "
                         f"{ASR_DTYPES}, {CAST} only with a dtype other than float32), {CT2}:COMPUTE_TYPE (e.g. {CT2}:int8) or {DYNAMIC}:int8")
    return seconds, dtype, bool(cast)


def build_paths(checkpoint, language, specs=DEFAULT_PATHS, labels=("x",)):
    """One `DecoderPath` per spec, each on its own float32 copy of `checkpoint` (use_decoder, `language`)."""
    paths = []
    for spec in specs:
        seconds, dtype, cast = parse_path(spec)
        options = {"asr_window_seconds": seconds, "asr_dtype": dtype, "asr_cast_weights": cast} if isinstance(seconds, float) else {}
        model = WhisperForNoisyEmotionClassification.from_whisper(
            checkpoint, list(labels), use_decoder=True, asr_language=language, **options
        ).eval()
        if seconds is None:
            name, extract = BEFORE_NAME, partial(generate_then_teacher_force, model)
        elif seconds == CT2:
            name, extract = f"CTranslate2 greedy, 30 s window, {dtype}", CTranslate2Path(model, checkpoint, dtype)
        elif seconds == DYNAMIC:
            name, extract = "fused greedy, 30 s window, dynamic int8 copy (Linear layers)", with_dynamic_int8_asr(model)
        else:
            weights = f", weights cast to {dtype}" if cast else ""
            name, extract = f"fused greedy, {seconds:g} s window, {dtype}{weights}", model.extract_layer_states
        paths.append(DecoderPath(name, model, extract))
    return paths
