"""Inference Endpoints handler: the Hub's hosted widgets do not run custom code, Endpoints do, with this file.

Request: `{"inputs": <audio bytes, a base64 string, or a list of float samples at 16 kHz>, "parameters": {...}}`.
Response: every label with its probability, highest first: `[{"label": "angry", "score": 0.91}, ...]`.
"""

import base64

import numpy as np
from transformers import pipeline


class EndpointHandler:
    def __init__(self, path=""):
        self.classifier = pipeline("audio-classification", model=path or ".", trust_remote_code=True)

    def __call__(self, data):
        inputs = data.get("inputs", data) if isinstance(data, dict) else data
        if isinstance(inputs, str):
            inputs = base64.b64decode(inputs)
        elif isinstance(inputs, list):
            inputs = {"raw": np.asarray(inputs, dtype=np.float32), "sampling_rate": 16000}
        if isinstance(inputs, (bytes, bytearray)) and not inputs:
            raise ValueError("empty audio payload")
        parameters = data.get("parameters", {}) if isinstance(data, dict) else {}
        return self.classifier(inputs, top_k=parameters.get("top_k"))
