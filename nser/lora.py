"""LoRA on the Whisper encoder with `peft`, merged back before saving.

The saved model stays a plain `WhisperForNoisyEmotionClassification` (no peft at load time, so Hub remote
code keeps importing only torch and transformers): the low-rank updates are folded into the weights.
"""

import logging

from peft import LoraConfig, LoraModel

logger = logging.getLogger(__name__)


def add_encoder_lora(model, r=8, alpha=16, dropout=0.05, target_modules=("q_proj", "v_proj")):
    """Wrap the encoder with trainable LoRA adapters on `target_modules`; the rest of Whisper stays frozen."""
    model.freeze_backbone()
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules))
    model.backbone.model.encoder = LoraModel(model.backbone.model.encoder, config, "default")
    trainable = sum(p.numel() for p in model.backbone.parameters() if p.requires_grad)
    logger.info("LoRA r=%d on encoder %s: %d trainable backbone parameters", r, list(target_modules), trainable)
    return model


def merge_encoder_lora(model):
    """Fold the LoRA updates into the encoder weights and drop the adapters (no-op without LoRA)."""
    encoder = model.backbone.model.encoder
    if isinstance(encoder, LoraModel):
        model.backbone.model.encoder = encoder.merge_and_unload()
    return model
