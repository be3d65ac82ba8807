"""nser: noise-robust speech emotion recognition from Whisper (ASR) representations.

Importing the package registers the model with the transformers Auto classes, so that
`AutoModelForAudioClassification.from_pretrained(folder)` works without `trust_remote_code` once installed.
"""

from transformers import AutoConfig, AutoModel, AutoModelForAudioClassification

from configuration_nser import NserConfig
from modeling_nser import WhisperForNoisyEmotionClassification

AutoConfig.register(NserConfig.model_type, NserConfig, exist_ok=True)
AutoModel.register(NserConfig, WhisperForNoisyEmotionClassification, exist_ok=True)
AutoModelForAudioClassification.register(NserConfig, WhisperForNoisyEmotionClassification, exist_ok=True)

__all__ = ["NserConfig", "WhisperForNoisyEmotionClassification"]
