"""Publishing a trained model: check the Hub can be reached before training, upload after it."""

import logging
import os
import shutil
from pathlib import Path

import huggingface_hub

logger = logging.getLogger(__name__)

HANDLER = Path(__file__).resolve().parents[1] / "handler.py"


def check_push_possible(hub_model_id, hub_token=None):
    """Fail before training, not after hours of it: a repo id and a token are needed, and the Hub must be online."""
    if not hub_model_id:
        raise ValueError("--push_to_hub needs --hub_model_id (e.g. your-name/nser-whisper-base-casia)")
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False"):
        raise ValueError("--push_to_hub cannot work with HF_HUB_OFFLINE set; unset it or drop --push_to_hub")
    token = hub_token or huggingface_hub.get_token()
    if not token:
        raise ValueError("--push_to_hub needs a token: run `hf auth login` or pass --hub_token")
    return token


def add_inference_handler(model_dir):
    """Ship the Inference Endpoints handler next to the weights (Hub widgets do not run custom code)."""
    shutil.copy(HANDLER, Path(model_dir) / "handler.py")


def push_model_folder(model_dir, hub_model_id, token, private=False, commit_message="Upload nser model"):
    """Create the repo if needed and upload the folder (weights, remote code, card, results, handler)."""
    huggingface_hub.create_repo(hub_model_id, token=token, private=private, exist_ok=True)
    info = huggingface_hub.upload_folder(
        repo_id=hub_model_id, folder_path=str(model_dir), token=token, commit_message=commit_message
    )
    logger.info("pushed %s to %s", model_dir, info)
    return info
