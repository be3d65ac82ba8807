#!/usr/bin/env bash
# Install what the tests need (Debian FFmpeg libraries, a venv with the pinned stack) and run them offline.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=$(bash scripts/setup_env.sh | tail -n 1)
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_EVALUATE_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
export GRADIO_ANALYTICS_ENABLED=False TOKENIZERS_PARALLELISM=false
exec "$VENV/bin/python" -m pytest -q "$@"
