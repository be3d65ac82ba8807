"""WhisperForNoisyEmotionClassification: emotion recognition from every Whisper layer (nser).

The method of Shi et al. (arXiv 2311.07093): a pretrained ASR model is a noise-robust feature extractor.
The hidden states of every encoder layer (acoustic and phonetic cues) and, optionally, every decoder layer
(semantic cues; the decoder reads the model's own ASR hypothesis) are fused per group, pooled over time
with the padding masked out, combined by an embedding module and classified.

This file travels to the Hub as remote code: it imports only torch, transformers and configuration_nser.
"""

import copy
from dataclasses import dataclass

import torch
from torch import nn
from transformers import GenerationConfig, PreTrainedModel, WhisperFeatureExtractor, WhisperForConditionalGeneration
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutput, ModelOutput, SequenceClassifierOutput
from transformers.utils import logging

try:  # Hub remote code and a package install both work: the Hub needs the relative import.
    from .configuration_nser import NserConfig
except ImportError:
    from configuration_nser import NserConfig

logger = logging.get_logger(__name__)

FRAMES_PER_SECOND = 100  # Whisper's log-mel hop: 160 samples at 16 kHz, for every model size.
SAMPLING_RATE = 16000


def _cpu_has_native_bfloat16():
    """Whether this CPU computes bfloat16 natively (AMX or AVX512-BF16); torch only exposes it privately, so an
    unknown answer counts as yes (no warning)."""
    checks = [getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    return any(check is None or check() for check in checks)


@dataclass
class NserLayerStates(ModelOutput):
    """What the frozen backbone hands to the trainable part; also what the feature cache stores.

    Args:
        encoder_layer_states (`torch.FloatTensor` of shape `(batch, encoder_layers + 1, frames, d_model)`)
        encoder_layer_mask (`torch.Tensor` of shape `(batch, frames)`): 1 for real frames, 0 for padding.
        decoder_layer_states (`torch.FloatTensor` of shape `(batch, decoder_layers + 1, tokens, d_model)`)
        decoder_layer_mask (`torch.Tensor` of shape `(batch, tokens)`): 1 for prompt and hypothesis tokens.
        hypothesis_ids (`torch.LongTensor` of shape `(batch, tokens)`): the decoder input (prompt + hypothesis).
        encoder_layer_stats (`torch.FloatTensor` of shape `(batch, encoder_layers + 1, 2, d_model)`): every layer's
            mean and standard deviation over real frames (`layer_statistics`); all that `pool_before_fusion` needs.
        decoder_layer_stats (`torch.FloatTensor` of shape `(batch, decoder_layers + 1, 2, d_model)`): the same over tokens.
    """

    encoder_layer_states: torch.FloatTensor | None = None
    encoder_layer_mask: torch.Tensor | None = None
    decoder_layer_states: torch.FloatTensor | None = None
    decoder_layer_mask: torch.Tensor | None = None
    hypothesis_ids: torch.LongTensor | None = None
    encoder_layer_stats: torch.FloatTensor | None = None
    decoder_layer_stats: torch.FloatTensor | None = None


@dataclass
class NserClassifierOutput(SequenceClassifierOutput):
    """`SequenceClassifierOutput` plus the decoder input used, so callers can show the ASR hypothesis, for
    several heads (`num_heads` > 1) each head's logits, `(batch, heads, labels)`, and in speaker-adversarial
    training (`speaker_adversarial_weight` > 0, `speaker_ids` given) the speaker classifiers' mean cross-entropy."""

    hypothesis_ids: torch.LongTensor | None = None
    head_logits: torch.FloatTensor | None = None
    speaker_loss: torch.FloatTensor | None = None


class SingleLayerFusion(nn.Module):
    """Picks one layer (`index=-1`: the last one, the usual single-layer baseline)."""

    def __init__(self, num_layers, hidden_size, index=-1):
        super().__init__()
        self.num_layers, self.index, self.output_dim = num_layers, index, hidden_size

    def forward(self, states):  # (B, L, T, D) -> (B, T, D)
        return states[:, self.index]

    def layer_weights(self):
        weights = torch.zeros(self.num_layers)
        weights[self.index] = 1.0
        return weights


class MeanFusion(nn.Module):
    """Unweighted mean of all layers."""

    def __init__(self, num_layers, hidden_size):
        super().__init__()
        self.num_layers, self.output_dim = num_layers, hidden_size

    def forward(self, states):
        return states.mean(dim=1)

    def layer_weights(self):
        return torch.full((self.num_layers,), 1.0 / self.num_layers)


class WeightedSumFusion(nn.Module):
    """Softmax-weighted sum of layers (WhisperForAudioClassification's `use_weighted_layer_sum`, s3prl's Featurizer)."""

    def __init__(self, num_layers, hidden_size, layer_norm=False):
        super().__init__()
        self.layer_norm, self.output_dim = layer_norm, hidden_size
        self.layer_logits = nn.Parameter(torch.zeros(num_layers))

    def forward(self, states):
        if self.layer_norm:
            states = nn.functional.layer_norm(states, states.shape[-1:])
        weights = self.layer_logits.softmax(dim=0).to(states.dtype)
        return torch.einsum("bltd,l->btd", states, weights)

    def layer_weights(self):
        return self.layer_logits.detach().softmax(dim=0).cpu()


class LayerAdapter(nn.Module):
    """The paper's layer adapter: each layer gets its own bottleneck projection and layer norm (layers differ
    in scale and in what they encode), then the projected layers are summed with learned softmax weights."""

    def __init__(self, num_layers, hidden_size, adapter_dim, dropout):
        super().__init__()
        self.output_dim = adapter_dim
        self.projections = nn.ModuleList(nn.Linear(hidden_size, adapter_dim) for _ in range(num_layers))
        self.norms = nn.ModuleList(nn.LayerNorm(adapter_dim) for _ in range(num_layers))
        self.layer_logits = nn.Parameter(torch.zeros(num_layers))
        self.dropout = nn.Dropout(dropout)

    def forward(self, states):  # (B, L, T, D) -> (B, T, adapter_dim)
        projected = torch.stack(
            [norm(proj(states[:, i])) for i, (proj, norm) in enumerate(zip(self.projections, self.norms))], dim=1
        )
        weights = self.layer_logits.softmax(dim=0).to(projected.dtype)
        return self.dropout(torch.einsum("bltp,l->btp", projected, weights))

    def layer_weights(self):
        return self.layer_logits.detach().softmax(dim=0).cpu()


def build_fusion(mode, num_layers, hidden_size, layer_index, config):
    """The fusion registry: one small module per `encoder_fusion` / `decoder_fusion` value."""
    builders = {
        "last": lambda: SingleLayerFusion(num_layers, hidden_size, index=-1),
        "single": lambda: SingleLayerFusion(num_layers, hidden_size, index=layer_index),
        "mean": lambda: MeanFusion(num_layers, hidden_size),
        "weighted_sum": lambda: WeightedSumFusion(num_layers, hidden_size, config.weighted_sum_layer_norm),
        "layer_adapter": lambda: LayerAdapter(num_layers, hidden_size, config.adapter_dim, config.classifier_dropout),
    }
    return builders[mode]()


def masked_pool(states, mask, mode):
    """Pool (B, T, C) over real frames only, so padding in a batch never changes a clip's vector."""
    weights = mask.to(states.dtype).unsqueeze(-1)  # (B, T, 1)
    count = weights.sum(dim=1).clamp(min=1.0)
    mean = (states * weights).sum(dim=1) / count
    if mode == "mean":
        return mean
    variance = (((states - mean.unsqueeze(1)) ** 2) * weights).sum(dim=1) / count
    return torch.cat([mean, variance.clamp(min=1e-6).sqrt()], dim=-1)


def ensemble_logits(head_logits):
    """(heads, B, labels) -> (B, labels): one head's logits as they are; several heads' log mean probability."""
    if len(head_logits) == 1:
        return head_logits[0]
    precision = torch.promote_types(head_logits.dtype, torch.float32)  # float32 at least; float64 stays
    probabilities = head_logits.to(precision).softmax(dim=-1).mean(dim=0)
    return probabilities.log().to(head_logits.dtype)


class _ReverseGradient(torch.autograd.Function):
    """Identity forward; the gradient times -weight backward (the gradient reversal layer of domain-adversarial
    training)."""

    @staticmethod
    def forward(ctx, inputs, weight):
        ctx.weight = weight
        return inputs.view_as(inputs)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.weight * grad, None


def layer_statistics(states, mask):
    """(B, L, T, D) states and a (B, T) mask -> (B, L, 2, D): each layer's mean and std over real frames only."""
    batch, layers, frames, dim = states.shape
    flat = states.permute(0, 2, 1, 3).reshape(batch, frames, layers * dim)
    pooled = masked_pool(flat, mask, "mean_std")  # (B, 2 * L * D): means, then stds
    return pooled.view(batch, 2, layers, dim).transpose(1, 2)


def _merge_rows(parts, batch, pad_id):
    """Reassemble `[(rows, (ids, mask, states)), ...]` computed on parts of a batch in batch order; shorter token
    sequences are right-padded (end-of-text ids, mask False, zero states)."""
    if len(parts) == 1:
        return parts[0][1]
    tokens = max(ids.shape[1] for _, (ids, _, _) in parts)
    ids_like, _, states_like = parts[0][1]
    ids = ids_like.new_full((batch, tokens), pad_id)
    mask = torch.zeros(batch, tokens, dtype=torch.bool, device=ids.device)
    states = states_like.new_zeros(batch, states_like.shape[1], tokens, states_like.shape[3])
    for rows, (part_ids, part_mask, part_states) in parts:
        length = part_ids.shape[1]
        ids[rows, :length], mask[rows, :length], states[rows, :, :length] = part_ids, part_mask, part_states
    return ids, mask, states


class LayerStandardizer(nn.Module):
    """Per-layer, per-feature standardisation of pooled layer vectors with training-set statistics. The statistics
    are buffers, so they are saved with the weights; identity until `WhisperForNoisyEmotionClassification.set_feature_statistics`."""

    def __init__(self, num_layers, dim):
        super().__init__()
        self.register_buffer("mean", torch.zeros(num_layers, dim))
        self.register_buffer("std", torch.ones(num_layers, dim))

    def forward(self, pooled):  # (B, L, P)
        return (pooled - self.mean.to(pooled.dtype)) / self.std.to(pooled.dtype)


def _fusion_input_dim(config):
    """Width of what each fusion reads per layer: d_model, or 2 x d_model for pooled mean + std."""
    pool_factor = 2 if config.pooling == "mean_std" else 1
    return config.backbone_config.d_model * (pool_factor if config.pool_before_fusion else 1)


class NserHead(nn.Module):
    """One trainable head: per-group layer fusion, embedding module and classifier. The model holds the first
    head's modules itself; ensembles (`num_heads` > 1) add more of these."""

    def __init__(self, config):
        super().__init__()
        NserHead.build(self, config)

    @staticmethod
    def build(module, config):
        """Give `module` a head's submodules: `encoder_fusion`, `decoder_fusion` (or None), `embedding`, `classifier`,
        `linear_readout` (or None), `speaker_classifier` (or None)."""
        hidden = _fusion_input_dim(config)
        pool_factor = 2 if config.pooling == "mean_std" else 1
        module.encoder_fusion = build_fusion(
            config.encoder_fusion, config.num_encoder_states, hidden, config.encoder_layer_index, config
        )
        group_dims = [module.encoder_fusion.output_dim]
        module.decoder_fusion = None
        if config.use_decoder:
            module.decoder_fusion = build_fusion(
                config.decoder_fusion, config.num_decoder_states, hidden, config.decoder_layer_index, config
            )
            group_dims.append(module.decoder_fusion.output_dim)
        # Pooling first hands each fusion one vector per layer (the mean, or mean and std, of its frames).
        embedding_input = sum(group_dims) * (1 if config.pool_before_fusion else pool_factor)
        module.embedding = nn.Sequential(
            nn.Linear(embedding_input, config.embedding_dim),
            nn.GELU(),
            nn.Dropout(config.classifier_dropout),
        )
        module.classifier = nn.Linear(config.embedding_dim, config.num_labels)
        module.speaker_classifier = None
        if config.speaker_adversarial_weight > 0:  # training only: reads the embedding through a gradient reversal
            if config.num_speakers < 2:
                raise ValueError(f"speaker_adversarial_weight={config.speaker_adversarial_weight} needs num_speakers >= 2 "
                                 f"training speakers to tell apart, got num_speakers={config.num_speakers!r}")
            module.speaker_classifier = nn.Sequential(
                nn.Linear(config.embedding_dim, config.embedding_dim), nn.GELU(), nn.Linear(config.embedding_dim, config.num_speakers)
            )
        # The linear probe's model (logistic regression on every standardised layer vector) beside the adapter.
        readout_layers = config.num_encoder_states + (config.num_decoder_states if config.use_decoder else 0)
        module.linear_readout = nn.Linear(readout_layers * hidden, config.num_labels) if config.linear_readout else None


class NserPreTrainedModel(PreTrainedModel):
    config_class = NserConfig
    config: NserConfig
    base_model_prefix = "backbone"
    main_input_name = "input_features"
    input_modalities = ("audio",)
    supports_gradient_checkpointing = False
    # Whisper's output projection is tied to its token embeddings: not saved, re-tied on load (also by Trainer).
    _keys_to_ignore_on_save = ["backbone.proj_out.weight"]
    _supports_sdpa = True

    def _init_weights(self, module):
        std = self.config.backbone_config.init_std
        if isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, (WeightedSumFusion, LayerAdapter)):
            init.zeros_(module.layer_logits)  # uniform layer weights at the start, as in transformers


