"""Configuration of `WhisperForNoisyEmotionClassification` (nser).

Every architectural choice of the model lives here, validated in one place, so that the paper's ablations
(Shi et al., "A Comprehensive Study on the Effectiveness of ASR Representations for Noise-Robust Speech
Emotion Recognition", arXiv 2311.07093) run from the same modeling code by changing config values only.
This file travels to the Hub as remote code: it imports only transformers.
"""

from transformers import PretrainedConfig, WhisperConfig

FUSION_MODES = ("last", "mean", "single", "weighted_sum", "layer_adapter")
POOLING_MODES = ("mean", "mean_std")
DECODER_INPUTS = ("hypothesis", "prompt")
ASR_DTYPES = ("float32", "bfloat16")


class NserConfig(PretrainedConfig):
    r"""
    Args:
        backbone_config (`dict` or `WhisperConfig`, *optional*):
            Configuration of the Whisper backbone (a tiny random one when omitted, for tests).
        use_decoder (`bool`, *optional*, defaults to `True`):
            Also fuse every decoder layer, run teacher-forced on `decoder_input` (semantic cues, as in the paper).
        encoder_fusion (`str`, *optional*, defaults to `"layer_adapter"`):
            How the encoder layers (embedding output included) are fused: `"last"`, `"mean"`, `"single"`,
            `"weighted_sum"` (softmax weights, s3prl style) or `"layer_adapter"` (per-layer bottleneck projection
            and layer norm, then learned softmax layer weights).
        decoder_fusion (`str`, *optional*, defaults to `"layer_adapter"`):
            The same choice for the decoder layers.
        encoder_layer_index (`int`, *optional*, defaults to -1):
            Layer used by `"single"` fusion of the encoder (0 = embeddings output, -1 = last layer).
        decoder_layer_index (`int`, *optional*, defaults to -1):
            Layer used by `"single"` fusion of the decoder.
        weighted_sum_layer_norm (`bool`, *optional*, defaults to `False`):
            Normalise each layer (without affine parameters) before a `"weighted_sum"`, as s3prl's Featurizer can.
        adapter_dim (`int`, *optional*, defaults to 256):
            Bottleneck size of the layer adapter's per-layer projection. Not given by the paper; 256 matches
            `WhisperForAudioClassification.classifier_proj_size`.
        pooling (`str`, *optional*, defaults to `"mean_std"`):
            Attention-masked temporal pooling of each group: `"mean"` or `"mean_std"` (statistics pooling).
        pool_before_fusion (`bool`, *optional*, defaults to `True`):
            Pool every layer over time first (its mean, or mean and std with `pooling="mean_std"`), then fuse the
            pooled layer vectors (e.g. a layer adapter projecting each layer's statistics). `False` is the paper's
            frame-level fusion (fuse each frame's layers, then pool). Pooling first makes the trainable part see
            `layers x 2 x d_model` numbers per clip, so cached training epochs cost almost nothing.
        standardize_features (`bool`, *optional*, defaults to `True`):
            With `pool_before_fusion`, standardise every layer's pooled vector with the training set's mean and
            standard deviation (set by `set_feature_statistics`, saved with the weights): Whisper's layers differ in
            scale by orders of magnitude, which a single learning rate serves badly.
        embedding_dim (`int`, *optional*, defaults to 256):
            Width of the embedding module that combines the pooled encoder and decoder groups.
        classifier_dropout (`float`, *optional*, defaults to 0.3):
            Dropout in the adapter output and the embedding module. 0.3 (with weight decay 0.05 and label smoothing
            0.1 in training) generalised best to validation speakers of CASIA and RAVDESS (README).
        feature_dropout (`float`, *optional*, defaults to 0.0):
            Dropout on the fusion's input (each layer's standardised statistics, or frames), in training only: a
            regulariser for a head whose per-layer projections see thousands of numbers per clip from few speakers.
            Not in the paper.
        linear_readout (`bool`, *optional*, defaults to `False`):
            Add a linear map from the (standardised) pooled layer vectors straight to the logits, beside the layer
            adapter and embedding module: the linear probe's model inside the head, trained with it. Needs
            `pool_before_fusion=True`. Not in the paper.
        num_heads (`int`, *optional*, defaults to 1):
            Heads (fusion, embedding and classifier) on the one backbone and feature standardisation. With more than
            one, the logits are the log of the heads' mean class probabilities (so the pipeline's softmax gives that
            mean) and the training loss is the mean of each head's cross-entropy. `nser.ensemble.merge_models` builds
            such a model from models trained apart with different seeds: the seed ensemble (Ne) of the benchmark in
            one deployable model. Not in the paper.
        speaker_adversarial_weight (`float`, *optional*, defaults to 0.0):
            Speaker-adversarial training (domain-adversarial, Ganin & Lempitsky 2015) when > 0: a speaker classifier
            (one hidden layer) on each head's embedding learns the training speakers, and a gradient reversal layer
            hands the embedding minus this weight times its gradient, pushing the embedding towards features that do
            not tell the training speakers apart. The weight is constant (no ramp). Training only: the speaker
            classifier is never used at inference. Needs `num_speakers` >= 2 and speaker ids in training
            (`run_nser.py` sets both from `--speaker_column_name`). Not in the paper.
        num_speakers (`int`, *optional*, defaults to 0):
            Training speakers the speaker classifier of `speaker_adversarial_weight` tells apart; set from the data
            by `run_nser.py`, so a config may leave it 0 until a model is built from it.
        decoder_input (`str`, *optional*, defaults to `"hypothesis"`):
            What the decoder reads: `"hypothesis"` (the model's own greedy ASR hypothesis after the task prompt)
            or `"prompt"` (the task prompt only, no decoding). The paper's exact decoder input is not published.
        asr_language (`str`, *optional*):
            Language of the ASR hypothesis (e.g. `"zh"`, `"en"`); `None` lets Whisper detect it per clip.
        asr_task (`str`, *optional*, defaults to `"transcribe"`):
            Whisper task token of the decoder prompt.
        max_hypothesis_tokens (`int`, *optional*, defaults to 48):
            Hard cap on hypothesis tokens.
        hypothesis_tokens_per_second (`float`, *optional*, defaults to 8.0):
            Per-clip cap of `ceil(duration * rate)` tokens: stops degenerate repetition on short clips.
        asr_window_seconds (`float`, *optional*, defaults to 30.0):
            Window the decoder path pads each clip to (with the clip's log-mel floor) and encodes, for the ASR
            hypothesis and the decoder's cross-attention. 30 s (or more) is Whisper's training window: the exact
            standard path. A shorter window costs less (attention is quadratic in it) but changes many hypotheses
            and the decoder states: see `bench/hypothesis_quality.py`. Clips longer than the window use 30 s.
        asr_dtype (`str`, *optional*, defaults to `"float32"`):
            Autocast dtype of that window encoder pass: `"float32"` or `"bfloat16"` (fast on CPUs with AMX or
            AVX512-BF16 and on GPUs; emulated and about 5x slower than float32 on an AVX2-only CPU, where the model
            logs a warning). Decoding runs in float32 unless `asr_cast_weights`.
        asr_cast_weights (`bool`, *optional*, defaults to `False`):
            With `asr_dtype="bfloat16"` (required: with float32 there is nothing to cast, and it is refused), run the
            whole ASR pass (window encoder, language detection, greedy decoding and the decoder states it returns)
            on a copy of the Whisper weights cast to bfloat16 instead of autocasting the window encoder alone:
            faster again on CPUs with AMX (README speed table: 254 against 372 ms per 3 s clip at batch 8), for a
            copy of the backbone in memory (built on first use, rebuilt when the weights change) and decoder states
            computed in bfloat16 (returned as float32). Only where no gradient flows through the backbone (frozen feature
            extraction, caching, inference); a trained backbone takes the autocast path.
        asr_generation_config (`dict`, *optional*):
            Whisper's generation config (language and task token ids) copied from the checkpoint, needed to decode.
        pad_to_30s (`bool`, *optional*, defaults to `False`):
            Run the encoder on features padded to 30 s, as standard Whisper does. By default the encoder runs on
            the real length (positional embeddings sliced), which is faster and never attends to padding.
        freeze_backbone (`bool`, *optional*, defaults to `True`):
            Keep the Whisper weights fixed; only the fusion modules, embedding and classifier train.
    """

    model_type = "nser"
    sub_configs = {"backbone_config": WhisperConfig}

    def __init__(
        self,
        backbone_config=None,
        use_decoder=True,
        encoder_fusion="layer_adapter",
        decoder_fusion="layer_adapter",
        encoder_layer_index=-1,
        decoder_layer_index=-1,
        weighted_sum_layer_norm=False,
        adapter_dim=256,
        pooling="mean_std",
        pool_before_fusion=True,
        standardize_features=True,
        embedding_dim=256,
        classifier_dropout=0.3,
        feature_dropout=0.0,
        linear_readout=False,
        num_heads=1,
        speaker_adversarial_weight=0.0,
        num_speakers=0,
        decoder_input="hypothesis",
        asr_language=None,
        asr_task="transcribe",
        max_hypothesis_tokens=48,
        hypothesis_tokens_per_second=8.0,
        asr_window_seconds=30.0,
        asr_dtype="float32",
        asr_cast_weights=False,
        asr_generation_config=None,
        pad_to_30s=False,
        freeze_backbone=True,
        **kwargs,
    ):
        if backbone_config is None:
            backbone_config = WhisperConfig()
        elif isinstance(backbone_config, dict):
            backbone_config = WhisperConfig(**backbone_config)
        self.backbone_config = backbone_config
        self.use_decoder = use_decoder
        self.encoder_fusion = encoder_fusion
        self.decoder_fusion = decoder_fusion
        self.encoder_layer_index = encoder_layer_index
        self.decoder_layer_index = decoder_layer_index
        self.weighted_sum_layer_norm = weighted_sum_layer_norm
        self.adapter_dim = adapter_dim
        self.pooling = pooling
        self.pool_before_fusion = pool_before_fusion
        self.standardize_features = standardize_features
        self.embedding_dim = embedding_dim
        self.classifier_dropout = classifier_dropout
        self.feature_dropout = feature_dropout
        self.linear_readout = linear_readout
        self.num_heads = num_heads
        self.speaker_adversarial_weight = speaker_adversarial_weight
        self.num_speakers = num_speakers
        self.decoder_input = decoder_input
        self.asr_language = asr_language
        self.asr_task = asr_task
        self.max_hypothesis_tokens = max_hypothesis_tokens
        self.hypothesis_tokens_per_second = hypothesis_tokens_per_second
        self.asr_window_seconds = asr_window_seconds
        self.asr_dtype = asr_dtype
        self.asr_cast_weights = asr_cast_weights
        self.asr_generation_config = asr_generation_config
        self.pad_to_30s = pad_to_30s
        self.freeze_backbone = freeze_backbone
        super().__init__(**kwargs)
        self._validate()

    @property
    def num_encoder_states(self):
        """Encoder hidden states fused: the embedding output plus one per layer."""
        return self.backbone_config.encoder_layers + 1

    @property
    def num_decoder_states(self):
        return self.backbone_config.decoder_layers + 1

    @property
    def max_frames(self):
        """Longest log-mel input the encoder accepts (30 s for every Whisper size)."""
        return 2 * self.backbone_config.max_source_positions

    @property
    def asr_window_frames(self):
        """Log-mel frames of the decoder path's window: `asr_window_seconds`, at most the encoder's window."""
        return min(round(100 * self.asr_window_seconds), self.max_frames)

    def _validate(self):
        """Reject option combinations early, with the offending values, instead of deep in torch."""
        for name in ("encoder_fusion", "decoder_fusion"):
            if getattr(self, name) not in FUSION_MODES:
                raise ValueError(f"{name}={getattr(self, name)!r} is not one of {FUSION_MODES}")
        if self.pooling not in POOLING_MODES:
            raise ValueError(f"pooling={self.pooling!r} is not one of {POOLING_MODES}")
        for name in ("standardize_features", "linear_readout"):
            if getattr(self, name) and not self.pool_before_fusion:
                raise ValueError(f"{name}=True reads pooled layer vectors: it needs pool_before_fusion=True")
        if self.decoder_input not in DECODER_INPUTS:
            raise ValueError(f"decoder_input={self.decoder_input!r} is not one of {DECODER_INPUTS}")
        for name, count in (("encoder_layer_index", self.num_encoder_states), ("decoder_layer_index", self.num_decoder_states)):
            index = getattr(self, name)
            if not -count <= index < count:
                raise ValueError(f"{name}={index} is out of range for {count} hidden states")
        for name in ("adapter_dim", "embedding_dim", "max_hypothesis_tokens", "num_heads"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.hypothesis_tokens_per_second <= 0:
            raise ValueError(f"hypothesis_tokens_per_second must be > 0, got {self.hypothesis_tokens_per_second}")
        if not self.asr_window_seconds > 0:
            raise ValueError(f"asr_window_seconds must be > 0, got {self.asr_window_seconds}")
        if self.asr_dtype not in ASR_DTYPES:
            raise ValueError(f"asr_dtype={self.asr_dtype!r} is not one of {ASR_DTYPES}")
        if self.asr_cast_weights and self.asr_dtype == "float32":
            raise ValueError("asr_cast_weights=True casts the ASR pass's weights to asr_dtype, which is 'float32' here "
                             "(nothing to cast): set asr_dtype='bfloat16' or asr_cast_weights=False")
        if self.speaker_adversarial_weight < 0:
            raise ValueError(f"speaker_adversarial_weight must be >= 0, got {self.speaker_adversarial_weight}")
        if int(self.num_speakers) < 0:
            raise ValueError(f"num_speakers must be >= 0, got {self.num_speakers!r}")
        for name in ("classifier_dropout", "feature_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")


__all__ = ["NserConfig"]