class WhisperForNoisyEmotionClassification(NserPreTrainedModel):
    """Whisper backbone (frozen by default) + per-group layer fusion + masked pooling + embedding + classifier."""

    def __init__(self, config: NserConfig):
        super().__init__(config)
        backbone_config = config.backbone_config
        self.backbone = WhisperForConditionalGeneration(backbone_config)
        if config.asr_generation_config:
            self.backbone.generation_config = GenerationConfig.from_dict(config.asr_generation_config)
        hidden = _fusion_input_dim(config)
        self.standardizers = None
        if config.standardize_features:
            counts = {"encoder": config.num_encoder_states, "decoder": config.num_decoder_states}
            self.standardizers = nn.ModuleDict(
                {group: LayerStandardizer(counts[group], hidden) for group in (["encoder", "decoder"] if config.use_decoder else ["encoder"])}
            )
        self.feature_dropout = nn.Dropout(config.feature_dropout)
        # The first head's modules sit on the model itself (the layout of every single-head checkpoint); the other
        # heads of an ensemble (`num_heads` > 1) are `NserHead`s with the same attribute names.
        NserHead.build(self, config)
        self.extra_heads = nn.ModuleList([NserHead(config) for _ in range(config.num_heads - 1)]) if config.num_heads > 1 else None
        config.auto_map = {
            "AutoConfig": "configuration_nser.NserConfig",
            "AutoModel": "modeling_nser.WhisperForNoisyEmotionClassification",
            "AutoModelForAudioClassification": "modeling_nser.WhisperForNoisyEmotionClassification",
        }
        self.post_init()
        if config.freeze_backbone:
            self.freeze_backbone()
        self._asr_copy = {}  # `asr_cast_weights`: the cast backbone and the identity of the weights it was cast from

    # ----------------------------------------------------------------- construction and saving
    @classmethod
    def from_whisper(cls, checkpoint, label_names, **config_kwargs):
        """Build an untrained classifier on any Whisper checkpoint (a Hub id or a local folder)."""
        if not label_names or len(set(label_names)) != len(label_names):
            raise ValueError(f"label_names must be non-empty and unique, got {label_names!r}")
        whisper = WhisperForConditionalGeneration.from_pretrained(checkpoint, dtype=torch.float32)
        backbone_config = whisper.config.to_dict()
        backbone_config["dtype"] = "float32"
        config = NserConfig(
            backbone_config=backbone_config,
            asr_generation_config=whisper.generation_config.to_dict(),
            id2label=dict(enumerate(label_names)),
            label2id={name: i for i, name in enumerate(label_names)},
            **config_kwargs,
        )
        config.name_or_path = str(checkpoint)
        model = cls(config)
        model.backbone.load_state_dict(whisper.state_dict())
        return model

    def build_feature_extractor(self):
        """The Whisper feature extractor for this backbone, emitting the frame mask the model needs."""
        return WhisperFeatureExtractor(
            feature_size=self.config.backbone_config.num_mel_bins,
            sampling_rate=SAMPLING_RATE,
            hop_length=SAMPLING_RATE // FRAMES_PER_SECOND,
            chunk_length=self.config.max_frames // FRAMES_PER_SECOND,
            return_attention_mask=True,
        )

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Also writes the feature extractor config, so `pipeline(model=dir)` works on the folder alone."""
        super().save_pretrained(save_directory, *args, **kwargs)
        self.build_feature_extractor().save_pretrained(save_directory)

    def freeze_backbone(self):
        """Stop gradients into Whisper; only fusion, embedding and classifier train."""
        self.backbone.requires_grad_(False)

    def set_feature_statistics(self, group, mean, std):
        """Store the training set's mean and std of `group`'s pooled layer vectors (`standardize_features=True`);
        `mean`, `std`: (layers, d_model or 2 * d_model). Tiny stds are floored so silent dimensions stay finite."""
        if self.standardizers is None or group not in self.standardizers:
            raise ValueError(f"set_feature_statistics({group!r}): standardize_features=True with that group is needed")
        standardizer = self.standardizers[group]
        if mean.shape != standardizer.mean.shape or std.shape != standardizer.std.shape:
            raise ValueError(f"{group} statistics must be {tuple(standardizer.mean.shape)}, got {tuple(mean.shape)}, {tuple(std.shape)}")
        standardizer.mean.copy_(mean)
        standardizer.std.copy_(std.clamp(min=1e-4))

    def layer_weights(self):
        """Learned (or fixed) weight of each layer per group, e.g. `{"encoder": tensor([...7 values])}` (the mean over
        heads)."""
        weights = {}
        for group in ("encoder", "decoder"):
            per_head = [getattr(head, f"{group}_fusion") for head in self.heads]
            if per_head[0] is not None:  # an ensemble reports its heads' mean
                weights[group] = torch.stack([fusion.layer_weights() for fusion in per_head]).mean(dim=0)
        return weights

    @property
    def heads(self):
        """Every head: the model itself (its first head's modules), then `extra_heads`."""
        return [self, *(self.extra_heads or [])]

    # ----------------------------------------------------------------- backbone features
    def _frame_mask(self, input_features, attention_mask):
        """Validate the log-mel input and return it trimmed to the longest real clip, with its frame mask."""
        if input_features.dim() != 3 or input_features.shape[1] != self.config.backbone_config.num_mel_bins:
            raise ValueError(
                f"input_features must be (batch, {self.config.backbone_config.num_mel_bins} mel bins, frames), "
                f"got shape {tuple(input_features.shape)}"
            )
        input_features = input_features.to(self.dtype)
        bad = (~torch.isfinite(input_features)).flatten(1).any(dim=1)
        if bad.any():
            raise ValueError(f"input_features of clip(s) {bad.nonzero().flatten().tolist()} contain NaN or Inf")
        batch, _, frames = input_features.shape
        if attention_mask is None:
            lengths = torch.full((batch,), frames, device=input_features.device)
        else:
            hop = SAMPLING_RATE // FRAMES_PER_SECOND
            if attention_mask.shape == (batch, frames * hop):
                # WhisperFeatureExtractor(return_attention_mask=True) called without the argument (as pipelines
                # do) returns the sample-level mask: one frame per hop.
                attention_mask = attention_mask[:, ::hop]
            if attention_mask.shape != (batch, frames):
                raise ValueError(
                    f"attention_mask must be a frame mask of shape {(batch, frames)} or a sample mask of shape "
                    f"{(batch, frames * hop)} (as WhisperFeatureExtractor returns them), got {tuple(attention_mask.shape)}"
                )
            lengths = attention_mask.long().sum(dim=1)
        if (lengths == 0).any():
            raise ValueError(f"clip(s) {(lengths == 0).nonzero().flatten().tolist()} are empty (no frames)")
        if lengths.max() > self.config.max_frames:
            logger.warning(
                "Input longer than %d s: truncated to the first %d s (Whisper's encoder window).",
                self.config.max_frames // FRAMES_PER_SECOND,
                self.config.max_frames // FRAMES_PER_SECOND,
            )
            lengths = lengths.clamp(max=self.config.max_frames)
        longest = int(lengths.max())
        mask = torch.arange(longest, device=lengths.device)[None, :] < lengths[:, None]
        return input_features[:, :, :longest], mask

    def _pad_with_floor(self, features, frame_mask, frames):
        """Pad each clip to `frames` log-mel frames with its own floor (what the feature extractor produces for zero
        samples: the clip's maximum minus 2 after normalisation), independent of the batch."""
        floor = features.masked_fill(~frame_mask[:, None, :], float("-inf")).amax(dim=(1, 2)) - 2.0
        padded = floor[:, None, None].expand(-1, features.shape[1], frames).clone()
        keep = frame_mask[:, None, :].expand_as(features)
        padded[:, :, : features.shape[2]] = torch.where(keep, features, padded[:, :, : features.shape[2]])
        return padded

    def _encode_real_length(self, features, frame_mask, all_layers=True, whisper=None):
        """Whisper's encoder on the real length: convolutions, positional embeddings sliced to the frame count,
        the layers with padded frames masked as keys, the final layer norm. On a full 30 s input this is the
        standard encoder; padding is zeroed before each convolution so a clip's states do not depend on the batch.
        Returns (B, L, T, D) states, or only the last layer's (L = 1) without `all_layers`. `whisper`: the
        Whisper model whose encoder runs (default: the backbone)."""
        encoder = (whisper or self.backbone).model.encoder
        keep = frame_mask[:, None, :].to(features.dtype)
        hidden = nn.functional.gelu(encoder.conv1(features * keep)) * keep
        hidden = nn.functional.gelu(encoder.conv2(hidden)).permute(0, 2, 1)  # (B, T, D), T = ceil(frames / 2)
        token_mask = frame_mask[:, ::2]
        hidden = hidden + encoder.embed_positions.weight[: hidden.shape[1]]
        additive_mask = (~token_mask)[:, None, None, :].to(hidden.dtype) * torch.finfo(hidden.dtype).min
        states = []
        for layer in encoder.layers:
            if all_layers:
                states.append(hidden)
            hidden = layer(hidden, additive_mask)
        states.append(encoder.layer_norm(hidden))
        return torch.stack(states, dim=1), token_mask

    def _decoder_prompt(self, encoder_outputs, batch, whisper=None):
        """`<|startoftranscript|><|lang|><|task|><|notimestamps|>` per clip; the language is detected (by `whisper`,
        default the backbone) when unset."""
        generation = self.backbone.generation_config
        if self.config.asr_language is None:
            languages = (whisper or self.backbone).detect_language(encoder_outputs=encoder_outputs).view(-1)
        else:
            token = f"<|{self.config.asr_language}|>"
            if token not in generation.lang_to_id:
                raise ValueError(f"asr_language={self.config.asr_language!r} is not a language of this Whisper model")
            languages = torch.full((batch,), generation.lang_to_id[token], device=self.device)
        fixed = torch.tensor(
            [generation.decoder_start_token_id, generation.task_to_id[self.config.asr_task], generation.no_timestamps_token_id],
            device=languages.device,
        ).expand(batch, -1)
        return torch.cat([fixed[:, :1], languages[:, None], fixed[:, 1:]], dim=1)

    def hypothesis_caps(self, frame_mask):
        """Per-clip hypothesis length cap: `ceil(duration * hypothesis_tokens_per_second)`, at most
        `max_hypothesis_tokens` (stops degenerate repetition on short clips)."""
        seconds = frame_mask.sum(dim=1).float() / FRAMES_PER_SECOND
        caps = (seconds * self.config.hypothesis_tokens_per_second).ceil().long()
        return caps.clamp(min=1, max=self.config.max_hypothesis_tokens)

    def _suppressed_logits(self, hidden, first_step, whisper):
        """Next-token logits with the checkpoint's suppressed tokens (and, on the first step, its begin-suppressed
        tokens) masked, as `WhisperForConditionalGeneration.generate` does for greedy decoding without timestamps."""
        generation = self.backbone.generation_config
        logits = whisper.proj_out(hidden).float()
        suppressed = list(generation.suppress_tokens or []) + list((generation.begin_suppress_tokens or []) if first_step else [])
        if suppressed:
            logits[:, suppressed] = float("-inf")
        return logits

    def _greedy_decode(self, memory, prompt, caps, whisper):
        """Greedy ASR hypothesis and every decoder layer's states in one incremental pass (key/value cache).

        Each step feeds one token and returns its states, which equal those of a teacher-forced run on the finished
        hypothesis (the decoder is causal), so the decoder is not run twice. Per clip the hypothesis stops at
        end-of-text or at its cap; the step after the last kept token only collects that token's states.
        Returns the decoder input (prompt + hypothesis, end-of-text after a clip's end), its mask and the states.
        `whisper` is the Whisper model that decodes: the backbone or its `asr_cast_weights` copy."""
        eos = self.backbone.generation_config.eos_token_id
        batch = prompt.shape[0]
        decoder = whisper.model.decoder
        cache, step_input, states, tokens = None, prompt, [], []
        running = torch.ones(batch, dtype=torch.bool, device=prompt.device)
        for step in range(int(caps.max()) + 1):
            outputs = decoder(input_ids=step_input, encoder_hidden_states=memory, cache=cache, use_cache=True,
                              output_hidden_states=True)
            cache = outputs.cache
            states.append(torch.stack(outputs.hidden_states, dim=1))
            running &= step < caps
            if not running.any():
                break
            token = self._suppressed_logits(outputs.last_hidden_state[:, -1], step == 0, whisper).argmax(dim=-1)
            running &= token != eos
            tokens.append(torch.where(running, token, torch.full_like(token, eos)))
            step_input = tokens[-1][:, None]
        hypothesis = torch.stack(tokens, dim=1) if tokens else prompt[:, :0]
        mask = torch.cat([torch.ones_like(prompt, dtype=torch.bool), hypothesis != eos], dim=1)
        length = int(mask.any(dim=0).nonzero().max()) + 1  # drop the end-of-text column that ended every clip
        ids = torch.cat([prompt, hypothesis], dim=1)[:, :length]
        return ids, mask[:, :length], torch.cat(states, dim=2)[:, :, :length]

    def _asr_whisper(self, needs_grad):
        """The Whisper model of the ASR pass: the backbone, or with `asr_cast_weights` (and no gradient through the
        backbone) a copy cast to `asr_dtype`, kept until a backbone tensor is replaced or changed in place."""
        dtype = getattr(torch, self.config.asr_dtype)
        if not self.config.asr_cast_weights or dtype == self.backbone.dtype or needs_grad:
            return self.backbone
        identity = tuple((p.data_ptr(), p._version) for p in self.backbone.parameters())
        if self._asr_copy.get("identity") != identity:
            self._asr_copy.clear()  # free a stale copy before casting a new one
            self._asr_copy.update(identity=identity, whisper=copy.deepcopy(self.backbone).to(dtype))
        return self._asr_copy["whisper"]

    def _asr_memory(self, features, frame_mask, whisper):
        """The encoder output the decoder attends to: each clip padded with its log-mel floor to a window of
        `asr_window_seconds` (clips longer than it: Whisper's standard 30 s), encoded by `whisper` in its dtype or,
        on the backbone, under autocast to `asr_dtype` (the window encoder is the decoder path's heavy part;
        decoding then stays in float32, where casting the weights at every step would cost more than it saves)."""
        window = self.config.asr_window_frames
        frames = window if features.shape[2] <= window else self.config.max_frames
        if self.config.asr_dtype == "bfloat16" and features.device.type == "cpu" and not _cpu_has_native_bfloat16():
            logger.warning_once(
                "asr_dtype='bfloat16' on a CPU without AMX or AVX512-BF16: the ASR pass is emulated and several times "
                "slower than asr_dtype='float32' here (README speed table: about 5x on an AVX2-only AMD EPYC). "
                "Set asr_dtype='float32' (and asr_cast_weights=False) on this machine."
            )
        padded = self._pad_with_floor(features, frame_mask, frames).to(whisper.dtype)
        dtype = getattr(torch, self.config.asr_dtype)
        with torch.autocast(self.device.type, dtype=dtype, enabled=dtype != whisper.dtype):
            full = torch.ones(padded.shape[0], frames, dtype=torch.bool, device=padded.device)
            memory, _ = self._encode_real_length(padded, full, all_layers=False, whisper=whisper)
        return memory[:, -1].to(whisper.dtype)

    def _decoder_states(self, features, frame_mask, decoder_input_ids, decoder_attention_mask, needs_grad):
        """Decoder input, mask and every decoder layer's states (in the model's dtype) for clips that share one ASR
        window."""
        whisper = self._asr_whisper(needs_grad)
        memory = self._asr_memory(features, frame_mask, whisper)
        if decoder_input_ids is None:
            prompt = self._decoder_prompt(BaseModelOutput(last_hidden_state=memory), features.shape[0], whisper)
            if self.config.decoder_input == "prompt":
                decoder_input_ids = prompt
            else:
                with torch.no_grad():
                    decoder_input_ids, decoder_attention_mask, states = self._greedy_decode(
                        memory, prompt, self.hypothesis_caps(frame_mask), whisper
                    )
                if not needs_grad:  # the decoding pass already gave every state
                    return decoder_input_ids, decoder_attention_mask, states.to(self.dtype)
        if decoder_attention_mask is None:
            decoder_attention_mask = torch.ones_like(decoder_input_ids, dtype=torch.bool)
        outputs = whisper.model.decoder(
            input_ids=decoder_input_ids, encoder_hidden_states=memory, output_hidden_states=True, use_cache=False
        )
        return decoder_input_ids, decoder_attention_mask.bool(), torch.stack(outputs.hidden_states, dim=1).to(self.dtype)

    def extract_layer_states(self, input_features, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None):
        """Run the backbone and return every layer's hidden states with their masks (`NserLayerStates`).

        `decoder_input_ids` (prompt + hypothesis, e.g. from a cache) skips decoding when given."""
        features, frame_mask = self._frame_mask(input_features, attention_mask)
        needs_grad = torch.is_grad_enabled() and any(p.requires_grad for p in self.backbone.parameters())
        with torch.set_grad_enabled(needs_grad):
            if self.config.pad_to_30s:
                padded = self._pad_with_floor(features, frame_mask, self.config.max_frames)
                encoder_states = torch.stack(self.backbone.model.encoder(padded, output_hidden_states=True).hidden_states, dim=1)
                encoder_mask = torch.zeros(encoder_states.shape[0], encoder_states.shape[2], dtype=torch.bool,
                                           device=features.device)
                encoder_mask[:, : (features.shape[2] + 1) // 2] = frame_mask[:, ::2]
            else:
                encoder_states, encoder_mask = self._encode_real_length(features, frame_mask)
            result = NserLayerStates(encoder_layer_states=encoder_states, encoder_layer_mask=encoder_mask)
            if not self.config.use_decoder:
                return result
            # Clips that fit the ASR window and longer ones are padded to different windows: decode them apart.
            lengths = frame_mask.sum(dim=1)
            fits = lengths <= self.config.asr_window_frames
            parts = []
            for rows in (fits.nonzero().flatten(), (~fits).nonzero().flatten()):
                if len(rows):
                    longest = int(lengths[rows].max())
                    given = (None, None) if decoder_input_ids is None else (
                        decoder_input_ids[rows], None if decoder_attention_mask is None else decoder_attention_mask[rows])
                    states = self._decoder_states(features[rows, :, :longest], frame_mask[rows, :longest], *given, needs_grad)
                    parts.append((rows, states))
        ids, mask, states = _merge_rows(parts, features.shape[0], self.backbone.generation_config.eos_token_id)
        result.hypothesis_ids, result.decoder_layer_mask, result.decoder_layer_states = ids, mask, states
        return result

    def with_layer_statistics(self, states: NserLayerStates):
        """`states` with each group's frames replaced by their per-layer statistics (what `pool_before_fusion` uses
        and the feature cache stores: `layers x 2 x d_model` per clip)."""
        encoder = layer_statistics(states.encoder_layer_states, states.encoder_layer_mask)
        decoder = None
        if states.decoder_layer_states is not None:
            decoder = layer_statistics(states.decoder_layer_states, states.decoder_layer_mask)
        return NserLayerStates(hypothesis_ids=states.hypothesis_ids, encoder_layer_stats=encoder, decoder_layer_stats=decoder)

    # ----------------------------------------------------------------- trainable part
    def pooled_layer_vectors(self, group, states: NserLayerStates, standardize=True):
        """(B, L, P) per-layer vectors of `group` for `pool_before_fusion`: the mean (P = d_model) or mean and std
        (P = 2 * d_model) of every layer, standardised when `standardize_features` (and `standardize`)."""
        stats = getattr(states, f"{group}_layer_stats")
        if stats is None:
            frames = getattr(states, f"{group}_layer_states")
            if frames is None:
                raise ValueError(f"no {group} layer states or statistics were given")
            stats = layer_statistics(frames, getattr(states, f"{group}_layer_mask"))
        vectors = stats[:, :, 0] if self.config.pooling == "mean" else stats.flatten(2)
        return self.standardizers[group](vectors) if standardize and self.standardizers is not None else vectors

    def _fusion_inputs(self, group, states):
        """What `group`'s fusions read: standardised pooled layer vectors (B, L, 1, P), or frames (B, L, T, D)."""
        if self.config.pool_before_fusion:  # one "frame" per clip
            return self.feature_dropout(self.pooled_layer_vectors(group, states)).unsqueeze(2)
        frames = getattr(states, f"{group}_layer_states")
        if frames is None:
            raise ValueError(f"frame-level fusion (pool_before_fusion=False) needs {group}_layer_states, not statistics")
        return self.feature_dropout(frames)

    def head_logits(self, states: NserLayerStates):
        """(heads, B, labels): every head's logits on (possibly cached) layer states or statistics."""
        return self._head_outputs(states)[0]

    def _head_outputs(self, states: NserLayerStates):
        """Every head's logits, stacked (heads, B, labels), and its embedding (B, embedding_dim), in a list."""
        groups = ["encoder"]
        if self.config.use_decoder:
            if states.decoder_layer_states is None and states.decoder_layer_stats is None:
                raise ValueError("use_decoder=True but no decoder_layer_states (or decoder_layer_stats) were given")
            groups.append("decoder")
        inputs, logits, embeddings = {}, [], []
        for head in self.heads:
            pooled = []
            for group in groups:
                if group not in inputs:  # computed (with its dropout draw) once, where the first head needs it
                    inputs[group] = self._fusion_inputs(group, states)
                fused = getattr(head, f"{group}_fusion")(inputs[group])
                pooled.append(fused[:, 0] if self.config.pool_before_fusion else masked_pool(
                    fused, getattr(states, f"{group}_layer_mask"), self.config.pooling))
            embeddings.append(head.embedding(torch.cat(pooled, dim=-1)))
            scores = head.classifier(embeddings[-1])
            if head.linear_readout is not None:
                scores = scores + head.linear_readout(torch.cat([inputs[group].flatten(1) for group in groups], dim=-1))
            logits.append(scores)
        return torch.stack(logits), embeddings

    def speaker_adversarial_loss(self, embeddings, speaker_ids):
        """The heads' mean speaker cross-entropy, read through a gradient reversal: the speaker classifiers learn
        the speakers while each embedding is pushed (by `speaker_adversarial_weight`) not to reveal them."""
        weight = self.config.speaker_adversarial_weight
        speaker_ids = speaker_ids.to(embeddings[0].device).long()
        if speaker_ids.min() < 0 or speaker_ids.max() >= self.config.num_speakers:
            raise ValueError(f"speaker_ids must be in [0, num_speakers={self.config.num_speakers}), got "
                             f"{speaker_ids.min().item()}..{speaker_ids.max().item()}")
        losses = [nn.functional.cross_entropy(head.speaker_classifier(_ReverseGradient.apply(embedding, weight)).float(), speaker_ids)
                  for head, embedding in zip(self.heads, embeddings)]
        return torch.stack(losses).mean()

    def classify_layer_states(self, states: NserLayerStates):
        """Fusion, masked pooling, embedding and classifier on (possibly cached) layer states or statistics; with
        several heads, the log of their mean class probabilities."""
        return ensemble_logits(self.head_logits(states))

    def forward(
        self,
        input_features=None,
        attention_mask=None,
        labels=None,
        decoder_input_ids=None,
        decoder_attention_mask=None,
        encoder_layer_states=None,
        encoder_layer_mask=None,
        decoder_layer_states=None,
        decoder_layer_mask=None,
        encoder_layer_stats=None,
        decoder_layer_stats=None,
        speaker_ids=None,
        return_dict=None,
        **kwargs,
    ):
        r"""
        input_features (`torch.FloatTensor` of shape `(batch, num_mel_bins, frames)`):
            Log-mel features from `WhisperFeatureExtractor`, any length up to 30 s (longer input is truncated
            with a warning). Padded batches need `attention_mask`.
        attention_mask (`torch.Tensor` of shape `(batch, frames)`, *optional*):
            Frame mask as returned by `WhisperFeatureExtractor(..., return_attention_mask=True)`.
        labels (`torch.LongTensor` of shape `(batch,)`, *optional*):
            Class ids; the cross-entropy loss is returned when given.
        decoder_input_ids, decoder_attention_mask (*optional*):
            A precomputed decoder input (prompt + hypothesis) to skip decoding.
        encoder_layer_states, encoder_layer_mask, decoder_layer_states, decoder_layer_mask (*optional*):
            Precomputed `NserLayerStates` (e.g. from the feature cache) instead of `input_features`.
        encoder_layer_stats, decoder_layer_stats (*optional*):
            Precomputed per-layer statistics (`pool_before_fusion=True`, e.g. from the feature cache).
        speaker_ids (`torch.LongTensor` of shape `(batch,)`, *optional*):
            Training speaker of each clip, in `[0, num_speakers)`: in training with `speaker_adversarial_weight` > 0
            the speaker-adversarial loss is returned as `speaker_loss` and added to `loss`. Ignored otherwise.
        """
        if encoder_layer_states is not None or encoder_layer_stats is not None:
            states = NserLayerStates(
                encoder_layer_states, encoder_layer_mask, decoder_layer_states, decoder_layer_mask,
                encoder_layer_stats=encoder_layer_stats, decoder_layer_stats=decoder_layer_stats,
            )
        elif input_features is not None:
            states = self.extract_layer_states(input_features, attention_mask, decoder_input_ids, decoder_attention_mask)
        else:
            raise ValueError("Pass input_features (log-mel) or encoder_layer_states (precomputed).")
        per_head, embeddings = self._head_outputs(states)
        logits = ensemble_logits(per_head)
        loss = speaker_loss = None
        if speaker_ids is not None and self.training and self.config.speaker_adversarial_weight > 0:
            speaker_loss = self.speaker_adversarial_loss(embeddings, speaker_ids)
        if labels is not None:  # each head learns on its own: the mean of their losses, not the ensemble's
            targets = labels.to(logits.device).long().repeat(len(per_head))
            loss = nn.functional.cross_entropy(per_head.flatten(0, 1).float(), targets)
            if speaker_loss is not None:
                loss = loss + speaker_loss
        output = NserClassifierOutput(loss=loss, logits=logits, hypothesis_ids=states.hypothesis_ids,
                                      head_logits=per_head.transpose(0, 1) if len(per_head) > 1 else None,
                                      speaker_loss=speaker_loss)
        if return_dict is False:
            return output.to_tuple()
        return output


NserConfig.register_for_auto_class()
WhisperForNoisyEmotionClassification.register_for_auto_class("AutoModelForAudioClassification")

__all__ = ["NserLayerStates", "NserClassifierOutput", "WhisperForNoisyEmotionClassification", "ensemble_logits", "layer_statistics"]
